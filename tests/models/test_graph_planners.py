"""Graph planners: the contract every registered one keeps, and Sym-MP-VIN's symmetries (DESIGN 3, 4).

Inputs are tiny hand-built graphs: a 5x5 maze as a ``has_obstacle`` lattice (every cell a node, node
index row * 5 + col, 4-neighbour edges both ways) and a 4-node graph of free cells only.
"""

from __future__ import annotations

import importlib
import io

import numpy as np
import pytest
import torch

from diffplan.envs.actions import ACTION_DELTAS, FLIP_LR_ACTION_PERM, FLIP_UD_ACTION_PERM, ROT90_ACTION_PERM
from diffplan.errors import BadInputError
from diffplan.models import create_model, get_model_entry, list_models
from diffplan.models.graph._geometry import edge_geometry
from diffplan.models.graph._readout import MISSING_LOGIT
from diffplan.task import Task

GRAPH_MODELS = list_models(task=Task.GRAPH)

# Small widths keep the whole module fast; unknown (newly registered) planners run with their defaults.
SMALL = {
    "MP-VIN": dict(k=4, l_h=4, l_q=4, mp_h=8, mp_q=8, readout_hidden=8),
    "Sym-MP-VIN": dict(k=4, l_h=1, l_q=2, mp_h=1, mp_q=1, readout_hidden=1),
    "GAT-VIN": dict(k=4, l_h=4, l_q=4, heads=2, readout_hidden=8),
    "GCN-VIN-v2": dict(k=4, l_h=4, l_q=4, relations=4, readout_hidden=8),
}

MAZE = np.array(  # 1 = free, 0 = wall; goal at (1, 3)
    [
        [1, 1, 1, 0, 1],
        [0, 0, 1, 1, 1],
        [1, 1, 1, 0, 1],
        [1, 0, 1, 1, 1],
        [1, 1, 1, 0, 1],
    ]
)
GOAL = (1, 3)


def lattice_graph(maze: np.ndarray, goal: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """x (H*W, 4) [row, col, is_goal, is_obstacle] and 4-neighbour edges of every cell, both ways."""
    h, w = maze.shape
    rows, cols = np.divmod(np.arange(h * w), w)
    x = np.stack([rows, cols, np.zeros(h * w), 1 - maze.reshape(-1)], axis=1).astype(np.float32)
    x[goal[0] * w + goal[1], 2] = 1
    edges = [
        (rr * w + cc, r * w + c)
        for r in range(h)
        for c in range(w)
        for rr, cc in ((r + dy, c + dx) for dy, dx in ACTION_DELTAS)
        if 0 <= rr < h and 0 <= cc < w
    ]
    return torch.from_numpy(x), torch.tensor(edges, dtype=torch.int64).T.contiguous()


def four_node_graph() -> tuple[torch.Tensor, torch.Tensor]:
    """Free cells (0,0) (0,1) (1,1) (1,2) of a map, goal at (1,2), path edges both ways."""
    x = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [1, 2, 1, 0]], dtype=torch.float32)
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    return x, edge_index


def build(name: str, cont_action: bool = False, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**SMALL.get(name, {}), "cont_action": cont_action, **overrides})


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_four_graph_planners_are_registered():
    assert {"MP-VIN", "Sym-MP-VIN", "GAT-VIN", "GCN-VIN-v2"} <= set(GRAPH_MODELS)
    assert get_model_entry("Sym-MP-VIN").symmetric
    assert not get_model_entry("MP-VIN").symmetric


