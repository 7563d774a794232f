"""Reading release archives: ``verify_archive`` (``diffplan package --verify``) and ``extract_archive``.

An archive is untrusted input. It is read as a stream, one member at a time, each hashed in chunks;
only the members a check needs (``SHA256SUMS``, ``*_info.json``, ``*.ckpt``) are kept in memory, after
the size bounds. Limits, checked while reading, before more is unpacked:

- ``MAX_UNPACKED_BYTES`` (200 MiB): all members together. The v1.0 release unpacks to about 1.1 MB and a
  release checkpoint is under 10 MB (DESIGN section 7).
- ``MAX_RATIO`` (200): unpacked / packed bytes of a member over ``RATIO_FLOOR_BYTES`` (1 MiB). Release
  files compress about 1.1:1 (checkpoints) to 10:1 (JSON); a zip bomb's zeros compress 1000:1. The
  members of a ``.tar.gz`` share one compressed stream; a member's packed size is the stretch of that
  stream its bytes came from.
- ``MAX_MEMBERS`` (10,000) entries; the release has about 50.

Refused outright with ``ArchiveError`` (exit 2): an unreadable archive, one over the limits, encrypted zip
members, compression methods other than stored, deflate, bzip2 and lzma, duplicate names (also names
differing only in case, which one file system holds as one file), and a ``.ckpt`` that
``torch.load(weights_only=True)`` does not read as a release checkpoint (a pickle that would run code).

Reported as problems of the ``VerifyResult`` (exit 1): unsafe entries (absolute paths, ``..``, links,
devices), an archive whose own sha256 differs from the one given or listed in the ``SHA256SUMS`` beside
it, a missing or malformed embedded ``SHA256SUMS``, files that differ from it or that it does not list,
and checkpoints whose sha256 differs from their ``_info.json`` (``model_stats.checkpoint_sha256``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from diffplan._atomic import atomic_path
from diffplan.errors import BadInputError, CheckFailedError, CheckpointError, DataFileError
from diffplan.release.layout import SUMS_NAME

MAX_UNPACKED_BYTES = 200 * 2**20
MAX_RATIO = 200
RATIO_FLOOR_BYTES = 2**20
MAX_MEMBERS = 10_000
MAX_SUMS_BYTES = 2**20  # a SHA256SUMS beside the archive
CHUNK_BYTES = 2**20
_ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](\S.*)$")
_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_REDOWNLOAD = "re-download the release from its source"


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


class ArchiveError(DataFileError):
    """An archive diffplan refuses to read: unreadable, over the limits, or holding unsafe content."""


class UnsafeArchiveError(CheckFailedError):
    """An archive entry that would be written outside the target folder, or is not a plain file."""


@dataclass
class VerifyResult:
    """The outcome of checking an archive: its own sha256, its embedded ``SHA256SUMS``, its checkpoints.

    ``sha256_source`` says what the archive's sha256 was checked against (``--sha256`` or the
    ``SHA256SUMS`` beside it), None when neither was there.
    """

    archive: Path
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)
    archive_sha256: str = ""
    sha256_source: str | None = None
    checkpoints_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Member:
    """One archive entry: ``kind`` is file, dir or other (links, devices ...); ``data`` only when kept."""

    name: str
    kind: str
    size: int = 0
    sha256: str = ""
    data: bytes | None = None


# --- reading, within the limits ---------------------------------------------------------------------


class _Budget:
    """The unpacked bytes read so far, against ``MAX_UNPACKED_BYTES``."""

    def __init__(self, path: Path):
        self.path, self.total = path, 0

    def claim(self, name: str, size: int) -> None:
        """Refuse ``size`` more bytes for ``name`` if they would pass the limit (before reading them)."""
        if self.total + size > MAX_UNPACKED_BYTES:
            raise ArchiveError(
                f"{self.path}: unpacks to more than {_mib(MAX_UNPACKED_BYTES)} (at {name!r}); a release "
                f"archive is far smaller, so it is refused unread: {_REDOWNLOAD}."
            )
        self.total += size


def _check_ratio(path: Path, name: str, unpacked: int, packed: int) -> None:
    if unpacked > RATIO_FLOOR_BYTES and unpacked > MAX_RATIO * max(packed, 1):
        raise ArchiveError(
            f"{path}: member {name!r} unpacks {unpacked} bytes from {packed} (over {MAX_RATIO}:1), like a "
            f"zip bomb; refused: {_REDOWNLOAD}."
        )


class _Names:
    """The entry names seen so far: at most ``MAX_MEMBERS``, no two the same file once extracted."""

    def __init__(self, path: Path):
        self.path, self.seen = path, {}

    def add(self, name: str) -> None:
        if len(self.seen) >= MAX_MEMBERS:
            raise ArchiveError(f"{self.path}: over {MAX_MEMBERS} entries; not a release archive.")
        key = PurePosixPath(name.replace("\\", "/")).as_posix().casefold()
        if key in self.seen:
            first = self.seen[key]
            same = "twice" if first == name else f"as {first!r} and {name!r}"
            raise ArchiveError(
                f"{self.path}: entry {name!r} appears {same}; an archive with duplicate names is refused "
                f"(one would overwrite the other on extraction): {_REDOWNLOAD}."
            )
        self.seen[key] = name


def _read_file(name: str, handle: BinaryIO, budget: _Budget, keep: bool, declared: int) -> Member:
    """Hash a member in chunks (keeping its bytes if asked); ``declared`` is claimed before reading."""
    budget.claim(name, declared)
    digest, parts, size = hashlib.sha256(), [], 0
    while chunk := handle.read(CHUNK_BYTES):
        size += len(chunk)
        if size > declared:
            budget.claim(name, len(chunk))
        digest.update(chunk)
        if keep:
            parts.append(chunk)
    return Member(name, "file", size, digest.hexdigest(), b"".join(parts) if keep else None)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    if info.is_dir():
        return "dir"
    file_type = stat.S_IFMT(info.external_attr >> 16)
    # No type bits (ZipFile.writestr, DOS and Windows tools): a plain file.
    return "file" if file_type in (0, stat.S_IFREG) else "other"


def _zip_members(path: Path, keep: Callable[[str], bool]) -> Iterator[Member]:
    with zipfile.ZipFile(path) as archive:
        infos, names = archive.infolist(), _Names(path)
        for info in infos:
            names.add(info.filename)
            if info.flag_bits & 0x1:
                raise ArchiveError(
                    f"{path}: member {info.filename!r} is encrypted; release archives are not: {_REDOWNLOAD}."
                )
            if info.compress_type not in _ZIP_METHODS:
                raise ArchiveError(
                    f"{path}: member {info.filename!r} uses compression method {info.compress_type}, which "
                    f"diffplan does not read (it reads {', '.join(_ZIP_METHODS.values())}): {_REDOWNLOAD}."
                )
            _check_ratio(path, info.filename, info.file_size, info.compress_size)
        declared = sum(info.file_size for info in infos)
        if declared > MAX_UNPACKED_BYTES:
            raise ArchiveError(
                f"{path}: its members add up to {declared} bytes, over the limit of "
                f"{_mib(MAX_UNPACKED_BYTES)}; a release archive is far smaller: {_REDOWNLOAD}."
            )
        budget = _Budget(path)
        for info in infos:
            kind = _zip_kind(info)
            if kind != "file":
                yield Member(info.filename, kind)
                continue
            with archive.open(info) as handle:  # reads at most info.file_size bytes, checks the CRC
                yield _read_file(info.filename, handle, budget, keep(info.filename), info.file_size)


class _Counted:
    """A read-only stream counting the bytes read through it."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.count = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data


