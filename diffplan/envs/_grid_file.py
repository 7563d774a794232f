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
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from diffplan.envs._files import SPLITS, check_cells, check_size, corrupted, fingerprint
from diffplan.envs.actions import NUM_ACTIONS
from diffplan.errors import DataFileError

GRID_FORMAT = "diffplan-grid-v1"
FORMAT_KEY = "diffplan_format"
METADATA_KEY = "metadata"
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError)


def _array_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (shape, dtype) of every array of an npz, from the .npy headers (no data read)."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                with archive.open(name) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                headers[name[: -len(".npy")]] = (tuple(shape), dtype)
    except _READ_ERRORS as err:
        raise corrupted(path, err) from err
    return headers


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
    return size


class GridFile:
    """An opened grid ``.npz``: its layout, array headers and the keys of each split."""

    def __init__(self, path: Path):
        self.path = path
        self.headers = _array_headers(path)
        self.layout, self.keys = _split_keys(path, self.headers)
        if self.layout == "ours":
            for split in SPLITS:
                self.keys[split]["optimal"] = f"{split}_optimal"
                if self.keys[split]["optimal"] not in self.headers:
                    raise DataFileError(
                        f"{path}: diffplan grid file lacks array {split}_optimal; regenerate it."
                    )
        self.height, self.width = _check_shapes(path, self.headers, self.keys, self.layout == "ours")
        self.metadata = self._read_metadata() if self.layout == "ours" else None

    def _load(self, key: str) -> np.ndarray:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                return data[key]
        except _READ_ERRORS as err:
            raise corrupted(self.path, err) from err

    def _read_metadata(self) -> dict:
        marker = str(self._load(FORMAT_KEY))
        if marker != GRID_FORMAT:
            raise DataFileError(
                f"{self.path} is format {marker!r}; this diffplan reads {GRID_FORMAT!r}, upgrade it."
            )
        try:
            return json.loads(str(self._load(METADATA_KEY)))
        except (DataFileError, json.JSONDecodeError) as err:
            raise DataFileError(
                f"{self.path}: metadata is missing or not JSON; regenerate the file."
            ) from err

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(maze (N, H, W) uint8, goal_cell (N,) int64)`` of one split, checked."""
        roles = self.keys[split]
        return check_maze_goal(self.path, split, self._load(roles["maze"]), self._load(roles["goal"]))

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
        try:
            with np.load(self.path, allow_pickle=False) as data:
                return fingerprint((k, data[k]) for k in positional + named)
        except _READ_ERRORS as err:
            raise corrupted(self.path, err) from err


def check_maze_goal(
    path: Path, split: str, maze: np.ndarray, goal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Validate raw maze (N, H, W) and goal (N, O, H, W) values; return uint8 mazes and goal cells (N,).

    A goal map is 0/1 and marks exactly one cell, in one or more of its O orientations.
    """
    n, _, h, w = goal.shape
    if not np.isin(goal, (0, 1)).all():
        bad = int(np.flatnonzero(~np.isin(goal, (0, 1)).reshape(n, -1).all(axis=1))[0])
        raise DataFileError(
            f"{path}: {split} goal map {bad} is not one-hot (values other than 0 and 1); "
            "every map needs exactly one goal cell."
        )
    flat = (goal != 0).any(axis=1).reshape(n, h * w)
    not_one_hot = flat.sum(axis=1) != 1
    if not_one_hot.any():
        bad = int(np.flatnonzero(not_one_hot)[0])
        raise DataFileError(
            f"{path}: {split} goal map {bad} is not one-hot; every map needs exactly one goal cell."
        )
    goal_cell = flat.argmax(axis=1).astype(np.int64)
    return check_cells(path, split, maze, goal_cell), goal_cell


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
