"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

An interrupted write never leaves a half-written file under the final name (DESIGN section 8).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from diffplan.errors import BadInputError


def check_writable_target(path: Path, force: bool) -> None:
    """Refuse a target whose folder is missing or that exists (unless ``force``), before any work."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"{path} is a folder; give a file path to write.")
    if not path.parent.is_dir():
        raise BadInputError(f"folder {path.parent} does not exist; create it first or choose another path.")
    if path.exists() and not force:
        raise BadInputError(f"{path} already exists; pass --force to overwrite it.")
    if not os.access(path.parent, os.W_OK):
        raise BadInputError(f"no permission to write in {path.parent}; choose a writable folder.")


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
