"""`diffplan evaluate`: any model on any maps, at a planning budget that can scale with the maps; it
measures, never judges targets, and never writes into the release."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import diffplan
from diffplan.envs import load_split
from diffplan.scoring import evaluate
from diffplan.scoring.budget import choose_budget, planning_budget
from diffplan_cli.app import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_rows_equal_a_direct_scoring_of_the_same_split_and_graphs_come_from_the_grid_file(release):
    before = _tree_digest(release.release_root)
    result = _run("evaluate", "VIN_tiny", "MP-VIN_tiny", "--data", "data/tiny_grid.npz", "--json",
                  "--manifest", release.manifest, "--output", "out")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [(r["model"], r["task"]) for r in rows] == [("VIN_tiny", "grid"), ("MP-VIN_tiny", "graph")]
    direct = evaluate(diffplan.load_model("VIN_tiny"), load_split("data/tiny_grid.npz", "test"))
    assert rows[0]["scores"]["accuracy"] == pytest.approx(direct["accuracy"], abs=1e-6)
    assert rows[0]["maps"] == direct["maps"] == 16 and rows[0]["budget"]["rule"] == "trained"
    assert (Path("out") / "results.json").is_file()
    assert _tree_digest(release.release_root) == before  # nothing written into the release


def test_bfs_budget_gives_each_map_one_more_step_than_its_longest_path(release):
    model = diffplan.load_model("VIN_tiny")
    split = load_split("data/tiny_grid.npz", "test")
    longest = int(split.dist[3].max())
    budget = choose_budget(model, "bfs", side=7, longest=longest)
    assert budget.steps == max(model.config["k"], longest + 1) and budget.rule == "bfs"
    alone = evaluate(model, split, limit=4, steps=torch.full((4,), budget.steps))
    with planning_budget(model, budget.steps):
        assert model.k == budget.steps
    assert model.k == model.config["k"]  # restored
    assert 0.0 <= alone["success"] <= 1.0
    result = _run("evaluate", "VIN_tiny", "--data", "data/tiny_grid.npz", "--k", "bfs", "--json",
                  "--output", "out")  # fmt: skip
    row = json.loads(result.stdout)["rows"][0]
    assert row["budget"]["rule"] == "bfs" and row["budget"]["steps"] >= model.config["k"]


def test_side_budget_is_the_symplan_rule():
    model = diffplan.create_model("VIN", k=5, l_h=2, l_q=2)
    model.config = {"k": 5}
    assert choose_budget(model, "side", side=49, longest=0).steps == math.ceil(math.sqrt(2) * 49)
    assert choose_budget(model, 80, side=49, longest=0).steps == 80
    assert choose_budget(model, "side", side=49, longest=0, knob="max_iter").rule == "trained"


def _neural_astar_file(path: Path, size: int = 8, count: int = 3) -> None:
    """The planning-datasets layout: map, goal, 8-direction policy, distance; no wall border."""
    rng = np.random.default_rng(0)
    arrays = []
    for _ in range(3):
        maps = (rng.random((count, size, size)) > 0.2).astype(np.float32)
        goal = np.zeros((count, 1, size, size), np.float32)
        for i in range(count):
            free = np.argwhere(maps[i] > 0)
            r, c = free[rng.integers(len(free))]
            goal[i, 0, r, c] = 1.0
        arrays += [
            maps,
            goal,
            np.zeros((count, 8, 1, size, size), np.float32),
            np.zeros((count, 1, size, size)),
        ]
    np.savez_compressed(path, *arrays)


def test_field_files_neural_astar_movingai_and_text_maze_are_scored(release, tmp_path):
    _neural_astar_file(tmp_path / "astar.npz")
    (tmp_path / "level.map").write_text(
        "type octile\nheight 5\nwidth 6\nmap\n......\n.@@@..\n...@..\n.@....\n......\n"
    )
    (tmp_path / "level.map.scen").write_text("version 1\n0\tlevel.map\t6\t5\t0\t0\t5\t4\t9\n")
    (tmp_path / "maze.txt").write_text("#######\n#.....#\n#.###.#\n#...#G#\n#######\n")
    files = [arg for name in ("astar.npz", "level.map", "maze.txt") for arg in ("--data", tmp_path / name)]
    result = _run("evaluate", "VIN_tiny", *files, "--budget", "bfs", "--json", "--output", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [(r["maze_size"], r["maps"]) for r in rows] == [("8x8", 3), ("5x6", 1), ("5x7", 1)]
    assert all(0.0 <= r["scores"]["success"] <= 1.0 for r in rows)


def test_results_never_go_into_the_release_and_min_success_gates(release):
    inside = _run("evaluate", "VIN_tiny", "--data", "data/tiny_grid.npz", "--output", "pretrained_models/x")
    assert inside.exit_code == 2 and "inside the release folder" in inside.output
    assert not Path("pretrained_models/x").exists()
    gated = _run("evaluate", "VIN_tiny", "--data", "data/tiny_grid.npz", "--min-success", "0.9999",
                 "--output", "out")  # fmt: skip
    assert gated.exit_code in (0, 1)
    row = json.loads((Path("out") / "results.json").read_text())["rows"][0]
    assert gated.exit_code == (1 if row["scores"]["success"] <= 0.9999 else 0)
    missing = _run("evaluate", "VIN_tiny", "--data", "nothing.npz")
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_scoring_runs_on_the_threads_asked_for_and_restores_torch_afterwards(release):
    before = torch.get_num_threads()
    result = _run("evaluate", "VIN_tiny", "--data", "data/tiny_grid.npz", "--json", "--limit", "2",
                  "--manifest", release.manifest, "--output", "out1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["threads"] == 1  # the default: a busy machine is not oversubscribed
    result = _run("evaluate", "VIN_tiny", "--data", "data/tiny_grid.npz", "--json", "--limit", "2",
                  "--threads", "2", "--manifest", release.manifest, "--output", "out2")  # fmt: skip
    assert result.exit_code == 0 and json.loads(result.stdout)["threads"] == 2
    assert torch.get_num_threads() == before
    result = _run("evaluate", "VIN_tiny", "--data", "data/tiny_grid.npz", "--threads", "0")
    assert result.exit_code == 2 and "--threads" in result.output


def test_a_map_without_a_wall_border_is_planned_as_if_walled_in():
    """Off the map is a wall: a map whose free cells touch its edge plans exactly as inside a wall ring
    (the planner's own zero padding of the values would look like a free neighbour of value 0)."""
    from diffplan.models import create_model
    from diffplan.scoring.planner import run_planner

    torch.manual_seed(0)
    model = create_model("VIN", k=8, l_h=4, l_q=3, wall_mask=True, gamma=0.99, value_kernel="convex",
                         state_reward=True).eval()  # fmt: skip
    maze = torch.ones(1, 5, 6)
    maze[0, 2, 1:4] = 0
    goal = torch.zeros(1, 1, 5, 6)
    goal[0, 0, 4, 5] = 1
    walled = torch.nn.functional.pad(maze, (1, 1, 1, 1))
    with torch.no_grad():
        open_map = run_planner(model, {"maze": maze, "goal": goal}, "grid")
        ring = model(walled, torch.nn.functional.pad(goal, (1, 1, 1, 1)))
        bordered = run_planner(
            model, {"maze": walled, "goal": torch.nn.functional.pad(goal, (1, 1, 1, 1))}, "grid"
        )
    assert open_map.logits.shape == (1, 4, 5, 6)
    assert torch.equal(open_map.logits, ring.logits[..., 1:-1, 1:-1])
    assert torch.equal(bordered.logits, ring.logits)  # a map with its own border takes the plain path
