"""Assembles the Typer app: one sub-module per command or command group.

Library errors (``DiffplanError``) become one ``Error: ...`` line on stderr and the exit code they
carry (2 bad input, 1 failed check); ``DIFFPLAN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

import diffplan
from diffplan.errors import DiffplanError
from diffplan_cli import data as data_commands
from diffplan_cli import evaluate as evaluate_command
from diffplan_cli import inspect as inspect_command
from diffplan_cli import package as package_command
from diffplan_cli import plan as plan_command
from diffplan_cli import train as train_command
from diffplan_cli import validate as validate_command
from diffplan_cli._common import err_console


class _ErrorMappingGroup(TyperGroup):
    """Root group that turns library errors into one line on stderr and their exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DiffplanError as err:
            if os.environ.get("DIFFPLAN_DEBUG"):
                raise
            err_console.print(f"[bold red]Error:[/] {err}", highlight=False, soft_wrap=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            err_console.print("Interrupted.")
            ctx.exit(130)


app = typer.Typer(
    name="diffplan",
    cls=_ErrorMappingGroup,
    help="Train, check and ship pre-trained differentiable planners for 15x15 maze navigation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_commands.app, name="data")
app.command()(train_command.train)
app.command()(validate_command.validate)
app.command()(inspect_command.inspect)
app.command()(package_command.package)
app.command()(evaluate_command.evaluate)
app.command()(plan_command.plan)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"diffplan {diffplan.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Train, check and ship pre-trained differentiable planners for 15x15 maze navigation."""


def main() -> None:
    """Console-script entry point."""
    app()
