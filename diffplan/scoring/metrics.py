"""The metrics of DESIGN section 5, in one implementation shared by training, validation and metadata.

Scored states are reachable, non-goal free cells (``dist > 0``). Every metric is averaged per map,
then over maps.

- accuracy:   the policy's action is in the cell's optimal-action set;
- success:    following the policy from the cell reaches the goal (a cycle, or a move into a wall that
              never leads to the goal, is failure);
- optimality: the policy's path from the cell is as long as the BFS distance;
- angle_error (continuous actions only): degrees between the predicted vector and the nearest optimal
  direction.

Graph outputs are scored on the grid: node predictions are scattered back to their cells.
"""

from __future__ import annotations

import math

import torch

from diffplan.envs.actions import ACTION_DELTAS

ACCURACY = "accuracy"
SUCCESS = "success"
OPTIMALITY = "optimality"
ANGLE_ERROR = "angle_error"
LOSS = "loss"
METRICS = (ACCURACY, SUCCESS, OPTIMALITY)  # the scores every result reports; targets name one
MONITOR = f"val/{ACCURACY}"  # what training checkpoints, early-stops and schedules on

_DELTAS = torch.as_tensor(ACTION_DELTAS, dtype=torch.long)  # (4, 2) (dy, dx)


def next_cells(maze: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Flat index of the cell each action leads to; a move into a wall or off the map stays put.

    Shapes: maze (B, H, W) with 1 = free; actions (B, H, W) int in 0..3 -> (B, H*W) long.
    """
    batch, height, width = maze.shape
    rows = torch.arange(height, device=maze.device).view(1, height, 1).expand(batch, height, width)
    cols = torch.arange(width, device=maze.device).view(1, 1, width).expand(batch, height, width)
    deltas = _DELTAS.to(maze.device)[actions.long()]  # (B, H, W, 2)
    new_rows, new_cols = rows + deltas[..., 0], cols + deltas[..., 1]
    inside = (new_rows >= 0) & (new_rows < height) & (new_cols >= 0) & (new_cols < width)
    new_rows, new_cols = new_rows.clamp(0, height - 1), new_cols.clamp(0, width - 1)
    flat_target = new_rows * width + new_cols
    target_free = (
        maze.reshape(batch, -1).gather(1, flat_target.reshape(batch, -1)).reshape(batch, height, width) > 0.5
    )
    here = rows * width + cols
    return torch.where(inside & target_free, flat_target, here).reshape(batch, -1)


def rollout(
    maze: torch.Tensor, goal: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Follow the policy from every cell at once.

    Shapes: maze (B, H, W); goal (B, 1, H, W) one-hot; actions (B, H, W).
    Returns ``reached`` (B, H, W) bool and ``steps`` (B, H, W) long (path length, meaningful where reached).
    A path that has not reached the goal after H*W steps revisits a cell, so it never will.
    """
    batch, height, width = maze.shape
    successor = next_cells(maze, actions)
    goal_flat = goal.reshape(batch, -1).argmax(dim=1, keepdim=True)  # (B, 1)
    position = torch.arange(height * width, device=maze.device).expand(batch, -1).clone()
    reached = position == goal_flat
    steps = torch.zeros_like(position)
    for step in range(1, height * width + 1):
        moved = successor.gather(1, position)
        if torch.equal(moved, position):
            break  # every walker is parked on a fixed point: nothing changes any more
        position = moved
        arrived = (position == goal_flat) & ~reached
        steps[arrived] = step
        reached |= arrived
    return reached.reshape(batch, height, width), steps.reshape(batch, height, width)


def _per_map_mean(values: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the scored cells of each map. Shapes: (B, H, W), (B, H, W) -> (B,)."""
    scored_f = scored.float()
    return (values.float() * scored_f).flatten(1).sum(1) / scored_f.flatten(1).sum(1).clamp_min(1.0)


def score_actions(
    maze: torch.Tensor, goal: torch.Tensor, dist: torch.Tensor, optimal: torch.Tensor, actions: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-map accuracy, success and optimality of a policy.

    Shapes: maze (B, H, W); goal (B, 1, H, W); dist (B, H, W) long (-1 unreachable, 0 goal);
    optimal (B, 4, H, W) bool; actions (B, H, W) long. Returns tensors of shape (B,).
    """
    scored = dist > 0
    correct = optimal.gather(1, actions.long().unsqueeze(1)).squeeze(1)
    reached, steps = rollout(maze, goal, actions)
    return {
        ACCURACY: _per_map_mean(correct, scored),
        SUCCESS: _per_map_mean(reached, scored),
        OPTIMALITY: _per_map_mean(reached & (steps == dist), scored),
    }


def continuous_to_action_scores(vectors: torch.Tensor) -> torch.Tensor:
    """Cosine of each predicted (dy, dx) vector with the four unit moves N, W, S, E.

    Shapes: vectors (..., 2) -> (..., 4). Snapping a vector to its neighbour is the argmax of these
    scores over the neighbours that exist (DESIGN section 5).
    """
    directions = _DELTAS.to(vectors.device, vectors.dtype)  # unit vectors already
    return torch.nn.functional.normalize(vectors, dim=-1, eps=1e-12) @ directions.T


def angle_error_degrees(scores: torch.Tensor, optimal: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between a vector and its nearest optimal direction, from its cosine scores.

    Shapes: scores (B, 4, H, W) cosines; optimal (B, 4, H, W) bool -> (B, H, W).
    """
    best_cos = scores.masked_fill(~optimal, -1.0).amax(dim=1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(best_cos))


def neighbour_mask(maze: torch.Tensor, has_obstacle: bool) -> torch.Tensor:
    """Which of the four moves lead to a graph neighbour: on the map, and free unless walls are nodes.

    Shapes: maze (B, H, W) -> (B, 4, H, W) bool.
    """
    batch, height, width = maze.shape
    mask = torch.zeros(batch, 4, height, width, dtype=torch.bool, device=maze.device)
    padded = torch.nn.functional.pad(maze > 0.5, (1, 1, 1, 1), value=False)
    on_map = torch.nn.functional.pad(torch.ones_like(maze, dtype=torch.bool), (1, 1, 1, 1), value=False)
    for action, (dy, dx) in enumerate(ACTION_DELTAS.tolist()):
        window = (slice(None), slice(1 + dy, 1 + dy + height), slice(1 + dx, 1 + dx + width))
        mask[:, action] = on_map[window] if has_obstacle else padded[window]
    return mask


def score_logits(
    maze: torch.Tensor,
    goal: torch.Tensor,
    dist: torch.Tensor,
    optimal: torch.Tensor,
    logits: torch.Tensor,
    *,
    continuous: bool = False,
    has_obstacle: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-map metrics from a planner's grid-shaped output.

    Shapes: logits (B, 4, H, W) action logits, or (B, 2, H, W) (dy, dx) vectors when ``continuous``;
    the rest as in ``score_actions``. Continuous vectors are snapped to the neighbour whose direction
    has the largest cosine, and ``angle_error`` is added.
    """
    if not continuous:
        return score_actions(maze, goal, dist, optimal, logits.argmax(dim=1))
    scores = continuous_to_action_scores(logits.movedim(1, -1)).movedim(-1, 1)  # (B, 4, H, W)
    allowed = neighbour_mask(maze, has_obstacle)
    actions = scores.masked_fill(~allowed, -math.inf).argmax(dim=1)
    metrics = score_actions(maze, goal, dist, optimal, actions)
    metrics[ANGLE_ERROR] = _per_map_mean(angle_error_degrees(scores, optimal), dist > 0)
    return metrics
