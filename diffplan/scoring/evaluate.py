"""Scores a planner on a whole split with the shared metrics (training, `validate`, `evaluate`)."""

from __future__ import annotations

import torch
from torch import nn

from diffplan.envs import GraphSplit, GridSplit
from diffplan.scoring.batching import iterate_batches
from diffplan.scoring.losses import optimal_set_nll
from diffplan.scoring.metrics import LOSS
from diffplan.scoring.planner import batch_metrics, output_is_continuous, run_planner, scored_logits
from diffplan.task import Task


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: GridSplit | GraphSplit,
    *,
    cont_action: bool | None = None,
    has_obstacle: bool | None = None,
    batch_size: int = 64,
    limit: int | None = None,
) -> dict[str, float]:
    """Mean over maps of the per-map metrics of DESIGN section 5, plus the mean loss and ``maps``.

    The split says the task (grid or graph) and, for graphs, ``has_obstacle``; ``cont_action`` is read
    off the planner's output (two channels: a (dy, dx) move vector) unless given. ``limit`` scores only
    the first maps of the split.
    """
    task: Task = split.task
    if has_obstacle is None:
        has_obstacle = getattr(split, "has_obstacle", True)
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    maps = 0
    for batch in iterate_batches(split, batch_size, limit):
        output = run_planner(model, batch, task)
        continuous = output_is_continuous(output, task) if cont_action is None else cont_action
        size = batch["maze"].shape[0]
        logits, optimal = scored_logits(output, batch, task, continuous)
        totals[LOSS] = totals.get(LOSS, 0.0) + float(optimal_set_nll(logits, optimal)) * size
        for key, per_map in batch_metrics(output, batch, task, continuous, has_obstacle).items():
            totals[key] = totals.get(key, 0.0) + float(per_map.sum())
        maps += size
    model.train(was_training)
    results = {key: value / maps for key, value in totals.items()}
    results["maps"] = maps
    return results
