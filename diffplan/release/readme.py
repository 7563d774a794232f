"""``pretrained_models/README.md`` and ``quick_start_guide.md``, generated from the models' metadata.

Both are pure functions of the manifest, the ``*_info.json`` files and the validation verdicts, so the
same inputs give the same bytes (no dates but the metadata's own). The guide's ``python`` code blocks
run as written, in order, in one namespace (tests execute them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffplan.release import generalization
from diffplan.release.generalization import ReleaseComparison, Study
from diffplan.release.manifest import Manifest, ModelSpec
from diffplan.release.reproducibility import ModelReruns
from diffplan.task import Task

ALGORITHMS = {
    "VIN": "Value Iteration Network (Tamar et al., 2016): a convolutional encoder turns maze and goal into "
    "a reward map, then K unrolled value-iteration steps (a convolution and a max over action channels) "
    "propagate values; the policy reads the final Q-values.",
    "SymVIN": "Symmetric VIN (Zhao et al., 2022): a VIN whose convolutions are steerable (escnn) and "
    "equivariant to the rotations and flips of the square (group D4), so rotating the maze rotates "
    "the plan exactly.",
    "DE-VIN": "Deep-equilibrium VIN: instead of K unrolled steps it solves for the fixed point of the "
    "value-iteration step and trains with implicit gradients, so planning depth adapts to the maze.",
    "DE-SymVIN": "Deep-equilibrium Symmetric VIN: the D4-equivariant VI step of SymVIN, solved to its fixed "
    "point with implicit gradients.",
    "MP-VIN": "Message-passing VIN: value iteration on the maze graph, each step a message-passing layer "
    "over 4-neighbour edges using relative node positions.",
    "Sym-MP-VIN": "Symmetric message-passing VIN: message passing whose messages are equivariant to the "
    "rotations and flips of the relative positions (group D4).",
    "GAT-VIN": "Graph-attention VIN: value iteration whose aggregation over neighbours is learned attention.",
    "GCN-VIN-v2": "Graph-convolutional VIN (v2): value iteration with graph convolutions over the maze "
    "graph.",
    "Ensemble": "Ensemble of trained planners of one task: the mean of their action log-probabilities "
    "(the log of the normalised geometric mean of their policies), every member run at one planning "
    "budget k.",
}

# Symmetric planner -> its plain counterpart, compared on the same data in the README.
PLAIN_COUNTERPART = {"SymVIN": "VIN", "DE-SymVIN": "DE-VIN", "Sym-MP-VIN": "MP-VIN"}

QUICK_START_MAZE = (
    "###############",
    "#.#...........#",
    "#.#######.###.#",
    "#.#.....#.#...#",
    "#.#.###.###.###",
    "#.#.#.#.......#",
    "#.#.#.###.###.#",
    "#.#.#...#.....#",
    "#.#.###.#####.#",
    "#.#.#.........#",
    "#.#.#.#######.#",
    "#.#.#.........#",
    "#.#.#.#.#.#####",
    "#...#.#.......#",
    "###############",
)
QUICK_START_GOAL = (1, 13)
QUICK_START_START = (13, 1)

METRICS = """\
Scored states are the reachable, non-goal free cells of each test maze (for graph planners: the
non-obstacle nodes). The policy is the argmax action over N, W, S, E; a continuous planner's (dy, dx)
vector is snapped to the neighbour whose direction has the largest cosine with it.

- **Accuracy**: the fraction of scored states whose policy action is one of the optimal actions
  (those that bring the agent one step closer to the goal by BFS distance; ties are common, and any
  optimal action counts).
- **Success**: the fraction of scored states from which following the policy reaches the goal (a cycle,
  or a move into a wall that never leads to the goal, is a failure).
- **Optimality**: the fraction of scored states whose policy path is exactly as long as the BFS distance.
- **Angle error** (continuous planners): the mean angle between the predicted vector and the nearest
  optimal direction.

