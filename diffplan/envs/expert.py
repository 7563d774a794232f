"""The BFS expert of DESIGN section 3: distances to the goal and optimal-action sets, batched.

``dist[n, y, x]`` is the unit-cost shortest-path length from cell (y, x) to the goal over free cells
(4-neighbour moves), -1 for walls and cells that cannot reach the goal. The optimal-action set of a
reachable, non-goal free cell holds every action a of ``4abs-cc`` whose destination is one step closer:
``dist[y + dy_a, x + dx_a] == dist[y, x] - 1``. A move into a wall or off the map leaves the agent in
place, so it is never optimal; the goal, walls and unreachable cells have empty sets.

The batched versions expand the BFS frontier of every maze at once with array shifts, one loop
iteration per distance step. ``reference_distances`` / ``reference_optimal_actions`` are the plain
one-maze versions the tests compare against.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from diffplan.envs.actions import ACTION_DELTAS, NUM_ACTIONS
from diffplan.errors import BadInputError


def _as_goal_mask(goal: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    goal = np.asarray(goal)
    if goal.ndim == 4 and goal.shape[1] == 1:
        goal = goal[:, 0]
    if goal.shape != shape:
        raise BadInputError(
            f"goal maps of shape {goal.shape} do not match mazes of shape {shape}; pass (N, 1, H, W)."
        )
    return goal.astype(bool)


def shift(values: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """``out[..., y, x] = values[..., y + dy, x + dx]``, ``fill`` where (y + dy, x + dx) is off the map."""
    out = np.full_like(values, fill)
    h, w = values.shape[-2:]
    out[..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)] = values[
        ..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)
    ]
    return out


def bfs_distances(maze: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Shortest-path lengths to the goal for a batch of mazes.

    Args:
        maze: (N, H, W), nonzero = free (1 = free, 0 = wall).
        goal: (N, 1, H, W) or (N, H, W) one-hot goal maps; the goal cell must be free.

    Returns:
        dist: (N, H, W) int64, -1 for walls and unreachable cells, 0 at the goal.
    """
    free = np.asarray(maze) != 0
    if free.ndim != 3:
        raise BadInputError(f"mazes must have shape (N, H, W), got {free.shape}.")
    start = _as_goal_mask(goal, free.shape) & free
    if free.shape[2] <= _WORD:
        return _bfs_bitboards(free, start)
    return _bfs_masks(free, start)


_WORD = 63  # columns a uint64 row bitboard holds, with one spare bit for the eastward shift
_ONE = np.uint64(1)


