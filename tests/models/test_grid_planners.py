"""Every registered grid planner: shapes, gradients, save/load, equivariance, DEQ gradients, stability."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from diffplan.envs.actions import FLIP_LR_ACTION_PERM, FLIP_UD_ACTION_PERM, ROT90_ACTION_PERM
from diffplan.errors import BadInputError
from diffplan.models import create_model, get_model_entry, list_models
from diffplan.models._symmetry import CompleteRegularFilter, get_gspace, group_size
from diffplan.models.grid._vi_step import VIStep, _MaxOverFields, kernel_matrix, neighbourhoods
from diffplan.task import Task

GRID = list_models(task=Task.GRID)
SYMMETRIC = [n for n in GRID if get_model_entry(n).symmetric]
SMALL = dict(l_h=6, l_q=3)


def small_config(name: str, **extra) -> dict:
    config = dict(SMALL, **extra)
    if not get_model_entry(name).implicit:
        config.setdefault("k", 6)
    return config


def maze_batch(h: int = 7, w: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Two mazes (walls on the border and a few inside), goals at different cells: (2, H, W), (2, 1, H, W)."""
    maze = torch.ones(2, h, w)
    maze[:, 0], maze[:, -1], maze[:, :, 0], maze[:, :, -1] = 0, 0, 0, 0
    maze[0, 2, 1 : w - 2] = 0  # a horizontal wall with a gap on the right
    maze[1, 1 : h - 2, 3] = 0  # a vertical wall with a gap at the bottom
    goal = torch.zeros(2, 1, h, w)
    goal[0, 0, 1, 1] = 1
    goal[1, 0, h - 2, 1] = 1
    return maze, goal


