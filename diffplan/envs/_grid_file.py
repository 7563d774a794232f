"""Grid data-set files (``.npz``): our layout and the field's nine- and twelve-array layouts.

Our files are the published nine-array layout (``arr_0..arr_8``: maze, goal, one-hot policy per split,
float64) followed by named arrays: ``{split}_optimal`` (N, 4, H, W) bool with every optimal action,
``diffplan_format`` (the marker) and ``metadata`` (a JSON string). Readers of the published file read
ours unchanged. Whatever labels a file carries, loading recomputes them for ``4abs-cc`` from maze + goal.

Layouts read, by the arrays' count and shapes (train, valid, test in that order):

- ``ours`` / ``published-9``: maze (N, H, W), goal (N, 1, H, W), policy (N, 4, 1, H, W) per split.
- ``gppn-9``: the same nine arrays with another mechanism's labels: policy (N, C, O, H, W) with C
  actions (8 for Moore) and goal (N, O, H, W) over O orientations (the goal cell is where any is set).
- ``published-12``: maze, goal, policy (N, 4, 1, H, W), values per split (DiffPlan's later layout).
- ``neural-astar-12``: Neural A*'s planning-datasets: map float32 (N, H, W) (1 = free), goal
  (N, 1, H, W), eight-direction policy (N, 8, 1, H, W), distance (N, 1, H, W) per split. Its maps have
  no wall border: off the map counts as a wall, as it does everywhere in diffplan.

A goal on a wall is refused (the map, not the loader, is wrong); a goal that reaches few cells is
kept: scoring then has few scored cells for that map.

Reading is bounded before anything is allocated (DESIGN section 8): sizes come from the ``.npy`` headers
and are checked against ``_files``' limits; the maze and goal arrays are read in blocks of maps as they
decompress (checked block by block, kept as one byte per cell), and fingerprints hash every array in
blocks, so an array that unpacks to gigabytes (a zip bomb) costs no more memory than a block. Arrays that
are read whole (the marker, the metadata, anything a layout does not use) must be small
(``MAX_SMALL_ARRAY_BYTES``); policy labels have at most ``MAX_LABEL_CHANNELS`` channels.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from diffplan.envs._files import SPLITS, check_cells, check_size, corrupted, fingerprint_blocks
from diffplan.envs.actions import NUM_ACTIONS
from diffplan.errors import DataFileError

GRID_FORMAT = "diffplan-grid-v1"
FORMAT_KEY = "diffplan_format"
METADATA_KEY = "metadata"
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError)
MAX_SMALL_ARRAY_BYTES = 1 << 20  # an array read whole: the format marker, the JSON metadata
MAX_LABEL_CHANNELS = 16  # policy channels (4 for 4abs-cc, 8 for Moore)
BLOCK_BYTES = 16 << 20  # what one block of maps may hold while it is read
_NUMERIC = "biuf"  # dtype kinds of maze, goal and label arrays


def _read_header(member) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of an opened ``.npy`` member, which is left at its data."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    return np.lib.format.read_array_header_2_0(member)


def _array_headers(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], np.dtype]], set[str]]:
    """Name -> (shape, dtype) of every array of an npz, from the .npy headers (no data read); and the
    names of the arrays stored in Fortran order."""
    headers, fortran = {}, set()
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                with archive.open(name) as member:
                    shape, fortran_order, dtype = _read_header(member)
                key = name[: -len(".npy")]
                headers[key] = (tuple(shape), dtype)
                if fortran_order:
                    fortran.add(key)
    except _READ_ERRORS as err:
        raise corrupted(path, err) from err
    return headers, fortran


def _declared_bytes(header: tuple[tuple[int, ...], np.dtype]) -> int:
    shape, dtype = header
    return math.prod(shape) * dtype.itemsize


def _positional(headers: dict) -> list[str]:
    names = sorted((k for k in headers if k.startswith("arr_") and k[4:].isdigit()), key=lambda k: int(k[4:]))
    if names != [f"arr_{i}" for i in range(len(names))]:
        raise DataFileError(f"positional arrays {names} are not numbered arr_0, arr_1, ... without gaps.")
    return names


def _split_keys(path: Path, headers: dict) -> tuple[str, dict[str, dict[str, str]]]:
    """The layout name and, per split, the keys of its maze, goal and policy (and values) arrays."""
    positional = _positional(headers)
    has_marker = FORMAT_KEY in headers
    groupings = []
    if len(positional) == 9:
        groupings.append(("ours" if has_marker else "published-9", 3, ("maze", "goal", "policy")))
    elif len(positional) == 12 and not has_marker:
        # maze, goal, policy, values per split; older files put three extra arrays after the nine.
        groupings.append(("published-12", 4, ("maze", "goal", "policy", "values")))
        groupings.append(("published-12", 3, ("maze", "goal", "policy")))
    if not groupings:
        raise DataFileError(
            f"{path} has an unknown npz layout (arrays: {', '.join(sorted(headers)) or 'none'}); expected "
            "the published nine- or twelve-array layout (arr_0..arr_8 or arr_0..arr_11) or a diffplan file."
        )
    for layout, stride, roles in groupings:
        keys = _keys(stride, roles)
        if all(len(headers[k["goal"]][0]) == 4 and len(headers[k["policy"]][0]) == 5 for k in keys.values()):
            return _label_layout(layout, headers[keys["train"]["policy"]][0]), keys
    layout, stride, roles = groupings[0]  # no grouping fits: let the shape check name the culprit
    return layout, _keys(stride, roles)


def _label_layout(layout: str, policy_shape: tuple[int, ...]) -> str:
    """The layout's name once its label channels are known: 4abs-cc labels or another mechanism's."""
    if policy_shape[1:3] == (NUM_ACTIONS, 1) or layout == "ours":
        return layout
    return {"published-9": "gppn-9", "published-12": "neural-astar-12"}[layout]


def _keys(stride: int, roles: tuple[str, ...]) -> dict[str, dict[str, str]]:
    return {s: {role: f"arr_{i * stride + j}" for j, role in enumerate(roles)} for i, s in enumerate(SPLITS)}


def _check_shapes(
    path: Path, headers: dict, keys: dict[str, dict[str, str]], strict: bool
) -> tuple[int, int]:
    """Every split's maze (N, H, W), goal (N, O, H, W) and policy (N, C, O, H, W) agree; returns (H, W).

    ``strict`` (our files) wants C = 4 actions and O = 1; otherwise C and O are the train split's.
    Sizes are checked against the limits here, from the headers, before any array is read.
    """
    size = None
    train_goal, train_policy = headers[keys["train"]["goal"]][0], headers[keys["train"]["policy"]][0]
    channels, orientations = (NUM_ACTIONS, 1) if strict else (train_policy[1], train_goal[1])
    if channels > MAX_LABEL_CHANNELS:
        raise DataFileError(
            f"{path}: train policy ({keys['train']['policy']}) has {channels} action channels, over the "
            f"{MAX_LABEL_CHANNELS} diffplan reads (4 for 4abs-cc, 8 for Moore); not a grid data set."
        )
    for split, roles in keys.items():
        maze_shape = headers[roles["maze"]][0]
        if len(maze_shape) != 3:
            raise DataFileError(
                f"{path}: {split} maze ({roles['maze']}) has shape {maze_shape}; expected (N, H, W)."
            )
        n, h, w = maze_shape
        if size is not None and (h, w) != size:
            raise DataFileError(f"{path}: {split} mazes are {h}x{w} but train mazes are {size[0]}x{size[1]}.")
        size = (h, w)
        check_size(path, n * max(orientations, 1), h, w, f"the {split} mazes")
        expected = {
            "goal": (n, orientations, h, w),
            "policy": (n, channels, orientations, h, w),
            "optimal": (n, NUM_ACTIONS, h, w),
        }
        for role, want in expected.items():
            key = roles.get(role)
            if key is not None and headers[key][0] != want:
                raise DataFileError(
                    f"{path}: {split} {role} ({key}) has shape {headers[key][0]} but {split} maze has shape "
                    f"{maze_shape}, so {want} was expected; the file is inconsistent, regenerate it."
                )
        for role, key in roles.items():
            if key in headers and headers[key][1].kind not in _NUMERIC:
                raise DataFileError(
                    f"{path}: {split} {role} ({key}) holds {headers[key][1]} values, not numbers; "
                    "the file is not a grid data set."
                )
    return size


def _check_other_arrays(path: Path, headers: dict, keys: dict[str, dict[str, str]]) -> None:
    """Arrays no split uses (the marker, the metadata, extras) are read whole: they must be small."""
    used = {key for roles in keys.values() for key in roles.values()}
    for key in sorted(set(headers) - used):
        size = _declared_bytes(headers[key])
        if size > MAX_SMALL_ARRAY_BYTES:
            raise DataFileError(
                f"{path}: array {key!r} declares {size} bytes (shape {headers[key][0]}), over the "
                f"{MAX_SMALL_ARRAY_BYTES} allowed for an array outside the splits; the file is not a grid "
                "data set diffplan reads (regenerate it)."
            )


class GridFile:
    """An opened grid ``.npz``: its layout, array headers and the keys of each split."""

    def __init__(self, path: Path):
        self.path = path
        self.headers, self.fortran = _array_headers(path)
        self.layout, self.keys = _split_keys(path, self.headers)
        if self.layout == "ours":
            for split in SPLITS:
                self.keys[split]["optimal"] = f"{split}_optimal"
                if self.keys[split]["optimal"] not in self.headers:
                    raise DataFileError(
                        f"{path}: diffplan grid file lacks array {split}_optimal; regenerate it."
                    )
        self.height, self.width = _check_shapes(path, self.headers, self.keys, self.layout == "ours")
        _check_other_arrays(path, self.headers, self.keys)
        self.metadata = self._read_metadata() if self.layout == "ours" else None

    def _load(self, key: str) -> np.ndarray:
        """A small array, read whole (``MAX_SMALL_ARRAY_BYTES``)."""
        if key not in self.headers:
            raise corrupted(self.path, KeyError(f"no array {key!r}"))
        size = _declared_bytes(self.headers[key])
        if size > MAX_SMALL_ARRAY_BYTES:
            raise DataFileError(
                f"{self.path}: array {key!r} declares {size} bytes, over the {MAX_SMALL_ARRAY_BYTES} an "
                "array read whole may have; regenerate the file."
            )
        try:
            with np.load(self.path, allow_pickle=False) as data:
                return data[key]
        except _READ_ERRORS as err:
            raise corrupted(self.path, err) from err

    def _blocks(self, key: str, rows: int) -> Iterator[np.ndarray]:
        """Array ``key`` in blocks of ``rows`` along its first axis, as it decompresses (C order; an array
        stored in Fortran order, rare, is read whole and must fit in ``BLOCK_BYTES``)."""
        shape, dtype = self.headers[key]
        if key in self.fortran or not shape:
            if _declared_bytes(self.headers[key]) > BLOCK_BYTES:
                raise DataFileError(
                    f"{self.path}: array {key!r} is stored in Fortran order and over {BLOCK_BYTES} bytes; "
                    "diffplan streams large arrays in C order only: re-save it with np.ascontiguousarray."
                )
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    whole = np.ascontiguousarray(data[key])
            except _READ_ERRORS as err:
                raise corrupted(self.path, err) from err
            yield from (whole[i : i + rows] for i in range(0, len(whole), rows)) if shape else [whole]
            return
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(f"{key}.npy") as member:
                _read_header(member)
                for start in range(0, shape[0], rows):
                    count = min(rows, shape[0] - start)
                    data = member.read(count * row_bytes)
                    if len(data) != count * row_bytes:
                        ended = start + len(data) // max(row_bytes, 1)
                        raise EOFError(f"array {key!r} ends after {ended} of its {shape[0]} rows")
                    yield np.frombuffer(data, dtype=dtype).reshape((count, *shape[1:]))
        except _READ_ERRORS as err:
            raise corrupted(self.path, err) from err

    def _rows_per_block(self, *keys: str) -> int:
        widest = max(math.prod(self.headers[k][0][1:]) * self.headers[k][1].itemsize for k in keys)
        return max(1, BLOCK_BYTES // max(widest, 1))

    def _read_metadata(self) -> dict:
        marker = str(self._load(FORMAT_KEY))
        if marker != GRID_FORMAT:
            raise DataFileError(
                f"{self.path} is format {marker!r}; this diffplan reads {GRID_FORMAT!r}, upgrade it."
            )
        try:
            metadata = json.loads(str(self._load(METADATA_KEY)))
        except (DataFileError, json.JSONDecodeError) as err:
            raise DataFileError(
                f"{self.path}: metadata is missing or not JSON; regenerate the file."
            ) from err
        if not isinstance(metadata, dict):
            raise DataFileError(
                f"{self.path}: metadata is a JSON {type(metadata).__name__}, not an object of generation "
                "settings; regenerate the file."
            )
        return metadata

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(maze (N, H, W) uint8, goal_cell (N,) int64)`` of one split, checked block by block."""
        maze_key, goal_key = self.keys[split]["maze"], self.keys[split]["goal"]
        rows = self._rows_per_block(maze_key, goal_key)
        n = self.headers[maze_key][0][0]
        maze = np.empty((n, self.height, self.width), dtype=np.uint8)
        goal_cell = np.empty(n, dtype=np.int64)
        blocks = zip(self._blocks(maze_key, rows), self._blocks(goal_key, rows), strict=True)
        for number, (maze_block, goal_block) in enumerate(blocks):
            start = number * rows
            stop = start + len(maze_block)
            maze[start:stop], goal_cell[start:stop] = check_maze_goal(
                self.path, split, maze_block, goal_block, first=start
            )
        return maze, goal_cell

    @property
    def label_channels(self) -> int:
        """The number of action channels of the file's policy labels (4 for ``4abs-cc``, 8 for Moore)."""
        return int(self.headers[self.keys["train"]["policy"]][0][1])

    def labels(self) -> list[str]:
        """The label arrays the file carries (never used for training: labels are recomputed)."""
        if self.label_channels == NUM_ACTIONS:
            present = ["policy (one-hot, ties broken at random)"]
        else:
            present = [f"policy ({self.label_channels} actions, another mechanism)"]
        if "values" in self.keys["train"]:
            present.append("distances" if self.layout == "neural-astar-12" else "values")
        if self.layout == "ours":
            present.append("optimal (every optimal action)")
        return present

    def content_fingerprint(self) -> str:
        """sha256 over every array but ``metadata``: ``arr_0..`` in order, then named arrays by name."""
        positional = _positional(self.headers)
        named = sorted(k for k in self.headers if k not in positional and k != METADATA_KEY)
        return fingerprint_blocks(
            (k, self.headers[k][1], self.headers[k][0], self._blocks(k, self._rows_per_block(k)))
            for k in positional + named
        )


