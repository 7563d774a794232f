"""Data-set files: generate, load one split, describe, fingerprint (DESIGN sections 3 and 4).

Two kinds of file, told apart by content, not by name:

- grid ``.npz``: the published nine-array layout first (readable by every nine-array reader), then
  named arrays with every optimal action and the generation metadata (see ``_grid_file``). The
  published nine- and twelve-array files load too.
- graph ``.pth``: compact tensors and plain containers, loadable with ``torch.load(weights_only=True)``
  (see ``_graph_file``). The published pickle loads only with ``trust_pickle=True``.

Map files load too, as a test split (see ``maps``): a text maze, a MovingAI ``.map`` (+ ``.scen``), an
``.npy`` and an image; ``load_split`` dispatches on the file's content (suffix for text formats).

Loading always recomputes BFS distances and optimal-action sets from maze + goal, whatever labels the
file carries. The fingerprint is a sha256 over the stored arrays (name, dtype, shape, bytes), so it names
the content, not the zip bytes; our files record it in their metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

import diffplan
from diffplan._atomic import check_output, write_atomic
from diffplan.envs._files import SPLITS, fingerprint, sniff
from diffplan.envs._graph_file import GRAPH_FORMAT, GraphFile, graph_payload
from diffplan.envs._grid_file import GRID_FORMAT, GridFile, grid_arrays, write_grid
from diffplan.envs.actions import MECHANISM
from diffplan.envs.expert import bfs_distances, expert_labels, random_tie_policy
from diffplan.envs.generator import check_maze_size, generate_mazes, goal_maps
from diffplan.envs.graph import lattice_edge_index
from diffplan.envs.maps import MapFile, as_task, make_split
from diffplan.envs.splits import GraphSplit, GridSplit
from diffplan.errors import BadInputError, DataFileError
from diffplan.task import Task

DISTANCE_STEPS = (10, 20, 30, 45)
GENERATOR = (
    "dfs-carve+decimation-U(0,1); goal uniform interior, forced free, >=2 reachable; (maze, goal) unique"
)
SUFFIX = {Task.GRID: ".npz", Task.GRAPH: ".pth"}
SETTINGS = (
    "kind",
    "maze_size",
    "train_size",
    "valid_size",
    "test_size",
    "seed",
    "has_obstacle",
    "cont_action",
)


MAP_OPTIONS = ("goals", "scen", "seed", "threshold", "num_goals")


def _open(
    path: Path, trust_pickle: bool, map_options: dict[str, Any] | None = None
) -> GridFile | GraphFile | MapFile:
    """The opened file; ``map_options`` (None values = defaults) apply to map files only."""
    path = Path(path)
    options = {k: v for k, v in (map_options or {}).items() if v is not None}
    unknown = set(options) - set(MAP_OPTIONS)
    if unknown:
        raise BadInputError(f"unknown map option {sorted(unknown)[0]!r}; known: {', '.join(MAP_OPTIONS)}.")
    kind = sniff(path)
    if kind in ("npz", "torch") and options:
        raise BadInputError(
            f"{sorted(options)[0]} applies to map files (.map, .txt, .npy, images), "
            f"not to the data set {path}."
        )
    if kind == "npz":
        return GridFile(path)
    if kind == "torch":
        return GraphFile(path, trust_pickle=trust_pickle)
    return MapFile(path, **options)


def _arrays(data: GridFile | GraphFile | MapFile, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(maze (N, H, W) uint8, goal_cell (N,) int64) of one split; a map file has only ``test``."""
    if isinstance(data, GridFile):
        return data.split(split)
    if split not in data.splits:
        raise DataFileError(
            f"{data.path} is a map file ({data.layout}), read as a test split only; it has no {split} maps. "
            "Pass split 'test', or a data set with train and valid splits."
        )
    return data.splits[split]


