"""`diffplan train`: train the models of a release manifest and write their release files."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from diffplan.errors import BadInputError
from diffplan.release.manifest import ModelSpec, load_manifest
from diffplan.training.parallel import train_in_parallel
from diffplan.training.run import TrainOptions, TrainResult, train_model
from diffplan_cli._common import (
    DEFAULT_MANIFEST,
    DEFAULT_RELEASE_ROOT,
    DEFAULT_RUN_ROOT,
    ForceOpt,
    ManifestOpt,
    ModelNamesOpt,
    console,
)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _results_table(results: list[TrainResult]) -> Table:
    table = Table(title="Training results")
    for column in ("model", "status", "accuracy (target)", "success", "optimality", "epochs (best)", "time"):
        table.add_column(column, justify="left" if column in ("model", "status") else "right")
    for r in results:
        verdict = "pass" if r.passed else ("-" if r.status == "skipped" else "fail")
        colour = {"pass": "green", "fail": "red"}.get(verdict, "yellow")
        status = r.status if r.status == "skipped" else f"[{colour}]{verdict}[/]"
        epochs = f"{r.epochs_run} ({r.best_epoch})" if r.epochs_run else "-"
        table.add_row(
            r.name,
            status,
            f"{_percent(r.test.get('accuracy'))} (> {100 * r.target:.0f}%)",
            _percent(r.test.get("success")),
            _percent(r.test.get("optimality")),
            epochs,
            f"{r.seconds / 60:.1f} min" if r.seconds else "-",
        )
    return table


def with_seed(entries: list[ModelSpec], seed: int, release_root: Path, run_root: Path) -> list[ModelSpec]:
    """The entries with ``seed`` for a reproducibility rerun, which must not touch the release's files."""
    shared = [
        option
        for option, path, default in (
            ("--release-root", release_root, DEFAULT_RELEASE_ROOT),
            ("--run-root", run_root, DEFAULT_RUN_ROOT),
        )
        if path.resolve() == default.resolve()
    ]
    if shared:
        raise BadInputError(
            f"--seed changes the release recipe, so its run must not use the release's folders: pass "
            f"{' and '.join(shared)} of its own (e.g. pretrained_models/reproducibility/seed43)."
        )
    return [entry.model_copy(update={"seed": seed}) for entry in entries]


def train(
    manifest: ManifestOpt = DEFAULT_MANIFEST,
    only: ModelNamesOpt = None,
    force: ForceOpt = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue interrupted runs from their last checkpoint.")
    ] = False,
    accelerator: Annotated[str, typer.Option(help="Lightning accelerator: auto, cpu or gpu.")] = "auto",
    devices: Annotated[
        str, typer.Option(help="Lightning devices: auto, a count, or a list like 0,1.")
    ] = "auto",
    num_nodes: Annotated[int, typer.Option(min=1, help="Number of machines for DDP.")] = 1,
    strategy: Annotated[str, typer.Option(help="Lightning strategy: auto, ddp, ...")] = "auto",
    jobs: Annotated[
        int, typer.Option(min=1, help="Train this many models at once (one per GPU when on GPUs).")
    ] = 1,
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Also log to W&B (offline unless WANDB_MODE=online).")
    ] = False,
    run_root: Annotated[
        Path, typer.Option(help="Folder for resumable run files and logs.")
    ] = DEFAULT_RUN_ROOT,
    release_root: Annotated[Path, typer.Option(help="Folder of the release files.")] = DEFAULT_RELEASE_ROOT,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for torch (1 is fastest on a busy 2-core machine).")
    ] = None,
    max_epochs: Annotated[
        int | None, typer.Option(min=1, help="Override every entry's epochs (quick trials).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Train with this seed instead of the entry's (reproducibility reruns); needs its own "
            "--release-root and --run-root."
        ),
    ] = None,
    limit_maps: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N maps of each split (smoke tests).")
    ] = None,
) -> None:
    """Train the models of a release manifest and write their release files."""
    # Lightning's start-up banners and tips would bury the progress bar; warnings and errors still show.
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    spec = load_manifest(manifest)
    selected = spec.select(only)
    if seed is not None:
        selected = with_seed(selected, seed, release_root, run_root)
    parsed_devices: str | int | list[int] = devices
    if devices.isdigit():
        parsed_devices = int(devices)
    elif "," in devices:
        parsed_devices = [int(d) for d in devices.split(",") if d.strip()]
    options = TrainOptions(
        run_root=run_root,
        release_root=release_root,
        accelerator=accelerator,
        devices=parsed_devices,
        num_nodes=num_nodes,
        strategy=strategy,
        resume=resume,
        force=force,
        wandb=wandb,
        limit_maps=limit_maps,
        threads=threads,
        max_epochs=max_epochs,
    )
    if jobs > 1 and len(selected) > 1:
        console.print(
            f"Training {len(selected)} models, {jobs} at a time; logs in {run_root}/<name>/train.log"
        )
        results = train_in_parallel(selected, spec, options, jobs)
    else:
        results = []
        for entry in selected:
            with Progress(
                TextColumn("[bold]{task.fields[name]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task(
                    "epochs", total=max_epochs or entry.epochs, name=entry.name, status="starting"
                )

                def report(epoch, task=task, target=entry.target.minimum, progress=progress):
                    status = (
                        f"loss {epoch.train_loss:.4f}  val acc {_percent(epoch.val_accuracy)} "
                        f"(best {_percent(epoch.best_val_accuracy)}, target > {100 * target:.0f}%)"
                    )
                    progress.update(task, completed=epoch.epoch, status=status)
                    if not console.is_terminal:  # a log file gets one line per epoch instead of a live bar
                        console.print(f"{epoch.name} epoch {epoch.epoch}/{epoch.max_epochs}: {status}")
                        console.file.flush()

                results.append(train_model(entry, spec, options, report))
    console.print(_results_table(results))
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)
