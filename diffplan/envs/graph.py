"""Maze -> graph (DESIGN section 4), for whole batches of mazes at once.

With ``has_obstacle`` every cell is a node, numbered ``row * W + col``, and every maze of one size
shares the same lattice: 4-neighbour edges in both directions (``2 * (H * (W - 1) + W * (H - 1))``
directed edges, 840 for 15x15), no self-loops. Without it only free cells are nodes, numbered in
row-major order, and an edge joins two free 4-neighbours. Node features are
``[row, col, is_goal, is_obstacle]``; node labels are the labels of the node's cell (aligned, unlike the
published generator).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch_geometric.data import Data

from diffplan.envs.actions import ACTION_DELTAS
from diffplan.envs.expert import expert_labels
from diffplan.envs.generator import goal_maps
from diffplan.envs.splits import GraphSplit


@lru_cache(maxsize=8)
def _lattice(height: int, width: int) -> np.ndarray:
    y, x = np.divmod(np.arange(height * width), width)
    src, dst = [], []
    for dy, dx in ACTION_DELTAS:  # per source cell, edges in action order N, W, S, E
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        src.append(np.where(inside, y * width + x, -1))
        dst.append(np.where(inside, ny * width + nx, -1))
    src, dst = np.stack(src, axis=1).ravel(), np.stack(dst, axis=1).ravel()
    keep = src >= 0
    edges = np.stack([src[keep], dst[keep]]).astype(np.int64)
    edges.setflags(write=False)
    return edges


def lattice_edge_index(height: int, width: int) -> np.ndarray:
    """(2, E) int64 directed 4-neighbour edges between all cells of an H x W grid, sorted by source.

    ``E = 2 * (H * (W - 1) + W * (H - 1))``; node index = ``row * W + col``. A fresh copy of a cached array.
    """
    return _lattice(height, width).copy()


def build_graph_split(
    maze: np.ndarray,
    goal_cell: np.ndarray,
    *,
    has_obstacle: bool = True,
    cont_action: bool = False,
) -> GraphSplit:
    """Graphs for a batch of mazes, with labels recomputed by the BFS expert.

    Args:
        maze: (N, H, W), 1 = free, 0 = wall.
        goal_cell: (N,) flat goal indices ``row * W + col``.
        has_obstacle: every cell is a node (True) or only free cells are (False).
        cont_action: mark the split as labelled by move vectors (see ``GraphSplit.optimal_vectors``).
    """
    maze = np.asarray(maze).astype(np.uint8)
    goal_cell = np.asarray(goal_cell, dtype=np.int64)
    n, h, w = maze.shape
    cells = h * w
    goal = goal_maps(goal_cell, h, w)
    dist, optimal = expert_labels(maze, goal)
    lattice = _lattice(h, w)
    flat_free = maze.reshape(n, cells).astype(bool)

    if has_obstacle:  # one shared lattice: tile it, no per-graph work
        counts = np.full(n, cells, dtype=np.int64)
        graph_of_node = np.repeat(np.arange(n), cells)
        node_cell = np.tile(np.arange(cells, dtype=np.int64), n)
        edge_index = np.tile(lattice, n)
        edge_counts = np.full(n, lattice.shape[1], dtype=np.int64)
    else:
        counts = flat_free.sum(axis=1).astype(np.int64)
        graph_of_node, node_cell = np.nonzero(flat_free)
        local = np.cumsum(flat_free, axis=1) - 1  # (N, cells): a free cell's node index in its graph
        src, dst = lattice
        kept = flat_free[:, src] & flat_free[:, dst]  # (N, E)
        g, e = np.nonzero(kept)
        edge_index = np.stack([local[g, src[e]], local[g, dst[e]]]).astype(np.int64)
        edge_counts = kept.sum(axis=1).astype(np.int64)

    x = np.empty((len(node_cell), 4), dtype=np.float32)
    x[:, 0], x[:, 1] = np.divmod(node_cell, w)
    x[:, 2] = node_cell == goal_cell[graph_of_node]
    x[:, 3] = ~flat_free[graph_of_node, node_cell]
    node_optimal = optimal.reshape(n, 4, cells).transpose(0, 2, 1)[graph_of_node, node_cell]
    return GraphSplit(
        maze=torch.from_numpy(maze.astype(np.float32)),
        goal=torch.from_numpy(goal),
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(edge_index),
        node_ptr=torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)),
        edge_ptr=torch.from_numpy(np.concatenate([[0], np.cumsum(edge_counts)]).astype(np.int64)),
        node_cell=torch.from_numpy(node_cell.astype(np.int64)),
        optimal=torch.from_numpy(np.ascontiguousarray(node_optimal)),
        dist=torch.from_numpy(dist.reshape(n, cells)[graph_of_node, node_cell]),
        cont_action=cont_action,
        has_obstacle=has_obstacle,
    )


def maze_to_graph(maze: np.ndarray, goal_yx: tuple[int, int], *, has_obstacle: bool = True) -> Data:
    """One (H, W) maze and its goal (row, col) as a PyG ``Data`` (see ``GraphSplit.graph``)."""
    maze = np.asarray(maze)
    w = maze.shape[1]
    split = build_graph_split(maze[None], np.array([goal_yx[0] * w + goal_yx[1]]), has_obstacle=has_obstacle)
    return split.graph(0)
