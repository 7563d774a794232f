"""The generalization study: release models trained on 15x15 mazes, scored on fresh test sets of other
sizes, at their trained planning budget and at budgets that scale with the maps.

The runner is ``python -m benchmarks.bench_generalization``; this module holds what it shares with the
release README (``readme.render_readme``): running the study (:func:`run_study`), its files under
``<release-root>/generalization/`` (:func:`write_study`, :func:`read_study`), the table rows
(:func:`success_table`, :func:`budget_table`, :func:`timing_table`, :func:`symmetric_pairs`) and the plot
(:func:`plot_success`).

``results.json`` holds scores, maps and budgets only, rounded, in a fixed order: the same models on the
same maps give the same bytes, so a rerun leaves git clean and the release archive unchanged. The
timings (ms per maze, seconds) are measured anew on every run and are returned apart, never stored in
the release. ``success_vs_side.png`` is written without the matplotlib version in its metadata, so its
bytes depend only on the results (and the renderer).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffplan._atomic import atomic_path, atomic_write_text
from diffplan.envs import generate_dataset
from diffplan.errors import DataFileError
from diffplan.release.evaluation import evaluate_models
from diffplan.release.layout import ReleasePaths
from diffplan.release.manifest import Manifest
from diffplan.task import Task

FOLDER = "generalization"  # under the release root
RESULTS_NAME = "results.json"
PLOT_NAME = "success_vs_side.png"
DEFAULT_DATA_ROOT = Path("data/eval")
SIDES = {Task.GRID: (15, 29, 49, 99), Task.GRAPH: (15, 29, 49)}
# Maps scored per (task, side), sized so that the study fits in 20 minutes on a 2-core machine. A
# planner fails a map as a whole (a wrong action near the goal sends most cells into a loop), so success
# varies a lot between small sets: DE-VIN_maze15 v1.1 scored 99.96% on 50 49x49 maps and 95.14% on
# another 100; hence 200 maps up to 49x49 for grid planners.
MAPS = {
    (Task.GRID, 15): 200,
    (Task.GRID, 29): 200,
    (Task.GRID, 49): 200,
    (Task.GRID, 99): 10,
    (Task.GRAPH, 15): 100,
    (Task.GRAPH, 29): 50,
    (Task.GRAPH, 49): 20,
}
RULES = ("trained", "bfs")
PLOT_RULE = "bfs"
# What each budget rule means, for tables and the README.
RULE_MEANING = {
    "trained": "the budget the checkpoint was trained with (VI steps `k`, or the equilibrium solver's "
    "`max_iter`)",
    "side": "ceil(sqrt(2) x side), the SymPlan study's rule, never below the trained budget",
    "bfs": "one more than each map's longest BFS distance to the goal, never below the trained budget "
    "(every reachable cell is within reach of the goal's value); tables show the largest over the maps",
}


@dataclass(frozen=True)
class Study:
    """A study found in a release: its results and, when the plot is there, its path relative to the
    release root."""

    results: dict[str, Any]
    plot: str | None


def study_data(task: Task, side: int, maps: int, data_root: str | Path = DEFAULT_DATA_ROOT) -> Path:
    """A fresh test-only data set of ``maps`` mazes of side ``side`` in ``data_root`` (generated once,
    seeded by size, so every release is scored on the same maps)."""
    data_root = Path(data_root)
    path = data_root / f"{task.value}_m{side}_study_{maps}.{'npz' if task is Task.GRID else 'pth'}"
    if not path.is_file():
        data_root.mkdir(parents=True, exist_ok=True)
        generate_dataset(
            task.value, path, maze_size=side, train_size=0, valid_size=0, test_size=maps, seed=1000 + side
        )
    return path


def run_study(
    manifest: Manifest,
    release_root: str | Path,
    *,
    rules: Sequence[str] = RULES,
    sides: Mapping[Task, Sequence[int]] | None = None,
    maps: Mapping[tuple[Task, int], int] | int | None = None,
    data_root: str | Path = DEFAULT_DATA_ROOT,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every release model of ``manifest`` found under ``release_root`` on a test set of each side,
    at each budget rule.

    ``sides``: per task (default :data:`SIDES`); ``maps``: maps per (task, side) (default :data:`MAPS`),
    or one count for every size; ``data_root``: where the test sets are generated (once). ``progress`` is
    called with (description, done, total) as each (model, rule) starts.

    Returns ``(results, timings)``: ``results`` (what ``results.json`` holds) has one row per model x side
    x rule, in manifest, side and rule order; ``timings`` one entry per row (``ms_per_maze``, ``seconds``).
    """
    sides = dict(SIDES if sides is None else sides)
    models = [
        (spec, ReleasePaths.of(spec, release_root).checkpoint)
        for spec in manifest.models
        if ReleasePaths.of(spec, release_root).checkpoint.is_file()
    ]
    rows, timings = [], []
    total = len(models) * len(rules)
    for index, (spec, checkpoint) in enumerate(models):
        task_sides = tuple(sides.get(spec.task, ()))
        files = []
        for side in task_sides:
            count = maps if isinstance(maps, int) else (MAPS if maps is None else maps)[(spec.task, side)]
            files.append(study_data(spec.task, side, count, data_root))
        per_rule = {}
        for step, rule in enumerate(rules):
            if progress is not None:
                progress(f"{spec.name}, {rule} budget", index * len(rules) + step, total)
            per_rule[rule] = evaluate_models([(spec.name, checkpoint)], files, k=rule, max_iter=rule).rows
        for position, side in enumerate(task_sides):
            for rule in rules:
                row = per_rule[rule][position]
                rows.append(
                    {
                        "model": spec.name,
                        "algorithm": spec.algorithm,
                        "task": spec.task.value,
                        "symmetric": spec.group is not None,
                        "side": side,
                        "rule": rule,
                        "budget": row.budget,
                        "maps": row.maps,
                        "scores": {k: round(v, 6) for k, v in row.scores.items()},
                    }
                )
                timings.append(
                    {
                        "model": spec.name,
                        "side": side,
                        "rule": rule,
                        "ms_per_maze": row.ms_per_maze,
                        "seconds": row.ms_per_maze * row.maps / 1000,
                    }
                )
    if progress is not None:
        progress("done", total, total)
    return {"manifest": str(manifest.path), "rows": rows}, timings


