"""Training-step time and peak memory of the graph planners at their recommended release size.

    python -m benchmarks.bench_graph_models [--steps 10] [--batch-size 32] [--threads N] [--json]
                                            [--runs MP-VIN_graph ...]

One training step is forward + optimal-set loss + backward + RMSprop step on a batch of 32 15x15 mazes
of the release distribution as ``has_obstacle`` lattice graphs (7,200 nodes, 26,880 edges). Each
configuration runs in a fresh process, so "peak memory" is the growth of that process's maximum resident
set size (``ru_maxrss``) from just before the first step to the end: what a training step needs beyond
the model and the batch. "CPU/step" is the process CPU time per step (all threads together), which moves
less than wall time when other jobs share the machine. "epoch" is the median step time times the steps
of one epoch of 10,000 training graphs.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import statistics
import sys
import time

import numpy as np
import torch

# Recommended release hyper-parameters (manifest entry name -> planner and constructor arguments).
_MP = dict(k=30, l_h=16, l_q=8, mp_h=32, mp_q=16, readout_hidden=32)
_SYM = dict(k=30, l_h=4, l_q=4, mp_h=4, mp_q=4, readout_hidden=4, group="d4")
RELEASE_CONFIGS: dict[str, tuple[str, dict]] = {
    "MP-VIN_graph": ("MP-VIN", _MP),
    "Sym-MP-VIN_graph": ("Sym-MP-VIN", {**_SYM, "l_q": 6, "mp_q": 6}),
    "GAT-VIN_graph": ("GAT-VIN", dict(k=30, l_h=16, l_q=8, heads=4, readout_hidden=32)),
    "GCN-VIN-v2_graph": ("GCN-VIN-v2", dict(k=30, l_h=16, l_q=8, relations=4, readout_hidden=32)),
    "MP-VIN_continuous": ("MP-VIN", {**_MP, "cont_action": True, "neighbour_skip": True}),
    "Sym-MP-VIN_continuous": ("Sym-MP-VIN", {**_SYM, "cont_action": True, "no_equiv_policy": True}),
}
TRAIN_GRAPHS = 10_000


def _batch(batch_size: int, size: int = 15) -> dict[str, torch.Tensor]:
    """A training batch of release-distribution mazes as lattice graphs (random walls as a fallback)."""
    rng = np.random.default_rng(0)
    try:
        from diffplan.envs.generator import generate_mazes
        from diffplan.envs.graph import build_graph_split
        from diffplan.training.batching import graph_batch

        mazes, goal_cell = generate_mazes(batch_size, size, rng=rng)
        batch = graph_batch(build_graph_split(mazes, goal_cell), torch.arange(batch_size))
        return {
            "x": batch["x"],
            "edge_index": batch["edge_index"],
            "batch": batch["batch"],
            "optimal": batch["node_optimal"],
            "scored": batch["node_dist"] > 0,
        }
    except ImportError:  # the environments and training packages are optional for this benchmark
        cells = size * size
        rows, cols = np.divmod(np.arange(cells), size)
        x = np.zeros((batch_size * cells, 4), dtype=np.float32)
        x[:, 0], x[:, 1] = np.tile(rows, batch_size), np.tile(cols, batch_size)
        x[:, 3] = rng.random(batch_size * cells) < 0.4
        x[np.arange(batch_size) * cells + cells // 2, 2:] = (1, 0)
        edges = [
            (rr * size + cc, r * size + c)
            for r, c in zip(rows, cols, strict=True)
            for rr, cc in ((r - 1, c), (r, c - 1), (r + 1, c), (r, c + 1))
            if 0 <= rr < size and 0 <= cc < size
        ]
        lattice = torch.tensor(edges).T
        edge_index = torch.cat([lattice + i * cells for i in range(batch_size)], dim=1)
        optimal = torch.from_numpy(rng.random((batch_size * cells, 4)) < 0.4)
        optimal[:, 0] |= ~optimal.any(dim=1)
        return {
            "x": torch.from_numpy(x),
            "edge_index": edge_index,
            "batch": torch.arange(batch_size).repeat_interleave(cells),
            "optimal": optimal,
            "scored": torch.from_numpy(x[:, 3] == 0),
        }


def _set_loss(logits: torch.Tensor, optimal: torch.Tensor, cont_action: bool) -> torch.Tensor:
    """-log P(optimal set); a move vector scores the four moves by dot product (as training does)."""
    if cont_action:
        logits = logits @ torch.tensor([[-1.0, 0.0], [0.0, -1.0], [1.0, 0.0], [0.0, 1.0]]).T
    log_total = torch.logsumexp(logits, dim=-1)
    return (log_total - torch.logsumexp(logits.masked_fill(~optimal, -1e9), dim=-1)).mean()


def _measure(run: str, steps: int, batch_size: int, threads: int, queue: mp.Queue) -> None:
    """Child process: build, warm up, time ``steps`` training steps, report through ``queue``."""
    if threads:
        torch.set_num_threads(threads)
    from diffplan.models import create_model

    planner, config = RELEASE_CONFIGS[run]
    torch.manual_seed(0)
    batch = _batch(batch_size)
    model = create_model(planner, **config)
    optimiser = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    scored, cont_action = batch["scored"], bool(config.get("cont_action"))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu = [], []
    for i in range(steps + 2):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = model(batch["x"], batch["edge_index"], batch["batch"])
        loss = _set_loss(out.logits[scored], batch["optimal"][scored], cont_action)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if i >= 2:  # the first two steps warm up allocators and kernels
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(
        {
            "run": run,
            "planner": planner,
            "config": config,
            "parameters": sum(p.numel() for p in model.parameters()),
            "nodes": int(batch["x"].shape[0]),
            "edges": int(batch["edge_index"].shape[1]),
            "step_ms_median": 1000 * statistics.median(times),
            "step_ms_min": 1000 * min(times),
            "cpu_ms_median": 1000 * statistics.median(cpu),
            "epoch_s": statistics.median(times) * math.ceil(TRAIN_GRAPHS / batch_size),
            "peak_rss_delta_mb": (rss_after - rss_before) / 1024,  # ru_maxrss is in KiB on Linux
            "threads": torch.get_num_threads(),
        }
    )


def run(steps: int = 10, batch_size: int = 32, threads: int = 0, runs: list[str] | None = None) -> list[dict]:
    """Measure the release configurations (all by default), each in a process of its own."""
    ctx = mp.get_context("spawn")
    results = []
    for name in runs or list(RELEASE_CONFIGS):
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(name, steps, batch_size, threads, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
    return results


def _render(results: list[dict], batch_size: int) -> None:
    from rich.console import Console
    from rich.table import Table

    first = results[0]
    table = Table(
        title=f"Graph planners: one training step, batch {batch_size} of 15x15 lattice graphs "
        f"({first['nodes']:,} nodes, {first['edges']:,} edges; RMSprop)"
    )
    for col in ("run", "config", "params", "step median (ms)", "step min (ms)", "CPU/step (ms)", "epoch (s)",
                "peak RSS +MB"):  # fmt: skip
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
        )
    console = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets the whole table
    console.print(table)
    console.print(
        f"torch {torch.__version__}, {first['threads']} thread(s); epoch = median step x "
        f"{math.ceil(TRAIN_GRAPHS / batch_size)} steps ({TRAIN_GRAPHS:,} graphs); "
        f"peak RSS = growth of ru_maxrss."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per configuration")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--runs", nargs="+", choices=list(RELEASE_CONFIGS), help="configurations to measure")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run(args.steps, args.batch_size, args.threads, args.runs)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _render(results, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
