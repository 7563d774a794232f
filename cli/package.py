"""`diffplan package`: README, quick-start guide, SHA256SUMS and reproducible release archives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from diffplan.release.generalization import read_study
from diffplan.release.manifest import load_manifest
from diffplan.release.packaging import (
    PackageResult,
    VerifyResult,
    archive_stem,
    build_package,
    read_baseline,
    released_names,
    summary_json,
    verify_archive,
)
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
)
from diffplan_cli.validate import print_report, run_validation


def _verify_json(result: VerifyResult) -> dict[str, Any]:
    return {
        "archive": str(result.archive),
        "ok": result.ok,
        "files_checked": result.files_checked,
        "problems": result.problems,
        "archive_sha256": getattr(result, "archive_sha256", None),
        "sha256_source": getattr(result, "sha256_source", None),
        "checkpoints_checked": getattr(result, "checkpoints_checked", None),
    }


def _render_verify(result: VerifyResult) -> None:
    archive = result.archive
    if result.ok:
        console.print(
            f"[green]OK[/] {archive}: {result.files_checked} files match the embedded SHA256SUMS.",
            highlight=False,
        )
        return
    console.print(f"[red]FAILED[/] {archive}: {len(result.problems)} problem(s).", highlight=False)
    for problem in result.problems:
        console.print(f"  - {problem}", highlight=False, soft_wrap=True)


def _render_package(result: PackageResult) -> None:
    table = Table(title=f"Release v{result.version}")
    for column in ("archive", "size", "sha256", "verified"):
        table.add_column(column)
    for archive in result.archives:
        table.add_row(
            str(archive),
            f"{archive.stat().st_size / 1e6:.2f} MB",
            result.archive_sha256[archive.name],
            "[green]yes[/]",
        )
    console.print(table)
    console.print(
        f"{len(result.files)} files in the release; README {result.readme}, guide {result.quick_start}, "
        f"checksums {result.sums}.",
        highlight=False,
    )


def package(
    allow_failing: Annotated[
        bool,
        typer.Option(
            "--allow-failing", help="Package even if models fail validation (the README marks them)."
        ),
    ] = False,
    version: Annotated[str, typer.Option("--version", help="Release version in the archive names.")] = "1.0",
    verify: Annotated[
        Path | None,
        typer.Option(
            "--verify",
            help="Only check this archive: its sha256 (--sha256, or the SHA256SUMS beside it), size limits, "
            "its embedded SHA256SUMS, and every checkpoint (weights_only load, sha256 of its _info.json).",
        ),
    ] = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="With --verify: the archive's expected sha256 (hex).")
    ] = None,
    manifest: ManifestOpt = DEFAULT_MANIFEST,
    release_root: ReleaseRootOpt = DEFAULT_RELEASE_ROOT,
    dist: Annotated[Path, typer.Option("--dist", help="Folder for the archives.")] = Path("dist"),
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Release root of the previous release (e.g. pretrained_models): the README compares "
            "each model with its model of the same name there and judges the release targets.",
        ),
    ] = None,
    threads: InferenceThreadsOpt = 1,
    jobs: ValidationJobsOpt = None,
    json_output: JsonOpt = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Validate the release, write README, quick-start guide, SHA256SUMS and the .tar.gz and .zip archives."""
    check_json_out(json_out)
    if verify is not None:
        verified = verify_archive(verify, sha256=sha256)
        if json_output or json_out is not None:
            emit_json(_verify_json(verified), json_output, json_out)
        if not json_output:
            _render_verify(verified)
        if not verified.ok:
            raise typer.Exit(1)
        return
    archive_stem(version)  # a bad version is refused before any work
    read_study(release_root)  # so is a broken generalization/results.json
    if baseline is not None:
        read_baseline(baseline)  # and a --baseline that is not a release
    spec = load_manifest(manifest)
    out = output_console(json_output)
    names = released_names(spec, release_root) if release_root.is_dir() else None
    report = run_validation(spec, names, release_root, threads=threads, jobs=jobs, out=out)
    if not report.passed:
        print_report(report, out)
    result = build_package(
        spec,
        release_root=release_root,
        dist_dir=dist,
        version=version,
        allow_failing=allow_failing,
        report=report,
        baseline_root=baseline,
    )
    if json_output or json_out is not None:
        emit_json(json.loads(summary_json(result)), json_output, json_out)
    if not json_output:
        _render_package(result)
    for name, reason in result.not_released.items():
        out.print(f"{name}: {reason}.", highlight=False, soft_wrap=True)
    if result.failing:
        out.print(f"[yellow]Packaged with failing models (--allow-failing):[/] {', '.join(result.failing)}.")
