"""What `train` may put into a release (DESIGN section 10): targets, finite weights, one switch of the three
files, recorded overrides, one lock per release model, writable roots, bounded threads, JSON output."""

import fcntl
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from diffplan.errors import TrainingError
from diffplan.release.checkpoint import model_from_record, read_release_checkpoint, save_release_checkpoint
from diffplan.release.checks import config as config_check
from diffplan.release.layout import ReleasePaths
from diffplan.release.manifest import load_manifest
from diffplan.release.results import FAIL
from diffplan.training.locks import release_lock_path
from diffplan.training.module import PlannerModule
from diffplan.training.release_files import is_up_to_date
from diffplan.training.run import TrainOptions, train_model
from diffplan_cli.app import app
from tests.training.conftest import grid_entry, tiny_manifest

REPOSITORY = Path(__file__).resolve().parents[2]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train_into(tmp_path, manifest, *options):
    return cli(
        "train", "--manifest", manifest, "--run-root", tmp_path / "runs",
        "--release-root", tmp_path / "release", "--threads", "1", *options,
    )  # fmt: skip


def release_of(tmp_path, name="VIN_tiny") -> ReleasePaths:
    return ReleasePaths.named(name, "grid", tmp_path / "release")


def test_a_model_below_its_target_goes_to_the_run_folder_not_the_release(tmp_path, tiny_data):
    entry = grid_entry("VIN_tiny", "VIN", tiny_data)
    assert train_into(tmp_path, tiny_manifest(tmp_path, tiny_data, [entry])).exit_code == 0
    released = release_of(tmp_path)
    stamp = released.checkpoint.read_bytes()

    unreachable = tiny_manifest(tmp_path, tiny_data, [{**entry, "target": {"minimum": 0.999}}])
    below = train_into(tmp_path, unreachable, "--force")
    assert below.exit_code == 1 and "below target" in below.output
    assert "--release-failing" in below.output
    assert released.checkpoint.read_bytes() == stamp  # the release keeps its model
    candidate = ReleasePaths.named("VIN_tiny", "grid", tmp_path / "runs" / "VIN_tiny" / "candidate")
    assert candidate.exist() and json.loads(candidate.info.read_text())["target"]["passed"] is False

    forced = train_into(tmp_path, unreachable, "--force", "--release-failing")
    assert forced.exit_code == 0, forced.output  # asked for: written, and marked as failing
    assert json.loads(released.info.read_text())["target"]["passed"] is False


def test_a_learning_rate_that_blows_the_weights_up_never_reaches_the_release(tmp_path, tiny_data):
    # One step with lr 1e38: its loss is finite, the weights after it are not (the manifest now refuses
    # lr: .inf, which did this before).
    manifest = tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data, lr=1e38)])
    result = train_into(tmp_path, manifest, "--max-epochs", "1", "--limit-maps", "8")
    assert result.exit_code == 2 and "weights became non-finite" in result.output
    assert not release_of(tmp_path).checkpoint.exists()
    assert not (tmp_path / "runs" / "VIN_tiny" / "best.ckpt").exists()


def test_a_step_that_breaks_the_weights_keeps_the_last_good_checkpoints(tmp_path, tiny_data, monkeypatch):
    manifest = load_manifest(
        tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data, epochs=3)])
    )

    def poisoned(self):
        if self.global_step == 5:  # the last of the 3 steps of epoch 2: its loss is finite
            next(self.model.parameters()).grad.fill_(float("nan"))

    monkeypatch.setattr(PlannerModule, "on_after_backward", poisoned)
    options = TrainOptions(run_root=tmp_path / "runs", release_root=tmp_path / "release", threads=1)
    with pytest.raises(TrainingError, match="weights became non-finite"):
        train_model(manifest.model("VIN_tiny"), manifest, options)
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(tmp_path / "runs" / "VIN_tiny" / name, weights_only=False)
        assert checkpoint["epoch"] == 0
        assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert not release_of(tmp_path).checkpoint.exists()


def test_a_release_cut_off_after_its_new_checkpoint_is_not_up_to_date(tmp_path, tiny_data):
    manifest = tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data)])
    assert train_into(tmp_path, manifest).exit_code == 0
    paths = release_of(tmp_path)
    spec = load_manifest(manifest).model("VIN_tiny")
    assert is_up_to_date(spec, tmp_path / "release")
    # As a kill -9 right after the new checkpoint's rename leaves it: new weights, the old metadata.
    record = read_release_checkpoint(paths.checkpoint)
    model = model_from_record(record)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    paths.files_manifest.unlink(missing_ok=True)
    save_release_checkpoint(
        paths.checkpoint, model, name="VIN_tiny", algorithm="VIN",
        model_config=record["model_config"], extra=record["extra"],
    )  # fmt: skip
    assert not is_up_to_date(spec, tmp_path / "release")
    again = train_into(tmp_path, manifest)
    assert "skipped" not in again.output