class _Gunzip:
    """The decompressed bytes of a gzip stream, never more than ``limit``; ``packed`` counts the
    compressed bytes consumed so far (to measure each tar member's ratio)."""

    def __init__(self, raw: BinaryIO, path: Path, limit: int):
        self.raw, self.path, self.limit = raw, path, limit
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.tail, self.packed, self.unpacked, self.done = b"", 0, 0, False

    def read(self, size: int = -1) -> bytes:
        size = CHUNK_BYTES if size is None or size < 0 else size
        out = bytearray()
        while len(out) < size and not self.done:
            if not self.tail:
                self.tail = self.raw.read(2**16)
                if not self.tail:
                    raise EOFError("the compressed stream ends early (truncated)")
            fed = len(self.tail)
            out += self.inflate.decompress(self.tail, size - len(out))
            self.tail = self.inflate.unconsumed_tail
            if self.inflate.eof:  # gzip members may follow one another; trailing zeros end the stream
                rest = self.inflate.unused_data
                self.packed += fed - len(rest)
                more = rest or self.raw.read(2**16)
                if more.strip(b"\0"):
                    self.tail, self.inflate = more, zlib.decompressobj(16 + zlib.MAX_WBITS)
                else:
                    self.tail, self.done = b"", True
            else:
                self.packed += fed - len(self.tail)
        self.unpacked += len(out)
        if self.unpacked > self.limit:
            raise ArchiveError(
                f"{self.path}: unpacks to more than {_mib(self.limit)}; a release archive is far smaller, "
                f"so it is refused: {_REDOWNLOAD}."
            )
        return bytes(out)


