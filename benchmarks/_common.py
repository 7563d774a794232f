"""What the benchmarks share: the release hyper-parameters (read from the manifest, never copied), the
batches of release-distribution mazes, one process per measurement, and a console for tables."""

from __future__ import annotations

import multiprocessing as mp
import sys
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
from diffplan.training.batching import make_batch

DEFAULT_MANIFEST = Path("manifests/release_v1.yaml")


def release_configs(manifest: Path, kind: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Release entry name -> (algorithm, constructor arguments) for the manifest's ``kind`` planners."""
    spec = load_manifest(manifest)
    return {entry.name: (entry.algorithm, entry.model_args()) for entry in spec.models if entry.kind == kind}


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
    split = make_grid_split(mazes, goal_cell) if kind == "grid" else build_graph_split(mazes, goal_cell)
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
