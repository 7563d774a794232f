"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

An interrupted write never leaves a half-written file under the final name (DESIGN section 8).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from diffplan.errors import DataFileError


def check_output(output: Path, *, force: bool) -> None:
    """Refuse an output path we must not or cannot write, before any work starts (``DataFileError``)."""
    parent = output.parent
    if output.is_dir():
        raise DataFileError(f"output {output} is a folder; pass a file path such as {output / 'mazes.npz'}.")
    if not parent.exists():
        raise DataFileError(f"cannot write {output}: folder {parent} does not exist; create it first.")
    if not parent.is_dir():
        raise DataFileError(
            f"cannot write {output}: {parent} is a file, not a folder; choose another output path."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataFileError(
            f"cannot write {output}: no write permission in {parent}; choose another output path."
        )
    if output.exists() and not force:
        raise DataFileError(f"{output} already exists; pass --force (force=True) to overwrite it.")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp files are private (0600); the final file gets the usual permissions under the umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_atomic(output: Path, write: Callable[[IO[bytes]], None], *, force: bool) -> None:
    """Check ``output`` (``check_output``), then write through ``write(file)`` atomically and durably.

    The data reach the disk (fsync) before the rename; ``output`` is re-checked just before it, so a file
    that appeared meanwhile is not overwritten without ``force``. OS errors become ``DataFileError``.
    """
    check_output(output, force=force)
    try:
        with atomic_path(output) as tmp:
            with open(tmp, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            if output.exists() and not force:  # appeared while we were writing
                raise DataFileError(f"{output} already exists; pass --force (force=True) to overwrite it.")
    except OSError as err:
        reason = err.strerror or err
        raise DataFileError(f"cannot write {output}: {reason}; check the disk and the folder.") from err
