"""An Ensemble entry end to end on the tiny release: `train` assembles it from its members' release
checkpoints (no fit), scores and publishes it; `validate`, `inspect` and `evaluate` take it like any
model; a changed member makes it out of date; a missing member is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from diffplan.envs import load_split
from diffplan.errors import TrainingError
from diffplan.release.checkpoint import load_model, sha256_file
from diffplan.release.manifest import load_manifest
from diffplan.release.results import FAIL, PASS, SKIP
from diffplan.release.validation import validate_models
from diffplan.scoring import evaluate, make_batch
from diffplan.training.release_files import is_up_to_date, up_to_date_problems
from diffplan.training.run import TrainOptions, train_model
from diffplan_cli.app import app

runner = CliRunner()
ENSEMBLE = {
    "name": "Ensemble_tiny",
    "algorithm": "Ensemble",
    "task": "GridWorld",
    "data": "data/tiny_grid.npz",
    "folder": "grid",
    "members": ["VIN_tiny", "SymVIN_tiny"],
    "notes": "the two tiny grid planners, averaged",
}


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def ensemble_file(release, suffix: str = ".ckpt") -> Path:
    if suffix == "_config.yaml":
        return release.release_root / "grid" / "configs" / f"Ensemble_tiny{suffix}"
    return release.release_root / "grid" / f"Ensemble_tiny{suffix}"


def train(release, *args):
    return cli("train", "--manifest", release.manifest, "--only", "Ensemble_tiny", "--threads", 1, *args)


@pytest.fixture
def assembled(release):
    release.add_entries(ENSEMBLE)
    result = train(release, "--json")
    assert result.exit_code == 0, result.output
    return release, json.loads(result.stdout)


def test_an_ensemble_is_assembled_scored_and_published_like_a_trained_model(assembled):
    release, report = assembled
    (row,) = report
    assert row["status"] == "trained" and row["epochs_run"] == 0 and row["seconds"] == 0.0
    info = json.loads(ensemble_file(release, "_info.json").read_text())
    members = info["ensemble"]["members"]
    assert [m["name"] for m in members] == ["VIN_tiny", "SymVIN_tiny"]
    for member in members:
        assert member["checkpoint_sha256"] == sha256_file(release.file(member["name"]))
    assert info["model_stats"]["training_time_hours"] == 0.0 and info["training_run"]["epochs_run"] == 0
    assert info["model_stats"]["checkpoint_sha256"] == sha256_file(ensemble_file(release))
    assert info["ensemble"]["best_member"] in ("VIN_tiny", "SymVIN_tiny")
    assert set(info["ensemble"]["beats_best_member"]) == {"validation", "test"}
    config = yaml.safe_load(ensemble_file(release, "_config.yaml").read_text())
    assert config["members"] == ["VIN_tiny", "SymVIN_tiny"] and "epochs" not in config
    assert config["model"]["k"] == 6  # VIN_tiny's k outranks SymVIN_tiny's 4
    # Its scores are the loaded model's on the test split, as for any release model.
    model = load_model(ensemble_file(release))
    test = load_split(Path("data/tiny_grid.npz"), "test")
    assert info["performance"]["test_accuracy"] == pytest.approx(evaluate(model, test)["accuracy"])
    members_alone = [load_model(release.file(name)) for name in ("VIN_tiny", "SymVIN_tiny")]
    assert info["model_stats"]["total_parameters"] == sum(
        p.numel() for m in members_alone for p in m.parameters()
    )
    # Each member plans bit for bit as its own release file does (at the ensemble's budget, k = 6).
    batch = make_batch(test, torch.arange(4))
    with torch.no_grad():
        for index, alone in enumerate(members_alone):
            alone.k = 6
            inside = model.members[index](batch["maze"], batch["goal"])
            expected = alone(batch["maze"], batch["goal"])
            assert torch.equal(inside.logits, expected.logits) and torch.equal(inside.values, expected.values)
    again = train(release)
    assert again.exit_code == 0 and "skipped" in again.output


def test_validate_passes_every_check_that_applies_to_an_ensemble(assembled):
    release, _ = assembled
    manifest = load_manifest(release.manifest)
    (result,) = validate_models(manifest, ["Ensemble_tiny"], release_root=release.release_root).models
    statuses = {check.name: check.status for check in result.checks}
    assert FAIL not in statuses.values(), [c for c in result.checks if c.status == FAIL]
    assert statuses["equivariance"] == SKIP  # not a symmetric planner
    assert all(statuses[name] == PASS for name in ("safe_load", "thread_count", "target", "quick_start"))
    assert result.passed
    shown = cli("inspect", "Ensemble_tiny", "--manifest", release.manifest)
    assert shown.exit_code == 0, shown.output
    for expected in ("members", "VIN_tiny", "SymVIN_tiny", "members.1 (SymVIN_tiny)", "k=6 for every member"):
        assert expected in shown.output


@pytest.mark.parametrize("rule, steps", [("trained", 6), ("side", 10), ("bfs", None), ("9", 9)])
def test_evaluate_sets_the_ensembles_budget_by_every_rule(assembled, tmp_path, rule, steps):
    release, _ = assembled
    result = cli(
        "evaluate", "Ensemble_tiny", "--manifest", release.manifest, "--data", "data/tiny_grid.npz",
        "--k", rule, "--limit", 4, "--output", tmp_path / "out", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["rows"]
    assert row["budget"]["knob"] == "k" and row["budget"]["trained"] == 6
    assert row["budget"]["rule"] == ("set" if rule == "9" else rule)
    if steps is not None:
        assert row["budget"]["steps"] == steps
    else:
        assert row["budget"]["steps"] >= 6


def test_a_changed_member_makes_the_ensemble_out_of_date(assembled):
    release, _ = assembled
    manifest = load_manifest(release.manifest)
    member, ensemble = manifest.model("VIN_tiny"), manifest.model("Ensemble_tiny")
    assert is_up_to_date(ensemble, release.release_root)
    release.retrain_vin_tiny()
    assert is_up_to_date(member, release.release_root)
    (problem,) = up_to_date_problems(ensemble, release.release_root)
    assert "member VIN_tiny's checkpoint" in problem and "changed since it was assembled" in problem
    again = train(release)
    assert again.exit_code == 0 and "skipped" not in again.output
    info = json.loads(ensemble_file(release, "_info.json").read_text())
    assert info["ensemble"]["members"][0]["checkpoint_sha256"] == sha256_file(release.file("VIN_tiny"))


def test_a_run_with_limit_maps_records_it_and_is_not_the_release(assembled):
    release, _ = assembled
    smoke = train(release, "--limit-maps", 4, "--force")
    assert smoke.exit_code == 0, smoke.output
    info = json.loads(ensemble_file(release, "_info.json").read_text())
    assert info["training_config"]["overrides"] == {"limit_maps": 4} and info["performance"]["test_maps"] == 4
    again = train(release)
    assert again.exit_code == 0 and "skipped" not in again.output


def test_a_missing_member_is_a_one_line_error_naming_it_and_the_command_that_trains_it(release):
    untrained = {
        "name": "VIN_untrained",
        "algorithm": "VIN",
        "task": "GridWorld",
        "data": "data/tiny_grid.npz",
        "folder": "grid",
        "model": {"k": 4, "l_h": 4, "l_q": 4},
    }
    release.add_entries(untrained, {**ENSEMBLE, "members": ["VIN_tiny", "VIN_untrained"]})
    result = train(release)
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "member VIN_untrained has no release checkpoint" in line
    assert f"`diffplan train --manifest {release.manifest} --only VIN_untrained`" in result.output
    assert not ensemble_file(release).exists()
    manifest = load_manifest(release.manifest)
    with pytest.raises(TrainingError, match="member VIN_untrained has no release checkpoint"):
        train_model(manifest.model("Ensemble_tiny"), manifest, TrainOptions())
