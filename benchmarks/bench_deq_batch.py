"""Is a deep-equilibrium planner's output a function of its own maze? (DESIGN section 9)

For each release DE planner, on the first ``--mazes`` test maps: the largest relative difference (release
QA's measure, max |a - b| / max |b|, over logits and values) between a maze planned alone and

* the same maze inside a batch of 16 different test mazes (one thread),
* the same maze alone, and inside its batch of 16, on two threads (the model loaded afresh on two threads,
  as release QA's ``thread_count`` check does),
* release QA's own ``thread_count`` sample (the first 8 test maps, one batch, 1 vs 2 threads),

plus the solver's iteration counts and, with ``--evaluate``, the test-split scores next to the ones the
release metadata records. ``--old PATH`` also runs everything with another ``deq.py`` (e.g. a copy of the
previous version) in place of :mod:`diffplan.models.deq`, for a before/after table.

    python -m benchmarks.bench_deq_batch --old /tmp/deq_old.py --evaluate
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import sys
import time
from pathlib import Path

import torch

import diffplan.models.grid._base as grid_base
from diffplan import load_model
from diffplan._threads import torch_threads
from diffplan.envs import load_split
from diffplan.models._symmetry import clear_basis_cache

BATCH = 16
QA_SAMPLE = 8
RECORDED = ("accuracy", "success", "optimality")


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def out_rel(a, b, i: int = 0, j: int = 0) -> float:
    """Release QA's error between row ``i`` of output ``a`` and row ``j`` of output ``b``."""
    return max(
        max_rel(a.logits[i : i + 1], b.logits[j : j + 1]), max_rel(a.values[i : i + 1], b.values[j : j + 1])
    )


def whole_rel(a, b) -> float:
    return max(max_rel(a.logits, b.logits), max_rel(a.values, b.values))


def load_deq(path: Path):
    spec = importlib.util.spec_from_file_location("deq_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def scores_of(model, split) -> dict[str, float]:
    """The test-split scores, through whichever ``evaluate`` this checkout has."""
    try:
        from diffplan.scoring import evaluate
    except ImportError:  # before the scoring package existed
        from diffplan.training.evaluate import evaluate
    kwargs = {"kind": "grid"} if "kind" in inspect.signature(evaluate).parameters else {}
    return evaluate(model, split, **kwargs)


def fresh_model(name: str, threads: int):
    clear_basis_cache()
    try:
        with torch_threads(threads):
            return load_model(name)
    finally:
        clear_basis_cache()


def measure(name: str, split, mazes: int, evaluate: bool) -> dict:
    maze, goal = split.maze[:mazes], split.goal[:mazes]
    one, two = fresh_model(name, 1), fresh_model(name, 2)
    iterations: list[float] = []
    out = {"batch_vs_alone": 0.0, "threads_alone": 0.0, "threads_batch": 0.0, "threads_batch_vs_alone": 0.0}
    with torch.no_grad():
        for start in range(0, mazes, BATCH):
            rows = slice(start, min(start + BATCH, mazes))
            with torch_threads(1):
                batch1 = one(maze[rows], goal[rows])
                iterations.append(batch1.stats["forward_iterations"])
            with torch_threads(2):
                batch2 = two(maze[rows], goal[rows])
            for i in range(rows.start, rows.stop):
                j = i - rows.start
                with torch_threads(1):
                    alone1 = one(maze[i : i + 1], goal[i : i + 1])
                with torch_threads(2):
                    alone2 = two(maze[i : i + 1], goal[i : i + 1])
                out["batch_vs_alone"] = max(out["batch_vs_alone"], out_rel(batch1, alone1, j))
                out["threads_alone"] = max(out["threads_alone"], out_rel(alone2, alone1))
                out["threads_batch"] = max(out["threads_batch"], out_rel(batch2, batch1, j, j))
                out["threads_batch_vs_alone"] = max(out["threads_batch_vs_alone"], out_rel(batch2, alone1, j))
        with torch_threads(1):
            qa1 = one(split.maze[:QA_SAMPLE], split.goal[:QA_SAMPLE])
        with torch_threads(2):
            qa2 = two(split.maze[:QA_SAMPLE], split.goal[:QA_SAMPLE])
    out["qa_thread_count"] = whole_rel(qa2, qa1)
    out["batch_iterations_max"] = max(iterations)
    if evaluate:
        start = time.perf_counter()
        with torch_threads(1):
            scores = scores_of(one, split)
        out["scores"] = {k: scores[k] for k in RECORDED}
        out["evaluate_s"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["DE-VIN_maze15", "DE-SymVIN_maze15"])
    parser.add_argument("--data", type=Path, default=Path("data/m15_4abs-cc_10k.npz"))
    parser.add_argument("--mazes", type=int, default=64)
    parser.add_argument("--old", type=Path, help="another deq.py to measure as 'old'")
    parser.add_argument("--evaluate", action="store_true", help="also score the whole test split")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = load_split(args.data, "test")
    versions = {"new": grid_base.fixed_point}
    if args.old is not None:
        versions = {"old": load_deq(args.old).fixed_point, **versions}
    results: dict = {}
    for label, fixed_point in versions.items():
        grid_base.fixed_point = fixed_point
        for name in args.models:
            results[f"{name} {label}"] = row = measure(name, split, args.mazes, args.evaluate)
            print(f"{name} {label}: {json.dumps(row)}", flush=True)
    for name in args.models:
        info = Path("pretrained_models/grid") / f"{name}_info.json"
        if info.exists():
            perf = json.loads(info.read_text())["performance"]
            print(f"{name} recorded: {json.dumps({k: perf[f'test_{k}'] for k in RECORDED})}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
