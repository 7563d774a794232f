"""`diffplan train`: train the models of a release manifest and write their release files."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from diffplan.errors import BadInputError
from diffplan.release.manifest import ModelSpec, load_manifest
from diffplan.training.distributed import is_secondary_rank
from diffplan.training.parallel import train_in_parallel
from diffplan.training.run import (
    TrainOptions,
    TrainResult,
    check_options,
    check_writable,
    max_threads,
    train_model,
    training_order,
)
from diffplan_cli._common import (
    DEFAULT_MANIFEST,
    DEFAULT_RELEASE_ROOT,
    DEFAULT_RUN_ROOT,
    ForceOpt,
    JsonOpt,
    JsonOutOpt,
    ManifestOpt,
    ModelNamesOpt,
    ReleaseRootOpt,
    RunRootOpt,
    check_json_out,
    emit_json,
    output_console,
    percent,
)


def _results_table(results: list[TrainResult]) -> Table:
    table = Table(title="Training results")
    for column in ("model", "status", "accuracy (target)", "success", "optimality", "epochs (best)", "time"):
        table.add_column(column, justify="left" if column in ("model", "status") else "right")
    for r in results:
        if r.status in ("skipped", "below target", "failed"):
            status = {"skipped": "skipped", "below target": "[red]below target[/]"}.get(
                r.status, "[red]failed[/]"
            )
        else:
            status = "[green]pass[/]" if r.passed else "[red]fail[/]"
        epochs = f"{r.epochs_run} ({r.best_epoch})" if r.epochs_run else "-"
        table.add_row(
            r.name,
            status,
            f"{percent(r.test.get('accuracy'))} (> {percent(r.target)})",
            percent(r.test.get("success")),
            percent(r.test.get("optimality")),
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


def parse_devices(devices: str) -> str | int | list[int]:
    """``auto``, a count (``2``) or a list of device indices (``0,1``), as Lightning takes them."""
    text = devices.strip()
    try:
        if "," in text:
            return [int(d) for d in text.split(",") if d.strip()]
        if text.lstrip("-").isdigit():
            return int(text)
    except ValueError as err:
        raise BadInputError(f"--devices {devices!r}: give auto, a count, or indices like 0,1.") from err
    if text != "auto":
        raise BadInputError(f"--devices {devices!r}: give auto, a count, or indices like 0,1.")
    return text


def _train_one_by_one(
    selected: list[ModelSpec], spec, options: TrainOptions, out: Console, quiet: bool
) -> list[TrainResult]:
    results = []
    for entry in selected:
        if quiet:  # a DDP rank other than 0: rank 0 shows the progress
            results.append(train_model(entry, spec, options))
            continue
        with Progress(
            TextColumn("[bold]{task.fields[name]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=out,
        ) as progress:
            if entry.members is not None:  # nothing to fit: one step, assembling it from its members
                total, status = 1, f"assembling from {', '.join(entry.members)}"
            else:
                total, status = options.max_epochs or entry.epochs, "starting"
            task = progress.add_task("epochs", total=total, name=entry.name, status=status)

            def report(epoch, task=task, target=entry.target.minimum, progress=progress):
                loss = "-" if epoch.train_loss is None else f"{epoch.train_loss:.4f}"
                status = (
                    f"loss {loss}  val acc {percent(epoch.val_accuracy)} "
                    f"(best {percent(epoch.best_val_accuracy)}, target > {100 * target:.0f}%)"
                )
                progress.update(task, completed=epoch.epoch, status=status)
                if not out.is_terminal:  # a log file gets one line per epoch instead of a live bar
                    out.print(f"{epoch.name} epoch {epoch.epoch}/{epoch.max_epochs}: {status}")
                    out.file.flush()

            results.append(train_model(entry, spec, options, report))
            if entry.members is not None:
                progress.update(task, completed=1, status=results[-1].status)
    return results


def train(
    manifest: ManifestOpt = DEFAULT_MANIFEST,
    only: ModelNamesOpt = None,
    force: ForceOpt = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue interrupted runs from their last checkpoint (on any number of processes).",
        ),
    ] = False,
    release_failing: Annotated[
        bool,
        typer.Option(
            "--release-failing",
            help="Write a model that misses its target into the release folder anyway, exit status 0 "
            "(by default it goes to its run folder's candidate/, the release keeps its model, exit 1).",
        ),
    ] = False,
    accelerator: Annotated[str, typer.Option(help="Lightning accelerator: auto, cpu or gpu.")] = "auto",
    devices: Annotated[
        str, typer.Option(help="Devices per machine: auto, a count, or a list like 0,1.")
    ] = "auto",
    num_nodes: Annotated[
        int, typer.Option(min=1, help="Number of machines for DDP (started by torchrun or SLURM).")
    ] = 1,
    strategy: Annotated[
        str, typer.Option(help="auto, ddp or ddp_spawn; several devices or nodes train with DDP.")
    ] = "auto",
    ddp_timeout: Annotated[
        float, typer.Option(min=0.1, help="Minutes a DDP process waits for the others before giving up.")
    ] = 30.0,
    jobs: Annotated[
        int, typer.Option(min=1, help="Train this many models at once (one per GPU of --devices on GPUs).")
    ] = 1,
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Also log to W&B (offline unless WANDB_MODE=online).")
    ] = False,
    run_root: RunRootOpt = DEFAULT_RUN_ROOT,
    release_root: ReleaseRootOpt = DEFAULT_RELEASE_ROOT,
    threads: Annotated[
        int | None,
        typer.Option(
            help=f"CPU threads for torch per process, 1 to {max_threads()} (1 is fastest on a busy 2-core "
            "machine)."
        ),
    ] = None,
    max_epochs: Annotated[
        int | None,
        typer.Option(
            min=1, help="Override every entry's epochs (quick trials; recorded, never the release)."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Train with this seed instead of the entry's (reproducibility reruns); needs its own "
            "--release-root and --run-root."
        ),
    ] = None,
    limit_maps: Annotated[
        int | None,
        typer.Option(min=1, help="Use only the first N maps of each split (smoke tests; recorded)."),
    ] = None,
    json_output: JsonOpt = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Train the models of a release manifest and write their release files."""
    # Lightning's start-up banners and tips would bury the progress bar; warnings and errors still show.
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*Grad strides do not match bucket view strides.*")  # DDP
    quiet = is_secondary_rank()
    check_json_out(json_out)
    spec = load_manifest(manifest)
    selected = training_order(spec.select(only))  # Ensembles after the members they are assembled from
    if seed is not None:
        selected = with_seed(selected, seed, release_root, run_root)
    options = TrainOptions(
        run_root=run_root,
        release_root=release_root,
        accelerator=accelerator,
        devices=parse_devices(devices),
        num_nodes=num_nodes,
        strategy=strategy,
        resume=resume,
        force=force,
        release_failing=release_failing,
        wandb=wandb,
        limit_maps=limit_maps,
        threads=threads,
        max_epochs=max_epochs,
        ddp_timeout_minutes=ddp_timeout,
    )
    check_options(options)
    if not quiet:  # found now, not after the first model's training
        check_writable(release_root, "--release-root")
        check_writable(run_root, "--run-root")
    out = output_console(json_output)
    if jobs > 1 and len(selected) > 1:
        out.print(f"Training {len(selected)} models, {jobs} at a time; logs in {run_root}/<name>/train.log")
        results = train_in_parallel(selected, spec, options, jobs)
    else:
        results = _train_one_by_one(selected, spec, options, out, quiet)
    if quiet:
        return
    if not json_output:
        out.print(_results_table(results))
    for r in results:
        if r.message and r.status in ("below target", "failed"):
            out.print(f"{r.name}: {r.status}: {r.message}", highlight=False, soft_wrap=True)
    if json_output or json_out is not None:
        emit_json([r.to_dict() for r in results], json_output, json_out)
    # A model released with --release-failing was asked for: its failing target shows, but does not fail.
    if any(r.status in ("failed", "below target") for r in results):
        raise typer.Exit(1)
