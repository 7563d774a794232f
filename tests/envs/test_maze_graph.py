"""Maze -> graph: the shared lattice, node features, aligned labels, free-cell graphs."""

from __future__ import annotations

import numpy as np
import torch

from diffplan.envs.actions import ACTION_DELTAS
from diffplan.envs.expert import expert_labels
from diffplan.envs.generator import generate_mazes, goal_maps
from diffplan.envs.graph import build_graph_split, lattice_edge_index, maze_to_graph

# Goal at (1, 1); the bottom-right free cell has two optimal moves (N and W).
RING = np.array(
    [
        [0, 0, 0, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 1, 0, 1, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0],
    ]
)


def test_lattice_joins_4_neighbours_both_ways_without_self_loops():
    edges = lattice_edge_index(15, 15)
    assert edges.shape == (2, 840)
    src, dst = edges
    assert (src != dst).all()
    (sy, sx), (dy, dx) = np.divmod(src, 15), np.divmod(dst, 15)
    assert (np.abs(sy - dy) + np.abs(sx - dx) == 1).all()
    pairs = set(zip(src.tolist(), dst.tolist(), strict=True))
    assert len(pairs) == 840 and all((b, a) in pairs for a, b in pairs)
    assert lattice_edge_index(3, 3).shape == (2, 24)


def test_ring_graph_with_obstacles_every_cell_is_a_node_with_its_features():
    graph = maze_to_graph(RING, (1, 1))
    assert graph.num_nodes == 25 and graph.edge_index.shape == (2, 80)
    rows, cols = np.divmod(np.arange(25), 5)
    assert torch.equal(graph.x[:, 0], torch.as_tensor(rows, dtype=torch.float32))
    assert torch.equal(graph.x[:, 1], torch.as_tensor(cols, dtype=torch.float32))
    assert torch.equal(graph.pos, graph.x[:, :2])
    assert graph.x[:, 2].nonzero().flatten().tolist() == [6]  # the goal, cell (1, 1)
    assert torch.equal(graph.x[:, 3], torch.as_tensor(1 - RING.ravel(), dtype=torch.float32))
    assert graph.optimal[18].nonzero().flatten().tolist() == [0, 1]  # cell (3, 3): N and W
    assert graph.dist[18] == 4 and graph.dist[12] == -1


def test_node_i_carries_the_labels_of_cell_i():
    mazes, goal_cell = generate_mazes(30, 15, rng=np.random.default_rng(0))
    dist, optimal = expert_labels(mazes, goal_maps(goal_cell, 15, 15))
    split = build_graph_split(mazes, goal_cell)
    assert len(split) == 30 and split.edge_index.shape == (2, 30 * 840)
    for i in range(30):
        graph = split.graph(i)
        assert torch.equal(graph.optimal, torch.from_numpy(optimal[i].reshape(4, -1).T))
        assert torch.equal(graph.dist, torch.from_numpy(dist[i].ravel()))
        assert torch.equal(graph.edge_index, torch.from_numpy(lattice_edge_index(15, 15)))


def test_without_obstacles_only_free_cells_are_nodes_and_edges_join_free_neighbours():
    graph = maze_to_graph(RING, (1, 1), has_obstacle=False)
    free_cells = np.flatnonzero(RING.ravel())
    assert graph.node_cell.tolist() == free_cells.tolist()
    assert graph.num_nodes == 8 and graph.edge_index.shape == (2, 16)  # the ring: 8 undirected edges
    assert (graph.x[:, 3] == 0).all()
    cells = graph.node_cell[graph.edge_index]
    (sy, sx), (dy, dx) = np.divmod(cells[0].numpy(), 5), np.divmod(cells[1].numpy(), 5)
    assert (np.abs(sy - dy) + np.abs(sx - dx) == 1).all()
    corner = free_cells.tolist().index(18)
    assert graph.optimal[corner].nonzero().flatten().tolist() == [0, 1]


def test_split_pointers_and_local_edge_indices():
    mazes, goal_cell = generate_mazes(20, 9, rng=np.random.default_rng(1))
    split = build_graph_split(mazes, goal_cell, has_obstacle=False)
    assert split.node_ptr[-1] == len(split.x) == mazes.sum()
    assert split.edge_ptr[-1] == split.edge_index.shape[1]
    for i in range(20):
        graph = split.graph(i)
        assert graph.num_nodes == mazes[i].sum()
        assert graph.edge_index.min() >= 0 and graph.edge_index.max() < graph.num_nodes


def test_continuous_labels_are_the_unit_moves_of_every_optimal_action():
    split = build_graph_split(RING[None], np.array([6]), cont_action=True)
    vectors = split.graph(0).optimal_vectors
    assert vectors.shape == (25, 4, 2)
    assert torch.equal(vectors[18], torch.tensor([[-1.0, 0.0], [0.0, -1.0], [0.0, 0.0], [0.0, 0.0]]))
    expected = split.optimal[..., None].float() * torch.as_tensor(ACTION_DELTAS, dtype=torch.float32)
    assert torch.equal(split.optimal_vectors, expected)
