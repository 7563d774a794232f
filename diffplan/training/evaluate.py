"""Scores a planner on a whole split with the shared metrics (used by training and by `validate`)."""

from __future__ import annotations

import torch
from torch import nn

from diffplan.envs import GraphSplit, GridSplit
from diffplan.training.batching import iterate_batches
from diffplan.training.losses import optimal_set_nll
from diffplan.training.metrics import LOSS
from diffplan.training.module import batch_metrics, plan, scored_logits


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: GridSplit | GraphSplit,
    *,
    kind: str,
    cont_action: bool = False,
    has_obstacle: bool = True,
    batch_size: int = 64,
    limit: int | None = None,
) -> dict[str, float]:
    """Mean over maps of the per-map metrics of DESIGN section 5, plus the mean loss and ``maps``.

    ``kind`` is ``grid`` or ``graph``; ``limit`` scores only the first maps of the split.
    """
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    maps = 0
    for batch in iterate_batches(split, batch_size, limit):
        output = plan(model, batch, kind)
        size = batch["maze"].shape[0]
        logits, optimal = scored_logits(output, batch, kind, cont_action)
        totals[LOSS] = totals.get(LOSS, 0.0) + float(optimal_set_nll(logits, optimal)) * size
        for key, per_map in batch_metrics(output, batch, kind, cont_action, has_obstacle).items():
            totals[key] = totals.get(key, 0.0) + float(per_map.sum())
        maps += size
    model.train(was_training)
    results = {key: value / maps for key, value in totals.items()}
    results["maps"] = maps
    return results
