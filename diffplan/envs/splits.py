"""What ``load_split`` returns: one split of a data set, as torch tensors with recomputed labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data

from diffplan.envs.actions import ACTION_DELTAS
from diffplan.envs.expert import expert_labels
from diffplan.envs.generator import goal_maps
from diffplan.task import Task


@dataclass
class GridSplit:
    """One split of a grid data set; labels recomputed by the BFS expert.

    Shapes:
        maze: (N, H, W) float32, 1 = free, 0 = wall.
        goal: (N, 1, H, W) float32, one-hot.
        optimal: (N, 4, H, W) bool, the optimal-action sets over N, W, S, E (empty at walls, the goal
            and unreachable cells).
        dist: (N, H, W) int64 BFS distance to the goal, -1 for walls and unreachable cells.
    """

    task = Task.GRID
    maze: torch.Tensor
    goal: torch.Tensor
    optimal: torch.Tensor
    dist: torch.Tensor

    def __len__(self) -> int:
        return self.maze.shape[0]


@dataclass
class GraphSplit:
    """One split of a graph data set: N graphs stored back to back, plus their grid views.

    Graph ``i`` owns nodes ``node_ptr[i]:node_ptr[i + 1]`` and edges ``edge_ptr[i]:edge_ptr[i + 1]``;
    edge indices are local to their graph (0 = the graph's first node). Node ``j`` of a graph is the
    cell ``node_cell[j] = row * W + col`` and carries that cell's labels.

    Shapes:
        maze: (N, H, W) float32 and goal: (N, 1, H, W) float32, as in ``GridSplit`` (for metrics, plots).
        x: (sumV, 4) float32, node features [row, col, is_goal, is_obstacle].
        edge_index: (2, sumE) int64, 4-neighbour edges in both directions, no self-loops.
        node_ptr: (N + 1,) int64. edge_ptr: (N + 1,) int64. node_cell: (sumV,) int64.
        optimal: (sumV, 4) bool over N, W, S, E. dist: (sumV,) int64, -1 = obstacle/unreachable.
    ``cont_action`` files label each node with the unit vectors (dy, dx) of its optimal moves: see
    ``optimal_vectors``. ``has_obstacle``: every cell is a node; otherwise only free cells are.
    """

    task = Task.GRAPH
    maze: torch.Tensor
    goal: torch.Tensor
    x: torch.Tensor
    edge_index: torch.Tensor
    node_ptr: torch.Tensor
    edge_ptr: torch.Tensor
    node_cell: torch.Tensor
    optimal: torch.Tensor
    dist: torch.Tensor
    cont_action: bool
    has_obstacle: bool

    def __len__(self) -> int:
        return self.maze.shape[0]

    @property
    def optimal_vectors(self) -> torch.Tensor:
        """(sumV, 4, 2) float32: row a is action a's unit move (dy, dx) where a is optimal, else zeros."""
        deltas = torch.as_tensor(ACTION_DELTAS, dtype=torch.float32)
        return self.optimal[..., None].float() * deltas

    def graph(self, i: int) -> Data:
        """Graph ``i`` as a PyG ``Data(x, pos, edge_index, optimal, dist, node_cell)``.

        ``cont_action`` splits add ``optimal_vectors`` (V, 4, 2).
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"graph index {i} out of range for a split of {len(self)} graphs")
        i %= len(self)
        n0, n1 = int(self.node_ptr[i]), int(self.node_ptr[i + 1])
        e0, e1 = int(self.edge_ptr[i]), int(self.edge_ptr[i + 1])
        x = self.x[n0:n1]
        data = Data(
            x=x,
            pos=x[:, :2],
            edge_index=self.edge_index[:, e0:e1],
            optimal=self.optimal[n0:n1],
            dist=self.dist[n0:n1],
            node_cell=self.node_cell[n0:n1],
        )
        if self.cont_action:
            data.optimal_vectors = self.optimal_vectors[n0:n1]
        return data


def make_grid_split(maze: np.ndarray, goal_cell: np.ndarray) -> GridSplit:
    """Build a ``GridSplit`` from ``maze`` (N, H, W) (1 = free) and flat goal indices (N,)."""
    _, h, w = maze.shape
    goal = goal_maps(goal_cell, h, w)
    dist, optimal = expert_labels(maze, goal)
    return GridSplit(
        maze=torch.from_numpy(maze.astype(np.float32)),
        goal=torch.from_numpy(goal),
        optimal=torch.from_numpy(optimal),
        dist=torch.from_numpy(dist),
    )
