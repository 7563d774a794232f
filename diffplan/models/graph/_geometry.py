"""Edge geometry shared by the graph planners: who sends to whom, and the relative position of the sender.

Graph planners see only relative positions ``pos_j - pos_i`` (sender j, receiver i), never absolute ones,
so their outputs do not depend on where a maze is placed. The geometry is computed once per forward pass
and reused by every value-iteration step and by the read-out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import add_self_loops, remove_self_loops

from diffplan.errors import BadInputError

NODE_FEATURES = 4  # row, col, is_goal, is_obstacle (DESIGN section 4)


@dataclass(frozen=True)
class EdgeGeometry:
    """Directed edges ``src -> dst`` (PyG's ``edge_index[0] -> edge_index[1]``) with their geometry.

    Shapes:
        src, dst: (E,) int64 node indices.
        rel: (E, 2) ``pos[src] - pos[dst]`` as (dy, dx) in cell units; (0, 0) on self-loops.
        num_nodes: V.
    """

    src: Tensor
    dst: Tensor
    rel: Tensor
    num_nodes: int

    @property
    def edge_index(self) -> Tensor:
        """(2, E) int64, PyG layout."""
        return torch.stack([self.src, self.dst])


def edge_geometry(pos: Tensor, edge_index: Tensor, *, self_loops: bool = False) -> EdgeGeometry:
    """The geometry of ``edge_index`` over node positions ``pos``.

    Args:
        pos: (V, 2) node positions (row, col) in cell units.
        edge_index: (2, E) int64 edges (global indices of a batch of graphs).
        self_loops: replace any self-loops of the input by exactly one per node (rel = (0, 0)).
    """
    num_nodes = pos.shape[0]
    if self_loops:
        edge_index, _ = remove_self_loops(edge_index)
        edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
    src, dst = edge_index[0], edge_index[1]
    rel = pos.index_select(0, src) - pos.index_select(0, dst)
    return EdgeGeometry(src=src, dst=dst, rel=rel, num_nodes=num_nodes)


def edge_linear(geo: EdgeGeometry, node: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``W [rel_ij, p_i, p_j] + b`` for every edge, with the node terms computed per node and gathered.

    Args:
        node: (V, n) per-node features p; weight: (out, 2 + 2 n) over [rel | p_i | p_j]; bias: (out,).
    Returns: (E, out).
    """
    receiver, sender = edge_node_terms(geo, node, weight)
    return F.linear(geo.rel, weight[:, :2], bias) + receiver + sender


def edge_node_terms(geo: EdgeGeometry, node: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """The node parts of ``W [rel_ij, p_i, p_j]``: ``(W_i p_i, W_j p_j)`` per edge, each (E, out),
    computed per node and gathered (``weight`` as for :func:`edge_linear`)."""
    n = node.shape[1]
    receiver = (node @ weight[:, 2 : 2 + n].T).index_select(0, geo.dst)
    sender = (node @ weight[:, 2 + n :].T).index_select(0, geo.src)
    return receiver, sender


def check_graph_inputs(model: str, x: Tensor, edge_index: Tensor) -> None:
    """Raise ``BadInputError`` unless x is (V, 4) floating and edge_index is (2, E) integer."""
    if x.dim() != 2 or x.shape[1] != NODE_FEATURES or not x.is_floating_point():
        raise BadInputError(
            f"{model}: node features must be a float tensor (V, 4) = [row, col, is_goal, is_obstacle], "
            f"got {tuple(x.shape)} {x.dtype}."
        )
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.is_floating_point():
        raise BadInputError(
            f"{model}: edge_index must be an integer tensor (2, E), got {tuple(edge_index.shape)} "
            f"{edge_index.dtype}."
        )


def check_hyper_params(model: str, **values: int) -> None:
    """Raise ``BadInputError`` naming the first constructor argument that is not a positive integer."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(f"{model}: {name} must be a positive integer, got {value!r}.")
