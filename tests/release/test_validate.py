"""`diffplan validate`: every check passes on a good release and each kind of damage fails its own check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import diffplan
from diffplan.envs import generate_dataset, load_split
from diffplan.errors import BadInputError
from diffplan.planning import PlanSettings, plan_maze
from diffplan.release.checkpoint import load_model, sha256_file
from diffplan.release.equivariance import equivariance_errors, transform_logits
from diffplan.release.manifest import load_manifest
from diffplan.release.validation import CHECKS, validate_models
from diffplan.scoring.batching import make_batch
from diffplan_cli.app import app

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def validate_json(release, *args):
    """Run `diffplan validate` and return (exit code, output, the --json-out report)."""
    out = release.root / "report.json"
    result = cli("validate", *args, "--manifest", release.manifest, "--json-out", out)
    report = json.loads(out.read_text()) if out.is_file() else None
    return result.exit_code, result.output, report


def checks_of(report, name):
    return next(m for m in report["models"] if m["name"] == name)["checks"]


def failed(report, name):
    return sorted(k for k, v in checks_of(report, name).items() if v["status"] == "fail")


def test_a_good_release_passes_every_check_and_stores_its_results(release):
    code, output, report = validate_json(release, "--all")
    assert code == 0, output
    assert report["passed"] and len(report["models"]) == 4
    for model in report["models"]:
        assert set(model["checks"]) == set(CHECKS)
        assert model["passed"] and model["latency_ms"] > 0 and model["peak_memory_mb"] > 0
        assert model["scores"]["maps"] == 16
    symvin = checks_of(report, "SymVIN_tiny")
    assert symvin["equivariance"]["status"] == "pass"
    assert "rot90" in symvin["equivariance"]["message"] and "flip_ud" in symvin["equivariance"]["message"]
    assert checks_of(report, "VIN_tiny")["equivariance"]["status"] == "skip"
    results = release.release_root / "evaluation_results"
    assert {p.name for p in results.iterdir()} == {f"{m['name']}.json" for m in report["models"]} | {
        "summary.json",
        "timings.json",
    }
    assert report["results_in_release"] and Path(report["results_folder"]).resolve() == results.resolve()
    summary = json.loads((results / "summary.json").read_text())
    assert summary["passed"] and set(summary["models"]) == {m["name"] for m in report["models"]}
    assert "all checks passed" in output
    assert report["threads"] == 1  # the default: steady single-maze latency on a shared machine


def test_validation_runs_with_the_threads_asked_for_and_restores_torch_afterwards(release):
    before = torch.get_num_threads()
    manifest = load_manifest(release.manifest)
    report = validate_models(manifest, ["VIN_tiny"], release_root=release.release_root, threads=2)
    assert report.threads == 2 and report.passed
    assert torch.get_num_threads() == before
    code, output, _ = validate_json(release, "VIN_tiny", "--threads", "0")
    assert code == 2 and "--threads" in output


def test_several_jobs_give_the_same_verdicts_in_manifest_order(release):
    path = release.file("SymVIN_tiny")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    manifest = load_manifest(release.manifest)
    one = validate_models(manifest, release_root=release.release_root)
    code, output, two = validate_json(release, "--all", "--jobs", "2")
    assert code == 1 and two["jobs"] == 2 and one.jobs == 1
    assert [m["name"] for m in two["models"]] == [m.name for m in one.models]
    for sequential, parallel in zip(one.models, two["models"], strict=True):
        verdicts = {c.name: c.status for c in sequential.checks}
        assert {name: c["status"] for name, c in parallel["checks"].items()} == verdicts
        assert parallel["scores"] == pytest.approx(sequential.scores)
    assert failed(two, "SymVIN_tiny") == ["checksum"]
    assert "2 at a time" in output


def test_validate_runs_one_job_per_core_unless_told(release, monkeypatch):
    import diffplan_cli.validate as validate_cli

    asked = []
    real = validate_cli.validate_models

    def spy(*args, **kwargs):
        asked.append(kwargs["jobs"])
        return real(*args, **{**kwargs, "jobs": 1})

    monkeypatch.setattr(validate_cli, "validate_models", spy)
    monkeypatch.setattr(validate_cli, "available_cores", lambda: 3)
    assert validate_json(release, "VIN_tiny")[0] == 0
    assert validate_json(release, "VIN_tiny", "--jobs", "1")[0] == 0
    assert asked == [3, 1]
    code, output, _ = validate_json(release, "VIN_tiny", "--jobs", "0")
    assert code == 2 and "--jobs" in output
    with pytest.raises(BadInputError, match="jobs"):
        validate_models(load_manifest(release.manifest), release_root=release.release_root, jobs=0)


def test_a_model_that_plans_differently_on_two_threads_fails_the_thread_check(release, monkeypatch):
    import diffplan.release.checks as validation

    def load_thread_dependent(path, **options):
        model = load_model(path, **options)
        if torch.get_num_threads() == 2:  # as a thread-dependent filter basis did
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(torch.randn_like(parameter))
        return model

    def thread_check():
        report = validate_models(manifest, ["SymVIN_tiny"], release_root=release.release_root)
        return report.models[0].check("thread_count")

    manifest = load_manifest(release.manifest)
    with monkeypatch.context() as patched:
        patched.setattr(validation, "load_model", load_thread_dependent)
        check = thread_check()
    assert check.status == "fail" and "2 threads" in check.message
    assert thread_check().status == "pass"


def test_a_flipped_byte_in_a_checkpoint_fails_the_checksum(release):
    path = release.file("VIN_tiny")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code, output, report = validate_json(release, "VIN_tiny")
    assert code == 1
    assert "checksum" in failed(report, "VIN_tiny")
    message = checks_of(report, "VIN_tiny")["checksum"]["message"]
    assert "sha256" in message and "modified or corrupted" in message
    assert "checksum" in output


def test_a_deleted_metadata_file_fails_the_release_files_check(release):
    release.file("VIN_tiny", "_info.json").unlink()
    code, output, report = validate_json(release, "VIN_tiny")
    assert code == 1
    assert failed(report, "VIN_tiny") == ["release_files"]
    assert "VIN_tiny_info.json" in checks_of(report, "VIN_tiny")["release_files"]["message"]
    assert checks_of(report, "VIN_tiny")["checksum"]["status"] == "skip"  # nothing to compare against


def test_a_hand_edited_accuracy_in_the_metadata_fails_the_recorded_scores(release):
    path = release.file("VIN_tiny", "_info.json")
    info = json.loads(path.read_text())
    info["performance"]["test_accuracy"] = 0.99
    path.write_text(json.dumps(info))
    code, output, report = validate_json(release, "VIN_tiny")
    assert code == 1
    assert failed(report, "VIN_tiny") == ["recorded_scores"]
    message = checks_of(report, "VIN_tiny")["recorded_scores"]["message"]
    assert "the file and the model disagree" in message and "99.00%" in message


class NotAWeight:
    """A pickled class instance: torch.load(weights_only=True) refuses it."""

    def __init__(self):
        self.payload = "code could run here"


def test_a_checkpoint_holding_a_pickled_object_is_refused_by_the_safe_load(release):
    path = release.file("VIN_tiny")
    record = torch.load(path, weights_only=True)
    record["extra"]["hook"] = NotAWeight()
    torch.save(record, path)
    info_path = release.file("VIN_tiny", "_info.json")
    info = json.loads(info_path.read_text())
    info["model_stats"]["checkpoint_sha256"] = sha256_file(path)  # so that only the safe load can catch it
    info_path.write_text(json.dumps(info))
    code, output, report = validate_json(release, "VIN_tiny")
    assert code == 1
    assert failed(report, "VIN_tiny") == ["safe_load"]
    assert "weights_only=True" in checks_of(report, "VIN_tiny")["safe_load"]["message"]
    assert checks_of(report, "VIN_tiny")["target"]["status"] == "skip"


def test_a_target_above_the_models_accuracy_fails_the_target_check(release):
    release.edit_manifest("MP-VIN_tiny", target={"minimum": 0.99})
    code, output, report = validate_json(release, "MP-VIN_tiny", "VIN_tiny")
    assert code == 1
    assert failed(report, "MP-VIN_tiny") == ["target"]
    assert failed(report, "VIN_tiny") == []
    assert "is not above the target 99.00%" in checks_of(report, "MP-VIN_tiny")["target"]["message"]
    assert "MP-VIN_tiny · target" in output


def test_a_changed_training_recipe_fails_the_config_check(release):
    release.edit_manifest("VIN_tiny", lr=0.5)
    code, _, report = validate_json(release, "VIN_tiny")
    assert code == 1 and failed(report, "VIN_tiny") == ["config"]
    assert "lr: release 0.001, manifest 0.5" in checks_of(report, "VIN_tiny")["config"]["message"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("VIN_tinny",), "no model named 'VIN_tinny'"),
        ((), "pass --all"),
        (("VIN_tiny", "--all"), "not both"),
        (("--all", "--manifest", "missing.yaml"), "manifest missing.yaml does not exist"),
        (("--all", "--data", "data/none.npz"), "data set data/none.npz does not exist"),
        (("--all", "--data", "data/tiny_grid.npz"), "is a grid data set"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(release, args, message):
    if "--manifest" not in args:
        args = (*args, "--manifest", release.manifest)
    result = cli("validate", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_missing_data_set_names_the_command_that_makes_it(release):
    (release.root / "data" / "tiny_graph.pth").unlink()
    result = cli("validate", "--all", "--manifest", release.manifest)
    assert result.exit_code == 2
    assert f"diffplan data generate --manifest {release.manifest}" in result.output


def test_other_data_skips_the_fingerprint_and_recorded_score_checks_and_says_so(release):
    generate_dataset(
        "grid",
        release.root / "data" / "other.npz",
        maze_size=9,
        train_size=4,
        valid_size=4,
        test_size=8,
        seed=11,
    )
    code, output, report = validate_json(release, "VIN_tiny", "SymVIN_tiny", "--data", "data/other.npz")
    assert code == 0, output
    checks = checks_of(report, "VIN_tiny")
    assert (
        checks["data_fingerprint"]["status"] == "skip"
        and "--data data/other.npz" in checks["data_fingerprint"]["message"]
    )
    assert checks["recorded_scores"]["status"] == "skip"
    assert report["models"][0]["scores"]["maps"] == 8
    assert "fingerprint and recorded-score checks skipped" in output


def test_a_limit_scores_fewer_maps_and_does_not_compare_them_with_the_metadata(release):
    manifest = load_manifest(release.manifest)
    report = validate_models(manifest, ["VIN_tiny"], release_root=release.release_root, limit=4)
    model = report.models[0]
    assert model.passed and model.scores["maps"] == 4
    recorded = model.check("recorded_scores")
    assert (
        recorded.status == "skip" and "scored 4 maps, the metadata's scores are over 16" in recorded.message
    )


# --- the equivariance check itself ------------------------------------------------------------


def test_transforming_logits_moves_actions_the_way_vectors_rotate():
    deltas = torch.tensor([[-1.0, 0.0], [0.0, -1.0], [1.0, 0.0], [0.0, 1.0]])  # N, W, S, E as (dy, dx)
    for name in ("rot90", "rot180", "rot270", "flip_lr", "flip_ud"):
        for action in range(4):
            one_hot = torch.zeros(1, 4, 1, 1)
            one_hot[0, action] = 1.0
            moved_action = int(transform_logits(one_hot, name)[0, :, 0, 0].argmax())
            vector = deltas[action].view(1, 2, 1, 1)
            assert torch.equal(transform_logits(vector, name)[0, :, 0, 0], deltas[moved_action]), (
                name,
                action,
            )
    # rot90 counter-clockwise: N -> W (DESIGN section 3)
    assert int(transform_logits(torch.eye(4).view(4, 4, 1, 1)[:1], "rot90")[0, :, 0, 0].argmax()) == 1


def test_equivariance_errors_are_tiny_for_symvin_and_large_for_a_plain_vin(release):
    split = load_split(release.root / "data" / "tiny_grid.npz", "test")
    batch = make_batch(split, range(3))
    settings = PlanSettings("grid")
    sym = equivariance_errors(
        load_model(release.file("SymVIN_tiny")), batch["maze"], batch["goal"], settings, True
    )
    plain = equivariance_errors(
        load_model(release.file("VIN_tiny")), batch["maze"], batch["goal"], settings, True
    )
    assert max(e["policy"] for e in sym.values()) < 1e-4
    assert max(e["values"] for e in sym.values()) < 1e-4
    assert max(e["policy"] for e in plain.values()) > 1e-3


# --- plan_maze, the library face the checks use -------------------------------------------------


def test_plan_maze_accepts_single_mazes_batches_pairs_and_one_hot_maps(release):
    model = diffplan.load_model("VIN_tiny")  # by name, from ./pretrained_models
    split = load_split(release.root / "data" / "tiny_grid.npz", "test")
    maze, goal_map = split.maze[:3], split.goal[:3]
    goals = [divmod(int(g.argmax()), 7) for g in goal_map]
    single = plan_maze(model, maze[0].numpy(), goals[0])
    assert single.actions.shape == (7, 7) and single.actions.dtype == torch.long
    assert single.values.shape == (7, 7) and single.logits.shape == (4, 7, 7)
    from_map = plan_maze(model, maze[0], goal_map[0])
    batch = plan_maze(model, maze.tolist(), np.array(goals))
    assert batch.actions.shape == (3, 7, 7)
    assert torch.equal(from_map.actions, single.actions) and torch.equal(batch.actions[0], single.actions)
    with torch.no_grad():
        reference = model(maze, goal_map).logits.argmax(1)
    assert torch.equal(batch.actions, reference)
    path = single.path(goals[0])
    assert path == [goals[0]]


def test_plan_maze_on_a_graph_model_builds_the_data_sets_graph(release):
    split = load_split(release.root / "data" / "tiny_graph.pth", "test")
    model = load_model(release.file("MP-VIN_tiny"))
    goal = divmod(int(split.goal[0].argmax()), 7)
    result = plan_maze(model, split.maze[0], goal)
    batch = make_batch(split, [0])
    with torch.no_grad():
        reference = model(batch["x"], batch["edge_index"], batch["batch"]).logits.argmax(1)
    assert torch.equal(result.actions.flatten()[batch["node_cell"]], reference)
    continuous = plan_maze(load_model(release.file("MP-VIN_tiny_continuous")), split.maze[0], goal)
    assert continuous.logits.shape == (2, 7, 7) and continuous.actions.min() >= 0


@pytest.mark.parametrize(
    ("maze", "goal", "message"),
    [
        (np.ones((7, 7)), (9, 1), "outside"),
        (np.pad(np.ones((5, 5)), 1), (0, 0), "is a wall"),
        (np.full((7, 7), 2.0), (1, 1), "1 (free) or 0 (wall)"),
        (np.ones((7,)), (1, 1), "shape (H, W)"),
        (np.ones((7, 7)), np.ones((7, 7)), "one-hot"),
        (np.ones((7, 7)), (1.5, 2.0), "whole-number"),
        (np.ones((2, 7, 7)), (1, 1), "per maze"),
    ],
)
def test_plan_maze_refuses_bad_input_with_a_clear_message(release, maze, goal, message):
    with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_maze(load_model(release.file("VIN_tiny")), maze, goal)


def test_a_plan_results_path_follows_the_policy_and_stops_where_it_gets_stuck():
    from diffplan.planning import PlanResult

    maze = torch.ones(3, 4)
    goal = torch.zeros(3, 4)
    goal[0, 3] = 1.0
    actions = torch.full((3, 4), 3)  # everybody goes east ...
    actions[2, 3] = 0  # ... and up the last column to the goal
    actions[1, 3] = 0
    actions[2, 0] = 1  # west from the left border: a move off the map, stuck
    result = PlanResult(actions, torch.zeros(3, 4), torch.zeros(4, 3, 4), maze, goal)
    assert result.path((2, 1)) == [(2, 1), (2, 2), (2, 3), (1, 3), (0, 3)]
    assert result.path((2, 0)) == [(2, 0)]
    actions[0, 1], actions[0, 2] = 3, 1  # a two-cell cycle
    assert result.path((0, 1)) == [(0, 1), (0, 2)]
    with pytest.raises(BadInputError, match="not a free cell"):
        result.path((5, 5))


def test_peak_tensor_memory_counts_what_is_alive_at_once_and_not_the_inputs():
    from diffplan.release._memory import TensorMemory

    x = torch.zeros(1000)  # 4000 bytes, an input: not counted
    with TensorMemory() as tracker:
        a = x + 1  # 4000 bytes
        b = a * 2  # 4000 more, both alive
        del a
        c = b.view(10, 100) - 1  # a view is free, the subtraction allocates 4000: 8000 alive again
        del b, c
        d = torch.ones(250)  # 1000 bytes after everything else was freed
    assert tracker.peak == 8000 and tracker.live == 1000
    assert d.numel() == 250


def test_a_quick_start_that_builds_the_graph_differently_fails_its_check(release, monkeypatch):
    import diffplan.planning

    build = diffplan.planning.graph_batch_of

    def without_goal_feature(maze, goal, has_obstacle=True):
        batch = build(maze, goal, has_obstacle)
        batch["x"][:, 2] = 0.0  # forget which node is the goal
        return batch

    monkeypatch.setattr(diffplan.planning, "graph_batch_of", without_goal_feature)
    report = validate_models(
        load_manifest(release.manifest), ["MP-VIN_tiny"], release_root=release.release_root
    )
    quick_start = report.models[0].check("quick_start")
    assert quick_start.status == "fail" and "builds the planner's input differently" in quick_start.message


def test_the_symmetry_check_solves_implicit_planners_to_its_own_precision(tmp_path, monkeypatch):
    """The float64 copy of a deep-equilibrium planner is solved to FIXED_POINT_TOL, so the check measures
    the fixed point's symmetry, not where a loose solver stopped; the model itself is left as it was."""
    from diffplan.models import create_model
    from diffplan.release import equivariance

    torch.manual_seed(0)
    model = create_model("DE-SymVIN", l_h=2, l_q=2, tol=1e-2, max_iter=5).eval()
    path = tmp_path / "sym.npz"
    generate_dataset("grid", path, maze_size=7, train_size=2, valid_size=2, test_size=2, seed=1)
    split = load_split(path, "test")
    solved_with, real_plan = [], equivariance.plan_batch

    def recording_plan(planner, *args, **kwargs):
        solved_with.append((planner._deq["tol"], planner._deq["max_iter"]))
        return real_plan(planner, *args, **kwargs)

    monkeypatch.setattr(equivariance, "plan_batch", recording_plan)
    errors = equivariance_errors(
        model, split.maze[:2], split.goal[:2], PlanSettings("grid", True), True, torch.float64
    )
    assert max(e for transform in errors.values() for e in transform.values()) < 1e-4
    tight = (equivariance.FIXED_POINT_TOL, equivariance.FIXED_POINT_MAX_ITER)
    assert solved_with and all(settings == tight for settings in solved_with)
    assert (model._deq["tol"], model._deq["max_iter"]) == (1e-2, 5)
