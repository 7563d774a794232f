"""The release archive (``diffplan package``): README, guide, SHA256SUMS, reproducible tar.gz and zip.

Identical inputs give byte-identical archives: entries sorted, one fixed mtime (1980-01-01, the earliest a
zip can store), owner 0/0 with no names, mode 0644, gzip header mtime 0 and no file name. Every archive
is re-opened and each file checked against the embedded ``SHA256SUMS`` before the command succeeds.
Reading or extracting an archive refuses entries that would leave the target folder (absolute paths,
``..``, links, devices).
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
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from diffplan._atomic import atomic_path, atomic_write_text
from diffplan.errors import BadInputError, CheckFailedError, CheckpointError, DataFileError
from diffplan.release.layout import DEFAULT_RELEASE_ROOT, ReleasePaths
from diffplan.release.manifest import Manifest
from diffplan.release.metadata import read_info
from diffplan.release.readme import render_quick_start, render_readme
from diffplan.release.reproducibility import RERUN_FOLDER, collect_reruns
from diffplan.release.results import ValidationReport, results_describe, write_results
from diffplan.release.validation import validate_models

SUMS_NAME = "SHA256SUMS"
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
)
_SUMS_LINE = re.compile(r"^([0-9a-f]{64})  (\S.*)$")


class UnsafeArchiveError(CheckFailedError):
    """An archive entry that would be written outside the target folder, or is not a plain file."""


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


@dataclass
class VerifyResult:
    """The outcome of checking an archive against its embedded ``SHA256SUMS``."""

    archive: Path
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def release_files(release_root: Path) -> list[str]:
    """Sorted POSIX paths, relative to ``release_root``, of the files a release ships (no hidden ones)."""
    found = []
    for name in RELEASE_CONTENT:
        path = release_root / name
        if path.is_file():
            found.append(name)
        elif path.is_dir():
            for file in path.rglob("*"):
                rel = file.relative_to(release_root)
                if file.is_file() and not file.is_symlink() and not any(p.startswith(".") for p in rel.parts):
                    found.append(rel.as_posix())
    return sorted(found)


def render_sums(entries: list[tuple[str, str, int]]) -> str:
    """``sha256sum``-compatible lines ``<hex>  <path>``, sorted by path."""
    return "".join(f"{digest}  {path}\n" for path, digest, _ in sorted(entries))


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
    report already made for these models (otherwise one is made here); its results are stored under
    ``evaluation_results/`` (and so archived) unless the stored ones already record the same outcome
    (``validation.results_describe``). ``rerun_root``: reproducibility
    reruns reported in the README (``reproducibility.collect_reruns``; default
    ``<release_root>/reproducibility``, which the archives include).
    """
    stem = archive_stem(version)
    release_root, dist_dir = Path(release_root), Path(dist_dir)
    if not release_root.is_dir():
        raise BadInputError(
            f"release folder {release_root} does not exist; train the models first "
            f"(`diffplan train --manifest {manifest.path}`) or pass --release-root."
        )
    if report is None:
        try:
            report = validate_models(manifest, release_root=release_root)
        except DataFileError as err:
            raise DataFileError(f"{err} Packaging validates every model on its test split first.") from err
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
    if not results_describe(report, release_root):
        write_results(report, release_root)
    infos = _read_infos(manifest, release_root)
    readme = release_root / "README.md"
    quick_start = release_root / "quick_start_guide.md"
    reruns = collect_reruns(manifest, release_root, rerun_root)
    atomic_write_text(readme, render_readme(manifest, infos, version, verdicts, reruns))
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
        verified = verify_archive(archive)
        if not verified.ok:
            raise CheckFailedError(
                f"{archive} does not verify after writing: {'; '.join(verified.problems[:3])}."
            )
        digests[archive.name] = sha256_bytes(archive.read_bytes())
    atomic_write_text(dist_dir / SUMS_NAME, "".join(f"{d}  {n}\n" for n, d in sorted(digests.items())))
    return PackageResult(version, entries, archives, digests, readme, quick_start, sums, report, failing)


# --- reading archives ---------------------------------------------------------------------------


def unsafe_reason(name: str) -> str | None:
    """Why an archive entry name is unsafe to extract, or None when it stays inside the target folder."""
    if not name or "\x00" in name:
        return "an empty or NUL-containing name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "a '..' component that leaves the target folder"
    return None