def _tar_members(path: Path, keep: Callable[[str], bool]) -> Iterator[Member]:
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        counted = _Counted(raw)
        # Headers are unpacked bytes too (a GNU long name can claim any size): bound the whole stream.
        stream = _Gunzip(counted, path, MAX_UNPACKED_BYTES + MAX_MEMBERS * 3 * tarfile.BLOCKSIZE)
        source = stream if gzipped else counted
        budget, names = _Budget(path), _Names(path)
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for info in tar:
                names.add(info.name)
                if not info.isfile():
                    yield Member(info.name, "dir" if info.isdir() else "other")
                    continue
                packed_before = stream.packed if gzipped else counted.count
                handle = tar.extractfile(info)
                member = _read_file(info.name, handle, budget, keep(info.name), info.size)
                packed = (stream.packed if gzipped else counted.count) - packed_before
                _check_ratio(path, info.name, member.size, packed if gzipped else member.size)
                yield member


def _members(path: Path, keep: Callable[[str], bool] = lambda name: True) -> list[Member]:
    """Every entry of a ``.tar.gz``/``.tgz``/``.tar`` or ``.zip``, read within the limits (module doc);
    the bytes of the files ``keep(name)`` selects are kept. Raises ``ArchiveError``."""
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        reader = _tar_members
    elif path.name.endswith(".zip"):
        reader = _zip_members
    else:
        raise BadInputError(f"{path} is not a .tar.gz or .zip archive.")
    try:
        return list(reader(path, keep))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, ValueError) as err:
        detail = (str(err).splitlines() or [type(err).__name__])[0]
        raise ArchiveError(
            f"{path} is not a readable archive ({type(err).__name__}: {detail}); re-download it."
        ) from err


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


def _safety_problems(entries: list[Member]) -> list[str]:
    problems = []
    for entry in entries:
        reason = unsafe_reason(entry.name)
        if reason is not None:
            problems.append(f"unsafe entry {entry.name!r}: {reason}")
        elif entry.kind == "other":
            problems.append(f"unsafe entry {entry.name!r}: a link or special file, not a plain file")
    return problems


# --- verifying ---------------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_sha256(path: Path, sha256: str | None) -> tuple[str, str] | None:
    """(expected sha256, where it came from): ``sha256`` if given, else the line for the archive in the
    ``SHA256SUMS`` beside it (as ``diffplan package`` writes it in ``dist/``), else None."""
    if sha256 is not None:
        if not isinstance(sha256, str) or not _HEX_SHA256.match(sha256.strip()):
            raise BadInputError(
                f"--sha256 {sha256!r} is not a sha256 (64 hex digits); copy it from the release's "
                f"{SUMS_NAME}."
            )
        return sha256.strip().lower(), "--sha256"
    sums = path.parent / SUMS_NAME
    if not sums.is_file():
        return None
    if sums.stat().st_size > MAX_SUMS_BYTES:
        raise BadInputError(
            f"{sums} is over {MAX_SUMS_BYTES} bytes, not a checksum list; remove or replace it."
        )
    for line in sums.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _SUMS_LINE.match(line.strip())
        if match and match.group(2).removeprefix("./") == path.name:
            return match.group(1).lower(), str(sums)
    return None


def _kept(name: str) -> bool:
    return name.endswith((f"/{SUMS_NAME}", "_info.json", ".ckpt"))


def _check_checkpoints(path: Path, files: dict[str, Member], result: VerifyResult) -> None:
    """Every ``.ckpt`` loads as a release checkpoint with ``weights_only=True`` (else ``ArchiveError``)
    and matches the sha256 its ``_info.json`` records (else a problem)."""
    from diffplan.release.checkpoint import load_release_record  # imports torch: only when verifying

    for name in sorted(n for n in files if n.endswith(".ckpt")):
        member = files[name]
        try:
            load_release_record(io.BytesIO(member.data or b""), f"{name} in {path}")
        except CheckpointError as err:
            raise ArchiveError(f"{err} The archive is refused: {_REDOWNLOAD}.") from err
        result.checkpoints_checked += 1
        info_name = f"{name[: -len('.ckpt')]}_info.json"
        if info_name not in files:
            result.problems.append(
                f"{name} has no {PurePosixPath(info_name).name} to check its sha256 against"
            )
            continue
        try:
            recorded = json.loads(files[info_name].data or b"")["model_stats"]["checkpoint_sha256"]
        except (ValueError, KeyError, TypeError):
            recorded = None
        if not isinstance(recorded, str):
            result.problems.append(f"{info_name} records no model_stats.checkpoint_sha256 for {name}")
        elif recorded.lower() != member.sha256:
            result.problems.append(
                f"{name} has sha256 {member.sha256} but {info_name} records {recorded} (modified or replaced)"
            )


