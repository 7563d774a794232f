"""Scores a planner on a whole split with the shared metrics (training, `validate`, `evaluate`)."""

from __future__ import annotations

import torch
from torch import nn

from diffplan.envs import GraphSplit, GridSplit
from diffplan.errors import BadInputError
from diffplan.scoring.batching import iterate_batches, make_batch
from diffplan.scoring.budget import planning_budget
from diffplan.scoring.losses import optimal_set_nll
from diffplan.scoring.metrics import LOSS
from diffplan.scoring.planner import batch_metrics, output_is_continuous, run_planner, scored_logits
from diffplan.task import Task


def map_longest_distances(split: GridSplit | GraphSplit) -> torch.Tensor:
    """The longest BFS distance to the goal on each map of a split. Shape: (N,) long (0 for a map
    whose goal reaches no other cell)."""
    return split.dist.flatten(1).amax(dim=1).clamp_min(0) if split.dist.dim() > 1 else _graph_longest(split)


def _graph_longest(split: GraphSplit) -> torch.Tensor:
    graph_of_node = torch.repeat_interleave(torch.arange(len(split)), split.node_ptr.diff())
    longest = torch.zeros(len(split), dtype=torch.long)
    return longest.scatter_reduce(0, graph_of_node, split.dist.long().clamp_min(0), "amax")


def _batches(split, batch_size: int, limit: int | None, steps: torch.Tensor | None):
    """(budget, batch) pairs: in order with no per-map budget, else maps grouped by equal budget, so each
    map runs exactly its own number of steps whatever else is scored with it."""
    if steps is None:
        for batch in iterate_batches(split, batch_size, limit):
            yield None, batch
        return
    total = len(split) if limit is None else min(limit, len(split))
    budgets = steps[:total]
    for value in torch.unique(budgets).tolist():
        indices = torch.nonzero(budgets == value)[:, 0]
        for start in range(0, len(indices), batch_size):
            yield int(value), make_batch(split, indices[start : start + batch_size])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: GridSplit | GraphSplit,
    *,
    cont_action: bool | None = None,
    has_obstacle: bool | None = None,
    batch_size: int = 64,
    limit: int | None = None,
    steps: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean over maps of the per-map metrics of DESIGN section 5, plus the mean loss and ``maps``.

    The split says the task (grid or graph) and, for graphs, ``has_obstacle``; ``cont_action`` is read
    off the planner's output (two channels: a (dy, dx) move vector) unless given. ``limit`` scores only
    the first maps of the split. ``steps`` (N,) gives each map its own planning budget (VI steps ``k`` or
    solver iterations ``max_iter``, see :mod:`diffplan.scoring.budget`); None keeps the planner's own.
    """
    task: Task = split.task
    if has_obstacle is None:
        has_obstacle = getattr(split, "has_obstacle", True)
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    maps = 0
    for budget, batch in _batches(split, batch_size, limit, steps):
        if budget is None:
            output = run_planner(model, batch, task)
        else:
            with planning_budget(model, budget):
                output = run_planner(model, batch, task)
        continuous = output_is_continuous(output, task) if cont_action is None else cont_action
        size = batch["maze"].shape[0]
        logits, optimal = scored_logits(output, batch, task, continuous)
        totals[LOSS] = totals.get(LOSS, 0.0) + float(optimal_set_nll(logits, optimal)) * size
        for key, per_map in batch_metrics(output, batch, task, continuous, has_obstacle).items():
            totals[key] = totals.get(key, 0.0) + float(per_map.sum())
        maps += size
    model.train(was_training)
    if maps == 0:
        raise BadInputError("there are no maps to score (an empty split, or --limit 0); give maps to score.")
    results = {key: value / maps for key, value in totals.items()}
    results["maps"] = maps
    return results
