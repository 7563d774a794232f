"""Trains one manifest entry end to end and writes its release files.

Run folder (resumable, outside the release): ``runs/<name>/`` holds Lightning checkpoints
(``best.ckpt``, ``last.ckpt``), CSV logs and a lock file. Release files (DESIGN section 7):
``pretrained_models/<folder>/<name>.ckpt``, ``<name>_info.json``, ``configs/<name>_config.yaml``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from diffplan._atomic import atomic_path, atomic_write_text
from diffplan.envs import file_fingerprint, load_split
from diffplan.errors import DataFileError, TrainingError
from diffplan.release.checkpoint import checkpoint_file_stats, save_release_checkpoint
from diffplan.release.layout import DEFAULT_RELEASE_ROOT, ReleasePaths
from diffplan.release.manifest import Manifest, ModelSpec, recipe_differences
from diffplan.release.metadata import RunRecord, build_info, write_info
from diffplan.scoring import LOSS, MONITOR, evaluate
from diffplan.training.callbacks import EpochReport, EpochReportCallback, NanGuard, WallClock
from diffplan.training.datamodule import PlannerDataModule
from diffplan.training.module import PlannerModule


class TrainingInterrupted(TrainingError):
    """Ctrl-C or a termination signal stopped a run; its checkpoints allow ``--resume``."""

    exit_code = 130


@dataclass
class TrainOptions:
    """How to run (not what to train): hardware, resumption, logging, output folders."""

    run_root: Path = Path("runs")
    release_root: Path = DEFAULT_RELEASE_ROOT
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    resume: bool = False
    force: bool = False
    wandb: bool = False
    limit_maps: int | None = None  # cap every split (smoke tests)
    max_epochs: int | None = None  # override the entry's epochs (smoke tests)
    trust_pickle: bool = False
    threads: int | None = None  # torch CPU threads; 1 avoids OpenMP spin-waits on a busy 2-core machine


@dataclass
class TrainResult:
    """The outcome of one entry: ``status`` is trained, skipped or failed."""

    name: str
    status: str
    target: float
    test: dict[str, float] = field(default_factory=dict)
    epochs_run: int = 0
    best_epoch: int = 0
    seconds: float = 0.0
    message: str = ""
    passed_target: bool = False  # the entry's own target metric, as its metadata records it

    @property
    def passed(self) -> bool:
        return self.status == "trained" and self.passed_target


def is_up_to_date(spec: ModelSpec, release_root: Path) -> bool:
    """True when the release files exist and were trained from this entry's recipe (notes and target
    may have been edited since)."""
    paths = ReleasePaths.of(spec, release_root)
    if not paths.exist():
        return False
    try:
        saved = yaml.safe_load(paths.config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return not recipe_differences(saved, spec.resolved())


@contextlib.contextmanager
def run_lock(run_dir: Path, name: str) -> Iterator[None]:
    """Refuse a second training of the same model at once (an OS lock, released when the process dies)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise TrainingError(
                f"{name} is already being trained by another process (lock {run_dir / '.lock'}); "
                f"wait for it to finish."
            ) from err
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


class _AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file, then renamed: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def _loggers(spec: ModelSpec, run_dir: Path, use_wandb: bool) -> list:
    loggers: list = [CSVLogger(save_dir=str(run_dir), name="logs", version="")]
    if use_wandb:
        from pytorch_lightning.loggers import WandbLogger

        online = os.environ.get("WANDB_MODE", "offline") == "online"
        loggers.append(
            WandbLogger(
                project="diffplan",
                name=spec.name,
                save_dir=str(run_dir),
                offline=not online,
                config=spec.resolved(),
            )
        )
    return loggers


def _module_for(spec: ModelSpec, dataset_has_obstacle: bool) -> PlannerModule:
    return PlannerModule(
        algorithm=spec.algorithm,
        model_args=spec.model_args(),
        cont_action=spec.cont_action,
        has_obstacle=dataset_has_obstacle,
        optimizer=spec.optimizer,
        lr=spec.lr,
        weight_decay=spec.weight_decay,
        scheduler=spec.scheduler,
        epochs=spec.epochs,
    )


