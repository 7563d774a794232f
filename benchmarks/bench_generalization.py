"""The generalization study: release models trained on 15x15 mazes, scored on fresh test sets of other
sizes, at their trained planning budget and at budgets that scale with the maps.

    python -m benchmarks.bench_generalization                       # v1.0 release, sizes 15 29 49 (+99 grid)
    python -m benchmarks.bench_generalization --release-root pretrained_models/v1.1 \
        --manifest manifests/release_v1.1.yaml
    python -m benchmarks.bench_generalization --quick                 # a few maps per size (a smoke run)

Test sets are generated once into ``data/eval/`` (seeded; the same files for every release). Budgets:
``trained``, ``side`` (ceil(sqrt(2) x side), the SymPlan study) and ``bfs`` (each map's longest BFS
distance + 1). Writes, under ``<release-root>/generalization/``, ``results.json`` (scores, maps and
budgets only: deterministic, so a rerun leaves git clean) and ``success_vs_side.png`` (success against
maze side at the ``bfs`` budget, one line per model); timings go to ``runs/generalization/timings.json``.
Map counts per size are in ``MAPS`` (fewer at the largest sizes, where one map costs the most).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from diffplan._atomic import atomic_path, atomic_write_text
from diffplan.envs import generate_dataset
from diffplan.release.evaluation import evaluate_models
from diffplan.release.layout import DEFAULT_RELEASE_ROOT, ReleasePaths
from diffplan.release.manifest import load_manifest
from diffplan.task import Task

GRID_SIDES = (15, 29, 49, 99)
GRAPH_SIDES = (15, 29, 49)
# maps scored per (task, side): the study fits in 20 minutes on a 2-core machine
MAPS = {
    (Task.GRID, 15): 100,
    (Task.GRID, 29): 100,
    (Task.GRID, 49): 50,
    (Task.GRID, 99): 5,
    (Task.GRAPH, 15): 50,
    (Task.GRAPH, 29): 30,
    (Task.GRAPH, 49): 10,
}
RULES = ("trained", "bfs")
DATA_ROOT = Path("data/eval")


def test_set(task: Task, side: int, maps: int) -> Path:
    """A fresh test-only data set of ``maps`` mazes of side ``side`` (generated once, seeded by size)."""
    path = DATA_ROOT / f"{task.value}_m{side}_study_{maps}.{'npz' if task is Task.GRID else 'pth'}"
    if not path.is_file():
        DATA_ROOT.mkdir(parents=True, exist_ok=True)
        generate_dataset(
            task.value, path, maze_size=side, train_size=0, valid_size=0, test_size=maps, seed=1000 + side
        )
    return path


def run_study(manifest_path: Path, release_root: Path, quick: bool, rules: tuple[str, ...]) -> dict:
    manifest = load_manifest(manifest_path)
    models = [
        (spec, ReleasePaths.of(spec, release_root).checkpoint)
        for spec in manifest.models
        if ReleasePaths.of(spec, release_root).checkpoint.is_file()
    ]
    rows, timings = [], []
    for spec, checkpoint in models:
        sides = GRID_SIDES if spec.task is Task.GRID else GRAPH_SIDES
        for side in sides:
            maps = 4 if quick else MAPS[(spec.task, side)]
            data = test_set(spec.task, side, maps)
            for rule in rules:
                start = time.perf_counter()
                report = evaluate_models([(spec.name, checkpoint)], [data], k=rule, max_iter=rule)
                row = report.rows[0]
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
                        "seconds": time.perf_counter() - start,
                    }  # fmt: skip
                )
    return {"manifest": str(manifest_path), "rows": rows}, timings


def plot_success(results: dict, output: Path, rule: str = "bfs") -> Path:
    """Success against maze side at budget ``rule``, one line per model."""
    figure = Figure(figsize=(7.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.1, 0.12, 0.6, 0.8))
    models = dict.fromkeys(row["model"] for row in results["rows"])
    for name in models:
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
        figure.savefig(tmp, format="png", dpi=100)
    return output


def print_table(results: dict, console: Console) -> None:
    table = Table(title="Success (accuracy) by maze side and budget")
    table.add_column("model")
    table.add_column("budget")
    sides = sorted({r["side"] for r in results["rows"]})
    for side in sides:
        table.add_column(f"{side}x{side}", justify="right")
    keys = dict.fromkeys((r["model"], r["rule"]) for r in results["rows"])
    for model, rule in keys:
        cells = []
        for side in sides:
            row = next(
                (r for r in results["rows"] if (r["model"], r["rule"], r["side"]) == (model, rule, side)),
                None,
            )
            cells.append(
                "-"
                if row is None
                else f"{100 * row['scores']['success']:.1f} ({100 * row['scores']['accuracy']:.1f})"
            )
        table.add_row(model, rule, *cells)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("manifests/release_v1.yaml"))
    parser.add_argument("--release-root", type=Path, default=DEFAULT_RELEASE_ROOT)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=("trained", "side", "bfs"))
    parser.add_argument("--quick", action="store_true", help="4 maps per size (smoke run); writes nothing")
    args = parser.parse_args(argv)
    console = Console()
    start = time.perf_counter()
    results, timings = run_study(args.manifest, args.release_root, args.quick, tuple(args.rules))
    print_table(results, console)
    console.print(f"study took {time.perf_counter() - start:.0f} s")
    if args.quick:
        return 0
    folder = args.release_root / "generalization"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    plot_success(results, folder / "success_vs_side.png")
    Path("runs/generalization").mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path("runs/generalization/timings.json"), json.dumps(timings, indent=2) + "\n")
    console.print(f"wrote {folder}/results.json and success_vs_side.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
