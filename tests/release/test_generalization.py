"""The generalization study (``diffplan.release.generalization``): run on the tiny release at tiny sizes,
its deterministic files, the release README section made from them, and the archive shipping them."""

from __future__ import annotations

import json
import tarfile
import zipfile

import pytest
from typer.testing import CliRunner

from benchmarks.bench_generalization import markdown_tables
from diffplan.release import generalization
from diffplan.release.manifest import load_manifest
from diffplan.release.readme import render_readme
from diffplan.task import Task
from diffplan_cli.app import app

runner = CliRunner()
STEM = "diffplan_pretrained_models_v1.0"
TOP = "pretrained_models"
SIDES = {Task.GRID: (5, 7), Task.GRAPH: (5, 7)}
RULES = ("trained", "bfs")
MODELS = ("VIN_tiny", "SymVIN_tiny", "MP-VIN_tiny", "MP-VIN_tiny_continuous")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _study(release, data_root):
    return generalization.run_study(
        load_manifest(release.manifest),
        release.release_root,
        rules=RULES,
        sides=SIDES,
        maps=3,
        data_root=data_root,
    )


def test_the_study_scores_every_model_at_every_side_and_budget_and_its_files_are_deterministic(
    release, tmp_path
):
    data_root = tmp_path / "eval"
    results, timings = _study(release, data_root)
    rows = results["rows"]
    assert [(r["model"], r["side"], r["rule"]) for r in rows] == [
        (model, side, rule) for model in MODELS for side in (5, 7) for rule in RULES
    ]
    assert sorted(p.name for p in data_root.iterdir()) == [
        "graph_m5_study_3.pth",
        "graph_m7_study_3.pth",
        "grid_m5_study_3.npz",
        "grid_m7_study_3.npz",
    ]
    for row in rows:
        assert row["maps"] == 3 and row["budget"]["rule"] == row["rule"]
        assert row["budget"]["knob"] in ("k", "max_iter") and row["budget"]["steps"] >= 1
        assert 0.0 <= row["scores"]["success"] <= 1.0 and 0.0 <= row["scores"]["accuracy"] <= 1.0
        assert row["symmetric"] == (row["model"] == "SymVIN_tiny")
        if row["rule"] == "trained":
            assert row["budget"]["steps"] == row["budget"]["trained"]
        else:
            trained = next(
                r
                for r in rows
                if (r["model"], r["side"], r["rule"]) == (row["model"], row["side"], "trained")
            )
            assert row["budget"]["steps"] >= trained["budget"]["steps"]
    assert [(t["model"], t["side"], t["rule"]) for t in timings] == [
        (r["model"], r["side"], r["rule"]) for r in rows
    ]
    assert all(t["ms_per_maze"] > 0 for t in timings)
    assert not {"ms_per_maze", "seconds"} & {key for row in rows for key in row}  # timings kept apart

    first, second = tmp_path / "first", tmp_path / "second"
    generalization.write_study(results, first)
    again, _ = _study(release, data_root)  # the data sets are reused, the scores measured again
    generalization.write_study(again, second)
    for name in (generalization.RESULTS_NAME, generalization.PLOT_NAME):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    png = (first / generalization.PLOT_NAME).read_bytes()
    assert png.startswith(PNG_SIGNATURE) and b"Matplotlib" not in png and b"Software" not in png
    assert json.loads((first / generalization.RESULTS_NAME).read_text()) == results

    table = markdown_tables(results, timings, seconds=1.0)
    assert "| VIN_tiny | bfs |" in table and "ms per maze" in table


