"""Release integrity (DESIGN sections 9 and 10): only release QA writes into the release, and what it
writes is deterministic; SHA256SUMS stays true; load_model checks the recorded sha256; the same weights
give the same checkpoint bytes; one model's files are switched together."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import diffplan
from diffplan.envs import generate_dataset
from diffplan.errors import CheckpointError
from diffplan.models import create_model
from diffplan.release.checkpoint import load_model, save_release_checkpoint, sha256_file
from diffplan.release.layout import (
    ReleasePaths,
    refresh_sums,
    release_files_problems,
    stage_release_files,
    write_files_manifest,
    write_release_files,
)
from diffplan.release.manifest import load_manifest
from diffplan.release.results import TIMING_FIELDS, results_describe, write_results
from diffplan.release.validation import validate_models
from diffplan_cli.app import app

runner = CliRunner()
REPOSITORY = Path(__file__).resolve().parents[2]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time (a rewrite changes the time)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def store(release, names=None, **options):
    report = validate_models(
        load_manifest(release.manifest), names, release_root=release.release_root, **options
    )
    return report, write_results(report, release.release_root)


def sha256sum_check(folder: Path) -> subprocess.CompletedProcess:
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum is not installed")
    return subprocess.run(
        ["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )


# --- 1. only release QA writes into the release ------------------------------------------------------


def test_validate_on_other_data_leaves_the_release_results_alone_and_says_where_it_stored_them(release):
    store(release, ["VIN_tiny"])
    results = release.release_root / "evaluation_results"
    before = snapshot(release.release_root)
    generate_dataset(
        "grid",
        release.root / "data" / "other.npz",
        maze_size=9,
        train_size=0,
        valid_size=0,
        test_size=8,
        seed=3,
    )
    out = release.root / "report.json"
    result = cli(
        "validate", "VIN_tiny", "--data", "data/other.npz", "--manifest", release.manifest, "--json-out", out
    )
    assert result.exit_code == 0, result.output
    assert snapshot(release.release_root) == before  # not one file of the release rewritten
    report = json.loads(out.read_text())
    stored = Path(report["results_folder"])
    assert not report["results_in_release"] and stored.parent == Path("runs/validation")
    assert json.loads((stored / "report.json").read_text())["models"][0]["scores"]["maps"] == 8
    assert str(stored) in " ".join(result.output.split())
    assert json.loads((results / "VIN_tiny.json").read_text())["scores"]["maps"] == 16


def test_a_limited_run_is_stored_outside_the_release_each_run_in_a_folder_of_its_own(release):
    before = snapshot(release.release_root)
    first, written = store(release, ["VIN_tiny"], limit=4)
    second, again = store(release, ["VIN_tiny"], limit=4)
    assert not first.release_qa and first.overrides == {"limit": 4}
    assert snapshot(release.release_root) == before
    assert written[0].parent != again[0].parent and all(p.is_file() for p in (*written, *again))
    assert not results_describe(first, release.release_root)  # a partial run never describes the release


# --- 2. the release's results are deterministic --------------------------------------------------------


def test_validating_an_unchanged_release_again_rewrites_none_of_its_results(release):
    _, written = store(release, ["VIN_tiny", "MP-VIN_tiny"])
    results = release.release_root / "evaluation_results"
    tracked = lambda: {k: v for k, v in snapshot(results).items() if k != "timings.json"}  # noqa: E731
    before = tracked()
    report, _ = store(release, ["VIN_tiny", "MP-VIN_tiny"])
    assert tracked() == before  # same bytes, not even rewritten
    assert results_describe(report, release.release_root)
    for name in ("VIN_tiny", "MP-VIN_tiny"):
        entry = json.loads((results / f"{name}.json").read_text())
        assert not {*TIMING_FIELDS, "created_date"} & set(entry)
        assert "ms" not in entry["checks"]["inference"]["message"]
        assert json.loads((results / "timings.json").read_text())["models"][name]["latency_ms"] > 0
    summary = json.loads((results / "summary.json").read_text())
    assert not {"latency_ms", "peak_memory_mb", "created_date"} & set(summary["models"]["VIN_tiny"])
    assert report.models[0].latency_ms > 0  # the timings are still measured, for the JSON output


def test_results_in_the_old_layout_are_rewritten_once_and_then_kept(release):
    report, _ = store(release, ["VIN_tiny"])
    path = release.release_root / "evaluation_results" / "VIN_tiny.json"
    old = {**json.loads(path.read_text()), "latency_ms": 4.2, "created_date": "2026-01-01T00:00:00+00:00"}
    path.write_text(json.dumps(old))
    assert not results_describe(report, release.release_root)
    write_results(report, release.release_root)
    assert "latency_ms" not in json.loads(path.read_text())
    assert results_describe(report, release.release_root)


def test_float_noise_of_another_host_rewrites_nothing_but_a_changed_outcome_does(release):
    """Another CPU's kernels move the loss by ~5e-6 relative (an equilibrium planner's by up to ~1e-5
    absolute), a few near-tied cells' accuracy, and a check's measured error in its last digits: the
    stored entry stays byte for byte. A score off by 1e-3 or a failed check is rewritten."""
    report, _ = store(release, ["VIN_tiny"])
    path = release.release_root / "evaluation_results" / "VIN_tiny.json"
    stored = json.loads(path.read_text())
    noisy = json.loads(json.dumps(stored))
    noisy["scores"]["loss"] += 2e-5
    noisy["scores"]["accuracy"] += 4e-5
    noisy["checks"]["thread_count"]["message"] = "2 threads vs 1: outputs agree within 3.1e-08 relative."
    noisy["checks"]["target"]["message"] = re.sub(
        r"\d+\.\d+%", "12.34%", noisy["checks"]["target"]["message"], count=1
    )
    text = json.dumps(noisy, indent=2, sort_keys=True) + "\n"
    path.write_text(text)
    summary_path = path.with_name("summary.json")
    summary = json.loads(summary_path.read_text())
    summary["models"]["VIN_tiny"]["scores"] = noisy["scores"]  # as that host's run wrote it
    summary_text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    summary_path.write_text(summary_text)
    assert results_describe(report, release.release_root)
    write_results(report, release.release_root)
    assert path.read_text() == text and summary_path.read_text() == summary_text

    for change in ("score", "status"):
        changed = json.loads(json.dumps(stored))
        if change == "score":
            changed["scores"]["accuracy"] -= 1e-3
        else:
            changed["checks"]["thread_count"]["status"] = "fail"
        path.write_text(json.dumps(changed, indent=2, sort_keys=True) + "\n")
        assert not results_describe(report, release.release_root)
        write_results(report, release.release_root)
        assert json.loads(path.read_text()) == stored


def test_the_untracked_timings_file_is_ignored_by_git():
    if shutil.which("git") is None or not (REPOSITORY / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "pretrained_models/evaluation_results/timings.json"], cwd=REPOSITORY
    )
    assert ignored.returncode == 0


# --- 3. SHA256SUMS stays true --------------------------------------------------------------------------


def test_validate_after_package_leaves_sha256sums_true(release):
    packaged = cli("package", "--manifest", release.manifest)
    assert packaged.exit_code == 0, packaged.output
    sums = release.release_root / "SHA256SUMS"
    before = sums.read_bytes()
    assert sha256sum_check(release.release_root).returncode == 0
    assert cli("validate", "--all", "--manifest", release.manifest).exit_code == 0
    assert sums.read_bytes() == before  # nothing it lists changed
    assert sha256sum_check(release.release_root).returncode == 0
    release.edit_manifest("VIN_tiny", target={"minimum": 0.01})  # a new outcome: its results change
    assert cli("validate", "VIN_tiny", "--manifest", release.manifest).exit_code == 0
    assert sums.read_bytes() != before
    check = sha256sum_check(release.release_root)
    assert check.returncode == 0, check.stdout + check.stderr


def test_refreshing_sums_updates_the_files_it_lists_and_adds_none(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "gone.txt").write_text("gone")
    (tmp_path / "SHA256SUMS").write_text(
        f"{'0' * 64}  a.txt\n{sha256_file(tmp_path / 'gone.txt')}  gone.txt\n"
    )
    (tmp_path / "gone.txt").unlink()
    (tmp_path / "smoke.ckpt").write_text("a smoke run's model, not part of the release")
    assert refresh_sums(tmp_path, [tmp_path / "a.txt", tmp_path / "gone.txt", tmp_path / "smoke.ckpt"])
    assert (tmp_path / "SHA256SUMS").read_text() == f"{sha256_file(tmp_path / 'a.txt')}  a.txt\n"
    assert sha256sum_check(tmp_path).returncode == 0
    assert not refresh_sums(tmp_path, [tmp_path / "a.txt"])  # already true: not rewritten
    assert not refresh_sums(tmp_path / "elsewhere", [tmp_path / "a.txt"])  # no SHA256SUMS: nothing to do


# --- 4. load_model checks the sha256 recorded beside the checkpoint --------------------------------------


def _shift_one_weight(path: Path) -> None:
    """Change one weight by 138 and rewrite the file, its metadata left as it was (as a flipped bit in a
    tensor's bytes does: the file still loads)."""
    record = torch.load(path, weights_only=True)
    key = next(iter(record["state_dict"]))
    record["state_dict"][key].view(-1)[0] += 138.0
    torch.save(record, path)


def test_load_model_refuses_a_checkpoint_that_is_not_the_one_its_metadata_records(release):
    path = release.file("VIN_tiny")
    recorded = json.loads(release.file("VIN_tiny", "_info.json").read_text())["model_stats"][
        "checkpoint_sha256"
    ]
    diffplan.load_model("VIN_tiny")  # the intact release loads
    _shift_one_weight(path)
    for target in ("VIN_tiny", path):
        with pytest.raises(CheckpointError) as raised:
            diffplan.load_model(target)
        message = str(raised.value)
        assert "\n" not in message and recorded in message and sha256_file(path) in message
        assert "verify=False" in message
    assert isinstance(load_model(path, verify=False), torch.nn.Module)


def test_a_bare_checkpoint_loads_unchecked_unless_asked_to_verify(release, tmp_path):
    bare = tmp_path / "copied.ckpt"
    shutil.copy(release.file("VIN_tiny"), bare)
    assert isinstance(load_model(bare), torch.nn.Module)  # no metadata beside it: nothing to check against
    with pytest.raises(CheckpointError, match="has no metadata"):
        load_model(bare, verify=True)
    with pytest.raises(diffplan.errors.BadInputError, match="verify"):
        load_model(bare, verify="yes")


# --- 5. the same weights give the same checkpoint bytes -------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "config"),
    [("VIN", {"k": 3, "l_h": 4, "l_q": 4}), ("SymVIN", {"k": 3, "l_h": 2, "l_q": 2, "complete_basis": True})],
)
def test_the_same_weights_saved_twice_give_identical_checkpoints(tmp_path, algorithm, config):
    torch.manual_seed(0)
    model = create_model(algorithm, **config)
    paths = [tmp_path / "one" / "first.ckpt", tmp_path / "two" / "second.ckpt"]
    for path in paths:
        path.parent.mkdir()
        save_release_checkpoint(path, model, name="tiny", algorithm=algorithm, model_config=config)
    assert sha256_file(paths[0]) == sha256_file(paths[1])


