"""The dense lattice path of the message-passing planners: found only for batches of full 4-neighbour
lattices, and the same function as the general (gather/scatter) path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffplan.models.graph import _geometry
from diffplan.models.graph._geometry import edge_geometry
from tests.models.test_graph_planners import GOAL, MAZE, build, four_node_graph, lattice_graph


def batch_of_lattices(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` copies of the 5x5 test maze (goal moved per copy) stacked as one batch."""
    xs, edges = [], []
    for i in range(count):
        x, edge_index = lattice_graph(np.roll(MAZE, i, axis=1), GOAL)
        xs.append(x)
        edges.append(edge_index + i * x.shape[0])
    return torch.cat(xs), torch.cat(edges, dim=1)


def test_a_batch_of_lattices_is_found_whatever_the_edge_order():
    x, edge_index = batch_of_lattices(3)
    shuffled = edge_index[:, torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(0))]
    for edges in (edge_index, shuffled):
        found = edge_geometry(x[:, :2], edges).lattice
        assert found is not None and (found.batch, found.height, found.width) == (3, 5, 5)
        assert int(found.present.sum()) == edges.shape[1]


def test_anything_but_full_lattices_takes_the_general_path():
    x, edge_index = batch_of_lattices(2)
    missing = edge_index[:, 1:]
    crossing = edge_index.clone()
    crossing[0, 0] += 25  # same position, other graph of the batch
    self_loop = torch.cat([edge_index[:, 1:], torch.tensor([[0], [0]])], dim=1)
    reordered = x[torch.arange(50).roll(1)]  # nodes not in row-major order
    shifted = x.clone()
    shifted[:, :2] -= 0.5  # positions that are not cell indices
    cases = ((x, missing), (x, crossing), (x, self_loop), (reordered, edge_index), (shifted, edge_index))
    for nodes, edges in cases:
        assert edge_geometry(nodes[:, :2], edges).lattice is None
    free_cells, path_edges = four_node_graph()
    assert edge_geometry(free_cells[:, :2], path_edges).lattice is None


@pytest.mark.parametrize("name", ["MP-VIN", "Sym-MP-VIN"])
@pytest.mark.parametrize("cont_action", [False, True])
@pytest.mark.parametrize("neighbour_skip", [False, True])
def test_the_dense_path_computes_what_the_general_path_does(name, cont_action, neighbour_skip, monkeypatch):
    if name == "Sym-MP-VIN" and not neighbour_skip:
        pytest.skip("Sym-MP-VIN always has the skip")
    extra = {"neighbour_skip": True} if name == "MP-VIN" and neighbour_skip else {}
    model = build(name, cont_action, **extra).double()
    x, edge_index = batch_of_lattices(2)
    x = x.double()

    def run():
        model.zero_grad()
        out = model(x, edge_index)
        (out.logits.square().sum() + out.values.sum()).backward()
        return out, [p.grad.clone() for p in model.parameters()]

    assert edge_geometry(x[:, :2], edge_index).lattice is not None
    dense, dense_grads = run()
    monkeypatch.setattr(_geometry, "DENSE_LATTICE", False)
    assert edge_geometry(x[:, :2], edge_index).lattice is None
    general, general_grads = run()
    torch.testing.assert_close(dense.logits, general.logits)
    torch.testing.assert_close(dense.values, general.values)
    for a, b in zip(dense_grads, general_grads, strict=True):
        torch.testing.assert_close(a, b)