Each metric is averaged per maze, then over the mazes of the test split. Release targets apply to
**accuracy**, strictly above the minimum; success and optimality are reported beside it."""


RELEASE_FOLDER = "pretrained_models"  # where a release lives in a project, and what load_model searches


@dataclass(frozen=True)
class BaselineComparison:
    """The release compared with a baseline release, for the README: the baseline's label (``v1.0``),
    the folder it lives in (``pretrained_models``) and the comparison rows
    (``generalization.compare_releases``)."""

    label: str
    folder: str
    rows: ReleaseComparison


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}%"


def _degrees(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f} deg"


def _counterparts(manifest: Manifest) -> list[tuple[ModelSpec, ModelSpec]]:
    """(symmetric, plain) entries of ``manifest`` trained on the same data, in manifest order."""
    pairs = []
    for sym in manifest.models:
        plain_algorithm = PLAIN_COUNTERPART.get(sym.algorithm)
        plain = next(
            (s for s in manifest.models if s.algorithm == plain_algorithm and Path(s.data) == Path(sym.data)),
            None,
        )
        if plain is not None:
            pairs.append((sym, plain))
    return pairs


def _symmetry_comparison(manifest: Manifest, infos: dict[str, dict | None]) -> list[str]:
    """Each symmetric model beside its plain counterpart on the same data (both trained)."""
    rows = []
    for sym, plain in _counterparts(manifest):
        if not infos.get(sym.name) or not infos.get(plain.name):
            continue
        a, b = infos[sym.name]["performance"], infos[plain.name]["performance"]
        gap = {m: 100 * (a[f"test_{m}"] - b[f"test_{m}"]) for m in ("accuracy", "success")}
        rows.append(
            f"| {sym.name} vs {plain.name} | {_pct(a['test_accuracy'])} vs {_pct(b['test_accuracy'])} "
            f"| {gap['accuracy']:+.2f} | {_pct(a['test_success'])} vs {_pct(b['test_success'])} "
            f"| {gap['success']:+.2f} |"
        )
    if not rows:
        return []
    return [
        "",
        "Symmetric planners beside their plain counterparts on the same test data (points; positive: "
        "the symmetric model is better):",
        "",
        "| Pair | Accuracy | Difference | Success | Difference |",
        "|---|---:|---:|---:|---:|",
        *rows,
    ]


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _status(
    name: str, verdicts: dict[str, list[str]] | None, info: dict | None, not_released: Mapping[str, str]
) -> str:
    if name in not_released:
        return not_released[name]
    if info is None:
        return "**missing**"
    if verdicts is None:
        return "not validated"
    failed = verdicts.get(name)
    if failed is None:
        return "not validated"
    return "passes" if not failed else f"**FAILS** ({', '.join(failed)})"


def _recipe(spec: ModelSpec, info: dict | None) -> str:
    if spec.members is not None:
        return (
            f"assembled from {', '.join(spec.members)} (their release checkpoints, no training); "
            f"planning budget k={spec.model_args()['k']} for every member."
        )
    run = (info or {}).get("training_run", {})
    args = ", ".join(f"{k}={v}" for k, v in sorted(spec.model_args().items())) or "defaults"
    parts = [f"{spec.optimizer} lr {spec.lr:g}", f"batch {spec.batch_size}", f"up to {spec.epochs} epochs"]
    if spec.init_from is not None:
        start = (info or {}).get("init_from") or {}
        sha = start.get("checkpoint_sha256")
        parts.insert(
            0, f"starts from {spec.init_from}'s release weights" + (f" (sha256 {sha[:12]}…)" if sha else "")
        )
    if run:
        parts.append(f"ran {run.get('epochs_run')} (best epoch {run.get('best_epoch')})")
    if spec.weight_decay:
        parts.append(f"weight decay {spec.weight_decay:g}")
    if spec.scheduler != "none":
        parts.append(f"{spec.scheduler} schedule")
    if spec.gradient_clip:
        parts.append(f"gradient clip {spec.gradient_clip:g}")
    parts.append(f"seed {spec.seed}")
    return f"{'; '.join(parts)}. Planner arguments: {args}."


def render_readme(
    manifest: Manifest,
    infos: dict[str, dict | None],
    version: str,
    verdicts: dict[str, list[str]] | None = None,
    reruns: list[ModelReruns] | None = None,
    study: Study | None = None,
    *,
    not_released: Mapping[str, str] | None = None,
    comparison: BaselineComparison | None = None,
    folder: str = RELEASE_FOLDER,
) -> str:
    """The release README. ``infos``: metadata per model name (None when missing); ``verdicts``: the
    names of the failed validation checks per model (empty list = passed), or None when not validated;
    ``reruns``: the reproducibility reruns found (``collect_reruns``), shown in a section of their own;
    ``study``: the generalization study of the release (``generalization.read_study``), a section of its
    own when given; ``not_released``: manifest entries the release does not hold, with why
    (``packaging.not_released``), listed as such, never as failing; ``comparison``: the release against
    a baseline release, a section of its own when given; ``folder``: where the release lives in a
    project (the archives' top folder, ``packaging.archive_top``), for the loading examples."""
    not_released = dict(not_released or {})
    released = [s for s in manifest.models if s.name not in not_released]
    sizes = " and ".join(f"{n}x{n}" for n in sorted({d.maze_size for d in manifest.datasets.values()}))
    test_sizes = " / ".join(str(n) for n in sorted({d.test_size for d in manifest.datasets.values()}))
    count = (
        f"{len(manifest.models)} pre-trained differentiable planners"
        if not not_released
        else f"{len(released)} of the {len(manifest.models)} differentiable planners of its manifest"
    )
    lines = [
        f"# diffplan pre-trained models, release v{version}",
        "",
        f"{count} (Value Iteration Network family) for "
        f"maze navigation on {sizes} grids and on graphs, trained from one manifest "
        f"(`{manifest.path}`). Generated by `diffplan package` from each model's metadata "
        "(`<name>_info.json`); every number below was measured by the code, none typed in.",
        "",
        "## Models",
        "",
        "| Model | Algorithm | Kind | Test accuracy | Target | Success | Optimality | Parameters | Size (MB) "
        "| Angle error | Training (h) | Validation |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for spec in manifest.models:
        info = infos.get(spec.name)
        perf = (info or {}).get("performance", {})
        stats = (info or {}).get("model_stats", {})
        lines.append(
            f"| {spec.name} | {spec.algorithm} | {spec.folder} | {_pct(perf.get('test_accuracy'))} "
            f"| > {_pct(spec.target.minimum)} | {_pct(perf.get('test_success'))} "
            f"| {_pct(perf.get('test_optimality'))} | {_num(stats.get('total_parameters'), ',')} "
            f"| {_num(stats.get('file_size_mb'), '.3f')} | {_degrees(perf.get('test_angle_error_degrees'))} "
            f"| {_num(stats.get('training_time_hours'), '.2f')} "
            f"| {_status(spec.name, verdicts, info, not_released)} |"
        )
    failing = [
        s.name
        for s in released
        if infos.get(s.name) is None or (verdicts is not None and verdicts.get(s.name))
    ]
    if failing:
        lines += [
            "",
            f"**Warning:** {', '.join(failing)} did not pass release validation; see "
            "`evaluation_results/` and run `diffplan validate` for the failed checks.",
        ]
    if not_released:
        by_reason: dict[str, list[str]] = {}
        for name, reason in not_released.items():
            by_reason.setdefault(reason, []).append(name)
        listed = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())
        lines += [
            "",
            f"Not part of this release: {listed}. Their manifest entries are listed for completeness; "
            "they were neither validated nor archived.",
        ]
    lines += [
        "",
        f"Scores are on the test split of each model's data set ({test_sizes} mazes never seen in training). "
        "Kind: `grid` planners read the maze as an image; `graph` planners read the maze graph (every cell "
        "a node, 4-neighbour edges); `continuous` planners are graph planners that output a move vector.",
    ]
    lines += _symmetry_comparison(manifest, infos)
    if study is not None:
        lines += ["", *_generalization_section(manifest, study)]
    if comparison is not None:
        lines += ["", *_comparison_section(manifest, version, comparison, not_released)]
    lines += ["", "## The models one by one"]
    for spec in manifest.models:
        lines += ["", *_model_section(spec, infos.get(spec.name), not_released.get(spec.name))]
    shown = released or manifest.models
    grid = next((s.name for s in shown if s.task is Task.GRID), shown[0].name)
    path = f"{folder}/{manifest.model(grid).folder}/{grid}.ckpt"
    if folder == RELEASE_FOLDER:
        load = [
            f'model = diffplan.load_model("{grid}")  # by name, from ./pretrained_models',
            f'# or by path: diffplan.load_model("{path}")',
        ]
    else:
        load = [
            f'model = diffplan.load_model("{grid}", release_root="{folder}")  # its own root',
            f'# or by path: diffplan.load_model("{path}")',
        ]
    lines += [
        "",
        "## Loading a model",
        "",
        "```python",
        "import diffplan",
        "",
        *load,
        "```",
        "",
        "Checkpoints are plain tensors and the planner's config: `load_model` reads them with "
        "`torch.load(..., weights_only=True)`, rebuilds the planner from its registered name and loads "
        "the weights strictly. No pickled code is ever run. Before that it checks the file's sha256 "
        "against `model_stats.checkpoint_sha256` of the `<name>_info.json` beside it and refuses a "
        "checkpoint that differs (`load_model(path, verify=False)` skips the check; a checkpoint with no "
        "metadata beside it loads unchecked). `diffplan.plan_maze(model, maze, goal)` then "
        "returns the policy and value map of any maze; see `quick_start_guide.md`.",
        "",
        "Checkpoints of symmetric grid planners are in format 3: besides their coefficients they store "
        "every escnn steerable filter expanded, and loading solves for the coefficients on the reading "
        "host's basis, because escnn computes its bases numerically and they differ between CPUs (the "
        "format-2 SymVIN_maze15 planned at 2.5% accuracy on an AMD EPYC host). The complete 3x3 basis is "
        "the canonical orbit basis (format 2), the same on every host and thread count; `diffplan "
        "validate` checks a model against itself on two threads. Older checkpoints load and are "
        "converted; `diffplan upgrade CHECKPOINT...` rewrites them, on the host that trained them.",
        "",
        "## Metrics",
        "",
        METRICS,
        "",
        "## Reproducing the release",
        "",
        "```bash",
        *_reproduce_commands(manifest, version, folder, comparison, [s.name for s in released]),
        "```",
        "",
        "Each model's `configs/<name>_config.yaml` is the exact manifest entry it was trained with, and "
        "its metadata records the sha256 fingerprint of the data arrays, so a rebuilt data set can be "
        "checked against the one used here (`diffplan validate` does). Data sets:",
        "",
    ]
    for key, dataset in manifest.datasets.items():
        fingerprints = sorted(
            {
                (infos.get(s.name) or {}).get("training_data", {}).get("fingerprint") or "-"
                for s in released
                if Path(s.data) == Path(dataset.path)
            }
        ) or ["-"]
        lines.append(
            f"- `{dataset.path}` ({key}): {dataset.kind}, {dataset.maze_size}x{dataset.maze_size}, "
            f"{dataset.train_size}/{dataset.valid_size}/{dataset.test_size} maps, seed {dataset.seed}; "
            f"fingerprint {', '.join(f'`{f}`' for f in fingerprints)}"
        )
    if reruns:
        lines += ["", *_reproducibility_section(reruns)]
    lines += [
        "",
        "## Files and checksums",
        "",
        "```text",
        "README.md, quick_start_guide.md   this guide and the quick start",
        "grid/ graph/ continuous/          <name>.ckpt, <name>_info.json, configs/<name>_config.yaml",
        "evaluation_results/               `diffplan validate`'s verdicts and scores, per model and "
        "summary.json (no timings)",
        *(
            [
                "generalization/                   the generalization study: results.json (scores, maps, "
                "budgets; no timings)" + (" and success_vs_side.png" if study.plot else "")
            ]
            if study is not None
            else []
        ),
        "SHA256SUMS                        sha256 of every file above",
        "```",
        "",
        "Check a downloaded archive with `diffplan package --verify diffplan_pretrained_models_v"
        f"{version}.tar.gz` (or `sha256sum -c SHA256SUMS` inside the extracted folder).",
        "",
    ]
    return "\n".join(lines)


def _reproduce_commands(
    manifest: Manifest,
    version: str,
    folder: str,
    comparison: BaselineComparison | None,
    released: list[str],
) -> list[str]:
    """The commands that rebuild the release; for one in another folder than ``pretrained_models``,
    compared with a baseline or holding only some of its manifest's models, with the options that says."""
    everything = len(released) == len(manifest.models)
    if folder == RELEASE_FOLDER and comparison is None and everything:
        return [
            f"diffplan data generate --manifest {manifest.path}   # the data sets (fingerprints below)",
            f"diffplan train --manifest {manifest.path}           # every model, resumable",
            f"diffplan validate --all --manifest {manifest.path}  # the release checks",
            f"diffplan package --version {version}                # this folder, SHA256SUMS and the archives",
        ]
    root = "" if folder == RELEASE_FOLDER else f" --release-root {folder}"
    baseline = "" if comparison is None else f" --baseline {comparison.folder}"
    return [
        f"diffplan data generate --manifest {manifest.path}   # the data sets (fingerprints below)",
        f"diffplan train --manifest {manifest.path}{root}   # every model, resumable",
        f"diffplan validate {'--all' if everything else ' '.join(released)} --manifest {manifest.path}{root}"
        "   # the release checks",
        f"diffplan package --manifest {manifest.path}{root} --version {version}{baseline}",
    ]


def _sides_list(sides: list[int]) -> str:
    return " / ".join(f"{side}x{side}" for side in sides)


def _generalization_section(manifest: Manifest, study: Study) -> list[str]:
    """The study's tables (success and accuracy per model x budget x side, budgets, symmetric against
    plain), the maps per size and the plot, all from ``generalization/results.json``."""
    results = study.results
    sides = generalization.study_sides(results)
    header = " | ".join(f"{side}x{side}" for side in sides)
    align = "---:|" * len(sides)
    rules = list(dict.fromkeys(r["rule"] for r in results["rows"]))
    counts = _map_counts(results)
    lines = [
        "## Generalisation: trained on 15x15, planning on larger mazes",
        "",
        "The models scored on fresh test sets of larger mazes (generated with seeds of their own, never "
        "seen in training) by `python -m benchmarks.bench_generalization`; every number below is read "
        f"from `{generalization.FOLDER}/{generalization.RESULTS_NAME}`. Maps scored per size: {counts} "
        "(fewer at the largest sizes, where one map costs the most). Planning budgets:",
        "",
        *(
            f"- `{rule}`: {generalization.RULE_MEANING.get(rule, 'a fixed number of steps')}."
            for rule in rules
        ),
        "",
        "Success (accuracy) in %, per model, budget and maze side:",
        "",
        f"| Model | Budget | {header} |",
        f"|---|---|{align}",
    ]
    for model, rule, cells in generalization.success_table(results):
        shown = ("-" if c is None else f"{100 * c[0]:.1f} ({100 * c[1]:.1f})" for c in cells)
        lines.append(f"| {model} | {rule} | {' | '.join(shown)} |")
    scaled = [rule for rule in rules if rule != "trained"]
    if scaled:
        lines += [
            "",
            "Budgets used (steps; for `bfs` the largest over the maps of that size):",
            "",
            "| Model | Knob | Trained | "
            + " | ".join(f"{r} {side}x{side}" for r in scaled for side in sides)
            + " |",
            "|---|---|---:|" + "---:|" * (len(scaled) * len(sides)),
        ]
        for model, knob, trained, steps in generalization.budget_table(results):
            cells = ("-" if v is None else str(v) for r in scaled for v in steps[r])
            lines.append(f"| {model} | `{knob}` | {trained} | {' | '.join(cells)} |")
    if study.plot:
        lines += [
            "",
            f"![Success against maze side at the {generalization.PLOT_RULE} budget]({study.plot})",
            "",
            f"`{study.plot}`: success against maze side at the `{generalization.PLOT_RULE}` budget, one "
            "line per model (dashed: graph planners).",
        ]
    pairs = generalization.symmetric_pairs(
        results, [(sym.name, plain.name) for sym, plain in _counterparts(manifest)]
    )
    if pairs:
        lines += [
            "",
            "Symmetric planners beside their plain counterparts at each size: success in %, symmetric vs "
            "plain (difference in points; positive: the symmetric model is better):",
            "",
            f"| Pair | Budget | {header} |",
            f"|---|---|{align}",
        ]
        for sym, plain, rule, cells in pairs:
            shown = (
                "-" if c is None else f"{100 * c[0]:.1f} vs {100 * c[1]:.1f} ({100 * (c[0] - c[1]):+.1f})"
                for c in cells
            )
            lines.append(f"| {sym} vs {plain} | {rule} | {' | '.join(shown)} |")
    return lines


def _map_counts(results: dict[str, Any]) -> str:
    """Maps scored per size, in words: ``grid planners 200 / 200 at 15x15 / 29x29; graph planners ...``."""
    return "; ".join(
        f"{task} planners {' / '.join('-'.join(map(str, c)) for c in by_side.values())} at "
        f"{_sides_list(list(by_side))}"
        for task, by_side in generalization.maps_per_size(results).items()
    )


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _change(before: float | None, after: float | None, scale: float = 100.0, digits: int = 2) -> str:
    """``before -> after (difference)``; a missing side shows ``-``."""
    if before is None and after is None:
        return "-"

    def show(value: float | None) -> str:
        return "-" if value is None else f"{scale * value:.{digits}f}"

    text = f"{show(before)} -> {show(after)}"
    if before is not None and after is not None:
        text += f" ({scale * (after - before):+.{digits}f})"
    return text


def _study_cell(cell: generalization.SideComparison | None, metric: str) -> str:
    if cell is None:
        return "-"
    before = None if cell.baseline is None else getattr(cell.baseline, metric)
    after = None if cell.release is None else getattr(cell.release, metric)
    mark = " \u2020" if cell.same_maps is False else ""
    return _change(before, after) + mark


def _figure(verdict: generalization.TargetVerdict) -> str:
    """What was measured for a target, in words (``99.35%``, ``0.09 points lost``)."""
    if verdict.key != "accuracy_loss" or verdict.measured is None:
        return _pct(verdict.measured)
    lost = 100 * verdict.measured
    return f"{lost:.2f} points lost" if lost > 0 else f"{-lost:.2f} points gained"


def _target_cell(verdict: generalization.TargetVerdict | None, base: str, counterpart: bool) -> str:
    if verdict is None:
        return "-"
    if verdict.met is None:
        return f"no {base} model" if verdict.key == "accuracy_loss" and not counterpart else "not measured"
    return f"{'met' if verdict.met else '**missed**'} ({_figure(verdict)})"


def _comparison_section(
    manifest: Manifest, version: str, comparison: BaselineComparison, not_released: Mapping[str, str]
) -> list[str]:
    """This release against the baseline: training time, test accuracy and the study's accuracy and
    success per size (``bfs`` budget first, then the others), the issue #18 targets per model, and the
    baseline's models with no counterpart here."""
    rows, base, here = comparison.rows, comparison.label, f"v{version}"
    sides = list(rows.sides)
    has_base, has_here = rows.has_study
    lines = [
        f"## Against release {base}",
        "",
        f"Each model of this release beside the model of the same name in release {base} "
        f"(`{comparison.folder}/`), {base} -> {here} (difference in points; hours for training time): "
        "training time (`model_stats.training_time_hours` of each `_info.json`, as in the model table), "
        "test accuracy on the model's 15x15 test split (`performance.test_accuracy`), and accuracy and "
        "success in % on the generalization study's maps of each size (each release's "
        f"`{generalization.FOLDER}/{generalization.RESULTS_NAME}`).",
    ]
    studies = []
    for label, present, study_rows in ((base, has_base, rows.maps), (here, has_here, rows.maps)):
        side_of = (lambda m: m.baseline) if label == base else (lambda m: m.release)
        if not present:
            studies.append(f"{label} has no generalization study")
            continue
        by_task: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
        for counts in study_rows:
            if side_of(counts):
                by_task.setdefault(counts.task, []).append((counts.side, side_of(counts)))
        words = "; ".join(
            f"{task} planners {' / '.join('-'.join(map(str, c)) for _, c in found)} at "
            f"{_sides_list([side for side, _ in found])}"
            for task, found in by_task.items()
        )
        studies.append(f"{label}'s study: {words or 'no model scored'}")
    lines += ["", f"Maps scored per size: {'; '.join(studies)}."]
    different = rows.different_sets
    if not (has_base and has_here):
        lines += [
            "",
            "Without both studies the sizes cannot be compared; the targets that need the study are "
            "not measured.",
        ]
    elif different:
        listed = ", ".join(
            f"{m.task} {m.side}x{m.side} ({base}: {'-'.join(map(str, m.baseline))} maps, {here}: "
            f"{'-'.join(map(str, m.release))})"
            for m in different
        )
        lines += [
            "",
            f"**The two studies scored different test sets** at {listed}: there the difference compares "
            "different maps, not the same ones (cells marked \u2020).",
        ]
    elif rows.different_cells:
        lines += [
            "",
            "**Some rows of the two studies scored different test sets** (cells marked \u2020): there the "
            "difference compares different maps, not the same ones.",
        ]
    else:
        lines += [
            "",
            "Both studies scored the same number of maps at every size they share, and a size's test "
            "set is generated from that size's own seed, so they compare the same maps.",
        ]
    for index, rule in enumerate(rows.rules or (generalization.TARGET_RULE,)):
        head = ["Model"] + (["Training (h)", "Test accuracy"] if index == 0 else [])
        head += [f"{side}x{side} {metric}" for side in sides for metric in ("accuracy", "success")]
        lines += [
            "",
            f"Budget `{rule}`: {generalization.RULE_MEANING.get(rule, 'a fixed number of steps')}.",
            "",
            f"| {' | '.join(head)} |",
            "|---|" + "---:|" * (len(head) - 1),
        ]
        for model in rows.models:
            cells = [model.model if model.counterpart else f"{model.model} (no {base} model)"]
            if index == 0:
                cells += [
                    _change(*model.training_hours, scale=1.0),
                    _change(*model.test_accuracy),
                ]
            for side in sides:
                cell = model.at(rule, side)
                cells += [_study_cell(cell, "accuracy"), _study_cell(cell, "success")]
            lines.append(f"| {' | '.join(cells)} |")
        if not rows.rules:
            break
    lines += ["", *_targets_section(manifest, rows, base)]
    if rows.baseline_only:
        groups: dict[str, list[str]] = {}
        for name in rows.baseline_only:
            groups.setdefault(not_released.get(name, "not in this release's manifest"), []).append(name)
        listed = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in groups.items())
        lines += ["", f"Models of release {base} with no counterpart in this release: {listed}."]
    else:
        lines += ["", f"Every model of release {base} has a counterpart in this release."]
    return lines


