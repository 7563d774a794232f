"""Training on several CPU processes (DDP over gloo): `ddp`, `ddp_spawn` and a torchrun two-node run on
127.0.0.1, end to end through `diffplan train`. Each written figure must equal a single-process
`diffplan.scoring.evaluate` of the written checkpoint; each split has 7 maps (``--limit-maps 7``), so a
padded ``DistributedSampler`` would have scored a map twice on 2 processes."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from diffplan.envs import load_split
from diffplan.release.checkpoint import load_model, read_release_checkpoint
from diffplan.scoring import evaluate
from diffplan.training.sampling import TrainBatchSampler, epoch_permutation, score_shard
from diffplan_cli.app import app
from tests.training.conftest import grid_entry, tiny_manifest
from tests.training.test_train_graph import graph_entry

DIFFPLAN = Path(sys.executable).with_name("diffplan")  # the console script, as a user runs it
CPU_DDP = ("--accelerator", "cpu", "--devices", "2", "--threads", "1", "--limit-maps", "7")


def _env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "MASTER_ADDR": "127.0.0.1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args, timeout: int = 420) -> subprocess.CompletedProcess:
    """`diffplan ARGS` in a subprocess (Lightning's `ddp` re-runs the command line for rank 1)."""
    return subprocess.run(
        [str(DIFFPLAN), *map(str, args)], env=_env(), capture_output=True, text=True, timeout=timeout
    )


def assert_figures_match_a_single_process_evaluation(release: Path, folder: str, name: str, data: Path):
    """The _info.json figures are those of one process scoring the written checkpoint on every map."""
    info = json.loads((release / folder / f"{name}_info.json").read_text())
    planner = load_model(release / folder / f"{name}.ckpt")  # also checks its sha256 against the info
    cont_action = info["environment"]["cont_action"]
    performance = info["performance"]
    for split, prefix in (("test", "test"), ("valid", "validation")):
        scores = evaluate(planner, load_split(data, split), cont_action=cont_action, limit=7)
        assert scores["maps"] == 7
        for metric in ("accuracy", "success", "optimality"):
            assert performance[f"{prefix}_{metric}"] == pytest.approx(scores[metric], abs=1e-6), metric
    # The best epoch was chosen on the validation accuracy reduced over both processes: the same number.
    run = info["training_run"]
    assert run["best_validation_accuracy"] == pytest.approx(performance["validation_accuracy"], abs=1e-6)
    return info


@pytest.fixture(scope="module")
def ddp_grid_run(tmp_path_factory, tiny_data):
    """`diffplan train --strategy ddp --devices 2` of a tiny VIN, with W&B (offline)."""
    root = tmp_path_factory.mktemp("ddp_grid")
    manifest = tiny_manifest(root, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data, epochs=2)])
    result = run_cli(
        "train", "--manifest", manifest, "--strategy", "ddp", *CPU_DDP, "--wandb",
        "--release-root", root / "release", "--run-root", root / "runs",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


def test_ddp_on_two_cpu_processes_writes_the_figures_of_a_single_process_evaluation(ddp_grid_run, tiny_data):
    root, result = ddp_grid_run
    info = assert_figures_match_a_single_process_evaluation(
        root / "release", "grid", "VIN_tiny", tiny_data["grid"]
    )
    run = info["training_run"]
    assert run["world_size"] == 2 and run["per_device_batch_size"] == 4  # batch_size 8 is the global batch
    assert run["epochs_run"] == 2 and run["overrides"] == {"limit_maps": 7}
    assert result.stdout.count("Training results") == 1  # rank 1 shows nothing
    # One W&B run, one lock-free run folder, and nothing left by rank 1.
    assert len(list((root / "runs" / "VIN_tiny" / "wandb").glob("offline-run-*"))) == 1
    assert not list((root / "release").rglob("*.lock")) and not list((root / "release").rglob(".staging-*"))
    config = yaml.safe_load((root / "release" / "grid" / "configs" / "VIN_tiny_config.yaml").read_text())
    assert config["overrides"] == {"limit_maps": 7}


def test_a_torchrun_two_node_run_on_one_machine_is_the_same_run_and_node_1_writes_nothing(
    ddp_grid_run, tmp_path, tiny_data
):
    """Two `torchrun --nnodes 2 --nproc-per-node 1` (node ranks 0 and 1) meet on 127.0.0.1; with the same
    seed and world size the run is the `ddp` run (the data order is drawn from the seed; the weights agree
    to float rounding: `ddp`'s rank 0 started its thread pool before --threads applied)."""
    ddp_root, _ = ddp_grid_run
    manifest = ddp_root / "tiny.yaml"
    port = _free_port()
    nodes = []
    for node in (0, 1):
        roots = (
            "--release-root",
            tmp_path / f"node{node}" / "release",
            "--run-root",
            tmp_path / f"node{node}" / "runs",
        )
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
            str(DIFFPLAN), "train", "--manifest", str(manifest), "--num-nodes", "2", *CPU_DDP[:2],
            "--devices", "1", *CPU_DDP[4:], *map(str, roots),
        ]  # fmt: skip
        nodes.append(
            subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = [node.communicate(timeout=420)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(outputs)
    release = tmp_path / "node0" / "release"
    assert_figures_match_a_single_process_evaluation(release, "grid", "VIN_tiny", tiny_data["grid"])
    assert not (tmp_path / "node1").exists()  # rank 1 touched neither its release nor its run folder
    ours = read_release_checkpoint(release / "grid" / "VIN_tiny.ckpt")["state_dict"]
    ddp = read_release_checkpoint(ddp_root / "release" / "grid" / "VIN_tiny.ckpt")["state_dict"]
    assert all(torch.allclose(ours[key], ddp[key], atol=1e-6) for key in ddp)
    ours_info = json.loads((release / "grid" / "VIN_tiny_info.json").read_text())
    ddp_info = json.loads((ddp_root / "release" / "grid" / "VIN_tiny_info.json").read_text())
    assert ours_info["performance"]["test_accuracy"] == pytest.approx(
        ddp_info["performance"]["test_accuracy"]
    )


@pytest.mark.slow
def test_a_two_process_run_is_reproducible_from_its_seed(ddp_grid_run, tmp_path):
    ddp_root, _ = ddp_grid_run
    again = run_cli(
        "train", "--manifest", ddp_root / "tiny.yaml", "--strategy", "ddp", *CPU_DDP,
        "--release-root", tmp_path / "release", "--run-root", tmp_path / "runs",
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    ours = read_release_checkpoint(tmp_path / "release" / "grid" / "VIN_tiny.ckpt")["state_dict"]
    first = read_release_checkpoint(ddp_root / "release" / "grid" / "VIN_tiny.ckpt")["state_dict"]
    assert all(torch.equal(ours[key], first[key]) for key in first)


def test_ddp_spawn_trains_a_continuous_graph_model_and_a_resume_may_change_the_world_size(
    tmp_path, tiny_data
):
    """`ddp_spawn` on 2 processes for one of 2 epochs (--max-epochs 1), then `--resume` on 1 process: the
    run ends at epoch 2 with its whole history in metrics.csv and no override left in its config."""
    manifest = tiny_manifest(
        tmp_path, tiny_data, [{**graph_entry("MP_cont", "MP-VIN", tiny_data, continuous=True), "epochs": 2}]
    )
    roots = ("--release-root", tmp_path / "release", "--run-root", tmp_path / "runs")
    common = ("train", "--manifest", manifest, *CPU_DDP[:2], *CPU_DDP[4:], *roots)
    first = CliRunner().invoke(
        app, [*map(str, common), "--devices", "2", "--strategy", "ddp_spawn", "--max-epochs", "1"]
    )
    assert first.exit_code == 0, first.output
    assert "1/1" in first.output  # epoch reports come back from the spawned rank 0
    info = assert_figures_match_a_single_process_evaluation(
        tmp_path / "release", "continuous", "MP_cont", tiny_data["graph_cont"]
    )
    assert info["training_run"]["world_size"] == 2
    assert info["training_run"]["overrides"] == {"max_epochs": 1, "limit_maps": 7}

    resumed = CliRunner().invoke(app, [*map(str, common), "--devices", "1", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    info = json.loads((tmp_path / "release" / "continuous" / "MP_cont_info.json").read_text())
    assert info["training_run"]["epochs_run"] == 2 and info["training_run"]["world_size"] == 1
    assert info["training_run"]["overrides"] == {"limit_maps": 7}
    with open(tmp_path / "runs" / "MP_cont" / "logs" / "metrics.csv") as handle:
        epochs = {row["epoch"] for row in csv.DictReader(handle) if row.get("val/accuracy")}
    assert epochs == {"0", "1"}


@pytest.mark.slow
def test_a_killed_rank_leaves_a_resumable_run_and_no_half_written_file(tmp_path, tiny_data):
    manifest = tiny_manifest(tmp_path, tiny_data, [grid_entry("VIN_tiny", "VIN", tiny_data, epochs=40)])
    roots = ("--release-root", tmp_path / "release", "--run-root", tmp_path / "runs")
    run_dir = tmp_path / "runs" / "VIN_tiny"
    command = [DIFFPLAN, "train", "--manifest", manifest, "--strategy", "ddp", *CPU_DDP, *roots]
    main = subprocess.Popen(
        list(map(str, command)), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (run_dir / "last.ckpt").is_file() and time.monotonic() < deadline:
        time.sleep(0.5)
    children = Path(f"/proc/{main.pid}/task/{main.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGKILL)  # rank 1
    main.wait(timeout=120)  # Lightning stops rank 0 when a rank dies
    assert main.returncode != 0
    assert (
        not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "release" / "grid" / "VIN_tiny.ckpt").exists()
    )
    resumed = run_cli("train", "--manifest", manifest, "--strategy", "ddp", *CPU_DDP, *roots, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (
        json.loads((tmp_path / "release" / "grid" / "VIN_tiny_info.json").read_text())["training_run"][
            "epochs_run"
        ]
        == 40
    )


def test_every_score_map_is_taken_exactly_once_by_some_process():
    for size in (1, 7, 8, 13):
        for world in (1, 2, 3):
            if size < world:
                continue
            taken = [i for rank in range(world) for batch in score_shard(size, 4, rank=rank, world_size=world)
                     for i in batch]  # fmt: skip
            assert sorted(taken) == list(range(size))


def test_global_batches_do_not_depend_on_the_number_of_processes():
    """Each global batch of 8 is split over the processes; together they train the one-process batches."""
    one = TrainBatchSampler(21, 8, seed=3)
    two = [TrainBatchSampler(21, 8, seed=3, rank=rank, world_size=2) for rank in range(2)]
    for epoch in (0, 1, 4):
        for sampler in (one, *two):
            sampler.set_epoch(epoch)
        shares = list(zip(*two, strict=True))
        assert [sorted(a + b) for a, b in shares] == [sorted(batch) for batch in one]
        assert [len(a) for a, _ in shares] == [4, 4, 3]
    assert list(one) == list(one)  # an epoch's order is drawn from the seed and the epoch alone


def test_one_process_trains_in_the_order_a_shuffling_dataloader_gave():
    """Runs keep the batch order they had before DDP support (Lightning stops after the last full batch)."""
    for size, batch_size in ((24, 8), (21, 8)):
        loader = torch.utils.data.DataLoader(
            range(size), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(5)
        )
        batches = len(loader)
        for epoch in range(3):
            iterator = iter(loader)
            seen = [next(iterator) for _ in range(batches)]  # as Lightning: no call past the last batch
            assert torch.cat(seen).tolist() == epoch_permutation(size, 5, epoch, batch_size)
