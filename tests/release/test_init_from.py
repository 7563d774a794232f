"""``init_from``: an entry trained from another entry's release weights. The manifest checks what it
names; training loads those weights strictly, records the starting checkpoint's sha256 in the metadata,
and a retrained starting point makes the model out of date."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from diffplan.errors import ManifestError
from diffplan.release.checkpoint import load_model, sha256_file
from diffplan.release.manifest import load_manifest, parse_manifest
from diffplan.release.readme import render_readme
from diffplan.training.release_files import is_up_to_date, up_to_date_problems
from diffplan.training.run import training_order
from diffplan_cli.app import app

runner = CliRunner()
# VIN_tiny's VI step solved to its fixed point: a DE-VIN with VIN_tiny's parameters.
DE_VIN = {
    "name": "DE-VIN_from_VIN",
    "algorithm": "DE-VIN",
    "task": "GridWorld",
    "data": "data/tiny_grid.npz",
    "folder": "grid",
    "init_from": "VIN_tiny",
    "epochs": 1,
    "optimizer": "SGD",
    "lr": 1.0e-12,  # one epoch that barely moves the weights: what is released is what was loaded
    "model": {"l_h": 8, "l_q": 6, "max_iter": 20},
}


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def train(release, name: str, *args):
    return cli(
        "train", "--manifest", release.manifest, "--only", name, "--threads", 1, "--release-failing", *args
    )


def grid_file(release, name: str, suffix: str = ".ckpt") -> Path:
    return release.release_root / "grid" / f"{name}{suffix}"


def error_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("Error:")]
    return line


def test_a_model_trained_from_another_entry_starts_from_its_weights_and_records_them(release):
    release.add_entries(DE_VIN)
    result = train(release, "DE-VIN_from_VIN")
    assert result.exit_code == 0, result.output
    start, trained = load_model(release.file("VIN_tiny")), load_model(grid_file(release, "DE-VIN_from_VIN"))
    for key, value in start.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[key], value, rtol=0, atol=1e-6)
    info = json.loads(grid_file(release, "DE-VIN_from_VIN", "_info.json").read_text())
    assert info["init_from"] == {
        "name": "VIN_tiny",
        "folder": "grid",
        "checkpoint_sha256": sha256_file(release.file("VIN_tiny")),
    }
    config = yaml.safe_load((release.release_root / "grid/configs/DE-VIN_from_VIN_config.yaml").read_text())
    assert config["init_from"] == "VIN_tiny"
    assert "skipped" in train(release, "DE-VIN_from_VIN").output
    manifest = load_manifest(release.manifest)
    readme = render_readme(manifest, {"DE-VIN_from_VIN": info}, "1.0")
    assert (
        f"starts from VIN_tiny's release weights (sha256 {info['init_from']['checkpoint_sha256'][:12]}"
        in readme
    )


def test_a_retrained_starting_point_makes_the_model_out_of_date(release):
    release.add_entries(DE_VIN)
    assert train(release, "DE-VIN_from_VIN").exit_code == 0
    manifest = load_manifest(release.manifest)
    spec = manifest.model("DE-VIN_from_VIN")
    assert is_up_to_date(spec, release.release_root)
    release.retrain_vin_tiny()
    (problem,) = up_to_date_problems(spec, release.release_root)
    assert "starting point VIN_tiny's checkpoint" in problem and "changed since" in problem
    again = train(release, "DE-VIN_from_VIN", "--force")
    assert again.exit_code == 0 and "skipped" not in again.output, again.output
    info = json.loads(grid_file(release, "DE-VIN_from_VIN", "_info.json").read_text())
    assert info["init_from"]["checkpoint_sha256"] == sha256_file(release.file("VIN_tiny"))


def test_an_untrained_or_incompatible_starting_point_is_a_one_line_error(release):
    untrained = {**DE_VIN, "name": "VIN_untrained", "algorithm": "VIN", "init_from": None, "model": {"k": 4}}
    release.add_entries(
        untrained,
        {**DE_VIN, "name": "From_untrained", "init_from": "VIN_untrained"},
        {**DE_VIN, "name": "From_SymVIN", "init_from": "SymVIN_tiny"},
    )
    result = train(release, "From_untrained")
    assert result.exit_code == 2
    line = error_line(result.output)
    assert "starting point VIN_untrained has no release checkpoint" in line
    assert "--only VIN_untrained" in result.output
    result = train(release, "From_SymVIN")
    assert result.exit_code == 2
    assert "cannot start from SymVIN_tiny's weights" in error_line(result.output)
    assert (
        not grid_file(release, "From_SymVIN").exists() and not grid_file(release, "From_untrained").exists()
    )


def manifest_with(*extra: dict) -> dict:
    grid = {"path": "data/g.npz", "kind": "grid", "maze_size": 7}
    entry = {"task": "GridWorld", "data": "data/g.npz", "folder": "grid", "target": {"minimum": 0.5}}
    return {
        "datasets": {"grid": grid, "other": {**grid, "path": "data/other.npz"}},
        "models": [
            {**entry, "name": "VIN_a", "algorithm": "VIN", "model": {"k": 6}},
            {**entry, "name": "VIN_other", "algorithm": "VIN", "data": "data/other.npz"},
            *[{**entry, **e} for e in extra],
        ],
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        ([{"name": "B", "algorithm": "DE-VIN", "init_from": "VIN_z"}], "'VIN_z' is not an entry"),
        ([{"name": "B", "algorithm": "DE-VIN", "init_from": "VIN_other"}], "trained on data/other.npz"),
        ([{"name": "B", "algorithm": "DE-VIN", "init_from": "B"}], "B -> B loops"),
        (
            [
                {"name": "B", "algorithm": "DE-VIN", "init_from": "C"},
                {"name": "C", "algorithm": "VIN", "init_from": "B"},
            ],
            "B -> C -> B loops",
        ),
        (
            [
                {"name": "E", "algorithm": "Ensemble", "members": ["VIN_a", "B"]},
                {"name": "B", "algorithm": "DE-VIN", "init_from": "E"},
            ],
            "E is an Ensemble entry",
        ),
        ([{"name": "E", "algorithm": "Ensemble", "members": ["VIN_a"], "init_from": "VIN_a"}], "assembled"),
    ],
)
def test_the_manifest_refuses_a_bad_init_from_with_a_one_line_error(extra, message):
    with pytest.raises(ManifestError, match=message) as raised:
        parse_manifest(copy.deepcopy(manifest_with(*extra)), Path("m.yaml"))
    assert "\n" not in str(raised.value) and "init_from" in str(raised.value)


def test_an_entry_trains_after_the_entry_it_starts_from():
    spec = parse_manifest(
        manifest_with(
            {"name": "B", "algorithm": "DE-VIN", "init_from": "C"}, {"name": "C", "algorithm": "VIN"}
        ),
        Path("m.yaml"),
    )
    assert [s.name for s in training_order(spec.models)] == ["VIN_a", "VIN_other", "C", "B"]
    assert "init_from" not in spec.model("VIN_a").resolved()  # older configs hold no such key
