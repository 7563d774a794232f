"""Where release files live (DESIGN section 7), and how one model's files are replaced together.

Layout: the release root holds ``grid/``, ``graph/``, ``continuous/`` (one model's files:
:class:`ReleasePaths`), ``evaluation_results/`` (what ``validate`` decided: tracked, deterministic) and
``SHA256SUMS`` (written by ``package``). ``evaluation_results/timings.json`` (latency, memory, seconds of
the last run) is measured anew on every run: untracked and never shipped (:data:`UNSHIPPED`).
``generalization/`` holds the generalization study when it has been run (``results.json`` and
``success_vs_side.png``, deterministic, shipped: :mod:`diffplan.release.generalization`).

Replacing one model's release files (DESIGN section 10: they change together or not at all)::

    with stage_release_files(paths) as staged:      # staged: ReleasePaths in <folder>/.staging-<name>/
        save_release_checkpoint(staged.checkpoint, model, ...)
        write_info(staged.info, info)               # may read staged.checkpoint (its sha256)
        atomic_write_text(staged.config, text)
    # leaving the block without an error switches the files; an error leaves the release as it was

The switch (:func:`commit_staged`) first removes the model's files manifest ``<name>.files.json``, then
moves each staged file over its release file (``os.replace``, atomic per file, same folder tree), then
writes the files manifest again, last: the sha256 of each of the model's files. A set of files is
complete and consistent exactly when its manifest exists and every file matches it
(:func:`release_files_problems`); a process killed mid-switch leaves no manifest, so a reader such as
training's up-to-date test sees an unfinished release and redoes it. A staging folder left by a killed
process is removed by the next staging of that model. When the release root holds a ``SHA256SUMS``,
the lines it has for the files replaced are updated (:func:`refresh_sums`), so that it never goes stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from diffplan._atomic import atomic_write_text
from diffplan.errors import CheckpointError

DEFAULT_RELEASE_ROOT = Path("pretrained_models")
RELEASE_FOLDERS = ("grid", "graph", "continuous")
EVALUATION_FOLDER = "evaluation_results"
TIMINGS_NAME = "timings.json"
SUMS_NAME = "SHA256SUMS"
# Release-root files that are measured anew on every run: untracked, not archived, not in SHA256SUMS.
UNSHIPPED = (f"{EVALUATION_FOLDER}/{TIMINGS_NAME}",)
FILES_MANIFEST_FORMAT = "diffplan-release-files"
STAGING_PREFIX = ".staging-"
_SUMS_LINE = re.compile(r"^([0-9a-f]{64})  (\S.*)$")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ReleasePaths:
    """Where one model's release files live: ``<root>/<folder>/<name>.ckpt``, ``<name>_info.json`` and
    ``configs/<name>_config.yaml``, and the files manifest ``<name>.files.json`` beside them."""

    checkpoint: Path
    info: Path
    config: Path

    @classmethod
    def of(cls, spec, release_root: str | Path = DEFAULT_RELEASE_ROOT) -> ReleasePaths:
        """The paths of manifest entry ``spec`` (anything with ``name`` and ``folder``)."""
        return cls.named(spec.name, spec.folder, release_root)

    @classmethod
    def named(cls, name: str, folder: str, release_root: str | Path = DEFAULT_RELEASE_ROOT) -> ReleasePaths:
        base = Path(release_root) / folder
        return cls(
            base / f"{name}.ckpt", base / f"{name}_info.json", base / "configs" / f"{name}_config.yaml"
        )

    @property
    def name(self) -> str:
        return self.checkpoint.stem

    @property
    def files(self) -> tuple[Path, Path, Path]:
        return (self.checkpoint, self.info, self.config)

    @property
    def files_manifest(self) -> Path:
        """``<name>.files.json``: the sha256 of each release file, written last by :func:`commit_staged`."""
        return self.checkpoint.with_name(f"{self.name}.files.json")

    @property
    def staging(self) -> Path:
        """The hidden folder a new set of this model's files is written into before the switch."""
        return self.checkpoint.parent / f"{STAGING_PREFIX}{self.name}"

    def staged(self) -> ReleasePaths:
        """The same file names inside :attr:`staging` (the config in its ``configs/``)."""
        return ReleasePaths(
            self.staging / self.checkpoint.name,
            self.staging / self.info.name,
            self.staging / "configs" / self.config.name,
        )

    def exist(self) -> bool:
        return all(path.is_file() for path in self.files)


# --- SHA256SUMS --------------------------------------------------------------------------------


def render_sums(entries: Iterable[tuple[str, str, int]]) -> str:
    """``sha256sum``-compatible lines ``<hex>  <path>``, sorted by path (entries: path, sha256, bytes)."""
    return "".join(f"{digest}  {path}\n" for path, digest, _ in sorted(entries))


def refresh_sums(release_root: str | Path, paths: Iterable[str | Path]) -> bool:
    """Update the ``SHA256SUMS`` lines of those ``paths`` (files under ``release_root``) it lists.

    A listed file that was rewritten gets its new sum, one that was removed loses its line; a file the
    list does not name is left out (``package`` decides what the release ships: a smoke run's model
    written into the release folder must not join it). Does nothing when the release root has no
    ``SHA256SUMS`` or when every line already holds. Returns whether the file was rewritten.
    """
    root = Path(release_root)
    sums_path = root / SUMS_NAME
    if not sums_path.is_file():
        return False
    text = sums_path.read_text()
    listed: dict[str, str] = {}
    for line in text.splitlines():
        match = _SUMS_LINE.match(line)
        if match:
            listed[match.group(2)] = match.group(1)
    for path in map(Path, paths):
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:  # not a release file
            continue
        if rel not in listed:
            continue
        if path.is_file():
            listed[rel] = _sha256(path)
        else:
            del listed[rel]
    new_text = render_sums((rel, digest, 0) for rel, digest in listed.items())
    if new_text == text:
        return False
    atomic_write_text(sums_path, new_text)
    return True


