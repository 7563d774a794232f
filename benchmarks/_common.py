"""What the benchmarks share: the release hyper-parameters (read from the manifest, never copied), the
batches of release-distribution mazes, one process per measurement, and a console for tables."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from diffplan.envs.generator import generate_mazes
from diffplan.envs.graph import build_graph_split
from diffplan.envs.splits import make_grid_split
from diffplan.release.manifest import load_manifest
from diffplan.scoring.batching import make_batch
from diffplan.scoring.losses import optimal_set_nll
from diffplan.scoring.planner import run_planner, scored_logits
from diffplan.task import Task

DEFAULT_MANIFEST = Path("manifests/release_v1.yaml")


def training_arguments(description: str, kind: str) -> argparse.ArgumentParser:
    """The options both training benchmarks take; ``kind`` ("grid"/"graph") names the entries measured."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per entry")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="release manifest to read")
    parser.add_argument("--runs", nargs="+", help=f"{kind} entries of the manifest to measure (default: all)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--bf16", action="store_true", help="forward pass and loss under torch.autocast('cpu', bfloat16)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="the value-iteration step compiled by torch.compile (inductor)"
    )
    return parser


def release_configs(manifest: Path, kind: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Release entry name -> (algorithm, constructor arguments) for the manifest's ``kind`` planners."""
    spec = load_manifest(manifest)
    return {
        entry.name: (entry.algorithm, entry.model_args()) for entry in spec.models if entry.task is Task(kind)
    }


def select_runs(configs: dict[str, Any], runs: list[str] | None, manifest: Path) -> list[str]:
    """The entries asked for (all when ``runs`` is empty); an unknown name stops with a clear message."""
    unknown = sorted(set(runs or []) - set(configs))
    if unknown:
        raise SystemExit(
            f"{', '.join(unknown)}: not among these entries of {manifest}; choose from {', '.join(configs)}."
        )
    return runs or list(configs)


def release_batch(kind: str, batch_size: int, size: int = 15) -> dict[str, torch.Tensor]:
    """A training batch of ``batch_size`` mazes of the release distribution, as training builds it."""
    mazes, goal_cell = generate_mazes(batch_size, size, rng=np.random.default_rng(0))
    split = (
        make_grid_split(mazes, goal_cell) if Task(kind) is Task.GRID else build_graph_split(mazes, goal_cell)
    )
    return make_batch(split, torch.arange(batch_size))


def run_isolated(measure: Callable[..., None], jobs: list[tuple]) -> list[dict]:
    """Run ``measure(*job, queue)`` for each job in a fresh process (its peak RSS is its own)."""
    ctx = mp.get_context("spawn")
    results = []
    for job in jobs:
        queue = ctx.Queue()
        process = ctx.Process(target=measure, args=(*job, queue))
        process.start()
        results.append(queue.get())
        process.join()
    return results


def table_console() -> Console:
    """A console that does not wrap wide tables at 80 columns when the output goes to a file."""
    return Console(width=None if sys.stdout.isatty() else 170)


def time_training_steps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], kind: str, steps: int, bf16: bool = False
) -> dict:
    """Time ``steps`` RMSprop training steps (forward, optimal-set loss, backward, update) after two
    warm-up steps; with ``bf16`` the forward pass and loss run under ``torch.autocast("cpu",
    torch.bfloat16)`` (bf16 matrix products where the CPU has them). Returns medians and minimum in ms,
    peak-RSS growth in MB, and the mean of each of the planner's ``stats`` (e.g. DEQ solver iterations)."""
    continuous = Task(kind) is Task.GRAPH and bool(getattr(model, "config", {}).get("cont_action"))
    optimiser = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu_times, stats = [], [], []
    for step in range(steps + 2):
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = run_planner(model, batch, kind)
            loss = optimal_set_nll(*scored_logits(output, batch, kind, continuous))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step >= 2:  # the first two steps warm up allocators and kernels
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            stats.append(dict(output.stats))
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_ms_median": 1000 * statistics.median(times),
        "step_ms_min": 1000 * min(times),
        "cpu_ms_median": 1000 * statistics.median(cpu_times),
        "peak_rss_delta_mb": (rss_after - rss_before) / 1024,  # ru_maxrss is in KiB on Linux
        "stats_mean": {key: statistics.fmean(s.get(key, float("nan")) for s in stats) for key in stats[0]},
        "threads": torch.get_num_threads(),
        "bf16": bf16,
    }
