"""Epoch time of `diffplan train` on 1 and 2 CPU processes (DDP over gloo) for release entries.

    python -m benchmarks.bench_ddp [--maps 512] [--configs 1x1 2x1] [--runs VIN_maze15 MP-VIN_graph]
                                   [--manifest manifests/release_v1.yaml] [--json]

Each entry keeps its release hyper-parameters (read from the manifest, batch 32 global) and trains one
epoch on ``--maps`` freshly generated 15x15 training maps (validation on a quarter as many), through the
installed `diffplan train` command exactly as a user runs it. A config ``PxT`` is P processes of T torch
threads each (``1x1``, ``1x2``: one process; ``2x1``: `--strategy ddp --devices 2`); on a busy 2-core
machine ``1x2`` is many times slower than ``1x1`` (OpenMP threads spin-wait for the other core).
"epoch" is the training + validation time the run records (``training_time_hours`` of its metadata);
"command" is the wall time of the whole command: start-up of every process, data loading, scoring and
writing the release.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.table import Table

from benchmarks._common import DEFAULT_MANIFEST, table_console
from diffplan._threads import available_cores
from diffplan.envs import generate_dataset

DEFAULT_RUNS = ("VIN_maze15", "MP-VIN_graph")
DIFFPLAN = Path(sys.executable).with_name("diffplan")


def _bench_manifest(manifest: Path, runs: list[str], maps: int, folder: Path) -> Path:
    """A manifest of ``runs`` (release hyper-parameters, one epoch) over data sets of ``maps`` maps."""
    release = yaml.safe_load(manifest.read_text())
    entries = {entry["name"]: entry for entry in release["models"]}
    unknown = sorted(set(runs) - set(entries))
    if unknown:
        raise SystemExit(f"{', '.join(unknown)}: not in {manifest}; choose from {', '.join(entries)}.")
    sizes = {"maze_size": 15, "train_size": maps, "valid_size": max(2, maps // 4), "test_size": 2, "seed": 0}
    datasets, paths = {}, {}
    for key, dataset in release["datasets"].items():
        if not any(entries[name]["data"] == dataset["path"] for name in runs):
            continue
        path = folder / Path(dataset["path"]).name
        generate_dataset(
            dataset["kind"],
            path,
            has_obstacle=dataset.get("has_obstacle", True),
            cont_action=dataset.get("cont_action", False),
            **sizes,
        )
        datasets[key], paths[dataset["path"]] = {**dataset, **sizes, "path": str(path)}, str(path)
    models = []
    for name in runs:
        # One epoch misses the release target: a target of 0 lets the run write its (timed) metadata.
        entry = {
            **entries[name],
            "data": paths[entries[name]["data"]],
            "epochs": 1,
            "target": {"minimum": 0.0},
        }
        entry.pop("max_minutes", None)
        models.append(entry)
    path = folder / "bench_ddp.yaml"
    path.write_text(yaml.safe_dump({**release, "datasets": datasets, "models": models}, sort_keys=False))
    return path


def _train(manifest: Path, name: str, processes: int, threads: int, folder: Path) -> dict:
    """Run `diffplan train` once; the measured epoch and command times."""
    hardware = ["--accelerator", "cpu", "--devices", str(processes), "--threads", str(threads)]
    if processes > 1:
        hardware += ["--strategy", "ddp"]
    command = [
        str(DIFFPLAN), "train", "--manifest", str(manifest), "--only", name, *hardware,
        "--release-root", str(folder / "release"), "--run-root", str(folder / "runs"), "--force",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "MASTER_ADDR": "127.0.0.1"}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    infos = list((folder / "release").glob(f"*/{name}_info.json"))
    if done.returncode != 0 or not infos:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    info = json.loads(infos[0].read_text())
    return {
        "run": name,
        "processes": processes,
        "threads_per_process": threads,
        "epoch_seconds": info["model_stats"]["training_time_hours"] * 3600,
        "command_seconds": seconds,
        "train_maps": info["training_data"]["train_size"],
        "per_device_batch": info["training_run"]["per_device_batch_size"],
        "world_size": info["training_run"]["world_size"],
    }


def run(
    manifest: Path = DEFAULT_MANIFEST,
    maps: int = 512,
    configs: list[str] | None = None,
    runs: list[str] | None = None,
) -> list[dict]:
    """Measure each entry of ``runs`` under each ``PxT`` config, in a temporary folder."""
    configs = configs or ["1x1", "2x1"]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        folder = Path(tmp)
        bench = _bench_manifest(Path(manifest), list(runs or DEFAULT_RUNS), maps, folder)
        for name in runs or DEFAULT_RUNS:
            for config in configs:
                processes, threads = (int(x) for x in config.split("x"))
                results.append(_train(bench, name, processes, threads, folder / config))
    return results


def _render(results: list[dict]) -> None:
    table = Table(title="`diffplan train`, one epoch on CPU: 1 process vs 2 DDP processes (gloo)")
    for column in (
        "run",
        "processes x threads",
        "maps",
        "batch / process",
        "epoch (s)",
        "speed-up",
        "command (s)",
    ):
        table.add_column(column, justify="left" if column == "run" else "right")
    base = {
        r["run"]: r["epoch_seconds"] for r in results if r["processes"] == 1 and r["threads_per_process"] == 1
    }
    for r in results:
        speedup = base.get(r["run"], float("nan")) / r["epoch_seconds"]
        table.add_row(
            r["run"],
            f"{r['processes']} x {r['threads_per_process']}",
            str(r["train_maps"]),
            str(r["per_device_batch"]),
            f"{r['epoch_seconds']:.1f}",
            f"{speedup:.2f}x",
            f"{r['command_seconds']:.1f}",
        )
    console = table_console()
    console.print(table)
    console.print(
        f"{available_cores()} CPU core(s) available. Epoch: training + validation as the run records it; "
        "command: the whole `diffplan train` (process start-up, data, scoring, release files)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=512, help="training maps (validation: a quarter)")
    parser.add_argument("--configs", nargs="+", default=["1x1", "2x1"], help="processes x threads, e.g. 1x2")
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="manifest entries to measure")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run(args.manifest, args.maps, args.configs, args.runs)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _render(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
