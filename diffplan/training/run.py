"""Trains one manifest entry end to end and writes its release files, on one process or several (DDP).

An Ensemble entry is not fitted: it is assembled from its members' release checkpoints, scored and
published by the process of rank 0 (:mod:`diffplan.training.ensemble`), so its members must be trained
first (:func:`training_order` puts them first).

Run folder (resumable, outside the release; :mod:`diffplan.training.run_folder`): ``runs/<name>/`` holds
Lightning checkpoints (``best.ckpt``, ``last.ckpt``), CSV logs and a lock file. Release files
(DESIGN section 7; :mod:`diffplan.training.release_files`): ``pretrained_models/<folder>/<name>.ckpt``,
``<name>_info.json``, ``configs/<name>_config.yaml``, written together by the process of rank 0 after
scoring the best checkpoint on one process. Processes: :mod:`diffplan.training.distributed`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from diffplan.errors import BadInputError, DataFileError, TrainingError
from diffplan.release.layout import DEFAULT_RELEASE_ROOT
from diffplan.release.manifest import Manifest, ModelSpec
from diffplan.scoring import LOSS, MONITOR
from diffplan.training.callbacks import EpochReport, EpochReportCallback, NanGuard, WallClock
from diffplan.training.datamodule import PlannerDataModule
from diffplan.training.distributed import (
    Agreement,
    Launch,
    ddp_strategy,
    launching,
    plan_launch,
    relayed,
    start_method,
)
from diffplan.training.ensemble import assemble_ensemble
from diffplan.training.locks import training_locks
from diffplan.training.module import PlannerModule
from diffplan.training.release_files import is_up_to_date, publish
from diffplan.training.run_folder import (
    HistoryCSVLogger,
    SafeCheckpointIO,
    load_run_checkpoint,
    prepare,
    read_facts,
)
from diffplan.training.warm_start import load_starting_weights, read_start_record, write_start_record

MAX_THREADS_PER_CORE = 4


def max_threads() -> int:
    """The largest ``--threads`` accepted: 4 per CPU core (more only adds contention)."""
    return (os.cpu_count() or 1) * MAX_THREADS_PER_CORE


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
    release_failing: bool = False  # put a model that misses its target into the release anyway
    wandb: bool = False
    limit_maps: int | None = None  # cap every split (smoke tests); recorded as an override
    max_epochs: int | None = None  # override the entry's epochs (smoke tests); recorded as an override
    trust_pickle: bool = False
    threads: int | None = None  # torch CPU threads; 1 avoids OpenMP spin-waits on a busy 2-core machine
    ddp_timeout_minutes: float = 30.0  # how long a DDP process waits for the others before giving up


@dataclass
class TrainResult:
    """The outcome of one entry: ``status`` is trained, skipped, below target, failed, or ``rank`` (a DDP
    process other than rank 0, which writes nothing and reports nothing)."""

    name: str
    status: str
    target: float
    test: dict[str, float] = field(default_factory=dict)
    epochs_run: int = 0
    best_epoch: int = 0
    seconds: float = 0.0
    message: str = ""
    passed_target: bool = False  # the entry's own target metric, as its metadata records it
    world_size: int = 1
    written_to: str | None = None  # the release root the files went to (run folder's candidate/ if below)

    @property
    def passed(self) -> bool:
        return self.status == "trained" and self.passed_target

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def training_order(specs: list[ModelSpec]) -> list[ModelSpec]:
    """``specs`` with each entry after the one its ``init_from`` names (when both are there), and the
    Ensemble entries last (in their order): they are assembled from the release files of the others."""
    names = {s.name: s for s in specs}

    def depth(spec: ModelSpec) -> int:  # the manifest refuses init_from cycles
        steps = 0
        while spec.init_from in names:
            spec, steps = names[spec.init_from], steps + 1
        return steps

    trained = sorted((s for s in specs if s.members is None), key=depth)  # stable: manifest order
    return trained + [s for s in specs if s.members is not None]


def run_overrides(spec: ModelSpec, options: TrainOptions) -> dict[str, Any]:
    """The run options that change what is trained from the entry (recorded in the release files); an
    Ensemble has no epochs, so only ``limit_maps`` applies to it."""
    found: dict[str, Any] = {}
    epochs = spec.members is None
    if epochs and options.max_epochs is not None and options.max_epochs != spec.epochs:
        found["max_epochs"] = options.max_epochs
    if options.limit_maps is not None:
        found["limit_maps"] = options.limit_maps
    return found


def check_options(options: TrainOptions) -> None:
    """Refuse options that cannot work, before anything starts (``BadInputError``)."""
    if options.threads is not None and not 1 <= options.threads <= max_threads():
        raise BadInputError(
            f"--threads {options.threads} is out of range: this machine has {os.cpu_count()} CPU cores, "
            f"so use 1 to {max_threads()}."
        )
    start_method(options.strategy)  # names the supported strategies
    if options.ddp_timeout_minutes <= 0:
        raise BadInputError(f"the DDP timeout must be positive, got {options.ddp_timeout_minutes} minutes.")


def check_writable(folder: Path, option: str) -> None:
    """Create ``folder`` if needed and write a file there, or raise ``BadInputError`` (before training)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise BadInputError(
            f"{option} {folder} is not a writable folder ({err.strerror or err}); choose another one."
        ) from err


