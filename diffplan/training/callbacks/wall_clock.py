"""Accumulates training wall time across resumed runs (stored in the Lightning checkpoint)."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class WallClock(pl.Callback):
    """``seconds`` is the total time of finished epochs (training + validation), over all resumed runs."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # In Lightning 2 this hook runs after the epoch's validation, so validation time is included.
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.seconds = float(state_dict.get("seconds", 0.0))
