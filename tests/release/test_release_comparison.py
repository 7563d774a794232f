"""A release against its baseline (issue #18): the comparison rows and target verdicts
(``generalization.compare_releases`` / ``judge_targets``), the README section made from them, manifest
entries that are not released, ``diffplan package --baseline``, and a release packaged from a sub-root
(``pretrained_models/<version>/``), which unpacks beside the baseline, never over it."""

from __future__ import annotations

import shutil
import tarfile
import zipfile

import pytest
import yaml
from typer.testing import CliRunner

from diffplan.release import generalization
from diffplan.release.generalization import compare_releases, judge_targets
from diffplan.release.manifest import load_manifest
from diffplan.release.packaging import (
    NOT_RELEASED,
    archive_top,
    extract_archive,
    not_released,
    verify_archive,
)
from diffplan.release.readme import BaselineComparison, render_quick_start, render_readme
from diffplan.task import Task
from diffplan_cli.app import app
from tests.release.conftest import write_manifest
from tests.release.test_quick_start import python_blocks, run_blocks

runner = CliRunner()
GRID, GRAPH = Task.GRID, Task.GRAPH


def rows(model, task, cells, rules=("trained", "bfs")):
    """Study rows of one model: ``cells`` {side: (accuracy, success, maps)}, the same at every rule."""
    return [
        {
            "model": model,
            "algorithm": "VIN",
            "task": task.value,
            "symmetric": False,
            "side": side,
            "rule": rule,
            "budget": {"knob": "k", "rule": rule, "steps": 10, "trained": 10},
            "maps": maps,
            "scores": {"accuracy": accuracy, "optimality": 0.5, "success": success},
        }
        for side, (accuracy, success, maps) in cells.items()
        for rule in rules
    ]


def info(accuracy, hours):
    return {"performance": {"test_accuracy": accuracy}, "model_stats": {"training_time_hours": hours}}


# Baseline (v1.0) and release (v1.1): A better everywhere but 49x49 success (98% missed) and scored on
# other maps at 49x49; B worse at 15x15; C (graph) new in this release; Old only in the baseline.
BASE = {
    "rows": rows("A", GRID, {15: (0.99, 0.99, 10), 49: (0.80, 0.70, 5)})
    + rows("B", GRID, {15: (0.999, 0.9995, 10), 49: (0.99, 0.99, 5)})
    + rows("Old", GRAPH, {15: (0.9, 0.9, 4)})
}
NEW = {
    "rows": rows("A", GRID, {15: (0.995, 0.9995, 10), 49: (0.90, 0.95, 8)})
    + rows("B", GRID, {15: (0.998, 0.9995, 10), 49: (0.995, 0.99, 5)})
    + rows("C", GRAPH, {15: (0.99, 0.996, 4), 29: (0.98, 0.97, 3), 49: (0.9, 0.94, 2)})
}
BASE_INFOS = {"A": info(0.990, 0.5), "B": info(0.9990, 0.25), "Old": info(0.9, 1.0)}
NEW_INFOS = {"A": info(0.992, 0.75), "B": info(0.9950, 0.5), "C": info(0.98, 0.0)}
MODELS = [("A", GRID), ("B", GRID), ("C", GRAPH)]


def comparison():
    return compare_releases(MODELS, NEW_INFOS, NEW, BASE_INFOS, BASE)


def test_the_comparison_pairs_each_model_with_its_namesake_and_flags_different_test_sets():
    found = comparison()
    assert found == comparison()  # pure
    assert found.sides == (15, 29, 49) and found.rules == ("bfs", "trained")
    assert [m.model for m in found.models] == ["A", "B", "C"]
    a, b, c = found.models
    assert a.counterpart and b.counterpart and not c.counterpart
    assert a.training_hours == (0.5, 0.75) and a.test_accuracy == (0.99, 0.992)
    assert c.training_hours == (None, 0.0) and c.test_accuracy == (None, 0.98)
    cell = a.at("bfs", 49)
    assert (cell.baseline.success, cell.release.success) == (0.70, 0.95)
    assert (cell.baseline.maps, cell.release.maps, cell.same_maps) == (5, 8, False)
    assert a.at("bfs", 15).same_maps is True and a.at("bfs", 29) == generalization.SideComparison(
        29, None, None
    )
    assert c.at("bfs", 29).baseline is None and c.at("bfs", 29).same_maps is None
    assert found.baseline_only == ("Old",)
    assert [(m.task, m.side, m.baseline, m.release) for m in found.different_sets] == [
        ("grid", 49, (5,), (5, 8))
    ]
    assert ("A", "bfs", 49) in found.different_cells and ("B", "bfs", 49) not in found.different_cells
    assert found.has_study == (True, True)
    none = compare_releases(MODELS, NEW_INFOS, None, BASE_INFOS, None)
    assert (
        none.sides == ()
        and none.has_study == (False, False)
        and none.models[0].test_accuracy == (0.99, 0.992)
    )


