"""Stops a run whose loss turns NaN or infinite, before a bad step can reach a checkpoint."""

from __future__ import annotations

import math

import pytorch_lightning as pl

from diffplan.errors import TrainingError


class NanGuard(pl.Callback):
    """Raises ``TrainingError`` on the first non-finite training loss; earlier checkpoints stay intact."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingError(
                f"the training loss became {float(loss)} at epoch {trainer.current_epoch}, "
                f"batch {batch_idx}; "
                f"the run stopped and its last good checkpoint is kept: lower the learning rate or set "
                f"gradient_clip in the manifest entry, then run again with --resume or --force."
            )
