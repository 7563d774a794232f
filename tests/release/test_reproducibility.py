"""Reproducibility reruns: `train --seed` into folders of their own, and the README's report of them."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from diffplan.release.manifest import load_manifest
from diffplan.release.reproducibility import collect_reruns
from diffplan_cli.app import app

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def rerun(release, label, *seed):
    result = cli(
        "train", "--manifest", release.manifest, "--only", "VIN_tiny", *seed,
        "--release-root", f"pretrained_models/reproducibility/{label}",
        "--run-root", f"runs/reproducibility/{label}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "folders, named",
    [([], "--release-root and --run-root"), (["--run-root", "elsewhere"], "--release-root")],
)
def test_a_seed_is_refused_where_it_would_overwrite_the_release(release, folders, named):
    before = release.file("VIN_tiny").read_bytes()
    result = cli("train", "--manifest", release.manifest, "--only", "VIN_tiny", "--seed", 8, *folders)
    assert result.exit_code == 2
    assert named in result.output and "of its own" in result.output
    assert release.file("VIN_tiny").read_bytes() == before


def test_reruns_are_paired_with_their_release_model_and_summarised_in_the_readme(release):
    rerun(release, "seed7")  # the entry's own seed
    rerun(release, "seed8", "--seed", 8)
    rerun(release, "seed9", "--seed", 9)
    manifest = load_manifest(release.manifest)

    (vin,) = collect_reruns(manifest, release.release_root)
    assert vin.name == "VIN_tiny" and vin.release.seed == 7
    assert [(r.label, r.seed) for r in vin.reruns] == [("seed7", 7), ("seed8", 8), ("seed9", 9)]
    assert vin.same_seed_gap == 0.0  # CPU training from the same seed is deterministic
    assert [r.seed for r in vin.seed_runs] == [7, 8, 9]
    mean, deviation, low, high = vin.spread("accuracy")
    accuracies = [r.accuracy for r in vin.seed_runs]
    assert low == min(accuracies) and high == max(accuracies)
    assert math.isclose(mean, sum(accuracies) / 3) and deviation >= 0

    result = cli("package", "--manifest", release.manifest)
    assert result.exit_code == 0, result.output
    readme = (release.release_root / "README.md").read_text()
    assert "## Reproducibility" in readme
    assert "| VIN_tiny | seed8 | 8 |" in readme
    assert "same-seed retrain within 0.00 points of the release" in readme
    assert "accuracy over 3 seeds" in readme and "success over 3 seeds" in readme
    sums = (release.release_root / "SHA256SUMS").read_text()
    assert "reproducibility/seed8/grid/VIN_tiny_info.json" in sums  # the evidence ships with the README


def test_a_rerun_of_another_recipe_is_listed_but_left_out_of_the_statistics(release):
    rerun(release, "seed8", "--seed", 8)
    info_path = release.release_root / "reproducibility/seed8/grid/VIN_tiny_info.json"
    info = json.loads(info_path.read_text())
    info["training_config"]["lr"] = 0.5
    info_path.write_text(json.dumps(info))
    (vin,) = collect_reruns(load_manifest(release.manifest), release.release_root)
    assert vin.reruns == [] and vin.other_recipe == ["seed8"]


def test_no_reruns_means_no_reproducibility_section(release):
    assert collect_reruns(load_manifest(release.manifest), release.release_root) == []
    result = cli("package", "--manifest", release.manifest)
    assert result.exit_code == 0, result.output
    assert "## Reproducibility" not in (release.release_root / "README.md").read_text()
