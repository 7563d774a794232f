"""The Ensemble planner: mean log-probabilities of its members, one budget for all, checkpoints that
reload to the same bits, sizes known without building it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffplan.errors import BadInputError, ModelNotFoundError
from diffplan.models import create_model, get_model_entry, list_models
from diffplan.release._model_size import count_weights, meta_shapes
from diffplan.release.checkpoint import load_model, save_release_checkpoint
from diffplan.scoring.budget import budget_knob, choose_budget, planning_budget, trained_steps
from diffplan.task import Task

VIN = {"algorithm": "VIN", "config": {"k": 5, "l_h": 6, "l_q": 3}}
DE_VIN = {"algorithm": "DE-VIN", "config": {"l_h": 6, "l_q": 3, "max_iter": 30}}
SYMVIN = {
    "algorithm": "SymVIN",
    "config": {"k": 3, "l_h": 2, "l_q": 2, "complete_basis": True, "value_norm": True, "wall_mask": True},
}
MP_VIN = {
    "algorithm": "MP-VIN",
    "config": {"k": 4, "l_h": 4, "l_q": 4, "mp_h": 8, "mp_q": 8, "readout_hidden": 8},
}


def maze_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 7x7 mazes, border walls and one inner wall each, goals in different corners."""
    maze = torch.ones(2, 7, 7)
    maze[:, 0], maze[:, -1], maze[:, :, 0], maze[:, :, -1] = 0, 0, 0, 0
    maze[0, 2, 1:5] = 0
    maze[1, 1:5, 3] = 0
    goal = torch.zeros(2, 1, 7, 7)
    goal[0, 0, 1, 1] = 1
    goal[1, 0, 5, 1] = 1
    return maze, goal


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at random (value kernels start at zero, which would hide the members)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def ensemble_of(*members: dict, **kwargs) -> torch.nn.Module:
    return randomised(create_model("Ensemble", members=list(members), **kwargs))


def test_the_ensemble_is_registered_as_a_composite_planner_of_no_single_task():
    entry = get_model_entry("Ensemble")
    assert entry.composite and entry.task is None and not entry.symmetric and not entry.implicit
    assert "Ensemble" in list_models() and "Ensemble" not in list_models(Task.GRID) + list_models(Task.GRAPH)
    assert create_model("Ensemble", members=[MP_VIN]).task is Task.GRAPH
    assert create_model("Ensemble", members=[VIN]).task is Task.GRID


def test_an_ensemble_of_one_member_plans_as_that_member():
    ensemble = ensemble_of(VIN)
    member = randomised(create_model("VIN", **VIN["config"]), seed=3)
    ensemble.members[0].load_state_dict(member.state_dict())
    maze, goal = maze_batch()
    with torch.no_grad():
        alone, together = member(maze, goal), ensemble(maze, goal)
    assert torch.equal(together.logits, F.log_softmax(alone.logits, dim=1))
    assert torch.equal(together.logits.argmax(1), alone.logits.argmax(1))
    assert torch.equal(together.values, alone.values)
    assert together.stats == {f"members.0.{key}": value for key, value in alone.stats.items()}


def test_logits_are_the_mean_log_probability_so_the_policy_is_the_normalised_geometric_mean():
    ensemble = ensemble_of(VIN, DE_VIN)
    maze, goal = maze_batch()
    with torch.no_grad():
        outputs = [member(maze, goal) for member in ensemble.members]
        together = ensemble(maze, goal)
    log_p = [F.log_softmax(o.logits, dim=1) for o in outputs]
    assert torch.allclose(together.logits, (log_p[0] + log_p[1]) / 2, atol=1e-6)
    geometric = (log_p[0].exp() * log_p[1].exp()).sqrt()
    assert torch.allclose(together.logits.softmax(1), geometric / geometric.sum(1, keepdim=True), atol=1e-6)
    assert torch.allclose(together.values, (outputs[0].values + outputs[1].values) / 2, atol=1e-6)
    assert {"members.0.value_abs_max", "members.1.forward_iterations"} <= together.stats.keys()


class _Offset(torch.nn.Module):
    """A member whose logits get a different constant at every state: the same policy."""

    def __init__(self, member: torch.nn.Module, offset: torch.Tensor) -> None:
        super().__init__()
        self.member, self.offset = member, offset

    def forward(self, maze, goal):
        out = self.member(maze, goal)
        return type(out)(logits=out.logits + self.offset, values=out.values, stats=out.stats)