def _targets_section(manifest: Manifest, rows: ReleaseComparison, base: str) -> list[str]:
    """The issue #18 targets, met or missed, per model, and what a miss means for shipping."""
    tasks = sorted({m.task for m in rows.models}, key=list(Task).index)
    success_sides = sorted({side for task in tasks for side, _ in generalization.SUCCESS_TARGETS[task]})
    head = [
        "Model",
        "15x15 test accuracy > manifest target",
        f"15x15 test accuracy lost vs {base} <= {100 * generalization.MAX_ACCURACY_LOSS:.1f} points",
    ]
    for side in success_sides:
        bounds = ", ".join(
            f"{task.value} >= {100 * bound:g}%"
            for task in tasks
            for found, bound in generalization.SUCCESS_TARGETS[task]
            if found == side
        )
        head.append(f"{side}x{side} success ({bounds})")
    head.append(f"Beats {base} everywhere")
    lines = [
        "### Release targets (issue #18)",
        "",
        f"Judged per model: success at the `{generalization.TARGET_RULE}` budget on the study's maps, test "
        f"accuracy from the `_info.json` files. A model that misses a target ships only if it beats its "
        f"{base} counterpart everywhere: at the `{generalization.TARGET_RULE}` budget, accuracy and success "
        "at every size both studies scored it, and the 15x15 test accuracy, each at least the "
        f"{base} model's (a tie counts).",
        "",
        f"| {' | '.join(head)} |",
        "|---|" + "---|" * (len(head) - 1),
    ]
    notes, unmeasured = [], []
    for model in rows.models:
        report = generalization.judge_targets(model, manifest.model(model.model).target.minimum)
        if report.unmeasured and model.counterpart:
            unmeasured.append(f"{model.model} ({', '.join(_target_name(v) for v in report.unmeasured)})")
        elif [v for v in report.unmeasured if v.key != "accuracy_loss"]:
            found = [v for v in report.unmeasured if v.key != "accuracy_loss"]
            unmeasured.append(f"{model.model} ({', '.join(_target_name(v) for v in found)})")
        keys = ["accuracy_target", "accuracy_loss", *(f"success_{side}" for side in success_sides)]
        cells = [model.model, *(_target_cell(report.verdict(k), base, model.counterpart) for k in keys)]
        if report.beats_baseline is True:
            beats = "yes"
        elif report.beats_baseline is False:
            beats = f"no (below at {', '.join(report.worse)})"
        else:
            beats = f"no {base} model" if not model.counterpart else "not measured"
        cells.append(beats)
        lines.append(f"| {' | '.join(cells)} |")
        if report.missed:
            missed = "; ".join(f"{v.target} ({_figure(v)})" for v in report.missed)
            if report.beats_baseline is True:
                then = f"it beats {base} everywhere, so it may ship"
            elif report.beats_baseline is False:
                then = (
                    f"it does not beat {base} everywhere (below at {', '.join(report.worse)}), so under "
                    "issue #18 it does not ship"
                )
            elif not model.counterpart:
                then = f"it has no {base} counterpart to beat, so under issue #18 it does not ship"
            else:
                then = f"whether it beats {base} everywhere is not measured"
            notes.append(f"- **{model.model}** misses {missed}; {then}.")
    if not notes:
        notes = ["No model misses a target." if not unmeasured else "No model misses a measured target."]
    lines += ["", *notes]
    if unmeasured:
        lines += ["", f"Not measured (no study row or no figure): {'; '.join(unmeasured)}."]
    return [*lines, "", _training_cost_line(generalization.training_cost(rows), base)]


