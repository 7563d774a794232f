"""``init_from``: start a training run from another entry's release weights instead of a random draw.

The starting entry is loaded as an Ensemble member is (``ensemble.load_member``: its release files must be
its finished training, on the same data as now), under its release lock so that it is not retrained
while it is read, and its state dict goes into the new planner strictly: every parameter must exist in
both with the same shape. Rank 0 writes what it started from to ``<run folder>/init_from.json``; the
release metadata copies it (``init_from``: name, folder, checkpoint sha256), so a model whose starting
point was retrained since is out of date (``release_files.start_problems``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from diffplan._atomic import atomic_write_text
from diffplan.envs import file_fingerprint
from diffplan.errors import TrainingError
from diffplan.release.manifest import Manifest, ModelSpec
from diffplan.training.ensemble import load_member
from diffplan.training.locks import file_lock, release_lock_path

START_RECORD = "init_from.json"


def load_starting_weights(
    spec: ModelSpec, manifest: Manifest, release_root: Path, model: nn.Module, *, lock: bool = True
) -> dict[str, Any]:
    """Copy the weights of ``spec.init_from``'s release checkpoint into ``model``; returns the record of
    what was loaded. ``lock``: hold the starting entry's release lock while reading (rank 0)."""
    source = manifest.model(spec.init_from)
    lock_path = release_lock_path(Path(release_root) / source.folder, source.name)
    with file_lock(lock_path, source.name, remove=True) if lock else contextlib.nullcontext():
        planner, info = load_member(
            spec, source, manifest, Path(release_root), file_fingerprint(spec.data), role="starting point"
        )
    try:
        model.load_state_dict(planner.state_dict(), strict=True)
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[-1].strip()  # the last line names the parameter
        raise TrainingError(
            f"{spec.name}: cannot start from {source.name}'s weights, the two planners have different "
            f"parameters ({detail}); name an entry with the same parameters in init_from."
        ) from None
    return {
        "name": source.name,
        "folder": source.folder,
        "checkpoint_sha256": info["model_stats"]["checkpoint_sha256"],
    }


def write_start_record(run_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / START_RECORD, json.dumps(record, indent=2) + "\n")


def read_start_record(spec: ModelSpec, run_dir: Path) -> dict[str, Any]:
    """What the run in ``run_dir`` started from; ``TrainingError`` when it records nothing."""
    path = Path(run_dir) / START_RECORD
    try:
        record = json.loads(path.read_text())
        if record["name"] != spec.init_from:
            raise KeyError("name")
        return record
    except (OSError, ValueError, KeyError, TypeError):
        raise TrainingError(
            f"{spec.name}: the run in {run_dir} does not record starting from {spec.init_from} "
            f"({path}); start it again with --force."
        ) from None