def test_a_members_per_state_logit_offset_changes_nothing_and_the_vote_is_the_raw_logits_sum():
    """Logits are defined up to a constant per state; log-probabilities are not, so the ensemble depends
    on the members' policies only. Its argmax is the argmax of the summed raw logits (docstring)."""
    ensemble = ensemble_of(VIN, DE_VIN)
    maze, goal = maze_batch()
    with torch.no_grad():
        before = ensemble(maze, goal)
        raw = sum(member(maze, goal).logits for member in ensemble.members)
        offset = 50.0 * torch.randn(2, 1, 7, 7, generator=torch.Generator().manual_seed(1))
        ensemble.members[1] = _Offset(ensemble.members[1], offset)
        after = ensemble(maze, goal)
    assert torch.allclose(after.logits, before.logits, atol=1e-4)
    assert torch.equal(before.logits.argmax(1), raw.argmax(1))


def test_a_graph_ensemble_averages_node_logits():
    from diffplan.envs.graph import maze_to_graph

    ensemble = ensemble_of(MP_VIN, MP_VIN)
    maze, goal = maze_batch()
    graph = maze_to_graph(maze[0].numpy(), (1, 1))
    x, edge_index = graph["x"].float(), graph["edge_index"]
    with torch.no_grad():
        outputs = [member(x, edge_index) for member in ensemble.members]
        together = ensemble(x, edge_index)
    assert together.logits.shape == (x.shape[0], 4) and together.values.shape == (x.shape[0], 1)
    mean = sum(F.log_softmax(o.logits, dim=1) for o in outputs) / 2
    assert torch.allclose(together.logits, mean, atol=1e-6) and torch.isfinite(together.logits).all()


@pytest.mark.parametrize(
    "members, error, message",
    [
        ([], BadInputError, "non-empty list"),
        ([{"algorithm": "VIN"}], BadInputError, "member 0 must be"),
        ([{"algorithm": "VINN", "config": {}}], ModelNotFoundError, "Did you mean 'VIN'"),
        ([VIN, MP_VIN], BadInputError, "one task"),
        ([{"algorithm": "MP-VIN", "config": {"cont_action": True}}], BadInputError, "continuous actions"),
        ([{"algorithm": "Ensemble", "config": {}}], BadInputError, "itself a Ensemble"),
    ],
)
def test_bad_members_are_refused_in_one_line(members, error, message):
    with pytest.raises(error, match=message):
        create_model("Ensemble", members=members)
    with pytest.raises(error, match=message):
        count_weights("Ensemble", {"members": members})  # the same checks, nothing built


def test_the_budget_is_one_knob_that_reaches_every_members_own():
    ensemble = create_model("Ensemble", members=[VIN, DE_VIN, SYMVIN]).eval()
    vin, de_vin, symvin = ensemble.members
    assert ensemble.k == 30 and ensemble.config["k"] == 30  # the largest trained budget: DE-VIN's max_iter
    assert (vin.k, de_vin._deq["max_iter"], symvin.k) == (30, 30, 30)
    assert budget_knob(ensemble) == "k" and trained_steps(ensemble) == 30
    ensemble.k = 7
    assert (vin.k, de_vin._deq["max_iter"], symvin.k) == (7, 7, 7)
    ensemble.k = 30
    with planning_budget(ensemble, 50):
        assert (vin.k, de_vin._deq["max_iter"], symvin.k, ensemble.k) == (50, 50, 50, 50)
    assert (vin.k, de_vin._deq["max_iter"], symvin.k, ensemble.k) == (30, 30, 30, 30)
    assert choose_budget(ensemble, "side", side=49, longest=80).steps == 70
    assert choose_budget(ensemble, "bfs", side=49, longest=80).steps == 81
    assert choose_budget(ensemble, "trained", side=49, longest=80).steps == 30
    assert choose_budget(ensemble, 12, side=49, longest=80).steps == 12
    with pytest.raises(BadInputError, match="k must be an integer >= 1"):
        ensemble.k = 0
    explicit = create_model("Ensemble", members=[VIN, DE_VIN], k=12)
    assert (
        explicit.config == {"members": [VIN, DE_VIN], "k": 12} and explicit.members[1]._deq["max_iter"] == 12
    )


