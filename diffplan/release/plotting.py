"""Draw one maze with a planner's value map, policy arrows and failures (``diffplan inspect --plot``).

Uses matplotlib's object API with the Agg canvas: no pyplot, no global backend change, no display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from diffplan._atomic import atomic_path
from diffplan.envs.actions import ACTION_DELTAS

FIGURE_INCHES = 6.0
DPI = 100  # a 600 x 600 pixel image


def draw_plan(
    *,
    output: Path,
    maze: torch.Tensor,
    goal: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    failed: torch.Tensor,
    wrong: torch.Tensor,
    title: str,
    edges: list[list[int]] | None = None,
    path: list[tuple[int, int]] | None = None,
) -> Path:
    """Write a PNG of one planned maze, ``FIGURE_INCHES * DPI`` pixels square.

    Shapes: maze, goal, values, actions, failed, wrong: (H, W). ``actions`` in N, W, S, E order (-1: none);
    ``failed``: cells from which following the policy never reaches the goal (red crosses); ``wrong``:
    cells whose action is not optimal (orange rings). ``edges``: graph planners' (cell, cell) pairs, drawn
    between node positions (cell centres). ``path``: (row, col) cells the policy visits from a start,
    drawn as a line with the start marked.
    """
    maze_np = maze.numpy() > 0.5
    height, width = maze_np.shape
    figure = Figure(figsize=(FIGURE_INCHES, FIGURE_INCHES), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.05, 0.1, 0.74, 0.82))
    colour_axes = figure.add_axes((0.82, 0.1, 0.03, 0.82))
    axes.imshow(np.where(maze_np, 1.0, 0.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    value_map = np.ma.masked_where(~maze_np | ~np.isfinite(values.numpy()), values.numpy())
    rows, cols = np.nonzero(maze_np)
    if edges is None:
        image = axes.imshow(value_map, cmap="viridis", alpha=0.85, interpolation="nearest")
    else:
        lines = [
            [divmod(a, width)[::-1], divmod(b, width)[::-1]]
            for a, b in edges
            if maze_np.flat[a] and maze_np.flat[b]
        ]
        axes.add_collection(LineCollection(lines, colors="0.75", linewidths=0.8, zorder=1))
        image = axes.scatter(
            cols,
            rows,
            c=value_map[rows, cols],
            cmap="viridis",
            s=90,
            zorder=2,
            edgecolors="0.3",
            linewidths=0.4,
        )
    figure.colorbar(image, cax=colour_axes, label="learned value")

    goal_row, goal_col = divmod(int(goal.flatten().argmax()), width)
    acts = actions.numpy()
    arrow = (acts >= 0) & maze_np
    arrow[goal_row, goal_col] = False
    ay, ax = np.nonzero(arrow)
    deltas = ACTION_DELTAS[acts[ay, ax]]
    axes.quiver(
        ax,
        ay,
        deltas[:, 1],
        deltas[:, 0],
        angles="xy",
        scale_units="xy",
        scale=1.8,
        pivot="middle",
        color="white",
        edgecolor="black",
        linewidth=0.4,
        width=0.006,
        zorder=3,
    )
    wrong_y, wrong_x = np.nonzero(wrong.numpy())
    axes.scatter(
        wrong_x,
        wrong_y,
        s=140,
        facecolors="none",
        edgecolors="orange",
        linewidths=1.4,
        zorder=4,
        label="action not optimal",
    )
    fail_y, fail_x = np.nonzero(failed.numpy())
    axes.scatter(
        fail_x,
        fail_y,
        marker="x",
        s=70,
        color="red",
        linewidths=2.0,
        zorder=5,
        label="policy never reaches the goal",
    )
    if path:
        path_rows, path_cols = zip(*path, strict=True)
        axes.plot(path_cols, path_rows, color="deepskyblue", linewidth=2.2, zorder=5, label="path")
        axes.scatter(
            [path_cols[0]], [path_rows[0]], marker="o", s=120, color="deepskyblue", edgecolors="black",
            zorder=6, label="start",
        )  # fmt: skip
    axes.scatter(
        [goal_col], [goal_row], marker="*", s=320, color="gold", edgecolors="black", zorder=6, label="goal"
    )
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)
    if max(height, width) <= 40:  # a tick per cell stays readable up to about 40 cells
        axes.set_xticks(range(width))
        axes.set_yticks(range(height))
    axes.tick_params(labelsize=6)
    axes.set_title(title, fontsize=9)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.03), ncol=3, fontsize=7, frameon=False)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return output
