"""`diffplan data`: generate the maze data sets and describe data-set and map files."""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from diffplan.envs import (
    check_generation,
    dataset_info,
    generate_dataset,
    read_metadata,
    settings_differences,
)
from diffplan.envs.datasets import SETTINGS
from diffplan.errors import BadInputError
from diffplan.release.manifest import load_manifest
from diffplan.task import Task
from diffplan_cli._common import (
    DEFAULT_MANIFEST,
    Command,
    ForceOpt,
    Group,
    JsonOpt,
    JsonOutOpt,
    ManifestOpt,
    check_json_out,
    console,
    emit_json,
    err_console,
    parse_cell,
)

app = typer.Typer(
    cls=Group, help="Generate the maze data sets and describe data-set and map files.", no_args_is_help=True
)

# The library's defaults for the generation settings (everything but kind).
DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(generate_dataset).parameters.items()
    if name in SETTINGS and name != "kind"
}


class Kind(str, Enum):
    grid = "grid"
    graph = "graph"


def _size(value: int) -> str:
    return f"{value / 1e6:.1f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def _plan(manifest: Path, force: bool) -> list[tuple[str, Path, dict[str, Any], bool]]:
    """(name, path, settings, generate?) per manifest data set; refuses conflicts before any work."""
    plan = []
    for name, spec in load_manifest(manifest).datasets.items():
        settings = {key: getattr(spec, key) for key in ("kind", *DEFAULTS)}
        if spec.path.exists() and not force:
            differences = settings_differences(spec.path, **settings)
            if differences:
                raise BadInputError(
                    f"{spec.path} (data set {name!r} of {manifest}) already exists but {differences[0]}; "
                    "pass --force to regenerate it."
                )
            plan.append((name, spec.path, settings, False))
            continue
        check_generation(output=spec.path, force=force, **settings)
        plan.append((name, spec.path, settings, True))
    return plan


