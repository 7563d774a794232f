"""`diffplan package`: README, quick-start guide, SHA256SUMS and reproducible release archives."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from diffplan.release.manifest import load_manifest
from diffplan.release.packaging import archive_stem, build_package, verify_archive
from diffplan_cli._common import (
    DEFAULT_MANIFEST,
    InferenceThreadsOpt,
    ManifestOpt,
    ValidationJobsOpt,
    console,
)
from diffplan_cli.validate import ReleaseRootOpt, print_report, run_validation


def _verify(archive: Path) -> None:
    result = verify_archive(archive)
    if result.ok:
        console.print(
            f"[green]OK[/] {archive}: {result.files_checked} files match the embedded SHA256SUMS.",
            highlight=False,
        )
        return
    console.print(f"[red]FAILED[/] {archive}: {len(result.problems)} problem(s).", highlight=False)
    for problem in result.problems:
        console.print(f"  - {problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def package(
    allow_failing: Annotated[
        bool,
        typer.Option(
            "--allow-failing", help="Package even if models fail validation (the README marks them)."
        ),
    ] = False,
    version: Annotated[str, typer.Option("--version", help="Release version in the archive names.")] = "1.0",
    verify: Annotated[
        Path | None, typer.Option("--verify", help="Only check this archive against its embedded SHA256SUMS.")
    ] = None,
    manifest: ManifestOpt = DEFAULT_MANIFEST,
    release_root: ReleaseRootOpt = Path("pretrained_models"),
    dist: Annotated[Path, typer.Option("--dist", help="Folder for the archives.")] = Path("dist"),
    threads: InferenceThreadsOpt = 1,
    jobs: ValidationJobsOpt = None,
) -> None:
    """Validate the release, write README, quick-start guide, SHA256SUMS and the .tar.gz and .zip archives."""
    if verify is not None:
        _verify(verify)
        return
    archive_stem(version)  # a bad version is refused before any work
    spec = load_manifest(manifest)
    report = run_validation(spec, None, release_root, threads=threads, jobs=jobs)
    if not report.passed:
        print_report(report)
    result = build_package(
        spec,
        release_root=release_root,
        dist_dir=dist,
        version=version,
        allow_failing=allow_failing,
        report=report,
    )
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
    if result.failing:
        console.print(
            f"[yellow]Packaged with failing models (--allow-failing):[/] {', '.join(result.failing)}."
        )