def _training_cost_line(cost: generalization.TrainingCost, base: str) -> str:
    """The release-wide training-cost target, judged from the recorded training times."""
    limits = (
        f"at most {generalization.MAX_TRAINING_HOURS:g} hours summed, "
        f"{60 * generalization.MAX_ENTRY_TRAINING_HOURS:g} minutes each"
    )
    if cost.met is None:
        missing = ", ".join(cost.unrecorded)
        return f"Training cost ({limits}): not measured, no training time recorded for {missing}."
    longest = (
        "" if cost.longest is None else f"; longest {cost.longest[0]}, {60 * cost.longest[1]:.1f} minutes"
    )
    baseline = (
        ""
        if cost.baseline_total_hours is None
        else f" (their {base} counterparts: {cost.baseline_total_hours:.2f} h)"
    )
    verdict = "met" if cost.met else "**missed**"
    return (
        f"Training cost ({limits}; `model_stats.training_time_hours`, wall clock on the training machine): "
        f"{cost.total_hours:.2f} h summed over the {cost.trained} trained models{baseline}{longest}: "
        f"{verdict}."
    )


def _target_name(verdict: generalization.TargetVerdict) -> str:
    """A target's short name: ``49x49 success``, ``15x15 test accuracy``."""
    if verdict.key.startswith("success_"):
        side = verdict.key.removeprefix("success_")
        return f"{side}x{side} success"
    return "15x15 test accuracy" if verdict.key == "accuracy_target" else "15x15 accuracy loss"


