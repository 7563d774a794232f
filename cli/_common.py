"""What several commands share, declared once: options, the --json convention, help classes, consoles.

The ``--json`` convention (DESIGN section 8), the same in every command with machine output:
``--json`` prints the JSON on stdout and nothing else goes there (progress and notes go to stderr,
tables are left out); ``--json-out PATH`` also writes the same JSON to PATH atomically, and PATH is
checked before the work starts (``check_json_out``), so a bad path fails in one line, not after a run.

This module stays light (typer, rich, the standard library): ``diffplan --help`` imports it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from diffplan._atomic import atomic_write_text
from diffplan.errors import BadInputError, DataFileError
from diffplan.release.layout import DEFAULT_RELEASE_ROOT as DEFAULT_RELEASE_ROOT  # re-exported

console = Console()
err_console = Console(stderr=True)

DEFAULT_MANIFEST = Path("manifests/release_v1.yaml")
DEFAULT_RUN_ROOT = Path("runs")


# --- options used by several commands -------------------------------------------------------------

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
ReleaseRootOpt = Annotated[Path, typer.Option("--release-root", help="Folder of the release files.")]
RunRootOpt = Annotated[
    Path, typer.Option("--run-root", help="Folder of the training runs: resumable run files, logs, curves.")
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print the results as JSON on stdout (and nothing else there)."),
]
JsonOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--json-out",
        help="Also write the JSON to this file (atomically; the path is checked before the work starts).",
    ),
]
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


# --- rendering --------------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals (0.9977 -> ``99.77%``); ``-`` for None."""
    return "-" if value is None else f"{100 * value:.2f}%"


def output_console(json_output: bool) -> Console:
    """Where the human-readable output goes: stderr under ``--json``, so stdout holds the JSON alone."""
    return err_console if json_output else console


def parse_cell(text: str, option: str) -> tuple[int, int]:
    """A ``ROW,COL`` cell given on the command line (``--goal``, ``--start``); BadInputError otherwise."""
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
        raise BadInputError(f"{option} {text!r} must be ROW,COL (two whole numbers, counted from 0).")
    return int(parts[0]), int(parts[1])


# --- the --json / --json-out convention ---------------------------------------------------------------


def check_json_out(path: Path | None) -> None:
    """Refuse a ``--json-out`` path that cannot be written, before any work (an existing file is replaced)."""
    if path is None:
        return
    parent = path.parent
    if path.is_dir():
        problem = f"{path} is a folder; give a file path such as {path / 'results.json'}"
    elif not parent.exists():
        problem = f"folder {parent} does not exist; create it or choose another path"
    elif not parent.is_dir():
        problem = f"{parent} is a file, not a folder; choose another path"
    elif not os.access(parent, os.W_OK | os.X_OK):
        problem = f"no write permission in {parent}; choose another path"
    else:
        return
    raise BadInputError(f"cannot write --json-out {path}: {problem}.")


def emit_json(payload: dict[str, Any], to_stdout: bool, path: Path | None) -> None:
    """Print ``payload`` as JSON (``--json``) and/or write it atomically to ``path`` (``--json-out``)."""
    text = json.dumps(payload, indent=2, default=str)
    if path is not None:
        try:
            atomic_write_text(path, text + "\n")
        except OSError as err:
            raise DataFileError(f"cannot write {path}: {err.strerror or err}; choose another path.") from err
    if to_stdout:
        typer.echo(text)


# --- help without a <bool> column -------------------------------------------------------------------


class FlagsWithoutMetavar:
    """Renders boolean flags without a ``<bool>`` type column (typer 0.29's rich help shows one)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:  # typer vendors its own click: test the attribute, not the class
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class Command(FlagsWithoutMetavar, TyperCommand):
    """The class of every command (``@app.command(cls=Command)``)."""


class Group(FlagsWithoutMetavar, TyperGroup):
    """The class of every command group (``typer.Typer(cls=Group)``)."""
