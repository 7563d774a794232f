"""File plumbing shared by the data-set and map formats: fingerprints, format sniffing, size limits."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

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


def fingerprint_blocks(
    arrays: Iterable[tuple[str, np.dtype, tuple[int, ...], Iterable[np.ndarray]]],
) -> str:
    """``fingerprint`` of arrays given as (name, dtype, shape, C-order blocks along the first axis): the
    same digest, without holding any array whole."""
    digest = hashlib.sha256()
    for name, dtype, shape, blocks in arrays:
        shape = tuple(shape) or (1,)  # as ``fingerprint`` sees a 0-d array, through np.ascontiguousarray
        digest.update(f"{name}|{np.dtype(dtype).str}|{shape}\n".encode())
        for block in blocks:
            digest.update(np.ascontiguousarray(block).reshape(-1).view(np.uint8))
    return digest.hexdigest()


def require_file(path: Path) -> None:
    """Raise ``DataFileError`` unless ``path`` is an existing file."""
    if not path.exists():
        raise DataFileError(
            f"data set {path} does not exist; generate it with `diffplan data generate` or fix the path."
        )
    if not path.is_file():
        raise DataFileError(
            f"data set {path} is not a file; pass the path of a data set (.npz, .pth) or a map file."
        )


IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)
TEXT_MAZE_SUFFIXES = frozenset({".txt", ".maze"})
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"P2", b"P5", b"P6")
_TEXT_MAZE_CHARS = frozenset(b"#.GS \t\r\n")
NPY_MAGIC = b"\x93NUMPY"

# Limits checked from headers before anything is allocated (DESIGN section 8).
MAX_MAP_SIDE = 4096
MAX_MAP_CELLS = MAX_MAP_SIDE * MAX_MAP_SIDE  # one map
MAX_SPLIT_CELLS = 1 << 28  # all maps of one split together (maps x height x width)
MAX_TEXT_BYTES = 64 << 20  # a text map or .scen file
TORCH_SLACK_BYTES = 1 << 20  # a torch zip file's records may unpack to its size plus this


def check_size(path: Path, maps: int, height: int, width: int, what: str = "the maps") -> None:
    """Refuse map sizes over the limits before allocating them (``DataFileError`` naming the file)."""
    if height < 1 or width < 1:
        raise DataFileError(f"{path}: {what} are {height}x{width}; a map needs at least one row and column.")
    if height * width > MAX_MAP_CELLS:
        raise DataFileError(
            f"{path}: {what} are {height}x{width} cells, over the limit of {MAX_MAP_SIDE}x{MAX_MAP_SIDE} "
            "cells per map; crop or downscale the map."
        )
    if maps * height * width > MAX_SPLIT_CELLS:
        raise DataFileError(
            f"{path}: {maps} maps of {height}x{width} cells exceed the limit of {MAX_SPLIT_CELLS} cells per "
            "split; use fewer maps or goals (num_goals / --num-goals)."
        )


def torch_zip_problem(file: Path | BinaryIO) -> str | None:
    """Why a torch file must not be handed to ``torch.load``, or None: a zip-format torch file whose records
    unpack to more than the file holds. ``torch.save`` stores its records uncompressed, but ``torch.load``
    also inflates compressed ones, so a small file could otherwise unpack to gigabytes (a zip bomb)."""
    try:
        if not zipfile.is_zipfile(file):
            return None
        with zipfile.ZipFile(file) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        size = file.stat().st_size if isinstance(file, Path) else file.seek(0, 2)
    except (OSError, zipfile.BadZipFile, ValueError):
        return None  # torch.load says what is wrong with it
    finally:
        if not isinstance(file, Path):
            file.seek(0)
    if unpacked > size + TORCH_SLACK_BYTES:
        return (
            f"its records unpack to {unpacked} bytes from a file of {size}; torch.save stores them "
            "uncompressed, so it was not written by torch.save (a zip bomb?)"
        )
    return None


def sniff(path: Path) -> str:
    """The format of ``path``, from its content where it has a signature, else from its suffix.

    One of ``"npz"``, ``"torch"`` (both zip archives), ``"npy"``, ``"image"``, ``"movingai"`` (a
    MovingAI ``.map``), ``"scen"`` (a MovingAI scenario) or ``"text"`` (a ``#``/``.`` text maze).
    Anything else raises ``DataFileError``.
    """
    require_file(path)
    with open(path, "rb") as file:
        head = file.read(4096)
    suffix = path.suffix.lower()
    if not zipfile.is_zipfile(path):
        if head[:1] == b"\x80":  # a pickle: torch's legacy (pre-zip) format
            return "torch"
        if head.startswith(NPY_MAGIC):
            return "npy"
        if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
            return "image"
        if suffix in IMAGE_SUFFIXES:
            return "image"  # no known signature: the image reader says what is wrong with it
        first = next((line.strip() for line in head.splitlines() if line.strip()), b"")
        if first.lower().startswith(b"type ") or suffix == ".map":
            return "movingai"
        if first.lower().startswith(b"version") or suffix == ".scen":
            return "scen"
        if suffix in TEXT_MAZE_SUFFIXES or (first and set(head) <= _TEXT_MAZE_CHARS):
            return "text"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DataFileError(
            f"{path} is not a readable data set (truncated or corrupted?); regenerate or re-download it, "
            "or pass a map file (.map, .txt, .npy, an image)."
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


def check_cells(
    path: Path, split: str, maze: np.ndarray, goal_cell: np.ndarray, *, first: int = 0
) -> np.ndarray:
    """Validate mazes (N, H, W) of 0/1 and flat goal cells (N,) on free cells; return the mazes as uint8.

    ``first``: the index in the split of the first maze given, for the messages.
    """
    if not np.isin(maze, (0, 1)).all():
        raise DataFileError(
            f"{path}: {split} mazes hold values other than 0 and 1; expected 1 = free, 0 = wall."
        )
    n, h, w = maze.shape
    if goal_cell.dtype.kind not in "iu":
        raise DataFileError(
            f"{path}: {split} goal cells are {goal_cell.dtype} values; expected whole numbers "
            "(row * width + col)."
        )
    outside = (goal_cell < 0) | (goal_cell >= h * w)
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        raise DataFileError(
            f"{path}: {split} goal {first + bad} is cell {int(goal_cell[bad])}, outside the {h}x{w} maze."
        )
    maze = maze.astype(np.uint8)
    on_wall = maze.reshape(n, h * w)[np.arange(n), goal_cell] == 0
    if on_wall.any():
        bad = first + int(np.flatnonzero(on_wall)[0])
        raise DataFileError(f"{path}: {split} maze {bad} has its goal on a wall; the goal cell must be free.")
    return maze
