"""`diffplan data generate` and `diffplan data info`: results, and one clear line + exit 2 for bad input."""

from __future__ import annotations

import json
import os

os.environ.setdefault("WANDB_MODE", "offline")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch_geometric.data import Data  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from diffplan_cli.app import app  # noqa: E402

SMALL = ["--train-size", "12", "--valid-size", "4", "--test-size", "4"]
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _fails_with(result, message: str) -> None:
    """Exit code 2 and exactly one line on stderr: ``Error: ...`` naming the problem."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "grid.npz"
    result = _run("data", "generate", "--kind", "grid", *SMALL, "--seed", "3", "--output", path)
    assert result.exit_code == 0, result.output
    return path


def test_generate_writes_the_file_and_prints_a_summary(grid_file):
    assert grid_file.is_file()


def test_generate_graph_with_options(tmp_path):
    path = tmp_path / "cont.pth"
    result = _run("data", "generate", "--kind", "graph", "--cont-action", *SMALL, "--output", path)
    assert result.exit_code == 0, result.output
    assert "generated" in result.stdout and "12/4/4" in result.stdout
    assert torch.load(path, weights_only=True)["metadata"]["cont_action"] is True


def test_info_prints_tables_and_json(grid_file):
    result = _run("data", "info", grid_file)
    assert result.exit_code == 0, result.output
    assert "ours" in result.stdout and "matches the stored one" in result.stdout
    result = _run("data", "info", grid_file, "--json")
    info = json.loads(result.stdout)
    assert info["kind"] == "grid" and info["splits"]["train"]["mazes"] == 12 and info["fingerprint_ok"]


# --- bad input: exit 2, one line, files untouched ---------------------------------------------------


def test_info_missing_file(tmp_path):
    _fails_with(_run("data", "info", tmp_path / "nope.npz"), "does not exist")


def test_info_unknown_npz_layout(tmp_path):
    path = tmp_path / "two.npz"
    np.savez_compressed(path, np.zeros((2, 15, 15)), np.zeros((2, 1, 15, 15)))
    _fails_with(_run("data", "info", path), "unknown npz layout")


def test_info_truncated_file(tmp_path, grid_file):
    path = tmp_path / "truncated.npz"
    path.write_bytes(grid_file.read_bytes()[:1000])
    _fails_with(_run("data", "info", path), "truncated or corrupted")


def test_info_mismatched_shapes(tmp_path):
    maze, goal, policy = np.ones((3, 15, 15)), np.zeros((3, 1, 15, 15)), np.zeros((3, 4, 1, 15, 15))
    goal[:, 0, 1, 1] = 1
    path = tmp_path / "mismatch.npz"
    np.savez_compressed(path, maze, goal, policy, maze, goal, policy, maze, goal[:2], policy)
    _fails_with(_run("data", "info", path), "test goal (arr_7) has shape (2, 1, 15, 15)")


def test_info_published_pickle_needs_trust(tmp_path):
    graph = Data(
        x=torch.zeros(4, 4), labels=torch.zeros(4, 4), edge_index=torch.zeros(2, 0, dtype=torch.long)
    )
    path = tmp_path / "published.pth"
    torch.save([[graph], [graph], [graph]], path)
    _fails_with(_run("data", "info", path), "pass --trust-pickle")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-size", "-1"], "train size must be a number of mazes (0 or more), got -1"),
        (["--valid-size", "-5"], "valid size must be a number of mazes (0 or more), got -5"),
        (["--train-size", "0", "--valid-size", "0", "--test-size", "0"], "every split size is 0"),
        (["--maze-size", "3"], "maze size 3 cannot be carved"),
        (["--maze-size", "16"], "maze size 16 cannot be carved"),
    ],
)
def test_generate_bad_sizes(tmp_path, args, message):
    out = tmp_path / "mazes.npz"
    _fails_with(_run("data", "generate", "--kind", "grid", *SMALL, *args, "--output", out), message)
    assert not out.exists()


def test_generate_output_in_missing_folder(tmp_path):
    out = tmp_path / "missing" / "mazes.npz"
    _fails_with(_run("data", "generate", "--kind", "grid", *SMALL, "--output", out), "does not exist")


def test_generate_output_that_is_a_folder(tmp_path):
    out = tmp_path / "mazes.npz"
    out.mkdir()
    _fails_with(_run("data", "generate", "--kind", "grid", *SMALL, "--output", out), "is a folder")


def test_generate_output_whose_parent_is_a_file(tmp_path):
    (tmp_path / "blocker").write_text("x")
    out = tmp_path / "blocker" / "mazes.npz"
    _fails_with(
        _run("data", "generate", "--kind", "grid", *SMALL, "--output", out), "is a file, not a folder"
    )


def test_generate_existing_output_without_force(tmp_path):
    out = tmp_path / "mazes.npz"
    out.write_bytes(b"keep me")
    _fails_with(_run("data", "generate", "--kind", "grid", *SMALL, "--output", out), "pass --force")
    assert out.read_bytes() == b"keep me"
    assert _run("data", "generate", "--kind", "grid", *SMALL, "--output", out, "--force").exit_code == 0
    assert out.read_bytes() != b"keep me"


def test_generate_wrong_suffix_and_grid_only_flags(tmp_path):
    _fails_with(
        _run("data", "generate", "--kind", "grid", *SMALL, "--output", tmp_path / "x.pth"), "rename it"
    )
    args = ["data", "generate", "--kind", "grid", "--cont-action", *SMALL, "--output", tmp_path / "x.npz"]
    _fails_with(_run(*args), "graph data sets only")


def test_generate_options_without_kind_or_with_a_manifest(tmp_path):
    _fails_with(_run("data", "generate", "--seed", "3"), "--seed needs --kind")
    both = ["data", "generate", "--manifest", tmp_path / "m.yaml", "--kind", "grid"]
    _fails_with(_run(*both), "either --manifest or --kind")


# --- manifest ----------------------------------------------------------------------------------------


@pytest.fixture
def registered_planner(monkeypatch):
    """A stand-in grid planner so a manifest validates without the real registry."""
    from diffplan.models import _registry

    monkeypatch.setattr(_registry, "_ensure_loaded", lambda: None)
    entry = _registry.ModelEntry("DataTestPlanner", "grid", lambda k=10: None)
    monkeypatch.setitem(_registry._REGISTRY, "DataTestPlanner", entry)


def _manifest(folder, seed=0):
    path = folder / "manifest.yaml"
    path.write_text(
        f"""
