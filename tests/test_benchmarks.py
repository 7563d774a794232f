"""The training benchmarks measure the manifest's own release configurations (smoke test, one step)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench_graph_models, bench_grid_models
from benchmarks._common import DEFAULT_MANIFEST, release_configs
from diffplan.release.manifest import load_manifest


def test_release_configs_are_the_manifest_entries():
    manifest = load_manifest(DEFAULT_MANIFEST)
    configs = {**release_configs(DEFAULT_MANIFEST, "grid"), **release_configs(DEFAULT_MANIFEST, "graph")}
    assert list(configs) == [entry.name for entry in manifest.models]
    for entry in manifest.models:
        assert configs[entry.name] == (entry.algorithm, entry.model_args())


def test_one_grid_and_one_graph_step_are_measured():
    (grid,) = bench_grid_models.run(steps=1, batch_size=2, threads=1, runs=["DE-VIN_maze15"])
    (graph,) = bench_graph_models.run(steps=1, batch_size=2, threads=1, runs=["GCN-VIN-v2_graph"])
    for result in (grid, graph):
        assert result["step_ms_median"] > 0 and result["parameters"] > 0
    assert grid["config"]["tol"] == 0.0  # DEQ planners are timed with all their solver iterations
    assert graph["config"]["relations"] == 4


def test_an_unknown_entry_stops_with_the_names_to_choose_from():
    with pytest.raises(SystemExit, match="choose from MP-VIN_graph"):
        bench_graph_models.run(steps=1, runs=["VIN_maze15"])


def test_the_ddp_benchmark_trains_release_entries_on_generated_maps(tmp_path):
    from benchmarks import bench_ddp

    path = bench_ddp._bench_manifest(DEFAULT_MANIFEST, ["VIN_maze15", "MP-VIN_graph"], 8, tmp_path)
    bench = load_manifest(path)
    release = load_manifest(DEFAULT_MANIFEST)
    for name in ("VIN_maze15", "MP-VIN_graph"):
        entry = bench.model(name)
        assert entry.model_args() == release.model(name).model_args() and entry.epochs == 1
        assert bench.dataset_for(entry).train_size == 8 and Path(entry.data).is_file()


def test_the_graph_benchmark_times_bf16_autocast_and_the_grid_one_refuses_it():
    (graph,) = bench_graph_models.run(steps=1, batch_size=2, threads=1, runs=["MP-VIN_graph"], bf16=True)
    assert graph["bf16"] and graph["step_ms_median"] > 0
    with pytest.raises(SystemExit):
        bench_grid_models.main(["--bf16", "--runs", "VIN_maze15"])


def test_the_graph_benchmark_compiles_the_convex_value_step_and_the_grid_one_refuses_it():
    v11 = Path("manifests/release_v1.1.yaml")
    (graph,) = bench_graph_models.run(
        v11, steps=1, batch_size=2, threads=1, runs=["MP-VIN_graph"], compile_step=True
    )
    assert graph["compiled"] and graph["step_ms_median"] > 0
    (plain,) = bench_graph_models.run(
        steps=1, batch_size=2, threads=1, runs=["MP-VIN_graph"], compile_step=True
    )
    assert not plain["compiled"]  # v1.0's MP-VIN_graph has the MLP value step: nothing to compile
    with pytest.raises(SystemExit):
        bench_grid_models.main(["--compile", "--runs", "VIN_maze15"])
