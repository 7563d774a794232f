"""Graph data-set files (``.pth``): our compact, weights-only layout and the published pickle.

Ours is a ``torch.save`` of plain containers and tensors, loadable with ``weights_only=True``::

    {"format": "diffplan-graph-v1",
     "has_obstacle": bool,                 # every cell is a node (True) or only free cells (False)
     "cont_action": bool,                  # labels are move vectors (dy, dx) rather than actions
     "metadata": {kind, maze_size, mechanism, has_obstacle, cont_action, seed, splits, fingerprint, ...},
     "lattice_edge_index": (2, E) int64   # the shared 4-neighbour lattice, node = row * W + col
     "action_deltas": (4, 2) float32      # (dy, dx) of N, W, S, E: the continuous labels' unit vectors
     "splits": {"train" | "valid" | "test": {
         "maze": (N, H, W) uint8 (1 = free), "goal_cell": (N,) int64 (row * W + col),
         "optimal": (N, H * W, 4) bool (per cell = per node when has_obstacle)}}}

Graphs (nodes, features, edges) are derived on load, and labels recomputed from maze + goal. The
published format, a pickled list of three lists of PyG ``Data``, unpickles arbitrary code and is read
only with ``trust_pickle=True``; it is converted back to mazes and goals, and relabelled.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from diffplan.envs._files import SPLITS, check_cells, check_size, corrupted, fingerprint, torch_zip_problem
from diffplan.envs.actions import ACTION_DELTAS, NUM_ACTIONS
from diffplan.errors import DataFileError

GRAPH_FORMAT = "diffplan-graph-v1"
_READ_ERRORS = (OSError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile)


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, np.ndarray]]:
    """Every leaf (tensor, str, bool, int) of nested dicts as (key path, array), sorted by key."""
    items = []
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}{key}/")
        else:
            items.append(
                (f"{prefix}{key}", value.numpy() if isinstance(value, torch.Tensor) else np.array(value))
            )
    return items


def graph_payload(
    splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], lattice: np.ndarray, metadata: dict
) -> dict:
    """Our file's content; ``splits[name] = (maze (N, H, W) uint8, goal_cell (N,), optimal (N, 4, H, W))``.

    ``metadata["fingerprint"]`` is filled in: sha256 over everything but the metadata, by key path.
    """
    payload = {
        "format": GRAPH_FORMAT,
        "has_obstacle": bool(metadata["has_obstacle"]),
        "cont_action": bool(metadata["cont_action"]),
        "lattice_edge_index": torch.from_numpy(lattice),
        "action_deltas": torch.as_tensor(ACTION_DELTAS, dtype=torch.float32),
        "splits": {},
    }
    for split in SPLITS:
        maze, goal_cell, optimal = splits[split]
        n, h, w = maze.shape
        payload["splits"][split] = {
            "maze": torch.from_numpy(maze.astype(np.uint8)),
            "goal_cell": torch.from_numpy(goal_cell.astype(np.int64)),
            "optimal": torch.from_numpy(
                np.ascontiguousarray(optimal.reshape(n, NUM_ACTIONS, h * w).transpose(0, 2, 1))
            ),
        }
    payload["metadata"] = {**metadata, "fingerprint": fingerprint(_flatten(payload))}
    return payload


class GraphFile:
    """An opened graph ``.pth``: layout, metadata, and per split (maze uint8, goal_cell)."""

    def __init__(self, path: Path, *, trust_pickle: bool = False):
        self.path = path
        problem = torch_zip_problem(path)
        if problem is not None:
            raise DataFileError(f"{path} is refused unread: {problem}; regenerate or re-download it.")
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if not trust_pickle:
                raise DataFileError(
                    f"{path} holds pickled Python objects (the published graph format?) and unpickling runs "
                    "code from the file; pass --trust-pickle (trust_pickle=True) if you trust its source."
                ) from err
            content = self._load_pickle()
        except _READ_ERRORS as err:
            raise corrupted(path, err) from err
        if isinstance(content, dict):
            self._read_ours(content)
        elif isinstance(content, (list, tuple)):
            self._read_published(content)
        else:
            raise DataFileError(
                f"{path} holds a {type(content).__name__}, not a graph data set; pass a .pth data set."
            )

    def _load_pickle(self):
        try:
            return torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as err:  # unpickling can raise anything; the file is what is wrong
            raise corrupted(self.path, err) from err

    def _read_ours(self, content: dict) -> None:
        if content.get("format") != GRAPH_FORMAT or not isinstance(content.get("splits"), dict):
            raise DataFileError(
                f"{self.path} is not a diffplan graph file (format {content.get('format')!r}); "
                f"expected {GRAPH_FORMAT!r} or the published pickle."
            )
        self.layout = "ours"
        self.metadata = content.get("metadata") or {}
        if not isinstance(self.metadata, dict):
            raise DataFileError(
                f"{self.path}: 'metadata' is a {type(self.metadata).__name__}, not a mapping of generation "
                "settings; regenerate the file."
            )
        for flag, default in (("has_obstacle", True), ("cont_action", False)):
            if not isinstance(content.get(flag, default), bool):
                raise DataFileError(
                    f"{self.path}: {flag!r} is {content[flag]!r}, not true or false; regenerate the file."
                )
        self.content = content
        self.has_obstacle = content.get("has_obstacle", True)
        self.cont_action = content.get("cont_action", False)
        self.splits = {}
        size = None
        for split in SPLITS:
            arrays = content["splits"].get(split)
            if not isinstance(arrays, dict) or not {"maze", "goal_cell"} <= set(arrays):
                raise DataFileError(
                    f"{self.path}: split {split!r} lacks maze or goal_cell; regenerate the file."
                )
            for key in ("maze", "goal_cell", "optimal"):
                if key in arrays and not isinstance(arrays[key], torch.Tensor | None):
                    raise DataFileError(
                        f"{self.path}: {split} {key} is a {type(arrays[key]).__name__}, not a tensor; "
                        "regenerate the file."
                    )
            maze, goal_cell = arrays["maze"].numpy(), arrays["goal_cell"].numpy()
            if maze.ndim != 3 or goal_cell.shape != (len(maze),):
                raise DataFileError(
                    f"{self.path}: {split} maze has shape {tuple(maze.shape)} but goal_cell has shape "
                    f"{tuple(goal_cell.shape)}; expected (N, H, W) and (N,), regenerate the file."
                )
            if size is not None and maze.shape[1:] != size:
                raise DataFileError(
                    f"{self.path}: {split} mazes are {maze.shape[1:]} but train mazes are {size}."
                )
            check_size(self.path, len(maze), maze.shape[1], maze.shape[2], f"the {split} mazes")
            size = maze.shape[1:]
            optimal = arrays.get("optimal")
            if optimal is not None and tuple(optimal.shape) != (len(maze), size[0] * size[1], NUM_ACTIONS):
                raise DataFileError(
                    f"{self.path}: {split} optimal has shape {tuple(optimal.shape)}, which does not match "
                    f"{len(maze)} mazes of {size[0]}x{size[1]}; the file is inconsistent, regenerate it."
                )
            self.splits[split] = (check_cells(self.path, split, maze, goal_cell), goal_cell)
        self.height, self.width = size

    def _read_published(self, content) -> None:
        if len(content) != 3 or not all(isinstance(graphs, (list, tuple)) for graphs in content):
            raise DataFileError(
                f"{self.path}: expected a list of three lists of graphs (train, valid, test)."
            )
        self.layout = "published-graph-pickle"
        self.metadata = None
        self.content = content
        if not content[0]:
            raise DataFileError(
                f"{self.path}: the train list holds no graphs; the file sizes its mazes from them, so it "
                "cannot be read."
            )
        try:
            xs = [[np.asarray(g.x, dtype=np.float64) for g in graphs] for graphs in content]
            labels = next(np.asarray(g.labels) for graphs in content for g in graphs)
        except (AttributeError, StopIteration, TypeError, ValueError) as err:
            raise DataFileError(
                f"{self.path}: graphs lack node features x or labels; not a graph data set."
            ) from err
        if any(x.ndim != 2 or x.shape[1] < 3 or len(x) == 0 for split in xs for x in split):
            raise DataFileError(
                f"{self.path}: node features x must be (V, 3 or 4) [row, col, is_goal, is_obstacle] with "
                "at least one node; not a graph data set."
            )
        self.has_obstacle = xs[0][0].shape[1] >= 4
        self.cont_action = labels.ndim == 2 and labels.shape[1] == 2
        positions = [x[:, :2] for split in xs for x in split]
        if any(((p < 0) | (p != np.round(p))).any() for p in positions):
            raise DataFileError(f"{self.path}: node positions must be whole numbers >= 0; not a maze graph.")
        top = int(max(p.max() for p in positions))
        size = top + 1 if self.has_obstacle else top + 2  # without obstacle nodes the border is implicit
        for split, split_xs in zip(SPLITS, xs, strict=True):
            check_size(self.path, len(split_xs), size, size, f"the {split} mazes")
        self.height = self.width = size
        self.splits = {}
        for split, split_xs in zip(SPLITS, xs, strict=True):
            maze = np.zeros((len(split_xs), size, size), dtype=np.uint8)
            goal_cell = np.zeros(len(split_xs), dtype=np.int64)
            for i, x in enumerate(split_xs):
                cell = x[:, 0].astype(np.int64) * size + x[:, 1].astype(np.int64)
                free = 1 - x[:, 3] if self.has_obstacle else np.ones(len(x))
                maze[i].flat[cell] = free
                goals = np.flatnonzero(x[:, 2] == 1)
                if len(goals) != 1:
                    raise DataFileError(
                        f"{self.path}: {split} graph {i} has {len(goals)} goal nodes; expected one."
                    )
                goal_cell[i] = cell[goals[0]]
            self.splits[split] = (check_cells(self.path, split, maze, goal_cell), goal_cell)

    def labels(self) -> list[str]:
        """The label arrays the file carries (never used: labels are recomputed)."""
        if self.layout == "ours":
            return ["optimal (every optimal action, per cell)"]
        return ["labels (one action per node, misaligned node order)", "opt_v (values)"]

    def content_fingerprint(self) -> str:
        """sha256 over the file's content (ours: by key path, metadata excluded; published: per graph)."""
        if self.layout == "ours":
            return fingerprint(_flatten({k: v for k, v in self.content.items() if k != "metadata"}))
        items = []
        for split, graphs in zip(SPLITS, self.content, strict=True):
            for i, graph in enumerate(graphs):
                for key in sorted(graph.keys()):
                    if isinstance(graph[key], torch.Tensor):
                        items.append((f"{split}/{i}/{key}", graph[key].numpy()))
        return fingerprint(items)
