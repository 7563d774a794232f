"""Training-step time and peak memory of the grid planners at release size.

    python -m benchmarks.bench_grid_models [--steps 10] [--batch-size 32] [--threads N] [--reference]
                                           [--manifest manifests/release_v1.yaml] [--runs NAME ...] [--json]

For each grid entry of the manifest (its hyper-parameters; batch 32 of 15x15 mazes of the release
distribution) one training step is forward + set cross-entropy + backward + RMSprop step. Each
planner runs in a fresh process, so "peak memory" is the growth of that process's maximum resident set
size (``resource.getrusage(...).ru_maxrss``) from just before the first step to the end: the memory a
training step needs beyond the model and the batch. Besides wall-clock time the table gives the process
CPU time of a step, which other load on a shared machine disturbs less. DEQ planners are timed with
tolerance 0, i.e. with all ``max_iter`` solver iterations forward and backward, as trained ones use.
``--reference`` adds the published SymVIN computation (escnn modules called at every step, the q filter
re-expanded and the reward re-convolved each step) for comparison on the same machine.
"""

from __future__ import annotations

import json
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
from diffplan.models import create_model, get_model_entry

REFERENCE = "SymVIN (published computation)"
# At initialisation the value kernel is zero and a DEQ converges in a few iterations, while trained DEQ
# planners use all 50 (information crosses one cell per iteration; paths reach 78 cells). Time them at
# that cost: tolerance 0 makes both solvers run max_iter iterations.
DEQ_TIMING = dict(tol=0.0, backward_tol=0.0)


def _published_symvin(k: int) -> torch.nn.Module:
    """The published SymVIN forward (escnn modules, [r, v] -> q conv at every step), for comparison."""
    from escnn import nn as enn

    from diffplan.models._symmetry import action_field, get_gspace

    class Published(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            gs = get_gspace("d4")
            self.r_type = enn.FieldType(gs, [gs.regular_repr])
            self.in_type = enn.FieldType(gs, 2 * [gs.trivial_repr])
            h_type = enn.FieldType(gs, 150 * [gs.trivial_repr])
            self.q_type = enn.FieldType(gs, 40 * [gs.regular_repr])
            self.h = enn.R2Conv(self.in_type, h_type, 3, padding=1)
            self.r = enn.R2Conv(h_type, self.r_type, 1, bias=False)
            self.q = enn.R2Conv(
                enn.FieldType(gs, 2 * [gs.regular_repr]), self.q_type, 3, padding=1, bias=False
            )
            self.policy = enn.R2Conv(self.q_type, action_field(gs)[0], 1, bias=False)

        def forward(self, maze: torch.Tensor, goal: torch.Tensor):
            x = enn.GeometricTensor(torch.cat([maze[:, None], goal], 1), self.in_type)
            r = self.r(self.h(x))
            v = enn.GeometricTensor(torch.zeros_like(r.tensor), self.r_type)
            for _ in range(k):
                q = self.q(enn.tensor_directsum([r, v])).tensor
                b, _, h, w = q.shape
                v = enn.GeometricTensor(q.view(b, 40, 8, h, w).max(dim=1).values, self.r_type)
            q = self.q(enn.tensor_directsum([r, v]))
            return type("Out", (), {"logits": self.policy(q).tensor, "stats": {}})()

    return Published()


def _measure(
    name: str, planner: str, config: dict, steps: int, batch_size: int, threads: int, queue: mp.Queue
) -> None:
    """Child process: build, warm up, time ``steps`` training steps, report through ``queue``."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch = release_batch("grid", batch_size)
    model = _published_symvin(config["k"]) if name == REFERENCE else create_model(planner, **config)
    queue.put(
        {
            "run": name,
            "planner": planner,
            "config": config,
            **time_training_steps(model, batch, "grid", steps),
        }
    )


def run(
    manifest: Path = DEFAULT_MANIFEST,
    steps: int = 10,
    batch_size: int = 32,
    threads: int = 0,
    reference: bool = False,
    runs: list[str] | None = None,
) -> list[dict]:
    """Measure the manifest's grid entries (all by default; the published SymVIN computation too if
    ``reference``, at the K of the manifest's SymVIN entry), each in a process of its own."""
    configs = release_configs(manifest, "grid")
    jobs = []
    for name in select_runs(configs, runs, manifest):
        planner, config = configs[name]
        timing = DEQ_TIMING if get_model_entry(planner).implicit else {}
        jobs.append((name, planner, {**config, **timing}, steps, batch_size, threads))
    if reference:
        symvin_k = next((c["k"] for p, c in configs.values() if p == "SymVIN" and "k" in c), 20)
        jobs.append((REFERENCE, "SymVIN", {"k": symvin_k}, steps, batch_size, threads))
    return run_isolated(_measure, jobs)


def _render(results: list[dict], batch_size: int) -> None:

    table = Table(title=f"Grid planners: one training step, batch {batch_size} of 15x15 (RMSprop)")
    for col in (
        "run",
        "config",
        "params",
        "step median (ms)",
        "step min (ms)",
        "CPU median (ms)",
        "peak RSS +MB",
        "DEQ iters f/b",
    ):
        table.add_column(col, justify="left" if col in ("run", "config") else "right")
    for r in results:
        s = r["stats_mean"]
        iters = (
            f"{s['forward_iterations']:.1f} / {s.get('backward_iterations', float('nan')):.1f}"
            if ("forward_iterations" in s)
            else "-"
        )
        config = ", ".join(f"{k}={v}" for k, v in r["config"].items())
        table.add_row(
            r["run"],
            config,
            f"{r['parameters']:,}",
            f"{r['step_ms_median']:.0f}",
            f"{r['step_ms_min']:.0f}",
            f"{r['cpu_ms_median']:.0f}",
            f"{r['peak_rss_delta_mb']:.0f}",
            iters,
        )
    console = table_console()
    console.print(table)
    console.print(
        f"torch {torch.__version__}, {results[0]['threads']} thread(s). Step: wall clock; CPU: process CPU "
        "time of a step (all threads; other load on a shared machine disturbs it less). "
        "Peak RSS: growth of ru_maxrss."
    )


def main(argv: list[str] | None = None) -> int:
    parser = training_arguments(__doc__.splitlines()[0], "grid")
    parser.add_argument("--reference", action="store_true", help="also time the published SymVIN computation")
    args = parser.parse_args(argv)
    if args.bf16:  # the sparse VI step (diffplan.models.grid._vi_step) multiplies in one dtype
        parser.error("--bf16: the grid planners' VI step does not run under autocast; time them in float32.")
    if args.compile:  # a custom autograd Function with its own buffers and a hand-written backward
        parser.error(
            "--compile: the grid planners' VI step is not compiled; time the graph planners with it."
        )
    results = run(args.manifest, args.steps, args.batch_size, args.threads, args.reference, args.runs)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _render(results, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