# --- 7. one model's release files are switched together -------------------------------------------------


def _paths(tmp_path: Path) -> ReleasePaths:
    paths = ReleasePaths.named("VIN_x", "grid", tmp_path)
    paths.config.parent.mkdir(parents=True)
    for path in paths.files:
        path.write_text(f"old {path.name}")
    write_files_manifest(paths)
    return paths


def test_staged_files_are_switched_in_together_with_their_manifest_written_last(tmp_path):
    paths = _paths(tmp_path)
    (tmp_path / "SHA256SUMS").write_text(
        "".join(f"{sha256_file(p)}  {p.relative_to(tmp_path).as_posix()}\n" for p in paths.files)
    )
    assert release_files_problems(paths) == []
    with stage_release_files(paths) as staged:
        staged.checkpoint.write_bytes(b"new weights")
        staged.info.write_text(json.dumps({"checkpoint_sha256": sha256_file(staged.checkpoint)}))
        staged.config.write_text("new config")
        assert paths.checkpoint.read_text() == "old VIN_x.ckpt"  # nothing switched while staging
    assert paths.checkpoint.read_bytes() == b"new weights" and paths.config.read_text() == "new config"
    assert release_files_problems(paths) == [] and not paths.staging.exists()
    listed = json.loads(paths.files_manifest.read_text())["files"]
    assert listed == {
        "VIN_x.ckpt": sha256_file(paths.checkpoint),
        "VIN_x_info.json": sha256_file(paths.info),
        "configs/VIN_x_config.yaml": sha256_file(paths.config),
    }
    assert sha256sum_check(tmp_path).returncode == 0  # SHA256SUMS followed the switch
    write_release_files(paths, {paths.config: b"third config"})
    assert paths.config.read_text() == "third config" and release_files_problems(paths) == []


def test_an_error_while_staging_leaves_the_release_as_it_was(tmp_path):
    paths = _paths(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError), stage_release_files(paths) as staged:
        staged.checkpoint.write_bytes(b"half")
        raise RuntimeError("killed while writing the metadata")
    assert snapshot(tmp_path) == before and release_files_problems(paths) == []


def test_a_switch_cut_short_reads_as_unfinished(tmp_path, monkeypatch):
    paths = _paths(tmp_path)
    real_replace, moved = os.replace, []

    def dies_after_the_first_file(source, target):
        if moved:
            raise OSError("killed")
        moved.append(target)
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", dies_after_the_first_file)
    with pytest.raises(OSError), stage_release_files(paths) as staged:
        for path in staged.files:
            path.write_text("new")
    monkeypatch.undo()
    assert paths.checkpoint.read_text() == "new" and paths.info.read_text() == "old VIN_x_info.json"
    assert release_files_problems(paths) == [
        f"no files manifest {paths.files_manifest} (the files were not written by one finished switch)"
    ]
    paths.checkpoint.write_text("changed by hand")
    write_files_manifest(paths)
    paths.info.write_text("changed after")
    assert release_files_problems(paths) == [f"{paths.info} does not match its sha256 in VIN_x.files.json"]