def test_the_release_readme_has_a_section_made_from_the_study(release, tmp_path):
    manifest = load_manifest(release.manifest)
    results, _ = _study(release, tmp_path / "eval")
    assert "Generalisation" not in render_readme(
        manifest, {}, "1.0", study=generalization.read_study(release.root)
    )
    generalization.write_study(results, release.release_root / generalization.FOLDER)
    study = generalization.read_study(release.release_root)
    assert study is not None and study.plot == "generalization/success_vs_side.png"
    readme = render_readme(manifest, {}, "1.0", study=study)
    assert readme == render_readme(manifest, {}, "1.0", study=generalization.read_study(release.release_root))
    assert "## Generalisation: trained on 15x15, planning on larger mazes" in readme
    assert "| Model | Budget | 5x5 | 7x7 |" in readme
    assert "grid planners 3 / 3 at 5x5 / 7x7; graph planners 3 / 3 at 5x5 / 7x7" in readme
    row = next(r for r in results["rows"] if (r["model"], r["side"], r["rule"]) == ("SymVIN_tiny", 7, "bfs"))
    plain = next(r for r in results["rows"] if (r["model"], r["side"], r["rule"]) == ("VIN_tiny", 7, "bfs"))
    success, accuracy = 100 * row["scores"]["success"], 100 * row["scores"]["accuracy"]
    assert f"{success:.1f} ({accuracy:.1f})" in readme
    gap = 100 * (row["scores"]["success"] - plain["scores"]["success"])
    assert f"{success:.1f} vs {100 * plain['scores']['success']:.1f} ({gap:+.1f})" in readme
    assert "| SymVIN_tiny vs VIN_tiny | bfs |" in readme and "| MP-VIN_tiny | `k` |" in readme
    assert "![Success against maze side at the bfs budget](generalization/success_vs_side.png)" in readme
    for rule in RULES:
        assert f"- `{rule}`: " in readme


def _fake_results():
    rows = [
        {
            "model": model,
            "algorithm": "VIN",
            "task": "grid",
            "symmetric": model.startswith("Sym"),
            "side": side,
            "rule": rule,
            "budget": {"knob": "k", "rule": rule, "steps": 6 if rule == "trained" else 9, "trained": 6},
            "maps": 3,
            "scores": {"accuracy": 0.5, "optimality": 0.25, "success": 0.375},
        }
        for model in ("VIN_tiny", "SymVIN_tiny")
        for side in (5, 7)
        for rule in RULES
    ]
    return {"manifest": "tiny.yaml", "rows": rows}


def test_package_archives_the_study_files_and_puts_the_study_in_the_readme(release):
    folder = release.release_root / generalization.FOLDER
    generalization.write_study(_fake_results(), folder)
    (folder / "notes.txt").write_text("scratch, not part of the release\n")
    result = runner.invoke(app, ["package", "--manifest", str(release.manifest)])
    assert result.exit_code == 0, result.output
    shipped = {f"{TOP}/generalization/results.json", f"{TOP}/generalization/success_vs_side.png"}
    dist = release.root / "dist"
    with tarfile.open(dist / f"{STEM}.tar.gz") as tar:
        names = set(tar.getnames())
        assert (
            tar.extractfile(f"{TOP}/generalization/success_vs_side.png").read()
            == (folder / "success_vs_side.png").read_bytes()
        )
    with zipfile.ZipFile(dist / f"{STEM}.zip") as archive:
        zip_names = set(archive.namelist())
    for found in (names, zip_names):
        assert shipped <= found and f"{TOP}/generalization/notes.txt" not in found
    sums = (release.release_root / "SHA256SUMS").read_text()
    assert "  generalization/results.json\n" in sums and "  generalization/success_vs_side.png\n" in sums
    readme = (release.release_root / "README.md").read_text()
    assert "## Generalisation" in readme and "| VIN_tiny | trained | 37.5 (50.0) | 37.5 (50.0) |" in readme
    assert "generalization/                   the generalization study" in readme
    assert "## Against release" not in readme  # no --baseline, no comparison


@pytest.mark.parametrize("text", ["not json", '{"rows": [{"model": "VIN_tiny"}]}'])
def test_a_broken_study_file_stops_package_before_validating(release, text):
    folder = release.release_root / generalization.FOLDER
    folder.mkdir()
    (folder / generalization.RESULTS_NAME).write_text(text)
    result = runner.invoke(app, ["package", "--manifest", str(release.manifest)])
    assert result.exit_code == 2
    assert "generalization/results.json" in result.output and "bench_generalization" in result.output
    assert not (release.root / "dist").exists() and not (release.release_root / "evaluation_results").exists()


def test_every_model_of_the_plot_gets_its_own_colour_and_marker():
    """v1.1 plots eleven models: the default cycle's ten colours gave the eleventh the first's."""
    styles = generalization.line_styles(45)
    assert len(set(styles)) == 45
    assert len({colour for colour, _ in styles[:20]}) == 20
