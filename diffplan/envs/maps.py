"""The field's map files as diffplan splits: one map (``read_map``) or a test split of maps (``read_maps``).

Formats (told apart by content where they have a signature, else by suffix; see ``_map_formats``):
a text maze (``#`` wall, ``.`` free, ``G`` goal, ``S`` start), a MovingAI ``.map`` with goals from a
``.scen``, an ``.npy`` of (H, W) or (N, H, W) 0/1 cells, and an image (dark = wall).

Goals, in order of precedence: ``goals`` given by the caller; a ``.scen`` (``scen``, or for a ``.map``
the ``<name>.map.scen`` / ``<name>.scen`` beside it); a text maze's ``G`` mark; else ``num_goals``
(default 1) goals per map drawn uniformly from its free cells with ``seed``. Every map is paired with
every one of its goals: one map with K goals gives K maps of the split, map-major. A goal on a wall
is refused (the goal list belongs to another map); a goal that reaches few cells is kept.

Map files hold no labels: optimal actions are computed for ``4abs-cc`` by the BFS expert; maps need
no wall border (off the map counts as a wall). A map file is a test split only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffplan.envs._files import check_size, fingerprint, sniff
from diffplan.envs._map_formats import read_image, read_movingai, read_npy, read_scen, read_text_maze
from diffplan.envs.graph import build_graph_split
from diffplan.envs.splits import GraphSplit, GridSplit, make_grid_split
from diffplan.errors import BadInputError, DataFileError
from diffplan.task import Task

MAP_LAYOUTS = {"text": "text-maze", "movingai": "movingai-map", "npy": "npy", "image": "image"}
MAP_SPLIT = "test"


@dataclass(frozen=True)
class MapArray:
    """One map read from a file.

    Shapes:
        maze: (H, W) float32, 1 = free, 0 = wall.
        goal, start: (row, col) from a text maze's ``G`` / ``S`` marks, else None.
    """

    maze: np.ndarray
    goal: tuple[int, int] | None = None
    start: tuple[int, int] | None = None


def _format(path: Path) -> str:
    kind = sniff(path)
    if kind in ("npz", "torch"):
        raise DataFileError(f"{path} is a data set, not a map file; load it with load_split(path, split).")
    if kind == "scen":
        raise DataFileError(
            f"{path} is a MovingAI scenario (.scen), not a map; pass its .map (with scen={path.name!r})."
        )
    return kind


def _read(path: Path, kind: str, threshold: float) -> tuple[np.ndarray, tuple[int, int] | None, tuple | None]:
    """(mazes (N, H, W) uint8, goal mark, start mark) of a map file of format ``kind``."""
    if kind == "text":
        maze, goal, start = read_text_maze(path)
        return maze[None], goal, start
    if kind == "movingai":
        return read_movingai(path)[None], None, None
    if kind == "npy":
        return read_npy(path), None, None
    return read_image(path, threshold)[None], None, None


def read_map(path: Path, *, threshold: float = 0.5) -> MapArray:
    """One map from a text maze, MovingAI ``.map``, ``.npy`` (H, W) or image (``threshold``: see module).

    Raises ``DataFileError`` for an unreadable or malformed file, one holding several maps, or a data set.
    """
    path = Path(path)
    mazes, goal, start = _read(path, _format(path), threshold)
    if len(mazes) != 1:
        raise DataFileError(f"{path} holds {len(mazes)} maps; read_map reads one, use read_maps for all.")
    return MapArray(maze=mazes[0].astype(np.float32), goal=goal, start=start)


def _scen_beside(path: Path) -> Path | None:
    for candidate in (path.with_name(path.name + ".scen"), path.with_suffix(".scen")):
        if candidate.is_file():
            return candidate
    return None


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise BadInputError(f"{name} must be a positive whole number, got {value!r}.")
    return int(value)


def _check_goals(path: Path, mazes: np.ndarray, goals: list[tuple[int, int]], where: list[str]) -> None:
    _, h, w = mazes.shape
    for (row, col), origin in zip(goals, where, strict=True):
        if not (0 <= row < h and 0 <= col < w):
            raise BadInputError(f"goal (row {row}, col {col}) {origin} is off the {h}x{w} map {path}.")
        on_wall = np.flatnonzero(mazes[:, row, col] == 0)
        if len(on_wall):
            which = f"map {int(on_wall[0])} of {path}" if len(mazes) > 1 else str(path)
            raise DataFileError(
                f"goal (row {row}, col {col}) {origin} is a wall of {which}; goals must be free cells "
                "(is the goal list for this map?)."
            )


def _sample(mazes: np.ndarray, per_map: int, seed: int, path: Path) -> list[list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    w = mazes.shape[2]
    chosen = []
    for i, maze in enumerate(mazes):
        free = np.flatnonzero(maze)
        if len(free) < per_map:
            raise BadInputError(
                f"map {i} of {path} has {len(free)} free cells, fewer than the {per_map} goals asked for; "
                "ask for fewer goals."
            )
        cells = rng.choice(free, size=per_map, replace=False)
        chosen.append([divmod(int(cell), w) for cell in cells])
    return chosen


def _choose_goals(
    path: Path,
    kind: str,
    mazes: np.ndarray,
    mark: tuple[int, int] | None,
    goals: Sequence[tuple[int, int]] | None,
    scen: Path | None,
    seed: int,
    num_goals: int | None,
) -> tuple[list[list[tuple[int, int]]], str]:
    """Per map, its goals (row, col), checked to be free cells; and where they came from (module doc)."""
    _, height, width = mazes.shape
    if scen is None and goals is None and kind == "movingai":
        scen = _scen_beside(path)
    if goals is not None:
        if num_goals is not None:
            raise BadInputError("num_goals applies to sampled or .scen goals, not to goals given.")
        goals = [(int(row), int(col)) for row, col in goals]
        if not goals:
            raise BadInputError("the goal list is empty; give at least one (row, col) goal.")
        where, source = [f"given as goal {i + 1}" for i in range(len(goals))], f"{len(goals)} given"
    elif scen is not None:
        scen = Path(scen)
        rows = read_scen(scen, height, width)
        if num_goals is not None:
            rows = rows[: _count(num_goals, "num_goals")]
        goals = [(row, col) for row, col, _ in rows]
        where, source = (
            [f"of {scen.name} line {line}" for _, _, line in rows],
            f"{len(goals)} from {scen.name}",
        )
    elif mark is not None:
        if num_goals is not None:
            raise BadInputError(f"{path} marks its goal with 'G'; num_goals applies to sampled goals.")
        goals, where, source = [mark], ["marked G"], "the G mark"
    else:
        count = 1 if num_goals is None else _count(num_goals, "num_goals")
        check_size(path, len(mazes) * count, height, width)
        return _sample(
            mazes, count, seed, path
        ), f"{count} per map, drawn uniformly from free cells (seed {seed})"
    check_size(path, len(mazes) * len(goals), height, width)
    _check_goals(path, mazes, goals, where)
    return [goals] * len(mazes), source


class MapFile:
    """An opened map file with its goals: layout, size, the ``test`` split (maze uint8, goal_cell).

    Same interface as the data-set files (``GridFile``, ``GraphFile``) for ``load_split`` and
    ``dataset_info``; ``goal_source`` says where the goals came from.
    """

    metadata = None
    label_channels = None

    def __init__(
        self,
        path: Path,
        *,
        goals: Sequence[tuple[int, int]] | None = None,
        scen: Path | None = None,
        seed: int = 0,
        threshold: float = 0.5,
        num_goals: int | None = None,
    ):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise BadInputError(f"seed must be a non-negative integer, got {seed!r}.")
        if goals is not None and scen is not None:
            raise BadInputError("pass goals or a .scen file, not both.")
        self.path = path = Path(path)
        kind = _format(path)
        self.layout = MAP_LAYOUTS[kind]
        mazes, mark, _ = _read(path, kind, threshold)
        _, self.height, self.width = mazes.shape
        per_map, self.goal_source = _choose_goals(path, kind, mazes, mark, goals, scen, seed, num_goals)
        repeats = np.array([len(g) for g in per_map])
        goal_cell = np.array([r * self.width + c for g in per_map for r, c in g], dtype=np.int64)
        self.splits = {MAP_SPLIT: (np.repeat(mazes, repeats, axis=0), goal_cell)}

    def labels(self) -> list[str]:
        """Map files carry no labels (they are computed on load)."""
        return []

    def content_fingerprint(self) -> str:
        """sha256 over the mazes and goal cells read (so it depends on the goal options)."""
        maze, goal_cell = self.splits[MAP_SPLIT]
        return fingerprint([("maze", maze), ("goal_cell", goal_cell)])


def make_split(
    maze: np.ndarray,
    goal_cell: np.ndarray,
    kind: Task | str = Task.GRID,
    *,
    has_obstacle: bool = True,
    cont_action: bool = False,
) -> GridSplit | GraphSplit:
    """A ``GridSplit`` or ``GraphSplit`` (``kind``) of mazes (N, H, W) (1 = free) and goal cells (N,)."""
    if as_task(kind) is Task.GRID:
        return make_grid_split(maze, goal_cell)
    return build_graph_split(maze, goal_cell, has_obstacle=has_obstacle, cont_action=cont_action)


def as_task(kind: Task | str) -> Task:
    """``Task`` from a ``Task`` or its value (``"grid"``, ``"graph"``); ``BadInputError`` otherwise."""
    try:
        return Task(kind)
    except ValueError as err:
        raise BadInputError(f"unknown kind {kind!r}; use 'grid' or 'graph'.") from err


def read_maps(
    path: Path,
    *,
    kind: Task | str = Task.GRID,
    goals: Sequence[tuple[int, int]] | None = None,
    scen: Path | None = None,
    seed: int = 0,
    threshold: float = 0.5,
    num_goals: int | None = None,
    has_obstacle: bool = True,
    cont_action: bool = False,
) -> GridSplit | GraphSplit:
    """The maps of a map file, each paired with its goals, as a test split with labels for ``4abs-cc``.

    Args:
        path: a text maze, MovingAI ``.map``, ``.npy`` or image.
        kind: ``grid`` (``GridSplit``) or ``graph`` (``GraphSplit``, every cell a node with
            ``has_obstacle``; ``cont_action`` marks it for move-vector planners).
        goals: (row, col) goals for every map; ``scen``: a MovingAI ``.scen`` (x = column, y = row);
            ``num_goals``: goals drawn per map (or the first ``num_goals`` distinct ``.scen`` goals);
            ``seed``: the draw's seed; ``threshold``: an image's grey level below which a cell is a wall.

    Raises ``DataFileError`` for a file that does not read and ``BadInputError`` for bad options.
    """
    opened = MapFile(path, goals=goals, scen=scen, seed=seed, threshold=threshold, num_goals=num_goals)
    maze, goal_cell = opened.splits[MAP_SPLIT]
    return make_split(maze, goal_cell, kind, has_obstacle=has_obstacle, cont_action=cont_action)
