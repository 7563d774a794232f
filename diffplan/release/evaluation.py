"""Score release models (or any checkpoints) on any maps diffplan reads (``diffplan evaluate``).

Unlike ``validate`` (release QA on each model's own test data, judged against its target) this only
measures: accuracy, success, optimality (and the angle error of continuous planners) of each model on
each data file, at a planning budget that may scale with the maps (:mod:`diffplan.scoring.budget`).
Grid files are converted to graphs for graph planners by the data sets' own maze -> graph conversion.
Results go to a folder outside the release (``runs/evaluate/`` by default), never into it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffplan._atomic import atomic_write_text
from diffplan._threads import torch_threads
from diffplan.envs import load_split
from diffplan.errors import BadInputError
from diffplan.release.checkpoint import find_release_checkpoint, load_model
from diffplan.release.layout import DEFAULT_RELEASE_ROOT
from diffplan.release.manifest import Manifest
from diffplan.release.metadata import now_iso
from diffplan.scoring import ANGLE_ERROR, METRICS, evaluate
from diffplan.scoring.budget import Budget, budget_knob, choose_budget
from diffplan.scoring.evaluate import map_longest_distances
from diffplan.task import Task

DEFAULT_OUTPUT_ROOT = Path("runs/evaluate")


@dataclass
class EvaluationRow:
    """One model scored on one data file."""

    model: str
    algorithm: str
    task: str
    data: str
    maze_size: str  # "HxW"
    maps: int
    budget: dict[str, Any]  # Budget.to_dict(); steps is the largest per-map budget for "bfs"
    scores: dict[str, float]
    ms_per_maze: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvaluationReport:
    """All rows of one ``evaluate`` run (model-major, data files in the order given)."""

    rows: list[EvaluationRow]
    budget_setting: dict[str, Any]
    limit: int | None
    seconds: float = 0.0
    created_date: str = ""
    output: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None  # torch threads the scoring ran on (ms per maze depends on it)

    def to_dict(self) -> dict[str, Any]:
        return {
            "created_date": self.created_date,
            "budget_setting": self.budget_setting,
            "limit": self.limit,
            "seconds": self.seconds,
            "threads": self.threads,
            "output": self.output,
            "rows": [row.to_dict() for row in self.rows],
        }


def resolve_models(
    names: Sequence[str], *, all_models: bool, manifest: Manifest | None, release_root: Path
) -> list[tuple[str, Path]]:
    """(label, checkpoint path) of release names, ``--all`` (the manifest's models present in the
    release) or checkpoint paths."""
    if all_models:
        if manifest is None:
            raise BadInputError("--all needs a manifest; pass --manifest.")
        found = []
        for spec in manifest.models:
            path = Path(release_root) / spec.folder / f"{spec.name}.ckpt"
            if path.is_file():
                found.append((spec.name, path))
        if not found:
            raise BadInputError(f"no model of {manifest.path} has a checkpoint under {release_root}/.")
        return found
    if not names:
        raise BadInputError("name the models to evaluate (release names or checkpoint paths), or pass --all.")
    resolved = []
    for name in names:
        path = Path(name)
        if path.is_file():
            resolved.append((path.stem, path))
            continue
        if manifest is not None and any(s.name == name for s in manifest.models):
            spec = manifest.model(name)
            candidate = Path(release_root) / spec.folder / f"{name}.ckpt"
            if candidate.is_file():
                resolved.append((name, candidate))
                continue
        resolved.append((name, find_release_checkpoint(name)))
    return resolved


def check_output_folder(output: Path, release_root: Path = DEFAULT_RELEASE_ROOT) -> None:
    """Refuse an output folder inside the release (evaluation never writes there) or one that cannot be
    made, before any work."""
    output, release = Path(output).resolve(), Path(release_root).resolve()
    if output == release or release in output.parents:
        raise BadInputError(
            f"--output {output} lies inside the release folder {release_root}; evaluation results never go "
            f"into the release: choose a folder outside it (default {DEFAULT_OUTPUT_ROOT}/)."
        )
    if output.exists() and not output.is_dir():
        raise BadInputError(f"--output {output} is a file; give a folder.")
    parent = next((p for p in [output, *output.parents] if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise BadInputError(f"--output {output}: no existing folder above it; create one.")


def _model_budget(
    model: nn.Module, setting: dict[str, int | str | None], split, side: int, count: int
) -> tuple[Budget, torch.Tensor]:
    """The budget of ``model`` on the first ``count`` maps of ``split``, and each map's own (N,)."""
    knob = budget_knob(model)
    wanted = setting.get(knob)
    longest = map_longest_distances(split)[:count]
    if wanted == "bfs":
        per_map = [choose_budget(model, "bfs", side=side, longest=int(d)).steps for d in longest.tolist()]
        steps = torch.tensor(per_map)
        trained = choose_budget(model, "trained", side=side, longest=0).trained
        return Budget(knob, int(steps.max()) if len(steps) else trained, "bfs", trained), steps
    budget = choose_budget(model, wanted, side=side, longest=int(longest.max()) if len(longest) else 0)
    return budget, torch.full((count,), budget.steps)


