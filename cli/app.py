"""Assembles the Typer app: one sub-module per command or command group, imported when it is used.

``diffplan --help`` lists the commands from ``COMMANDS`` without importing them, so it starts in a
fraction of a second; a command's module (and torch, escnn ...) loads only when that command runs or
shows its own help.

Library errors (``DiffplanError``) become one ``Error: ...`` line on stderr and the exit code they
carry (2 bad input, 1 failed check); ``DIFFPLAN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

import diffplan
from diffplan.errors import DiffplanError
from diffplan_cli._common import Command, Group, err_console


@dataclass(frozen=True)
class Lazy:
    """Where a command lives: ``module.attribute`` is a command function, or a ``typer.Typer`` (a group,
    or one command that needs command settings such as an epilog)."""

    module: str
    attribute: str
    summary: str  # the line `diffplan --help` shows: the command's own first help line (a test checks)


# One entry per command, in the order `diffplan --help` lists them. A new command: a module in cli/
# with one function (or a typer.Typer for a group), and a line here.
COMMANDS: dict[str, Lazy] = {
    "train": Lazy(
        "diffplan_cli.train", "train", "Train the models of a release manifest and write their release files."
    ),
    "validate": Lazy(
        "diffplan_cli.validate",
        "validate",
        "Check trained release models: files, checksums, safe loading, scores against targets, symmetry.",
    ),
    "inspect": Lazy(
        "diffplan_cli.inspect",
        "inspect",
        "Show a release model's metadata, config, parameters, file and training curve (weights-only read).",
    ),
    "package": Lazy(
        "diffplan_cli.package",
        "package",
        "Validate the release, write README, quick-start guide, SHA256SUMS and the .tar.gz and .zip "
        "archives.",
    ),
    "upgrade": Lazy(
        "diffplan_cli.upgrade",
        "app",
        "Rewrite release checkpoints in the current format; run it on the machine that trained them.",
    ),
    "evaluate": Lazy(
        "diffplan_cli.evaluate",
        "evaluate",
        "Score models on any maps: accuracy, success, optimality at a planning budget that can scale.",
    ),
    "plan": Lazy(
        "diffplan_cli.plan",
        "plan",
        "Plan on your own map: the path from a start (or the policy everywhere) drawn in the terminal.",
    ),
    "data": Lazy(
        "diffplan_cli.data", "app", "Generate the maze data sets and describe data-set and map files."
    ),
}


def load_command(name: str) -> Any:
    """Import command ``name``'s module and build its click command (or group)."""
    lazy = COMMANDS[name]
    target = getattr(importlib.import_module(lazy.module), lazy.attribute)
    if not isinstance(target, typer.Typer):
        single = typer.Typer(add_completion=False)
        single.command(name=name, cls=Command)(target)
        target = single
    command = typer.main.get_command(target)
    command.name = name
    return command


class _RootGroup(Group):
    """Root group: loads each command on first use and turns library errors into one line on stderr."""

    _listing = False  # True while the root help is drawn: commands are listed from COMMANDS alone

    def list_commands(self, ctx) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        if self._listing:
            return TyperCommand(cmd_name, help=COMMANDS[cmd_name].summary)
        self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    def format_help(self, ctx, formatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def invoke(self, ctx):
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
    cls=_RootGroup,
    help="Train, check and ship pre-trained differentiable planners for 15x15 maze navigation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
