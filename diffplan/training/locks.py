"""One training at a time per release model and per run folder (OS locks, released when a process dies).

Two locks, taken in this order by the process that writes files (rank 0 under DDP):

- the release model's: ``<release root>/<folder>/.<name>.train.lock``, hidden (never packaged) and
  removed when the run ends, so two runs of one model with different ``--run-root`` are refused too;
- the run folder's: ``<run root>/<name>/.lock``.

A lock file holds the holder's pid; a refused run reads it for its message and never truncates it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from diffplan.errors import TrainingError


def release_lock_path(release_folder: Path, name: str) -> Path:
    return release_folder / f".{name}.train.lock"


@contextlib.contextmanager
def file_lock(path: Path, name: str, *, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) or raise ``TrainingError`` naming its holder.

    ``remove``: delete the file when done. A run that opened the file just before it was deleted then
    finds that the path no longer names the file it locked, and tries again on the new file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        handle = open(path, "a+")  # "a+", not "w": opening must not truncate the holder's pid
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            owner = f" (pid {holder})" if holder.isdigit() else ""
            raise TrainingError(
                f"{name} is already being trained by another process{owner} (lock {path}); "
                f"wait for it to finish."
            ) from err
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # the holder removed the file as we opened it: lock the new one
    else:
        raise TrainingError(f"could not lock {path} for {name}; another run keeps replacing it.")
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        handle.close()


@contextlib.contextmanager
def training_locks(release_folder: Path, run_dir: Path, name: str) -> Iterator[None]:
    """The release model's lock, then the run folder's."""
    with file_lock(release_lock_path(release_folder, name), name, remove=True):
        with file_lock(run_dir / ".lock", name):
            yield
