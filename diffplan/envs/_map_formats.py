"""Parsers for the field's single-map files: text mazes, MovingAI ``.map`` / ``.scen``, ``.npy``, images.

Each returns mazes as ``uint8`` arrays, 1 = free, 0 = wall, and raises ``DataFileError`` with one
sentence naming the file (and the line, for text formats) and what to do. Sizes are checked against
the limits of ``_files`` from headers, before anything is allocated.

- Text maze: ``#`` wall, ``.`` free, optional ``G`` goal and ``S`` start marks (both free); every row
  has the same length (ragged rows are refused rather than padded); trailing whitespace, CRLF and
  blank lines before and after the maze are ignored.
- MovingAI ``.map``: ``type <t>``, ``height <H>``, ``width <W>``, ``map``, then H rows of W characters;
  ``.`` and ``G`` (ground) are passable, ``@ O T S W`` are not. ``G`` here is not a goal mark.
- MovingAI ``.scen``: ``version 1``, then rows ``bucket map width height start_x start_y goal_x goal_y
  optimal_length`` (tab-separated); x is the column, y the row, (0, 0) the top-left cell.
- ``.npy``: (H, W) or (N, H, W) of 0/1 (1 = free); bool, integer or float.
- Image: a pixel is a cell; grey levels (0 black .. 1 white) below ``threshold`` are walls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffplan.envs._files import MAX_TEXT_BYTES, NPY_MAGIC, check_size
from diffplan.errors import BadInputError, DataFileError

PASSABLE_MOVINGAI = ".G"
BLOCKED_MOVINGAI = "@OTSW"
_INVALID = 255


def _lookup(free: str, walls: str) -> np.ndarray:
    table = np.full(256, _INVALID, dtype=np.uint8)
    table[np.frombuffer(free.encode(), np.uint8)] = 1
    table[np.frombuffer(walls.encode(), np.uint8)] = 0
    return table


_MOVINGAI_CELLS = _lookup(PASSABLE_MOVINGAI, BLOCKED_MOVINGAI)
_TEXT_CELLS = _lookup(".GS", "#")


def _lines(path: Path, what: str) -> list[str]:
    """The file's lines (CRLF or LF), refusing files larger than any map we accept."""
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise DataFileError(
            f"{path} is {size / 2**20:.0f} MiB, over the {MAX_TEXT_BYTES >> 20} MiB limit for a {what}; "
            "is it the right file?"
        )
    try:
        return path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as err:
        raise DataFileError(f"cannot read {path} ({err.strerror or err}); check the path.") from err


def _cells(path: Path, rows: list[str], first_line: int, table: np.ndarray, allowed: str) -> np.ndarray:
    """(H, W) uint8 from equal-length rows through a character table; names the first bad character."""
    raw = np.frombuffer("".join(rows).encode("latin-1", errors="replace"), dtype=np.uint8)
    cells = table[raw]
    bad = np.flatnonzero(cells == _INVALID)
    if len(bad):
        row, col = divmod(int(bad[0]), len(rows[0]))
        raise DataFileError(
            f"{path} line {first_line + row}, column {col + 1}: unexpected character "
            f"{rows[row][col]!r}; the map may hold only {' '.join(allowed)}."
        )
    return cells.reshape(len(rows), len(rows[0]))


def _mark(path: Path, maze_rows: list[str], first_line: int, char: str) -> tuple[int, int] | None:
    found = [(r, row.index(char)) for r, row in enumerate(maze_rows) if char in row]
    if sum(row.count(char) for row in maze_rows) > 1:
        raise DataFileError(
            f"{path} has more than one {char!r} mark (first on line {first_line + found[0][0]}); "
            f"a text maze has at most one {'goal' if char == 'G' else 'start'}."
        )
    return found[0] if found else None


def read_text_maze(path: Path) -> tuple[np.ndarray, tuple[int, int] | None, tuple[int, int] | None]:
    """``(maze (H, W) uint8, goal (row, col) or None, start (row, col) or None)`` of a text maze."""
    lines = [line.rstrip() for line in _lines(path, "text maze")]
    filled = [i for i, line in enumerate(lines) if line]
    if not filled:
        raise DataFileError(
            f"{path} holds no maze rows; write one row of '#' (wall) and '.' (free) per line."
        )
    first = filled[0]
    rows = lines[first : filled[-1] + 1]
    for offset, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise DataFileError(
                f"{path} line {first + offset + 1} has {len(row)} cells but line {first + 1} has "
                f"{len(rows[0])}; every row of a text maze must be as long (pad with '#')."
            )
    check_size(path, 1, len(rows), len(rows[0]), "the maze")
    maze = _cells(path, rows, first + 1, _TEXT_CELLS, "#.GS")
    return maze, _mark(path, rows, first + 1, "G"), _mark(path, rows, first + 1, "S")


def _header_int(path: Path, value: str | None, line: int | None, key: str) -> int:
    if value is None:
        raise DataFileError(f"{path}: the header has no '{key}' line; a .map starts type/height/width/map.")
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise DataFileError(f"{path} line {line}: {key} {value!r} is not a positive whole number.")
    return number


