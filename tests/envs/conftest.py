"""Small data-set files shared by the envs tests (generated once per session)."""

from __future__ import annotations

import pytest

from diffplan.envs import generate_dataset

SIZES = {"train_size": 60, "valid_size": 20, "test_size": 20}


@pytest.fixture(scope="session")
def sizes():
    """The split sizes of ``grid_file`` and ``graph_file``."""
    return dict(SIZES)


@pytest.fixture(scope="session")
def grid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "grid.npz"
    generate_dataset("grid", path, seed=5, **SIZES)
    return path


@pytest.fixture(scope="session")
def graph_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "graph.pth"
    generate_dataset("graph", path, seed=5, **SIZES)
    return path
