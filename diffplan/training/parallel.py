"""`--jobs N`: train several manifest entries at once in separate processes, one GPU each when on GPUs."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from diffplan._pool import run_in_processes
from diffplan.errors import DiffplanError
from diffplan.release.manifest import Manifest, ModelSpec, load_manifest
from diffplan.training.run import TrainOptions, TrainResult, train_model


def _train_one(name: str, manifest_path: str, options: TrainOptions) -> TrainResult:
    manifest = load_manifest(manifest_path)
    spec = manifest.model(name)
    log_dir = Path(options.run_root) / name
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "train.log")
    logging.getLogger("pytorch_lightning").addHandler(handler)
    try:
        return train_model(spec, manifest, options)
    except DiffplanError as err:
        return TrainResult(name, "failed", spec.target.minimum, message=str(err))


def train_in_parallel(
    specs: list[ModelSpec], manifest: Manifest, options: TrainOptions, jobs: int
) -> list[TrainResult]:
    """Train ``specs`` with at most ``jobs`` processes; on GPUs, job i gets GPU i mod count."""
    gpus = torch.cuda.device_count() if options.accelerator in ("auto", "gpu", "cuda") else 0

    def job_arguments(index: int, spec: ModelSpec) -> tuple:
        job_options = replace(options, devices=[index % gpus], accelerator="gpu") if gpus else options
        return (spec.name, str(manifest.path), job_options)

    return run_in_processes(_train_one, specs, jobs=jobs, arguments=job_arguments)