datasets:
  maze15:
    path: {folder / "grid.npz"}
    kind: grid
    train_size: 10
    valid_size: 3
    test_size: 3
    seed: {seed}
  graph15:
    path: {folder / "graph.pth"}
    kind: graph
    train_size: 10
    valid_size: 3
    test_size: 3
    seed: {seed}
models:
  - name: tiny
    algorithm: DataTestPlanner
    task: GridWorld
    data: {folder / "grid.npz"}
    folder: grid
    target: {{metric: accuracy, minimum: 0.5}}
"""
    )
    return path


def test_manifest_generates_every_data_set_then_skips_them(tmp_path, registered_planner):
    manifest = _manifest(tmp_path)
    first = _run("data", "generate", "--manifest", manifest)
    assert first.exit_code == 0, first.output
    assert sum("generated" in line and "│" in line for line in first.stdout.splitlines()) == 2
    stamp = (tmp_path / "grid.npz").stat().st_mtime_ns
    second = _run("data", "generate", "--manifest", manifest)
    assert second.exit_code == 0, second.output
    assert sum("skipped" in line and "│" in line for line in second.stdout.splitlines()) == 2
    assert (tmp_path / "grid.npz").stat().st_mtime_ns == stamp


def test_manifest_with_changed_settings_needs_force(tmp_path, registered_planner):
    assert _run("data", "generate", "--manifest", _manifest(tmp_path)).exit_code == 0
    before = (tmp_path / "grid.npz").read_bytes()
    changed = _manifest(tmp_path, seed=1)
    _fails_with(_run("data", "generate", "--manifest", changed), "seed: the file has 0, wanted 1")
    assert (tmp_path / "grid.npz").read_bytes() == before
    assert _run("data", "generate", "--manifest", changed, "--force").exit_code == 0
    assert (tmp_path / "grid.npz").read_bytes() != before


def test_missing_manifest(tmp_path):
    _fails_with(_run("data", "generate", "--manifest", tmp_path / "none.yaml"), "does not exist")


# --- the field's map files, test-only sets, --json / --json-out, help ---------------------------------


def _neural_astar(path):
    rng = np.random.default_rng(0)
    arrays = []
    for n in (4, 2, 2):
        maps = (rng.random((n, 10, 10)) < 0.8).astype(np.float32)
        goal = np.zeros((n, 1, 10, 10), dtype=np.float32)
        goal[:, 0, 4, 4], maps[:, 4, 4] = 1.0, 1.0
        arrays += [maps, goal, np.zeros((n, 8, 1, 10, 10), np.float32), np.zeros((n, 1, 10, 10), np.float32)]
    np.savez_compressed(path, *arrays)


def _gppn(path):
    maze = np.ones((2, 7, 7))
    maze[:, 0], maze[:, -1], maze[:, :, 0], maze[:, :, -1] = 0, 0, 0, 0
    goal = np.zeros((2, 1, 7, 7))
    goal[:, 0, 3, 3] = 1
    np.savez_compressed(path, *[maze, goal, np.zeros((2, 8, 1, 7, 7))] * 3)


def _movingai(path):
    path.write_text("type octile\nheight 3\nwidth 5\nmap\n..@..\n.T...\nG....\n")
    path.with_name(path.name + ".scen").write_text(
        "version 1\n0\tm.map\t5\t3\t0\t0\t4\t0\t4\n0\tm.map\t5\t3\t0\t0\t0\t2\t2\n"
    )


def _image(path):
    from PIL import Image

    pixels = np.full((6, 6), 255, dtype=np.uint8)
    pixels[2, 1:5] = 0
    Image.fromarray(pixels).save(path)


MAP_FILES = {
    "m.map": (_movingai, "movingai-map", 2),
    "maze.txt": (lambda p: p.write_text("#####\n#.#G#\n#...#\n#####\n"), "text-maze", 1),
    "maps.npy": (lambda p: np.save(p, np.ones((3, 4, 5))), "npy", 3),
    "map.png": (_image, "image", 1),
    "planning.npz": (_neural_astar, "neural-astar-12", 2),
    "gppn.npz": (_gppn, "gppn-9", 2),
}


@pytest.mark.parametrize("name", MAP_FILES)
def test_info_describes_each_map_format(tmp_path, name):
    make, layout, test_maps = MAP_FILES[name]
    path = tmp_path / name
    make(path)
    result = _run("data", "info", path)
    assert result.exit_code == 0, result.output
    assert layout in result.stdout and "Wall border" in result.stdout and "Goals" in result.stdout
    info = json.loads(_run("data", "info", path, "--json").stdout)
    assert info["layout"] == layout and info["splits"]["test"]["mazes"] == test_maps


def test_info_goal_options_for_map_files(tmp_path):
    path = tmp_path / "maps.npy"
    np.save(path, np.ones((2, 4, 5)))
    info = json.loads(_run("data", "info", path, "--json", "--num-goals", "3", "--seed", "4").stdout)
    assert info["splits"]["test"]["mazes"] == 6 and "seed 4" in info["goals"]
    info = json.loads(_run("data", "info", path, "--json", "--goal", "0,4", "--goal", "3,0").stdout)
    assert info["splits"]["test"]["mazes"] == 4 and info["goals"] == "2 given"
    result = _run("data", "info", path, "--goal", "three")
    assert result.exit_code == 2 and "ROW,COL" in result.output


def test_info_map_file_errors_are_one_line(tmp_path):
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("####\n#.#\n####\n")
    _fails_with(_run("data", "info", ragged), "line 2 has 3 cells but line 1 has 4")
    huge = tmp_path / "huge.map"
    huge.write_text("type octile\nheight 1000000000\nwidth 5\nmap\n.....\n")
    _fails_with(_run("data", "info", huge), "over the limit of 4096x4096 cells per map")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    _fails_with(_run("data", "info", broken), "cannot be read as an image")
    _fails_with(_run("data", "info", ragged.with_suffix(".npz"), "--num-goals", "2"), "does not exist")


def test_info_json_goes_to_stdout_alone_and_json_out_to_a_file(tmp_path, grid_file):
    out = tmp_path / "info.json"
    result = _run("data", "info", grid_file, "--json", "--json-out", out)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(out.read_text())  # stdout holds the JSON and nothing else
    table = _run("data", "info", grid_file, "--json-out", tmp_path / "again.json")
    assert "Layout" in table.stdout and json.loads((tmp_path / "again.json").read_text())["kind"] == "grid"


def test_json_out_is_checked_before_the_work(tmp_path):
    out = tmp_path / "missing" / "summary.json"
    data = tmp_path / "mazes.npz"
    args = ["data", "generate", "--kind", "grid", *SMALL, "--output", data, "--json-out", out]
    _fails_with(_run(*args), "does not exist")
    assert not data.exists()


@pytest.mark.parametrize("kind", ["grid", "graph"])
def test_generate_a_test_only_set_with_json(tmp_path, kind):
    out = tmp_path / f"test_only.{'npz' if kind == 'grid' else 'pth'}"
    args = ["data", "generate", "--kind", kind, "--maze-size", "21", "--train-size", "0", "--valid-size", "0"]
    result = _run(*args, "--test-size", "9", "--output", out, "--json", "--json-out", tmp_path / "g.json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)["datasets"]
    assert entry["splits"] == {"train": 0, "valid": 0, "test": 9} and entry["status"] == "generated"
    assert json.loads((tmp_path / "g.json").read_text())["datasets"][0]["fingerprint"] == entry["fingerprint"]
    info = json.loads(_run("data", "info", out, "--json").stdout)
    assert info["splits"]["train"]["mazes"] == 0 and info["splits"]["test"]["shape"] == [9, 21, 21]
    train_row = next(line for line in _run("data", "info", out).stdout.splitlines() if "train" in line)
    assert " 0 " in train_row and " - " in train_row  # an empty split: no statistics


@pytest.mark.parametrize("command", [["data"], ["data", "info"], ["data", "generate"]])
def test_help_shows_no_bool_metavar(command):
    result = _run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--help" in result.stdout and "<bool>" not in result.stdout