def _model_section(spec: ModelSpec, info: dict | None, not_released: str | None = None) -> list[str]:
    description = ALGORITHMS.get(spec.algorithm, f"{spec.algorithm} planner.")
    flags = [
        f"group {spec.group}" if spec.group else "",
        "walls are nodes" if spec.has_obstacle else "",
        "continuous actions (dy, dx)" if spec.cont_action else "",
        "value map equivariant, policy head not (no_equiv_policy)" if spec.no_equiv_policy else "",
    ]
    flags = [f for f in flags if f]
    lines = [f"### {spec.name}", "", description + (f" Settings: {', '.join(flags)}." if flags else "")]
    if spec.notes:
        lines += ["", f"Notes: {spec.notes}"]
    if not_released is not None:
        return lines + ["", f"- **{not_released[:1].upper()}{not_released[1:]}**."]
    lines += [
        "",
        f"- Files: `{spec.folder}/{spec.name}.ckpt`, `{spec.folder}/{spec.name}_info.json`, "
        f"`{spec.folder}/configs/{spec.name}_config.yaml`",
    ]
    if info is None:
        return lines + [
            "- **Release files missing**: this model has not been trained or its metadata is unreadable."
        ]
    perf, stats = info.get("performance", {}), info.get("model_stats", {})
    data = info.get("training_data", {})
    scores = (
        f"test accuracy {_pct(perf.get('test_accuracy'))} (target > {_pct(spec.target.minimum)}), "
        f"success {_pct(perf.get('test_success'))}, optimality {_pct(perf.get('test_optimality'))}, "
        f"validation accuracy {_pct(perf.get('validation_accuracy'))}"
    )
    if perf.get("test_angle_error_degrees") is not None:
        scores += f", mean angle error {perf['test_angle_error_degrees']:.2f} degrees"
    hardware = info.get("hardware", {})
    machine = hardware.get("gpu") or hardware.get("processor") or "unknown hardware"
    return lines + [
        f"- Scores: {scores}.",
        f"- Recipe: {_recipe(spec, info)}",
        f"- Data: `{data.get('path', spec.data)}`, fingerprint `{data.get('fingerprint', '-')}`.",
        f"- Size: {_num(stats.get('total_parameters'), ',')} parameters, "
        f"{_num(stats.get('file_size_mb'), '.3f')} MB; sha256 `{stats.get('checkpoint_sha256', '-')}`.",
        f"- Trained: {_num(stats.get('training_time_hours'), '.2f')} h on {machine}; "
        f"final training loss {_num(perf.get('final_loss'), '.4f')}; "
        f"created {info.get('created_date', '-')}.",
    ]