def results_text(results: dict[str, Any]) -> str:
    """``results.json``'s text: sorted keys, two-space indent, one final newline."""
    return json.dumps(results, indent=2, sort_keys=True) + "\n"


def write_study(results: dict[str, Any], folder: str | Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``success_vs_side.png`` into ``folder`` (created); returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / RESULTS_NAME, results_text(results))
    return folder / RESULTS_NAME, plot_success(results, folder / PLOT_NAME)


def read_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json`` of the study, its rows checked for what the tables read."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFileError(
            f"{path} is not a readable generalization results file ({err}); rerun "
            "`python -m benchmarks.bench_generalization` or remove it."
        ) from err
    rows = results.get("rows") if isinstance(results, dict) else None
    needed = {"model", "task", "side", "rule", "budget", "maps", "scores"}
    if not isinstance(rows, list) or not all(
        isinstance(r, dict)
        and needed <= set(r)
        and isinstance(r["scores"], dict)
        and {"success", "accuracy"} <= set(r["scores"])
        and isinstance(r["budget"], dict)
        and {"knob", "steps", "trained"} <= set(r["budget"])
        for r in rows
    ):
        raise DataFileError(
            f"{path} does not hold generalization rows (model, task, side, rule, budget, maps, scores); "
            "rerun `python -m benchmarks.bench_generalization` or remove it."
        )
    return results


def read_study(release_root: str | Path) -> Study | None:
    """The study stored in ``<release_root>/generalization/``, or None when it has no ``results.json``."""
    folder = Path(release_root) / FOLDER
    if not (folder / RESULTS_NAME).is_file():
        return None
    plot = f"{FOLDER}/{PLOT_NAME}" if (folder / PLOT_NAME).is_file() else None
    return Study(read_results(folder / RESULTS_NAME), plot)


def study_sides(results: dict[str, Any]) -> list[int]:
    return sorted({int(r["side"]) for r in results["rows"]})


def _cell(rows: Sequence[dict[str, Any]], model: str, rule: str, side: int) -> dict[str, Any] | None:
    return next((r for r in rows if (r["model"], r["rule"], r["side"]) == (model, rule, side)), None)