def verify_archive(path: str | Path, *, sha256: str | None = None) -> VerifyResult:
    """Check a release archive without extracting it (limits and refusals: module docstring).

    In order, each step only when the previous ones found nothing: the archive's own sha256 against
    ``sha256`` (hex) or, when not given, its line in the ``SHA256SUMS`` beside the archive
    (``dist/SHA256SUMS``) if there is one; the archive read within the limits; its entries' safety; a
    single top folder (or the one folder in it that holds every file, for a release packaged from a
    sub-root: ``pretrained_models/v1.1/``); every file against the embedded ``SHA256SUMS``; every
    checkpoint loadable with ``weights_only=True`` as a release checkpoint and matching its
    ``_info.json``.

    Raises ``BadInputError`` for a missing archive or a malformed ``sha256``, ``ArchiveError`` for an
    archive refused unread or holding an unsafe checkpoint; other findings are ``problems``.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"archive {path} does not exist; give the path of a downloaded release archive.")
    if path.stat().st_size > MAX_UNPACKED_BYTES + MAX_MEMBERS * 3 * tarfile.BLOCKSIZE:
        raise ArchiveError(
            f"{path} is {path.stat().st_size} bytes, more than a release archive can unpack to "
            f"({_mib(MAX_UNPACKED_BYTES)}); it is not read: {_REDOWNLOAD}."
        )
    result = VerifyResult(path, archive_sha256=_file_sha256(path))
    expected = _expected_sha256(path, sha256)
    if expected is not None:
        digest, result.sha256_source = expected
        if digest != result.archive_sha256:
            result.problems.append(
                f"{path} has sha256 {result.archive_sha256} but {result.sha256_source} says {digest}: the "
                f"archive was modified or corrupted, {_REDOWNLOAD}"
            )
            return result  # not opened: it is not the archive that was released
    entries = _members(path, _kept)
    result.problems = _safety_problems(entries)
    if result.problems:
        return result
    files = {entry.name: entry for entry in entries if entry.kind == "file"}
    tops = {PurePosixPath(name).parts[0] for name in files}
    if len(tops) != 1:
        result.problems.append(f"expected one top folder, found {', '.join(sorted(tops)) or 'none'}")
        return result
    top = tops.pop()
    inner = {PurePosixPath(name).parts[1] for name in files if len(PurePosixPath(name).parts) > 2}
    if (
        f"{top}/{SUMS_NAME}" not in files
        and len(inner) == 1
        and all(len(PurePosixPath(name).parts) > 2 for name in files)
        and f"{top}/{next(iter(inner))}/{SUMS_NAME}" in files
    ):
        top = f"{top}/{inner.pop()}"  # a release of a sub-root: pretrained_models/v1.1/
    sums_name = f"{top}/{SUMS_NAME}"
    if sums_name not in files:
        result.problems.append(f"no {SUMS_NAME} in {top}/")
        return result
    listed: dict[str, str] = {}
    for number, line in enumerate((files[sums_name].data or b"").decode("utf-8", "replace").splitlines(), 1):
        match = _SUMS_LINE.match(line)
        if not match or unsafe_reason(match.group(2)):
            result.problems.append(f"{SUMS_NAME} line {number} is not '<sha256>  <path>': {line[:80]!r}")
            continue
        listed[f"{top}/{match.group(2)}"] = match.group(1).lower()
    for name, digest in sorted(listed.items()):
        if name not in files:
            result.problems.append(f"{name} is listed in {SUMS_NAME} but missing from the archive")
        elif files[name].sha256 != digest:
            result.problems.append(f"{name} does not match its sha256 in {SUMS_NAME} (modified or corrupted)")
        else:
            result.files_checked += 1
    for name in sorted(set(files) - set(listed) - {sums_name}):
        result.problems.append(f"{name} is in the archive but not listed in {SUMS_NAME}")
    if not result.problems:  # the files are the ones listed: now check what they hold
        _check_checkpoints(path, files, result)
    return result


def extract_archive(path: str | Path, target: str | Path) -> list[Path]:
    """Extract a release archive into ``target``, refusing it whole (nothing written) if it is over the
    limits (``ArchiveError``) or any entry could leave ``target`` (``UnsafeArchiveError``)."""
    target = Path(target).resolve()
    entries = _members(Path(path))
    problems = _safety_problems(entries)
    for entry in entries:
        destination = (target / entry.name).resolve()
        if not unsafe_reason(entry.name) and target not in destination.parents and destination != target:
            problems.append(f"unsafe entry {entry.name!r}: resolves outside {target}")
    if problems:
        raise UnsafeArchiveError(f"refusing to extract {path}: {'; '.join(problems[:3])}.")
    written = []
    for entry in entries:
        destination = target / entry.name
        if entry.kind == "dir":
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(destination) as tmp:
            tmp.write_bytes(entry.data or b"")
        written.append(destination)
    return written
