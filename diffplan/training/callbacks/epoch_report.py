"""Hands a summary of each finished epoch to a caller-supplied function (the CLI draws progress with it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl

from diffplan.scoring.metrics import MONITOR


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch: ``epoch`` counts from 1; metrics are floats or None when not logged."""

    name: str
    epoch: int
    max_epochs: int
    train_loss: float | None
    val_accuracy: float | None
    val_success: float | None
    best_val_accuracy: float | None


def _metric(trainer: pl.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


class EpochReportCallback(pl.Callback):
    """Calls ``report(EpochReport)`` after each training epoch (its validation has run by then), in the
    process of global rank 0 only (under DDP the metrics are already reduced over the processes).

    The best accuracy so far includes the epochs before a resume: it starts from the best score the
    trainer's checkpoint callback restored, not from nothing (a resumed run once reported "best 99.60%"
    while its epoch 11 had reached 99.82%).
    """

    def __init__(self, name: str, report: Callable[[EpochReport], None]) -> None:
        self.name, self.report = name, report
        self.best: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        restored = getattr(checkpoint, "best_model_score", None)
        if restored is not None and getattr(checkpoint, "mode", "max") == "max":
            self.best = float(restored)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        accuracy = _metric(trainer, MONITOR)
        if accuracy is not None:
            self.best = accuracy if self.best is None else max(self.best, accuracy)
        self.report(
            EpochReport(
                name=self.name,
                epoch=trainer.current_epoch + 1,
                max_epochs=trainer.max_epochs or 0,
                train_loss=_metric(trainer, "train/loss"),
                val_accuracy=accuracy,
                val_success=_metric(trainer, "val/success"),
                best_val_accuracy=self.best,
            )
        )
