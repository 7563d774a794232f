"""Tiny data sets and a tiny manifest (7x7 mazes, a few dozen maps) for end-to-end training tests."""

from pathlib import Path

import pytest
import yaml

from diffplan.envs import generate_dataset

GRID_MODELS = {
    "VIN": {"k": 6, "l_h": 8, "l_q": 6},
    "SymVIN": {"k": 4, "l_h": 2, "l_q": 2},
    "DE-VIN": {"l_h": 8, "l_q": 6},
    "DE-SymVIN": {"l_h": 2, "l_q": 2},
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_data")
    paths = {"grid": root / "grid.npz", "graph": root / "graph.pth", "graph_cont": root / "graph_cont.pth"}
    sizes = {"maze_size": 7, "train_size": 24, "valid_size": 8, "test_size": 8, "seed": 3}
    generate_dataset("grid", paths["grid"], **sizes)
    generate_dataset("graph", paths["graph"], has_obstacle=True, **sizes)
    generate_dataset("graph", paths["graph_cont"], has_obstacle=True, cont_action=True, **sizes)
    return paths


def tiny_manifest(tmp_path: Path, data: dict[str, Path], models: list[dict]) -> Path:
    """Write a manifest over the tiny data sets with the given model entries."""
    manifest = {
        "defaults": {"epochs": 1, "batch_size": 8, "seed": 7},
        "datasets": {
            "grid": {
                "path": str(data["grid"]),
                "kind": "grid",
                "maze_size": 7,
                "train_size": 24,
                "valid_size": 8,
                "test_size": 8,
                "seed": 3,
            },
            "graph": {
                "path": str(data["graph"]),
                "kind": "graph",
                "maze_size": 7,
                "train_size": 24,
                "valid_size": 8,
                "test_size": 8,
                "seed": 3,
                "has_obstacle": True,
            },
            "graph_cont": {
                "path": str(data["graph_cont"]),
                "kind": "graph",
                "maze_size": 7,
                "train_size": 24,
                "valid_size": 8,
                "test_size": 8,
                "seed": 3,
                "has_obstacle": True,
                "cont_action": True,
            },
        },
        "models": models,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.dump(manifest, Dumper=_NoAliases, sort_keys=False))
    return path


class _NoAliases(yaml.SafeDumper):
    """Writes a value shared by two entries out twice: manifests refuse YAML anchors and aliases."""

    def ignore_aliases(self, data) -> bool:
        return True


def grid_entry(name: str, algorithm: str, data: dict[str, Path], **extra) -> dict:
    entry = {
        "name": name,
        "algorithm": algorithm,
        "task": "GridWorld",
        "data": str(data["grid"]),
        "folder": "grid",
        "target": {"minimum": 0.0},
        "model": GRID_MODELS[algorithm],
    }
    if algorithm.endswith("SymVIN"):
        entry["group"] = "d4"
    entry.update(extra)
    return entry
