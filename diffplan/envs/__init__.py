"""Mazes, the 4abs-cc mechanism, the BFS expert, maze->graph conversion, data-set and map files."""

from diffplan.envs.datasets import (
    check_generation,
    dataset_info,
    file_fingerprint,
    generate_dataset,
    load_split,
    read_metadata,
    settings_differences,
)
from diffplan.envs.expert import bfs_distances, expert_labels, optimal_actions
from diffplan.envs.generator import generate_mazes, goal_maps
from diffplan.envs.graph import build_graph_split, lattice_edge_index, maze_to_graph
from diffplan.envs.maps import MapArray, make_split, read_map, read_maps
from diffplan.envs.splits import GraphSplit, GridSplit

__all__ = [
    "GraphSplit",
    "GridSplit",
    "MapArray",
    "bfs_distances",
    "build_graph_split",
    "check_generation",
    "dataset_info",
    "expert_labels",
    "file_fingerprint",
    "generate_dataset",
    "generate_mazes",
    "goal_maps",
    "lattice_edge_index",
    "load_split",
    "make_split",
    "maze_to_graph",
    "optimal_actions",
    "read_map",
    "read_maps",
    "read_metadata",
    "settings_differences",
]
