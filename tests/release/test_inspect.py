"""`diffplan inspect`: metadata, parameters, file and curve of one model, and a drawn test maze."""

from __future__ import annotations

import json

import matplotlib.image
import pytest
import torch
from typer.testing import CliRunner

from diffplan.release.checkpoint import CHECKPOINT_FORMAT_VERSION
from diffplan.release.inspection import inspect_model, read_training_curve
from diffplan.release.plotting import DPI, FIGURE_INCHES
from diffplan.task import Task
from diffplan_cli.app import app

runner = CliRunner()
PIXELS = int(FIGURE_INCHES * DPI)


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_inspect_prints_metadata_parameters_file_and_training_curve(release):
    result = cli("inspect", "VIN_tiny", "--manifest", release.manifest)
    assert result.exit_code == 0, result.output
    info = json.loads(release.file("VIN_tiny", "_info.json").read_text())
    for expected in (
        "VIN_tiny",
        "Parameters",
        "total",
        "matches the metadata",
        "Resolved config",
        "Training curve",
        info["training_data"]["fingerprint"][:16],
    ):
        assert expected in result.output


def test_inspect_json_agrees_with_the_metadata(release):
    result = cli("inspect", "SymVIN_tiny", "--manifest", release.manifest, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    info = json.loads(release.file("SymVIN_tiny", "_info.json").read_text())
    assert report["parameters"]["total"] == info["model_stats"]["total_parameters"]
    assert sum(report["parameters"]["per_module"].values()) == report["parameters"]["total"]
    assert report["file"]["sha256"] == info["model_stats"]["checkpoint_sha256"]
    assert report["file"]["sha256_matches_metadata"] is True
    assert report["file"]["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert report["data"]["fingerprint"] == info["training_data"]["fingerprint"]
    assert report["config"]["group"] == "d4"
    curve = report["training_curve"]
    assert curve["epochs"] == 1 and curve["best_epoch"] == info["training_run"]["best_epoch"]


def test_inspect_by_checkpoint_path_needs_no_manifest(release, tmp_path, monkeypatch):
    path = release.file("MP-VIN_tiny")
    monkeypatch.chdir(tmp_path)  # no manifests/release_v1.yaml here
    inspection = inspect_model(path)
    assert inspection.name == "MP-VIN_tiny" and inspection.task is Task.GRAPH
    assert inspection.sha256_matches_metadata and inspection.curve is None
    assert inspection.spec is None and str(inspection.data_path) == "data/tiny_graph.pth"


@pytest.mark.parametrize("name", ["VIN_tiny", "MP-VIN_tiny", "MP-VIN_tiny_continuous"])
def test_plot_draws_a_test_maze_as_a_png_of_the_stated_size(release, name):
    out = release.root / "plots" / f"{name}.png"
    result = cli("inspect", name, "--manifest", release.manifest, "--plot", out, "--index", 2)
    assert result.exit_code == 0, result.output
    assert "Drew test map 2" in result.output
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (PIXELS, PIXELS)
    assert image.std() > 0.05  # not a blank canvas


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Nope_tiny",), "no release model 'Nope_tiny'"),
        (("missing/model.ckpt",), "does not exist"),
        (("VIN_tiny", "--plot", "x.png", "--index", 99), "out of range"),
        (("VIN_tiny", "--plot", "x.png", "--data", "data/none.npz"), "does not exist"),
    ],
)
def test_inspect_bad_input_exits_2(release, args, message):
    result = cli("inspect", *args, "--manifest", release.manifest)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_model_listed_but_never_trained_says_how_to_train_it(release):
    release.file("VIN_tiny").unlink()
    result = cli("inspect", "VIN_tiny", "--manifest", release.manifest)
    assert result.exit_code == 2
    assert "diffplan train --only VIN_tiny" in result.output


def test_training_curve_summary_reads_lightning_csv_logs(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,train/loss,val/accuracy\n"
        "0,3,,0.50\n0,3,1.20,\n1,7,,0.70\n1,7,0.90,\n2,11,,0.65\n2,11,0.80,\n"
    )
    curve = read_training_curve(csv)
    assert curve.epochs == 3 and curve.best_epoch == 2 and curve.best_val_accuracy == pytest.approx(0.70)
    assert curve.final_train_loss == pytest.approx(0.80)
    assert read_training_curve(tmp_path / "absent.csv") is None


class Payload:
    """A pickled class instance: refused by torch.load(weights_only=True)."""


def test_inspection_never_unpickles(release):
    path = release.file("VIN_tiny")
    record = torch.load(path, weights_only=True)
    record["extra"]["hook"] = Payload()
    torch.save(record, path)
    result = cli("inspect", "VIN_tiny", "--manifest", release.manifest)
    assert result.exit_code == 2 and "weights_only=True" in result.output


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n", b"", bytes(range(256)) * 4])
def test_a_file_that_is_not_a_checkpoint_is_a_one_line_error(release, content):
    path = release.root / "not_a_model.ckpt"
    path.write_bytes(content)
    result = cli("inspect", path, "--manifest", release.manifest)
    assert result.exit_code == 2, result.output
    assert str(path.name) in result.output and "Traceback" not in result.output