# --- one model's files, replaced together --------------------------------------------------------


@contextlib.contextmanager
def stage_release_files(
    paths: ReleasePaths, *, release_root: str | Path | None = None
) -> Iterator[ReleasePaths]:
    """Yield :meth:`ReleasePaths.staged` paths to write a model's new release files into; on a clean exit
    :func:`commit_staged` switches them in, on an error the staging folder is removed and the release is
    left as it was.

    Write every file the new set changes (usually all three); a file not staged keeps its release copy
    and is covered by the new files manifest as it is. ``release_root``: where ``SHA256SUMS`` lives
    (default: the folder above the model's folder).
    """
    shutil.rmtree(paths.staging, ignore_errors=True)  # left by a killed process: never switched in
    staged = paths.staged()
    staged.config.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield staged
        commit_staged(paths, release_root=release_root)
    finally:
        shutil.rmtree(paths.staging, ignore_errors=True)


def write_release_files(
    paths: ReleasePaths, contents: Mapping[Path, bytes], *, release_root: str | Path | None = None
) -> list[Path]:
    """Write the bytes of some of ``paths.files`` (keys: release paths) as one switch; returns the paths
    written. See :func:`stage_release_files` for files whose writing needs the others (a checksum)."""
    staged = dict(zip(paths.files, paths.staged().files, strict=True))
    unknown = [str(p) for p in contents if Path(p) not in staged]
    if unknown:
        raise CheckpointError(f"{', '.join(unknown)} are not release files of {paths.name}; name its own.")
    with stage_release_files(paths, release_root=release_root):
        for path, data in contents.items():
            staged[Path(path)].write_bytes(data)
    return [Path(p) for p in contents]


def commit_staged(paths: ReleasePaths, *, release_root: str | Path | None = None) -> list[Path]:
    """Switch the files staged under ``paths.staging`` into the release; returns the release paths moved.

    Order: remove the files manifest, ``os.replace`` each staged file (its data flushed to disk first),
    write the files manifest (sha256 of each of the model's files) last, refresh ``SHA256SUMS``.
    """
    pairs = [(s, r) for s, r in zip(paths.staged().files, paths.files, strict=True) if s.is_file()]
    if not pairs:
        raise CheckpointError(
            f"nothing was staged in {paths.staging} for {paths.name}; write its files first."
        )
    digests = {}
    for staged, release in pairs:
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        digests[release] = _sha256(staged)
    paths.files_manifest.unlink(missing_ok=True)  # from here to the end the set reads as unfinished
    moved = []
    for staged, release in pairs:
        release.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, release)
        moved.append(release)
    write_files_manifest(paths, known=digests)
    root = Path(release_root) if release_root is not None else paths.checkpoint.parent.parent
    refresh_sums(root, [*moved, paths.files_manifest])
    return moved


def _manifest_key(paths: ReleasePaths, path: Path) -> str:
    return path.relative_to(paths.checkpoint.parent).as_posix()


def write_files_manifest(paths: ReleasePaths, *, known: Mapping[Path, str] | None = None) -> Path:
    """Write ``<name>.files.json``: ``{"format", "name", "files": {path relative to the model's folder:
    sha256}}`` for each of the model's release files that exists (``known``: sums already computed).

    Called last by :func:`commit_staged`; call it alone to record a release written before this
    manifest existed (its files as they are now)."""
    known = dict(known or {})
    files = {
        _manifest_key(paths, path): known.get(path) or _sha256(path) for path in paths.files if path.is_file()
    }
    record = {"format": FILES_MANIFEST_FORMAT, "name": paths.name, "files": dict(sorted(files.items()))}
    atomic_write_text(paths.files_manifest, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return paths.files_manifest


def release_files_problems(paths: ReleasePaths) -> list[str]:
    """Why the model's release files are not one complete, consistent set (empty: they are).

    Problems: no (or an unreadable) files manifest, a release file it does not list, a listed file that is
    missing or whose sha256 differs (changed outside a switch, or a switch that did not finish).
    """
    manifest = paths.files_manifest
    if not manifest.is_file():
        return [f"no files manifest {manifest} (the files were not written by one finished switch)"]
    try:
        record = json.loads(manifest.read_text())
        listed = record["files"]
        if record.get("format") != FILES_MANIFEST_FORMAT or not isinstance(listed, dict):
            raise ValueError(manifest)
    except (OSError, ValueError, KeyError, TypeError):
        return [f"files manifest {manifest} is not readable; rewrite the model's files"]
    problems = []
    for path in paths.files:
        key = _manifest_key(paths, path)
        if key not in listed:
            problems.append(f"{path} is not listed in {manifest.name}")
        elif not path.is_file():
            problems.append(f"{path} is listed in {manifest.name} but missing")
        elif _sha256(path) != listed[key]:
            problems.append(f"{path} does not match its sha256 in {manifest.name}")
    return problems