def test_a_run_with_overrides_records_them_and_never_passes_for_the_plain_entry(tmp_path, tiny_data):
    path = tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data, epochs=2)])
    smoke = train_into(tmp_path, path, "--max-epochs", "1", "--limit-maps", "8")
    assert smoke.exit_code == 0, smoke.output
    paths = release_of(tmp_path)
    overrides = {"max_epochs": 1, "limit_maps": 8}
    assert yaml.safe_load(paths.config.read_text())["overrides"] == overrides
    info = json.loads(paths.info.read_text())
    assert (
        info["training_run"]["overrides"] == overrides and info["training_config"]["overrides"] == overrides
    )
    manifest = load_manifest(path)
    spec = manifest.model("VIN_tiny")
    assert not is_up_to_date(spec, tmp_path / "release")
    assert "skipped" not in train_into(tmp_path, path).output
    verdict = config_check(spec, manifest, paths)
    assert verdict.status == FAIL and "overrides" in verdict.message


def test_the_committed_release_is_up_to_date_for_its_plain_entries():
    manifest = load_manifest(REPOSITORY / "manifests" / "release_v1.yaml")
    release = REPOSITORY / "pretrained_models"
    if not ReleasePaths.of(manifest.models[0], release).checkpoint.is_file():
        pytest.skip("no committed release in this checkout")
    assert all(is_up_to_date(spec, release) for spec in manifest.models)


def test_one_lock_per_release_model_whatever_the_run_folder(tmp_path, tiny_data):
    manifest = load_manifest(tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data)]))
    lock = release_lock_path(tmp_path / "release" / "grid", "VIN_tiny")
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:  # another run of VIN_tiny, with its own run folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        options = TrainOptions(run_root=tmp_path / "other_runs", release_root=tmp_path / "release")
        with pytest.raises(TrainingError, match="already being trained"):
            train_model(manifest.model("VIN_tiny"), manifest, options)
    assert not (tmp_path / "other_runs" / "VIN_tiny" / "best.ckpt").exists()


def test_a_refused_run_leaves_the_holders_pid_in_the_lock_file(tmp_path, tiny_data):
    manifest = load_manifest(tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data)]))
    run_dir = tmp_path / "runs" / "VIN_tiny"
    run_dir.mkdir(parents=True)
    with open(run_dir / ".lock", "w") as held:
        held.write("12345")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        options = TrainOptions(run_root=tmp_path / "runs", release_root=tmp_path / "release")
        with pytest.raises(TrainingError, match=r"pid 12345"):
            train_model(manifest.model("VIN_tiny"), manifest, options)
    assert (run_dir / ".lock").read_text() == "12345"


def test_unwritable_roots_and_bad_options_are_refused_before_any_training(tmp_path, tiny_data):
    manifest = tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data)])
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for release_root, run_root in ((blocker / "sub", tmp_path / "runs"), (tmp_path / "release", blocker)):
        result = cli("train", "--manifest", manifest, "--release-root", release_root, "--run-root", run_root)
        assert result.exit_code == 2 and "not a writable folder" in result.output, result.output
    assert not (tmp_path / "runs" / "VIN_tiny").exists()

    threads = cli("train", "--manifest", manifest, "--threads", "100000", "--run-root", tmp_path / "runs")
    assert threads.exit_code == 2 and "--threads" in threads.output
    assert len(threads.output.strip().splitlines()) == 1
    json_out = cli("train", "--manifest", manifest, "--json-out", tmp_path / "absent" / "r.json")
    assert json_out.exit_code == 2 and "--json-out" in json_out.output
    assert not (tmp_path / "runs" / "VIN_tiny").exists()


def test_json_prints_the_results_and_json_out_writes_them(tmp_path, tiny_data):
    manifest = tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data)])
    result = train_into(tmp_path, manifest, "--json", "--json-out", tmp_path / "results.json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((tmp_path / "results.json").read_text())
    (model,) = printed
    assert model["name"] == "VIN_tiny" and model["status"] == "trained" and model["passed"] is True
    assert 0.0 <= model["test"]["accuracy"] <= 1.0 and model["world_size"] == 1