def test_recorded_test_set_fields_are_compared_when_both_studies_have_them():
    base = {"rows": [dict(r, seed=1015) for r in rows("A", GRID, {15: (0.9, 0.9, 10)})]}
    new = {"rows": [dict(r, seed=7) for r in rows("A", GRID, {15: (0.9, 0.9, 10)})]}
    found = compare_releases([("A", GRID)], {}, new, {}, base)
    assert found.models[0].at("bfs", 15).same_maps is False and found.different_cells
    assert compare_releases([("A", GRID)], {}, new, {}, BASE).models[0].at("bfs", 15).same_maps is True


def test_target_verdicts_follow_issue_18():
    a, b, c = comparison().models
    report = judge_targets(a, minimum=0.94)
    met = {v.key: v.met for v in report.verdicts}
    assert met == {"accuracy_target": True, "accuracy_loss": True, "success_15": True, "success_49": False}
    assert [v.key for v in report.missed] == ["success_49"] and report.verdict("success_49").measured == 0.95
    assert report.beats_baseline is True and report.worse == ()  # misses a target, but beats v1.0

    report = judge_targets(b, minimum=0.999)
    assert report.verdict("accuracy_target").met is False  # strictly above the manifest's minimum
    loss = report.verdict("accuracy_loss")
    assert loss.met is False and loss.measured == pytest.approx(0.004)  # 0.4 points lost
    assert report.beats_baseline is False and report.worse == ("15x15 test accuracy", "15x15 accuracy")

    report = judge_targets(c, minimum=0.9)
    assert [v.key for v in report.verdicts] == [
        "accuracy_target",
        "accuracy_loss",
        "success_15",
        "success_29",
        "success_49",
    ]
    assert report.verdict("accuracy_loss").met is None  # no baseline model to lose against
    assert [v.met for v in report.verdicts[2:]] == [True, True, False]  # 99.6 >= 99.5, 97 >= 97, 94 < 95
    assert report.beats_baseline is None

    tie = compare_releases([("B", GRID)], BASE_INFOS, BASE, BASE_INFOS, BASE).models[0]
    assert judge_targets(tie, minimum=0.9).beats_baseline is True  # a tie counts
    unmeasured = compare_releases([("A", GRID)], NEW_INFOS, None, BASE_INFOS, None).models[0]
    report = judge_targets(unmeasured, minimum=0.9)
    assert report.verdict("success_49").met is None and report.beats_baseline is None


def test_training_cost_is_the_sum_of_recorded_times_within_four_hours_and_one_hour_each():
    cost = generalization.training_cost(comparison())
    assert cost.total_hours == pytest.approx(1.25) and cost.trained == 2  # C records 0 (an ensemble)
    assert cost.baseline_total_hours == pytest.approx(0.75) and cost.longest == ("A", 0.75)
    assert cost.met is True
    slow = {**NEW_INFOS, "B": info(0.995, 1.5)}  # one entry over an hour, the sum under four
    assert generalization.training_cost(compare_releases(MODELS, slow, NEW, BASE_INFOS, BASE)).met is False
    many = {name: info(0.995, 0.9) for name in ("A", "B", "C")}
    more = [*MODELS, ("D", GRID), ("E", GRID)]
    many.update(D=info(0.995, 0.9), E=info(0.995, 0.9))  # 4.5 hours summed, each under one
    assert generalization.training_cost(compare_releases(more, many, NEW, BASE_INFOS, BASE)).met is False
    unrecorded = {**NEW_INFOS, "B": {"performance": {"test_accuracy": 0.995}, "model_stats": {}}}
    cost = generalization.training_cost(compare_releases(MODELS, unrecorded, NEW, BASE_INFOS, BASE))
    assert cost.met is None and cost.unrecorded == ("B",)


