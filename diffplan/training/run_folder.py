"""The run folder ``<run root>/<name>/``: Lightning checkpoints, CSV logs, what a resume needs.

Files: ``best.ckpt`` and ``last.ckpt`` (written atomically, never with non-finite weights),
``logs/metrics.csv`` (the epoch history, kept across resumes), ``.lock``, and ``candidate/`` (release
files of a model that missed its target). Only the process that writes files (rank 0) touches it.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.loggers import CSVLogger

from diffplan._atomic import atomic_path
from diffplan.errors import TrainingError
from diffplan.scoring.metrics import MONITOR

BEST, LAST = "best.ckpt", "last.ckpt"
CANDIDATE = "candidate"
# Settings a resumed run must share with the run it continues (the epoch count may grow).
RESUME_INVARIANTS = ("batch_size", "limit", "seed")


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file, then renamed (a kill never leaves half a file),
    and refused when a weight is not finite (a NaN step never replaces the last good checkpoint)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        state = checkpoint.get("state_dict", checkpoint)
        for key, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise TrainingError(
                    f"refusing to save {path}: weight {key} is not finite; the last good checkpoint is "
                    f"kept. Lower the learning rate or set gradient_clip, then --resume or --force."
                )
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def _epoch_rows(path: Path, last_epoch: int) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a metrics file up to epoch ``last_epoch`` (counted from 0)."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [r for r in reader if not r.get("epoch") or float(r["epoch"]) <= last_epoch]
        return list(reader.fieldnames or []), rows


class HistoryCSVLogger(CSVLogger):
    """Lightning's CSV logger that, on a resume, keeps the rows of the epochs the checkpoint holds
    (Lightning's own deletes ``metrics.csv`` when it starts), so the file is the whole run's history."""

    def __init__(self, save_dir: Path, keep_until_epoch: int | None) -> None:
        super().__init__(save_dir=str(save_dir), name="logs", version="")
        self._keep_until_epoch = keep_until_epoch

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        metrics = Path(self.log_dir) / "metrics.csv"
        kept = None
        if self._keep_until_epoch is not None and metrics.is_file():
            kept = _epoch_rows(metrics, self._keep_until_epoch)
        writer = super().experiment  # removes metrics.csv
        if kept and kept[0]:
            header, rows = kept
            with atomic_path(metrics) as tmp, open(tmp, "w", newline="") as handle:
                out = csv.DictWriter(handle, fieldnames=header)
                out.writeheader()
                out.writerows(rows)
            writer.metrics_keys = sorted(header)  # new keys make Lightning rewrite the file with all rows
        return writer


def load_run_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint of our own run folder (it holds more than tensors, so not weights-only)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def prepare(run_dir: Path, name: str, *, resume: bool, force: bool, settings: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run (clearing an earlier one when forced).

    ``settings``: the data module's batch size, limit and seed; a resume must use the same ones.
    """
    last = run_dir / LAST
    if resume:
        if not last.is_file():
            raise TrainingError(f"nothing to resume for {name}: {last} does not exist; run without --resume.")
        saved = next((v for k, v in load_run_checkpoint(last).items() if k.endswith("PlannerDataModule")), {})
        differ = [k for k in RESUME_INVARIANTS if k in saved and saved[k] != settings[k]]
        if differ:
            what = "; ".join(f"{k} {saved[k]!r} (now {settings[k]!r})" for k in differ)
            raise TrainingError(
                f"{last} was trained with {what}; resume with the same --limit-maps and --seed as "
                f"the interrupted run, or start again with --force."
            )
        return last
    if last.is_file() or (run_dir / BEST).is_file():
        if not force:
            raise TrainingError(
                f"{name} has an unfinished or earlier run in {run_dir}; pass --resume to "
                f"continue it or --force to start again."
            )
        for stale in (LAST, BEST, "logs", CANDIDATE):
            target = run_dir / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    return None


@dataclass(frozen=True)
class RunFacts:
    """What the run folder's checkpoints say about a finished run."""

    epochs_run: int
    best_epoch: int
    best_validation_accuracy: float
    seconds: float
    train_size: int
    valid_size: int
    world_size: int
    per_device_batch: int


def _callback_state(checkpoint: dict[str, Any], prefix: str, **matching: Any) -> dict[str, Any]:
    """The state a callback class (``prefix`` of its state key) saved, the first whose items match."""
    states = checkpoint.get("callbacks", {})
    found = (v for k, v in states.items() if k.startswith(prefix))
    return next((v for v in found if all(v.get(key) == want for key, want in matching.items())), {})


def read_facts(run_dir: Path) -> RunFacts:
    """Epochs, best epoch and score, wall time, sizes and world size, from ``best.ckpt`` and ``last.ckpt``.

    Read from the files rather than the trainer, so they hold whatever process trained (``ddp_spawn``
    trains in processes that are gone when the release is written)."""
    best_path, last_path = run_dir / BEST, run_dir / LAST
    if not best_path.is_file():
        raise TrainingError(f"the run in {run_dir} finished no epoch, so there is no checkpoint to release.")
    best = load_run_checkpoint(best_path)
    last = load_run_checkpoint(last_path) if last_path.is_file() else best
    data = next((v for k, v in last.items() if k.endswith("PlannerDataModule")), {})
    score = _callback_state(last, "ModelCheckpoint", monitor=MONITOR).get("best_model_score")
    return RunFacts(
        epochs_run=int(last["epoch"]) + 1,
        best_epoch=int(best["epoch"]) + 1,
        best_validation_accuracy=float(score) if score is not None else float("nan"),
        seconds=float(_callback_state(last, "WallClock").get("seconds", 0.0)),
        train_size=int(data.get("train_size", 0)),
        valid_size=int(data.get("valid_size", 0)),
        world_size=int(data.get("world_size", 1)),
        per_device_batch=int(data.get("per_device_batch", 0)),
    )
