"""The maze distribution of DESIGN section 3, generated for whole batches at once.

1. Randomized depth-first carving from (1, 1) over the odd cells, two cells per step, freeing the wall
   cell between; the border stays wall. Every maze of the batch runs its own DFS; one loop iteration
   advances all of them by one push or pop (at most ``2 * C - 2`` iterations for ``C`` odd cells).
2. Decimation: p ~ U(0, 1) per maze; every interior cell is opened independently with probability p.
3. Goal: uniform over the interior cells, forced free; a goal with no free neighbour (it would reach
   fewer than 2 cells) is rejected and the sample drawn again.
4. Every (maze, goal) pair of one call is unique, so no pair repeats across train/valid/test.

Mazes are ``uint8`` arrays, 1 = free, 0 = wall; goals are flat cell indices ``row * W + col``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from diffplan.envs.actions import ACTION_DELTAS
from diffplan.errors import BadInputError

MIN_MAZE_SIZE = 5
_CHUNK = 1024  # mazes per batch: bounds memory and paces the progress callback
_BARREN_LIMIT = 10


def check_maze_size(maze_size: int) -> None:
    """Raise ``BadInputError`` unless ``maze_size`` is an odd integer of at least 5.

    Carving walks the odd cells between border walls, so the size must be odd; 3 leaves a single free
    cell, from which no goal reaches two cells.
    """
    if isinstance(maze_size, bool) or not isinstance(maze_size, (int, np.integer)):
        raise BadInputError(f"maze size must be an integer, got {maze_size!r}; pass an odd size such as 15.")
    if maze_size < MIN_MAZE_SIZE or maze_size % 2 == 0:
        raise BadInputError(
            f"maze size {maze_size} cannot be carved: it must be odd and at least {MIN_MAZE_SIZE} "
            "(the release uses 15); pass --maze-size 15."
        )


def carve_mazes(n: int, maze_size: int, rng: np.random.Generator) -> np.ndarray:
    """Perfect mazes by randomized depth-first carving from (1, 1).

    Returns ``(n, H, W)`` uint8 with ``H = W = maze_size``: the ``C = ((H - 1) / 2) ** 2`` odd cells
    and the wall cell between each carved pair are free, everything else (border included) is wall.
    """
    check_maze_size(maze_size)
    m = (maze_size - 1) // 2
    cells = m * m
    rc = np.stack(np.divmod(np.arange(cells), m), axis=1)  # (C, 2) cell -> (r, c) on the odd lattice
    moved = rc[:, None, :] + ACTION_DELTAS[None, :, :]  # (C, 4, 2)
    inside = ((moved >= 0) & (moved < m)).all(-1)
    neighbour = np.where(inside, moved[..., 0] * m + moved[..., 1], -1)  # (C, 4), -1 = off the lattice

    mazes = np.zeros((n, maze_size, maze_size), dtype=np.uint8)
    mazes[:, 1, 1] = 1
    visited = np.zeros((n, cells), dtype=bool)
    visited[:, 0] = True
    stack = np.zeros((n, cells), dtype=np.int64)
    depth = np.ones(n, dtype=np.int64)  # stack height; the start cell (index 0) is on it
    pushes = np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    while (pushes < cells - 1).any():
        top = stack[rows, np.maximum(depth - 1, 0)]  # finished mazes keep a harmless index
        cand = neighbour[top]  # (n, 4)
        free = (cand >= 0) & ~visited[rows[:, None], np.maximum(cand, 0)]
        keys = np.where(free, rng.random((n, 4)), -1.0)
        action = keys.argmax(axis=1)
        push = free.any(axis=1)
        b, a, t = rows[push], action[push], top[push]
        nxt = cand[b, a]
        visited[b, nxt] = True
        stack[b, depth[b]] = nxt
        depth[b] += 1
        pushes[b] += 1
        y, x = 2 * rc[t, 0] + 1, 2 * rc[t, 1] + 1
        mazes[b, y + ACTION_DELTAS[a, 0], x + ACTION_DELTAS[a, 1]] = 1  # the wall between
        mazes[b, y + 2 * ACTION_DELTAS[a, 0], x + 2 * ACTION_DELTAS[a, 1]] = 1
        depth[~push & (depth > 0)] -= 1  # dead end: backtrack
    return mazes


def decimate(mazes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Open each interior cell with probability p, p ~ U(0, 1) drawn once per maze (a new array)."""
    n, h, w = mazes.shape
    p = rng.random(n)
    opened = rng.random((n, h - 2, w - 2)) < p[:, None, None]
    out = mazes.copy()
    out[:, 1:-1, 1:-1] |= opened.astype(np.uint8)
    return out


