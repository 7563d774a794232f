"""Readers for the field's map files: each format, labels recomputed by BFS, and one clear error per fault."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffplan.envs import (
    GraphSplit,
    GridSplit,
    dataset_info,
    file_fingerprint,
    generate_dataset,
    load_split,
    read_map,
    read_maps,
)
from diffplan.envs.expert import reference_distances, reference_optimal_actions
from diffplan.envs.generator import generate_mazes, goal_maps, pair_keys
from diffplan.errors import BadInputError, DataFileError

TEXT_MAZE = """\
#######
#S....#
#.###.#
#...#G#
#######
"""

# 4 rows x 6 columns; the .scen's x is the column, y the row.
MOVINGAI_MAP = "type octile\nheight 4\nwidth 6\nmap\n..@...\n.T..G.\n.@@.W.\nG.....\n"
SCEN = (
    "version 1\n"
    "0\tarena.map\t6\t4\t0\t0\t5\t0\t7.0\n"  # goal x=5, y=0 -> (row 0, col 5)
    "0\tarena.map\t6\t4\t1\t0\t0\t3\t4.0\n"  # goal x=0, y=3 -> (row 3, col 0)
    "1\tarena.map\t6\t4\t3\t3\t5\t0\t5.0\n"  # the first goal again: scored once
)


def _assert_bfs_labels(split: GridSplit) -> None:
    """Every map's optimal-action sets and distances equal a plain BFS of its maze to its goal."""
    for i in range(len(split)):
        maze = split.maze[i].numpy()
        goal_yx = divmod(int(split.goal[i].flatten().argmax()), maze.shape[1])
        assert np.array_equal(split.optimal[i].numpy(), reference_optimal_actions(maze, goal_yx))
        assert np.array_equal(split.dist[i].numpy(), reference_distances(maze, goal_yx))


def _goal_cells(split) -> list[tuple[int, int]]:
    width = split.maze.shape[2]
    return [divmod(int(cell), width) for cell in split.goal.flatten(1).argmax(1)]


# --- text maze ------------------------------------------------------------------------------------


def test_text_maze_reads_walls_goal_and_start(tmp_path):
    path = tmp_path / "maze.txt"
    path.write_text(TEXT_MAZE)
    single = read_map(path)
    assert single.maze.shape == (5, 7) and single.maze.dtype == np.float32
    assert single.goal == (3, 5) and single.start == (1, 1)
    assert single.maze[0].sum() == 0 and single.maze[1, 1:6].all() and single.maze[2, 2] == 0
    split = load_split(path, "test")
    assert isinstance(split, GridSplit) and len(split) == 1 and _goal_cells(split) == [(3, 5)]
    _assert_bfs_labels(split)


def test_text_maze_is_lenient_about_crlf_trailing_spaces_and_blank_lines(tmp_path):
    path = tmp_path / "maze.txt"
    path.write_bytes(("\n" + TEXT_MAZE.replace("\n", "  \r\n") + "\r\n\r\n").encode())
    assert read_map(path).maze.shape == (5, 7)


def test_text_maze_with_ragged_rows_is_refused(tmp_path):
    path = tmp_path / "ragged.txt"
    path.write_text("#####\n#..#\n#####\n")
    with pytest.raises(DataFileError, match=r"ragged.txt line 2 has 4 cells but line 1 has 5"):
        read_map(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("###\n#x#\n###\n", r"line 2, column 2: unexpected character 'x'"),
        ("#####\n#G.G#\n#####\n", "more than one 'G' mark"),
        ("\n\n", "holds no maze rows"),
    ],
)
def test_malformed_text_mazes_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DataFileError, match=message):
        load_split(path, "test")


# --- MovingAI .map and .scen -----------------------------------------------------------------------