def randomise_value_kernel(model: torch.nn.Module, std: float = 0.5) -> None:
    """The value kernel starts at zero; give it weight so the tests see values propagate."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("w", "q_v.weights"):
                p.normal_(0.0, std)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name", GRID)
@pytest.mark.parametrize("size", [(7, 7), (6, 9)])
def test_output_shapes_and_finite(name, size):
    model = create_model(name, **small_config(name))
    randomise_value_kernel(model)
    maze, goal = maze_batch(*size)
    out = model(maze, goal)
    assert out.logits.shape == (2, 4, *size)
    assert out.values.shape == (2, 1, *size)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.values).all()
    assert all(isinstance(v, float) for v in out.stats.values())
    if get_model_entry(name).implicit:
        assert {"forward_iterations", "forward_residual"} <= out.stats.keys()


@pytest.mark.parametrize("name", GRID)
def test_every_parameter_gets_a_gradient(name):
    model = create_model(name, **small_config(name, wall_mask=True))
    maze, goal = maze_batch()
    out = model(maze, goal)
    F.cross_entropy(
        out.logits, torch.randint(0, 4, (2, 7, 7), generator=torch.Generator().manual_seed(0))
    ).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    if get_model_entry(name).implicit:
        assert "backward_iterations" in out.stats  # filled in by the backward hook


@pytest.mark.parametrize("name", GRID)
@pytest.mark.parametrize("save_mode", ["train", "eval"])
def test_state_dict_round_trip(name, save_mode):
    model = create_model(name, **small_config(name))
    randomise_value_kernel(model)
    model.train(save_mode == "train")
    buffer = io.BytesIO()
    torch.save({"name": name, "config": model.config, "state_dict": model.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)

    for load_mode in (True, False):  # load into a model in training and in evaluation mode
        clone = create_model(ckpt["name"], **ckpt["config"]).train(load_mode)
        clone.load_state_dict(ckpt["state_dict"], strict=True)
        assert clone.config == model.config
        maze, goal = maze_batch()
        with torch.no_grad():
            torch.testing.assert_close(clone.eval()(maze, goal).logits, model.eval()(maze, goal).logits)
    assert set(model.train().state_dict()) == set(model.eval().state_dict())


@pytest.mark.parametrize("name", GRID)
def test_config_rebuilds_the_same_model(name):
    model = create_model(name, **small_config(name, wall_mask=True))
    clone = create_model(name, **model.config)
    assert clone.config == model.config
    assert [(k, v.shape) for k, v in clone.state_dict().items()] == [
        (k, v.shape) for k, v in model.state_dict().items()
    ]


def test_parameter_counts_at_release_size(capsys):
    counts = {name: sum(p.numel() for p in create_model(name).parameters()) for name in GRID}
    with capsys.disabled():
        print("\nparameters at release size (l_h=150, l_q=40, f=3, d4):", counts)
    assert counts["VIN"] == counts["DE-VIN"] == 3880  # published VIN
    assert counts["SymVIN"] == 4900  # published SymVIN with equivariant head
    assert counts["DE-SymVIN"] == 4900 - 1920 + 2880  # value kernel on the complete basis (72 vs 48)
    assert sum(p.numel() for p in create_model("DE-SymVIN", complete_basis=False).parameters()) == 4900


def test_a_trivial_value_field_takes_one_filter_per_field():
    """SymVIN_maze15 v1.1: h 600 + h bias 150 + r 150 (trivial to trivial, 1x1) + q_v 10 * 9 (the complete
    basis from a scalar map) + policy 10 * 4 = 1030 parameters, no q_r with state_reward."""
    model = create_model(
        "SymVIN", l_q=10, complete_basis=True, value_kernel="convex", state_reward=True, value_field="trivial"
    )
    assert model.value_channels == 1 and model.q_v.weights.shape == (10, 1, 9)
    assert sum(p.numel() for p in model.parameters()) == 600 + 150 + 150 + 90 + 40


@pytest.mark.parametrize("name", GRID)
def test_initial_loss_is_moderate_at_release_size(name):
    """Published SymVIN/DE-SymVIN start with losses ~13 / ~1e17 (unbounded values); these must not."""
    torch.manual_seed(0)
    maze = (torch.rand(2, 15, 15) > 0.4).float()
    goal = torch.zeros(2, 1, 15, 15)
    goal[:, 0, 7, 7] = 1
    model = create_model(name)
    with torch.no_grad():
        out = model(maze, goal)
        loss = F.cross_entropy(out.logits, torch.randint(0, 4, (2, 15, 15)))
    assert torch.isfinite(loss) and loss < 10, loss


# --- equivariance (DESIGN section 3) ---------------------------------------------------------------

TRANSFORMS = {
    "rot90": (lambda x: torch.rot90(x, 1, dims=(-2, -1)), ROT90_ACTION_PERM),
    "flip_lr": (lambda x: torch.flip(x, dims=(-1,)), FLIP_LR_ACTION_PERM),
    "flip_ud": (lambda x: torch.flip(x, dims=(-2,)), FLIP_UD_ACTION_PERM),
}
CASES = [
    (name, group, t, complete, field)
    for name in SYMMETRIC
    for group in ("d4", "c4", "d8")
    for t in (["rot90"] if group[0] == "c" else list(TRANSFORMS))
    for complete in (False, True)
    for field in ("regular", "trivial")
    if (name == "SymVIN" or group == "d4") and not (complete and group == "d8")
]


@pytest.mark.parametrize(("name", "group", "transform", "complete_basis", "value_field"), CASES)
def test_equivariance(name, group, transform, complete_basis, value_field):
    torch.manual_seed(0)
    extra = {"tol": 1e-6, "max_iter": 200} if get_model_entry(name).implicit else {}
    config = small_config(
        name, group=group, complete_basis=complete_basis, wall_mask=True, value_field=value_field, **extra
    )
    model = create_model(name, **config).eval()
    randomise_value_kernel(model)
    maze, goal = maze_batch(7, 6)  # non-square: a rotation also swaps H and W
    op, perm = TRANSFORMS[transform]
    with torch.no_grad():
        out = model(maze, goal).logits
        out_t = model(op(maze), op(goal)).logits
    expected = torch.empty_like(op(out))
    expected[:, torch.as_tensor(perm)] = op(out)  # action a of the original is action perm[a] after
    assert rel_err(out_t, expected) < 1e-4


@pytest.mark.parametrize("transform", ["rot90", "flip_lr"])
def test_plain_policy_head_is_not_equivariant(transform):
    torch.manual_seed(0)
    model = create_model("SymVIN", **small_config("SymVIN", no_equiv_policy=True)).eval()
    maze, goal = maze_batch()
    op, perm = TRANSFORMS[transform]
    with torch.no_grad():
        out, out_t = model(maze, goal).logits, model(op(maze), op(goal)).logits
    expected = torch.empty_like(out)
    expected[:, torch.as_tensor(perm)] = op(out)
    assert rel_err(out_t, expected) > 1e-3


# --- the VI step -------------------------------------------------------------------------------------


def test_vi_step_matches_convolution_and_gradcheck():
    torch.manual_seed(0)
    b, h, w, g, l_q, f = 2, 5, 4, 2, 3, 3
    v = torch.randn(b, h, w, g, dtype=torch.float64, requires_grad=True)
    q_r = torch.randn(b * h * w, l_q * g, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(l_q * g, g, f, f, dtype=torch.float64, requires_grad=True)
    free = torch.rand(b, h, w, 1, generator=torch.Generator().manual_seed(0)) > 0.3
    q_ref = q_r.view(b, h, w, -1).permute(0, 3, 1, 2) + F.conv2d(v.permute(0, 3, 1, 2), kernel, padding=1)
    v_ref = q_ref.view(b, l_q, g, h, w).amax(dim=1).permute(0, 2, 3, 1)
    torch.testing.assert_close(VIStep(q_r, kernel, free=None)(v), v_ref)
    assert neighbourhoods(v, f).shape == (b * h * w, f * f * g)

    def unrolled(v, q_r, kernel, free):  # three steps and the final q, with the sparse reward gradient
        step = VIStep(q_r, kernel, free=free)
        for _ in range(3):
            v = step(v)
        return step.q(v)

    for mask in (None, free):
        assert torch.autograd.gradcheck(lambda *x, mask=mask: unrolled(*x, mask), (v, q_r, kernel))
    assert torch.autograd.gradcheck(
        lambda v, q, k: _MaxOverFields.apply(v, q, k, f, {}), (v, q_r, kernel_matrix(kernel))
    )


@pytest.mark.parametrize("group_size", [1, 8])
def test_vi_step_gives_the_same_values_in_chunks_with_and_without_autograd(monkeypatch, group_size):
    """The chunked forward and the no-grad path (columns reordered, no winners) change speed, not values."""
    torch.manual_seed(1)
    b, h, w, l_q, f = 3, 5, 4, 6, 3
    v = torch.randn(b, h, w, group_size)
    q_r = torch.randn(b * h * w, l_q * group_size)
    kernel = torch.randn(l_q * group_size, group_size, f, f)
    whole = torch.addmm(q_r, neighbourhoods(v, f), kernel_matrix(kernel))
    expected = whole.view(-1, l_q, group_size).amax(dim=1).view(b, h, w, group_size)
    monkeypatch.setattr("diffplan.models.grid._vi_step.ROWS_PER_CHUNK", 7)  # 60 cells: a ragged last chunk
    with torch.no_grad():
        assert torch.equal(VIStep(q_r, kernel, free=None)(v), expected)
    tracked = VIStep(q_r, kernel.requires_grad_(), free=None)(v)
    assert tracked.requires_grad and torch.equal(tracked.detach(), expected)
    assert torch.autograd.gradcheck(
        lambda v, q, k: _MaxOverFields.apply(v, q, k, f, {}),
        (v.double().requires_grad_(), q_r.double().requires_grad_(), kernel_matrix(kernel).double()),
    )


@pytest.mark.parametrize("group", ["d4", "c4"])
def test_complete_basis_moves_a_value_one_cell_exactly(group):
    """The band-limited escnn basis cannot express a one-cell shift; the complete basis can (gain 1)."""
    size = group_size(get_gspace(group))
    basis = CompleteRegularFilter(group, 1, 1, 3).basis  # (d, G_out, G_in, 3, 3)
    assert basis.shape[0] == size * 9
    rows = basis[:, 0].reshape(size * 9, -1).double()  # output channel 0: any of its G*9 entries is free
    shift = torch.zeros(size, 3, 3, dtype=torch.float64)
    shift[0, 0, 1] = 1.0  # take input channel 0 from the northern neighbour
    coef = torch.linalg.lstsq(rows.T, shift.flatten()[:, None]).solution
    torch.testing.assert_close(rows.T @ coef, shift.flatten()[:, None], atol=1e-5, rtol=0)


@pytest.mark.parametrize("group", ["d4", "c4"])
def test_a_shift_on_the_trivial_basis_takes_each_neighbour_in_turn(group):
    """Field 1 of a shift-initialised trivial-input filter takes the northern neighbour's value in its
    first channel; its other channels are that filter moved by the group, which between them take each
    of the four neighbours: one field covers every move of the grid."""
    size = group_size(get_gspace(group))
    weight, _ = CompleteRegularFilter(group, 1, 2, 3, init="shift", trivial_input=True)()
    assert weight.shape == (2 * size, 1, 3, 3)
    field = weight[size : 2 * size, 0]  # (G, 3, 3)
    north = torch.zeros(3, 3)
    north[0, 1] = 1.0
    torch.testing.assert_close(field[0], north)
    moves = {tuple(int(i) for i in ((f - 1).abs() < 1e-6).nonzero()[0]) for f in field}
    assert moves == {(0, 1), (1, 0), (2, 1), (1, 2)}
    torch.testing.assert_close(field.sum(dim=(1, 2)), torch.ones(size))


def test_wall_mask_gives_walls_the_worst_free_value():
    maze, goal = maze_batch()
    model = create_model("VIN", **small_config("VIN", wall_mask=True))
    randomise_value_kernel(model)
    values = model(maze, goal).values.detach()
    walls, free = maze[:, None] == 0, maze[:, None] == 1
    for i in range(2):
        worst = values[i][free[i]].min()
        assert torch.equal(values[i][walls[i]], worst.expand(int(walls[i].sum())))


def test_value_norm_bounds_values():
    """With the value kernel's l1 norm <= gamma < 1 values stay below max|r-part| / (1 - gamma)."""
    maze, goal = maze_batch()
    wild = create_model("SymVIN", **small_config("SymVIN", k=40, value_norm=False))
    tame = create_model("SymVIN", **small_config("SymVIN", k=40, value_norm=True, gamma=0.5))
    randomise_value_kernel(wild, std=3.0)
    tame.load_state_dict(wild.state_dict())
    assert not wild(maze, goal).stats["value_abs_max"] < 1e6  # the published computation blows up (or NaN)
    assert tame(maze, goal).stats["value_abs_max"] < 1e3


