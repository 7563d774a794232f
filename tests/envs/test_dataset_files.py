"""Data-set files: our layouts, the published layouts, recomputed labels, fingerprints, safe writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from diffplan.envs import (
    GraphSplit,
    GridSplit,
    dataset_info,
    file_fingerprint,
    generate_dataset,
    load_split,
    read_metadata,
    settings_differences,
)
from diffplan.envs.expert import expert_labels
from diffplan.envs.generator import generate_mazes, goal_maps, pair_keys
from diffplan.errors import BadInputError, DataFileError

SPLITS = ("train", "valid", "test")


def _published_arrays(n=(8, 3, 3), size=15, seed=0):
    """Nine float64 arrays in the published layout, with deliberately wrong policy labels (all N)."""
    mazes, goal_cell = generate_mazes(sum(n), size, rng=np.random.default_rng(seed))
    arrays, start = [], 0
    for count in n:
        maze = mazes[start : start + count].astype(np.float64)
        goal = goal_maps(goal_cell[start : start + count], size, size, np.float64)
        policy = np.zeros((count, 4, 1, size, size))
        policy[:, 0] = 1.0
        arrays += [maze, goal, policy]
        start += count
    return arrays


# --- our grid file ------------------------------------------------------------------------------


def test_grid_split_has_the_documented_types_and_recomputed_labels(grid_file):
    split = load_split(grid_file, "train")
    assert isinstance(split, GridSplit) and len(split) == 60
    assert split.maze.dtype == torch.float32 and split.maze.shape == (60, 15, 15)
    assert split.goal.dtype == torch.float32 and split.goal.shape == (60, 1, 15, 15)
    assert split.optimal.dtype == torch.bool and split.optimal.shape == (60, 4, 15, 15)
    assert split.dist.dtype == torch.int64 and split.dist.shape == (60, 15, 15)
    dist, optimal = expert_labels(split.maze.numpy(), split.goal.numpy())
    assert np.array_equal(split.optimal.numpy(), optimal) and np.array_equal(split.dist.numpy(), dist)


def test_no_maze_goal_pair_is_shared_between_splits(grid_file):
    keys = []
    for name in SPLITS:
        split = load_split(grid_file, name)
        goal_cell = split.goal.flatten(1).argmax(1).numpy()
        keys.append(pair_keys(split.maze.numpy().astype(np.uint8), goal_cell))
    everything = np.concatenate(keys)
    assert len(np.unique(everything)) == len(everything) == 100


def test_our_grid_file_reads_with_a_nine_array_positional_reader(grid_file):
    with np.load(grid_file) as data:
        arrays = [data[f"arr_{i}"] for i in range(9)]
    for (maze, goal, policy), n in zip([arrays[0:3], arrays[3:6], arrays[6:9]], (60, 20, 20), strict=True):
        assert (
            maze.shape == (n, 15, 15) and goal.shape == (n, 1, 15, 15) and policy.shape == (n, 4, 1, 15, 15)
        )
        assert maze.dtype == goal.dtype == policy.dtype == np.float64
        _, optimal = expert_labels(maze, goal)
        assert (policy[:, :, 0].sum(axis=1) == optimal.any(axis=1)).all()  # one-hot on every scored cell
        assert not (policy[:, :, 0].astype(bool) & ~optimal).any()  # and always an optimal action


def test_grid_metadata_and_fingerprint(grid_file):
    metadata = read_metadata(grid_file)
    assert metadata["format"] == "diffplan-grid-v1" and metadata["kind"] == "grid"
    assert metadata["splits"] == {"train": 60, "valid": 20, "test": 20} and metadata["seed"] == 5
    assert metadata["mechanism"] == "4abs-cc" and metadata["maze_size"] == 15
    assert file_fingerprint(grid_file) == metadata["fingerprint"]
    with np.load(grid_file) as data:
        assert json.loads(str(data["metadata"]))["fingerprint"] == metadata["fingerprint"]


def test_same_seed_gives_the_same_content_fingerprint(tmp_path, grid_file, sizes):
    again = generate_dataset("grid", tmp_path / "again.npz", seed=5, **sizes)
    assert again["fingerprint"] == file_fingerprint(grid_file)  # zip timestamps differ; content does not
    other = generate_dataset("grid", tmp_path / "other.npz", seed=6, **sizes)
    assert other["fingerprint"] != again["fingerprint"]


def test_dataset_info_describes_our_grid_file(grid_file):
    info = dataset_info(grid_file)
    assert info["layout"] == "ours" and info["kind"] == "grid" and info["maze_size"] == 15
    assert info["fingerprint_ok"] is True
    assert info["splits"]["valid"]["mazes"] == 20
    stats = info["splits"]["train"]
    assert 0.4 < stats["free_fraction"]["mean"] < 0.8
    within = stats["reachable_within"]
    assert within["10"] <= within["20"] <= within["30"] <= within["45"] <= 1.0
    assert "optimal (every optimal action)" in info["labels"]


# --- published grid layouts ---------------------------------------------------------------------


def test_published_nine_array_file_loads_with_recomputed_labels(tmp_path):
    path = tmp_path / "m15_4abs-cc_10k.npz"
    arrays = _published_arrays()
    np.savez_compressed(path, *arrays)
    split = load_split(path, "valid")
    assert len(split) == 3
    _, optimal = expert_labels(arrays[3], arrays[4])
    assert np.array_equal(split.optimal.numpy(), optimal)  # not the file's "always N" labels
    info = dataset_info(path)
    assert info["layout"] == "published-9" and info["fingerprint_ok"] is None


def test_published_twelve_array_file_loads(tmp_path):
    path = tmp_path / "twelve.npz"
    arrays = _published_arrays()
    with_values = []
    for i in range(3):
        maze, goal, policy = arrays[3 * i : 3 * i + 3]
        with_values += [maze, goal, policy, np.zeros((len(maze), 1, 15, 15))]
    np.savez_compressed(path, *with_values)
    assert dataset_info(path)["layout"] == "published-12"
    assert torch.equal(load_split(path, "test").maze, torch.from_numpy(arrays[6].astype(np.float32)))


def test_unknown_layout_is_refused(tmp_path):
    path = tmp_path / "five.npz"
    np.savez_compressed(path, *_published_arrays()[:5])
    with pytest.raises(DataFileError, match="unknown npz layout"):
        load_split(path, "train")


def test_mismatched_shapes_are_refused(tmp_path):
    arrays = _published_arrays()
    arrays[1] = arrays[1][:-1]  # one train goal map short
    path = tmp_path / "mismatch.npz"
    np.savez_compressed(path, *arrays)
    with pytest.raises(DataFileError, match="train goal .* has shape"):
        load_split(path, "train")


def test_goal_maps_must_be_one_hot(tmp_path):
    arrays = _published_arrays()
    arrays[1][0] = 0.0
    path = tmp_path / "no_goal.npz"
    np.savez_compressed(path, *arrays)
    with pytest.raises(DataFileError, match="goal map 0 is not one-hot"):
        load_split(path, "train")


def test_missing_and_truncated_files_are_refused(tmp_path, grid_file):
    with pytest.raises(DataFileError, match="does not exist"):
        load_split(tmp_path / "nope.npz", "train")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(grid_file.read_bytes()[: grid_file.stat().st_size // 2])
    with pytest.raises(DataFileError, match="truncated or corrupted"):
        load_split(truncated, "train")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a data set at all")
    with pytest.raises(DataFileError, match="truncated or corrupted"):
        dataset_info(garbage)


def test_corrupted_member_is_refused(tmp_path, grid_file):
    data = bytearray(grid_file.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = bytes(64)  # inside a compressed member: bad CRC or bad stream
    path = tmp_path / "corrupted.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match="corrupted"):
        dataset_info(path)


# --- graph files --------------------------------------------------------------------------------


def test_graph_file_is_weights_only_and_self_describing(graph_file):
    content = torch.load(graph_file, weights_only=True)
    assert content["format"] == "diffplan-graph-v1"
    metadata = content["metadata"]
    for key in (
        "kind",
        "maze_size",
        "has_obstacle",
        "cont_action",
        "seed",
        "splits",
        "mechanism",
        "fingerprint",
    ):
        assert key in metadata
    assert content["lattice_edge_index"].shape == (2, 840)
    assert file_fingerprint(graph_file) == metadata["fingerprint"]


def test_graph_split_matches_the_grid_split_of_the_same_seed(graph_file, grid_file):
    graphs, grids = load_split(graph_file, "test"), load_split(grid_file, "test")
    assert isinstance(graphs, GraphSplit) and len(graphs) == 20 and graphs.has_obstacle
    assert torch.equal(graphs.maze, grids.maze) and torch.equal(graphs.goal, grids.goal)
    assert graphs.x.shape == (20 * 225, 4) and graphs.edge_index.shape == (2, 20 * 840)
    for i in (0, 19):
        graph = graphs.graph(i)
        assert isinstance(graph, Data)
        assert torch.equal(graph.optimal, grids.optimal[i].reshape(4, -1).T)
        assert torch.equal(graph.dist, grids.dist[i].ravel())


def test_graph_file_is_compact_enough_for_14000_mazes(graph_file):
    per_maze = graph_file.stat().st_size / 100
    assert per_maze * 14000 < 50e6


def test_continuous_and_free_cell_graph_files(tmp_path):
    cont = tmp_path / "cont.pth"
    generate_dataset("graph", cont, cont_action=True, train_size=5, valid_size=2, test_size=2)
    split = load_split(cont, "train")
    assert split.cont_action and split.graph(0).optimal_vectors.shape == (225, 4, 2)
    free = tmp_path / "free.pth"
    summary = generate_dataset("graph", free, has_obstacle=False, train_size=5, valid_size=2, test_size=2)
    split = load_split(free, "train")
    assert not split.has_obstacle and (split.x[:, 3] == 0).all()
    assert len({summary["fingerprint"], file_fingerprint(cont)}) == 2  # the flags are part of the content


def _published_graph(maze: np.ndarray, goal_yx: tuple[int, int], rng: np.random.Generator) -> Data:
    """A graph in the published style: nodes in a shuffled order, labels in cell order (misaligned)."""
    h, w = maze.shape
    order = rng.permutation(h * w)
    y, x = np.divmod(order, w)
    goal = (y == goal_yx[0]) & (x == goal_yx[1])
    features = np.stack([y, x, goal, 1 - maze[y, x]], axis=1)
    labels = np.zeros((h * w, 4))
    labels[:, 0] = 1
    x = torch.tensor(features, dtype=torch.float)
    return Data(x=x, labels=torch.tensor(labels), edge_index=torch.zeros(2, 0, dtype=torch.long))


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_published_graph_pickle_needs_the_trust_flag_and_is_relabelled(tmp_path, zipped):
    mazes, goal_cell = generate_mazes(6, 15, rng=np.random.default_rng(4))
    rng = np.random.default_rng(0)
    graphs = [_published_graph(m, divmod(int(g), 15), rng) for m, g in zip(mazes, goal_cell, strict=True)]
    path = tmp_path / "published.pth"
    torch.save([graphs[:4], graphs[4:5], graphs[5:]], path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(DataFileError, match="--trust-pickle"):
        load_split(path, "train")
    split = load_split(path, "train", trust_pickle=True)
    assert torch.equal(split.maze, torch.from_numpy(mazes[:4].astype(np.float32)))
    _, optimal = expert_labels(mazes[:4], goal_maps(goal_cell[:4], 15, 15))
    assert torch.equal(split.graph(2).optimal, torch.from_numpy(optimal[2].reshape(4, -1).T))
    assert dataset_info(path, trust_pickle=True)["layout"] == "published-graph-pickle"


# --- writing safely -----------------------------------------------------------------------------


def test_existing_output_is_kept_without_force_and_replaced_with_it(tmp_path, grid_file, sizes):
    path = tmp_path / "mazes.npz"
    path.write_bytes(b"precious")
    with pytest.raises(DataFileError, match="already exists; pass --force"):
        generate_dataset("grid", path, **sizes)
    assert path.read_bytes() == b"precious"
    generate_dataset("grid", path, force=True, seed=5, **sizes)
    assert file_fingerprint(path) == file_fingerprint(grid_file)


def test_written_files_get_the_usual_permissions(grid_file):
    umask = os.umask(0)
    os.umask(umask)
    assert grid_file.stat().st_mode & 0o777 == 0o666 & ~umask  # not a private temporary file's 0600


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, sizes):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "folder.npz").mkdir()
    cases = {
        tmp_path / "missing" / "mazes.npz": "does not exist; create it",
        tmp_path / "a_file" / "mazes.npz": "is a file, not a folder",
        tmp_path / "folder.npz": "is a folder",
    }
    for output, message in cases.items():
        with pytest.raises(DataFileError, match=message):
            generate_dataset("grid", output, **sizes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder.npz"]


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, sizes):
    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", explode)
    with pytest.raises(DataFileError, match="No space left on device"):
        generate_dataset("grid", tmp_path / "mazes.npz", **sizes)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_size": -1}, "train size must be a number of mazes"),
        ({"test_size": -3}, "test size must be a number of mazes"),
        ({"maze_size": 4}, "maze size 4 cannot be carved"),
        ({"cont_action": True}, "graph data sets only"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_settings_are_refused(tmp_path, kwargs, message, sizes):
    with pytest.raises(BadInputError, match=message):
        generate_dataset("grid", tmp_path / "mazes.npz", **{**sizes, **kwargs})
    assert not (tmp_path / "mazes.npz").exists()


def test_settings_differences_name_what_changed(grid_file, sizes):
    same = {"kind": "grid", "maze_size": 15, "seed": 5, "has_obstacle": True, "cont_action": False, **sizes}
    assert settings_differences(grid_file, **same) == []
    assert settings_differences(grid_file, **{**same, "seed": 6}) == ["seed: the file has 5, wanted 6"]
