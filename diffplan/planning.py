"""Plan with a released planner on your own mazes: ``plan_maze(model, maze, goal)``.

The library face of the quick-start guide::

    import diffplan
    model = diffplan.load_model("VIN_maze15")
    result = diffplan.plan_maze(model, maze, goal=(1, 13))
    result.actions          # (H, W) long: 0 = N, 1 = W, 2 = S, 3 = E
    result.path((13, 1))    # the cells the policy visits from (13, 1) to the goal

Grid planners get the maze and the goal map directly. Graph planners get the graph of the maze built
the way the data sets build it (``diffplan.envs.graph.build_graph_split``): with ``has_obstacle`` every
cell is a node ``row * W + col``, 4-neighbour edges in both directions, node features
``[row, col, is_goal, is_obstacle]``. Continuous planners output a (dy, dx) move vector per node; it is
snapped to the neighbour whose direction has the largest cosine (DESIGN section 5).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from diffplan.envs.actions import ACTION_DELTAS
from diffplan.envs.expert import bfs_distances, optimal_actions
from diffplan.envs.graph import build_graph_split
from diffplan.errors import BadInputError
from diffplan.scoring.batching import make_batch, nodes_to_grid
from diffplan.scoring.budget import Budget, choose_budget, planning_budget
from diffplan.scoring.metrics import continuous_to_action_scores, neighbour_mask, rollout
from diffplan.scoring.planner import run_planner
from diffplan.task import Task

ArrayLike = Any  # numpy array, torch tensor or nested sequence


@dataclass
class PlanSettings:
    """How to feed a planner: its ``task`` (grid | graph) and, for graph planners, ``has_obstacle``."""

    task: Task
    has_obstacle: bool = True

    def __post_init__(self) -> None:
        self.task = Task(self.task)


@dataclass
class PlanResult:
    """A planner's policy and values on one maze or a batch (tensors on the CPU).

    Shapes (single maze / batch of B):
        actions: (H, W) / (B, H, W) long, the policy's move at every cell in N, W, S, E order
            (``-1`` at cells that are not graph nodes, which only happens without ``has_obstacle``).
        values: (H, W) / (B, H, W) float, the learned value map (NaN at cells that are not nodes).
        logits: (4, H, W) / (B, 4, H, W) action logits, or (2, ...) (dy, dx) vectors for continuous planners.
        maze: (H, W) / (B, H, W) float, 1 = free; goal: (H, W) / (B, H, W) one-hot.
    """

    actions: torch.Tensor
    values: torch.Tensor
    logits: torch.Tensor
    maze: torch.Tensor
    goal: torch.Tensor

    @property
    def batched(self) -> bool:
        return self.actions.dim() == 3

    def path(self, start: tuple[int, int], index: int = 0) -> list[tuple[int, int]]:
        """The cells visited when following the policy from ``start`` (row, col), goal included.

        Stops at the goal, or when the policy revisits a cell or stays in place (it never reaches the
        goal then; the list ends at the cell where it got stuck). ``index`` picks the maze of a batch.
        """
        actions = self.actions[index] if self.batched else self.actions
        maze = self.maze[index] if self.batched else self.maze
        goal = self.goal[index] if self.batched else self.goal
        height, width = maze.shape
        goal_cell = divmod(int(goal.flatten().argmax()), width)
        row, col = start
        if not (0 <= row < height and 0 <= col < width) or maze[row, col] < 0.5:
            raise BadInputError(f"start {start} is not a free cell of the {height}x{width} maze.")
        visited = [(row, col)]
        while (row, col) != goal_cell:
            action = int(actions[row, col])
            if action < 0:
                break
            dy, dx = ACTION_DELTAS[action]
            new_row, new_col = row + int(dy), col + int(dx)
            if not (0 <= new_row < height and 0 <= new_col < width) or maze[new_row, new_col] < 0.5:
                break  # a move into a wall leaves the agent in place: stuck
            if (new_row, new_col) in visited:
                break  # a cycle never reaches the goal
            row, col = new_row, new_col
            visited.append((row, col))
        return visited


def plan_settings(
    model: nn.Module, task: Task | str | None = None, has_obstacle: bool | None = None
) -> PlanSettings:
    """How to feed ``model``: from the arguments, else the ``release_info`` set by ``load_model``,
    else the planner class's own ``task`` (``has_obstacle`` defaults to True, as in every release graph
    model)."""
    extra = (getattr(model, "release_info", None) or {}).get("extra", {})
    task = task or extra.get("kind") or getattr(model, "task", None)
    if task not in tuple(Task):
        raise BadInputError(
            f"cannot tell whether {type(model).__name__} is a grid or a graph planner; "
            f"pass task='grid' or task='graph'."
        )
    if has_obstacle is None:
        has_obstacle = bool(extra.get("has_obstacle", True))
    return PlanSettings(Task(task), has_obstacle)


def _as_tensor(value: ArrayLike, what: str) -> torch.Tensor:
    try:
        tensor = (
            value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        )
    except (TypeError, ValueError) as err:
        raise BadInputError(f"{what} must be an array of numbers ({err}).") from err
    if tensor.dtype == torch.bool or not tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    return tensor.to(torch.float32)


def _goal_maps(goal: ArrayLike, maze: torch.Tensor) -> torch.Tensor:
    """One-hot goal maps (B, 1, H, W) from (row, col) pairs or one-hot maps; checks one free goal per map."""
    batch, height, width = maze.shape
    if isinstance(goal, tuple) and len(goal) == 2 and all(isinstance(v, (int, np.integer)) for v in goal):
        goal = [goal] * batch if batch == 1 else goal
    g = _as_tensor(goal, "goal")
    if g.shape[-2:] == (height, width):  # one-hot maps
        maps = g.reshape(-1, 1, height, width)
        if maps.shape[0] != batch:
            raise BadInputError(f"{maps.shape[0]} goal maps for {batch} mazes; give one goal per maze.")
        if not torch.all((maps == 0) | (maps == 1)) or not torch.all(maps.flatten(1).sum(1) == 1):
            raise BadInputError("each goal map must be one-hot: a single 1 at the goal cell, 0 elsewhere.")
    else:
        coords = g.reshape(-1, 2) if g.numel() % 2 == 0 and g.shape[-1:] == (2,) else None
        if coords is not None and torch.any(coords != coords.round()):
            raise BadInputError(f"goal cells must have whole-number (row, col) indices, got {g.tolist()}.")
        if coords is None or coords.shape[0] != batch:
            raise BadInputError(
                f"goal must be a (row, col) pair per maze or a one-hot map of shape "
                f"({height}, {width}); got shape {tuple(g.shape)} for {batch} maze(s)."
            )
        coords = coords.long()
        rows, cols = coords[:, 0], coords[:, 1]
        if torch.any((rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)):
            raise BadInputError(f"goal {coords.tolist()} lies outside the {height}x{width} maze.")
        maps = torch.zeros(batch, 1, height, width)
        maps[torch.arange(batch), 0, rows, cols] = 1.0
    goal_free = (maze.unsqueeze(1) * maps).flatten(1).sum(1)
    if torch.any(goal_free < 0.5):
        bad = int(torch.nonzero(goal_free < 0.5)[0])
        cell = divmod(int(maps[bad].flatten().argmax()), width)
        raise BadInputError(f"the goal {cell} of maze {bad} is a wall; the goal must be a free cell (1).")
    return maps


def graph_batch_of(
    maze: torch.Tensor, goal: torch.Tensor, has_obstacle: bool = True
) -> dict[str, torch.Tensor]:
    """The graphs of mazes (B, H, W) with goal maps (B, 1, H, W), batched as for training.

    Returns the dict of ``diffplan.scoring.batching.graph_batch`` (x, edge_index, batch, node_cell ...),
    built by the data sets' own maze -> graph conversion, so features match the training data exactly.
    """
    goal_cell = goal.flatten(1).argmax(dim=1).numpy()
    split = build_graph_split(maze.numpy().round().astype(np.uint8), goal_cell, has_obstacle=has_obstacle)
    return make_batch(split, torch.arange(len(split)))


def policy_of(output, batch: dict[str, torch.Tensor], settings: PlanSettings) -> PlanResult:
    """Actions, values and grid-shaped logits of a planner output on a batch (grid or graph layout)."""
    maze = batch["maze"]
    if settings.task is Task.GRID:
        logits, values = output.logits, output.values[:, 0]
        node = torch.ones_like(maze, dtype=torch.bool)
    else:
        logits = nodes_to_grid(output.logits, batch, fill=0.0)
        values = nodes_to_grid(output.values, batch, fill=math.nan)[:, 0]
        node = nodes_to_grid(torch.ones(output.logits.shape[0], 1), batch, fill=0.0)[:, 0] > 0.5
    logits, values = logits.detach().cpu(), values.detach().cpu()
    if logits.shape[1] == 2:  # continuous (dy, dx): snap to the best neighbour
        scores = continuous_to_action_scores(logits.movedim(1, -1)).movedim(-1, 1)
        allowed = neighbour_mask(maze, settings.has_obstacle)
        actions = scores.masked_fill(~allowed, -math.inf).argmax(dim=1)
    else:
        actions = logits.argmax(dim=1)
    actions = torch.where(node.cpu(), actions, torch.full_like(actions, -1))
    return PlanResult(
        actions=actions, values=values, logits=logits, maze=maze.cpu(), goal=batch["goal"][:, 0].cpu()
    )


def plan_batch(
    model: nn.Module, maze: torch.Tensor, goal: torch.Tensor, settings: PlanSettings
) -> PlanResult:
    """Plan on already-checked tensors: maze (B, H, W) float, goal (B, 1, H, W) one-hot."""
    if settings.task is Task.GRID:
        batch = {"maze": maze, "goal": goal}
    else:
        batch = graph_batch_of(maze, goal, settings.has_obstacle)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = run_planner(model, batch, settings.task)
    finally:
        model.train(was_training)
    return policy_of(output, batch, settings)


def plan_maze(
    model: nn.Module,
    maze: ArrayLike,
    goal: ArrayLike | Sequence[int],
    *,
    task: Task | str | None = None,
    has_obstacle: bool | None = None,
) -> PlanResult:
    """Run a planner on one maze or a batch and read off its policy and value map.

    Args:
        model: a planner, e.g. from ``diffplan.load_model(name)`` (grid, graph or continuous).
        maze: (H, W) or (B, H, W), 1 = free, 0 = wall; numpy, torch or nested lists.
        goal: a (row, col) pair, a one-hot map (H, W) / (1, H, W), or per maze of a batch: (B, 2)
            pairs or (B, H, W) / (B, 1, H, W) one-hot maps. The goal must be a free cell.
        task, has_obstacle: override what ``load_model`` recorded (needed only for planners built by hand
            that the registry cannot identify).

    Returns:
        ``PlanResult``: actions (..., H, W) long in N, W, S, E order, values (..., H, W), logits.
    """
    m = _as_tensor(maze, "maze")
    single = m.dim() == 2
    if m.dim() not in (2, 3) or min(m.shape[-2:]) < 2:
        raise BadInputError(f"maze must have shape (H, W) or (B, H, W), got {tuple(m.shape)}.")
    if not torch.all((m == 0) | (m == 1)):
        raise BadInputError("maze cells must be 1 (free) or 0 (wall).")
    m = m.reshape(-1, *m.shape[-2:])
    goal_maps = _goal_maps(goal, m)
    result = plan_batch(model, m, goal_maps, plan_settings(model, task, has_obstacle))
    if single:
        result = PlanResult(
            result.actions[0], result.values[0], result.logits[0], result.maze[0], result.goal[0]
        )
    return result


@dataclass
class MapPlan:
    """A planner's answer on one user map (``diffplan plan``).

    ``result`` holds actions, values and logits (H, W); ``dist`` the BFS distance to the goal (H, W),
    -1 where unreachable; ``path`` the cells visited from ``start`` (None without a start), ``reached``
    whether it ends at the goal; ``budget`` the planning budget used; ``seconds`` the planning time.
    """

    result: PlanResult
    dist: np.ndarray
    goal: tuple[int, int]
    start: tuple[int, int] | None
    path: list[tuple[int, int]] | None
    reached: bool | None
    budget: Budget
    seconds: float

    @property
    def optimal_length(self) -> int | None:
        """BFS steps from the start to the goal (None without a start, -1 when unreachable)."""
        return None if self.start is None else int(self.dist[self.start])

    @property
    def path_length(self) -> int | None:
        return None if self.path is None else len(self.path) - 1

    @property
    def failed(self) -> torch.Tensor:
        """(H, W) bool: cells that can reach the goal but from which the policy never does."""
        maze, goal = self.result.maze[None], self.result.goal[None, None]
        reached, _ = rollout(maze, goal, self.result.actions[None].clamp_min(0))
        return ~reached[0] & torch.as_tensor(self.dist > 0)

    @property
    def wrong(self) -> torch.Tensor:
        """(H, W) bool: reachable cells whose action is not one of their optimal actions."""
        optimal = torch.as_tensor(optimal_actions(self.dist[None])[0])  # (4, H, W)
        action = self.result.actions.clamp_min(0)
        chosen = optimal.gather(0, action[None])[0]
        return ~chosen & torch.as_tensor(self.dist > 0)

    def success_rate(self) -> float:
        """Fraction of the cells that can reach the goal from which the policy does (goal excluded)."""
        scored = torch.as_tensor(self.dist > 0)
        return 1.0 - float(self.failed[scored].float().mean()) if bool(scored.any()) else 1.0


def plan_map(
    model: nn.Module,
    maze: ArrayLike,
    goal: tuple[int, int],
    *,
    start: tuple[int, int] | None = None,
    budget: int | str | None = "bfs",
    has_obstacle: bool | None = None,
) -> MapPlan:
    """Plan on one map of any size with the budget scaled to it (``"bfs"``: the longest BFS distance to
    the goal + 1; see :mod:`diffplan.scoring.budget`), and follow the policy from ``start`` if given.

    Raises ``BadInputError`` for a map with no free cell, or a goal or start off the map or on a wall.
    """
    m = _as_tensor(maze, "maze")
    if m.dim() != 2 or min(m.shape) < 2:
        raise BadInputError(f"a map must have shape (H, W) with H, W >= 2, got {tuple(m.shape)}.")
    if not torch.all((m == 0) | (m == 1)):
        raise BadInputError("map cells must be 1 (free) or 0 (wall).")
    if not bool((m > 0.5).any()):
        raise BadInputError("the map has no free cell; free cells are 1 (or '.' in a text maze).")
    height, width = m.shape
    for what, cell in (("goal", goal), ("start", start)):
        if cell is None:
            continue
        row, col = cell
        if not (0 <= row < height and 0 <= col < width):
            raise BadInputError(f"the {what} {cell} lies outside the {height}x{width} map.")
        if m[row, col] < 0.5:
            raise BadInputError(f"the {what} {cell} is a wall; choose a free cell.")
    goal_map = torch.zeros(1, 1, height, width)
    goal_map[0, 0, goal[0], goal[1]] = 1.0
    dist = bfs_distances(m[None].numpy(), goal_map.numpy())[0]
    chosen = choose_budget(model, budget, side=max(height, width), longest=int(dist.max()))
    began = time.perf_counter()
    with planning_budget(model, chosen.steps):
        result = plan_maze(model, m, goal, has_obstacle=has_obstacle)
    seconds = time.perf_counter() - began
    path = reached = None
    if start is not None:
        path = result.path(start)
        reached = path[-1] == tuple(goal)
    return MapPlan(result, dist, tuple(goal), start, path, reached, chosen, seconds)
