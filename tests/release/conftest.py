"""A tiny trained release for the QA tests: 7x7 data sets, three models trained for one epoch.

The session fixture builds it once (data/, tiny.yaml, pretrained_models/, runs/ under one folder, data
paths relative to it, as in the repository); ``release`` gives each test its own copy and makes it the
working directory, so tests may break files freely.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

SIZES = {"maze_size": 7, "train_size": 32, "valid_size": 16, "test_size": 16, "seed": 5}
DATASETS = {
    "grid": {"path": "data/tiny_grid.npz", "kind": "grid"},
    "graph": {"path": "data/tiny_graph.pth", "kind": "graph", "has_obstacle": True},
    "graph_cont": {
        "path": "data/tiny_graph_cont.pth",
        "kind": "graph",
        "has_obstacle": True,
        "cont_action": True,
    },
}
MODELS = [
    {
        "name": "VIN_tiny",
        "algorithm": "VIN",
        "task": "GridWorld",
        "data": "data/tiny_grid.npz",
        "folder": "grid",
        "model": {"k": 6, "l_h": 8, "l_q": 6},
        "notes": "tiny VIN for tests",
    },
    {
        "name": "SymVIN_tiny",
        "algorithm": "SymVIN",
        "task": "GridWorld",
        "data": "data/tiny_grid.npz",
        "folder": "grid",
        "group": "d4",
        # The release's SymVIN recipe: complete basis, value bound, wall mask.
        "model": {"k": 4, "l_h": 2, "l_q": 2, "complete_basis": True, "value_norm": True, "wall_mask": True},
    },
    {
        "name": "MP-VIN_tiny",
        "algorithm": "MP-VIN",
        "task": "GraphWorld",
        "data": "data/tiny_graph.pth",
        "folder": "graph",
        "has_obstacle": True,
        "model": {"k": 4, "l_h": 4, "l_q": 4, "mp_h": 8, "mp_q": 8, "readout_hidden": 8},
    },
    {
        "name": "MP-VIN_tiny_continuous",
        "algorithm": "MP-VIN",
        "task": "GraphWorld",
        "data": "data/tiny_graph_cont.pth",
        "folder": "continuous",
        "has_obstacle": True,
        "cont_action": True,
        "model": {"k": 4, "l_h": 4, "l_q": 4, "mp_h": 8, "mp_q": 8, "readout_hidden": 8},
    },
]


@dataclass
class TinyRelease:
    """A working copy of the tiny release; the test's current directory is ``root``."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "tiny.yaml"

    @property
    def release_root(self) -> Path:
        return self.root / "pretrained_models"

    def file(self, name: str, suffix: str = ".ckpt") -> Path:
        """A model's release file: suffix ``.ckpt``, ``_info.json`` or ``_config.yaml``."""
        folder = next(m["folder"] for m in MODELS if m["name"] == name)
        if suffix == "_config.yaml":
            return self.release_root / folder / "configs" / f"{name}{suffix}"
        return self.release_root / folder / f"{name}{suffix}"

    def edit_manifest(self, name: str, **changes) -> None:
        data = yaml.safe_load(self.manifest.read_text())
        entry = next(m for m in data["models"] if m["name"] == name)
        entry.update(changes)
        self.manifest.write_text(yaml.safe_dump(data, sort_keys=False))

    def add_entries(self, *entries: dict) -> None:
        """Append model entries to the manifest."""
        data = yaml.safe_load(self.manifest.read_text())
        data["models"].extend(entries)
        self.manifest.write_text(yaml.safe_dump(data, sort_keys=False))

    def retrain_vin_tiny(self) -> None:
        """Publish other weights for VIN_tiny, as a retraining would: consistent release files, another
        checkpoint sha256 (what the models built from it must notice)."""
        from diffplan.release.checkpoint import load_model
        from diffplan.release.manifest import load_manifest
        from diffplan.training.release_files import score_splits, write_release

        manifest = load_manifest(self.manifest)
        spec = manifest.model("VIN_tiny")
        model = load_model(self.file("VIN_tiny"))
        with torch.no_grad():
            model.w.add_(0.01)
        run = dict(
            seconds=1.0, epochs_run=1, best_epoch=1, max_epochs=1, best_validation_accuracy=0.5,
            final_loss=None, train_size=32, valid_size=16, limit_maps=None,
        )  # fmt: skip
        scores = score_splits(model, spec, manifest, limit_maps=None)
        write_release(spec, manifest, model, scores=scores, root=self.release_root, run=run, overrides={})


def write_manifest(root: Path) -> Path:
    datasets = {key: {**value, **SIZES} for key, value in DATASETS.items()}
    manifest = {
        "version": "1.0",
        "defaults": {"epochs": 1, "batch_size": 8, "seed": 7, "target": {"minimum": 0.0}},
        "datasets": datasets,
        "models": MODELS,
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_release_source(tmp_path_factory) -> Path:
    from diffplan.envs import generate_dataset
    from diffplan.release.manifest import load_manifest
    from diffplan.training.run import TrainOptions, train_model

    root = tmp_path_factory.mktemp("tiny_release")
    previous = Path.cwd()
    os.chdir(root)  # data paths in the manifest are relative, as in the repository
    try:
        (root / "data").mkdir()
        for dataset in DATASETS.values():
            generate_dataset(
                dataset["kind"],
                Path(dataset["path"]),
                has_obstacle=dataset.get("has_obstacle", True),
                cont_action=dataset.get("cont_action", False),
                **SIZES,
            )
        manifest = load_manifest(write_manifest(root))
        options = TrainOptions(
            run_root=Path("runs"), release_root=Path("pretrained_models"), accelerator="cpu", devices=1
        )
        for spec in manifest.models:
            train_model(spec, manifest, options)
    finally:
        os.chdir(previous)
    return root


@pytest.fixture
def release(tiny_release_source, tmp_path, monkeypatch) -> TinyRelease:
    root = tmp_path / "work"
    shutil.copytree(tiny_release_source, root, ignore=shutil.ignore_patterns(".lock"))
    monkeypatch.chdir(root)
    # The CLI validates one model per core by default; on these tiny models spawning the workers costs
    # more than it saves, so tests validate in-process unless they ask for --jobs (test_validate does).
    monkeypatch.setattr("diffplan_cli.validate.available_cores", lambda: 1)
    return TinyRelease(root)