# --- deep equilibrium ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("deq", "unrolled"), [("DE-VIN", "VIN"), ("DE-SymVIN", "SymVIN")])
@pytest.mark.parametrize("backward_solver", ["anderson", "forward"])
def test_implicit_gradient_matches_long_unrolled_iteration(deq, unrolled, backward_solver):
    torch.manual_seed(0)
    gamma = 0.6
    tight = dict(tol=1e-11, max_iter=300, backward_tol=1e-11, backward_max_iter=300)
    model = create_model(deq, **SMALL, gamma=gamma, wall_mask=True, backward_solver=backward_solver, **tight)
    model = model.double()
    randomise_value_kernel(model, std=1.0)
    symmetric = {"complete_basis": True} if get_model_entry(unrolled).symmetric else {}
    reference = create_model(
        unrolled, **SMALL, k=120, value_norm=True, gamma=gamma, wall_mask=True, **symmetric
    )
    reference = reference.double()
    reference.load_state_dict(model.state_dict())
    maze, goal = (x.double() for x in maze_batch())
    target = torch.randint(0, 4, (2, 7, 7), generator=torch.Generator().manual_seed(1))

    grads = []
    for m in (model, reference):
        out = m(maze, goal)
        F.cross_entropy(out.logits, target).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    torch.testing.assert_close(model(maze, goal).logits, reference(maze, goal).logits)
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.999
    assert rel_err(grads[0], grads[1]) < 1e-4


