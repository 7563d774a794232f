"""The metrics of DESIGN section 5 on hand-built 5x5 mazes whose answers can be stated."""

import torch

from diffplan.scoring.losses import optimal_set_nll, vector_logits
from diffplan.scoring.metrics import (
    ACCURACY,
    ANGLE_ERROR,
    OPTIMALITY,
    SUCCESS,
    neighbour_mask,
    rollout,
    score_actions,
    score_logits,
)

N, W, S, E = 0, 1, 2, 3

# A corridor: row 2 is free from column 1 to 3; the goal is at (2, 3).
CORRIDOR = torch.zeros(1, 5, 5)
CORRIDOR[0, 2, 1:4] = 1
GOAL = torch.zeros(1, 1, 5, 5)
GOAL[0, 0, 2, 3] = 1
DIST = torch.full((1, 5, 5), -1)
DIST[0, 2, 1], DIST[0, 2, 2], DIST[0, 2, 3] = 2, 1, 0
OPTIMAL = torch.zeros(1, 4, 5, 5, dtype=torch.bool)
OPTIMAL[0, E, 2, 1] = OPTIMAL[0, E, 2, 2] = True


def actions_with(cell_actions: dict[tuple[int, int], int]) -> torch.Tensor:
    actions = torch.zeros(1, 5, 5, dtype=torch.long)
    for (row, col), action in cell_actions.items():
        actions[0, row, col] = action
    return actions


def test_expert_policy_scores_perfectly():
    metrics = score_actions(CORRIDOR, GOAL, DIST, OPTIMAL, actions_with({(2, 1): E, (2, 2): E}))
    assert metrics[ACCURACY].item() == 1.0
    assert metrics[SUCCESS].item() == 1.0
    assert metrics[OPTIMALITY].item() == 1.0


def test_a_wrong_first_move_into_a_wall_fails_that_cell_only():
    # (2,1) moves north into a wall: it stays put forever. (2,2) is still right.
    metrics = score_actions(CORRIDOR, GOAL, DIST, OPTIMAL, actions_with({(2, 1): N, (2, 2): E}))
    assert metrics[ACCURACY].item() == 0.5
    assert metrics[SUCCESS].item() == 0.5
    assert metrics[OPTIMALITY].item() == 0.5


def test_a_cycle_is_a_failure_for_every_cell_on_it():
    metrics = score_actions(CORRIDOR, GOAL, DIST, OPTIMAL, actions_with({(2, 1): E, (2, 2): W}))
    assert metrics[SUCCESS].item() == 0.0
    assert metrics[ACCURACY].item() == 0.5


def test_a_detour_succeeds_but_is_not_optimal():
    # An open 5x5 room: from (3, 1) to the goal (1, 3) BFS needs 4 steps.
    maze = torch.zeros(1, 5, 5)
    maze[0, 1:4, 1:4] = 1
    goal = torch.zeros(1, 1, 5, 5)
    goal[0, 0, 1, 3] = 1
    actions = torch.full((1, 5, 5), N)
    actions[0, 1, 1:3] = E  # top row walks east to the goal
    actions[0, 2:4, 3] = N  # right column walks north
    actions[0, 3, 1] = E  # (3,1) -> (3,2) -> N (2,2) -> N (1,2) -> E goal: 4 steps, optimal
    actions[0, 2, 1] = S  # (2,1) -> S (3,1) -> ...: 5 steps, BFS distance 3
    reached, steps = rollout(maze, goal, actions)
    assert reached[0, 2, 1] and steps[0, 2, 1] == 5
    assert reached[0, 3, 1] and steps[0, 3, 1] == 4


def test_metrics_are_averaged_per_map_then_over_maps():
    maze = CORRIDOR.repeat(2, 1, 1)
    big = torch.ones(1, 5, 5)
    maze[1] = big[0]
    goal = GOAL.repeat(2, 1, 1, 1)
    dist = DIST.repeat(2, 1, 1)
    optimal = OPTIMAL.repeat(2, 1, 1, 1)
    actions = actions_with({(2, 1): E, (2, 2): E}).repeat(2, 1, 1)
    actions[1, 2, 1] = N
    accuracy = score_actions(maze, goal, dist, optimal, actions)[ACCURACY]
    assert accuracy.tolist() == [1.0, 0.5]


def test_continuous_vectors_snap_to_the_neighbour_with_the_largest_cosine():
    vectors = torch.zeros(1, 2, 5, 5)
    vectors[0, :, 2, 1] = torch.tensor([0.3, 1.0])  # mostly east, a little south
    vectors[0, :, 2, 2] = torch.tensor([-0.2, 1.0])
    metrics = score_logits(CORRIDOR, GOAL, DIST, OPTIMAL, vectors, continuous=True, has_obstacle=True)
    assert metrics[ACCURACY].item() == 1.0 and metrics[SUCCESS].item() == 1.0
    expected = (
        torch.rad2deg(torch.atan2(torch.tensor(0.3), torch.tensor(1.0)))
        + torch.rad2deg(torch.atan2(torch.tensor(0.2), torch.tensor(1.0)))
    ) / 2
    assert torch.isclose(metrics[ANGLE_ERROR][0], expected, atol=1e-4)


def test_snapping_without_obstacle_nodes_ignores_walls():
    # Pointing north-east from (2, 2): without obstacle nodes, north is no neighbour, so east wins.
    vectors = torch.zeros(1, 2, 5, 5)
    vectors[0, :, 2, 1] = torch.tensor([0.0, 1.0])
    vectors[0, :, 2, 2] = torch.tensor([-1.0, 0.9])
    with_walls = score_logits(CORRIDOR, GOAL, DIST, OPTIMAL, vectors, continuous=True, has_obstacle=True)
    free_only = score_logits(CORRIDOR, GOAL, DIST, OPTIMAL, vectors, continuous=True, has_obstacle=False)
    assert with_walls[ACCURACY].item() == 0.5
    assert free_only[ACCURACY].item() == 1.0
    assert neighbour_mask(CORRIDOR, has_obstacle=False)[0, :, 2, 2].tolist() == [False, True, False, True]


def test_set_loss_is_zero_when_all_mass_is_on_optimal_actions_and_counts_ties_together():
    optimal = torch.tensor([[True, True, False, False]])
    confident = torch.tensor([[20.0, 20.0, -20.0, -20.0]])
    assert optimal_set_nll(confident, optimal).item() < 1e-6
    uniform = torch.zeros(1, 4)
    assert torch.isclose(optimal_set_nll(uniform, optimal), torch.log(torch.tensor(2.0)))


def test_vector_logits_are_dot_products_with_the_unit_moves():
    assert vector_logits(torch.tensor([[-2.0, 0.0]])).tolist() == [[2.0, 0.0, -2.0, 0.0]]
