"""Batches of grid and graph splits as dicts of tensors, shared by training and evaluation.

Grid batch:  maze (B, H, W), goal (B, 1, H, W), optimal (B, 4, H, W) bool, dist (B, H, W).
Graph batch: the grid views above (for scoring) plus the node tensors of the B graphs concatenated
as PyG would: x (V, 4), edge_index (2, E) with global node ids, batch (V,), node_cell (V,),
node_optimal (V, 4) bool, node_dist (V,).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from diffplan.envs import GraphSplit, GridSplit


def _ragged_take(ptr: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions of the rows of items ``indices`` in a ragged array with offsets ``ptr``.

    Returns (positions (sum of counts,), counts (len(indices),)).
    """
    starts, counts = ptr[indices], ptr[indices + 1] - ptr[indices]
    first_out = torch.cumsum(counts, 0) - counts  # where each item starts in the output
    positions = torch.arange(int(counts.sum()), dtype=torch.long) + torch.repeat_interleave(
        starts - first_out, counts
    )
    return positions, counts


def grid_batch(split: GridSplit, indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """The maps ``indices`` of a grid split."""
    return {
        "maze": split.maze[indices],
        "goal": split.goal[indices],
        "optimal": split.optimal[indices],
        "dist": split.dist[indices],
    }


def graph_batch(split: GraphSplit, indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """The graphs ``indices`` of a graph split, concatenated, with their grid views for scoring."""
    node_pos, node_counts = _ragged_take(split.node_ptr, indices)
    edge_pos, edge_counts = _ragged_take(split.edge_ptr, indices)
    node_offset = torch.cumsum(node_counts, 0) - node_counts
    edge_index = split.edge_index[:, edge_pos] + torch.repeat_interleave(node_offset, edge_counts)
    graph_of_node = torch.repeat_interleave(torch.arange(len(indices)), node_counts)
    maze = split.maze[indices]
    batch_size, height, width = maze.shape
    node_cell = split.node_cell[node_pos]
    node_optimal, node_dist = split.optimal[node_pos], split.dist[node_pos]
    # Grid views of the node labels: cells without a node are never scored (dist -1).
    dist = torch.full((batch_size, height * width), -1, dtype=torch.long)
    dist[graph_of_node, node_cell] = node_dist.long()
    optimal = torch.zeros(batch_size, height * width, 4, dtype=torch.bool)
    optimal[graph_of_node, node_cell] = node_optimal
    return {
        "maze": maze,
        "goal": split.goal[indices],
        "dist": dist.view(batch_size, height, width),
        "optimal": optimal.view(batch_size, height, width, 4).permute(0, 3, 1, 2),
        "x": split.x[node_pos],
        "edge_index": edge_index,
        "batch": graph_of_node,
        "node_cell": node_cell,
        "node_optimal": node_optimal,
        "node_dist": node_dist.long(),
    }


def make_batch(
    split: GridSplit | GraphSplit, indices: Sequence[int] | torch.Tensor
) -> dict[str, torch.Tensor]:
    """A batch of either kind of split."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    return graph_batch(split, indices) if isinstance(split, GraphSplit) else grid_batch(split, indices)


def iterate_batches(
    split: GridSplit | GraphSplit, batch_size: int, limit: int | None = None
) -> Iterator[dict]:
    """Consecutive batches over the first ``limit`` items (all by default), in order."""
    total = len(split) if limit is None else min(limit, len(split))
    for start in range(0, total, batch_size):
        yield make_batch(split, torch.arange(start, min(start + batch_size, total)))


def nodes_to_grid(values: torch.Tensor, batch: dict[str, torch.Tensor], fill: float) -> torch.Tensor:
    """Scatter per-node values back onto their cells.

    Shapes: values (V, C) -> (B, C, H, W); cells without a node get ``fill``.
    """
    batch_size, height, width = batch["maze"].shape
    grid = values.new_full((batch_size, height * width, values.shape[1]), fill)
    grid[batch["batch"], batch["node_cell"]] = values
    return grid.view(batch_size, height, width, -1).permute(0, 3, 1, 2)
