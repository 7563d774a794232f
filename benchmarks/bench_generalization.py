"""The generalization study: release models trained on 15x15 mazes, scored on fresh test sets of other
sizes, at their trained planning budget and at budgets that scale with the maps.

    python -m benchmarks.bench_generalization                       # v1.0 release, sizes 15 29 49 (+99 grid)
    python -m benchmarks.bench_generalization --release-root pretrained_models/v1.1 \
        --manifest manifests/release_v1.1.yaml
    python -m benchmarks.bench_generalization --quick                 # a few maps per size (a smoke run)

A thin runner over :mod:`diffplan.release.generalization` (which ``diffplan package`` also reads to put
the study in the release README). Test sets are generated once into ``--data-root`` (``data/eval/``;
seeded, the same files for every release). Budgets: ``trained``, ``side`` (ceil(sqrt(2) x side), the
SymPlan study) and ``bfs`` (each map's longest BFS distance + 1). Writes, under
``<release-root>/generalization/``, ``results.json`` (scores, maps and budgets only: deterministic, so a
rerun leaves git clean) and ``success_vs_side.png`` (success against maze side at the ``bfs`` budget,
one line per model); timings (ms per maze) go to ``--timings-root`` (``runs/generalization/``), with
``tables.md``, the success and timing tables as markdown for the project README. Map counts per size
are in ``generalization.MAPS`` (fewer at the largest sizes, where one map costs the most).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from diffplan._atomic import atomic_write_text
from diffplan.release import generalization as study
from diffplan.release.layout import DEFAULT_RELEASE_ROOT
from diffplan.release.manifest import load_manifest

DEFAULT_TIMINGS_ROOT = Path("runs/generalization")


def _fmt(cell) -> str:
    return "-" if cell is None else f"{100 * cell[0]:.1f} ({100 * cell[1]:.1f})"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def print_tables(results: dict, timings: list[dict], console: Console) -> None:
    sides = study.study_sides(results)
    table = Table(title="Success (accuracy) in % by maze side and budget")
    table.add_column("model")
    table.add_column("budget")
    for side in sides:
        table.add_column(f"{side}x{side}", justify="right")
    for model, rule, cells in study.success_table(results):
        table.add_row(model, rule, *(_fmt(c) for c in cells))
    console.print(table)
    timing_sides, rows = study.timing_table(timings)
    table = Table(title="ms per maze by maze side and budget")
    table.add_column("model")
    table.add_column("budget")
    for side in timing_sides:
        table.add_column(f"{side}x{side}", justify="right")
    for model, rule, cells in rows:
        table.add_row(model, rule, *(_ms(c) for c in cells))
    console.print(table)


def markdown_tables(results: dict, timings: list[dict], seconds: float) -> str:
    """The success and timing tables as markdown (what the project README quotes)."""
    sides = study.study_sides(results)
    header = " | ".join(f"{s}x{s}" for s in sides)
    lines = [
        f"Study: {seconds:.0f} s. Success (accuracy) in %:",
        "",
        f"| model | budget | {header} |",
        "|---|---|" + "---:|" * len(sides),
    ]
    for model, rule, cells in study.success_table(results):
        lines.append(f"| {model} | {rule} | " + " | ".join(_fmt(c) for c in cells) + " |")
    timing_sides, rows = study.timing_table(timings)
    lines += [
        "",
        "ms per maze:",
        "",
        "| model | budget | " + " | ".join(f"{s}x{s}" for s in timing_sides) + " |",
        "|---|---|" + "---:|" * len(timing_sides),
    ]
    for model, rule, cells in rows:
        lines.append(f"| {model} | {rule} | " + " | ".join(_ms(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("manifests/release_v1.yaml"))
    parser.add_argument("--release-root", type=Path, default=DEFAULT_RELEASE_ROOT)
    parser.add_argument("--data-root", type=Path, default=study.DEFAULT_DATA_ROOT)
    parser.add_argument("--timings-root", type=Path, default=DEFAULT_TIMINGS_ROOT)
    parser.add_argument("--rules", nargs="+", default=list(study.RULES), choices=("trained", "side", "bfs"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="4 maps per size (smoke run); writes nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    manifest = load_manifest(args.manifest)
    start = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("generalization study", total=None)

        def progress(description: str, done: int, total: int) -> None:
            bar.update(task, description=description, completed=done, total=total)

        results, timings = study.run_study(
            manifest,
            args.release_root,
            rules=tuple(args.rules),
            maps=4 if args.quick else None,
            data_root=args.data_root,
            progress=progress,
        )
    seconds = time.perf_counter() - start
    print_tables(results, timings, console)
    console.print(f"study took {seconds:.0f} s")
    if args.quick:
        return 0
    results_path, plot_path = study.write_study(results, args.release_root / study.FOLDER)
    args.timings_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        args.timings_root / "timings.json",
        json.dumps({"seconds": round(seconds, 1), "threads": args.threads, "rows": timings}, indent=2) + "\n",
    )
    atomic_write_text(args.timings_root / "tables.md", markdown_tables(results, timings, seconds))
    console.print(f"wrote {results_path}, {plot_path} and {args.timings_root}/timings.json, tables.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
