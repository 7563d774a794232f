"""Training-step time and peak memory of the graph release models, at their manifest hyper-parameters.

    python -m benchmarks.bench_graph_models [--steps 10] [--batch-size 32] [--threads N] [--json]
                                            [--manifest manifests/release_v1.yaml] [--runs MP-VIN_graph ...]
                                            [--bf16] [--compile]

One training step is forward + optimal-set loss + backward + RMSprop step on a batch of 32 15x15 mazes
of the release distribution as ``has_obstacle`` lattice graphs (7,200 nodes, 26,880 edges). Each
configuration runs in a fresh process, so "peak memory" is the growth of that process's maximum resident
set size (``ru_maxrss``) from just before the first step to the end: what a training step needs beyond
the model and the batch. "CPU/step" is the process CPU time per step (all threads together), which moves
less than wall time when other jobs share the machine. "epoch" is the median step time times the steps
of one epoch of 10,000 training graphs. ``--bf16`` runs the forward pass and loss under
``torch.autocast("cpu", torch.bfloat16)``. ``--compile`` compiles the convex value step
(``ConvexValueStep.step``: gather, weight, scatter-add, one call per VI iteration) with
``torch.compile(dynamic=True)``, so graphs of other sizes reuse the kernels; the compilation itself
falls in the two warm-up steps. Entries with another value step run as they are ("compiled" = no).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import sys
from pathlib import Path

import torch
from rich.table import Table

from benchmarks._common import (
    DEFAULT_MANIFEST,
    release_batch,
    release_configs,
    run_isolated,
    select_runs,
    table_console,
    time_training_steps,
    training_arguments,
)
from diffplan.models import create_model
from diffplan.models.graph._convex_vi import ConvexValueStep

TRAIN_GRAPHS = 10_000


def _measure(
    run: str,
    planner: str,
    config: dict,
    steps: int,
    batch_size: int,
    threads: int,
    bf16: bool,
    compile_step: bool,
    queue: mp.Queue,
) -> None:
    """Child process: build, warm up, time ``steps`` training steps, report through ``queue``."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch = release_batch("graph", batch_size)
    model = create_model(planner, **config)
    compiled = compile_step and any(isinstance(m, ConvexValueStep) for m in model.modules())
    if compiled:  # this process's class only: each measurement runs in a fresh process
        ConvexValueStep.step = torch.compile(ConvexValueStep.step, dynamic=True)
    timing = {**time_training_steps(model, batch, "graph", steps, bf16), "compiled": compiled}
    queue.put(
        {
            "run": run,
            "planner": planner,
            "config": config,
            "nodes": int(batch["x"].shape[0]),
            "edges": int(batch["edge_index"].shape[1]),
            "epoch_s": timing["step_ms_median"] / 1000 * math.ceil(TRAIN_GRAPHS / batch_size),
            **timing,
        }
    )


def run(
    manifest: Path = DEFAULT_MANIFEST,
    steps: int = 10,
    batch_size: int = 32,
    threads: int = 0,
    runs: list[str] | None = None,
    bf16: bool = False,
    compile_step: bool = False,
) -> list[dict]:
    """Measure the manifest's graph entries (all by default), each in a process of its own."""
    configs = release_configs(manifest, "graph")
    jobs = [
        (name, *configs[name], steps, batch_size, threads, bf16, compile_step)
        for name in select_runs(configs, runs, manifest)
    ]
    return run_isolated(_measure, jobs)


def _render(results: list[dict], batch_size: int) -> None:

    first = results[0]
    table = Table(
        title=f"Graph planners: one training step, batch {batch_size} of 15x15 lattice graphs "
        f"({first['nodes']:,} nodes, {first['edges']:,} edges; RMSprop)"
    )
    for col in ("run", "config", "params", "step median (ms)", "step min (ms)", "CPU/step (ms)", "epoch (s)",
                "peak RSS +MB", "compiled"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("run", "config") else "right")
    for r in results:
        config = ", ".join(f"{k}={v}" for k, v in r["config"].items())
        table.add_row(
            r["run"],
            config,
            f"{r['parameters']:,}",
            f"{r['step_ms_median']:.0f}",
            f"{r['step_ms_min']:.0f}",
            f"{r['cpu_ms_median']:.0f}",
            f"{r['epoch_s']:.0f}",
            f"{r['peak_rss_delta_mb']:.0f}",
            "yes" if r["compiled"] else "no",
        )
    console = table_console()
    console.print(table)
    console.print(
        f"torch {torch.__version__}, {first['threads']} thread(s); epoch = median step x "
        f"{math.ceil(TRAIN_GRAPHS / batch_size)} steps ({TRAIN_GRAPHS:,} graphs); "
        f"peak RSS = growth of ru_maxrss."
    )


def main(argv: list[str] | None = None) -> int:
    parser = training_arguments(__doc__.splitlines()[0], "graph")
    args = parser.parse_args(argv)
    results = run(
        args.manifest, args.steps, args.batch_size, args.threads, args.runs, args.bf16, args.compile
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _render(results, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
