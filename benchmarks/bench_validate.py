"""Time `diffplan validate` over the release models that are present, and print a table.

    python benchmarks/bench_validate.py                      # manifests/release_v1.yaml, ./pretrained_models
    python benchmarks/bench_validate.py --manifest M --release-root DIR --limit 500 --threads 2 --jobs 1

Models whose checkpoint is missing are listed as absent and not timed. The release budget is 2 minutes
for all ten models on a 2-core CPU machine (DESIGN: `validate --all`).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from diffplan._threads import available_cores
from diffplan.release.layout import DEFAULT_RELEASE_ROOT, ReleasePaths
from diffplan.release.manifest import load_manifest
from diffplan.release.validation import validate_models

BUDGET_SECONDS = 120.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("manifests/release_v1.yaml"))
    parser.add_argument("--release-root", type=Path, default=DEFAULT_RELEASE_ROOT)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test maps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (validate's default: 1)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument(
        "--jobs", type=int, default=None, help="models validated at once (validate's default: one per core)"
    )
    args = parser.parse_args(argv)
    console = Console()
    manifest = load_manifest(args.manifest)
    present = [s.name for s in manifest.models if ReleasePaths.of(s, args.release_root).checkpoint.is_file()]
    absent = [s.name for s in manifest.models if s.name not in present]
    if not present:
        console.print(f"No release checkpoints under {args.release_root}; train the models first.")
        return 1
    start = time.perf_counter()
    report = validate_models(
        manifest,
        present,
        release_root=args.release_root,
        limit=args.limit,
        batch_size=args.batch_size,
        threads=args.threads,
        jobs=available_cores() if args.jobs is None else args.jobs,
    )
    total = time.perf_counter() - start  # includes loading the data sets once

    table = Table(
        title=f"validate: {len(present)} models, {report.jobs} job(s) of {report.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    for column in (
        "model",
        "maps",
        "validate (s)",
        "scoring (ms/maze)",
        "latency (ms/maze)",
        "peak (MB)",
        "accuracy",
        "status",
    ):
        table.add_column(column, justify="left" if column in ("model", "status") else "right")
    for m in report.models:
        table.add_row(
            m.name,
            str(m.scores.get("maps", "-")),
            f"{m.seconds:.2f}",
            "-" if m.batched_ms_per_maze is None else f"{m.batched_ms_per_maze:.2f}",
            "-" if m.latency_ms is None else f"{m.latency_ms:.2f}",
            "-" if m.peak_memory_mb is None else f"{m.peak_memory_mb:.2f}",
            "-" if "accuracy" not in m.scores else f"{100 * m.scores['accuracy']:.2f}%",
            "pass" if m.passed else "fail: " + ", ".join(c.name for c in m.failed),
        )
    for name in absent:
        table.add_row(name, "-", "-", "-", "-", "-", "-", "absent")
    console.print(table)
    verdict = "within" if total <= BUDGET_SECONDS else "OVER"
    console.print(
        f"total {total:.1f} s for {len(present)} models ({verdict} the {BUDGET_SECONDS:.0f} s budget "
        f"for ten)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
