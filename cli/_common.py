"""Options shared by several commands, declared once, and the console helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

DEFAULT_MANIFEST = Path("manifests/release_v1.yaml")
DEFAULT_RELEASE_ROOT = Path("pretrained_models")
DEFAULT_RUN_ROOT = Path("runs")

ManifestOpt = Annotated[
    Path,
    typer.Option("--manifest", "-m", help="Release manifest (YAML) listing the data sets and the models."),
]
ModelNamesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only", help="Only this release model (repeatable); default: every model of the manifest."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of rich tables.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite outputs that already exist.")]
InferenceThreadsOpt = Annotated[
    int,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads for torch inference; 1 gives the steadiest latency on a shared 2-core machine.",
    ),
]
ValidationJobsOpt = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        min=1,
        help="Validate this many models at once, one single-threaded process each "
        "(default: one per CPU core).",
    ),
]
