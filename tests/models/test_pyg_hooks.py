"""GAT-VIN overrides one PyG hook, ``GATConv.edge_update``; these fail when a PyG release changes it, so an
upgrade of the pinned range (pyproject.toml) is checked rather than silently wrong."""

from __future__ import annotations

import inspect

import torch
from torch_geometric.nn import GATConv

from diffplan.models.graph.gat_vin import _StaticEdgeGATConv


def test_the_overridden_hook_has_pygs_signature():
    ours = list(inspect.signature(_StaticEdgeGATConv.edge_update).parameters)
    theirs = list(inspect.signature(GATConv.edge_update).parameters)
    assert ours == theirs


def test_precomputed_edge_logits_give_gatconvs_own_output():
    torch.manual_seed(0)
    layer = _StaticEdgeGATConv(3, 4, heads=2).eval()
    reference = GATConv(3, 4, heads=2, edge_dim=2, add_self_loops=False).eval()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(5, 3)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 1], [1, 2, 3, 4, 0, 0]])
    rel = torch.randn(edge_index.shape[1], 2)
    expected = reference(x, edge_index, edge_attr=rel)
    assert torch.allclose(layer(x, edge_index, edge_attr=layer.edge_logits(rel)), expected, atol=1e-6)
