"""File plumbing shared by the data-set formats: fingerprints and format sniffing."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from diffplan.errors import DataFileError

SPLITS = ("train", "valid", "test")


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
