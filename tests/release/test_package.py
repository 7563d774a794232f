"""`diffplan package`: reproducible archives, checksums, verification and safe extraction."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile

import pytest
from typer.testing import CliRunner

from diffplan.release.packaging import (
    SUMS_NAME,
    UnsafeArchiveError,
    extract_archive,
    unsafe_reason,
    verify_archive,
)
from diffplan_cli.app import app

runner = CliRunner()
STEM = "diffplan_pretrained_models_v1.0"
TOP = "pretrained_models"


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def package(release, *args):
    return cli("package", "--manifest", release.manifest, *args)


@pytest.fixture
def packaged(release):
    result = package(release)
    assert result.exit_code == 0, result.output
    return release


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_package_writes_readme_guide_checksums_and_both_archives(packaged):
    dist = packaged.root / "dist"
    assert sorted(p.name for p in dist.iterdir()) == sorted([f"{STEM}.tar.gz", f"{STEM}.zip", SUMS_NAME])
    readme = (packaged.release_root / "README.md").read_text()
    for name in ("VIN_tiny", "SymVIN_tiny", "MP-VIN_tiny", "MP-VIN_tiny_continuous"):
        assert f"### {name}" in readme
    info = json.loads(packaged.file("VIN_tiny", "_info.json").read_text())
    assert f"{100 * info['performance']['test_accuracy']:.2f}%" in readme
    assert "## Metrics" in readme and "## Reproducing the release" in readme and "passes" in readme
    sym = json.loads(packaged.file("SymVIN_tiny", "_info.json").read_text())["performance"]
    gap = 100 * (sym["test_accuracy"] - info["performance"]["test_accuracy"])
    assert "| SymVIN_tiny vs VIN_tiny | " in readme and f"| {gap:+.2f} |" in readme
    continuous = json.loads(packaged.file("MP-VIN_tiny_continuous", "_info.json").read_text())["performance"]
    assert f"{continuous['test_angle_error_degrees']:.2f} deg" in readme
    sums = (packaged.release_root / SUMS_NAME).read_text().splitlines()
    listed = {line.split("  ", 1)[1] for line in sums}
    assert {
        "README.md",
        "quick_start_guide.md",
        "grid/VIN_tiny.ckpt",
        "graph/configs/MP-VIN_tiny_config.yaml",
        "continuous/MP-VIN_tiny_continuous_info.json",
    } <= listed
    dist_sums = (dist / SUMS_NAME).read_text()
    assert f"{digest(dist / f'{STEM}.zip')}  {STEM}.zip" in dist_sums
    with tarfile.open(dist / f"{STEM}.tar.gz") as tar:
        names = tar.getnames()
        assert names == sorted(names) and all(n.startswith(f"{TOP}/") for n in names)
        assert {(m.uid, m.gid, m.uname, m.mtime, m.mode) for m in tar.getmembers()} == {
            (0, 0, "", 315532800, 0o644)
        }
    for archive in (dist / f"{STEM}.tar.gz", dist / f"{STEM}.zip"):
        verified = verify_archive(archive)
        assert verified.ok and verified.files_checked == len(sums)


def test_packaging_twice_with_a_validation_between_gives_byte_identical_archives(packaged):
    """The validation between measures new timings; the archives hold none of them (they once held the
    latency and date of the last validation, so every rebuild differed)."""
    dist = packaged.root / "dist"
    first = {p.name: p.read_bytes() for p in dist.iterdir()}
    validated = cli("validate", "--all", "--manifest", packaged.manifest)
    assert validated.exit_code == 0, validated.output
    timings = packaged.release_root / "evaluation_results" / "timings.json"
    assert json.loads(timings.read_text())["models"]["VIN_tiny"]["latency_ms"] > 0
    again = package(packaged)
    assert again.exit_code == 0, again.output
    assert {p.name: p.read_bytes() for p in dist.iterdir()} == first
    with tarfile.open(dist / f"{STEM}.tar.gz") as tar:
        names = tar.getnames()
        stored = json.load(tar.extractfile(f"{TOP}/evaluation_results/VIN_tiny.json"))
    assert f"{TOP}/evaluation_results/timings.json" not in names
    assert not {"latency_ms", "peak_memory_mb", "seconds", "created_date"} & set(stored)


def test_the_archive_holds_this_validation_not_a_stale_partial_run(release):
    partial = cli("validate", "VIN_tiny", "--limit", "4", "--manifest", release.manifest)
    assert partial.exit_code == 0, partial.output
    assert not (release.release_root / "evaluation_results").exists()  # a partial run stays outside
    result = package(release)
    assert result.exit_code == 0, result.output
    with tarfile.open(release.root / "dist" / f"{STEM}.tar.gz") as tar:
        archived = json.load(tar.extractfile(f"{TOP}/evaluation_results/VIN_tiny.json"))
        summary = json.load(tar.extractfile(f"{TOP}/evaluation_results/summary.json"))
    assert archived["limit"] is None and archived["scores"]["maps"] == 16
    assert set(summary["models"]) == {"VIN_tiny", "SymVIN_tiny", "MP-VIN_tiny", "MP-VIN_tiny_continuous"}


def test_verify_accepts_a_good_archive_and_fails_a_tampered_one(packaged, tmp_path):
    archive = packaged.root / "dist" / f"{STEM}.zip"
    ok = package(packaged, "--verify", archive)
    assert ok.exit_code == 0 and "files match" in ok.output
    tampered = tmp_path / f"{STEM}.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(tampered, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("VIN_tiny_info.json") and "Sym" not in info.filename:
                data = data.replace(b'"test_accuracy"', b'"test_accuracy" ', 1)
            target.writestr(info, data)
    result = package(packaged, "--verify", tampered)
    assert result.exit_code == 1
    assert f"{TOP}/grid/VIN_tiny_info.json does not match its sha256" in result.output


def test_verify_fails_a_tar_with_an_unlisted_extra_file(packaged, tmp_path):
    archive = packaged.root / "dist" / f"{STEM}.tar.gz"
    extra = tmp_path / "extra.tar.gz"
    with tarfile.open(archive) as source, tarfile.open(extra, "w:gz") as target:
        for member in source.getmembers():
            target.addfile(member, source.extractfile(member))
        info = tarfile.TarInfo(f"{TOP}/grid/surprise.ckpt")
        info.size = 3
        target.addfile(info, io.BytesIO(b"abc"))
    result = verify_archive(extra)
    assert not result.ok and any("not listed" in p for p in result.problems)


def _tar_with(path, member: tarfile.TarInfo, data: bytes = b"x") -> None:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo(f"{TOP}/README.md")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"x"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (f"{TOP}/../../escaped.txt", tarfile.REGTYPE),
        ("/etc/escaped.txt", tarfile.REGTYPE),
        (f"{TOP}/link", tarfile.SYMTYPE),
        (f"{TOP}/hard", tarfile.LNKTYPE),
    ],
)
def test_entries_that_leave_the_target_folder_are_refused(tmp_path, name, kind):
    archive = tmp_path / "evil.tar.gz"
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        member.linkname = "../../../etc/passwd"
    _tar_with(archive, member)
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="unsafe entry"):
        extract_archive(archive, target)
    assert not target.exists() or not any(target.rglob("*"))  # nothing written, not even the safe entry
    assert not (tmp_path / "escaped.txt").exists()
    result = verify_archive(archive)
    assert not result.ok and "unsafe entry" in result.problems[0]
    cli_result = cli("package", "--verify", archive)
    assert cli_result.exit_code == 1 and "unsafe entry" in cli_result.output


def test_zip_entries_with_dot_dot_are_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{TOP}/../escaped.txt", b"x")
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_a_good_archive_extracts_and_its_checksums_hold(packaged, tmp_path):
    written = extract_archive(packaged.root / "dist" / f"{STEM}.tar.gz", tmp_path / "out")
    root = tmp_path / "out" / TOP
    assert (root / SUMS_NAME) in written
    for line in (root / SUMS_NAME).read_text().splitlines():
        expected, rel = line.split("  ", 1)
        assert digest(root / rel) == expected


@pytest.mark.parametrize("name", ["a/b.txt", "./a", "a/./b"])
def test_inside_names_are_safe(name):
    assert unsafe_reason(name) is None


def test_package_refuses_a_failing_model_unless_allowed_and_then_marks_it(release):
    release.edit_manifest("VIN_tiny", target={"minimum": 0.99})
    refused = package(release)
    assert refused.exit_code == 1
    assert "refusing to package: VIN_tiny fails target" in refused.output
    assert not (release.root / "dist").exists()
    allowed = package(release, "--allow-failing")
    assert allowed.exit_code == 0, allowed.output
    readme = (release.release_root / "README.md").read_text()
    assert "**FAILS** (target)" in readme and "did not pass release validation" in readme


def test_package_bad_version_is_bad_input(release):
    result = package(release, "--version", "1.0/../x")
    assert result.exit_code == 2 and "is not a version" in result.output