def check_maze_goal(
    path: Path, split: str, maze: np.ndarray, goal: np.ndarray, *, first: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Validate raw maze (N, H, W) and goal (N, O, H, W) values; return uint8 mazes and goal cells (N,).

    A goal map is 0/1 and marks exactly one cell, in one or more of its O orientations. ``first``: the
    index of the first map in the split, for the messages (the maps may be a block of the split).
    """
    n, _, h, w = goal.shape
    if not np.isin(goal, (0, 1)).all():
        bad = first + int(np.flatnonzero(~np.isin(goal, (0, 1)).reshape(n, -1).all(axis=1))[0])
        raise DataFileError(
            f"{path}: {split} goal map {bad} is not one-hot (values other than 0 and 1); "
            "every map needs exactly one goal cell."
        )
    flat = (goal != 0).any(axis=1).reshape(n, h * w)
    not_one_hot = flat.sum(axis=1) != 1
    if not_one_hot.any():
        bad = first + int(np.flatnonzero(not_one_hot)[0])
        raise DataFileError(
            f"{path}: {split} goal map {bad} is not one-hot; every map needs exactly one goal cell."
        )
    goal_cell = flat.argmax(axis=1).astype(np.int64)
    return check_cells(path, split, maze, goal_cell, first=first), goal_cell


def grid_arrays(
    splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> list[tuple[str, np.ndarray]]:
    """Our file's arrays but the metadata, in fingerprint order.

    ``splits[name] = (maze (N, H, W) uint8, goal (N, 1, H, W), policy (N, 4, H, W), optimal (N, 4, H, W))``.
    """
    positional, named = [], []
    for split in SPLITS:
        maze, goal, policy, optimal = splits[split]
        positional += [
            maze.astype(np.float64),
            goal.astype(np.float64),
            policy.astype(np.float64)[:, :, None],
        ]
        named.append((f"{split}_optimal", optimal.astype(bool)))
    named.append((FORMAT_KEY, np.array(GRID_FORMAT)))
    return [(f"arr_{i}", a) for i, a in enumerate(positional)] + sorted(named, key=lambda item: item[0])


def write_grid(file, arrays: list[tuple[str, np.ndarray]], metadata: dict) -> None:
    """``np.savez_compressed`` of ``arrays`` (positional first) plus the JSON ``metadata``, to ``file``."""
    positional = [a for name, a in arrays if name.startswith("arr_")]
    named = {name: a for name, a in arrays if not name.startswith("arr_")}
    named[METADATA_KEY] = np.array(json.dumps(metadata, sort_keys=True))
    np.savez_compressed(file, *positional, **named)
