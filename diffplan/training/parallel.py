"""`--jobs N`: train several manifest entries at once in separate processes, one device each on GPUs.

On GPUs each worker process takes one device of ``--devices`` (default: every visible GPU) for all the
models it trains, so ``--devices 0,1,2 --jobs 3`` trains three models at once, one per GPU, and a fourth
starts on whichever GPU frees first. On CPUs the workers share the cores (``--threads`` each).
Ensemble entries are assembled from the others' release files, so they start once the others are done.
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from diffplan._pool import run_in_processes
from diffplan.errors import BadInputError, DiffplanError
from diffplan.release.manifest import Manifest, ModelSpec, load_manifest
from diffplan.training.run import TrainOptions, TrainResult, train_model

_worker_device: int | None = None  # this worker's GPU, set once by _take_device


def job_devices(options: TrainOptions, jobs: int, visible_gpus: int) -> list[int] | None:
    """The GPU of each of ``jobs`` workers (cycling through ``--devices``), or None to train on CPUs.

    ``--jobs`` trains one model per process: it does not combine with DDP (``--strategy ddp``,
    ``--num-nodes``); ``--devices`` then lists the GPUs to share out (a list, a count, or ``auto``).
    """
    if options.strategy != "auto" or options.num_nodes != 1:
        raise BadInputError(
            "--jobs trains one model per process and device; it cannot be combined with "
            "--strategy or --num-nodes (train one model at a time on several devices instead)."
        )
    on_gpu = options.accelerator in ("gpu", "cuda") or (options.accelerator == "auto" and visible_gpus > 0)
    if not on_gpu:
        return None
    if visible_gpus == 0:
        raise BadInputError(f"--accelerator {options.accelerator} asks for GPUs, but none is visible.")
    devices: Any = options.devices
    if isinstance(devices, list | tuple):
        pool = [int(d) for d in devices]
    elif isinstance(devices, int) and devices > 0:
        pool = list(range(min(devices, visible_gpus)))
    else:
        pool = list(range(visible_gpus))
    unknown = [d for d in pool if not 0 <= d < visible_gpus]
    if unknown:
        raise BadInputError(f"--devices {unknown[0]} is not a visible GPU (0 to {visible_gpus - 1}).")
    return [pool[i % len(pool)] for i in range(jobs)]


def _take_device(queue) -> None:
    global _worker_device
    _worker_device = queue.get()


def _train_one(name: str, manifest_path: str, options: TrainOptions) -> TrainResult:
    manifest = load_manifest(manifest_path)
    spec = manifest.model(name)
    if _worker_device is not None:
        options = replace(options, accelerator="gpu", devices=[_worker_device])
    else:  # CPU workers: one process each (several devices would make each one a DDP run)
        options = replace(options, devices=1)
    log_dir = Path(options.run_root) / name
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "train.log")
    logging.getLogger("pytorch_lightning").addHandler(handler)
    try:
        return train_model(spec, manifest, options)
    except DiffplanError as err:
        return TrainResult(name, "failed", spec.target.minimum, message=str(err))
    finally:
        logging.getLogger("pytorch_lightning").removeHandler(handler)
        handler.close()


def train_in_parallel(
    specs: list[ModelSpec], manifest: Manifest, options: TrainOptions, jobs: int
) -> list[TrainResult]:
    """Train ``specs`` with at most ``jobs`` processes (each on its own GPU when on GPUs); Ensemble
    entries afterwards, in this process (they fit nothing). Results come in the order of ``specs``."""
    trained = [spec for spec in specs if spec.members is None]
    results = {r.name: r for r in _train_in_processes(trained, manifest, options, jobs)} if trained else {}
    for spec in specs:
        if spec.members is not None:
            results[spec.name] = _train_here(spec, manifest, options)
    return [results[spec.name] for spec in specs]


def _train_here(spec: ModelSpec, manifest: Manifest, options: TrainOptions) -> TrainResult:
    try:
        return train_model(spec, manifest, replace(options, devices=1))
    except DiffplanError as err:
        return TrainResult(spec.name, "failed", spec.target.minimum, message=str(err))


def _train_in_processes(
    specs: list[ModelSpec], manifest: Manifest, options: TrainOptions, jobs: int
) -> list[TrainResult]:
    jobs = min(jobs, len(specs))
    devices = job_devices(options, jobs, torch.cuda.device_count())
    initializer, initargs = None, ()
    if devices is not None:
        queue = multiprocessing.get_context("spawn").Queue()
        for device in devices:
            queue.put(device)
        initializer, initargs = _take_device, (queue,)
    return run_in_processes(
        _train_one,
        specs,
        jobs=jobs,
        arguments=lambda index, spec: (spec.name, str(manifest.path), options),
        initializer=initializer,
        initargs=initargs,
    )