@pytest.fixture
def tiny_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_manifest(write_manifest(tmp_path))


def test_the_readme_compares_with_the_baseline_only_when_given_one(tiny_manifest):
    base = {
        "rows": rows("VIN_tiny", GRID, {15: (0.99, 0.99, 10), 49: (0.8, 0.7, 5)})
        + rows("Gone", GRID, {15: (0.9, 0.9, 10)})
    }
    new = {"rows": rows("VIN_tiny", GRID, {15: (0.995, 0.9995, 10), 49: (0.9, 0.95, 8)})}
    infos = {"VIN_tiny": info(0.992, 0.75)}
    left_out = {n: NOT_RELEASED for n in ("SymVIN_tiny", "MP-VIN_tiny", "MP-VIN_tiny_continuous")}
    rows_ = compare_releases(
        [("VIN_tiny", GRID)], infos, new, {"VIN_tiny": info(0.99, 0.5), "SymVIN_tiny": info(0.9, 1)}, base
    )
    compared = BaselineComparison("v1.0", "pretrained_models", rows_)
    study = generalization.Study(new, None)
    plain = render_readme(tiny_manifest, infos, "1.1", {"VIN_tiny": []}, study=study, not_released=left_out)
    assert "## Against release" not in plain and "Release targets (issue #18)" not in plain
    readme = render_readme(
        tiny_manifest, infos, "1.1", {"VIN_tiny": []}, study=study, not_released=left_out, comparison=compared
    )
    assert readme == render_readme(
        tiny_manifest, infos, "1.1", {"VIN_tiny": []}, study=study, not_released=left_out, comparison=compared
    )
    assert "## Against release v1.0" in readme and "(`pretrained_models/`)" in readme
    head = (
        "| Model | Training (h) | Test accuracy | 15x15 accuracy | 15x15 success | 49x49 accuracy "
        "| 49x49 success |"
    )
    assert head in readme
    assert (
        "| VIN_tiny | 0.50 -> 0.75 (+0.25) | 99.00 -> 99.20 (+0.20) | 99.00 -> 99.50 (+0.50) "
        "| 99.00 -> 99.95 (+0.95) | 80.00 -> 90.00 (+10.00) \u2020 | 70.00 -> 95.00 (+25.00) \u2020 |"
    ) in readme
    assert "Budget `trained`" in readme and readme.index("Budget `bfs`") < readme.index("Budget `trained`")
    assert "**The two studies scored different test sets** at grid 49x49 (v1.0: 5 maps, v1.1: 8)" in readme
    assert "v1.0's study: grid planners 10 / 5 at 15x15 / 49x49" in readme
    assert "v1.1's study: grid planners 10 / 8 at 15x15 / 49x49" in readme
    assert (
        "| VIN_tiny | met (99.20%) | met (0.20 points gained) | met (99.95%) | **missed** (95.00%) | yes |"
        in readme
    )
    assert (
        "- **VIN_tiny** misses success >= 98.0% at 49x49 (bfs budget) (95.00%); it beats v1.0 everywhere"
        in readme
    )
    assert (
        "Training cost (at most 4 hours summed, 60 minutes each; `model_stats.training_time_hours`, wall "
        "clock on the training machine): 0.75 h summed over the 1 trained models (their v1.0 counterparts: "
        "0.50 h); longest VIN_tiny, 45.0 minutes: met." in readme
    )
    assert (
        "Models of release v1.0 with no counterpart in this release: Gone: not in this release's manifest; "
        "SymVIN_tiny: not released in this version (no release files)." in readme
    )
    # the entries left out are not released, not failing
    assert "| not released in this version (no release files) |" in readme and "**FAILS**" not in readme
    assert "did not pass release validation" not in readme
    assert "1 of the 4 differentiable planners of its manifest" in readme
    same = compare_releases([("VIN_tiny", GRID)], infos, new, {}, new)
    text = render_readme(
        tiny_manifest,
        infos,
        "1.1",
        study=study,
        comparison=BaselineComparison("v1.0", "pretrained_models", same),
    )
    assert "different test sets" not in text and "they compare the same maps" in text


