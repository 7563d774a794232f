"""The grid planners' release-v1.1 options: a convex value kernel and a random K per training pass.

Both are off by default, so every v1.0 checkpoint rebuilds and plans exactly as before.
"""

from __future__ import annotations

import pytest
import torch

from diffplan.envs.actions import ROT90_ACTION_PERM
from diffplan.errors import BadInputError
from diffplan.models import create_model, get_model_entry, list_models
from diffplan.models.grid._vi_step import convex_value_kernel
from diffplan.task import Task

GRID = list_models(task=Task.GRID)
UNROLLED = [n for n in GRID if not get_model_entry(n).implicit]
SMALL = dict(l_h=6, l_q=3, wall_mask=True)


def small(name: str, **extra) -> dict:
    config = dict(SMALL, **extra)
    if not get_model_entry(name).implicit:
        config.setdefault("k", 6)
    return config


def maze_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 7x6 mazes (border walls, one inner wall each) with goals in different corners."""
    maze = torch.ones(2, 7, 6)
    maze[:, 0], maze[:, -1], maze[:, :, 0], maze[:, :, -1] = 0, 0, 0, 0
    maze[0, 2, 1:4] = 0
    maze[1, 1:5, 3] = 0
    goal = torch.zeros(2, 1, 7, 6)
    goal[0, 0, 1, 1] = 1
    goal[1, 0, 5, 1] = 1
    return maze, goal


def rot90_error(model: torch.nn.Module) -> float:
    """Relative difference between the logits of the rotated mazes and the rotated logits (actions
    permuted as DESIGN section 3 says): 0 for an exactly equivariant planner."""
    maze, goal = maze_batch()
    rot = lambda x: torch.rot90(x, 1, dims=(-2, -1))  # noqa: E731
    with torch.no_grad():
        out, out_rot = model(maze, goal).logits, model(rot(maze), rot(goal)).logits
    expected = torch.empty_like(rot(out))
    expected[:, torch.as_tensor(ROT90_ACTION_PERM)] = rot(out)
    return float((out_rot - expected).norm() / expected.norm())


def randomise(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("w", "q_v.weights"):
                p.normal_(0.0, 0.5)


@pytest.mark.parametrize("name", GRID)
def test_defaults_plan_exactly_as_before(name):
    torch.manual_seed(0)
    before = create_model(name, **small(name))
    randomise(before)
    explicit = create_model(name, **small(name, value_kernel="free"))
    explicit.load_state_dict(before.state_dict(), strict=True)
    maze, goal = maze_batch()
    before.eval(), explicit.eval()
    with torch.no_grad():
        a, b = before(maze, goal), explicit(maze, goal)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.values, b.values)
    assert "k" not in a.stats


def test_convex_kernel_is_a_discounted_distribution():
    weight = torch.randn(5, 2, 3, 3)
    kernel = convex_value_kernel(weight, 0.97)
    assert (kernel > 0).all()
    assert torch.allclose(kernel.sum(dim=(1, 2, 3)), torch.full((5,), 0.97))


def test_a_peaked_convex_kernel_moves_a_value_one_cell_undiminished():
    weight = torch.zeros(1, 1, 3, 3)
    weight[0, 0, 1, 2] = 10.0  # logits 100 apart after the logit scale: the east neighbour only
    kernel = convex_value_kernel(weight, 1.0)
    assert kernel[0, 0, 1, 2] > 1 - 1e-6


@pytest.mark.parametrize("name", GRID)
def test_convex_vi_step_is_a_gamma_contraction(name):
    """sup |step(v1) - step(v2)| <= gamma sup |v1 - v2| (what makes the DEQ fixed point exist)."""
    from diffplan.models.grid import _base

    model = create_model(name, **small(name, value_kernel="convex", gamma=0.95)).eval()
    randomise(model)
    maze, goal = maze_batch()
    captured = {}

    def capture(step, v0, stats):
        captured["step"] = step
        return v0

    model._solve = capture
    with torch.no_grad():
        model(maze, goal)
        step = captured["step"]
        g = model.group_size
        v1, v2 = torch.randn(2, 7, 6, g) * 5, torch.randn(2, 7, 6, g) * 5
        gap = (step(v1) - step(v2)).abs().max()
    assert gap <= 0.95 * (v1 - v2).abs().max() + 1e-5
    assert _base.VALUE_KERNELS == ("free", "convex")


@pytest.mark.parametrize("name", GRID)
def test_convex_kernel_trains_and_saves(name):
    model = create_model(name, **small(name, value_kernel="convex", gamma=0.9))
    maze, goal = maze_batch()
    out = model(maze, goal)
    out.logits.logsumexp(1).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.eval()
    again = create_model(name, **model.config).eval()
    again.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(model(maze, goal).logits, again(maze, goal).logits)


@pytest.mark.parametrize("name", [n for n in GRID if get_model_entry(n).symmetric])
def test_convex_kernel_keeps_equivariance(name):
    extra = {"tol": 1e-7, "max_iter": 300} if get_model_entry(name).implicit else {}
    model = create_model(name, **small(name, value_kernel="convex", gamma=0.9, **extra)).eval()
    randomise(model)
    assert rot90_error(model) < 1e-4


@pytest.mark.parametrize("name", UNROLLED)
def test_random_k_only_while_training(name):
    model = create_model(name, **small(name, k=4, k_train=[2, 9]))
    maze, goal = maze_batch()
    torch.manual_seed(0)
    drawn = {model(maze, goal).stats["k"] for _ in range(20)}
    assert drawn <= set(range(2, 10)) and len(drawn) > 1
    model.eval()
    with torch.no_grad():
        out = model(maze, goal)
        fixed = create_model(name, **small(name, k=4))
        fixed.load_state_dict(model.state_dict(), strict=True)
        assert torch.equal(out.logits, fixed.eval()(maze, goal).logits)
    assert "k" not in out.stats


@pytest.mark.parametrize("bad", [[5], [0, 3], [6, 5], "4-8", [2.5, 8]])
def test_bad_k_train_is_refused(bad):
    with pytest.raises(BadInputError, match="k_train"):
        create_model("VIN", **small("VIN", k_train=bad))


@pytest.mark.parametrize("name", GRID)
def test_unknown_value_kernel_is_refused(name):
    with pytest.raises(BadInputError, match="value_kernel"):
        create_model(name, **small(name, value_kernel="positive"))


@pytest.mark.parametrize("name", GRID)
def test_state_reward_has_no_reward_kernel_and_trains(name):
    model = create_model(name, **small(name, value_kernel="convex", gamma=0.99, state_reward=True))
    assert not [key for key in model.state_dict() if key.startswith(("q.", "q_r."))]
    maze, goal = maze_batch()
    model(maze, goal).logits.logsumexp(1).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", [n for n in GRID if get_model_entry(n).symmetric])
def test_state_reward_keeps_equivariance(name):
    extra = {"tol": 1e-7, "max_iter": 300} if get_model_entry(name).implicit else {}
    config = small(name, value_kernel="convex", gamma=0.9, state_reward=True, complete_basis=True, **extra)
    model = create_model(name, **config).eval()
    assert rot90_error(model) < 1e-4


@pytest.mark.parametrize("name", [n for n in GRID if get_model_entry(n).symmetric])
def test_convex_kernel_on_the_complete_basis_starts_as_one_cell_shifts(name):
    """Each expanded value channel puts almost all its weight on one tap of one input channel, and the
    taps differ between fields (from zeros the kernel would be uniform and fade the goal's signal)."""
    model = create_model(name, **small(name, value_kernel="convex", gamma=0.9, complete_basis=True))
    kernel = convex_value_kernel(model.q_v()[0].detach(), 1.0)  # (l_q * G, G, f, f), taps sum to 1
    top = kernel.flatten(1).max(dim=1)
    assert (top.values > 0.99).all()
    group = model.group_size
    assert len(set(top.indices[::group].tolist())) == model.l_q  # field i's channel 0: its own tap


def test_one_cell_encoder_gives_every_free_cell_the_same_reward():
    torch.manual_seed(0)
    model = create_model("VIN", **small("VIN", encoder_kernel=1))
    maze, goal = maze_batch()
    with torch.no_grad():
        r = model._reward(torch.cat([maze[:, None], goal], dim=1), model._filters())[..., 0]
    plain = (maze > 0.5) & (goal[:, 0] < 0.5)
    assert torch.allclose(r[plain], r[plain][0].expand(int(plain.sum())))


def test_state_reward_values_follow_bfs_distance_at_any_range():
    """Reward -1 on free cells, +10 at the goal, one-cell shifts: values fall strictly with distance,
    the goal's signal survives along a 40-cell corridor (what the v1.0 VIN lost past about 55 steps)."""
    model = create_model(
        "VIN",
        k=200,
        l_h=1,
        l_q=5,
        f=3,
        wall_mask=True,
        value_kernel="convex",
        gamma=0.99,
        state_reward=True,
        encoder_kernel=1,
    ).eval()
    with torch.no_grad():
        model.h.weight.zero_()
        model.h.weight[0, 0, 0, 0], model.h.weight[0, 1, 0, 0] = -1.0, 11.0  # free: -1, goal: +10
        model.h.bias.zero_()
        model.r.weight.fill_(1.0)
        model.w.zero_()
        for i, tap in enumerate((1, 3, 4, 5, 7)):  # N, W, stay, E, S
            model.w[i, 0].view(-1)[tap] = 10.0
    maze = torch.zeros(1, 3, 42)
    maze[0, 1, 1:41] = 1  # a corridor of 40 cells
    goal = torch.zeros(1, 1, 3, 42)
    goal[0, 0, 1, 1] = 1
    with torch.no_grad():
        v = model(maze, goal).values[0, 0, 1, 1:41]
    assert (v[:-1] > v[1:]).all()