def _prepare_run_dir(spec: ModelSpec, run_dir: Path, options: TrainOptions) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run (clearing a stale one when forced)."""
    last = run_dir / "last.ckpt"
    if options.resume:
        if not last.is_file():
            raise TrainingError(
                f"nothing to resume for {spec.name}: {last} does not exist; run without --resume."
            )
        return last
    if last.is_file() or (run_dir / "best.ckpt").is_file():
        if not options.force:
            raise TrainingError(
                f"{spec.name} has an unfinished or earlier run in {run_dir}; pass --resume to "
                f"continue it or --force to start again."
            )
        for stale in ("last.ckpt", "best.ckpt", "logs"):
            target = run_dir / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    return None


def train_model(
    spec: ModelSpec,
    manifest: Manifest,
    options: TrainOptions | None = None,
    report: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Train one entry and write its release files; skips an up-to-date model unless forced."""
    options = options or TrainOptions()
    target = spec.target.minimum
    if not options.force and not options.resume and is_up_to_date(spec, options.release_root):
        return TrainResult(spec.name, "skipped", target, message="release files match the entry")
    dataset = manifest.dataset_for(spec)
    if not Path(spec.data).is_file():
        raise DataFileError(
            f"data set {spec.data} for {spec.name} does not exist; make it with "
            f"`diffplan data generate --manifest {manifest.path}`."
        )
    run_dir = Path(options.run_root) / spec.name
    with run_lock(run_dir, spec.name):
        resume_from = _prepare_run_dir(spec, run_dir, options)
        if options.threads:
            torch.set_num_threads(options.threads)
        pl.seed_everything(spec.seed, workers=True, verbose=False)
        data = PlannerDataModule(
            spec.data,
            batch_size=spec.batch_size,
            seed=spec.seed,
            limit=options.limit_maps,
            trust_pickle=options.trust_pickle,
        )
        module = _module_for(spec, dataset.has_obstacle)
        best = ModelCheckpoint(
            dirpath=run_dir,
            filename="best",
            monitor=MONITOR,
            mode="max",
            save_last=True,
            save_top_k=1,
            enable_version_counter=False,
        )
        wall_clock = WallClock()
        callbacks: list = [best, NanGuard(), wall_clock]
        if report is not None:
            callbacks.append(EpochReportCallback(spec.name, report))
        if spec.early_stopping_patience:
            callbacks.append(
                EarlyStopping(monitor=MONITOR, mode="max", patience=spec.early_stopping_patience)
            )
        trainer = pl.Trainer(
            max_epochs=options.max_epochs or spec.epochs,
            max_time={"minutes": spec.max_minutes} if spec.max_minutes else None,
            accelerator=options.accelerator,
            devices=options.devices,
            num_nodes=options.num_nodes,
            strategy=options.strategy,
            gradient_clip_val=spec.gradient_clip,
            callbacks=callbacks,
            logger=_loggers(spec, run_dir, options.wandb),
            plugins=[_AtomicCheckpointIO()],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=False,
            default_root_dir=str(run_dir),
        )
        try:
            trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
        except SystemExit as stop:  # Lightning turns Ctrl-C into SystemExit after saving state
            raise TrainingInterrupted(
                f"training of {spec.name} was interrupted; run the same command with "
                f"--resume to continue from its last finished epoch."
            ) from stop
        if trainer.interrupted:
            raise TrainingInterrupted(
                f"training of {spec.name} was interrupted; run the same command with --resume."
            )
        if not best.best_model_path:
            raise TrainingError(f"{spec.name} finished no epoch, so there is no checkpoint to release.")
        return _write_release(spec, manifest, options, data, best, wall_clock.seconds, trainer)


def _epoch_of(path: str) -> int:
    # Our own run file (not a release artefact): Lightning checkpoints hold more than tensors.
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1


def _write_release(
    spec: ModelSpec,
    manifest: Manifest,
    options: TrainOptions,
    data: PlannerDataModule,
    best: ModelCheckpoint,
    seconds: float,
    trainer: pl.Trainer,
) -> TrainResult:
    dataset = manifest.dataset_for(spec)
    module = PlannerModule.load_from_checkpoint(best.best_model_path, map_location="cpu")
    model = module.model.eval()
    scores = {}
    for split in ("valid", "test"):
        loaded = data.splits.get(split) or load_split(spec.data, split, trust_pickle=options.trust_pickle)
        scores[split] = evaluate(
            model,
            loaded,
            cont_action=spec.cont_action,
            has_obstacle=dataset.has_obstacle,
            limit=options.limit_maps,
        )
    paths = ReleasePaths.of(spec, options.release_root)
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    save_release_checkpoint(
        paths.checkpoint,
        model,
        name=spec.name,
        algorithm=spec.algorithm,
        model_config=spec.model_args(),
        extra={
            "kind": module.task.value,
            "cont_action": spec.cont_action,
            "has_obstacle": dataset.has_obstacle,
        },
    )
    final_loss = trainer.callback_metrics.get(f"train/{LOSS}")
    record = RunRecord(
        seconds=seconds,
        epochs_run=trainer.current_epoch,  # counts finished epochs
        best_epoch=_epoch_of(best.best_model_path),
        max_epochs=trainer.max_epochs,
        best_validation_accuracy=float(best.best_model_score),
        final_loss=None if final_loss is None else float(final_loss),
        train_size=len(data.splits["train"]),
        valid_size=len(data.splits["valid"]),
        limit_maps=options.limit_maps,
        parameters=sum(p.numel() for p in model.parameters()),
        checkpoint_stats=checkpoint_file_stats(paths.checkpoint),
    )
    info = build_info(spec, dataset, scores, record, file_fingerprint(spec.data))
    write_info(paths.info, info)
    atomic_write_text(paths.config, yaml.safe_dump(spec.resolved(), sort_keys=False))
    return TrainResult(
        spec.name,
        "trained",
        spec.target.minimum,
        test=scores["test"],
        epochs_run=record.epochs_run,
        best_epoch=record.best_epoch,
        seconds=seconds,
        passed_target=info["target"]["passed"],
    )
