"""`diffplan plan`: one user map, any model kind, drawn in the terminal and as a PNG; bad input is one
line and exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import diffplan
from diffplan.errors import BadInputError, ModelNotFoundError
from diffplan.planning import plan_map
from diffplan_cli.app import app

runner = CliRunner()
MAZE = "#########\n#S..#...#\n#.#.#.#.#\n#.#...#G#\n#########\n"


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def maze_file(tmp_path) -> Path:
    path = tmp_path / "maze.txt"
    path.write_text(MAZE)
    return path


@pytest.mark.parametrize("model", ["VIN_tiny", "MP-VIN_tiny", "MP-VIN_tiny_continuous"])
def test_every_kind_plans_on_a_text_maze_draws_it_and_writes_json_and_png(
    release, maze_file, tmp_path, model
):
    png, out = tmp_path / "plan.png", tmp_path / "plan.json"
    result = _run("plan", model, maze_file, "--plot", png, "--json-out", out)
    assert result.exit_code == 0, result.output
    assert "G" in result.stdout and "S" in result.stdout and "budget" in result.stdout
    payload = json.loads(out.read_text())
    assert payload["start"] == [1, 1] and payload["goal"] == [3, 7]
    assert payload["path"][0] == [1, 1] and np.asarray(payload["actions"]).shape == (5, 9)
    assert payload["optimal_length"] == 12 and payload["reached"] == (payload["path"][-1] == [3, 7])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_prints_only_json(release, maze_file):
    result = _run("plan", "VIN_tiny", maze_file, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["budget"]["rule"] == "bfs"


def test_the_budget_scales_with_the_map(release):
    model = diffplan.load_model("VIN_tiny")
    maze = np.ones((30, 30))
    plan = plan_map(model, maze, (0, 0), start=(29, 29))
    assert plan.budget.steps == max(model.config["k"], 58 + 1) and plan.optimal_length == 58
    assert model.k == model.config["k"]  # the release model is left as it was


def test_a_name_loads_from_the_release_root_it_is_given(release, tmp_path):
    """v1.1 lives in pretrained_models/v1.1/: ``release_root`` finds its models by name."""
    other = tmp_path / "v1.1"
    shutil.copytree(release.root / "pretrained_models", other)
    (release.root / "pretrained_models" / "grid" / "VIN_tiny.ckpt").unlink()
    with pytest.raises(ModelNotFoundError, match="under pretrained_models/"):
        diffplan.load_model("VIN_tiny")
    assert diffplan.load_model("VIN_tiny", release_root=other).release_info["name"] == "VIN_tiny"
    with pytest.raises(ModelNotFoundError, match="is not a folder"):
        diffplan.load_model("VIN_tiny", release_root=tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--goal", "0,0"], "the goal (0, 0) is a wall"),
        (["--goal", "3,40"], "lies outside the 5x9 map"),
        (["--start", "9,9"], "the start (9, 9) lies outside"),
        (["--goal", "x"], "must be ROW,COL"),
    ],
)
def test_bad_cells_are_one_line_and_exit_2(release, maze_file, args, message):
    result = _run("plan", "VIN_tiny", maze_file, *args)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unreadable_image_and_a_map_with_no_free_cell(release, tmp_path):
    image = tmp_path / "map.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = _run("plan", "VIN_tiny", image, "--goal", "1,1")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    walls = tmp_path / "walls.txt"
    walls.write_text("###\n###\n")
    result = _run("plan", "VIN_tiny", walls, "--goal", "1,1")
    assert result.exit_code == 2 and "free" in result.output
    with pytest.raises(BadInputError, match="no free cell"):
        plan_map(diffplan.load_model("VIN_tiny"), np.zeros((3, 3)), (1, 1))


def test_an_unreachable_goal_is_said_and_still_drawn(release, tmp_path):
    path = tmp_path / "split.txt"
    path.write_text("#######\n#S.#.G#\n#######\n")
    result = _run("plan", "VIN_tiny", path)
    assert result.exit_code == 2
    assert "unreachable from the start" in result.output and "██" in result.output
