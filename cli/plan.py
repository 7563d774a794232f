"""`diffplan plan`: plan with a released planner on your own map and see the result."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from diffplan._threads import torch_threads
from diffplan.envs import read_map
from diffplan.errors import BadInputError
from diffplan.planning import plan_map
from diffplan.release.checkpoint import load_model
from diffplan.release.plotting import draw_plan
from diffplan.scoring.budget import budget_knob, parse_budget
from diffplan_cli._common import (
    InferenceThreadsOpt,
    JsonOpt,
    JsonOutOpt,
    check_json_out,
    console,
    emit_json,
    output_console,
    parse_cell,
)

ARROWS = ("↑", "←", "↓", "→")  # N, W, S, E (DESIGN section 3)
MAX_DRAWN_COLUMNS = 160  # wider maps are summarised; --plot draws any size


def render_map(plan) -> Text:
    """The map as rich text, two characters per cell: walls, free cells, the path (or the policy's
    arrows without a start), start and goal."""
    result = plan.result
    maze = result.maze.numpy() > 0.5
    actions = result.actions.numpy()
    on_path = set(plan.path or [])
    height, width = maze.shape
    text = Text()
    for row in range(height):
        for col in range(width):
            cell = (row, col)
            if cell == plan.goal:
                text.append("G ", style="bold black on gold1")
            elif plan.start is not None and cell == plan.start:
                text.append("S ", style="bold black on deep_sky_blue1")
            elif not maze[row, col]:
                text.append("██", style="grey50")
            elif cell in on_path:
                text.append("● ", style="bold deep_sky_blue1")
            elif plan.dist[row, col] < 0:
                text.append("· ", style="red")  # free but cut off from the goal
            elif plan.start is None and actions[row, col] >= 0:
                text.append(f"{ARROWS[actions[row, col]]} ", style="green")
            else:
                text.append("· ", style="grey35")
        text.append("\n")
    return text


def summary_line(plan) -> str:
    parts = []
    if plan.start is not None:
        optimum = plan.optimal_length
        if plan.reached:
            verdict = (
                "optimal" if plan.path_length == optimum else f"{plan.path_length - optimum} steps longer"
            )
            parts.append(f"reached the goal in {plan.path_length} steps (BFS optimum {optimum}: {verdict})")
        elif optimum is not None and optimum < 0:
            parts.append("the goal is unreachable from the start")
        else:
            parts.append(
                f"did not reach the goal: stuck at {plan.path[-1]} after {plan.path_length} steps "
                f"(BFS optimum {optimum})"
            )
    parts.append(f"success from every reachable cell {100 * plan.success_rate():.1f}%")
    parts.append(f"budget {plan.budget}")
    parts.append(f"planned in {plan.seconds:.2f} s")
    return "; ".join(parts) + "."


def _payload(model_name: str, map_path: Path, plan) -> dict:
    values = plan.result.values.numpy().tolist()
    return {
        "model": model_name,
        "map": str(map_path),
        "height": int(plan.result.maze.shape[0]),
        "width": int(plan.result.maze.shape[1]),
        "goal": list(plan.goal),
        "start": None if plan.start is None else list(plan.start),
        "budget": plan.budget.to_dict(),
        "seconds": plan.seconds,
        "reached": plan.reached,
        "path": None if plan.path is None else [list(cell) for cell in plan.path],
        "path_length": plan.path_length,
        "optimal_length": plan.optimal_length,
        "success": plan.success_rate(),
        "actions": plan.result.actions.numpy().tolist(),
        "values": [[None if math.isnan(v) else v for v in row] for row in values],
    }


def plan(
    model: Annotated[str, typer.Argument(help="Release model name (e.g. VIN_maze15) or checkpoint path.")],
    map_path: Annotated[
        Path,
        typer.Argument(
            metavar="MAP", help="Text maze (# wall, . free, G goal, S start), image, .map or .npy."
        ),
    ],
    goal: Annotated[
        str | None, typer.Option("--goal", help="Goal cell ROW,COL (default: the map's G mark).")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="Start cell ROW,COL: draw the policy's path from it.")
    ] = None,
    k: Annotated[
        str | None, typer.Option("--k", help="VI steps (unrolled planners): N, trained, side or bfs.")
    ] = None,
    max_iter: Annotated[
        str | None,
        typer.Option("--max-iter", help="Solver iterations (equilibrium planners): N, trained, side, bfs."),
    ] = None,
    budget: Annotated[
        str, typer.Option("--budget", help="Budget of either kind: N, trained, side or bfs (default).")
    ] = "bfs",
    threshold: Annotated[
        float, typer.Option("--threshold", help="Images: grey level (0-1) below which a pixel is a wall.")
    ] = 0.5,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Draw values, policy and path to this PNG.")
    ] = None,
    json_stdout: JsonOpt = False,
    json_out: JsonOutOpt = None,
    threads: InferenceThreadsOpt = 1,
) -> None:
    """Plan on your own map: the path from a start (or the policy everywhere) drawn in the terminal."""
    check_json_out(json_out)
    if plot is not None and (plot.is_dir() or not plot.parent.is_dir()):
        raise BadInputError(
            f"--plot {plot}: not a writable file path; its folder must exist and it not be one."
        )
    read = read_map(map_path, threshold=threshold)
    goal_cell = parse_cell(goal, "--goal") if goal is not None else read.goal
    start_cell = parse_cell(start, "--start") if start is not None else read.start
    if goal_cell is None:
        raise BadInputError(f"{map_path} marks no goal (G); pass --goal ROW,COL.")
    planner = load_model(model)
    knob = budget_knob(planner)
    own = {"k": k, "max_iter": max_iter}[knob]
    setting = parse_budget(own if own is not None else budget)
    with torch_threads(threads):
        result = plan_map(planner, read.maze, goal_cell, start=start_cell, budget=setting)
    if json_stdout or json_out is not None:
        emit_json(_payload(model, map_path, result), json_stdout, json_out)
    if not json_stdout:
        width = result.result.maze.shape[1]
        if 2 * width <= MAX_DRAWN_COLUMNS:
            console.print(render_map(result), end="")
        else:
            console.print(f"(a {width}-column map is too wide to draw here; see --plot)")
        console.print(f"{model} on {map_path}: {summary_line(result)}", highlight=False, soft_wrap=True)
    if plot is not None:
        draw_plan(
            output=plot,
            maze=result.result.maze,
            goal=result.result.goal,
            values=result.result.values,
            actions=result.result.actions,
            failed=result.failed,
            wrong=result.wrong,
            title=f"{model} on {map_path.name} ({result.budget})",
            path=result.path,
        )
        output_console(json_stdout).print(f"Drew the plan to {plot}.", highlight=False)
    if result.start is not None and result.optimal_length is not None and result.optimal_length < 0:
        raise BadInputError(
            f"the goal {result.goal} is unreachable from the start {result.start}: they lie in separate "
            f"regions of {map_path}; choose a start connected to the goal."
        )
