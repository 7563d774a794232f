"""What every planner's forward returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PlanOutput:
    """A planner's output.

    Grid planners:  logits (B, 4, H, W) over N, W, S, E; values (B, 1, H, W).
    Graph planners: logits (V, 4) over N, W, S, E, or (V, 2) as a (dy, dx) move vector when the model
    has continuous actions; values (V, 1). V is the number of nodes in the batch.
    ``stats`` holds scalar diagnostics (e.g. DEQ ``solver_iterations``, ``solver_residual``).
    """

    logits: torch.Tensor
    values: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)