def _marked_maze() -> list[str]:
    """The quick-start maze as text, start and goal marked ``S`` and ``G``."""
    rows = [list(row) for row in QUICK_START_MAZE]
    for (row, col), mark in ((QUICK_START_START, "S"), (QUICK_START_GOAL, "G")):
        rows[row][col] = mark
    return ["".join(row) for row in rows]


def render_quick_start(
    manifest: Manifest, version: str, *, released: list[str] | None = None, folder: str = RELEASE_FOLDER
) -> str:
    """The quick-start guide: install, load, plan. Its python blocks run in order as written.
    ``released``: the models the release holds (default: every entry), the only ones it uses;
    ``folder``: where the release lives (``packaging.archive_top``): models load by name from
    ``pretrained_models/``, by path from anywhere else."""
    shown = [s for s in manifest.models if released is None or s.name in released] or manifest.models
    grid = next((s for s in shown if s.task is Task.GRID), None)
    graph = next((s for s in shown if s.task is Task.GRAPH and not s.cont_action), None)
    continuous = next((s for s in shown if s.cont_action), None)
    first = grid or graph or continuous or shown[0]

    def ref(spec: ModelSpec) -> str:
        return spec.name if folder == RELEASE_FOLDER else f"{folder}/{spec.folder}/{spec.name}.ckpt"

    where = (
        "The examples below run from the folder that holds `pretrained_models/` (the repository root, or "
        "the folder where you unpacked the release archive, which unpacks into `pretrained_models/`): "
        "`load_model` finds a model by name under "
        "`./pretrained_models/`, or takes a checkpoint path."
        if folder == RELEASE_FOLDER
        else f"The examples below run from the folder that holds `{folder}/` (the repository root, or the "
        f"folder where you unpacked the release archive, which unpacks into `{folder}/`, beside the "
        f"files of a release in `{RELEASE_FOLDER}/`, never over them). They load the models by checkpoint "
        "path: by "
        f"name, `load_model` searches `./{RELEASE_FOLDER}/{{grid,graph,continuous}}/`, another release's "
        "folder."
    )
    maze_rows = "\n".join(f'    "{row}",' for row in QUICK_START_MAZE)
    if folder == RELEASE_FOLDER:
        check_commands = [
            f"diffplan validate {first.name}           # every release check, with a verdict each",
            f"diffplan inspect {first.name} --plot plan.png   # metadata, parameters, and a drawn test maze",
        ]
    else:
        check_commands = [
            f"diffplan validate {first.name} --manifest {manifest.path} --release-root {folder}",
            f"diffplan inspect {ref(first)} --plot plan.png",
        ]
    lines = [
        f"# Quick start: diffplan pre-trained models v{version}",
        "",
        "## Install",
        "",
        "```bash",
        "bash scripts/setup.sh      # from the diffplan repository: PyTorch (CPU), then `pip install -e .`",
        "```",
        "",
        where,
        "",
        "## Plan on your own map from the command line",
        "",
        "Draw a map as text (`#` wall, `.` free, `S` start, `G` goal; any size and aspect ratio), or "
        "give an image, a MovingAI `.map` or an `.npy` array with `--goal ROW,COL`. `diffplan plan` "
        "draws the policy's path in the terminal and says whether it reached the goal; `--plot` draws "
        "the value map, the policy and the path:",
        "",
        "```bash",
        "cat > my_maze.txt <<'EOF'",
        *_marked_maze(),
        "EOF",
        f"diffplan plan {ref(first)} my_maze.txt",
        f"diffplan plan {ref(first)} my_maze.txt --plot my_plan.png --json-out my_plan.json",
        "```",
        "",
        "The planning budget scales with the map (`--budget bfs`: the longest shortest path to the goal, "
        "plus one step), so a planner trained on 15x15 mazes can see a goal far away on a bigger map.",
        "",
        "## Load a model and plan a maze in Python",
        "",
        "A maze is an array with 1 for a free cell and 0 for a wall; the goal is a (row, col) cell. "
        "Actions are 0 = N (up), 1 = W (left), 2 = S (down), 3 = E (right).",
        "",
        "```python",
        "import numpy as np",
        "",
        "import diffplan",
        "",
        "rows = [",
        maze_rows,
        "]",
        'maze = np.array([[0 if c == "#" else 1 for c in row] for row in rows], dtype=np.float32)',
        "",
        f'model = diffplan.load_model("{ref(first)}")',
        f"result = diffplan.plan_maze(model, maze, goal={QUICK_START_GOAL})",
        "",
        "print(result.actions)  # (15, 15) tensor of actions, one per cell",
        "print(result.values)  # (15, 15) learned value map: higher nearer the goal",
        f"path = result.path(start={QUICK_START_START})  # the cells the policy visits",
        f'print(f"{{len(path) - 1}} steps, reached the goal: {{path[-1] == {QUICK_START_GOAL}}}")',
        "```",
        "",
    ]
    if graph is not None or continuous is not None:
        others = [s for s in (graph, continuous) if s is not None]
        lines += [
            "## Graph planners",
            "",
            "The same call works for graph planners: `plan_maze` builds the maze's graph (every cell a node, "
            "4-neighbour edges, features [row, col, is_goal, is_obstacle]) exactly as the data sets do, and "
            "continuous planners' move vectors are snapped to the best neighbour.",
            "",
            "```python",
        ]
        for spec in others:
            var = "vector_model" if spec.cont_action else "graph_model"
            lines += [
                f'{var} = diffplan.load_model("{ref(spec)}")',
                f"{var}_result = diffplan.plan_maze({var}, maze, goal={QUICK_START_GOAL})",
                f"print({var}_result.actions.shape, {var}_result.logits.shape)",
            ]
        lines += ["```", ""]
    lines += [
        "## Many mazes at once",
        "",
        "Stack mazes into a (B, H, W) array and give one goal per maze; every output gains a batch axis.",
        "",
        "```python",
        "mazes = np.stack([maze, maze.T])  # the second maze is the first, transposed",
        f"goals = [{QUICK_START_GOAL}, {QUICK_START_GOAL[::-1]}]",
        "batch = diffplan.plan_maze(model, mazes, goals)",
        "print(batch.actions.shape)  # (2, 15, 15)",
        "```",
        "",
        "## Score a model on a test split",
        "",
        f"After `diffplan data generate --manifest {manifest.path}` has written the data sets, the shared "
        "metrics score a model the way the release did:",
        "",
        "```python",
        "from diffplan.envs import load_split",
        "from diffplan.scoring import evaluate",
        "",
        f'test = load_split("{first.data}", "test")',
        "scores = evaluate(model, test, limit=100)",
        "print(f\"accuracy {scores['accuracy']:.3f}, success {scores['success']:.3f}\")",
        "```",
        "",
        "## Check a model",
        "",
        "```bash",
        *check_commands,
        "```",
        "",
    ]
    return "\n".join(lines)