def _explicit(
    kind: Kind, output: Path | None, options: dict[str, Any]
) -> tuple[str, Path, dict[str, Any], bool]:
    settings = {"kind": kind.value, **DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    if output is None:
        suffix = ".npz" if kind is Kind.grid else ".pth"
        output = Path("data") / f"m{settings['maze_size']}_{kind.value}_seed{settings['seed']}{suffix}"
    return (output.stem, output, settings, True)


@app.command(cls=Command)
def generate(
    manifest: ManifestOpt = None,
    kind: Annotated[
        Kind | None,
        typer.Option(help="Generate one data set of this kind from the options below instead of a manifest."),
    ] = None,
    maze_size: Annotated[
        int | None, typer.Option(help=f"Maze side length, odd and >= 5 (default {DEFAULTS['maze_size']}).")
    ] = None,
    train_size: Annotated[
        int | None,
        typer.Option(help=f"Training mazes; 0 for a test-only set (default {DEFAULTS['train_size']})."),
    ] = None,
    valid_size: Annotated[
        int | None,
        typer.Option(help=f"Validation mazes; 0 for a test-only set (default {DEFAULTS['valid_size']})."),
    ] = None,
    test_size: Annotated[
        int | None, typer.Option(help=f"Test mazes (default {DEFAULTS['test_size']}).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help=f"Random seed; the same seed gives the same mazes (default {DEFAULTS['seed']})."),
    ] = None,
    has_obstacle: Annotated[
        bool | None,
        typer.Option(
            "--has-obstacle/--no-has-obstacle",
            help="Graph only: every cell is a node (obstacles included), or only free cells (default has).",
        ),
    ] = None,
    cont_action: Annotated[
        bool | None, typer.Option("--cont-action", help="Graph only: label nodes with move vectors (dy, dx).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Output file (.npz grid, .pth graph) (default data/m<size>_<kind>_seed<seed>.<ext>)."
        ),
    ] = None,
    force: ForceOpt = False,
    json_output: JsonOpt = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Generate the data sets a manifest lists, or one data set from --kind and its options."""
    options = {
        "maze_size": maze_size,
        "train_size": train_size,
        "valid_size": valid_size,
        "test_size": test_size,
        "seed": seed,
        "has_obstacle": has_obstacle,
        "cont_action": cont_action,
    }
    if kind is None:
        given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None]
        if given or output is not None:
            raise BadInputError(
                f"{(given or ['--output'])[0]} needs --kind grid|graph; or drop it and use --manifest."
            )
        plan = _plan(manifest or DEFAULT_MANIFEST, force)
    elif manifest is not None:
        raise BadInputError("pass either --manifest or --kind with its options, not both.")
    else:
        plan = [_explicit(kind, output, options)]
        _, path, settings, _ = plan[0]
        check_generation(output=path, force=force, **settings)
    check_json_out(json_out)

    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    # --json keeps stdout for the JSON: the progress bar goes to stderr then.
    with Progress(*columns, console=err_console if json_output else console) as progress:
        for name, path, settings, make in plan:
            splits = "/".join(str(settings[f"{s}_size"]) for s in ("train", "valid", "test"))
            if not make:
                fingerprint = (read_metadata(path) or {}).get("fingerprint", "?")
                rows.append((name, str(path), splits, path.stat().st_size, fingerprint, None, "skipped"))
                continue
            task = progress.add_task(name, total=None)
            summary = generate_dataset(
                output=path,
                force=force,
                progress=lambda done, total, task=task: progress.update(task, completed=done, total=total),
                **settings,
            )
            row = (
                name,
                summary["path"],
                splits,
                summary["bytes"],
                summary["fingerprint"],
                summary["seconds"],
            )
            rows.append((*row, "generated"))
    if json_output or json_out is not None:
        datasets = [_row_json(row, planned[2]) for row, planned in zip(rows, plan, strict=True)]
        emit_json({"datasets": datasets}, json_output, json_out)
    if not json_output:
        console.print(_summary_table(rows))


def _row_json(row: tuple, settings: dict[str, Any]) -> dict[str, Any]:
    name, path, _, size, fingerprint, seconds, status = row
    return {
        "name": name,
        "path": str(path),
        "kind": settings["kind"],
        "splits": {split: settings[f"{split}_size"] for split in ("train", "valid", "test")},
        "bytes": size,
        "fingerprint": fingerprint,
        "seconds": seconds,
        "status": status,
    }


def _summary_table(rows: list[tuple]) -> Table:
    table = Table(title="Data sets")
    for column in ("Data set", "File", "Splits (train/valid/test)", "Size", "Fingerprint", "Seconds"):
        table.add_column(
            column, justify="right" if column in ("Size", "Seconds") else "left", overflow="fold"
        )
    table.add_column("Status", no_wrap=True)
    for name, path, splits, size, fingerprint, seconds, status in rows:
        shown = "-" if seconds is None else f"{seconds:.1f}"
        table.add_row(name, path, splits, _size(size), fingerprint[:12], shown, status)
    if any(row[-1] == "skipped" for row in rows):
        table.caption = "skipped: already there with the same settings; --force regenerates it."
    return table


def _goal_cells(values: list[str] | None) -> list[tuple[int, int]] | None:
    if not values:
        return None
    return [parse_cell(value, "--goal") for value in values]


@app.command(cls=Command)
def info(
    path: Annotated[
        Path,
        typer.Argument(
            help="A data-set file (grid .npz, graph .pth) or a map file (MovingAI .map, text maze, .npy, "
            "image)."
        ),
    ],
    json_output: JsonOpt = False,
    json_out: JsonOutOpt = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle", help="Allow the published graph pickle; unpickling runs code from the file."
        ),
    ] = False,
    scen: Annotated[
        Path | None,
        typer.Option(help="Map files: goals from this MovingAI .scen (default: <map>.scen beside a .map)."),
    ] = None,
    goal: Annotated[
        list[str] | None,
        typer.Option(help="Map files: a goal cell ROW,COL for every map (repeatable)."),
    ] = None,
    num_goals: Annotated[
        int | None,
        typer.Option(
            help="Map files: goals drawn per map when it has none, or the first N .scen goals (default 1)."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Map files: seed of the goals drawn from free cells (default 0).")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Images: grey level (0 black .. 1 white) below which a pixel is a wall (default 0.5)."
        ),
    ] = None,
) -> None:
    """Describe a data-set or map file: layout, splits, statistics, goals, fingerprint, labels."""
    check_json_out(json_out)
    options = {"scen": scen, "goals": _goal_cells(goal), "num_goals": num_goals, "seed": seed}
    described = dataset_info(path, trust_pickle=trust_pickle, threshold=threshold, **options)
    if json_output or json_out is not None:
        emit_json(described, json_output, json_out)
    if json_output:
        return
    console.print(_info_table(path, described))
    console.print(_splits_table(described))


def _info_table(path: Path, described: dict[str, Any]) -> Table:
    summary = Table(title=str(path), show_header=False)
    summary.add_column("Field", style="bold")
    summary.add_column("Value")
    ok = described["fingerprint_ok"]
    check = {True: "[green]matches the stored one[/]", False: "[red]DIFFERS from the stored one[/]"}
    labels = ", ".join(described["labels"]) + " (recomputed on load)" if described["labels"] else "none"
    border = {True: "yes", False: "no (off the map counts as a wall)", None: "-"}
    rows = {
        "Layout": described["layout"],
        "Kind": described["kind"],
        "Maze size": f"{described['height']}x{described['width']}",
        "Mechanism": f"{described['mechanism']} (optimal actions computed by BFS on load)",
        "Size on disk": _size(described["bytes"]),
        "Labels in the file": labels,
        "Goals": described["goals"],
        "Wall border": border[described["wall_border"]],
        "Fingerprint": f"{described['fingerprint']} {check.get(ok, '(none stored)')}",
    }
    if Task(described["kind"]) is Task.GRAPH:
        rows["Has obstacle"] = str(described["has_obstacle"])
        rows["Continuous actions"] = str(described["cont_action"])
    if described["metadata"]:
        rows["Seed"] = str(described["metadata"].get("seed"))
    for field, value in rows.items():
        summary.add_row(field, value)
    return summary


def _splits_table(described: dict[str, Any]) -> Table:
    splits = Table(title="Splits (BFS distance of reachable cells)")
    columns = ("Split", "Mazes", "Free fraction mean [min, max]", "Scored cells mean [min, max]")
    for column in (*columns, "<=10", "<=20", "<=30", "<=45", "Max"):
        splits.add_column(column, justify="left" if column == "Split" else "right")
    for name, stats in described["splits"].items():
        if not stats["mazes"]:
            splits.add_row(name, "0", *["-"] * 7)
            continue
        free, scored = stats["free_fraction"], stats["scored_cells"]
        within = [f"{100 * stats['reachable_within'][k]:.1f}%" for k in ("10", "20", "30", "45")]
        splits.add_row(
            name,
            str(stats["mazes"]),
            f"{free['mean']:.3f} [{free['min']:.3f}, {free['max']:.3f}]",
            f"{scored['mean']:.1f} [{scored['min']}, {scored['max']}]",
            *within,
            str(stats["max_distance"]),
        )
    return splits
