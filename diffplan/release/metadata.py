"""`<name>_info.json`: the release template plus what is needed to trust the numbers (DESIGN section 7).

Every number here is measured by the code: the caller passes measurements, never typed-in figures.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from diffplan._atomic import atomic_write_text
from diffplan.errors import CheckpointError

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
