"""`diffplan train` end to end on a tiny manifest: release files, reload, resume, NaN, locks, bad input."""

import csv
import fcntl
import json
import signal

import pytest
import torch
import yaml
from typer.testing import CliRunner

from diffplan.envs import load_split
from diffplan.errors import TrainingError
from diffplan.release.checkpoint import load_model
from diffplan.release.manifest import load_manifest
from diffplan.scoring.batching import make_batch
from diffplan.training.callbacks import EpochReportCallback
from diffplan.training.module import PlannerModule
from diffplan.training.run import TrainingInterrupted, TrainOptions, train_model
from diffplan_cli.app import app
from tests.training.conftest import GRID_MODELS, grid_entry, tiny_manifest

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def train_into(tmp_path, manifest, name, *options):
    """`diffplan train --only NAME` with run and release folders under ``tmp_path``."""
    return cli(
        "train", "--manifest", manifest, "--only", name,
        "--run-root", tmp_path / "runs", "--release-root", tmp_path / "release", *options,
    )  # fmt: skip


@pytest.mark.parametrize("algorithm", sorted(GRID_MODELS))
def test_train_writes_release_files_that_reload_to_the_same_outputs(tmp_path, tiny_data, algorithm):
    name = f"{algorithm}_tiny"
    manifest = tiny_manifest(tmp_path, tiny_data, [grid_entry(name, algorithm, tiny_data)])
    result = train_into(tmp_path, manifest, name)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "release" / "grid"
    info = json.loads((folder / f"{name}_info.json").read_text())
    config = yaml.safe_load((folder / "configs" / f"{name}_config.yaml").read_text())
    assert config["name"] == name and config["algorithm"] == algorithm
    assert 0.0 <= info["performance"]["test_accuracy"] <= 1.0
    assert info["training_run"]["epochs_run"] == 1 and info["training_run"]["best_epoch"] == 1
    assert info["model_stats"]["file_size_mb"] < 10

    released = load_model(folder / f"{name}.ckpt")
    trained = PlannerModule.load_from_checkpoint(
        tmp_path / "runs" / name / "best.ckpt", map_location="cpu"
    ).model
    trained.eval()
    batch = make_batch(load_split(tiny_data["grid"], "test"), range(4))
    with torch.no_grad():
        assert torch.allclose(
            released(batch["maze"], batch["goal"]).logits,
            trained(batch["maze"], batch["goal"]).logits,
            atol=1e-6,
        )
    # A second run with the same entry is skipped: the release files already match it.
    stamp = (folder / f"{name}.ckpt").stat().st_mtime_ns
    again = train_into(tmp_path, manifest, name)
    assert again.exit_code == 0 and "skipped" in again.output
    assert (folder / f"{name}.ckpt").stat().st_mtime_ns == stamp


def test_editing_notes_or_target_keeps_a_model_and_changing_the_recipe_retrains_it(tmp_path, tiny_data):
    entry = grid_entry("VIN_tiny", "VIN", tiny_data)
    manifest = tiny_manifest(tmp_path, tiny_data, [entry])
    assert train_into(tmp_path, manifest, "VIN_tiny").exit_code == 0
    checkpoint = tmp_path / "release" / "grid" / "VIN_tiny.ckpt"
    stamp = checkpoint.stat().st_mtime_ns

    manifest = tiny_manifest(
        tmp_path, tiny_data, [{**entry, "notes": "new words", "target": {"minimum": 0.01}}]
    )
    again = train_into(tmp_path, manifest, "VIN_tiny")
    assert again.exit_code == 0 and "skipped" in again.output
    assert checkpoint.stat().st_mtime_ns == stamp

    manifest = tiny_manifest(tmp_path, tiny_data, [{**entry, "lr": 0.002}])
    refused = train_into(tmp_path, manifest, "VIN_tiny")  # the earlier run is kept until asked
    assert refused.exit_code == 2 and "--force" in refused.output
    assert checkpoint.stat().st_mtime_ns == stamp
    retrained = train_into(tmp_path, manifest, "VIN_tiny", "--force")
    assert retrained.exit_code == 0 and "skipped" not in retrained.output, retrained.output
    assert checkpoint.stat().st_mtime_ns != stamp