def evaluate_models(
    models: Sequence[tuple[str, Path]],
    data: Sequence[Path],
    *,
    k: int | str | None = None,
    max_iter: int | str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    progress: Callable[[str, int, int], None] | None = None,
    data_options: dict[str, Any] | None = None,
    threads: int | None = 1,
) -> EvaluationReport:
    """Score every model on every data file's test split (map files: their maps).

    Args:
        models: (label, checkpoint) pairs, e.g. from :func:`resolve_models`.
        data: data or map files (anything ``diffplan.envs.load_split`` reads).
        k, max_iter: the budget of unrolled / equilibrium planners: a number, ``trained``, ``side`` or
            ``bfs`` (see :mod:`diffplan.scoring.budget`); None = ``trained``.
        limit: score only the first ``limit`` maps of each file.
        progress: called with (description, done, total) as each (model, data) pair starts.
        data_options: reader options for map files (goals, scen, seed, threshold, num_goals).
        threads: torch threads to score on (None: as set). One is the default: torch's own default (one
            per core) oversubscribes a machine that is doing anything else, measured at 9,246 against
            332 ms per 49x49 maze for DE-SymVIN_maze15 with two training runs on the 2-core host.
    """
    with torch_threads(threads) as used:
        report = _evaluate_models(models, data, k, max_iter, limit, batch_size, progress, data_options)
    report.threads = used
    return report


def _evaluate_models(
    models, data, k, max_iter, limit, batch_size, progress, data_options
) -> EvaluationReport:
    """``evaluate_models`` on the threads set by the caller."""
    if limit is not None and limit < 1:
        raise BadInputError(f"--limit must be a positive number of maps, got {limit}.")
    for path in data:
        if not Path(path).is_file():
            raise BadInputError(f"data file {path} does not exist; give the path of a data or map file.")
    start = time.perf_counter()
    setting = {"k": k, "max_iter": max_iter}
    loaded: dict[tuple[Path, Task], Any] = {}
    rows: list[EvaluationRow] = []
    total, done = len(models) * len(data), 0
    for label, checkpoint in models:
        model = load_model(checkpoint)
        task = Task(model.release_info["extra"].get("kind") or model.task)
        for path in data:
            if progress is not None:
                progress(f"{label} on {Path(path).name}", done, total)
            key = (Path(path), task)
            if key not in loaded:
                loaded[key] = load_split(path, "test", kind=task, **(data_options or {}))
            split = loaded[key]
            count = len(split) if limit is None else min(limit, len(split))
            height, width = split.maze.shape[-2:]
            budget, steps = _model_budget(model, setting, split, max(height, width), count)
            begin = time.perf_counter()
            scores = evaluate(model, split, limit=count, steps=steps, batch_size=batch_size)
            elapsed = time.perf_counter() - begin
            kept = {metric: scores[metric] for metric in (*METRICS, ANGLE_ERROR) if metric in scores}
            rows.append(
                EvaluationRow(
                    model=label,
                    algorithm=model.release_info["algorithm"],
                    task=task.value,
                    data=str(path),
                    maze_size=f"{height}x{width}",
                    maps=int(scores["maps"]),
                    budget=budget.to_dict(),
                    scores=kept,
                    ms_per_maze=1000 * elapsed / max(int(scores["maps"]), 1),
                )
            )
            done += 1
    if progress is not None:
        progress("done", total, total)
    return EvaluationReport(
        rows=rows,
        budget_setting={key: value for key, value in setting.items()},
        limit=limit,
        seconds=time.perf_counter() - start,
        created_date=now_iso(),
    )


def write_evaluation(report: EvaluationReport, output: Path) -> Path:
    """Write ``results.json`` into ``output`` (created if needed); returns its path."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / "results.json"
    report.output = str(output)
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    return path
