"""File plumbing shared by the data-set formats: output checks, atomic writes, fingerprints, sniffing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import numpy as np

from diffplan.errors import DataFileError

SPLITS = ("train", "valid", "test")


def check_output(output: Path, *, force: bool) -> None:
    """Refuse an output path we must not or cannot write, before any work starts."""
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


def write_atomic(output: Path, write: Callable[[IO[bytes]], None], *, force: bool) -> None:
    """Write through ``write(file)`` into a temporary file beside ``output``, then rename it into place.

    An interrupted or failed write leaves no partial file; ``output`` changes only by the final rename.
    """
    check_output(output, force=force)
    # Not tempfile.mkstemp: its files are private (0600); this one gets the usual umask permissions.
    tmp = output.parent / f".{output.name}.{secrets.token_hex(6)}.tmp"
    try:
        file = open(tmp, "xb")  # closed by the with block below
    except OSError as err:
        raise DataFileError(f"cannot write {output}: {err.strerror}; choose another output path.") from err
    try:
        with file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if output.exists() and not force:  # appeared while we were writing
            raise DataFileError(f"{output} already exists; pass --force (force=True) to overwrite it.")
        os.replace(tmp, output)
    except OSError as err:
        raise DataFileError(
            f"cannot write {output}: {err.strerror or err}; check the disk and the folder."
        ) from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def fingerprint(named_arrays: Iterable[tuple[str, np.ndarray]]) -> str:
    """sha256 (hex) over each array's name, dtype, shape and bytes, in the order given.

    The hash covers the arrays' content, not a container's bytes: the same arrays give the same
    fingerprint whatever the zip timestamps or compression.
    """
    digest = hashlib.sha256()
    for name, array in named_arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def require_file(path: Path) -> None:
    """Raise ``DataFileError`` unless ``path`` is an existing file."""
    if not path.exists():
        raise DataFileError(
            f"data set {path} does not exist; generate it with `diffplan data generate` or fix the path."
        )
    if not path.is_file():
        raise DataFileError(f"data set {path} is not a file; pass the path of a .npz or .pth data set.")


def sniff(path: Path) -> str:
    """``"npz"`` or ``"torch"`` from the file's content (both are zip archives), else ``DataFileError``."""
    require_file(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            if file.read(1) == b"\x80":  # a pickle: torch's legacy (pre-zip) format
                return "torch"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DataFileError(
            f"{path} is not a readable data set (truncated or corrupted?); regenerate or re-download it."
        ) from err
    if names and all(name.endswith(".npy") for name in names):
        return "npz"
    if any(name.endswith("data.pkl") for name in names):
        return "torch"
    raise DataFileError(f"{path} is a zip archive but neither a .npz nor a torch file; pass a data-set file.")


def corrupted(path: Path, err: BaseException) -> DataFileError:
    """The error for a file whose container opened but whose content did not read back."""
    detail = str(err).splitlines()[0] if str(err) else err.__class__.__name__
    return DataFileError(f"{path} is corrupted or truncated ({detail}); regenerate or re-download it.")


def check_cells(path: Path, split: str, maze: np.ndarray, goal_cell: np.ndarray) -> np.ndarray:
    """Validate mazes (N, H, W) of 0/1 and flat goal cells (N,) on free cells; return the mazes as uint8."""
    if not np.isin(maze, (0, 1)).all():
        raise DataFileError(
            f"{path}: {split} mazes hold values other than 0 and 1; expected 1 = free, 0 = wall."
        )
    n, h, w = maze.shape
    outside = (goal_cell < 0) | (goal_cell >= h * w)
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        raise DataFileError(
            f"{path}: {split} goal {bad} is cell {int(goal_cell[bad])}, outside the {h}x{w} maze."
        )
    maze = maze.astype(np.uint8)
    on_wall = maze.reshape(n, h * w)[np.arange(n), goal_cell] == 0
    if on_wall.any():
        bad = int(np.flatnonzero(on_wall)[0])
        raise DataFileError(f"{path}: {split} maze {bad} has its goal on a wall; the goal cell must be free.")
    return maze