@pytest.mark.parametrize("cont_action", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("name", GRAPH_MODELS)
class TestEveryGraphPlanner:
    def test_shapes_finite_loss_and_every_parameter_gets_a_gradient(self, name, cont_action):
        model = build(name, cont_action)
        x, edge_index = lattice_graph(MAZE, GOAL)
        out = model(x, edge_index)
        assert out.logits.shape == (25, 2 if cont_action else 4)
        assert out.values.shape == (25, 1)
        assert torch.isfinite(out.logits).all() and torch.isfinite(out.values).all()
        assert all(isinstance(v, float) for v in out.stats.values())
        if cont_action:
            loss = (out.logits - torch.tensor([0.0, 1.0])).pow(2).sum(-1).mean()
        else:
            loss = torch.nn.functional.cross_entropy(out.logits, torch.full((25,), 2))
        assert torch.isfinite(loss)
        loss.backward()
        missing = [
            n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
        ]
        assert not missing, f"no (finite) gradient for {missing}"
        print(
            f"{name} ({'continuous' if cont_action else 'discrete'}): "
            f"{n_params(model)} parameters (test size)"
        )

    def test_general_graph_and_missing_neighbours(self, name, cont_action):
        model = build(name, cont_action).eval()
        x, edge_index = four_node_graph()
        with torch.no_grad():
            out = model(x, edge_index)
        assert torch.isfinite(out.logits).all()
        if cont_action:
            assert out.logits.shape == (4, 2)
            # node 0's only neighbour is E of it: its move vector points east
            assert abs(float(out.logits[0, 0])) < 1e-6 and out.logits[0, 1] > 0
        else:
            # node 0 (0,0) has only an E neighbour; node 1 (0,1) has W and S; node 3 (1,2) has only W
            present = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.bool)
            assert (out.logits[~present] == MISSING_LOGIT).all()
            assert (out.logits[present] > MISSING_LOGIT / 2).all()

    def test_state_dict_round_trip_and_config_rebuild(self, name, cont_action):
        model = build(name, cont_action).eval()
        x, edge_index = lattice_graph(MAZE, GOAL)
        assert all(v is None or isinstance(v, (int, float, str, bool)) for v in model.config.values())
        buffer = io.BytesIO()
        torch.save({"name": name, "config": model.config, "state_dict": model.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        torch.manual_seed(1)  # a different initialisation, overwritten by the load
        clone = create_model(saved["name"], **saved["config"]).eval()
        clone.load_state_dict(saved["state_dict"], strict=True)
        assert clone.config == model.config
        with torch.no_grad():
            assert torch.equal(clone(x, edge_index).logits, model(x, edge_index).logits)
        # The keys do not depend on the mode (escnn caches nothing here), so train-mode checkpoints load too.
        assert model.train().state_dict().keys() == model.eval().state_dict().keys()

    def test_batch_of_two_graphs_equals_each_alone(self, name, cont_action):
        model = build(name, cont_action).eval()
        (xa, ea), (xb, eb) = lattice_graph(MAZE, GOAL), four_node_graph()
        x = torch.cat([xa, xb])
        edge_index = torch.cat([ea, eb + xa.shape[0]], dim=1)
        batch = torch.cat([torch.zeros(len(xa)), torch.ones(len(xb))]).long()
        with torch.no_grad():
            both, alone_a, alone_b = model(x, edge_index, batch), model(xa, ea), model(xb, eb)
        assert torch.allclose(both.logits, torch.cat([alone_a.logits, alone_b.logits]), atol=1e-5)
        assert torch.allclose(both.values, torch.cat([alone_a.values, alone_b.values]), atol=1e-5)

    def test_translation_changes_nothing(self, name, cont_action):
        model = build(name, cont_action).double().eval()
        x, edge_index = lattice_graph(MAZE, GOAL)
        x = x.double()
        moved = x.clone()
        moved[:, :2] += torch.tensor([7.25, -3.5], dtype=torch.float64)
        with torch.no_grad():
            a, b = model(x, edge_index), model(moved, edge_index)
        assert rel_err(b.logits, a.logits) < 1e-4
        assert rel_err(b.values, a.values) < 1e-4


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| over entries that are not missing-neighbour logits."""
    keep = expected > MISSING_LOGIT / 2
    return float((actual - expected)[keep].abs().max() / expected[keep].abs().max().clamp_min(1e-12))


# --- Sym-MP-VIN: DESIGN section 3 symmetries ------------------------------------------------------------

# (dy, dx) maps of the map transformations, and what they do to the actions N, W, S, E.
ROT90 = (lambda d: torch.stack([-d[:, 1], d[:, 0]], dim=-1), ROT90_ACTION_PERM)  # rot90 CCW as displayed
FLIP_LR = (lambda d: torch.stack([d[:, 0], -d[:, 1]], dim=-1), FLIP_LR_ACTION_PERM)
FLIP_UD = (lambda d: torch.stack([-d[:, 0], d[:, 1]], dim=-1), FLIP_UD_ACTION_PERM)
GROUP_SYMMETRIES = {"c4": {"rot90": ROT90}, "d4": {"rot90": ROT90, "flip_lr": FLIP_LR, "flip_ud": FLIP_UD}}
GROUP_SYMMETRIES["d8"] = GROUP_SYMMETRIES["d4"]


def expected_output(logits: torch.Tensor, transform, perm: np.ndarray, cont_action: bool) -> torch.Tensor:
    """Discrete: action a's logit moves to perm[a]. Continuous: the move vector is transformed."""
    if cont_action:
        return transform(logits)
    out = torch.empty_like(logits)
    out[:, torch.as_tensor(perm)] = logits
    return out


@pytest.mark.parametrize("cont_action", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize(
    "group,symmetry", [(g, s) for g, syms in GROUP_SYMMETRIES.items() for s in syms], ids=lambda v: str(v)
)
@pytest.mark.parametrize("value_step", ["mlp", "convex"])
def test_sym_mp_vin_positions_rotated_or_reflected_about_any_point(group, symmetry, cont_action, value_step):
    """Positions transformed about an arbitrary point, features and edges unchanged (float64, exact);
    the convex step's weights are moved off their initial shifts first, so every term is exercised."""
    transform, perm = GROUP_SYMMETRIES[group][symmetry]
    model = build("Sym-MP-VIN", cont_action, group=group, value_step=value_step).double().eval()
    if value_step == "convex":
        torch.manual_seed(1)
        with torch.no_grad():
            for parameter in model.q.parameters():
                parameter.add_(torch.randn_like(parameter))
    x, edge_index = lattice_graph(MAZE, GOAL)
    x = x.double()
    centre = torch.tensor([1.3, -0.7], dtype=torch.float64)
    moved = x.clone()
    moved[:, :2] = transform(x[:, :2] - centre) + centre
    with torch.no_grad():
        a, b = model(x, edge_index), model(moved, edge_index)
    assert rel_err(b.logits, expected_output(a.logits, transform, perm, cont_action)) < 1e-4
    assert rel_err(b.values, a.values) < 1e-4


@pytest.mark.parametrize("cont_action", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize(
    "symmetry,grid_op",
    [
        ("rot90", lambda m: np.rot90(m, 1)),
        ("flip_lr", lambda m: m[:, ::-1]),
        ("flip_ud", lambda m: m[::-1, :]),
    ],
    ids=["rot90", "flip_lr", "flip_ud"],
)
@pytest.mark.parametrize("value_step", ["mlp", "convex"])
def test_sym_mp_vin_on_the_transformed_maze_follows_design_section_3(
    symmetry, grid_op, cont_action, value_step
):
    """The maze itself rotated with rot90 / flipped and rebuilt as a graph: each cell's policy follows it."""
    transform, perm = GROUP_SYMMETRIES["d4"][symmetry]
    model = build("Sym-MP-VIN", cont_action, value_step=value_step).double().eval()
    cells = np.arange(MAZE.size).reshape(MAZE.shape)
    goal_map = np.zeros(MAZE.shape, dtype=int)
    goal_map[GOAL] = 1
    new_cells = np.ascontiguousarray(grid_op(cells))  # new_cells[r', c'] = old cell index
    new_goal = tuple(int(i) for i in np.argwhere(grid_op(goal_map))[0])
    x, edge_index = lattice_graph(MAZE, GOAL)
    x2, edge_index2 = lattice_graph(np.ascontiguousarray(grid_op(MAZE)), new_goal)
    with torch.no_grad():
        a, b = model(x.double(), edge_index), model(x2.double(), edge_index2)
    old_of_new = torch.from_numpy(new_cells.reshape(-1))
    assert rel_err(b.logits, expected_output(a.logits[old_of_new], transform, perm, cont_action)) < 1e-4
    assert rel_err(b.values, a.values[old_of_new]) < 1e-4


def test_sym_mp_vin_c4_is_not_reflection_equivariant_and_plain_policy_runs():
    """Sanity of the checks above: c4 has no reflections, so a flip must change its output."""
    model = build("Sym-MP-VIN", group="c4").double().eval()
    x, edge_index = lattice_graph(MAZE, GOAL)
    x = x.double()
    transform, perm = FLIP_LR
    moved = x.clone()
    moved[:, :2] = transform(x[:, :2])
    with torch.no_grad():
        a, b = model(x, edge_index), model(moved, edge_index)
    assert rel_err(b.logits, expected_output(a.logits, transform, perm, False)) > 1e-3
    plain = build("Sym-MP-VIN", True, no_equiv_policy=True)
    assert plain(*lattice_graph(MAZE, GOAL)).logits.shape == (25, 2)


def test_mp_vin_neighbour_skip_is_optional_and_trains():
    """Off by default (MP-VIN_graph v1 checkpoints have no ``q.beta``); on, beta gets a gradient."""
    assert not any("beta" in key for key in build("MP-VIN").state_dict())
    model = build("MP-VIN", neighbour_skip=True)
    x, edge_index = lattice_graph(MAZE, GOAL)
    torch.nn.functional.cross_entropy(model(x, edge_index).logits, torch.full((25,), 2)).backward()
    assert model.q.beta.grad is not None and float(model.q.beta.grad) != 0.0
    clone = create_model("MP-VIN", **model.config)
    clone.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("MP-VIN", dict(k=0)),
        ("MP-VIN", dict(l_q=2.5)),
        ("Sym-MP-VIN", dict(group="o2")),
        ("GAT-VIN", dict(l_q=6, heads=4)),
        ("GCN-VIN-v2", dict(l_q=6, relations=4)),
    ],
)
def test_bad_hyper_parameters_are_refused_with_a_clear_error(name, kwargs):
    with pytest.raises(BadInputError, match=next(iter(kwargs)) if "group" not in kwargs else "group"):
        create_model(name, **kwargs)


def test_bad_inputs_are_refused_with_a_clear_error():
    model = build("MP-VIN")
    x, edge_index = lattice_graph(MAZE, GOAL)
    with pytest.raises(BadInputError, match="node features"):
        model(x[:, :3], edge_index)
    with pytest.raises(BadInputError, match="edge_index"):
        model(x, edge_index.T)


def test_parameter_counts_of_the_default_configs():
    counts = {name: n_params(create_model(name)) for name in GRAPH_MODELS}
    print("graph planner parameters (defaults):", counts)
    assert all(0 < c < 200_000 for c in counts.values())  # far below the 10 MB checkpoint limit


@pytest.mark.parametrize("name", ["GAT-VIN", "GCN-VIN-v2"])
def test_a_value_bound_keeps_values_finite_where_unbounded_ones_blow_up(name):
    """With the weights on v far above 1, K steps of unbounded value iteration grow geometrically; the
    bound keeps every step's growth below ``value_bound``, so values stay near the reward scale."""
    x, edge_index = lattice_graph(MAZE, GOAL)
    values = {}
    for bound in (None, 0.9):
        model = build(name, k=60, value_bound=bound).eval()
        with torch.no_grad():
            model.q.lin.weight[:, 1] = 5.0  # every Q channel amplifies v
            values[bound] = model(x, edge_index).values.abs().max().item()
        clone = create_model(name, **model.config)
        clone.load_state_dict(model.state_dict(), strict=True)
        assert clone.config["value_bound"] == bound
    assert not values[None] < 1e6  # huge, or overflowed to inf/nan
    assert values[0.9] < 1e3


def test_a_value_bound_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="value bound"):
        build("GCN-VIN-v2", value_bound=1.5)


@pytest.mark.parametrize("name", ["MP-VIN", "Sym-MP-VIN"])
@pytest.mark.parametrize("cont_action", [False, True])
def test_inference_in_edge_chunks_gives_the_training_path_outputs(monkeypatch, name, cont_action):
    """Without autograd, messages are summed a chunk of edges at a time: faster, same numbers."""
    model = build(name, cont_action).eval()
    x, edge_index = lattice_graph(MAZE, GOAL)  # 80 edges and self-loops: chunks of 7 end ragged
    monkeypatch.setattr("diffplan.models.graph._graph_vi.EDGES_PER_CHUNK", 7)
    with torch.no_grad():
        chunked = model(x, edge_index)
    tracked = model(x, edge_index)
    assert tracked.logits.requires_grad
    torch.testing.assert_close(chunked.logits, tracked.logits.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(chunked.values, tracked.values.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_k_train_draws_the_steps_of_each_training_pass_and_eval_runs_k(monkeypatch, name):
    module = importlib.import_module(type(build(name)).__module__)
    seen = []
    real = module.value_iteration

    def recording(step, reduce, v0, k):
        seen.append(k)
        return real(step, reduce, v0, k)

    monkeypatch.setattr(module, "value_iteration", recording)
    model = build(name, k_train=[2, 9])
    x, edge_index = lattice_graph(MAZE, GOAL)
    torch.manual_seed(1)
    for _ in range(12):
        model(x, edge_index).logits.sum().backward()
    assert all(2 <= k <= 9 for k in seen) and len(set(seen)) > 2
    model.eval()
    seen.clear()
    with torch.no_grad():
        model(x, edge_index)
    assert seen == [4]


def test_a_bad_k_train_is_refused_for_graph_planners():
    with pytest.raises(BadInputError, match="k_train"):
        build("GCN-VIN-v2", k_train=[9, 2])


def convex_mp_vin(**overrides) -> torch.nn.Module:
    return build("MP-VIN", value_step="convex", gamma=0.9, **overrides)


def test_the_convex_step_starts_as_one_neighbour_shifts():
    """At initialisation channel c backs up the value of the neighbour in direction c mod 5 (N, W, S,
    E, stay): q_c = r + gamma * v(neighbour), within the softmax's 1e-3 of the other senders."""
    model = convex_mp_vin(l_q=5).eval()
    x, edge_index = lattice_graph(MAZE, GOAL)
    h, w = MAZE.shape
    geo = edge_geometry(x[:, :2], edge_index)
    v = torch.arange(h * w, dtype=torch.float32)[:, None]
    with torch.no_grad():
        node = torch.cat([torch.relu(model.h(geo, x[:, 2:])), x[:, 2:]], dim=-1)
        q = model.q.step(model.q.prepare(geo, node, x[:, :2]), torch.zeros(h * w, 1), v)
    centre = 2 * w + 2  # (2, 2) has all four neighbours
    for c, (dy, dx) in enumerate([*ACTION_DELTAS, (0, 0)]):
        assert float(q[centre, c]) == pytest.approx(0.9 * float(v[centre + dy * w + dx]), abs=1e-2)


def test_the_convex_step_is_a_gamma_contraction_whatever_its_weights():
    """Sender weights sum to one per receiver and channel, so |step(a) - step(b)| <= gamma |a - b| in
    the max norm, a constant added to v comes out times gamma, and K = 2000 steps stay within
    max |r| / (1 - gamma) of zero."""
    model = convex_mp_vin()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 3.0)
    x, edge_index = lattice_graph(MAZE, GOAL)
    geo = edge_geometry(x[:, :2], edge_index)
    node = torch.cat([torch.relu(model.h(geo, x[:, 2:])), x[:, 2:]], dim=-1)
    ctx = model.q.prepare(geo, node, x[:, :2])
    totals = torch.zeros(25, ctx.weights[0].numel()).index_add_(0, ctx.dst, ctx.weights.flatten(1))
    torch.testing.assert_close(totals, torch.ones_like(totals))
    r = torch.randn(25, 1)
    a, b = torch.randn(25, 1) * 10, torch.randn(25, 1) * 10
    with torch.no_grad():
        gap = (model.q.step(ctx, r, a) - model.q.step(ctx, r, b)).abs().max()
    assert float(gap) <= 0.9 * float((a - b).abs().max()) + 1e-5
    torch.testing.assert_close(model.q.step(ctx, r, a + 7.0), model.q.step(ctx, r, a) + 0.9 * 7.0)
    model.eval()
    model.k = 2000
    with torch.no_grad():
        out = model(x, edge_index)
        rewards = model.r(node)
    assert torch.isfinite(out.logits).all()
    assert float(out.values.abs().max()) <= float(rewards.abs().max()) / (1 - 0.9) + 1e-3


@pytest.mark.parametrize("cont_action", [False, True])
def test_mp_vin_with_the_convex_step_trains_reloads_and_ignores_where_the_maze_lies(cont_action):
    model = convex_mp_vin(cont_action=cont_action)
    x, edge_index = lattice_graph(MAZE, GOAL)
    out = model(x, edge_index)
    out.logits.square().sum().backward()
    assert all(p.grad is not None for p in model.q.parameters())
    assert float(model.q.direction.grad.abs().sum()) > 0
    clone = create_model("MP-VIN", **model.config)
    clone.load_state_dict(model.state_dict(), strict=True)
    moved = x.clone()
    moved[:, :2] += torch.tensor([40.0, -13.0])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(moved, edge_index).logits, model(x, edge_index).logits)


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("MP-VIN", dict(value_step="attention"), "value_step"),
        ("MP-VIN", dict(value_step="convex", gamma=1.0), "gamma"),
        ("MP-VIN", dict(value_step="convex", neighbour_skip=True), "neighbour_skip"),
        ("Sym-MP-VIN", dict(value_step="attention"), "value_step"),
        ("GAT-VIN", dict(value_step="convex", heads=2), "heads"),
        ("GAT-VIN", dict(value_step="convex", heads=4, value_bound=0.9), "value_bound"),
        ("GCN-VIN-v2", dict(value_step="convex", relations=2), "relations"),
        ("GCN-VIN-v2", dict(value_step="convex", value_bound=0.9), "value_bound"),
    ],
)
def test_bad_convex_step_settings_are_refused_with_a_clear_error(name, kwargs, message):
    with pytest.raises(BadInputError, match=message):
        build(name, **kwargs)


