"""`diffplan evaluate`: score models on any maps (other sizes, the field's benchmark files); measures, does
not judge release targets."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from diffplan.errors import BadInputError
from diffplan.release.evaluation import (
    DEFAULT_OUTPUT_ROOT,
    check_output_folder,
    evaluate_models,
    resolve_models,
    write_evaluation,
)
from diffplan.release.manifest import load_manifest
from diffplan.scoring.budget import parse_budget
from diffplan_cli._common import (
    DEFAULT_MANIFEST,
    DEFAULT_RELEASE_ROOT,
    InferenceThreadsOpt,
    JsonOpt,
    JsonOutOpt,
    ManifestOpt,
    ReleaseRootOpt,
    check_json_out,
    console,
    emit_json,
    output_console,
    parse_cell,
    percent,
)

BudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--budget",
        help="Planning budget of every planner: a number of steps, 'trained', 'side' (sqrt(2) x map side) "
        "or 'bfs' (longest BFS distance of each map + 1).",
    ),
]


def results_table(report) -> Table:
    """Model x data set: scores, maps, maze size, the budget used and the time per maze."""
    table = Table(title="Evaluation")
    columns = (
        "model",
        "data",
        "size",
        "maps",
        "accuracy",
        "success",
        "optimality",
        "angle",
        "budget",
        "ms/maze",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "data", "budget") else "right")
    for row in report.rows:
        angle = row.scores.get("angle_error")
        budget = row.budget
        table.add_row(
            row.model,
            Path(row.data).name,
            row.maze_size,
            str(row.maps),
            percent(row.scores.get("accuracy")),
            percent(row.scores.get("success")),
            percent(row.scores.get("optimality")),
            "-" if angle is None else f"{angle:.1f} deg",
            f"{budget['knob']}={budget['steps']} ({budget['rule']})",
            f"{row.ms_per_maze:.1f}",
        )
    return table


def evaluate(
    names: Annotated[
        list[str] | None, typer.Argument(help="Release model names or checkpoint paths (or --all).")
    ] = None,
    all_models: Annotated[
        bool, typer.Option("--all", help="Every model of the manifest in the release.")
    ] = False,
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data", help="Data or map file to score on (repeatable): .npz, .pth, .map, text, .npy, image."
        ),
    ] = None,
    k: Annotated[
        str | None,
        typer.Option("--k", help="VI steps of unrolled planners and Ensembles: N, trained, side or bfs."),
    ] = None,
    max_iter: Annotated[
        str | None,
        typer.Option(
            "--max-iter", help="Solver iterations of equilibrium planners: N, trained, side or bfs."
        ),
    ] = None,
    budget: BudgetOpt = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Score only the first N maps of each file.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", help="Folder for results.json (default runs/evaluate/<time>; never the release)."
        ),
    ] = None,
    min_success: Annotated[
        float | None,
        typer.Option(
            "--min-success", min=0.0, max=1.0, help="Exit 1 if any row's success is at or below this."
        ),
    ] = None,
    manifest: ManifestOpt = DEFAULT_MANIFEST,
    release_root: ReleaseRootOpt = DEFAULT_RELEASE_ROOT,
    goal: Annotated[
        list[str] | None, typer.Option("--goal", help="Goal ROW,COL for map files (repeatable).")
    ] = None,
    scen: Annotated[Path | None, typer.Option("--scen", help="MovingAI .scen with goals for a .map.")] = None,
    num_goals: Annotated[
        int | None, typer.Option("--num-goals", min=1, help="Goals drawn per map file without goals.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for drawn goals.")] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Image maps: grey level below which a pixel is a wall."),
    ] = None,
    json_stdout: JsonOpt = False,
    json_out: JsonOutOpt = None,
    threads: InferenceThreadsOpt = 1,
) -> None:
    """Score models on any maps: accuracy, success, optimality at a planning budget that can scale."""
    if not data:
        raise BadInputError("give at least one --data FILE to score on.")
    if names and all_models:
        raise BadInputError("give model names or --all, not both.")
    check_json_out(json_out)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = output if output is not None else DEFAULT_OUTPUT_ROOT / stamp
    check_output_folder(output, release_root)
    goals = [parse_cell(text, "--goal") for text in goal] if goal else None
    data_options = {
        "goals": goals,
        "scen": scen,
        "num_goals": num_goals,
        "seed": seed,
        "threshold": threshold,
    }
    spec = (
        load_manifest(manifest)
        if (all_models or manifest != DEFAULT_MANIFEST or manifest.is_file())
        else None
    )
    models = resolve_models(names or [], all_models=all_models, manifest=spec, release_root=release_root)
    both = parse_budget(budget)
    k_setting = parse_budget(k) if k is not None else both
    iter_setting = parse_budget(max_iter) if max_iter is not None else both
    shown: Console = output_console(json_stdout)
    with Progress(
        TextColumn("[bold]evaluate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=shown,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=len(models) * len(data))
        report = evaluate_models(
            models,
            data,
            k=k_setting,
            max_iter=iter_setting,
            limit=limit,
            progress=lambda text, done, total: bar.update(task, completed=done, description=text),
            data_options={key: value for key, value in data_options.items() if value is not None},
            threads=threads,
        )
    written = write_evaluation(report, output)
    if json_stdout or json_out is not None:
        emit_json(report.to_dict(), json_stdout, json_out)
    if not json_stdout:
        console.print(results_table(report))
        console.print(
            f"{len(report.rows)} result(s) in {report.seconds:.1f} s; stored in {written}", highlight=False
        )
    if min_success is not None:
        low = [row for row in report.rows if not row.scores["success"] > min_success]
        if low:
            worst = min(low, key=lambda row: row.scores["success"])
            shown.print(
                f"[red]{len(low)} result(s) at or below --min-success {percent(min_success)}[/]; lowest: "
                f"{worst.model} on {Path(worst.data).name} at {percent(worst.scores['success'])}.",
                highlight=False,
            )
            raise typer.Exit(1)
