"""`diffplan train` on the graph planners: one epoch on tiny graph data, release files, reload, metrics."""

import json

import pytest
import torch
from typer.testing import CliRunner

from diffplan.envs import load_split
from diffplan.envs.expert import expert_labels
from diffplan.release.checkpoint import load_model
from diffplan.scoring.batching import make_batch
from diffplan.training.module import PlannerModule
from diffplan_cli.app import app
from tests.training.conftest import tiny_manifest

GRAPH_MODELS = {
    "MP-VIN": {"k": 4, "l_h": 4, "l_q": 4, "mp_h": 8, "mp_q": 8, "readout_hidden": 8},
    "Sym-MP-VIN": {"k": 3, "l_h": 2, "l_q": 2, "mp_h": 2, "mp_q": 2, "readout_hidden": 2},
    "GAT-VIN": {"k": 4, "l_h": 4, "l_q": 4, "heads": 2, "readout_hidden": 8},
    "GCN-VIN-v2": {"k": 4, "l_h": 4, "l_q": 4, "readout_hidden": 8},
}


def graph_entry(name: str, algorithm: str, data, *, continuous: bool) -> dict:
    entry = {
        "name": name,
        "algorithm": algorithm,
        "task": "GraphWorld",
        "has_obstacle": True,
        "data": str(data["graph_cont" if continuous else "graph"]),
        "cont_action": continuous,
        "folder": "continuous" if continuous else "graph",
        "target": {"minimum": 0.0},
        "model": GRAPH_MODELS[algorithm],
    }
    if algorithm == "Sym-MP-VIN":
        entry.update(group="d4", no_equiv_policy=continuous)
    return entry


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("algorithm", sorted(GRAPH_MODELS))
def test_graph_models_train_write_release_files_and_reload(tmp_path, tiny_data, algorithm, continuous):
    name = f"{algorithm}_{'cont' if continuous else 'disc'}_tiny"
    manifest = tiny_manifest(
        tmp_path, tiny_data, [graph_entry(name, algorithm, tiny_data, continuous=continuous)]
    )
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--manifest",
            str(manifest),
            "--run-root",
            str(tmp_path / "runs"),
            "--release-root",
            str(tmp_path / "release"),
        ],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "release" / ("continuous" if continuous else "graph")
    info = json.loads((folder / f"{name}_info.json").read_text())
    performance = info["performance"]
    assert 0.0 <= performance["test_accuracy"] <= 1.0
    assert ("test_angle_error_degrees" in performance) == continuous
    if continuous:
        assert 0.0 <= performance["test_angle_error_degrees"] <= 180.0

    released = load_model(folder / f"{name}.ckpt")
    trained = PlannerModule.load_from_checkpoint(
        tmp_path / "runs" / name / "best.ckpt", map_location="cpu"
    ).model
    trained.eval()
    batch = make_batch(load_split(tiny_data["graph_cont" if continuous else "graph"], "test"), range(3))
    with torch.no_grad():
        expected = trained(batch["x"], batch["edge_index"], batch["batch"]).logits
        reloaded = released(batch["x"], batch["edge_index"], batch["batch"]).logits
    assert reloaded.shape == (batch["x"].shape[0], 2 if continuous else 4)
    assert torch.allclose(reloaded, expected, atol=1e-5)


def test_graph_batches_keep_node_labels_aligned_with_their_cells(tiny_data):
    split = load_split(tiny_data["graph"], "train")
    batch = make_batch(split, [5, 2, 7])
    dist, optimal = expert_labels(batch["maze"].numpy(), batch["goal"].numpy())
    # Node i sits at cell node_cell[i] of its own maze, and its label is the expert's label there.
    for position in range(3):
        nodes = batch["batch"] == position
        cells = batch["node_cell"][nodes]
        rows, cols = cells // 7, cells % 7
        assert torch.equal(batch["x"][nodes, 0].long(), rows) and torch.equal(
            batch["x"][nodes, 1].long(), cols
        )
        expected = torch.as_tensor(optimal[position]).permute(1, 2, 0)[rows, cols]
        assert torch.equal(batch["node_optimal"][nodes], expected)
        assert torch.equal(batch["node_dist"][nodes], torch.as_tensor(dist[position])[rows, cols])
    # Edges never cross graphs.
    source, target = batch["edge_index"]
    assert torch.equal(batch["batch"][source], batch["batch"][target])
