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
# Use the dense lattice path where the edges allow it (see ``LatticeLayout``); False forces the general
# gather/scatter path everywhere (for comparisons: both compute the same function).
DENSE_LATTICE = True


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
    lattice: LatticeLayout | None = None  # set when the edges are a batch of full lattices

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
            Without self-loops, a batch of full lattices also gets its dense ``LatticeLayout``.
    """
    num_nodes = pos.shape[0]
    if self_loops:
        edge_index, _ = remove_self_loops(edge_index)
        edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
    src, dst = edge_index[0], edge_index[1]
    rel = pos.index_select(0, src) - pos.index_select(0, dst)
    geo = EdgeGeometry(src=src, dst=dst, rel=rel, num_nodes=num_nodes)
    if self_loops or not DENSE_LATTICE:
        return geo
    return EdgeGeometry(src=src, dst=dst, rel=rel, num_nodes=num_nodes, lattice=lattice_layout(geo, pos))


def edge_linear(geo: EdgeGeometry, node: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``W [rel_ij, p_i, p_j] + b`` for every edge, with the node terms computed per node and gathered.

    Args:
        node: (V, n) per-node features p; weight: (out, 2 + 2 n) over [rel | p_i | p_j]; bias: (out,).
    Returns: (E, out).
    """
    n = node.shape[1]
    node_i = node @ weight[:, 2 : 2 + n].T
    node_j = node @ weight[:, 2 + n :].T
    out = F.linear(geo.rel, weight[:, :2], bias)
    return out + node_i.index_select(0, geo.dst) + node_j.index_select(0, geo.src)


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


# Sender offsets (dy, dx) relative to the receiver, one slot each, in action order N, W, S, E.
LATTICE_OFFSETS = ((-1, 0), (0, -1), (1, 0), (0, 1))


@dataclass(frozen=True)
class LatticeLayout:
    """A batch of B full H x W lattice graphs, as dense slots: receiver ``i`` hears its neighbour at
    ``LATTICE_OFFSETS[s]`` in slot ``s``.

    Graph planners stay general (any ``edge_index``), but every release graph with ``has_obstacle`` is the
    same 4-neighbour lattice. There, per-edge work can run on dense (slot, node) tensors: sums over senders
    become a sum over 4 slots instead of a scatter, and reading a neighbour's features is a shifted view
    of a (B, H, W, C) tensor instead of a gather.

    Shapes:
        edge_slot: (4, V) int64, the edge index of each (slot, receiver); 0 where there is no neighbour.
        present: (4, V, 1) float, 1 where the neighbour exists (inside the grid), else 0.
    """

    batch: int
    height: int
    width: int
    edge_slot: Tensor
    present: Tensor

    def from_edges(self, values: Tensor) -> Tensor:
        """(E, C) per-edge values -> (4, V, C), zero at missing neighbours."""
        return values[self.edge_slot] * self.present

    def neighbours(self, node: Tensor) -> Tensor:
        """(V, C) node features -> (4, V, C): slot s holds the features of each node's neighbour at
        ``LATTICE_OFFSETS[s]`` (zero outside the grid)."""
        b, h, w = self.batch, self.height, self.width
        grid = F.pad(node.view(b, h, w, -1), (0, 0, 1, 1, 1, 1))
        shifted = [grid[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in LATTICE_OFFSETS]
        return torch.stack(shifted).reshape(len(LATTICE_OFFSETS), b * h * w, -1)


def lattice_layout(geo: EdgeGeometry, pos: Tensor) -> LatticeLayout | None:
    """The dense layout of ``geo`` when it is a batch of full 4-neighbour lattices, else None.

    A lattice batch has its nodes in row-major order per graph (node ``b * H * W + row * W + col`` at
    ``(row, col)``) and exactly one edge from every in-grid neighbour to every node, nothing else.
    Checking costs O(V + E), once per forward pass.
    """
    num_nodes, num_edges = geo.num_nodes, geo.src.numel()
    if num_nodes == 0 or num_edges == 0:
        return None
    if bool((pos < 0).any()) or not torch.equal(pos, pos.round()):
        return None  # lattice positions are (row, col) cell indices
    height, width = int(pos[:, 0].max()) + 1, int(pos[:, 1].max()) + 1
    cells = height * width
    lattice_edges = 2 * (height * (width - 1) + width * (height - 1))
    if num_nodes % cells or num_edges != (num_nodes // cells) * lattice_edges:
        return None
    index = torch.arange(num_nodes, device=pos.device)
    row, col = torch.div(index % cells, width, rounding_mode="floor"), index % width
    if not (torch.equal(pos[:, 0], row.to(pos.dtype)) and torch.equal(pos[:, 1], col.to(pos.dtype))):
        return None
    offsets = torch.tensor(LATTICE_OFFSETS, dtype=geo.rel.dtype, device=geo.rel.device)
    match = (geo.rel[:, None, :] == offsets[None]).all(-1)  # (E, 4)
    if not bool(match.any(-1).all()):
        return None  # an edge that is not a unit move (or a self-loop)
    slot = match.float().argmax(-1)
    # The sender must be the neighbour in the receiver's own graph, not a node at the same position in
    # another graph of the batch.
    step = torch.tensor([dy * width + dx for dy, dx in LATTICE_OFFSETS], device=pos.device)
    if not torch.equal(geo.src, geo.dst + step[slot]):
        return None
    key = slot * num_nodes + geo.dst
    if torch.unique(key).numel() != num_edges:
        return None  # two edges into one slot
    edge_slot = torch.zeros(4 * num_nodes, dtype=torch.long, device=pos.device)
    edge_slot[key] = torch.arange(num_edges, device=pos.device)
    present = torch.zeros(4 * num_nodes, 1, dtype=geo.rel.dtype, device=pos.device)
    present[key] = 1
    return LatticeLayout(
        num_nodes // cells, height, width, edge_slot.view(4, num_nodes), present.view(4, num_nodes, 1)
    )
