"""Stops a run whose loss or weights turn NaN or infinite, before a bad step can reach a checkpoint."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import nn

from diffplan.errors import TrainingError

_ADVICE = (
    "the run stopped and its last good checkpoint is kept: lower the learning rate or set gradient_clip "
    "in the manifest entry, then run again with --resume or --force."
)


def first_non_finite(module: nn.Module) -> str | None:
    """The name of the first parameter or floating-point buffer holding a NaN or infinity, else None."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    named = [(name, t) for name, t in tensors if t.is_floating_point()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in named])
    if bool(finite.all()):  # one device sync per check
        return None
    return next(name for (name, _), ok in zip(named, finite.tolist(), strict=True) if not ok)


class NanGuard(pl.Callback):
    """Raises ``TrainingError`` after the first training step whose loss or updated weights are not finite.

    The weights are checked after every optimiser step (a step with an infinite learning rate has a finite
    loss and leaves NaN weights behind), so no validation or checkpoint ever sees them. Under DDP every
    process holds the same weights after a step, so every process stops at the same step.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ):
        where = f"at epoch {trainer.current_epoch}, batch {batch_idx}"
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingError(f"the training loss became {float(loss)} {where}; {_ADVICE}")
        bad = first_non_finite(pl_module)
        if bad is not None:
            raise TrainingError(f"the weights became non-finite ({bad}) {where}; {_ADVICE}")