def test_movingai_map_reads_passable_and_blocked_terrain(tmp_path):
    path = tmp_path / "arena.map"
    path.write_text(MOVINGAI_MAP)
    maze = read_map(path).maze
    expected = np.array(
        [[1, 1, 0, 1, 1, 1], [1, 0, 1, 1, 1, 1], [1, 0, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=np.float32
    )
    assert np.array_equal(maze, expected)  # 'G' is ground here, not a goal mark
    assert read_map(path).goal is None


def test_scen_goals_put_x_in_the_column_and_y_in_the_row(tmp_path):
    path = tmp_path / "arena.map"
    path.write_text(MOVINGAI_MAP)
    scen = tmp_path / "elsewhere.scen"
    scen.write_text(SCEN)
    split = load_split(path, "test", scen=scen)
    assert len(split) == 2 and _goal_cells(split) == [(0, 5), (3, 0)]
    assert torch.equal(split.maze[0], split.maze[1])  # one map, K goals: K maps
    _assert_bfs_labels(split)
    assert _goal_cells(read_maps(path, scen=scen, num_goals=1)) == [(0, 5)]


def test_scen_beside_the_map_is_found(tmp_path):
    path = tmp_path / "arena.map"
    path.write_text(MOVINGAI_MAP)
    (tmp_path / "arena.map.scen").write_text(SCEN)
    info = dataset_info(path)
    assert info["layout"] == "movingai-map" and info["goals"] == "2 from arena.map.scen"
    assert info["splits"]["test"]["mazes"] == 2 and info["wall_border"] is False


def test_map_without_scen_draws_goals_on_free_cells_with_the_seed(tmp_path):
    path = tmp_path / "arena.map"
    path.write_text(MOVINGAI_MAP)
    split = read_maps(path, num_goals=4, seed=3)
    goals = _goal_cells(split)
    assert len(split) == 4 and len(set(goals)) == 4
    assert all(split.maze[0, row, col] == 1 for row, col in goals)
    assert _goal_cells(read_maps(path, num_goals=4, seed=3)) == goals
    assert file_fingerprint(path, num_goals=4, seed=3) != file_fingerprint(path, num_goals=4, seed=4)
    _assert_bfs_labels(split)


def test_movingai_is_lenient_about_crlf_and_trailing_whitespace(tmp_path):
    path = tmp_path / "arena.map"
    path.write_bytes(MOVINGAI_MAP.replace("\n", " \r\n").encode() + b"\r\n\r\n")
    assert read_map(path).maze.shape == (4, 6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type octile\nheight 2\nwidth 2\n..\n..\n", r"line 4: '\.\.' is not a \.map header line"),
        ("height 2\nwidth 2\nmap\n..\n..\n", "has no 'type' line"),
        ("type octile\nheight two\nwidth 2\nmap\n..\n..\n", "line 2: height 'two' is not a positive"),
        ("type octile\nheight 2\nwidth 3\nmap\n...\n..\n", "line 6 has 2 cells but the header says width 3"),
        ("type octile\nheight 3\nwidth 2\nmap\n..\n..\n", "ends after 2 of the 3 map rows"),
        ("type octile\nheight 1\nwidth 2\nmap\n..\n..\n", "line 6: more than the 1 map rows"),
        ("type octile\nheight 1\nwidth 2\nmap\n.#\n", r"line 5, column 2: unexpected character '#'"),
        ("type octile\nheight 1\nwidth 2\n", "has no 'map' line"),
    ],
)
def test_malformed_movingai_maps_are_refused_naming_the_line(tmp_path, text, message):
    path = tmp_path / "bad.map"
    path.write_text(text)
    with pytest.raises(DataFileError, match=message):
        read_map(path)


def test_a_map_claiming_a_huge_size_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.map"
    path.write_text("type octile\nheight 1000000000\nwidth 1000000000\nmap\n..\n")
    with pytest.raises(DataFileError, match="over the limit of 4096x4096 cells per map"):
        read_map(path)


@pytest.mark.parametrize(
    ("scen", "message"),
    [
        ("version 1\n0\tarena.map\t8\t8\t0\t0\t1\t1\t2\n", "is for a 8x8 .* map but the map is 6x4"),
        (
            "version 1\n0\tarena.map\t6\t4\t0\t0\t2\t0\t2\n",
            r"goal \(row 0, col 2\) of s.scen line 2 is a wall",
        ),
        ("version 1\n0\tarena.map\t6\t4\t0\t0\n", "line 2 has 6 fields"),
        ("version 1\n0\tarena.map\t6\t4\t0\t0\t9\t0\t2\n", "goal x=9, y=0 is off the 6x4 map"),
        ("version 1\n", "holds no scenario rows"),
    ],
)
def test_bad_scen_files_are_refused(tmp_path, scen, message):
    path = tmp_path / "arena.map"
    path.write_text(MOVINGAI_MAP)
    (tmp_path / "s.scen").write_text(scen)
    with pytest.raises(DataFileError, match=message):
        read_maps(path, scen=tmp_path / "s.scen")


def test_a_scen_is_not_a_map(tmp_path):
    (tmp_path / "s.scen").write_text(SCEN)
    with pytest.raises(DataFileError, match="MovingAI scenario"):
        load_split(tmp_path / "s.scen", "test")


# --- .npy and images -------------------------------------------------------------------------------


def test_npy_of_one_or_many_maps(tmp_path):
    mazes, _ = generate_mazes(3, 7, rng=np.random.default_rng(0))
    np.save(tmp_path / "one.npy", mazes[0].astype(bool))
    np.save(tmp_path / "many.npy", mazes.astype(np.float64))
    assert np.array_equal(read_map(tmp_path / "one.npy").maze, mazes[0])
    split = read_maps(tmp_path / "many.npy", num_goals=2)
    assert len(split) == 6 and torch.equal(split.maze[0], split.maze[1])
    assert torch.equal(split.maze[::2], torch.from_numpy(mazes.astype(np.float32)))
    _assert_bfs_labels(split)
    with pytest.raises(DataFileError, match="holds 3 maps; read_map reads one"):
        read_map(tmp_path / "many.npy")


def test_npy_with_a_huge_header_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as file:  # a header only: claims 10**6 maps of 4096x4096, holds no data
        np.lib.format.write_array_header_1_0(
            file, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 4096, 4096)}
        )
    with pytest.raises(DataFileError, match="exceed the limit of .* cells per split"):
        load_split(path, "test")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((3, 3), 2.0), "values other than 0 and 1"),
        (np.ones((2, 2, 3, 3)), r"shape \(2, 2, 3, 3\); expected \(H, W\) or \(N, H, W\)"),
        (np.array([["a", "b"]]), "expected numbers 0 and 1"),
    ],
)
def test_bad_npy_maps_are_refused(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataFileError, match=message):
        read_map(tmp_path / "bad.npy")


