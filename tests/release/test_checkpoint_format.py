"""Checkpoint formats 2 and 3: complete-basis coefficients are canonical, steerable filters are stored
expanded; format-1 files still load the same filters and can be upgraded in place; old run checkpoints
of such models are refused on resume."""

from __future__ import annotations

import json

import pytest
import torch

from diffplan.errors import CheckpointError, TrainingError
from diffplan.models import create_model
from diffplan.models._symmetry import CompleteRegularFilter, legacy_complete_regular_basis
from diffplan.release.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    RUN_BASIS_KEY,
    load_model,
    read_release_checkpoint,
    save_release_checkpoint,
    sha256_file,
    upgrade_release_checkpoint,
)
from diffplan.release.metadata import REQUIRED_KEYS, REQUIRED_PERFORMANCE, REQUIRED_STATS, write_info
from diffplan.training.module import PlannerModule

CONFIG = {"k": 3, "l_h": 2, "l_q": 2, "complete_basis": True, "value_norm": True}


def symvin_with_filters():
    torch.manual_seed(3)
    model = create_model("SymVIN", **CONFIG).eval()
    with torch.no_grad():
        model.q_v.weights.normal_()
    return model, model.q_v()[0].detach().clone()


def write_format_1(path, model):
    """Save as format 1 did: the complete-basis coefficients against the SVD basis."""
    save_release_checkpoint(path, model, name="SymVIN_tiny", algorithm="SymVIN", model_config=CONFIG)
    record = torch.load(path, weights_only=True)
    legacy = legacy_complete_regular_basis("d4", 3).flatten(1).double()
    to_legacy = model.q_v.basis.flatten(1).double() @ legacy.T
    record["state_dict"]["q_v.weights"] = (record["state_dict"]["q_v.weights"].double() @ to_legacy).float()
    record["format_version"] = 1
    torch.save(record, path)


def test_a_format_1_checkpoint_loads_the_filters_it_was_trained_with(tmp_path):
    model, filters = symvin_with_filters()
    path = tmp_path / "SymVIN_tiny.ckpt"
    write_format_1(path, model)
    loaded = load_model(path)
    torch.testing.assert_close(loaded.q_v()[0], filters, rtol=1e-5, atol=1e-6)


def test_upgrading_rewrites_format_1_once_and_keeps_the_metadata_true(tmp_path):
    model, filters = symvin_with_filters()
    path = tmp_path / "SymVIN_tiny.ckpt"
    write_format_1(path, model)
    info_path = tmp_path / "SymVIN_tiny_info.json"
    info = {key: {} for key in REQUIRED_KEYS}
    info["performance"] = dict.fromkeys(REQUIRED_PERFORMANCE, 0.9)
    info["model_stats"] = {**dict.fromkeys(REQUIRED_STATS, 1), "checkpoint_sha256": sha256_file(path)}
    write_info(info_path, info)
    assert upgrade_release_checkpoint(path)
    assert read_release_checkpoint(path)["format_version"] == CHECKPOINT_FORMAT_VERSION
    stats = json.loads(info_path.read_text())["model_stats"]
    assert stats["checkpoint_sha256"] == sha256_file(path)
    assert stats["file_size_mb"] == path.stat().st_size / 1e6
    torch.testing.assert_close(load_model(path).q_v()[0], filters, rtol=1e-5, atol=1e-6)
    assert not upgrade_release_checkpoint(path)  # already current: untouched
    assert stats["checkpoint_sha256"] == sha256_file(path)


def test_a_run_checkpoint_from_before_the_canonical_basis_is_refused_on_resume():
    module = PlannerModule("SymVIN", CONFIG)
    assert any(isinstance(m, CompleteRegularFilter) for m in module.modules())
    saved = {}
    module.on_save_checkpoint(saved)
    module.on_load_checkpoint(saved)  # written by this version: fine
    with pytest.raises(TrainingError, match="--force"):
        module.on_load_checkpoint({})
    PlannerModule("VIN", {"k": 3, "l_h": 2, "l_q": 2}).on_load_checkpoint({})  # no complete basis: fine
    assert RUN_BASIS_KEY in saved


def test_format_3_filters_do_not_depend_on_this_hosts_escnn_basis(tmp_path):
    """escnn's steerable bases are computed numerically and differ between CPUs (an AVX-512 host and an
    AMD EPYC gave SymVIN_maze15 99.8% and 2.5% accuracy from the same coefficients). A format-3 file
    stores each steerable filter expanded, and loading solves for this host's coefficients: here the
    stored coefficients are replaced by noise, as if they referred to another host's basis."""
    model, _ = symvin_with_filters()
    maze = torch.ones(1, 7, 7)
    goal = torch.zeros(1, 1, 7, 7)
    goal[0, 0, 3, 3] = 1.0
    with torch.no_grad():
        expected = model(maze, goal)
    path = tmp_path / "SymVIN_tiny.ckpt"
    save_release_checkpoint(path, model, name="SymVIN_tiny", algorithm="SymVIN", model_config=CONFIG)
    record = torch.load(path, weights_only=True)
    assert record["format_version"] == 3 and set(record["expanded_filters"]) == {"h", "r", "q_r", "policy"}
    for key in ("h.weights", "r.weights", "q_r.weights", "policy.weights", "h.bias"):
        record["state_dict"][key] = torch.randn_like(record["state_dict"][key])
    torch.save(record, path)
    with torch.no_grad():
        reloaded = load_model(path)(maze, goal)
    assert torch.allclose(reloaded.logits, expected.logits, rtol=1e-4, atol=1e-5)
    assert torch.allclose(reloaded.values, expected.values, rtol=1e-4, atol=1e-5)


def test_a_format_3_file_with_a_damaged_expanded_filter_is_refused(tmp_path):
    model, _ = symvin_with_filters()
    path = tmp_path / "SymVIN_tiny.ckpt"
    save_release_checkpoint(path, model, name="SymVIN_tiny", algorithm="SymVIN", model_config=CONFIG)
    record = torch.load(path, weights_only=True)
    record["expanded_filters"]["h"]["weight"] = torch.randn_like(record["expanded_filters"]["h"]["weight"])
    torch.save(record, path)
    with pytest.raises(CheckpointError, match="not an equivariant filter"):
        load_model(path)