def test_archive_top_keeps_pretrained_models_and_names_a_sub_root(tmp_path):
    assert archive_top("pretrained_models") == "pretrained_models"
    assert archive_top(tmp_path / "pretrained_models") == "pretrained_models"
    assert archive_top(tmp_path / "elsewhere") == "pretrained_models"
    assert archive_top(tmp_path / "pretrained_models" / "v1.1") == "pretrained_models/v1.1"
    assert archive_top(tmp_path / "pretrained_models" / "v1.1" / ".." / "v1.1") == "pretrained_models/v1.1"


def test_the_guide_of_a_sub_root_release_loads_its_models_by_path(tiny_manifest):
    guide = render_quick_start(
        tiny_manifest, "1.1", released=["MP-VIN_tiny", "VIN_tiny"], folder="pretrained_models/v1.1"
    )
    assert 'diffplan.load_model("pretrained_models/v1.1/grid/VIN_tiny.ckpt")' in guide
    assert 'diffplan.load_model("pretrained_models/v1.1/graph/MP-VIN_tiny.ckpt")' in guide
    assert "MP-VIN_tiny_continuous" not in guide and "SymVIN_tiny" not in guide
    assert render_quick_start(tiny_manifest, "1.0") == render_quick_start(
        tiny_manifest, "1.0", released=None, folder="pretrained_models"
    )


# --- packaging ---------------------------------------------------------------------------------


def package(release, *args):
    return runner.invoke(app, ["package", "--manifest", str(release.manifest), *map(str, args)])


def remove_model(release, name, root=None):
    root = root or release.release_root
    for path in root.rglob(f"{name}[._]*"):
        if path.stem in (name, f"{name}_info", f"{name}_config", f"{name}.files"):
            path.unlink()


def test_an_entry_without_release_files_is_not_released_and_the_rest_packages(release):
    remove_model(release, "MP-VIN_tiny_continuous")
    assert not list(release.release_root.rglob("MP-VIN_tiny_continuous*"))
    manifest = load_manifest(release.manifest)
    assert not_released(manifest, release.release_root) == {"MP-VIN_tiny_continuous": NOT_RELEASED}
    result = package(release)  # no --allow-failing
    assert result.exit_code == 0, result.output
    assert "MP-VIN_tiny_continuous: not released in this version (no release files)." in result.output
    readme = (release.release_root / "README.md").read_text()
    assert "| MP-VIN_tiny_continuous | MP-VIN | continuous |" in readme
    assert "| not released in this version (no release files) |" in readme
    assert "**missing**" not in readme and "did not pass release validation" not in readme
    assert "- **Not released in this version (no release files)**." in readme
    summary = (release.release_root / "evaluation_results" / "summary.json").read_text()
    assert "MP-VIN_tiny_continuous" not in summary and '"passed": true' in summary
    with tarfile.open(release.root / "dist" / "diffplan_pretrained_models_v1.0.tar.gz") as tar:
        names = tar.getnames()
    assert not [n for n in names if "continuous" in n] and "pretrained_models/grid/VIN_tiny.ckpt" in names


def test_a_model_with_some_of_its_files_still_fails_release_files(release):
    release.file("VIN_tiny", "_config.yaml").unlink()
    refused = package(release)
    assert refused.exit_code == 1 and "VIN_tiny fails release_files" in refused.output
    assert not (release.root / "dist").exists()


def test_an_ensemble_of_a_member_not_released_is_not_released(tiny_manifest, tmp_path):
    data = yaml.safe_load(tiny_manifest.path.read_text())
    data["models"].append(
        {
            "name": "VIN-Ensemble_tiny",
            "algorithm": "Ensemble",
            "task": "GridWorld",
            "data": "data/tiny_grid.npz",
            "folder": "grid",
            "members": ["VIN_tiny", "SymVIN_tiny"],
        }
    )
    tiny_manifest.path.write_text(yaml.safe_dump(data, sort_keys=False))
    manifest = load_manifest(tiny_manifest.path)
    root = tmp_path / "pretrained_models"
    (root / "grid").mkdir(parents=True)
    for name in ("VIN_tiny", "VIN-Ensemble_tiny"):
        (root / "grid" / f"{name}.ckpt").write_bytes(b"x")
    left_out = not_released(manifest, root)
    assert left_out["SymVIN_tiny"] == NOT_RELEASED and "VIN_tiny" not in left_out
    assert (
        left_out["VIN-Ensemble_tiny"]
        == "not released in this version (its member SymVIN_tiny is not released)"
    )


