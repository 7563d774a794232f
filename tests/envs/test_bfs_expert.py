"""The BFS expert: distances, optimal-action sets (with real ties), symmetry, one-hot policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffplan.envs.actions import FLIP_LR_ACTION_PERM, FLIP_UD_ACTION_PERM, ROT90_ACTION_PERM
from diffplan.envs.expert import (
    bfs_distances,
    expert_labels,
    random_tie_policy,
    reference_distances,
    reference_optimal_actions,
)
from diffplan.envs.generator import generate_mazes, goal_maps

N, W, S, E = 0, 1, 2, 3

# A ring around a central wall; goal at the top-left corner.
RING = np.array(
    [
        [0, 0, 0, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 1, 0, 1, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0],
    ]
)
# A corridor holding the goal, and a pocket that cannot reach it.
POCKET = np.array(
    [
        [0, 0, 0, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0],
    ]
)


def _goal(y, x, size=5):
    return goal_maps(np.array([y * size + x]), size, size)


def test_ring_distances_and_the_tie_at_the_opposite_corner():
    dist, optimal = expert_labels(RING[None], _goal(1, 1))
    expected = np.array(
        [
            [-1, -1, -1, -1, -1],
            [-1, 0, 1, 2, -1],
            [-1, 1, -1, 3, -1],
            [-1, 2, 3, 4, -1],
            [-1, -1, -1, -1, -1],
        ]
    )
    assert np.array_equal(dist[0], expected)
    assert set(np.flatnonzero(optimal[0, :, 3, 3])) == {N, W}  # two shortest ways round the ring
    assert set(np.flatnonzero(optimal[0, :, 1, 3])) == {W}
    assert set(np.flatnonzero(optimal[0, :, 3, 1])) == {N}
    assert not optimal[0, :, 1, 1].any()  # the goal has no action
    assert not optimal[0][:, RING == 0].any()  # walls have none


def test_unreachable_cells_have_distance_minus_one_and_no_action():
    dist, optimal = expert_labels(POCKET[None], _goal(1, 3))
    assert dist[0, 1].tolist() == [-1, 2, 1, 0, -1]
    assert dist[0, 3, 1] == dist[0, 3, 2] == -1
    assert not optimal[0, :, 3].any()
    assert optimal[0, E, 1, 1] and optimal[0, E, 1, 2] and optimal[0].sum() == 2


def test_batched_bfs_agrees_with_the_plain_reference():
    mazes, goal_cell = generate_mazes(200, 15, rng=np.random.default_rng(0))
    dist, optimal = expert_labels(mazes, goal_maps(goal_cell, 15, 15))
    for i, cell in enumerate(goal_cell):
        goal_yx = divmod(int(cell), 15)
        assert np.array_equal(dist[i], reference_distances(mazes[i], goal_yx))
        assert np.array_equal(optimal[i], reference_optimal_actions(mazes[i], goal_yx))


@pytest.mark.parametrize("size", [63, 65])  # the widest bitboard rows, and the boolean fallback beyond
def test_wide_mazes_agree_with_the_plain_reference(size):
    mazes, goal_cell = generate_mazes(3, size, rng=np.random.default_rng(5))
    dist = bfs_distances(mazes, goal_maps(goal_cell, size, size))
    for i, cell in enumerate(goal_cell):
        assert np.array_equal(dist[i], reference_distances(mazes[i], divmod(int(cell), size)))


def test_about_44_percent_of_scored_cells_have_ties():
    mazes, goal_cell = generate_mazes(1000, 15, rng=np.random.default_rng(1))
    dist, optimal = expert_labels(mazes, goal_maps(goal_cell, 15, 15))
    counts = optimal.sum(axis=1)[dist > 0]
    assert counts.min() >= 1
    assert abs((counts >= 2).mean() - 0.44) < 0.03


def _relabel(optimal: torch.Tensor, perm: np.ndarray) -> torch.Tensor:
    out = torch.empty_like(optimal)
    out[:, torch.as_tensor(perm)] = optimal
    return out  # action a of the input becomes action perm[a]


def test_optimal_sets_follow_rotations_and_flips():
    mazes, goal_cell = generate_mazes(100, 15, rng=np.random.default_rng(2))
    maze, goal = torch.from_numpy(mazes), torch.from_numpy(goal_maps(goal_cell, 15, 15))
    optimal = torch.from_numpy(expert_labels(mazes, goal)[1])
    transforms = [
        (lambda t: torch.rot90(t, 1, dims=(-2, -1)), ROT90_ACTION_PERM),
        (lambda t: torch.flip(t, dims=(-1,)), FLIP_LR_ACTION_PERM),
        (lambda t: torch.flip(t, dims=(-2,)), FLIP_UD_ACTION_PERM),
    ]
    for transform, perm in transforms:
        moved = expert_labels(transform(maze).numpy(), transform(goal).numpy())[1]
        assert torch.equal(torch.from_numpy(moved), _relabel(transform(optimal), perm))


def test_random_tie_policy_is_one_optimal_action_per_scored_cell_and_seeded():
    dist, optimal = expert_labels(RING[None], _goal(1, 1))
    policies = [random_tie_policy(optimal, np.random.default_rng(s)) for s in range(20)]
    for policy in policies:
        assert (policy.sum(axis=1) == (dist > 0)).all()
        assert not (policy.astype(bool) & ~optimal).any()
    assert len({p[0, :, 3, 3].argmax() for p in policies}) == 2  # both ties get picked
    again = random_tie_policy(optimal, np.random.default_rng(0))
    assert np.array_equal(policies[0], again)


def test_bfs_accepts_goal_maps_with_or_without_the_orientation_axis():
    goal = _goal(1, 1)
    assert np.array_equal(bfs_distances(RING[None], goal), bfs_distances(RING[None], goal[:, 0]))