def test_an_interrupted_run_resumes_from_its_last_finished_epoch(tmp_path, tiny_data):
    manifest = load_manifest(
        tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data, epochs=3)])
    )
    spec = manifest.model("VIN_tiny")
    options = TrainOptions(run_root=tmp_path / "runs", release_root=tmp_path / "release")

    first_run = []

    def interrupt_during_second_epoch(report):
        # Epoch reports come before the epoch's checkpoint is written: epoch 1 is saved, epoch 2 is lost.
        first_run.append(report)
        if report.epoch == 2:
            raise KeyboardInterrupt

    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(TrainingInterrupted, match="--resume"):
            train_model(spec, manifest, options, interrupt_during_second_epoch)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT while it shuts down
    assert (tmp_path / "runs" / "VIN_tiny" / "last.ckpt").is_file()
    assert not (tmp_path / "release" / "grid" / "VIN_tiny.ckpt").exists()

    with pytest.raises(TrainingError, match="--resume"):
        train_model(spec, manifest, options)  # a fresh start would discard the interrupted run

    reports = []
    options.resume = True
    result = train_model(spec, manifest, options, reports.append)
    assert [report.epoch for report in reports] == [2, 3]
    assert result.epochs_run == 3
    # The best so far includes epoch 1, trained before the interruption.
    assert all(r.best_val_accuracy >= first_run[0].val_accuracy for r in reports)
    # metrics.csv keeps the history before the resume, without the rows of the lost epoch.
    with open(tmp_path / "runs" / "VIN_tiny" / "logs" / "metrics.csv") as handle:
        validated = [row["epoch"] for row in csv.DictReader(handle) if row.get("val/accuracy")]
    assert validated == ["0", "1", "2"]


def test_the_best_accuracy_reported_after_a_resume_counts_the_epochs_before_it():
    class Checkpoint:
        best_model_score, mode = torch.tensor(0.9), "max"

    class Trainer:
        checkpoint_callback = Checkpoint()
        callback_metrics = {"val/accuracy": torch.tensor(0.5)}
        current_epoch, max_epochs = 4, 10
        is_global_zero = True

    reports = []
    callback = EpochReportCallback("VIN_tiny", reports.append)
    callback.on_train_start(Trainer(), None)
    callback.on_train_epoch_end(Trainer(), None)
    assert reports[0].val_accuracy == 0.5 and reports[0].best_val_accuracy == pytest.approx(0.9)
    assert reports[0].epoch == 5


def test_a_nan_loss_stops_the_run_with_a_clear_message(tmp_path, tiny_data, monkeypatch):
    manifest = tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data)])
    monkeypatch.setattr(
        "diffplan.training.module.optimal_set_nll", lambda logits, optimal: logits.sum() * float("nan")
    )
    result = cli(
        "train", "--manifest", manifest, "--run-root", tmp_path / "runs", "--release-root", tmp_path / "rel"
    )
    assert result.exit_code == 2
    assert "training loss became nan" in result.output
    assert not (tmp_path / "rel" / "grid" / "VIN_tiny.ckpt").exists()


def test_a_second_training_of_the_same_model_is_refused(tmp_path, tiny_data):
    manifest = load_manifest(tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data)]))
    run_dir = tmp_path / "runs" / "VIN_tiny"
    run_dir.mkdir(parents=True)
    with open(run_dir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(TrainingError, match="already being trained"):
            train_model(manifest.model("VIN_tiny"), manifest, TrainOptions(run_root=tmp_path / "runs"))


def test_bad_manifests_and_unknown_names_exit_2(tmp_path, tiny_data):
    manifest = tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data)])
    unknown = cli("train", "--manifest", manifest, "--only", "VIN_tyni")
    assert unknown.exit_code == 2 and "no model named 'VIN_tyni'" in unknown.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest.read_text().replace("batch_size: 8", "batch_size: -8"))
    refused = cli("train", "--manifest", bad)
    assert refused.exit_code == 2 and "field 'batch_size'" in refused.output
    missing = cli("train", "--manifest", tmp_path / "absent.yaml")
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_jobs_train_several_models_at_once_and_wandb_logs_offline(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    entries = [grid_entry("VIN_a", "VIN", tiny_data), grid_entry("VIN_b", "VIN", tiny_data, seed=8)]
    manifest = tiny_manifest(tmp_path, tiny_data, entries)
    result = cli(
        "train",
        "--manifest",
        manifest,
        "--jobs",
        "2",
        "--wandb",
        "--threads",
        "1",
        "--run-root",
        tmp_path / "runs",
        "--release-root",
        tmp_path / "release",
    )
    assert result.exit_code == 0, result.output
    for name in ("VIN_a", "VIN_b"):
        assert (tmp_path / "release" / "grid" / f"{name}.ckpt").is_file()
        assert list((tmp_path / "runs" / name / "wandb").glob("offline-run-*")), "no offline W&B run"
