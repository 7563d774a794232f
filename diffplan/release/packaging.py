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

import dataclasses
import gzip
import hashlib
import io
import json
import os
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
from diffplan.release.layout import (
    DEFAULT_RELEASE_ROOT,
    RELEASE_FOLDERS,
    SUMS_NAME,
    UNSHIPPED,
    ReleasePaths,
    render_sums,
)
from diffplan.release.manifest import Manifest
from diffplan.release.metadata import read_info
from diffplan.release.readme import BaselineComparison, render_quick_start, render_readme
from diffplan.release.reproducibility import RERUN_FOLDER, collect_reruns
from diffplan.release.results import ValidationReport, write_results
from diffplan.release.validation import validate_models

ARCHIVE_TOP = "pretrained_models"  # unpacking in a project folder restores the release layout
NOT_RELEASED = "not released in this version (no release files)"
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
    """``diffplan_pretrained_models_v<version>``: the archives' base name (their top folder:
    :func:`archive_top`)."""
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.\-_]*", version):
        raise BadInputError(f"--version {version!r} is not a version (use letters, digits, '.', '-', '_').")
    return f"diffplan_pretrained_models_v{version}"


def archive_top(release_root: str | Path) -> str:
    """The folder a release's archives unpack to, as a POSIX path.

    ``pretrained_models`` for a release root of that name (the default, v1.0: unpacking in a project
    folder restores the layout ``load_model(name)`` searches) or for a root that is not inside a
    ``pretrained_models`` folder; for a sub-root of one, its path from there: the release root
    ``pretrained_models/v1.1`` unpacks to ``pretrained_models/v1.1/``, beside v1.0's files, never over
    them. Only the names of the path count (no symbolic link is followed), so the same folder gives the
    same archives however it is spelt.
    """
    parts = Path(os.path.abspath(release_root)).parts
    if parts and parts[-1] != ARCHIVE_TOP and ARCHIVE_TOP in parts[:-1]:
        start = len(parts) - 1 - parts[::-1].index(ARCHIVE_TOP)
        return "/".join(parts[start:])
    return ARCHIVE_TOP


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
    not_released: dict[str, str] = field(default_factory=dict)  # manifest entries left out, and why
    top: str = ARCHIVE_TOP  # the archives' top folder (:func:`archive_top`)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def release_files(release_root: Path, exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Sorted POSIX paths, relative to ``release_root``, of the files a release ships (no hidden ones,
    not the untracked ``layout.UNSHIPPED``, and none of ``exclude``: the files of models not released)."""
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
    return sorted(rel for rel in found if rel not in exclude)


def not_released(manifest: Manifest, release_root: str | Path) -> dict[str, str]:
    """The manifest entries that are not part of the release in ``release_root``, in manifest order, each
    with why (the words the README and ``diffplan package`` show).

    An entry with none of its release files (checkpoint, ``_info.json``, config, ``<name>.files.json``)
    was not trained this round, or was kept out: :data:`NOT_RELEASED`. An Ensemble entry one of whose
    members is not released is not released either (its files, if any, are left out of the archives).
    An entry with some of its files is released, and a missing file fails its ``release_files`` check.
    """
    reasons: dict[str, str] = {}
    for spec in manifest.models:
        paths = ReleasePaths.of(spec, release_root)
        if not any(path.is_file() for path in (*paths.files, paths.files_manifest)):
            reasons[spec.name] = NOT_RELEASED
    for spec in manifest.models:  # members are trained entries, never ensembles: known by now
        missing = [m for m in spec.members or () if m in reasons]
        if missing and spec.name not in reasons:
            members = f"member {missing[0]} is" if len(missing) == 1 else f"members {', '.join(missing)} are"
            reasons[spec.name] = f"not released in this version (its {members} not released)"
    return {spec.name: reasons[spec.name] for spec in manifest.models if spec.name in reasons}


def released_names(manifest: Manifest, release_root: str | Path) -> list[str]:
    """The manifest entries the release in ``release_root`` holds (all but :func:`not_released`), in
    manifest order; refuses a release that holds none of them (``BadInputError``)."""
    left_out = not_released(manifest, release_root)
    names = [spec.name for spec in manifest.models if spec.name not in left_out]
    if not names:
        raise BadInputError(
            f"{release_root} holds release files of none of the models of {manifest.path}; train them "
            f"first (`diffplan train --manifest {manifest.path} --release-root {release_root}`) or pass "
            "the --release-root they were trained into."
        )
    return names


def _unreleased_files(manifest: Manifest, release_root: Path, names: dict[str, str]) -> set[str]:
    """The paths, relative to the release root, of the release files of the entries ``names``."""
    files = set()
    for spec in manifest.models:
        if spec.name in names:
            paths = ReleasePaths.of(spec, release_root)
            for path in (*paths.files, paths.files_manifest):
                files.add(path.relative_to(release_root).as_posix())
    return files


@dataclass(frozen=True)
class Baseline:
    """The previous release a package is compared with (:func:`read_baseline`)."""

    root: Path
    version: str | None  # from its README's title, when it has one
    top: str  # where it lives in a project (:func:`archive_top`), e.g. ``pretrained_models``
    infos: dict[str, dict | None]  # its models' ``_info.json`` (None: unreadable), by name
    study: generalization.Study | None

    @property
    def label(self) -> str:
        return f"v{self.version}" if self.version else f"{self.top}/"


_README_TITLE = re.compile(r"# diffplan pre-trained models, release v(\S+)")


def read_baseline(baseline_root: str | Path) -> Baseline:
    """The release in ``baseline_root`` (the previous release's root, e.g. ``pretrained_models``): its
    models' metadata (every ``<folder>/<name>_info.json``), its generalization study and its version.

    Raises ``BadInputError`` when the folder does not exist or holds neither models nor a study, and
    ``DataFileError`` for a broken study file, before any work."""
    root = Path(baseline_root)
    if not root.is_dir():
        raise BadInputError(
            f"--baseline {root} does not exist; give the release root of the previous release "
            "(e.g. pretrained_models)."
        )
    infos: dict[str, dict | None] = {}
    for folder in RELEASE_FOLDERS:
        for path in sorted((root / folder).glob("*_info.json")):
            try:
                infos[path.name[: -len("_info.json")]] = read_info(path)
            except CheckpointError:
                infos[path.name[: -len("_info.json")]] = None
    study = generalization.read_study(root)
    if not infos and study is None:
        raise BadInputError(
            f"--baseline {root} holds no release models ({'/'.join(RELEASE_FOLDERS)}/<name>_info.json) "
            "and no generalization study; give the release root of the previous release "
            "(e.g. pretrained_models)."
        )
    version = None
    readme = root / "README.md"
    if readme.is_file():
        match = _README_TITLE.match(readme.read_text(errors="replace"))
        version = match.group(1) if match else None
    return Baseline(root, version, archive_top(root), dict(sorted(infos.items())), study)


def release_comparison(
    manifest: Manifest,
    names: list[str],
    infos: dict[str, dict | None],
    study: generalization.Study | None,
    baseline: Baseline,
) -> generalization.ReleaseComparison:
    """``generalization.compare_releases`` of the released models ``names`` against ``baseline``."""
    return generalization.compare_releases(
        [(spec.name, spec.task) for spec in manifest.models if spec.name in names],
        infos,
        None if study is None else study.results,
        baseline.infos,
        None if baseline.study is None else baseline.study.results,
    )


def _read_infos(manifest: Manifest, release_root: Path) -> dict[str, dict | None]:
    infos: dict[str, dict | None] = {}
    for spec in manifest.models:
        try:
            infos[spec.name] = read_info(ReleasePaths.of(spec, release_root).info)
        except CheckpointError:
            infos[spec.name] = None
    return infos


_DIST_SUMS_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$")


def _other_sums(dist_dir: Path, written: set[str]) -> dict[str, str]:
    """The lines of ``dist/SHA256SUMS`` for archives other than ``written`` that are still there (another
    release's, e.g. v1.0's beside v1.1's), so packaging one release keeps the other verifiable."""
    try:
        text = (dist_dir / SUMS_NAME).read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    kept = {}
    for line in text.splitlines():
        match = _DIST_SUMS_LINE.match(line)
        if match and match.group(2) not in written and (dist_dir / match.group(2)).is_file():
            kept[match.group(2)] = match.group(1)
    return kept


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
    baseline_root: str | Path | None = None,
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

    Manifest entries the release does not hold (:func:`not_released`: no release files, or an Ensemble
    of a member not released) are not validated, not archived, and listed as not released in the README
    and the result; a model whose files exist but fail a check still needs ``allow_failing``.
    ``baseline_root``: the previous release's root (:func:`read_baseline`); the README then compares each
    model with the baseline's model of the same name and judges the issue #18 targets
    (``generalization.compare_releases``, ``generalization.judge_targets``). The archives' top folder is
    :func:`archive_top` of ``release_root``.
    """
    stem = archive_stem(version)
    release_root, dist_dir = Path(release_root), Path(dist_dir)
    if not release_root.is_dir():
        raise BadInputError(
            f"release folder {release_root} does not exist; train the models first "
            f"(`diffplan train --manifest {manifest.path}`) or pass --release-root."
        )
    study = generalization.read_study(release_root)  # a broken results.json stops before validating
    baseline = None if baseline_root is None else read_baseline(baseline_root)  # so does a bad baseline
    left_out = not_released(manifest, release_root)
    names = released_names(manifest, release_root)
    if report is None:
        try:
            report = validate_models(manifest, names, release_root=release_root)
        except DataFileError as err:
            raise DataFileError(f"{err} Packaging validates every model on its test split first.") from err
    elif any(m.name in left_out for m in report.models):  # not released: not judged either
        report = dataclasses.replace(report, models=[m for m in report.models if m.name not in left_out])
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
    top = archive_top(release_root)
    comparison = None
    if baseline is not None:
        comparison = BaselineComparison(
            baseline.label, baseline.top, release_comparison(manifest, names, infos, study, baseline)
        )
    text = render_readme(
        manifest,
        infos,
        version,
        verdicts,
        reruns,
        study,
        not_released=left_out,
        comparison=comparison,
        folder=top,
    )
    atomic_write_text(readme, text)
    atomic_write_text(quick_start, render_quick_start(manifest, version, released=names, folder=top))

    entries, members = [], []
    for rel in release_files(release_root, _unreleased_files(manifest, release_root, left_out)):
        data = (release_root / rel).read_bytes()
        entries.append((rel, sha256_bytes(data), len(data)))
        members.append((f"{top}/{rel}", data))
    sums_text = render_sums(entries)
    sums = release_root / SUMS_NAME
    atomic_write_text(sums, sums_text)
    members.append((f"{top}/{SUMS_NAME}", sums_text.encode()))
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
    listed = {**_other_sums(dist_dir, set(digests)), **digests}  # other releases' archives keep their lines
    atomic_write_text(dist_dir / SUMS_NAME, "".join(f"{d}  {n}\n" for n, d in sorted(listed.items())))
    return PackageResult(
        version, entries, archives, digests, readme, quick_start, sums, report, failing, left_out, top
    )


def summary_json(result: PackageResult) -> str:
    """The package result as JSON (for ``--json``)."""
    return json.dumps(
        {
            "version": result.version,
            "archives": {
                a.name: {"path": str(a), "sha256": result.archive_sha256[a.name]} for a in result.archives
            },
            "top": result.top,
            "files": [{"path": p, "sha256": d, "bytes": n} for p, d, n in result.files],
            "failing": result.failing,
            "not_released": result.not_released,
        },
        indent=2,
    )