def _check_world(spec: ModelSpec, manifest: Manifest, options: TrainOptions, launch: Launch) -> None:
    """Refuse a DDP run whose global batch or score splits do not divide over its processes."""
    world = launch.world_size
    if world <= 1:
        return
    if spec.batch_size % world:
        raise BadInputError(
            f"{spec.name}: batch_size {spec.batch_size} is the global batch and must split evenly over "
            f"the {world} processes; use a number of devices that divides it."
        )
    dataset = manifest.dataset_for(spec)
    for split, size in (("valid", dataset.valid_size), ("test", dataset.test_size)):
        maps = size if options.limit_maps is None else min(size, options.limit_maps)
        if maps < world:
            raise BadInputError(f"{spec.name}: {maps} {split} maps cannot be shared by {world} processes.")


def _loggers(spec: ModelSpec, run_dir: Path, options: TrainOptions, keep_until_epoch: int | None) -> list:
    loggers: list = [HistoryCSVLogger(run_dir, keep_until_epoch)]
    if options.wandb:
        from pytorch_lightning.loggers import WandbLogger

        online = os.environ.get("WANDB_MODE", "offline") == "online"
        loggers.append(
            WandbLogger(
                project="diffplan",
                name=spec.name,
                save_dir=str(run_dir),
                offline=not online,
                config={**spec.resolved(), "overrides": run_overrides(spec, options)},
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


def _decide(spec: ModelSpec, manifest: Manifest, options: TrainOptions, locks: contextlib.ExitStack) -> dict:
    """Rank 0's decision for this entry: skip it, or train it (taking its locks, preparing its run)."""
    if not options.force and not options.resume and is_up_to_date(spec, options.release_root):
        return {"action": "skip", "name": spec.name}
    if not Path(spec.data).is_file():
        raise DataFileError(
            f"data set {spec.data} for {spec.name} does not exist; make it with "
            f"`diffplan data generate --manifest {manifest.path}`."
        )
    check_writable(Path(options.release_root), "--release-root")
    check_writable(Path(options.run_root), "--run-root")
    run_dir = Path(options.run_root) / spec.name
    locks.enter_context(training_locks(Path(options.release_root) / spec.folder, run_dir, spec.name))
    settings = {"batch_size": spec.batch_size, "limit": options.limit_maps, "seed": spec.seed}
    resume_from = prepare(run_dir, spec.name, resume=options.resume, force=options.force, settings=settings)
    return {
        "action": "train",
        "name": spec.name,
        "resume_from": None if resume_from is None else str(resume_from),
    }


def train_model(
    spec: ModelSpec,
    manifest: Manifest,
    options: TrainOptions | None = None,
    report: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Train one entry and write its release files; skips an up-to-date model unless forced.

    Under DDP every process calls this with the same arguments (Lightning or torchrun starts them); the
    process of rank 0 decides, locks, writes and returns the result, the others return status ``rank``.
    """
    options = options or TrainOptions()
    check_options(options)
    target = spec.target.minimum
    launch = plan_launch(options.accelerator, options.devices, options.num_nodes, options.strategy)
    if spec.members is not None:
        if launch.kind == "child" or not launch.primary:  # rank 0 assembles it alone
            return TrainResult(spec.name, "rank", target, message="an Ensemble is assembled by rank 0")
        return _assemble(spec, manifest, options)
    _check_world(spec, manifest, options, launch)
    if launch.kind == "child":  # started by rank 0's fit: train its model, or nothing
        if launch.decision.get("name") != spec.name:
            return TrainResult(spec.name, "rank", target, message="another model of this DDP run")
        _fit(spec, manifest, options, launch, launch.decision, None)
        return TrainResult(spec.name, "rank", target, world_size=launch.world_size)
    agreement = Agreement(launch, options.ddp_timeout_minutes)
    if not launch.primary:
        decision = agreement.share(None)
        if decision.get("action") == "train":
            _fit(spec, manifest, options, launch, decision, None)
        return TrainResult(spec.name, "rank", target, world_size=launch.world_size)
    with contextlib.ExitStack() as locks:
        try:
            decision = _decide(spec, manifest, options, locks)
        except BaseException:  # the other ranks must not wait for a decision that never comes
            agreement.share({"action": "fail", "name": spec.name})
            raise
        agreement.share(decision)
        if decision["action"] == "skip":
            return TrainResult(spec.name, "skipped", target, message="release files match the entry")
        with relayed(report, launch) as relay:
            trainer, data = _fit(spec, manifest, options, launch, decision, relay)
        run_dir = Path(options.run_root) / spec.name
        facts = read_facts(run_dir)
        final_loss = trainer.callback_metrics.get(f"train/{LOSS}")
        status, written_to, info, scores = publish(
            spec,
            manifest,
            run_dir=run_dir,
            release_root=Path(options.release_root),
            release_failing=options.release_failing,
            facts=facts,
            final_loss=None if final_loss is None else float(final_loss),
            overrides=run_overrides(spec, options),
            limit_maps=options.limit_maps,
            trust_pickle=options.trust_pickle,
            loaded=data.splits,
            info_extra=None if spec.init_from is None else {"init_from": read_start_record(spec, run_dir)},
        )
    message = ""
    if status == "below target":
        message = (
            f"test {spec.target.metric} is not above the target {target}; the model was written to "
            f"{written_to}, not the release (pass --release-failing to release it anyway)."
        )
    return TrainResult(
        spec.name,
        status,
        target,
        test=scores["test"],
        epochs_run=facts.epochs_run,
        best_epoch=facts.best_epoch,
        seconds=facts.seconds,
        message=message,
        passed_target=info["target"]["passed"],
        world_size=facts.world_size,
        written_to=str(written_to),
    )


def _assemble(spec: ModelSpec, manifest: Manifest, options: TrainOptions) -> TrainResult:
    """An Ensemble entry: skipped when up to date, else assembled from its members and published."""
    target = spec.target.minimum
    if not options.force and is_up_to_date(spec, options.release_root):
        return TrainResult(spec.name, "skipped", target, message="release files match the entry")
    check_writable(Path(options.release_root), "--release-root")
    check_writable(Path(options.run_root), "--run-root")
    if options.threads:
        torch.set_num_threads(options.threads)
    done = assemble_ensemble(
        spec,
        manifest,
        release_root=Path(options.release_root),
        run_root=Path(options.run_root),
        release_failing=options.release_failing,
        limit_maps=options.limit_maps,
        overrides=run_overrides(spec, options),
        trust_pickle=options.trust_pickle,
    )
    message = ""
    if done.status == "below target":
        message = (
            f"test {spec.target.metric} is not above the target {target}; the model was written to "
            f"{done.written_to}, not the release (pass --release-failing to release it anyway)."
        )
    return TrainResult(
        spec.name,
        done.status,
        target,
        test=done.scores["test"],
        message=message,
        passed_target=done.info["target"]["passed"],
        written_to=str(done.written_to),
    )


def _fit(
    spec: ModelSpec,
    manifest: Manifest,
    options: TrainOptions,
    launch: Launch,
    decision: dict[str, Any],
    report: Callable[[EpochReport], None] | None,
) -> tuple[pl.Trainer, PlannerDataModule]:
    """Build the data, the module and the trainer, and fit (every process of a run does this alike)."""
    run_dir = Path(options.run_root) / spec.name
    resume_from = decision.get("resume_from")
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
    module = _module_for(spec, manifest.dataset_for(spec).has_obstacle)
    if spec.init_from is not None and resume_from is None:  # a resumed run has its weights already
        start = load_starting_weights(
            spec, manifest, Path(options.release_root), module.model, lock=launch.primary
        )
        if launch.primary:
            write_start_record(run_dir, start)
    best = ModelCheckpoint(
        dirpath=run_dir,
        filename="best",
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    # Every epoch (Lightning 2.6's save_last writes last.ckpt only when best.ckpt changes); after `best`,
    # so last.ckpt holds the best checkpoint's updated state.
    last = ModelCheckpoint(
        dirpath=run_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    callbacks: list = [best, last, NanGuard(), WallClock()]
    if report is not None:
        callbacks.append(EpochReportCallback(spec.name, report))
    if spec.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max", patience=spec.early_stopping_patience))
    loggers: list | bool = False
    if launch.primary:
        keep = int(load_run_checkpoint(Path(resume_from))["epoch"]) if resume_from else None
        loggers = _loggers(spec, run_dir, options, keep)
    trainer = pl.Trainer(
        max_epochs=options.max_epochs or spec.epochs,
        max_time={"minutes": spec.max_minutes} if spec.max_minutes else None,
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy=ddp_strategy(launch, options.ddp_timeout_minutes),
        use_distributed_sampler=False,  # the data module shards: no padded DistributedSampler
        gradient_clip_val=spec.gradient_clip,
        callbacks=callbacks,
        logger=loggers,
        plugins=[SafeCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
        default_root_dir=str(run_dir) if launch.primary else None,
    )
    with launching(launch, decision, options.threads):
        try:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        except SystemExit as stop:  # Lightning turns Ctrl-C into SystemExit after saving state
            raise TrainingInterrupted(
                f"training of {spec.name} was interrupted; run the same command with "
                f"--resume to continue from its last finished epoch."
            ) from stop
    for child in getattr(trainer.strategy.launcher, "procs", None) or []:  # ranks `ddp` started
        if isinstance(child, subprocess.Popen):  # (`ddp_spawn` has joined its processes already)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=60)  # they exit once their fit is done: none outlives the command
    if trainer.interrupted:
        raise TrainingInterrupted(
            f"training of {spec.name} was interrupted; run the same command with --resume."
        )
    return trainer, data