def _pack_rows(mask: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, H) uint64 with bit x = column x."""
    n, h, _ = mask.shape
    words = np.zeros((n, h, 8), dtype=np.uint8)
    packed = np.packbits(mask, axis=-1, bitorder="little")
    words[..., : packed.shape[-1]] = packed
    return words.view("<u8")[..., 0]


def _unpack_rows(words: np.ndarray, width: int) -> np.ndarray:
    """(N, H) uint64 -> (N, H, W) uint8 bits, inverse of ``_pack_rows``."""
    as_bytes = np.ascontiguousarray(words, dtype="<u8")[..., None].view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, count=width, bitorder="little")


def _bfs_bitboards(free: np.ndarray, start: np.ndarray) -> np.ndarray:
    """BFS on row bitboards: one uint64 per maze row, so a step costs a few ops on (N, H) words.

    Each cell's distance is written in binary into bit-planes as its BFS layer is reached, and the
    planes are unpacked once at the end. Mazes whose BFS is over leave the working set.
    """
    n, h, w = free.shape
    open_all = _pack_rows(free)
    frontier = _pack_rows(start)
    seen_all = frontier.copy()
    planes_all = np.zeros(((h * w).bit_length(), n, h), dtype=np.uint64)
    live = np.arange(n)
    open_, seen, planes = open_all, seen_all.copy(), planes_all.copy()
    step = 0
    while len(live):
        step += 1
        grown = (frontier << _ONE) | (frontier >> _ONE)
        grown[:, 1:] |= frontier[:, :-1]
        grown[:, :-1] |= frontier[:, 1:]
        frontier = grown & open_ & ~seen
        seen |= frontier
        for bit in range(len(planes)):
            if step >> bit & 1:
                planes[bit] |= frontier
        alive = frontier.any(axis=1)
        if alive.sum() < 0.75 * len(live):  # most mazes finish long before the farthest one
            done = live[~alive]
            seen_all[done], planes_all[:, done] = seen[~alive], planes[:, ~alive]
            live, open_, frontier = live[alive], open_[alive], frontier[alive]
            seen, planes = seen[alive], planes[:, alive]
    dist = np.zeros((n, h, w), dtype=np.int64)
    for bit, plane in enumerate(planes_all):
        if plane.any():
            dist += _unpack_rows(plane, w).astype(np.int64) << bit
    dist[_unpack_rows(seen_all, w) == 0] = -1
    return dist


def _bfs_masks(free: np.ndarray, start: np.ndarray) -> np.ndarray:
    """BFS with boolean (N, H, W) frontiers, for mazes wider than a bitboard word."""
    frontier = start
    dist = np.where(frontier, 0, -1).astype(np.int64)
    unseen = free & ~frontier
    live = np.arange(len(free))  # mazes whose frontier is not empty yet; the others are done
    step = 0
    while len(live):
        step += 1
        grown = np.zeros_like(frontier)
        grown[:, 1:, :] |= frontier[:, :-1, :]
        grown[:, :-1, :] |= frontier[:, 1:, :]
        grown[:, :, 1:] |= frontier[:, :, :-1]
        grown[:, :, :-1] |= frontier[:, :, 1:]
        frontier = grown & unseen
        unseen &= ~frontier
        b, y, x = np.nonzero(frontier)
        dist[live[b], y, x] = step
        alive = frontier.any(axis=(1, 2))
        if not alive.all():  # drop finished mazes: most finish long before the farthest one
            live, frontier, unseen = live[alive], frontier[alive], unseen[alive]
    return dist


def optimal_actions(dist: np.ndarray) -> np.ndarray:
    """Optimal-action sets from BFS distances.

    Shapes: dist (N, H, W) int64 (-1 = wall/unreachable) -> optimal (N, 4, H, W) bool over N, W, S, E.
    """
    dist = np.asarray(dist)
    out = np.zeros((dist.shape[0], NUM_ACTIONS, *dist.shape[1:]), dtype=bool)
    for a, (dy, dx) in enumerate(ACTION_DELTAS):
        dest = shift(dist, int(dy), int(dx), -1)
        out[:, a] = (dist > 0) & (dest == dist - 1)
    return out


def expert_labels(maze: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(dist, optimal)``: BFS distances (N, H, W) int64 and optimal sets (N, 4, H, W) bool."""
    dist = bfs_distances(maze, goal)
    return dist, optimal_actions(dist)


def random_tie_policy(optimal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One optimal action per cell, ties broken uniformly at random (the published one-hot labels).

    Shapes: optimal (N, 4, H, W) bool -> policy (N, 4, H, W) float64 one-hot over axis 1; all zeros
    where the set is empty (walls, the goal, unreachable cells).
    """
    keys = np.where(optimal, rng.random(optimal.shape), -1.0)
    choice = keys.argmax(axis=1)
    policy = np.zeros(optimal.shape, dtype=np.float64)
    np.put_along_axis(policy, choice[:, None], 1.0, axis=1)
    policy *= optimal.any(axis=1, keepdims=True)
    return policy


def reference_distances(maze: np.ndarray, goal_yx: tuple[int, int]) -> np.ndarray:
    """Plain queue BFS on one (H, W) maze; the batched version must agree with it exactly."""
    h, w = maze.shape
    dist = np.full((h, w), -1, dtype=np.int64)
    dist[goal_yx] = 0
    queue = deque([tuple(goal_yx)])
    while queue:
        y, x = queue.popleft()
        for dy, dx in ACTION_DELTAS:
            ny, nx = y + int(dy), x + int(dx)
            if 0 <= ny < h and 0 <= nx < w and maze[ny, nx] and dist[ny, nx] < 0:
                dist[ny, nx] = dist[y, x] + 1
                queue.append((ny, nx))
    return dist


def reference_optimal_actions(maze: np.ndarray, goal_yx: tuple[int, int]) -> np.ndarray:
    """Plain per-cell optimal-action sets (4, H, W) bool of one maze, from ``reference_distances``."""
    dist = reference_distances(maze, goal_yx)
    h, w = maze.shape
    out = np.zeros((NUM_ACTIONS, h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            if dist[y, x] <= 0:
                continue
            for a, (dy, dx) in enumerate(ACTION_DELTAS):
                ny, nx = y + int(dy), x + int(dx)
                if 0 <= ny < h and 0 <= nx < w and dist[ny, nx] == dist[y, x] - 1:
                    out[a, y, x] = True
    return out