def sample_goals(mazes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform interior goals, forced free.

    Returns ``(mazes, goal_cell, valid)``: the mazes with each goal cell freed (a new array), the flat
    goal indices ``(n,)`` int64, and ``(n,)`` bool, False where the goal has no free 4-neighbour.
    """
    n, h, w = mazes.shape
    gy = rng.integers(1, h - 1, size=n)
    gx = rng.integers(1, w - 1, size=n)
    out = mazes.copy()
    rows = np.arange(n)
    out[rows, gy, gx] = 1
    valid = np.zeros(n, dtype=bool)
    for dy, dx in ACTION_DELTAS:  # interior goals: every neighbour lies on the map
        valid |= out[rows, gy + dy, gx + dx] == 1
    return out, gy * w + gx, valid


def pair_keys(mazes: np.ndarray, goal_cell: np.ndarray) -> np.ndarray:
    """One opaque key per (maze, goal) pair, ``(n,)`` of a void dtype: equal keys = equal pairs."""
    n = len(mazes)
    bits = np.packbits(mazes.reshape(n, mazes.shape[1] * mazes.shape[2]).astype(bool), axis=1)
    goal = goal_cell.astype("<u4").view(np.uint8).reshape(n, 4)
    raw = np.ascontiguousarray(np.concatenate([bits, goal], axis=1))
    return raw.view(np.dtype((np.void, raw.shape[1]))).ravel()


def generate_mazes(
    n: int,
    maze_size: int = 15,
    *,
    rng: np.random.Generator,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unique (maze, goal) samples of the DESIGN distribution.

    Args:
        n: number of samples (at least 1).
        maze_size: odd side length, at least 5.
        rng: the numpy generator every draw comes from; the same seed gives the same arrays.
        progress: called as ``progress(done, n)`` after each batch.

    Shapes:
        mazes: (n, H, W) uint8, 1 = free. goal_cell: (n,) int64, ``row * W + col``.
    """
    check_maze_size(maze_size)
    if n < 1:
        raise BadInputError(f"cannot generate {n} mazes; ask for at least 1.")
    mazes = np.zeros((0, maze_size, maze_size), dtype=np.uint8)
    goals = np.zeros(0, dtype=np.int64)
    keys = pair_keys(mazes, goals)
    barren = 0  # consecutive batches without a new pair: the distribution has (almost) no more
    while len(mazes) < n:
        batch = min(_CHUNK, max(64, int((n - len(mazes)) * 1.1)))
        new_mazes, new_goals, valid = sample_goals(decimate(carve_mazes(batch, maze_size, rng), rng), rng)
        new_mazes, new_goals = new_mazes[valid], new_goals[valid]
        new_keys = pair_keys(new_mazes, new_goals)
        _, first = np.unique(np.concatenate([keys, new_keys]), return_index=True)
        fresh = np.sort(first[first >= len(keys)]) - len(keys)  # first occurrences, in draw order
        fresh = fresh[: n - len(mazes)]
        barren = 0 if len(fresh) else barren + 1
        if barren == _BARREN_LIMIT:
            raise BadInputError(
                f"found only {len(mazes)} distinct (maze, goal) pairs of size {maze_size}, fewer than the "
                f"{n} asked for; ask for fewer mazes or a larger maze size."
            )
        mazes = np.concatenate([mazes, new_mazes[fresh]])
        goals = np.concatenate([goals, new_goals[fresh]])
        keys = np.concatenate([keys, new_keys[fresh]])
        if progress is not None:
            progress(len(mazes), n)
    return mazes, goals


def goal_maps(goal_cell: np.ndarray, height: int, width: int, dtype=np.float32) -> np.ndarray:
    """One-hot goal maps ``(n, 1, H, W)`` from flat goal indices ``(n,)``."""
    n = len(goal_cell)
    out = np.zeros((n, height * width), dtype=dtype)
    out[np.arange(n), goal_cell] = 1
    return out.reshape(n, 1, height, width)
