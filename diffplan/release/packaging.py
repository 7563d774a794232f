"""The release archive (``diffplan package``): README, guide, SHA256SUMS, reproducible tar.gz and zip.

Identical inputs give byte-identical archives: entries sorted, one fixed mtime (1980-01-01, the earliest a
zip can store), owner 0/0 with no names, mode 0644, gzip header mtime 0 and no file name. The evaluation
results archived are deterministic (``results``: verdicts and scores, no timings); the untracked timings
(``layout.UNSHIPPED``) are neither archived nor listed in ``SHA256SUMS``. The generalization study's
``generalization/results.json`` and ``success_vs_side.png`` are archived when present (both
deterministic), and the README gets a section made from them. Every archive
is re-opened and each file checked against the embedded ``SHA256SUMS`` before the command succeeds.
Reading, verifying and extracting archives, within size limits: ``archive`` (re-exported here).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from diffplan._atomic import atomic_path, atomic_write_text
from diffplan.errors import BadInputError, CheckFailedError, CheckpointError, DataFileError
from diffplan.release import generalization
from diffplan.release.archive import (  # noqa: F401 - re-exported: cli/package.py and tests use them
    UnsafeArchiveError,
    VerifyResult,
    extract_archive,
    unsafe_reason,
    verify_archive,
)
from diffplan.release.layout import DEFAULT_RELEASE_ROOT, SUMS_NAME, UNSHIPPED, ReleasePaths, render_sums
from diffplan.release.manifest import Manifest
from diffplan.release.metadata import read_info
from diffplan.release.readme import render_quick_start, render_readme
from diffplan.release.reproducibility import RERUN_FOLDER, collect_reruns
from diffplan.release.results import ValidationReport, write_results
from diffplan.release.validation import validate_models

ARCHIVE_TOP = "pretrained_models"  # unpacking in a project folder restores the release layout
FIXED_MTIME = 315532800  # 1980-01-01T00:00:00Z
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
RELEASE_CONTENT = (
    "README.md",
    "quick_start_guide.md",
    "grid",
    "graph",
    "continuous",
    "evaluation_results",
    RERUN_FOLDER,
    # the generalization study (``generalization``), when it has been run: these two files only
    f"{generalization.FOLDER}/{generalization.RESULTS_NAME}",
    f"{generalization.FOLDER}/{generalization.PLOT_NAME}",
)


def archive_stem(version: str) -> str:
    """``diffplan_pretrained_models_v<version>``: the archives' base name (their top folder is
    ``pretrained_models/``, so that ``load_model(name)`` finds the models after unpacking)."""
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.\-_]*", version):
        raise BadInputError(f"--version {version!r} is not a version (use letters, digits, '.', '-', '_').")
    return f"diffplan_pretrained_models_v{version}"


@dataclass
class PackageResult:
    """What ``build_package`` wrote."""

    version: str
    files: list[tuple[str, str, int]]  # (path inside the release, sha256, bytes)
    archives: list[Path]
    archive_sha256: dict[str, str]
    readme: Path
    quick_start: Path
    sums: Path
    report: ValidationReport | None
    failing: dict[str, list[str]] = field(default_factory=dict)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def release_files(release_root: Path) -> list[str]:
    """Sorted POSIX paths, relative to ``release_root``, of the files a release ships (no hidden ones, and
    not the untracked ``layout.UNSHIPPED``)."""
    found = []
    for name in RELEASE_CONTENT:
        path = release_root / name
        if path.is_file():
            found.append(name)
        elif path.is_dir():
            for file in path.rglob("*"):
                rel = file.relative_to(release_root)
                shipped = not any(p.startswith(".") for p in rel.parts) and rel.as_posix() not in UNSHIPPED
                if file.is_file() and not file.is_symlink() and shipped:
                    found.append(rel.as_posix())
    return sorted(found)


def _read_infos(manifest: Manifest, release_root: Path) -> dict[str, dict | None]:
    infos: dict[str, dict | None] = {}
    for spec in manifest.models:
        try:
            infos[spec.name] = read_info(ReleasePaths.of(spec, release_root).info)
        except CheckpointError:
            infos[spec.name] = None
    return infos


def _write_tar_gz(path: Path, members: list[tuple[str, bytes]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as compressed:
            with tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))


def _write_zip(path: Path, members: list[tuple[str, bytes]]) -> None:
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, whatever the host, so the mode bits below mean the same
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data, compresslevel=9)


def build_package(
    manifest: Manifest,
    *,
    release_root: str | Path = DEFAULT_RELEASE_ROOT,
    dist_dir: str | Path = Path("dist"),
    version: str = "1.0",
    allow_failing: bool = False,
    report: ValidationReport | None = None,
    rerun_root: str | Path | None = None,
) -> PackageResult:
    """Validate every model, regenerate README and guide, write SHA256SUMS and the two archives, verify them.

    Raises ``CheckFailedError`` (exit 1) when a model fails validation, unless ``allow_failing`` (then the
    README marks the failures), and when a written archive does not verify. ``report``: a validation
    report already made for these models, release QA (otherwise one is made here); its results are stored
    under ``evaluation_results/`` (and so archived), files whose outcome is unchanged kept byte for byte
    (``results.write_results``). ``rerun_root``: reproducibility
    reruns reported in the README (``reproducibility.collect_reruns``; default
    ``<release_root>/reproducibility``, which the archives include). A generalization study in
    ``<release_root>/generalization/`` (``generalization.read_study``) is archived and shown in the
    README.
    """
    stem = archive_stem(version)
    release_root, dist_dir = Path(release_root), Path(dist_dir)
    if not release_root.is_dir():
        raise BadInputError(
            f"release folder {release_root} does not exist; train the models first "
            f"(`diffplan train --manifest {manifest.path}`) or pass --release-root."
        )
    study = generalization.read_study(release_root)  # a broken results.json stops before validating
    if report is None:
        try:
            report = validate_models(manifest, release_root=release_root)
        except DataFileError as err:
            raise DataFileError(f"{err} Packaging validates every model on its test split first.") from err
    if not report.release_qa:
        settings = ", ".join(f"{key} {value}" for key, value in report.overrides.items())
        raise BadInputError(
            f"the validation report to package was not release QA ({settings}); package validates every "
            f"model on its own test data, all of it."
        )
    failing = {m.name: [c.name for c in m.failed] for m in report.models if not m.passed}
    if failing and not allow_failing:
        listed = "; ".join(f"{name} fails {', '.join(checks)}" for name, checks in failing.items())
        raise CheckFailedError(
            f"refusing to package: {listed}. Fix them (see `diffplan validate --all`) or pass "
            f"--allow-failing to ship them marked as failing in the README."
        )
    verdicts = {m.name: [c.name for c in m.failed] for m in report.models}
    # The archive ships what this validation found, never a stale or partial (--limit, --data) run's
    # results; results that already say the same are kept, so repackaging stays byte-identical.
    write_results(report, release_root)
    infos = _read_infos(manifest, release_root)
    readme = release_root / "README.md"
    quick_start = release_root / "quick_start_guide.md"
    reruns = collect_reruns(manifest, release_root, rerun_root)
    atomic_write_text(readme, render_readme(manifest, infos, version, verdicts, reruns, study))
    atomic_write_text(quick_start, render_quick_start(manifest, version))

    entries, members = [], []
    for rel in release_files(release_root):
        data = (release_root / rel).read_bytes()
        entries.append((rel, sha256_bytes(data), len(data)))
        members.append((f"{ARCHIVE_TOP}/{rel}", data))
    sums_text = render_sums(entries)
    sums = release_root / SUMS_NAME
    atomic_write_text(sums, sums_text)
    members.append((f"{ARCHIVE_TOP}/{SUMS_NAME}", sums_text.encode()))
    members.sort(key=lambda member: member[0])

    dist_dir.mkdir(parents=True, exist_ok=True)
    archives = [dist_dir / f"{stem}.tar.gz", dist_dir / f"{stem}.zip"]
    _write_tar_gz(archives[0], members)
    _write_zip(archives[1], members)
    digests = {}
    for archive in archives:
        # The dist/SHA256SUMS beside it is the previous build's until rewritten below: check this digest.
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        verified = verify_archive(archive, sha256=digest)
        if not verified.ok:
            raise CheckFailedError(
                f"{archive} does not verify after writing: {'; '.join(verified.problems[:3])}."
            )
        digests[archive.name] = digest
    atomic_write_text(dist_dir / SUMS_NAME, "".join(f"{d}  {n}\n" for n, d in sorted(digests.items())))
    return PackageResult(version, entries, archives, digests, readme, quick_start, sums, report, failing)


def summary_json(result: PackageResult) -> str:
    """The package result as JSON (for ``--json``)."""
    return json.dumps(
        {
            "version": result.version,
            "archives": {
                a.name: {"path": str(a), "sha256": result.archive_sha256[a.name]} for a in result.archives
            },
            "files": [{"path": p, "sha256": d, "bytes": n} for p, d, n in result.files],
            "failing": result.failing,
        },
        indent=2,
    )