def test_state_dict_keys_are_the_members_under_their_index():
    ensemble = create_model("Ensemble", members=[VIN, DE_VIN])
    member = create_model("DE-VIN", **DE_VIN["config"])
    assert {key for key in ensemble.state_dict() if key.startswith("members.1.")} == {
        f"members.1.{key}" for key in member.state_dict()
    }


@pytest.mark.parametrize("members", [[VIN, DE_VIN], [VIN, SYMVIN]])
def test_its_size_is_found_without_building_it(members):
    ensemble = create_model("Ensemble", members=members).eval()
    state = ensemble.state_dict()
    assert count_weights("Ensemble", {"members": members}) == sum(t.numel() for t in state.values())
    shapes = meta_shapes("Ensemble", {"members": members})
    if members[1] is SYMVIN:
        assert shapes is None  # escnn members are never built on the meta device
    else:
        assert shapes == {key: tuple(t.shape) for key, t in state.items()}


def _saved(tmp_path, model, name: str, algorithm: str):
    path = tmp_path / f"{name}.ckpt"
    save_release_checkpoint(path, model, name=name, algorithm=algorithm, model_config=model.config)
    return path


def same_record(a, b) -> bool:
    """Equal records, tensors bit for bit (the file bytes also depend on pickle's memo of equal strings)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_record(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def test_a_checkpoint_with_a_symvin_member_reloads_to_the_same_bits(tmp_path):
    """The member is loaded from its own release file (escnn filters set from their stored expansion on
    this host's basis), put in an Ensemble, saved and reloaded: the reloaded Ensemble's member is bit for
    bit the member loaded alone, and saving it again writes the same record."""
    symvin = load_model(
        _saved(tmp_path, randomised(create_model("SymVIN", **SYMVIN["config"])), "S", "SymVIN")
    )
    vin = load_model(_saved(tmp_path, randomised(create_model("VIN", **VIN["config"]), 1), "V", "VIN"))
    ensemble = create_model("Ensemble", members=[VIN, SYMVIN]).eval()
    ensemble.members[0], ensemble.members[1] = vin, symvin
    ensemble.k = ensemble.k
    first = _saved(tmp_path, ensemble, "E", "Ensemble")
    record = torch.load(first, weights_only=True)
    assert record["format_version"] == 3
    assert set(record["expanded_filters"]) == {f"members.1.{m}" for m in ("h", "r", "q_r", "policy")}
    reloaded = load_model(first)
    maze, goal = maze_batch()
    with torch.no_grad():
        before, after = ensemble(maze, goal), reloaded(maze, goal)
        alone = symvin(maze, goal)
        member = reloaded.members[1](maze, goal)
    assert torch.equal(after.logits, before.logits) and torch.equal(after.values, before.values)
    assert torch.equal(member.logits, alone.logits) and torch.equal(member.values, alone.values)
    state, again = reloaded.state_dict(), ensemble.state_dict()
    assert all(torch.equal(state[key], again[key]) for key in state)
    again = tmp_path / "again"
    again.mkdir()
    resaved = torch.load(_saved(again, reloaded, "E", "Ensemble"), weights_only=True)
    assert same_record(resaved, record)


def test_a_reloaded_symvin_saves_the_filters_it_was_loaded_from(tmp_path):
    """Loading solves for coefficients by least squares; a re-save must not re-expand them (their filters
    differ from the stored ones in the last bits), or each round trip would drift. Changed coefficients
    are expanded anew."""
    original = randomised(create_model("SymVIN", **SYMVIN["config"]))
    path = _saved(tmp_path, original, "S", "SymVIN")
    first = load_model(path)
    again = tmp_path / "again"
    again.mkdir()
    _saved(again, first, "S", "SymVIN")
    stored = torch.load(path, weights_only=True)["expanded_filters"]
    resaved = torch.load(again / "S.ckpt", weights_only=True)["expanded_filters"]
    assert all(
        torch.equal(resaved[m][key], stored[m][key]) for m in stored for key in stored[m]
    )  # ... same filters
    with torch.no_grad():
        first.h.weights.add_(0.1)
    changed = torch.load(_saved(again, first, "S", "SymVIN"), weights_only=True)["expanded_filters"]
    assert torch.equal(changed["h"]["weight"], first.h()[0].detach())
    assert torch.equal(changed["r"]["weight"], stored["r"]["weight"])