def test_image_dark_pixels_are_walls_with_a_threshold(tmp_path):
    from PIL import Image

    grey = np.full((6, 8), 255, dtype=np.uint8)
    grey[0, :] = 0  # black wall
    grey[:, 4] = 100  # dark grey (0.39): a wall at 0.5, free at 0.3
    Image.fromarray(grey).convert("RGB").save(tmp_path / "map.png")
    maze = read_map(tmp_path / "map.png").maze
    assert maze.shape == (6, 8) and maze[0].sum() == 0 and maze[1:, 4].sum() == 0 and maze[1:, 5].all()
    assert read_map(tmp_path / "map.png", threshold=0.3).maze[1:, 4].all()
    split = read_maps(tmp_path / "map.png", goals=[(5, 7)])
    assert _goal_cells(split) == [(5, 7)]
    _assert_bfs_labels(split)
    with pytest.raises(BadInputError, match="threshold"):
        read_map(tmp_path / "map.png", threshold=0)


def test_unreadable_image_is_refused(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    with pytest.raises(DataFileError, match="broken.png cannot be read as an image"):
        load_split(path, "test")


def test_goal_on_a_wall_is_refused(tmp_path):
    path = tmp_path / "maze.txt"
    path.write_text(TEXT_MAZE)
    with pytest.raises(DataFileError, match=r"goal \(row 0, col 0\) given as goal 1 is a wall"):
        read_maps(path, goals=[(0, 0)])
    with pytest.raises(BadInputError, match="off the 5x7 map"):
        read_maps(path, goals=[(5, 0)])


# --- the field's npz layouts ---------------------------------------------------------------------


def _borderless(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Neural A*-style maps (float32, 1 = free) with a free first row and a goal in the top-left corner."""
    maps = (rng.random((n, size, size)) < 0.75).astype(np.float32)
    maps[:, 0, :] = 1.0
    goal = np.zeros((n, 1, size, size), dtype=np.float32)
    goal[:, 0, 0, 0] = 1.0
    return maps, goal


def test_neural_astar_planning_datasets_layout(tmp_path):
    rng = np.random.default_rng(0)
    arrays = []
    for n in (6, 2, 3):
        maps, goal = _borderless(n, 12, rng)
        policy = np.zeros((n, 8, 1, 12, 12), dtype=np.float32)  # eight directions: ignored
        dist = -rng.random((n, 1, 12, 12)).astype(np.float32)
        arrays += [maps, goal, policy, dist]
    path = tmp_path / "mazes_032_moore_c8.npz"
    np.savez_compressed(path, *arrays)
    split = load_split(path, "test")
    assert len(split) == 3 and torch.equal(split.maze, torch.from_numpy(arrays[8]))
    assert split.maze[:, 0, :].all()  # no wall border: the first row is free, and scored
    assert split.optimal[:, :, 0, 1:].any(dim=1).any()
    _assert_bfs_labels(split)
    info = dataset_info(path)
    assert info["layout"] == "neural-astar-12" and info["label_channels"] == 8
    assert info["wall_border"] is False and info["splits"]["train"]["mazes"] == 6


def test_neural_astar_goal_on_a_wall_is_refused(tmp_path):
    maps, goal = _borderless(2, 8, np.random.default_rng(1))
    maps[1, 0, 0] = 0.0
    extra = [np.zeros((2, 8, 1, 8, 8), np.float32), np.zeros((2, 1, 8, 8), np.float32)]
    np.savez_compressed(tmp_path / "na.npz", *([maps, goal, *extra] * 3))
    with pytest.raises(DataFileError, match="train maze 1 has its goal on a wall"):
        load_split(tmp_path / "na.npz", "train")


def test_gppn_nine_array_file_with_moore_labels(tmp_path):
    mazes, goal_cell = generate_mazes(9, 9, rng=np.random.default_rng(2))
    arrays = []
    for lo, hi in ((0, 5), (5, 7), (7, 9)):
        goal = goal_maps(goal_cell[lo:hi], 9, 9, np.float64)
        arrays += [mazes[lo:hi].astype(np.float64), goal, np.ones((hi - lo, 8, 1, 9, 9))]
    np.savez_compressed(tmp_path / "gppn.npz", *arrays)
    split = load_split(tmp_path / "gppn.npz", "train")
    assert len(split) == 5
    _assert_bfs_labels(split)
    info = dataset_info(tmp_path / "gppn.npz")
    assert info["layout"] == "gppn-9" and info["label_channels"] == 8


def test_gppn_file_with_oriented_goals(tmp_path):
    """Differential-drive files carry goals over four orientations: the goal cell is where one is set."""
    mazes, goal_cell = generate_mazes(6, 9, rng=np.random.default_rng(3))
    arrays = []
    for lo, hi in ((0, 2), (2, 4), (4, 6)):
        goal = np.zeros((hi - lo, 4, 81))
        goal[np.arange(hi - lo), 2, goal_cell[lo:hi]] = 1
        arrays += [
            mazes[lo:hi].astype(np.float64),
            goal.reshape(-1, 4, 9, 9),
            np.zeros((hi - lo, 3, 4, 9, 9)),
        ]
    np.savez_compressed(tmp_path / "diffdrive.npz", *arrays)
    split = load_split(tmp_path / "diffdrive.npz", "valid")
    assert [r * 9 + c for r, c in _goal_cells(split)] == list(goal_cell[2:4])


# --- kinds, splits and options -------------------------------------------------------------------


def test_a_map_file_gives_a_graph_split_too(tmp_path):
    path = tmp_path / "maze.txt"
    path.write_text(TEXT_MAZE)
    graphs = load_split(path, "test", kind="graph")
    grids = load_split(path, "test")
    assert isinstance(graphs, GraphSplit) and graphs.has_obstacle and graphs.x.shape == (35, 4)
    assert torch.equal(graphs.graph(0).optimal, grids.optimal[0].reshape(4, -1).T)
    assert isinstance(read_maps(path, kind="graph"), GraphSplit)
    with pytest.raises(BadInputError, match="unknown kind"):
        read_maps(path, kind="mesh")


def test_a_map_file_is_a_test_split_only(tmp_path):
    path = tmp_path / "maze.txt"
    path.write_text(TEXT_MAZE)
    with pytest.raises(DataFileError, match="test split only; it has no train maps"):
        load_split(path, "train")
    assert list(dataset_info(path)["splits"]) == ["test"]


def test_map_options_are_refused_for_data_set_files(grid_file):
    with pytest.raises(BadInputError, match="num_goals applies to map files"):
        load_split(grid_file, "test", num_goals=3)
    grids = load_split(grid_file, "test")
    graphs = load_split(grid_file, "test", kind="graph")
    assert isinstance(graphs, GraphSplit) and torch.equal(graphs.maze, grids.maze)


# --- test-only data sets -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grid", "graph"])
def test_test_only_data_sets(tmp_path, kind):
    path = tmp_path / f"test_only.{'npz' if kind == 'grid' else 'pth'}"
    summary = generate_dataset(kind, path, maze_size=11, train_size=0, valid_size=0, test_size=7, seed=1)
    assert summary["splits"] == {"train": 0, "valid": 0, "test": 7}
    test = load_split(path, "test")
    assert len(test) == 7 and test.maze.shape[1:] == (11, 11)
    with pytest.raises(DataFileError, match="has no train mazes"):
        load_split(path, "train")
    info = dataset_info(path)
    assert info["splits"]["train"] == {
        "mazes": 0,
        "shape": [0, 11, 11],
        "free_fraction": None,
        "scored_cells": None,
        "reachable_within": None,
        "max_distance": None,
    }
    assert info["fingerprint_ok"] is True and info["splits"]["test"]["mazes"] == 7


def test_empty_splits_keep_every_maze_goal_pair_unique(tmp_path):
    path = tmp_path / "odd.npz"
    generate_dataset("grid", path, maze_size=5, train_size=0, valid_size=6, test_size=6, seed=0)
    keys = []
    for split in ("valid", "test"):
        loaded = load_split(path, split)
        keys.append(pair_keys(loaded.maze.numpy().astype(np.uint8), loaded.goal.flatten(1).argmax(1).numpy()))
    everything = np.concatenate(keys)
    assert len(np.unique(everything)) == len(everything) == 12


def test_all_splits_empty_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="every split size is 0"):
        generate_dataset("grid", tmp_path / "none.npz", train_size=0, valid_size=0, test_size=0)