def success_table(results: dict[str, Any]) -> list[tuple[str, str, list[tuple[float, float] | None]]]:
    """One row per (model, rule), in the results' order: ``(model, rule, cells)`` with a cell per side of
    :func:`study_sides`, ``(success, accuracy)`` as fractions or None where the model was not scored."""
    rows, sides = results["rows"], study_sides(results)
    table = []
    for model, rule in dict.fromkeys((r["model"], r["rule"]) for r in rows):
        cells = []
        for side in sides:
            row = _cell(rows, model, rule, side)
            cells.append(None if row is None else (row["scores"]["success"], row["scores"]["accuracy"]))
        table.append((model, rule, cells))
    return table


def budget_table(results: dict[str, Any]) -> list[tuple[str, str, int, dict[str, list[int | None]]]]:
    """One row per model: ``(model, knob, trained, {rule: steps per side})``; ``bfs`` steps are the
    largest per-map budget of that size."""
    rows, sides = results["rows"], study_sides(results)
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        first = next(r for r in rows if r["model"] == model)
        steps = {}
        for rule in rules:
            cells = [_cell(rows, model, rule, side) for side in sides]
            steps[rule] = [None if c is None else int(c["budget"]["steps"]) for c in cells]
        table.append((model, first["budget"]["knob"], int(first["budget"]["trained"]), steps))
    return table


def maps_per_size(results: dict[str, Any]) -> dict[str, dict[int, list[int]]]:
    """Maps scored per task and side (the distinct counts, normally one)."""
    counts: dict[str, dict[int, set[int]]] = {}
    for row in results["rows"]:
        counts.setdefault(row["task"], {}).setdefault(int(row["side"]), set()).add(int(row["maps"]))
    return {task: {side: sorted(c) for side, c in sorted(by.items())} for task, by in counts.items()}


def symmetric_pairs(
    results: dict[str, Any], pairs: Sequence[tuple[str, str]]
) -> list[tuple[str, str, str, list[tuple[float, float] | None]]]:
    """Each (symmetric, plain) model pair beside each other at each rule: ``(symmetric, plain, rule,
    cells)``, a cell per side of :func:`study_sides` holding both successes, or None where either is
    missing. Pairs with no row in the results are left out."""
    rows, sides = results["rows"], study_sides(results)
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    out = []
    for sym, plain in pairs:
        for rule in rules:
            cells = []
            for side in sides:
                a, b = _cell(rows, sym, rule, side), _cell(rows, plain, rule, side)
                cells.append(
                    None if a is None or b is None else (a["scores"]["success"], b["scores"]["success"])
                )
            if any(c is not None for c in cells):
                out.append((sym, plain, rule, cells))
    return out


def timing_table(
    timings: Sequence[dict[str, Any]], sides: Sequence[int] | None = None
) -> tuple[list[int], list[tuple[str, str, list[float | None]]]]:
    """ms per maze: ``(sides, rows)``, a row ``(model, rule, ms per side)`` per (model, rule) in the
    timings' order (None where not measured)."""
    sides = sorted({int(t["side"]) for t in timings}) if sides is None else list(sides)
    rows = []
    for model, rule in dict.fromkeys((t["model"], t["rule"]) for t in timings):
        cells = []
        for side in sides:
            found = next(
                (t for t in timings if (t["model"], t["rule"], int(t["side"])) == (model, rule, side)), None
            )
            cells.append(None if found is None else float(found["ms_per_maze"]))
        rows.append((model, rule, cells))
    return sides, rows


def plot_success(results: dict[str, Any], output: str | Path, rule: str = PLOT_RULE) -> Path:
    """Success against maze side at budget ``rule``, one line per model (dashed: graph planners), as a
    PNG whose bytes depend only on the results (no software version or date in it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    output = Path(output)
    figure = Figure(figsize=(7.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.1, 0.12, 0.6, 0.8))
    for name in dict.fromkeys(row["model"] for row in results["rows"]):
        points = sorted(
            (r["side"], r["scores"]["success"])
            for r in results["rows"]
            if r["model"] == name and r["rule"] == rule
        )
        if points:
            sides, success = zip(*points, strict=True)
            style = "-" if any(r["task"] == "grid" for r in results["rows"] if r["model"] == name) else "--"
            axes.plot(sides, [100 * s for s in success], style, marker="o", label=name)
    axes.set_xlabel("maze side (trained on 15)")
    axes.set_ylabel(f"success (%) at the {rule} budget")
    axes.set_title("Generalisation to larger mazes")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return output
