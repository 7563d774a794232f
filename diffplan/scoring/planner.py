"""Running a planner on a batch and reading off what is scored: the one path that training,
validation, evaluation, planning and inspection share.

A batch is a dict of tensors from :mod:`diffplan.scoring.batching`; ``task`` says which of its
tensors the planner consumes (grid maps, or graph nodes and edges).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffplan.models._output import PlanOutput
from diffplan.scoring.batching import nodes_to_grid
from diffplan.scoring.losses import vector_logits
from diffplan.scoring.metrics import score_logits
from diffplan.task import Task


def run_planner(model: nn.Module, batch: dict[str, torch.Tensor], task: Task) -> PlanOutput:
    """The planner's raw output on ``batch``, inputs moved to the model's device and float dtype.

    Shapes: grid batch -> logits (B, 4, H, W), values (B, 1, H, W); graph batch -> logits (V, 4) or
    (V, 2) for continuous planners, values (V, 1).
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    if Task(task) is Task.GRID:
        return _walled_grid_run(model, batch["maze"].to(device, dtype), batch["goal"].to(device, dtype))
    return model(batch["x"].to(device, dtype), batch["edge_index"].to(device), batch["batch"].to(device))


def _walled_grid_run(model: nn.Module, maze: torch.Tensor, goal: torch.Tensor) -> PlanOutput:
    """The grid planner on maps whose outside is a wall: a map with a free cell on its edge (the Neural
    A* and MovingAI files have no wall border) is planned inside a one-cell wall ring, then cropped.

    A grid planner's VI step pads the value map with zeros, which is a wall for the encoder's input but
    not for the values: v1.1's values are negative (about -250 far from the goal), so a free edge cell
    saw a neighbour of value 0 off the map and stepped off it. Measured on 20 32x32 maps of the Neural A*
    layout (bfs budget): VIN_maze15 v1.1 39.6% success as read, 99.8% in a wall ring (v1.0 99.6% both).
    Maps with a wall border (every data set diffplan generates) take the unchanged path.
    Shapes: maze (B, H, W), goal (B, 1, H, W).
    """
    edge = torch.cat([maze[:, 0], maze[:, -1], maze[:, :, 0], maze[:, :, -1]], dim=1)
    if not bool((edge > 0.5).any()):
        return model(maze, goal)
    out = model(F.pad(maze, (1, 1, 1, 1)), F.pad(goal, (1, 1, 1, 1)))
    return PlanOutput(logits=out.logits[..., 1:-1, 1:-1], values=out.values[..., 1:-1, 1:-1], stats=out.stats)


def output_is_continuous(output: PlanOutput, task: Task) -> bool:
    """Whether a graph planner's output is a (dy, dx) move vector per node rather than action logits."""
    return Task(task) is Task.GRAPH and output.logits.shape[-1] == 2


def scored_logits(
    output: PlanOutput, batch: dict[str, torch.Tensor], task: Task, continuous: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Action logits and optimal sets of the scored states only. Shapes: (N, 4), (N, 4) bool."""
    if Task(task) is Task.GRID:
        scored = batch["dist"] > 0  # (B, H, W)
        return output.logits.permute(0, 2, 3, 1)[scored], batch["optimal"].permute(0, 2, 3, 1)[scored]
    logits = vector_logits(output.logits) if continuous else output.logits
    scored = batch["node_dist"] > 0
    return logits[scored], batch["node_optimal"][scored]


def grid_output(output: PlanOutput, batch: dict[str, torch.Tensor], task: Task) -> torch.Tensor:
    """The planner's logits (or move vectors) on the grid. Shape: (B, 4 or 2, H, W)."""
    if Task(task) is Task.GRID:
        return output.logits
    return nodes_to_grid(output.logits, batch, fill=0.0)


def batch_metrics(
    output: PlanOutput, batch: dict[str, torch.Tensor], task: Task, continuous: bool, has_obstacle: bool
) -> dict[str, torch.Tensor]:
    """Per-map metrics (DESIGN section 5) of one batch. Each value has shape (B,)."""
    return score_logits(
        batch["maze"],
        batch["goal"],
        batch["dist"],
        batch["optimal"],
        grid_output(output, batch, task).detach(),
        continuous=continuous,
        has_obstacle=has_obstacle,
    )