def test_sym_mp_vin_with_the_convex_step_trains_and_reloads():
    model = build("Sym-MP-VIN", value_step="convex", gamma=0.9)
    x, edge_index = lattice_graph(MAZE, GOAL)
    model(x, edge_index).logits.square().sum().backward()
    assert float(model.q.direction.grad.abs().sum()) > 0
    assert "q.frames" not in model.state_dict()
    clone = create_model("Sym-MP-VIN", **model.config)
    clone.load_state_dict(model.state_dict(), strict=True)


CONVEX = {
    "MP-VIN": dict(value_step="convex", gamma=0.9),
    "Sym-MP-VIN": dict(value_step="convex", gamma=0.9),
    "GAT-VIN": dict(value_step="convex", gamma=0.9, heads=4),
    "GCN-VIN-v2": dict(value_step="convex", gamma=0.9, relations=4),
}


@pytest.mark.parametrize("cont_action", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("name", sorted(CONVEX))
def test_a_convex_step_reaches_its_fixed_point_whatever_its_weights(name, cont_action):
    """A gamma-contraction: from any weights, 400 and 800 steps give the same values and logits."""
    model = build(name, cont_action, **CONVEX[name]).double().eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    x, edge_index = lattice_graph(MAZE, GOAL)
    outputs = []
    for k in (400, 800):
        model.k = k
        with torch.no_grad():
            outputs.append(model(x.double(), edge_index))
    assert torch.isfinite(outputs[1].values).all()
    torch.testing.assert_close(outputs[0].values, outputs[1].values, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(outputs[0].logits, outputs[1].logits, rtol=1e-9, atol=1e-9)
    clone = create_model(name, **model.config)
    clone.load_state_dict(model.state_dict(), strict=True)


def test_gat_vin_convex_heads_start_by_attending_to_one_neighbour():
    """Head c attends to the neighbour in direction c mod 5 (N, W, S, E, then the node itself)."""
    model = build("GAT-VIN", l_q=5, heads=5, value_step="convex")
    x, edge_index = lattice_graph(MAZE, GOAL)
    geo = edge_geometry(x[:, :2], edge_index, self_loops=True)
    node = torch.cat([torch.nn.functional.elu(model.h(x[:, 2:], geo.edge_index, geo.rel)), x[:, 2:]], dim=-1)
    is_self = (geo.src == geo.dst).float()[:, None]
    with torch.no_grad():
        _, (edges, alpha) = model.q(
            node, geo.edge_index, torch.cat([geo.rel, is_self], -1), return_attention_weights=True
        )
    w = MAZE.shape[1]
    centre = 2 * w + 2
    for c, (dy, dx) in enumerate([*ACTION_DELTAS, (0, 0)]):
        into_centre = edges[1] == centre
        top = edges[0][into_centre][alpha[into_centre, c].argmax()]
        assert int(top) == centre + dy * w + dx
        assert float(alpha[into_centre, c].max()) > 0.99


def test_gcn_vin_v2_convex_fixes_the_weight_on_v():
    model = build("GCN-VIN-v2", value_step="convex", gamma=0.9)
    x, edge_index = lattice_graph(MAZE, GOAL)
    model(x, edge_index).logits.square().sum().backward()
    assert float(model.q.lin.weight.grad[:, 1].abs().sum()) == 0.0  # the v column is not learned
    assert float(model.direction.grad.abs().sum()) > 0
