"""Training-step time and peak memory of the grid planners at release size.

    python -m benchmarks.bench_grid_models [--steps 10] [--batch-size 32] [--threads N]
                                           [--planners NAME ...] [--reference] [--json]

For each grid planner (release hyper-parameters below, l_h 150, l_q 40, batch 32 of 15x15 mazes of the
release distribution) one training step is forward + set cross-entropy + backward + RMSprop step. Each
planner runs in a fresh process, so "peak memory" is the growth of that process's maximum resident set
size (``resource.getrusage(...).ru_maxrss``) from just before the first step to the end: the memory a
training step needs beyond the model and the batch. Besides wall-clock time the table gives the process
CPU time of a step, which other load on a shared machine disturbs less. DEQ planners are timed with
tolerance 0, i.e. with all ``max_iter`` solver iterations forward and backward, as trained ones use.
``--reference`` adds the published SymVIN computation (escnn modules called at every step, the q filter
re-expanded and the reward re-convolved each step) for comparison on the same machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time

import numpy as np
import torch

# Release hyper-parameters recommended for manifests/release_v1.yaml (see the grid planners' report).
RELEASE_CONFIGS: dict[str, dict] = {
    "VIN": dict(k=40, value_norm=True, gamma=0.9, wall_mask=True),
    "SymVIN": dict(k=40, complete_basis=True, value_norm=True, gamma=0.9, wall_mask=True),
    "DE-VIN": dict(gamma=0.9, wall_mask=True),
    "DE-SymVIN": dict(gamma=0.9, wall_mask=True),
}
REFERENCE = "SymVIN (published computation)"
# At initialisation the value kernel is zero and a DEQ converges in a few iterations, while trained DEQ
# planners use all 50 (information crosses one cell per iteration; paths reach 78 cells). Time them at
# that cost: tolerance 0 makes both solvers run max_iter iterations.
DEQ_TIMING = dict(tol=0.0, backward_tol=0.0)


def _batch(batch_size: int, size: int = 15) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mazes of the release distribution with their optimal-action sets (random mazes as a fallback)."""
    rng = np.random.default_rng(0)
    try:
        from diffplan.envs.expert import expert_labels
        from diffplan.envs.generator import generate_mazes, goal_maps

        mazes, goal_cell = generate_mazes(batch_size, size, rng=rng)
        goals = goal_maps(goal_cell, size, size)  # (B, 1, H, W)
        optimal = expert_labels(mazes, goals)[1]
    except ImportError:  # the environments package is optional for this benchmark
        mazes = (rng.random((batch_size, size, size)) < 0.6).astype(np.float32)
        goals = np.zeros((batch_size, 1, size, size), dtype=np.float32)
        goals[:, 0, size // 2, size // 2] = mazes[:, size // 2, size // 2] = 1
        optimal = rng.random((batch_size, 4, size, size)) < 0.5
    return (
        torch.as_tensor(mazes, dtype=torch.float32),
        torch.as_tensor(goals, dtype=torch.float32).reshape(batch_size, 1, size, size),
        torch.as_tensor(optimal, dtype=torch.bool),
    )


def _set_loss(logits: torch.Tensor, optimal: torch.Tensor) -> torch.Tensor:
    """-log of the probability of the optimal-action set, over cells that have one."""
    log_p = torch.log_softmax(logits, dim=1).masked_fill(~optimal, -1e9)
    scored = optimal.any(dim=1)
    return -torch.logsumexp(log_p, dim=1)[scored].mean()


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


def _measure(name: str, config: dict, steps: int, batch_size: int, threads: int, queue: mp.Queue) -> None:
    """Child process: build, warm up, time ``steps`` training steps, report through ``queue``."""
    if threads:
        torch.set_num_threads(threads)
    from diffplan.models import create_model

    torch.manual_seed(0)
    maze, goal, optimal = _batch(batch_size)
    model = _published_symvin(config["k"]) if name == REFERENCE else create_model(name, **config)
    optimiser = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu_times, stats = [], [], []
    for i in range(steps + 2):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = model(maze, goal)
        loss = _set_loss(out.logits, optimal)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if i >= 2:  # the first two steps warm up allocators and kernels
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            stats.append(dict(out.stats))
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(
        {
            "planner": name,
            "config": config,
            "parameters": sum(p.numel() for p in model.parameters()),
            "step_ms_median": 1000 * statistics.median(times),
            "step_ms_min": 1000 * min(times),
            "step_cpu_ms_median": 1000 * statistics.median(cpu_times),
            "peak_rss_delta_mb": (rss_after - rss_before) / 1024,  # ru_maxrss is in KiB on Linux
            "stats_mean": {k: statistics.mean(s.get(k, float("nan")) for s in stats) for k in stats[0]},
            "threads": torch.get_num_threads(),
        }
    )


def run(
    steps: int = 10,
    batch_size: int = 32,
    threads: int = 0,
    reference: bool = False,
    planners: list[str] | None = None,
) -> list[dict]:
    """Measure the grid planners (all by default; the published SymVIN too if ``reference``), each in a
    process of its own."""
    from diffplan.models import get_model_entry, list_models

    names = planners or list_models(task="grid")
    jobs = [
        (name, {**RELEASE_CONFIGS.get(name, {}), **(DEQ_TIMING if get_model_entry(name).implicit else {})})
        for name in names
    ]
    if reference:
        jobs.append((REFERENCE, {"k": RELEASE_CONFIGS["SymVIN"]["k"]}))
    ctx = mp.get_context("spawn")
    results = []
    for name, config in jobs:
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(name, config, steps, batch_size, threads, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
    return results


def _render(results: list[dict], batch_size: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Grid planners: one training step, batch {batch_size} of 15x15 (RMSprop)")
    for col in (
        "planner",
        "config",
        "params",
        "step median (ms)",
        "step min (ms)",
        "CPU median (ms)",
        "peak RSS +MB",
        "DEQ iters f/b",
    ):
        table.add_column(col, justify="left" if col in ("planner", "config") else "right")
    for r in results:
        s = r["stats_mean"]
        iters = (
            f"{s['forward_iterations']:.1f} / {s.get('backward_iterations', float('nan')):.1f}"
            if ("forward_iterations" in s)
            else "-"
        )
        config = ", ".join(f"{k}={v}" for k, v in r["config"].items())
        table.add_row(
            r["planner"],
            config,
            f"{r['parameters']:,}",
            f"{r['step_ms_median']:.0f}",
            f"{r['step_ms_min']:.0f}",
            f"{r['step_cpu_ms_median']:.0f}",
            f"{r['peak_rss_delta_mb']:.0f}",
            iters,
        )
    console = Console()
    if not console.is_terminal:  # piped to a file: do not wrap the table at 80 columns
        console = Console(width=150)
    console.print(table)
    console.print(
        f"torch {torch.__version__}, {results[0]['threads']} thread(s). Step: wall clock; CPU: process CPU "
        "time of a step (all threads; other load on a shared machine disturbs it less). "
        "Peak RSS: growth of ru_maxrss."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per planner")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--reference", action="store_true", help="also time the published SymVIN computation")
    parser.add_argument("--planners", nargs="+", help="grid planners to measure (default: all registered)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run(args.steps, args.batch_size, args.threads, args.reference, args.planners)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _render(results, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
