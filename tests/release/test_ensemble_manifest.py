"""Ensemble entries in a manifest: their members are other entries of the same task and data, they take
no training fields, and the manifest resolves them to the Ensemble's constructor arguments."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from diffplan.errors import ManifestError
from diffplan.release.manifest import TRAINING_FIELDS, parse_manifest, recipe_differences
from diffplan.training.run import training_order

VIN = {"k": 6, "l_h": 8, "l_q": 6}
DE_VIN = {"l_h": 8, "l_q": 6, "max_iter": 30}


def manifest(*extra: dict, ensemble: dict | None = None) -> dict:
    grid = {"path": "data/g.npz", "kind": "grid", "maze_size": 7}
    entry = {"task": "GridWorld", "data": "data/g.npz", "folder": "grid", "target": {"minimum": 0.5}}
    return {
        "defaults": {"epochs": 2, "batch_size": 4, "lr": 0.01, "model": {"l_h": 8}},
        "datasets": {
            "grid": grid,
            "other": {**grid, "path": "data/other.npz"},
            "graph": {"path": "data/graph.pth", "kind": "graph", "maze_size": 7},
            "cont": {"path": "data/cont.pth", "kind": "graph", "maze_size": 7, "cont_action": True},
        },
        "models": [
            {**entry, "name": "VIN_tiny", "algorithm": "VIN", "model": VIN},
            {**entry, "name": "DE-VIN_tiny", "algorithm": "DE-VIN", "model": DE_VIN},
            *extra,
            {
                **entry,
                "name": "Ensemble_tiny",
                "algorithm": "Ensemble",
                "members": ["VIN_tiny", "DE-VIN_tiny"],
                **(ensemble or {}),
            },
        ],
    }


def parse(data: dict):
    return parse_manifest(copy.deepcopy(data), Path("m.yaml"))


def test_an_ensemble_entry_resolves_to_its_members_planners_and_the_largest_budget():
    spec = parse(manifest()).model("Ensemble_tiny")
    assert spec.members == ["VIN_tiny", "DE-VIN_tiny"]
    assert spec.model_args() == {
        "members": [{"algorithm": "VIN", "config": VIN}, {"algorithm": "DE-VIN", "config": DE_VIN}],
        "k": 30,  # DE-VIN's max_iter outranks VIN's k
    }
    resolved = spec.resolved()
    assert not set(TRAINING_FIELDS) & set(resolved)  # the defaults' epochs, lr ... do not apply to it
    assert resolved["members"] == ["VIN_tiny", "DE-VIN_tiny"] and resolved["model"] == spec.model_args()


def test_its_budget_may_be_set_and_defaults_to_the_members_constructor_defaults():
    assert parse(manifest(ensemble={"model": {"k": 12}})).model("Ensemble_tiny").model_args()["k"] == 12
    data = manifest()
    data["models"][1]["model"] = {"l_h": 8}  # DE-VIN's default max_iter is 50
    assert parse(data).model("Ensemble_tiny").model_args()["k"] == 50


def test_a_trained_entrys_resolved_config_is_as_before():
    spec = parse(manifest()).model("VIN_tiny")
    assert "members" not in spec.resolved() and spec.members is None
    assert spec.resolved()["epochs"] == 2


def test_a_member_recipe_change_is_a_recipe_change_of_the_ensemble():
    before = parse(manifest()).model("Ensemble_tiny").resolved()
    data = manifest()
    data["models"][0]["model"] = {**VIN, "k": 7}
    after = parse(data).model("Ensemble_tiny").resolved()
    assert recipe_differences(before, after) == ["model"]


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"members": ["VIN_tiny", "Nope"]}, "members", "'Nope' is not an entry of this manifest"),
        ({"members": []}, "members", "at least one entry"),
        ({"members": ["VIN_tiny", "VIN_tiny"]}, "members", "appears twice"),
        ({"members": ["Ensemble_tiny"]}, "members", "cannot be its own member"),
        ({"members": None}, "members", "lists the entries it averages"),
        ({"data": "data/other.npz"}, "members", "must share its task and data"),
        ({"epochs": 3}, "epochs", "assembled from its members' release checkpoints, not trained"),
        ({"lr": 0.1}, "lr", "not trained"),
        ({"group": "d4"}, "group", "takes its planners from its members"),
        ({"model": {"l_h": 4}}, "model", "takes only k"),
        ({"model": {"k": 0}}, "model", "k must be an integer >= 1"),
    ],
)
def test_bad_ensemble_entries_are_refused_naming_the_field(change, field, message):
    with pytest.raises(ManifestError, match=rf"models\[2\] \(Ensemble_tiny\): field '{field}': .*{message}"):
        parse(manifest(ensemble=change))


def test_a_graph_member_of_a_grid_ensemble_is_refused():
    graph = {
        "name": "MP-VIN_tiny",
        "algorithm": "MP-VIN",
        "task": "GraphWorld",
        "data": "data/graph.pth",
        "folder": "graph",
        "has_obstacle": True,
        "target": {"minimum": 0.5},
    }
    with pytest.raises(ManifestError, match="MP-VIN_tiny is a GraphWorld entry on data/graph.pth"):
        parse(manifest(graph, ensemble={"members": ["VIN_tiny", "MP-VIN_tiny"]}))


def test_an_ensemble_of_continuous_planners_is_refused():
    cont = {"task": "GraphWorld", "data": "data/cont.pth", "folder": "continuous", "has_obstacle": True}
    with pytest.raises(ManifestError, match="continuous-action data set"):
        parse(manifest(ensemble={**cont, "members": ["VIN_tiny"]}))


def test_an_ensemble_cannot_be_a_member():
    data = manifest()
    data["models"].append({**data["models"][2], "name": "Twice", "members": ["Ensemble_tiny"]})
    with pytest.raises(ManifestError, match="Ensemble_tiny is itself an Ensemble; list its members"):
        parse(data)


def test_members_are_refused_on_an_entry_that_is_trained():
    data = manifest()
    data["models"][0]["members"] = ["DE-VIN_tiny"]
    with pytest.raises(ManifestError, match=r"VIN_tiny\): field 'members': only an Ensemble entry lists"):
        parse(data)


def test_ensembles_are_trained_after_every_other_entry():
    data = manifest()
    data["models"].insert(0, data["models"].pop())  # listed first
    entries = parse(data).models
    assert [s.name for s in training_order(entries)] == ["VIN_tiny", "DE-VIN_tiny", "Ensemble_tiny"]