def _members(path: Path) -> list[tuple[str, str, bytes | None]]:
    """(name, type, data) of every entry: type is file, dir or other (links, devices ...)."""
    entries: list[tuple[str, str, bytes | None]] = []
    name = path.name
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(path, "r:*") as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        handle = tar.extractfile(member)
                        entries.append((member.name, "file", handle.read() if handle else b""))
                    else:
                        entries.append((member.name, "dir" if member.isdir() else "other", None))
        elif name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    mode = info.external_attr >> 16
                    if info.is_dir():
                        entries.append((info.filename, "dir", None))
                    elif mode and not stat.S_ISREG(mode):
                        entries.append((info.filename, "other", None))
                    else:
                        entries.append((info.filename, "file", archive.read(info)))
        else:
            raise BadInputError(f"{path} is not a .tar.gz or .zip archive.")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
        raise CheckFailedError(
            f"{path} is not a readable archive ({type(err).__name__}: {err}); re-download it."
        ) from err
    return entries


def _safety_problems(entries: list[tuple[str, str, bytes | None]]) -> list[str]:
    problems = []
    for name, kind, _ in entries:
        reason = unsafe_reason(name)
        if reason is not None:
            problems.append(f"unsafe entry {name!r}: {reason}")
        elif kind == "other":
            problems.append(f"unsafe entry {name!r}: a link or special file, not a plain file")
    return problems


def verify_archive(path: str | Path) -> VerifyResult:
    """Check every file of an archive against the ``SHA256SUMS`` it carries; nothing is extracted.

    Problems: unsafe entries, entries outside the single top folder, a missing or malformed
    ``SHA256SUMS``, listed files that are missing or differ, files the list does not cover.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"archive {path} does not exist; give the path of a downloaded release archive.")
    entries = _members(path)
    result = VerifyResult(path)
    result.problems = _safety_problems(entries)
    if result.problems:
        return result
    files = {name: data for name, kind, data in entries if kind == "file"}
    tops = {PurePosixPath(name).parts[0] for name in files}
    if len(tops) != 1:
        result.problems.append(f"expected one top folder, found {', '.join(sorted(tops)) or 'none'}")
        return result
    top = tops.pop()
    sums_name = f"{top}/{SUMS_NAME}"
    if sums_name not in files:
        result.problems.append(f"no {SUMS_NAME} in {top}/")
        return result
    listed: dict[str, str] = {}
    for number, line in enumerate(files[sums_name].decode("utf-8", "replace").splitlines(), 1):
        match = _SUMS_LINE.match(line)
        if not match or unsafe_reason(match.group(2)):
            result.problems.append(f"{SUMS_NAME} line {number} is not '<sha256>  <path>': {line[:80]!r}")
            continue
        listed[f"{top}/{match.group(2)}"] = match.group(1)
    for name, digest in sorted(listed.items()):
        if name not in files:
            result.problems.append(f"{name} is listed in {SUMS_NAME} but missing from the archive")
        elif sha256_bytes(files[name]) != digest:
            result.problems.append(f"{name} does not match its sha256 in {SUMS_NAME} (modified or corrupted)")
        else:
            result.files_checked += 1
    for name in sorted(set(files) - set(listed) - {sums_name}):
        result.problems.append(f"{name} is in the archive but not listed in {SUMS_NAME}")
    return result


def extract_archive(path: str | Path, target: str | Path) -> list[Path]:
    """Extract a release archive into ``target``, refusing it whole if any entry could leave ``target``."""
    target = Path(target).resolve()
    entries = _members(Path(path))
    problems = _safety_problems(entries)
    for name, _, _ in entries:
        destination = (target / name).resolve()
        if not unsafe_reason(name) and target not in destination.parents and destination != target:
            problems.append(f"unsafe entry {name!r}: resolves outside {target}")
    if problems:
        raise UnsafeArchiveError(f"refusing to extract {path}: {'; '.join(problems[:3])}.")
    written = []
    for name, kind, data in entries:
        destination = target / name
        if kind == "dir":
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(destination) as tmp:
            tmp.write_bytes(data or b"")
        written.append(destination)
    return written


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
