"""`diffplan validate`: run the release checks on trained models, one verdict per check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from diffplan._threads import available_cores
from diffplan.errors import BadInputError
from diffplan.release.manifest import load_manifest
from diffplan.release.results import FAIL, ValidationReport, write_results
from diffplan.release.validation import validate_models
from diffplan_cli._common import (
    DEFAULT_MANIFEST,
    DEFAULT_RELEASE_ROOT,
    InferenceThreadsOpt,
    JsonOpt,
    JsonOutOpt,
    ManifestOpt,
    ReleaseRootOpt,
    ValidationJobsOpt,
    check_json_out,
    console,
    emit_json,
    output_console,
    percent,
)


def results_table(report: ValidationReport) -> Table:
    """One row per model: scores against the target, size, speed and the verdict."""
    title = "Release validation" + (f" (scored on {report.data_override})" if report.data_override else "")
    table = Table(title=title)
    for column in (
        "model",
        "accuracy",
        "target",
        "success",
        "optimality",
        "parameters",
        "size",
        "latency",
        "status",
    ):
        table.add_column(column, justify="left" if column in ("model", "status") else "right")
    for m in report.models:
        failed = len(m.failed)
        status = "[green]pass[/]" if m.passed else f"[red]fail ({failed} check{'s' if failed > 1 else ''})[/]"
        table.add_row(
            m.name,
            percent(m.scores.get("accuracy")),
            f"> {percent(m.target)}",
            percent(m.scores.get("success")),
            percent(m.scores.get("optimality")),
            "-" if m.parameters is None else f"{m.parameters:,}",
            "-" if m.size_mb is None else f"{m.size_mb:.2f} MB",
            "-" if m.latency_ms is None else f"{m.latency_ms:.1f} ms",
            status,
        )
    return table


def print_report(report: ValidationReport, out: Console = console) -> None:
    """The table, then every failed check in words (and notes on what was skipped and why)."""
    out.print(results_table(report))
    for m in report.models:
        if m.data_note:
            out.print(f"[yellow]{m.name}[/]: {m.data_note}; fingerprint and recorded-score checks skipped.")
        for check in m.checks:
            if check.status == FAIL:
                out.print(
                    f"[red]FAIL[/] {m.name} · {check.name} ({check.title}): {check.message}",
                    highlight=False,
                    soft_wrap=True,
                )
    verdict = "[green]all checks passed[/]" if report.passed else "[red]some checks failed[/]"
    processes = f", {report.jobs} at a time" if report.jobs > 1 else ""
    out.print(
        f"{len(report.models)} model(s) validated in {report.seconds:.1f} s{processes}: {verdict}.",
        highlight=False,
    )


def run_validation(
    manifest, names, release_root, data=None, limit=None, threads=1, jobs=None, out: Console = console
) -> ValidationReport:
    """Validate with a progress bar on ``out`` (shared with `package`); ``jobs`` None: one process per
    CPU core."""
    with Progress(
        TextColumn("[bold]validate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=len(manifest.select(names)))

        def report(name: str, index: int, total: int) -> None:
            progress.update(task, completed=index, description=name)

        result = validate_models(
            manifest,
            names,
            release_root=release_root,
            data=data,
            limit=limit,
            threads=threads,
            jobs=available_cores() if jobs is None else jobs,
            progress=report,
        )
        progress.update(task, completed=len(result.models))
    return result


def validate(
    names: Annotated[list[str] | None, typer.Argument(help="Release models to check (or --all).")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Check every model of the manifest.")] = False,
    manifest: ManifestOpt = DEFAULT_MANIFEST,
    release_root: ReleaseRootOpt = DEFAULT_RELEASE_ROOT,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Score on this data set's test split instead of each model's own."),
    ] = None,
    json_output: JsonOpt = False,
    json_out: JsonOutOpt = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N test maps.")] = None,
    threads: InferenceThreadsOpt = 1,
    jobs: ValidationJobsOpt = None,
) -> None:
    """Check trained release models: files, checksums, safe loading, scores against targets, symmetry."""
    if not names and not all_models:
        raise BadInputError("name the models to check, or pass --all to check every model of the manifest.")
    if names and all_models:
        raise BadInputError("give model names or --all, not both.")
    check_json_out(json_out)
    spec = load_manifest(manifest)
    out = output_console(json_output)
    report = run_validation(spec, names, release_root, data, limit, threads, jobs, out=out)
    written = write_results(report, release_root)
    if not json_output:
        print_report(report)
    out.print(f"Results stored in {written[-1].parent}/", highlight=False)
    if json_output or json_out is not None:
        emit_json(report.to_dict(), json_output, json_out)
    if not report.passed:
        raise typer.Exit(1)