def test_a_baseline_that_does_not_exist_is_one_line_of_bad_input(release):
    result = package(release, "--baseline", release.root / "no_such_release")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --baseline ") and "does not exist" in lines[0]
    assert not (release.root / "dist").exists() and not (release.release_root / "evaluation_results").exists()
    empty = release.root / "empty"
    empty.mkdir()
    result = package(release, "--baseline", empty)
    assert result.exit_code == 2 and "holds no release models" in result.output


def test_a_sub_root_release_with_a_baseline_unpacks_beside_it(release, tmp_path, monkeypatch):
    """v1.0 in pretrained_models/, v2.0 in pretrained_models/v2.0/ (one entry not trained): the v2.0
    README compares with v1.0, its archives unpack to pretrained_models/v2.0/, they verify, and the guide
    runs from the unpacked folder with v1.0 unpacked beside it."""
    base = release.release_root
    (base / "README.md").write_text("# diffplan pre-trained models, release v1.0\n")
    folder = generalization.FOLDER
    generalization.write_study({"rows": rows("VIN_tiny", GRID, {5: (0.5, 0.4, 3)})}, base / folder)
    v1 = package(release)  # the v1.0 archives, to unpack beside v2.0's
    assert v1.exit_code == 0, v1.output
    sub = base / "v2.0"
    for kind in ("grid", "graph", "continuous"):
        shutil.copytree(base / kind, sub / kind)
    remove_model(release, "MP-VIN_tiny_continuous", sub)
    generalization.write_study({"rows": rows("VIN_tiny", GRID, {5: (0.6, 0.5, 3)})}, sub / folder)
    result = package(release, "--release-root", sub, "--version", "2.0", "--baseline", base)
    assert result.exit_code == 0, result.output
    readme = (sub / "README.md").read_text()
    assert "## Against release v1.0" in readme and "| VIN_tiny | " in readme
    assert "5x5 accuracy" in readme and "50.00 -> 60.00 (+10.00)" in readme
    assert "MP-VIN_tiny_continuous: not released in this version (no release files)" in readme
    assert 'diffplan.load_model("pretrained_models/v2.0/grid/VIN_tiny.ckpt")' in readme
    assert "--release-root pretrained_models/v2.0 --version 2.0 --baseline pretrained_models" in readme
    v1_readme = (base / "README.md").read_text()
    assert "## Against release" not in v1_readme

    dist = release.root / "dist"
    v2_archives = [
        dist / "diffplan_pretrained_models_v2.0.tar.gz",
        dist / "diffplan_pretrained_models_v2.0.zip",
    ]
    with tarfile.open(v2_archives[0]) as tar:
        v2_names = set(tar.getnames())
    with zipfile.ZipFile(dist / "diffplan_pretrained_models_v1.0.zip") as archive:
        v1_names = set(archive.namelist())
    assert all(n.startswith("pretrained_models/v2.0/") for n in v2_names)
    assert "pretrained_models/v2.0/SHA256SUMS" in v2_names and not v1_names & v2_names
    assert not [n for n in v1_names if n.startswith("pretrained_models/v2.0/")]
    sums = (dist / "SHA256SUMS").read_text()  # both releases' archives
    assert all(
        f"  {a}\n" in sums for a in (*(a.name for a in v2_archives), "diffplan_pretrained_models_v1.0.zip")
    )
    for archive in v2_archives:
        verified = verify_archive(archive)
        assert verified.ok, verified.problems
        assert verified.files_checked == len(v2_names) - 1 and verified.checkpoints_checked == 3

    target = tmp_path / "download"
    extract_archive(dist / "diffplan_pretrained_models_v1.0.zip", target)
    v1_files = {p: p.read_bytes() for p in (target / "pretrained_models").rglob("*") if p.is_file()}
    extract_archive(v2_archives[1], target)
    assert {p: p.read_bytes() for p in v1_files} == v1_files  # v2.0 left v1.0's files alone
    shutil.copytree(release.root / "data", target / "data")
    monkeypatch.chdir(target)
    printed = run_blocks(python_blocks(target / "pretrained_models" / "v2.0" / "quick_start_guide.md"))
    assert "reached the goal:" in printed
