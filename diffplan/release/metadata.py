"""`<name>_info.json`: the release template plus what is needed to trust the numbers (DESIGN section 7).

Every number here is measured by the code: the caller passes measurements, never typed-in figures.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from diffplan._atomic import atomic_write_text
from diffplan.errors import CheckpointError
from diffplan.scoring.metrics import ACCURACY, ANGLE_ERROR, LOSS, MONITOR, OPTIMALITY, SUCCESS

REQUIRED_KEYS = (
    "model_name",
    "algorithm",
    "environment",
    "training_data",
    "training_config",
    "performance",
    "model_stats",
    "created_date",
    "notes",
)
REQUIRED_PERFORMANCE = (
    "test_accuracy",
    "validation_accuracy",
    "final_loss",
    "test_success",
    "test_optimality",
)
REQUIRED_STATS = ("total_parameters", "file_size_mb", "training_time_hours", "checkpoint_sha256")
_LIBRARIES = ("diffplan", "torch", "pytorch-lightning", "escnn", "torch-geometric", "numpy")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a model depends on."""
    found = {}
    for name in _LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def hardware() -> dict[str, Any]:
    """The machine a measurement ran on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def now_iso() -> str:
    """The current UTC time, ISO 8601, seconds precision."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def write_info(path: str | Path, info: dict[str, Any]) -> None:
    """Write the metadata atomically, pretty-printed and key-sorted for readable diffs."""
    atomic_write_text(path, json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_info(path: str | Path) -> dict[str, Any]:
    """Read a metadata file; missing, unparsable or incomplete files raise ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"metadata file {path} does not exist; retrain the model or restore the file.")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"metadata file {path} is not valid JSON ({err}); restore it.") from err
    missing = [k for k in REQUIRED_KEYS if k not in info]
    missing += [f"performance.{k}" for k in REQUIRED_PERFORMANCE if k not in info.get("performance", {})]
    missing += [f"model_stats.{k}" for k in REQUIRED_STATS if k not in info.get("model_stats", {})]
    if missing:
        raise CheckpointError(f"metadata file {path} lacks {', '.join(missing)}; it is incomplete.")
    return info


@dataclass(frozen=True)
class RunRecord:
    """What a training run measured about itself, for the ``_info.json`` built from it."""

    seconds: float
    epochs_run: int
    best_epoch: int
    max_epochs: int
    best_validation_accuracy: float
    final_loss: float | None
    train_size: int
    valid_size: int
    limit_maps: int | None
    parameters: int
    checkpoint_stats: dict[str, Any]  # ``file_size_mb`` and ``checkpoint_sha256`` of the written file
    world_size: int = 1  # training processes (DDP); ``batch_size`` is the global batch over all of them
    per_device_batch: int | None = None  # maps per process and step: batch_size / world_size
    overrides: dict[str, Any] = field(default_factory=dict)  # run options that changed the recipe


def build_info(spec, dataset, scores: dict[str, dict[str, float]], run: RunRecord, fingerprint: str) -> dict:
    """The ``<name>_info.json`` of a trained model (DESIGN section 7), from measurements only.

    Args:
        spec: the manifest entry (``diffplan.release.manifest.ModelSpec``) the model was trained from.
        dataset: its data set (``DatasetSpec``); the one source of maze size and ``has_obstacle``.
        scores: ``{"valid": ..., "test": ...}`` as returned by ``diffplan.scoring.evaluate``.
        run: what the run measured; fingerprint: the data file's content fingerprint.
    """
    test, valid = scores["test"], scores["valid"]
    performance = {
        "test_accuracy": test[ACCURACY],
        "test_success": test[SUCCESS],
        "test_optimality": test[OPTIMALITY],
        "test_loss": test[LOSS],
        "test_maps": test["maps"],
        "validation_accuracy": valid[ACCURACY],
        "validation_success": valid[SUCCESS],
        "validation_optimality": valid[OPTIMALITY],
        "final_loss": run.final_loss,
    }
    if ANGLE_ERROR in test:
        performance["test_angle_error_degrees"] = test[ANGLE_ERROR]
        performance["validation_angle_error_degrees"] = valid[ANGLE_ERROR]
    return {
        "model_name": spec.name,
        "algorithm": spec.algorithm,
        "environment": {
            "task": spec.resolved()["task"],
            "maze_size": dataset.maze_size,
            "mechanism": "4abs-cc",
            "has_obstacle": dataset.has_obstacle,
            "cont_action": spec.cont_action,
            "group": spec.group,
            "no_equiv_policy": spec.no_equiv_policy,
        },
        "training_data": {
            "path": str(spec.data),
            "fingerprint": fingerprint,
            "train_size": run.train_size,
            "valid_size": run.valid_size,
            "limit_maps": run.limit_maps,
        },
        # A run with overrides (--max-epochs, --limit-maps) records them, so it never reads as the entry.
        "training_config": {**spec.resolved(), **({"overrides": run.overrides} if run.overrides else {})},
        "performance": performance,
        "target": {
            "metric": spec.target.metric,
            "minimum": spec.target.minimum,
            "passed": target_passed(spec, test),
        },
        "model_stats": {
            "total_parameters": run.parameters,
            "training_time_hours": run.seconds / 3600.0,
            **run.checkpoint_stats,
        },
        "training_run": {
            "epochs_run": run.epochs_run,
            "best_epoch": run.best_epoch,
            "max_epochs": run.max_epochs,
            "monitor": MONITOR,
            "best_validation_accuracy": run.best_validation_accuracy,
            "world_size": run.world_size,
            "per_device_batch_size": run.per_device_batch,
            **({"overrides": run.overrides} if run.overrides else {}),
        },
        "hardware": hardware(),
        "library_versions": library_versions(),
        "created_date": now_iso(),
        "notes": spec.notes,
    }


def target_passed(spec, test_scores: dict[str, float]) -> bool:
    """Whether test scores pass the entry's target: its metric strictly above its minimum."""
    measured = test_scores.get(spec.target.metric)
    return measured is not None and measured > spec.target.minimum