def _reproducibility_section(reruns: list[ModelReruns]) -> list[str]:
    lines = [
        "## Reproducibility",
        "",
        "Release models trained again from their manifest entry on this hardware, with the same seed "
        "(does the recipe give the same model?) or other seeds (how much does the seed matter?). Spread "
        "is over one run per seed: mean, sample standard deviation, and range.",
        "",
        "| Model | Run | Seed | Test accuracy | Success | Optimality | Epochs | Training (h) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model in reruns:
        runs = ([model.release] if model.release else []) + model.reruns
        for run in runs:
            lines.append(
                f"| {model.name} | {run.label} | {run.seed} | {_pct(run.accuracy)} | {_pct(run.success)} "
                f"| {_pct(run.optimality)} | {run.epochs_run} | {run.training_hours:.2f} |"
            )
    lines.append("")
    for model in reruns:
        facts = []
        if model.same_seed_gap is not None:
            facts.append(f"same-seed retrain within {100 * model.same_seed_gap:.2f} points of the release")
        if len(model.seed_runs) > 1:
            for metric in ("accuracy", "success"):
                mean, deviation, low, high = model.spread(metric)
                facts.append(
                    f"{metric} over {len(model.seed_runs)} seeds {_pct(mean)} +/- {100 * deviation:.2f} "
                    f"(range {_pct(low)} to {_pct(high)})"
                )
        if model.other_recipe:
            facts.append(f"left out, trained from another recipe: {', '.join(model.other_recipe)}")
        if facts:
            lines.append(f"- **{model.name}**: {'; '.join(facts)}.")
    lines += [
        "",
        "Reruns are made with `diffplan train --only NAME [--seed S] --release-root "
        "pretrained_models/reproducibility/<label> --run-root runs/reproducibility/<label>`; their "
        "checkpoints and metadata are in `reproducibility/` beside this file.",
    ]
    return lines