def check_generation(
    kind: Task | str,
    output: Path,
    *,
    maze_size: int = 15,
    train_size: int = 10000,
    valid_size: int = 2000,
    test_size: int = 2000,
    seed: int = 0,
    has_obstacle: bool = True,
    cont_action: bool = False,
    force: bool = False,
) -> None:
    """Refuse settings ``generate_dataset`` would refuse, before any work (callers planning several runs).

    Raises ``BadInputError`` for a bad setting and ``DataFileError`` for an output that cannot be written.
    """
    output = Path(output)
    if kind not in tuple(Task):
        raise BadInputError(f"unknown data-set kind {kind!r}; use 'grid' or 'graph'.")
    kind = Task(kind)
    sizes = {"train": train_size, "valid": valid_size, "test": test_size}
    for split, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise BadInputError(
                f"{split} size must be a number of mazes (0 or more), got {size!r}; "
                f"pass --{split}-size 0 or more."
            )
    if sum(sizes.values()) == 0:
        raise BadInputError("every split size is 0; ask for at least one maze (e.g. --test-size 100).")
    check_maze_size(maze_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BadInputError(f"seed must be a non-negative integer, got {seed!r}; pass --seed 0 or more.")
    if kind is Task.GRID and cont_action:
        raise BadInputError("--cont-action applies to graph data sets only; drop it or use --kind graph.")
    if kind is Task.GRID and not has_obstacle:
        raise BadInputError("--no-has-obstacle applies to graph data sets only; drop it or use --kind graph.")
    if output.suffix != SUFFIX[kind]:
        raise BadInputError(
            f"{kind} data sets are {SUFFIX[kind]} files, but the output is {output}; rename it."
        )
    check_output(output, force=force)


def generate_dataset(
    kind: Literal["grid", "graph"],
    output: Path,
    *,
    maze_size: int = 15,
    train_size: int = 10000,
    valid_size: int = 2000,
    test_size: int = 2000,
    seed: int = 0,
    has_obstacle: bool = True,
    cont_action: bool = False,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Generate a data set of the DESIGN maze distribution and write it atomically to ``output``.

    The same seed gives the same mazes and goals for both kinds. A split may be empty (a test-only set:
    ``train_size=0, valid_size=0``); every (maze, goal) pair is still unique across the splits.
    ``progress(done, total)`` is called with work units: generating, labelling and writing each count
    ``train + valid + test``.

    Returns ``{"path", "kind", "splits": {split: n}, "bytes", "fingerprint", "seconds"}``.
    Raises ``BadInputError`` for bad settings and ``DataFileError`` for an output that cannot be written
    (missing folder, a folder, an existing file without ``force``); nothing is written then.
    """
    start = time.perf_counter()
    output = Path(output)
    sizes = {"train": train_size, "valid": valid_size, "test": test_size}
    check_generation(
        kind,
        output,
        maze_size=maze_size,
        train_size=train_size,
        valid_size=valid_size,
        test_size=test_size,
        seed=seed,
        has_obstacle=has_obstacle,
        cont_action=cont_action,
        force=force,
    )
    task = Task(kind)
    total = sum(sizes.values())
    report = progress or (lambda *_: None)

    maze_seed, tie_seed = np.random.SeedSequence(int(seed)).spawn(2)
    mazes, goal_cell = generate_mazes(
        total,
        maze_size,
        rng=np.random.default_rng(maze_seed),
        progress=lambda done, _: report(done, 3 * total),
    )
    tie_rng = np.random.default_rng(tie_seed)
    bounds = np.cumsum([0, *sizes.values()])
    labelled = {}
    for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
        goal = goal_maps(goal_cell[lo:hi], maze_size, maze_size)
        _, optimal = expert_labels(mazes[lo:hi], goal)
        if task is Task.GRID:
            labelled[split] = (mazes[lo:hi], goal, random_tie_policy(optimal, tie_rng), optimal)
        else:
            labelled[split] = (mazes[lo:hi], goal_cell[lo:hi], optimal)
        report(total + int(hi), 3 * total)

    metadata = {
        "format": GRID_FORMAT if task is Task.GRID else GRAPH_FORMAT,
        "kind": task.value,  # a plain string in the file: weights_only loads refuse enums
        "maze_size": maze_size,
        "mechanism": MECHANISM,
        "has_obstacle": has_obstacle,
        "cont_action": cont_action,
        "seed": int(seed),
        "splits": {k: int(v) for k, v in sizes.items()},
        "generator": GENERATOR,
        "diffplan_version": diffplan.__version__,
    }
    if task is Task.GRID:
        arrays = grid_arrays(labelled)
        metadata["fingerprint"] = fingerprint(arrays)
        write_atomic(output, lambda file: write_grid(file, arrays, metadata), force=force)
    else:
        payload = graph_payload(labelled, lattice_edge_index(maze_size, maze_size), metadata)
        metadata = payload["metadata"]
        write_atomic(output, lambda file: torch.save(payload, file), force=force)
    report(3 * total, 3 * total)
    return {
        "path": str(output),
        "kind": task.value,
        "splits": dict(metadata["splits"]),
        "bytes": output.stat().st_size,
        "fingerprint": metadata["fingerprint"],
        "seconds": time.perf_counter() - start,
    }


def load_split(
    path: Path,
    split: Literal["train", "valid", "test"],
    *,
    trust_pickle: bool = False,
    kind: Task | str | None = None,
    goals: Sequence[tuple[int, int]] | None = None,
    scen: Path | None = None,
    seed: int | None = None,
    threshold: float | None = None,
    num_goals: int | None = None,
) -> GridSplit | GraphSplit:
    """One split of a data set or map file, labels recomputed for ``4abs-cc``.

    Reads our files; the published nine- and twelve-array ``.npz``, GPPN-style nine-array files with
    any label channels and Neural A*'s twelve-array planning-datasets; with ``trust_pickle=True``, the
    published graph pickle; and map files (text maze, MovingAI ``.map``, ``.npy``, image) as a test
    split, with the goal options of ``maps.read_maps`` (``goals``, ``scen``, ``seed``, ``threshold``,
    ``num_goals``; None = its defaults; refused for data-set files).

    ``kind``: None gives the file's own kind (grid for ``.npz`` and map files, graph for ``.pth``);
    ``grid`` or ``graph`` converts (a graph of a grid map has every cell as a node).

    Raises ``DataFileError`` for a missing, truncated, corrupted or inconsistent file, an unknown
    layout, or an empty split (a test-only set has no train mazes).
    """
    if split not in SPLITS:
        raise BadInputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    task = None if kind is None else as_task(kind)
    options = {"goals": goals, "scen": scen, "seed": seed, "threshold": threshold, "num_goals": num_goals}
    data = _open(Path(path), trust_pickle, options)
    maze, goal_cell = _arrays(data, split)
    if len(maze) == 0:
        raise DataFileError(
            f"{path} has no {split} mazes (a test-only set?); "
            f"pass a data set whose {split} split is not empty."
        )
    if isinstance(data, GraphFile):
        if task is None or task is Task.GRAPH:
            return make_split(
                maze, goal_cell, Task.GRAPH, has_obstacle=data.has_obstacle, cont_action=data.cont_action
            )
    return make_split(maze, goal_cell, task or Task.GRID)


def file_fingerprint(path: Path, *, trust_pickle: bool = False, **map_options: Any) -> str:
    """Recompute the content fingerprint (sha256 hex) of a data-set or map file; see the module docstring.

    A map file's fingerprint covers the mazes and goals read, so it depends on ``map_options``.
    """
    return _open(Path(path), trust_pickle, map_options).content_fingerprint()


def _split_stats(maze: np.ndarray, goal_cell: np.ndarray) -> dict[str, Any]:
    n, h, w = maze.shape
    if n == 0:
        empty = {"mazes": 0, "shape": [0, int(h), int(w)], "free_fraction": None}
        return {**empty, "scored_cells": None, "reachable_within": None, "max_distance": None}
    free = maze.reshape(n, -1).mean(axis=1)
    dist = bfs_distances(maze, goal_maps(goal_cell, h, w))
    scored = (dist > 0).reshape(n, -1).sum(axis=1)
    reach = dist[dist >= 0]
    return {
        "mazes": int(n),
        "shape": [int(n), int(h), int(w)],
        "free_fraction": {"mean": float(free.mean()), "min": float(free.min()), "max": float(free.max())},
        "scored_cells": {"mean": float(scored.mean()), "min": int(scored.min()), "max": int(scored.max())},
        "reachable_within": {str(k): float((reach <= k).mean()) for k in DISTANCE_STEPS},
        "max_distance": int(reach.max()),
    }


def _wall_border(mazes: list[np.ndarray]) -> bool | None:
    """Whether every map has walls all around (None without maps); Neural A* and MovingAI maps do not."""
    mazes = [m for m in mazes if len(m)]
    if not mazes:
        return None
    return all(not (m[:, 0].any() or m[:, -1].any() or m[:, :, 0].any() or m[:, :, -1].any()) for m in mazes)


def dataset_info(path: Path, *, trust_pickle: bool = False, **map_options: Any) -> dict[str, Any]:
    """Describe a data-set or map file: layout, kind, size, goals, per-split statistics, fingerprint, labels.

    Per split: the number of mazes and their shape, the free-cell fraction (mean, min, max), the scored
    cells per map (reachable, non-goal free cells: mean, min, max), the share of reachable cells (goal
    included) within 10/20/30/45 BFS steps, and the largest distance; None for an empty split. A map
    file has only a ``test`` split. ``wall_border`` says whether every map has walls all around
    (without one, off the map counts as a wall). ``label_channels`` is the number of action channels
    of a grid file's policy labels (4 = ``4abs-cc``, 8 = Moore; None without labels). ``fingerprint``
    is recomputed; ``fingerprint_ok`` compares it with the stored one (None if none). ``map_options``:
    the goal options of ``maps.read_maps``, for map files.
    """
    path = Path(path)
    data = _open(path, trust_pickle, map_options)
    splits = {
        split: _arrays(data, split) for split in SPLITS if isinstance(data, GridFile) or split in data.splits
    }
    if isinstance(data, GraphFile):
        kind, has_obstacle, cont_action = "graph", data.has_obstacle, data.cont_action
        goals, channels = "goal nodes in the file", None
    else:
        kind, has_obstacle, cont_action = "grid", True, False
        goals = "one-hot goal maps in the file" if isinstance(data, GridFile) else data.goal_source
        channels = data.label_channels
    stored = (data.metadata or {}).get("fingerprint")
    recomputed = data.content_fingerprint()
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "layout": data.layout,
        "kind": kind,
        "maze_size": data.height if data.height == data.width else None,
        "height": data.height,
        "width": data.width,
        "mechanism": MECHANISM,
        "has_obstacle": has_obstacle,
        "cont_action": cont_action,
        "labels": data.labels(),
        "label_channels": channels,
        "goals": goals,
        "wall_border": _wall_border([maze for maze, _ in splits.values()]),
        "fingerprint": recomputed,
        "stored_fingerprint": stored,
        "fingerprint_ok": None if stored is None else stored == recomputed,
        "metadata": data.metadata,
        "splits": {split: _split_stats(*arrays) for split, arrays in splits.items()},
    }


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The generation metadata a diffplan file stores (None for published files); nothing recomputed."""
    return _open(Path(path), trust_pickle=False).metadata


def settings_differences(path: Path, **settings: Any) -> list[str]:
    """How the data set at ``path`` differs from the generation ``settings`` (empty = the same).

    ``settings`` are ``generate_dataset``'s: kind, maze_size, train/valid/test_size, seed, has_obstacle,
    cont_action. A file that is not one of ours, or does not read, differs by definition.
    """
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise BadInputError(f"unknown data-set setting {sorted(unknown)[0]!r}; known: {', '.join(SETTINGS)}.")
    try:
        metadata = read_metadata(path)
    except DataFileError as err:
        return [f"it does not read ({err})"]
    if metadata is None:
        return ["it was not generated by diffplan"]
    stored = {**metadata, **{f"{k}_size": v for k, v in metadata.get("splits", {}).items()}}
    return [
        f"{key}: the file has {stored.get(key)!r}, wanted {value!r}"
        for key, value in settings.items()
        if stored.get(key) != value
    ]