def test_jacobian_free_backward_runs():
    model = create_model("DE-VIN", **SMALL, backward_solver="none")
    out = model(*maze_batch())
    out.logits.sum().backward()
    assert model.w.grad is not None and "backward_iterations" not in out.stats


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("SymVIN", {"group": "d5"}),
        ("SymVIN", {"value_field": "vector"}),
        ("SymVIN", {"group": "d8", "complete_basis": True}),
        ("VIN", {"f": 4}),
        ("VIN", {"k": 0}),
        ("VIN", {"value_norm": True, "gamma": 1.5}),
        ("DE-VIN", {"gamma": 1.0}),
        ("DE-SymVIN", {"solver": "broyden"}),
        ("DE-VIN", {"backward_solver": "magic"}),
    ],
)
def test_bad_configuration_is_refused(name, config):
    with pytest.raises(BadInputError):
        create_model(name, **config)


def test_bad_input_shapes_are_refused():
    model = create_model("VIN", **small_config("VIN"))
    maze, goal = maze_batch()
    with pytest.raises(BadInputError, match="maze"):
        model(maze, goal[:1])


def test_converting_one_symmetric_planner_leaves_another_untouched():
    # escnn shares basis modules between equal convolutions; each planner must own its copy.
    first = create_model("SymVIN", k=2, l_h=2, l_q=2)
    second = create_model("SymVIN", k=2, l_h=2, l_q=2)
    first.double()
    assert {t.dtype for t in second.buffers()} | {p.dtype for p in second.parameters()} == {torch.float32}


@pytest.mark.parametrize("group", ["d4", "c4"])
def test_the_complete_basis_is_canonical_whatever_the_thread_count(group):
    """Coefficients are stored against this basis, so it must not depend on how LAPACK ran: with an SVD
    basis, SymVIN_maze15 loaded on two threads planned with 50.7% accuracy instead of 99.8%."""
    from diffplan.models._symmetry import _complete_regular_basis

    bases = []
    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            _complete_regular_basis.cache_clear()
            bases.append(_complete_regular_basis(group, 3))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(bases[0], bases[1])
    size = group_size(get_gspace(group))
    flat = bases[0].flatten(1).double()
    torch.testing.assert_close(flat @ flat.T, torch.eye(size * 9, dtype=torch.float64))
    assert set((flat * size**0.5).round().unique().tolist()) == {0.0, 1.0}  # orbit indicators
