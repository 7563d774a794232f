"""The LightningModule shared by every planner, grid or graph.

It takes primitives (planner name, constructor arguments, optimiser settings), saves them as
hyper-parameters and builds the network through the registry, so a Lightning checkpoint reloads
with ``PlannerModule.load_from_checkpoint(path)`` and no extra arguments.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from diffplan.errors import TrainingError
from diffplan.models import create_model, get_model_entry
from diffplan.models._output import PlanOutput
from diffplan.models._symmetry import CompleteRegularFilter
from diffplan.release.checkpoint import RUN_BASIS_KEY, RUN_BASIS_VERSION
from diffplan.scoring import LOSS, MONITOR, batch_metrics, run_planner, scored_logits
from diffplan.scoring.losses import optimal_set_nll

OPTIMIZERS = {
    "RMSprop": torch.optim.RMSprop,
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
    "SGD": torch.optim.SGD,
}


def _maps(batch: dict[str, torch.Tensor]) -> float:
    """The batch's map count, as the float ``batch_size`` of ``self.log``.

    A float on purpose: Lightning keeps the per-process count of an epoch mean in a tensor, and under DDP
    averages it over the processes in that tensor's dtype; an integer count truncates (7 validation maps
    over 2 processes, 4 + 3, became 3 per process, and the epoch accuracy sum / 6 instead of / 7). A float
    count keeps the epoch value the mean over every map of the split.
    """
    return float(batch["maze"].shape[0])


class PlannerModule(pl.LightningModule):
    """Trains one planner with the optimal-set loss and logs the shared metrics per epoch.

    Logged names: ``train/loss``, ``val/loss``, ``val/accuracy``, ``val/success``, ``val/optimality``
    (``val/angle_error`` for continuous actions), the same under ``test/``, and planner stats
    (e.g. ``train/solver_iterations``).
    """

    def __init__(
        self,
        algorithm: str,
        model_args: dict[str, Any],
        cont_action: bool = False,
        has_obstacle: bool = True,
        optimizer: str = "RMSprop",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: str = "none",
        epochs: int = 100,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task = get_model_entry(algorithm).task
        self.model = create_model(algorithm, **model_args)

    def forward(self, batch: dict[str, torch.Tensor]) -> PlanOutput:
        return run_planner(self.model, batch, self.task)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_BASIS_KEY] = RUN_BASIS_VERSION

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse run checkpoints whose complete-basis coefficients use the old SVD basis (see
        ``diffplan.release.checkpoint``): resuming them would silently train different filters."""
        uses_basis = any(isinstance(m, CompleteRegularFilter) for m in self.model.modules())
        if uses_basis and checkpoint.get(RUN_BASIS_KEY) != RUN_BASIS_VERSION:
            raise TrainingError(
                "this run checkpoint was written by a diffplan whose complete-basis filters used another "
                "basis; start the run again with --force (its release checkpoint, if any, still loads)."
            )

    def _loss(self, output: PlanOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, optimal = scored_logits(output, batch, self.task, self.hparams.cont_action)
        return optimal_set_nll(logits, optimal)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        output = self(batch)
        loss = self._loss(output, batch)
        size = _maps(batch)
        # sync_dist: epoch values are reduced over DDP processes (a no-op on one process).
        self.log(f"train/{LOSS}", loss, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        for key, value in output.stats.items():
            self.log(
                f"train/{key}", float(value), on_step=False, on_epoch=True, batch_size=size, sync_dist=True
            )
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        output = self(batch)
        size = _maps(batch)
        self.log(f"{stage}/{LOSS}", self._loss(output, batch), on_epoch=True, batch_size=size, sync_dist=True)
        metrics = batch_metrics(output, batch, self.task, self.hparams.cont_action, self.hparams.has_obstacle)
        for key, per_map in metrics.items():
            # Weighted by batch size, the epoch value is the mean over maps of the per-map means; under
            # DDP, sync_dist averages both the weighted sums and the map counts over the processes (each
            # map is scored by exactly one process), so it is the mean over every map of the split.
            self.log(f"{stage}/{key}", per_map.mean(), on_epoch=True, batch_size=size, sync_dist=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = OPTIMIZERS[hp.optimizer](self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp.epochs)
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        if hp.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=0.5, patience=3
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": MONITOR},
            }
        return optimizer