def read_movingai(path: Path) -> np.ndarray:
    """(H, W) uint8 of a MovingAI ``.map`` (1 = passable)."""
    lines = _lines(path, "MovingAI map")
    header: dict[str, tuple[str, int]] = {}
    index = 0
    while True:
        if index == len(lines):
            raise DataFileError(
                f"{path} has no 'map' line; a MovingAI .map starts with type, height, width and map lines."
            )
        line = lines[index].strip()
        index += 1
        if not line:
            continue
        key, _, value = line.partition(" ")
        key = key.lower()
        if key == "map" and not value:
            break
        if key not in ("type", "height", "width"):
            raise DataFileError(
                f"{path} line {index}: {line[:40]!r} is not a .map header line (type, height, width, map)."
            )
        header[key] = (value.strip(), index)
    if "type" not in header:
        raise DataFileError(f"{path}: the header has no 'type' line; a .map starts type/height/width/map.")
    height = _header_int(path, *header.get("height", (None, None)), "height")
    width = _header_int(path, *header.get("width", (None, None)), "width")
    check_size(path, 1, height, width, "the map")
    rows = [line.rstrip() for line in lines[index : index + height]]
    if len(rows) < height:
        raise DataFileError(
            f"{path} ends after {len(rows)} of the {height} map rows its header announces; "
            "the file is truncated or its height is wrong."
        )
    for offset, row in enumerate(rows):
        if len(row) != width:
            raise DataFileError(
                f"{path} line {index + offset + 1} has {len(row)} cells but the header says width {width}."
            )
    extra = next((i for i in range(index + height, len(lines)) if lines[i].strip()), None)
    if extra is not None:
        raise DataFileError(
            f"{path} line {extra + 1}: more than the {height} map rows the header announces; "
            "fix the height or remove the extra rows."
        )
    return _cells(path, rows, index + 1, _MOVINGAI_CELLS, PASSABLE_MOVINGAI + BLOCKED_MOVINGAI)


def read_scen(path: Path, height: int, width: int) -> list[tuple[int, int, int]]:
    """The distinct goals of a MovingAI ``.scen`` as (row, col, line), in file order.

    Every row must be for a ``width`` x ``height`` map (the map the goals are placed on).
    """
    lines = _lines(path, "MovingAI scenario")
    goals: dict[tuple[int, int], int] = {}
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    if start < len(lines) and lines[start].strip().lower().startswith("version"):
        start += 1
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1].strip()
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 9:
            fields = line.split()
        if len(fields) != 9:
            raise DataFileError(
                f"{path} line {number} has {len(fields)} fields; a .scen row is bucket, map, width, height, "
                "start x, start y, goal x, goal y, optimal length (tab-separated)."
            )
        try:
            map_w, map_h, _, _, goal_x, goal_y = (int(field) for field in fields[2:8])
            float(fields[8])
        except ValueError as err:
            raise DataFileError(
                f"{path} line {number}: width, height and coordinates must be whole numbers ({err})."
            ) from err
        if (map_h, map_w) != (height, width):
            raise DataFileError(
                f"{path} line {number} is for a {map_w}x{map_h} (width x height) map but the map is "
                f"{width}x{height}; pass the .scen of this map."
            )
        if not (0 <= goal_x < width and 0 <= goal_y < height):
            raise DataFileError(
                f"{path} line {number}: goal x={goal_x}, y={goal_y} is off the {width}x{height} map."
            )
        goals.setdefault((goal_y, goal_x), number)
    if not goals:
        raise DataFileError(f"{path} holds no scenario rows; pass a MovingAI .scen with at least one.")
    return [(row, col, line) for (row, col), line in goals.items()]


def read_npy(path: Path) -> np.ndarray:
    """(N, H, W) uint8 from an ``.npy`` of (H, W) or (N, H, W) 0/1 values; the header is checked first."""
    try:
        with open(path, "rb") as file:
            if file.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise ValueError("not an .npy file")
            file.seek(0)
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(file)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(file)
    except (OSError, ValueError, EOFError) as err:
        raise DataFileError(
            f"{path} is not a readable .npy file ({err}); re-save it with numpy.save."
        ) from err
    if len(shape) not in (2, 3):
        raise DataFileError(
            f"{path} holds an array of shape {tuple(shape)}; expected (H, W) or (N, H, W) with 1 = free."
        )
    if dtype.kind not in "biuf":
        raise DataFileError(f"{path} holds {dtype} values; expected numbers 0 and 1 (1 = free).")
    n, h, w = (1, *shape) if len(shape) == 2 else shape
    check_size(path, n, h, w)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataFileError(f"{path} is truncated or corrupted ({err}); re-save it with numpy.save.") from err
    if not np.isin(array, (0, 1)).all():
        raise DataFileError(f"{path} holds values other than 0 and 1; expected 1 = free, 0 = wall.")
    return array.reshape(n, h, w).astype(np.uint8)


def _grey(image) -> np.ndarray:
    """(H, W) float64 grey levels in [0, 1]; transparent pixels count as white (no ink)."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        return np.asarray(image, dtype=np.float64) / 65535.0
    if image.mode == "F":
        return np.asarray(image, dtype=np.float64)
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def read_image(path: Path, threshold: float = 0.5) -> np.ndarray:
    """(H, W) uint8 of an image: a cell is free where its grey level is at least ``threshold``."""
    from PIL import Image, UnidentifiedImageError

    if not 0.0 < threshold <= 1.0:
        raise BadInputError(f"threshold {threshold!r} must lie in (0, 1]; 0.5 splits dark walls from light.")
    try:
        with Image.open(path) as image:
            width, height = image.size
            check_size(path, 1, height, width, "the image")
            grey = _grey(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        detail = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise DataFileError(
            f"{path} cannot be read as an image ({detail}); pass a PNG, JPEG, BMP, GIF or TIFF file."
        ) from err
    return (grey >= threshold).astype(np.uint8)
