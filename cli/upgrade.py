"""`diffplan upgrade`: rewrite release checkpoints in the current checkpoint format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from diffplan.release.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    format_version,
    read_release_checkpoint,
    upgrade_release_checkpoint,
)
from diffplan_cli._common import Command, JsonOpt, JsonOutOpt, check_json_out, console, emit_json

app = typer.Typer(add_completion=False)

WHY = (
    "Why on that machine: escnn computes its steerable filter bases numerically, and the result depends "
    "on the host CPU's BLAS kernels, so a filter stored as basis coefficients (format 2 and older) can plan "
    "wrongly on another machine. Format 3 also stores every steerable filter expanded, which loads the same "
    "everywhere once written where the model was trained (or under that host's kernels, e.g. "
    "OPENBLAS_CORETYPE=SkylakeX). Current files, and format-2 files of planners without steerable filters, "
    "are left as they are."
)


@app.command(cls=Command, epilog=WHY)
def upgrade(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(help="Release checkpoints (.ckpt); the <name>_info.json beside each follows it."),
    ],
    json_output: JsonOpt = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Rewrite release checkpoints in the current format; run it on the machine that trained them."""
    check_json_out(json_out)
    # Every file is read first: a bad path fails before any checkpoint is rewritten.
    before = [(path, format_version(read_release_checkpoint(path), path)) for path in checkpoints]
    rows: list[dict[str, Any]] = []
    for path, previous in before:
        upgraded = upgrade_release_checkpoint(path)
        current = CHECKPOINT_FORMAT_VERSION if upgraded else previous
        rows.append(
            {"path": str(path), "upgraded": upgraded, "format_version": current, "previous_format": previous}
        )
        if not json_output:
            state = (
                f"upgraded to format {current} (was {previous})" if upgraded else f"already format {current}"
            )
            console.print(f"{path}: {state}", highlight=False, soft_wrap=True)
    if json_output or json_out is not None:
        emit_json({"checkpoints": rows}, json_output, json_out)
