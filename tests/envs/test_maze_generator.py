"""The maze distribution of DESIGN section 3: structure, goals, uniqueness, seeding, statistics."""

from __future__ import annotations

import numpy as np
import pytest

from diffplan.envs.expert import bfs_distances, reference_distances
from diffplan.envs.generator import carve_mazes, generate_mazes, goal_maps, pair_keys
from diffplan.errors import BadInputError


@pytest.mark.parametrize("size", [0, 3, 4, 14])
def test_sizes_that_cannot_be_carved_are_refused(size):
    with pytest.raises(BadInputError, match=f"maze size {size} cannot be carved"):
        generate_mazes(10, size, rng=np.random.default_rng(0))


@pytest.mark.parametrize("size", [5, 9, 15])
def test_carving_keeps_border_walls_frees_every_odd_cell_and_connects_them(size):
    mazes = carve_mazes(64, size, np.random.default_rng(0))
    assert not mazes[:, 0, :].any() and not mazes[:, -1, :].any()
    assert not mazes[:, :, 0].any() and not mazes[:, :, -1].any()
    assert mazes[:, 1::2, 1::2].all()
    assert not mazes[:, 2::2, 2::2].any()  # carving only opens walls between two odd cells
    odd_cells = ((size - 1) // 2) ** 2
    for maze in mazes:
        # A spanning tree of the odd cells: C cells plus C - 1 opened walls, all reachable from (1, 1).
        assert maze.sum() == 2 * odd_cells - 1
        assert ((reference_distances(maze, (1, 1)) >= 0) == maze.astype(bool)).all()


def test_goals_are_free_interior_cells_that_reach_at_least_two_cells():
    mazes, goal_cell = generate_mazes(500, 15, rng=np.random.default_rng(1))
    gy, gx = np.divmod(goal_cell, 15)
    assert ((gy >= 1) & (gy <= 13) & (gx >= 1) & (gx <= 13)).all()
    assert (mazes[np.arange(500), gy, gx] == 1).all()
    reachable = (bfs_distances(mazes, goal_maps(goal_cell, 15, 15)) >= 0).sum(axis=(1, 2))
    assert reachable.min() >= 2


def test_no_maze_goal_pair_repeats():
    # 5x5 mazes have exactly 47 distinct (maze, goal) pairs (DFS from (1, 1) makes 2 of the 4 trees),
    # so asking for all of them forces many collisions to be thrown away.
    mazes, goal_cell = generate_mazes(47, 5, rng=np.random.default_rng(2))
    assert len(np.unique(pair_keys(mazes, goal_cell))) == 47


def test_asking_for_more_pairs_than_exist_fails_clearly():
    with pytest.raises(BadInputError, match="found only 47 distinct"):
        generate_mazes(48, 5, rng=np.random.default_rng(2))


def test_same_seed_same_arrays_other_seed_other_arrays():
    a = generate_mazes(300, 15, rng=np.random.default_rng(7))
    b = generate_mazes(300, 15, rng=np.random.default_rng(7))
    c = generate_mazes(300, 15, rng=np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_statistics_match_the_published_data():
    mazes, goal_cell = generate_mazes(2000, 15, rng=np.random.default_rng(3))
    assert abs(mazes.mean() - 0.588) < 0.01
    dist = bfs_distances(mazes, goal_maps(goal_cell, 15, 15))
    reachable = dist[dist >= 0]
    for steps, published in [(10, 0.57), (20, 0.94), (30, 0.98)]:
        assert abs((reachable <= steps).mean() - published) < 0.02
