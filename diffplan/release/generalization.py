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
import math
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


_MARKERS = ("o", "s", "^", "D", "v")


def line_styles(count: int) -> list[tuple[tuple[float, float, float], str]]:
    """(colour, marker) of each of ``count`` plotted models, all different: matplotlib's default cycle
    has ten colours, and an eleventh model (v1.1's ensemble) took the first one's. The 20 colours of
    ``tab20`` (its dark shades first, then its light ones), then the next marker."""
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return [(colours[order[i % 20]], _MARKERS[(i // 20) % len(_MARKERS)]) for i in range(count)]


def plot_success(results: dict[str, Any], output: str | Path, rule: str = PLOT_RULE) -> Path:
    """Success against maze side at budget ``rule``, one line per model (dashed: graph planners), as a
    PNG whose bytes depend only on the results (no software version or date in it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    output = Path(output)
    figure = Figure(figsize=(7.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.1, 0.12, 0.6, 0.8))
    names = list(dict.fromkeys(row["model"] for row in results["rows"]))
    for name, (colour, marker) in zip(names, line_styles(len(names)), strict=True):
        points = sorted(
            (r["side"], r["scores"]["success"])
            for r in results["rows"]
            if r["model"] == name and r["rule"] == rule
        )
        if points:
            sides, success = zip(*points, strict=True)
            style = "-" if any(r["task"] == "grid" for r in results["rows"] if r["model"] == name) else "--"
            axes.plot(sides, [100 * s for s in success], style, color=colour, marker=marker, label=name)
    axes.set_xlabel("maze side (trained on 15)")
    axes.set_ylabel(f"success (%) at the {rule} budget")
    axes.set_title("Generalisation to larger mazes")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return output


# --- this release against a baseline release (issue #18) ------------------------------------------

# Release v1.1's targets, from issue #18, judged per model on the study's rows at the ``bfs`` budget
# (success) and on the models' ``_info.json`` (15x15 test accuracy): grid planners success >= 98% at
# 49x49; graph planners >= 97% at 29x29 and >= 95% at 49x49; at 15x15 every model keeps its manifest
# target and loses at most 0.3 points of the baseline's test accuracy, and its success on the study's
# 15x15 maps is >= 99.9% (grid) / >= 99.5% (graph). "A model that misses a target ships only if it beats
# its v1.0 counterpart everywhere" (:data:`TargetReport.beats_baseline`).
TARGET_RULE = "bfs"
SUCCESS_TARGETS: dict[Task, tuple[tuple[int, float], ...]] = {
    Task.GRID: ((15, 0.999), (49, 0.98)),
    Task.GRAPH: ((15, 0.995), (29, 0.97), (49, 0.95)),
}
MAX_ACCURACY_LOSS = 0.003  # 15x15 test accuracy: at most 0.3 points below the baseline's
# Training cost: the release's recorded training times (``model_stats.training_time_hours``) sum to at
# most 4 hours, and no entry takes more than one.
MAX_TRAINING_HOURS, MAX_ENTRY_TRAINING_HOURS = 4.0, 1.0
# Row fields that name a study's test set beyond its size and map count, compared when both studies
# record them (``run_study`` records none: its sets are ``study_data``'s, seeded by size).
TEST_SET_FIELDS = ("data", "seed")


@dataclass(frozen=True)
class Scored:
    """One study row's figures: accuracy and success (fractions), the maps scored, and whatever else
    the row records about its test set (:data:`TEST_SET_FIELDS`, as ``(field, value)`` pairs)."""

    accuracy: float
    success: float
    maps: int
    test_set: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SideComparison:
    """One model at one side and budget rule, in the baseline's study and in this release's (None where
    that study has no row)."""

    side: int
    baseline: Scored | None
    release: Scored | None

    @property
    def same_maps(self) -> bool | None:
        """Whether both rows scored the same test set (map count, and the recorded test-set fields that
        both have); None when either row is missing."""
        if self.baseline is None or self.release is None:
            return None
        if self.baseline.maps != self.release.maps:
            return False
        a, b = dict(self.baseline.test_set), dict(self.release.test_set)
        return all(a[key] == b[key] for key in set(a) & set(b))


@dataclass(frozen=True)
class ModelComparison:
    """A model of this release beside the same-named model of the baseline: training time (hours) and
    15x15 test accuracy from each ``_info.json`` (``(baseline, release)``, None where missing), and per
    budget rule one :class:`SideComparison` per side of the comparison."""

    model: str
    task: Task
    counterpart: bool  # the baseline has a model of this name (metadata or study rows)
    training_hours: tuple[float | None, float | None]
    test_accuracy: tuple[float | None, float | None]
    sides: tuple[tuple[str, tuple[SideComparison, ...]], ...]

    def at(self, rule: str, side: int) -> SideComparison | None:
        for found_rule, cells in self.sides:
            if found_rule == rule:
                return next((c for c in cells if c.side == side), None)
        return None


@dataclass(frozen=True)
class MapCounts:
    """Maps scored at one (task, side) by each study (the distinct counts; empty where not scored)."""

    task: str
    side: int
    baseline: tuple[int, ...]
    release: tuple[int, ...]

    @property
    def same(self) -> bool:
        return self.baseline == self.release


@dataclass(frozen=True)
class ReleaseComparison:
    """This release's models against the baseline's (:func:`compare_releases`)."""

    sides: tuple[int, ...]
    rules: tuple[str, ...]
    models: tuple[ModelComparison, ...]
    baseline_only: tuple[str, ...]  # the baseline's models with no model of that name here
    maps: tuple[MapCounts, ...]
    has_study: tuple[bool, bool]  # (baseline, release)

    @property
    def different_sets(self) -> list[MapCounts]:
        """The (task, side) where the two studies scored different map counts, both having scored it."""
        return [m for m in self.maps if m.baseline and m.release and not m.same]

    @property
    def different_cells(self) -> list[tuple[str, str, int]]:
        """(model, rule, side) compared on different test sets (:attr:`SideComparison.same_maps`)."""
        return [
            (model.model, rule, cell.side)
            for model in self.models
            for rule, cells in model.sides
            for cell in cells
            if cell.same_maps is False
        ]


def _number(value: Any) -> float | None:
    return None if value is None or isinstance(value, bool) else float(value)


def _info_figures(info: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """(training hours, test accuracy) of one ``_info.json``: ``model_stats.training_time_hours`` (what
    the release README's model table shows) and ``performance.test_accuracy``."""
    if not info:
        return None, None
    stats, perf = info.get("model_stats") or {}, info.get("performance") or {}
    return _number(stats.get("training_time_hours")), _number(perf.get("test_accuracy"))


def _scored(row: Mapping[str, Any] | None) -> Scored | None:
    if row is None:
        return None
    recorded = tuple((key, str(row[key])) for key in TEST_SET_FIELDS if key in row)
    return Scored(
        float(row["scores"]["accuracy"]), float(row["scores"]["success"]), int(row["maps"]), recorded
    )


def compare_releases(
    models: Sequence[tuple[str, Task]],
    infos: Mapping[str, Mapping[str, Any] | None],
    results: Mapping[str, Any] | None,
    baseline_infos: Mapping[str, Mapping[str, Any] | None],
    baseline_results: Mapping[str, Any] | None,
) -> ReleaseComparison:
    """Each model of this release (``models``: name and task, in release order) beside the same-named
    model of the baseline release.

    ``infos`` / ``baseline_infos``: ``_info.json`` per model name (None when unreadable; the baseline's
    keys are its models); ``results`` / ``baseline_results``: each release's study (``results.json``),
    or None. Sides: every side either study scored; rules: every rule either study has, ``bfs`` first,
    then ``trained``, then any other in the order found. Pure: the same inputs give the same comparison.
    """
    rows = list((results or {}).get("rows", []))
    base_rows = list((baseline_results or {}).get("rows", []))
    sides = tuple(sorted({int(r["side"]) for r in rows + base_rows}))
    found_rules = list(dict.fromkeys(r["rule"] for r in rows + base_rows))
    rules = tuple(
        sorted(found_rules, key=lambda r: (r != TARGET_RULE, RULES.index(r) if r in RULES else len(RULES)))
    )
    baseline_names = set(baseline_infos) | {r["model"] for r in base_rows}
    compared = []
    for name, task in models:
        base_hours, base_accuracy = _info_figures(baseline_infos.get(name))
        hours, accuracy = _info_figures(infos.get(name))
        per_rule = []
        for rule in rules:
            cells = tuple(
                SideComparison(
                    side, _scored(_cell(base_rows, name, rule, side)), _scored(_cell(rows, name, rule, side))
                )
                for side in sides
            )
            per_rule.append((rule, cells))
        compared.append(
            ModelComparison(
                name,
                Task(task),
                name in baseline_names,
                (base_hours, hours),
                (base_accuracy, accuracy),
                tuple(per_rule),
            )
        )
    here = {name for name, _ in models}
    baseline_only = tuple(sorted(baseline_names - here))
    base_maps = maps_per_size({"rows": base_rows})
    release_maps = maps_per_size({"rows": rows})
    maps = tuple(
        MapCounts(
            task,
            side,
            tuple(base_maps.get(task, {}).get(side, [])),
            tuple(release_maps.get(task, {}).get(side, [])),
        )
        for task in sorted(set(base_maps) | set(release_maps), key=lambda t: [k.value for k in Task].index(t))
        for side in sorted(set(base_maps.get(task, {})) | set(release_maps.get(task, {})))
    )
    return ReleaseComparison(
        sides,
        rules,
        tuple(compared),
        baseline_only,
        maps,
        (baseline_results is not None, results is not None),
    )


@dataclass(frozen=True)
class TargetVerdict:
    """One issue #18 target of one model: ``key`` (``accuracy_target``, ``accuracy_loss``,
    ``success_<side>``), the target in words, the measured value (fraction; for ``accuracy_loss`` the
    points lost, as a fraction) and whether it is met (None: not measured, or no baseline to compare)."""

    key: str
    target: str
    measured: float | None
    met: bool | None


@dataclass(frozen=True)
class TargetReport:
    """A model's issue #18 targets and whether it beats its baseline counterpart everywhere.

    ``beats_baseline``: accuracy and success at every side of the comparison at the ``bfs`` budget, and
    the 15x15 test accuracy, each at least the baseline's (a tie counts: a model at 100% cannot do
    better); None when the baseline has no such model or a figure is missing on either side. ``worse``:
    where it is below the baseline."""

    model: str
    verdicts: tuple[TargetVerdict, ...]
    beats_baseline: bool | None
    worse: tuple[str, ...]

    @property
    def missed(self) -> list[TargetVerdict]:
        return [v for v in self.verdicts if v.met is False]

    @property
    def unmeasured(self) -> list[TargetVerdict]:
        return [v for v in self.verdicts if v.met is None]

    def verdict(self, key: str) -> TargetVerdict | None:
        return next((v for v in self.verdicts if v.key == key), None)


def judge_targets(model: ModelComparison, minimum: float) -> TargetReport:
    """The issue #18 targets (:data:`SUCCESS_TARGETS`, :data:`MAX_ACCURACY_LOSS`) of one compared model;
    ``minimum``: its manifest target (test accuracy strictly above it, as ``diffplan validate`` judges)."""
    base_accuracy, accuracy = model.test_accuracy
    verdicts = [
        TargetVerdict(
            "accuracy_target",
            f"15x15 test accuracy > {100 * minimum:.2f}% (manifest target)",
            accuracy,
            None if accuracy is None else accuracy > minimum,
        )
    ]
    loss = None if accuracy is None or base_accuracy is None else base_accuracy - accuracy
    verdicts.append(
        TargetVerdict(
            "accuracy_loss",
            f"15x15 test accuracy at most {100 * MAX_ACCURACY_LOSS:.1f} points below the baseline's",
            loss,
            None if loss is None else round(loss, 9) <= MAX_ACCURACY_LOSS,
        )
    )
    for side, bound in SUCCESS_TARGETS[model.task]:
        cell = model.at(TARGET_RULE, side)
        success = None if cell is None or cell.release is None else cell.release.success
        verdicts.append(
            TargetVerdict(
                f"success_{side}",
                f"success >= {100 * bound:.1f}% at {side}x{side} ({TARGET_RULE} budget)",
                success,
                None if success is None else success >= bound,
            )
        )
    worse, complete = [], base_accuracy is not None and accuracy is not None
    if complete and accuracy < base_accuracy:
        worse.append("15x15 test accuracy")
    for cell in next((cells for rule, cells in model.sides if rule == TARGET_RULE), ()):
        if cell.baseline is None and cell.release is None:
            continue  # a side neither study scored for this model (99x99 for graph planners)
        if cell.baseline is None or cell.release is None:
            complete = False
            continue
        for metric in ("accuracy", "success"):
            if getattr(cell.release, metric) < getattr(cell.baseline, metric):
                worse.append(f"{cell.side}x{cell.side} {metric}")
    measured_sides = any(
        cell.baseline is not None and cell.release is not None
        for rule, cells in model.sides
        if rule == TARGET_RULE
        for cell in cells
    )
    if not model.counterpart:
        beats = None
    elif worse:
        beats = False
    else:
        beats = True if complete and measured_sides else None
    return TargetReport(model.model, tuple(verdicts), beats, tuple(worse))


@dataclass(frozen=True)
class TrainingCost:
    """The release's recorded training times against :data:`MAX_TRAINING_HOURS` (summed) and
    :data:`MAX_ENTRY_TRAINING_HOURS` (each); hours, from each model's ``_info.json``."""

    total_hours: float
    baseline_total_hours: float | None
    trained: int  # models with a recorded training time above zero (an ensemble records 0)
    longest: tuple[str, float] | None
    unrecorded: tuple[str, ...]  # models whose metadata records no training time

    @property
    def met(self) -> bool | None:
        if self.unrecorded:
            return None
        longest = 0.0 if self.longest is None else self.longest[1]
        return self.total_hours <= MAX_TRAINING_HOURS and longest <= MAX_ENTRY_TRAINING_HOURS


def training_cost(comparison: ReleaseComparison) -> TrainingCost:
    """Sum and longest of this release's training times (and the baseline's sum, where each is known)."""
    hours = {m.model: m.training_hours[1] for m in comparison.models}
    recorded = {name: h for name, h in hours.items() if h is not None and math.isfinite(h)}
    base = [m.training_hours[0] for m in comparison.models if m.counterpart]
    base_known = base and all(h is not None and math.isfinite(h) for h in base)
    return TrainingCost(
        total_hours=sum(recorded.values()),
        baseline_total_hours=sum(base) if base_known else None,
        trained=sum(1 for h in recorded.values() if h > 0),
        longest=max(recorded.items(), key=lambda item: item[1]) if recorded else None,
        unrecorded=tuple(sorted(set(hours) - set(recorded))),
    )
