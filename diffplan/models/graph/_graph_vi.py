"""Value iteration as message passing: the relative-position message-passing layer and the VI loop.

The layer (MP-VIN's, and through ``_escnn.py`` Sym-MP-VIN's) computes, for receiver i and senders j:

    m_ij  = act(W1 [pos_j - pos_i, f_i, f_j] + b1)        message MLP, hidden width ``hidden``
    a_i   = sum_j m_ij                                     sum at the target
    out_i = U2 act(U1 [f_i, a_i] + c1) + c2                update MLP over the node and its aggregate

The message MLP's output layer is folded into ``U1``: a linear map commutes with the sum, so this is the
same function class at a fraction of the per-edge cost. Node features split into a *static* part (fixed
during value iteration, e.g. the reward r) and a *dynamic* part (the value v). ``prepare`` computes
everything that depends only on geometry and static features once per forward pass; ``step`` then costs
one gather, one add + activation and one scatter per edge, and a few small node-level products.

Subclasses only say where the weight matrices come from (``weights()``): plain ``nn.Linear`` here,
escnn's equivariant matrices (expanded once per forward pass) in ``_escnn.py``.

Without autograd (scoring, inference) a step's messages are made and summed ``EDGES_PER_CHUNK`` edges at
a time: the (E, hidden) message tensor of a large batch (210k edges at batch 250) no longer goes out to
memory and back between the product, the activation and the sum, which roughly halved Sym-MP-VIN's
inference time with bit-identical outputs (``benchmarks.bench_validate``). Training keeps PyG's
``propagate``, whose autograd needs the whole message tensor anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from diffplan.models.graph._geometry import EdgeGeometry

# Edges per chunk of a no-grad step: (4096, hidden) messages stay in cache for the widths used here.
EDGES_PER_CHUNK = 4096


class LayerWeights(NamedTuple):
    """Dense weights of one layer. Column layouts: ``msg`` [geo | f_i | f_j], ``upd`` [f_i | a_i], with
    f = [static | dynamic]."""

    msg_w: Tensor  # (hidden, geo + 2 * (static + dynamic))
    msg_b: Tensor | None  # (hidden,)
    upd_w: Tensor  # (hidden, static + dynamic + hidden)
    upd_b: Tensor | None  # (hidden,)
    out_w: Tensor  # (out, hidden)
    out_b: Tensor | None  # (out,)


class StepContext(NamedTuple):
    """What ``SplitMessagePassing.step`` reuses across value-iteration steps."""

    weights: LayerWeights
    edge_index: Tensor  # (2, E)
    msg_pre: Tensor  # (E, hidden): W1 [rel, f_i^static, f_j^static] + b1
    msg_dyn: Tensor  # (hidden, 2 * dynamic): the columns of W1 for [f_i^dynamic, f_j^dynamic]
    upd_pre: Tensor  # (V, hidden): U1 [f_i^static] + c1
    inv_degree: Tensor | None  # (V, 1) 1 / in-degree, for the neighbour-mean skip


class SplitMessagePassing(MessagePassing):
    """The relative-position message-passing layer with a static/dynamic feature split (see module doc).

    Args:
        geo_dim: size of the edge geometry input (2 for ``pos_j - pos_i``).
        static_dim: node features fixed across steps (e.g. reward), first in ``f``.
        dynamic_dim: node features that change every step (e.g. value), after the static ones.
        hidden: width of the message and update hidden layers.
        out_dim: output width.
        neighbour_skip: add ``sigmoid(beta) * mean_j f_j^dynamic`` to every block of ``dynamic_dim``
            output channels (beta learned, sigmoid(beta) = 0.9 at first). With the output layer
            initialised small this starts value iteration as a discounted diffusion from the goal, so
            the goal's signal reaches every cell within K steps from the first batch; a sum-of-ReLU
            message MLP at random initialisation instead contracts (or oscillates), and training can
            then sit for many epochs on a plateau where v carries no information.

    Shapes:
        ``prepare(geo, f_static)``: f_static (V, static_dim) -> context.
        ``step(ctx, f_dynamic)``: f_dynamic (V, dynamic_dim) or None -> (V, out_dim).
    """

    def __init__(
        self,
        geo_dim: int,
        static_dim: int,
        dynamic_dim: int,
        hidden: int,
        out_dim: int,
        neighbour_skip: bool = False,
    ) -> None:
        super().__init__(aggr="add")
        self.geo_dim, self.static_dim, self.dynamic_dim = geo_dim, static_dim, dynamic_dim
        self.hidden, self.out_dim = hidden, out_dim
        if neighbour_skip:
            if not dynamic_dim or out_dim % dynamic_dim:
                raise ValueError("neighbour_skip needs out_dim to be a multiple of dynamic_dim > 0")
            self.beta = nn.Parameter(torch.tensor(2.2))
        self.neighbour_skip = neighbour_skip

    @property
    def in_dim(self) -> int:
        return self.static_dim + self.dynamic_dim

    def weights(self) -> LayerWeights:
        raise NotImplementedError

    def prepare(
        self, geo: EdgeGeometry, f_static: Tensor, weights: LayerWeights | None = None
    ) -> StepContext:
        w = self.weights() if weights is None else weights
        g, s, d = self.geo_dim, self.static_dim, self.in_dim
        msg_pre = F.linear(geo.rel, w.msg_w[:, :g], w.msg_b)
        if s:
            # Static sender/receiver terms: node-level products first, then one gather each.
            node_i = f_static @ w.msg_w[:, g : g + s].T
            node_j = f_static @ w.msg_w[:, g + d : g + d + s].T
            msg_pre = msg_pre + node_i.index_select(0, geo.dst) + node_j.index_select(0, geo.src)
        upd_pre = F.linear(f_static, w.upd_w[:, :s], w.upd_b)
        msg_dyn = torch.cat([w.msg_w[:, g + s : g + d], w.msg_w[:, g + d + s :]], dim=1)
        inv_degree = None
        if self.neighbour_skip:
            ones = msg_pre.new_ones(geo.dst.shape[0], 1)
            degree = msg_pre.new_zeros(geo.num_nodes, 1).index_add_(0, geo.dst, ones)
            inv_degree = 1 / degree.clamp_min(1)
        return StepContext(w, geo.edge_index, msg_pre, msg_dyn, upd_pre, inv_degree)

    def step(self, ctx: StepContext, f_dynamic: Tensor | None = None) -> Tensor:
        w = ctx.weights
        s, d = self.static_dim, self.in_dim
        if f_dynamic is not None and self.dynamic_dim:
            tracked = (f_dynamic, ctx.msg_pre, ctx.msg_dyn)
            if torch.is_grad_enabled() and any(t.requires_grad for t in tracked):
                # The dynamic features are few (1 for MP-VIN, |G| for Sym-MP-VIN): gathering them per
                # edge and expanding there keeps the backward scatter narrow.
                agg = self.propagate(ctx.edge_index, pre=ctx.msg_pre, f=f_dynamic, w_dyn=ctx.msg_dyn)
            else:
                agg = _sum_messages_in_chunks(ctx, f_dynamic)
            upd_pre = torch.addmm(ctx.upd_pre, f_dynamic, w.upd_w[:, s:d].T)
        else:
            agg = self.propagate(ctx.edge_index, pre=ctx.msg_pre, f=None, w_dyn=None)
            upd_pre = ctx.upd_pre
        hidden = torch.relu(torch.addmm(upd_pre, agg, w.upd_w[:, d:].T))
        out = F.linear(hidden, w.out_w, w.out_b)
        if self.neighbour_skip and f_dynamic is not None:
            src, dst = ctx.edge_index
            mean = torch.zeros_like(f_dynamic).index_add_(0, dst, f_dynamic[src]) * ctx.inv_degree
            blocks = out.view(out.shape[0], -1, self.dynamic_dim) + torch.sigmoid(self.beta) * mean[:, None]
            out = blocks.flatten(1)
        return out

    def message(self, pre: Tensor, f_i: Tensor | None, f_j: Tensor | None, w_dyn: Tensor | None) -> Tensor:
        if f_i is None:
            return torch.relu(pre)
        return torch.relu(torch.addmm(pre, torch.cat([f_i, f_j], dim=-1), w_dyn.T))

    def forward(self, geo: EdgeGeometry, f_static: Tensor) -> Tensor:
        """One plain application with every input feature static (e.g. an encoder)."""
        return self.step(self.prepare(geo, f_static))


def _sum_messages_in_chunks(ctx: StepContext, f_dynamic: Tensor) -> Tensor:
    """``propagate``'s result, ``a_i = sum_j relu(pre_ij + W [f_i, f_j])``, a chunk of edges at a time.

    Same message function (:meth:`SplitMessagePassing.message`) and the same order of additions per
    receiver, without autograd. One chunk on GPUs, where kernel launches cost more than memory traffic.

    Shapes: f_dynamic (V, dynamic) -> (V, hidden).
    """
    src, dst = ctx.edge_index  # PyG's source_to_target flow: f_j = f[src], f_i = f[dst], summed at dst
    pre, weight = ctx.msg_pre, ctx.msg_dyn.T
    edges = pre.shape[0]
    size = edges if pre.is_cuda else EDGES_PER_CHUNK
    total = pre.new_zeros(f_dynamic.shape[0], pre.shape[1])
    for start in range(0, edges, size):
        rows = slice(start, min(start + size, edges))
        ends = torch.cat([f_dynamic.index_select(0, dst[rows]), f_dynamic.index_select(0, src[rows])], dim=1)
        total.index_add_(0, dst[rows], torch.addmm(pre[rows], ends, weight).relu_())
    return total


class RelMessagePassing(SplitMessagePassing):
    """``SplitMessagePassing`` with ordinary ``nn.Linear`` weights (MP-VIN)."""

    def __init__(
        self,
        geo_dim: int,
        static_dim: int,
        dynamic_dim: int,
        hidden: int,
        out_dim: int,
        neighbour_skip: bool = False,
    ) -> None:
        super().__init__(geo_dim, static_dim, dynamic_dim, hidden, out_dim, neighbour_skip)
        self.msg = nn.Linear(geo_dim + 2 * self.in_dim, hidden)
        self.upd = nn.Linear(self.in_dim + hidden, hidden)
        self.out = nn.Linear(hidden, out_dim)
        if neighbour_skip:  # start near the diffusion prior
            with torch.no_grad():
                self.out.weight.mul_(0.1)

    def weights(self) -> LayerWeights:
        return LayerWeights(
            self.msg.weight, self.msg.bias, self.upd.weight, self.upd.bias, self.out.weight, self.out.bias
        )


class _ValueColumnLinear(nn.Module):
    """A bias-free linear map over ``[r, v]`` whose weights on v (column ``column``) are replaced by
    ``value_column(raw column)``; the other columns are free. State-dict key: ``weight`` (the raw
    weights), as for the ``Linear`` it replaces."""

    def __init__(self, weight: Tensor, column: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.column = column

    def reset_parameters(self) -> None:  # called by the PyG layer that owns it
        nn.init.xavier_uniform_(self.weight)

    def value_column(self, raw: Tensor) -> Tensor:
        raise NotImplementedError

    def weight_in_use(self) -> Tensor:
        w, c = self.weight, self.column
        return torch.cat([w[:, :c], self.value_column(w[:, c : c + 1]), w[:, c + 1 :]], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_in_use())


class BoundedValueLinear(_ValueColumnLinear):
    """Weights on v squashed into (-bound, bound) by ``bound * tanh(w / bound)``."""

    def __init__(self, weight: Tensor, column: int, bound: float) -> None:
        super().__init__(weight, column)
        self.bound = bound

    def value_column(self, raw: Tensor) -> Tensor:
        return self.bound * torch.tanh(raw / self.bound)


class FixedValueLinear(_ValueColumnLinear):
    """Weights on v all equal to the constant ``value`` (the raw column is unused)."""

    def __init__(self, weight: Tensor, column: int, value: float) -> None:
        super().__init__(weight, column)
        self.value = value

    def value_column(self, raw: Tensor) -> Tensor:
        return torch.full_like(raw, self.value)


def fix_value_weight(layer: nn.Module, column: int, value: float) -> None:
    """Fix the weights that carry v into ``layer`` (a PyG conv whose ``lin`` maps [r, v]) at ``value``:
    with edge weights summing to one per receiver, a step is then a ``value``-contraction in the max
    norm (the convex value step of ``_convex_vi.py``), and no learned weight can amplify v."""
    layer.lin = FixedValueLinear(layer.lin.weight, column, value)


def bound_value_weight(layer: nn.Module, column: int, bound: float) -> None:
    """Keep the weights that carry v into ``layer`` (a PyG conv whose ``lin`` maps [r, v]) inside
    (-bound, bound), bound < 1.

    For a Q layer that averages its neighbours' ``W [r, v]`` (attention or normalised edge weights summing
    to 1 per receiver), this makes ``v -> max_c q_c`` grow by at most ``bound`` per step, so values stay
    bounded over any number of steps; unbounded, GAT-VIN and GCN-VIN-v2 release runs diverged after
    their best epoch (training loss 0.01 -> 1e3 within an epoch).
    """
    if not 0.0 < bound < 1.0:
        raise ValueError(f"value bound must lie in (0, 1), got {bound}")
    layer.lin = BoundedValueLinear(layer.lin.weight, column, bound)


def value_iteration(
    step: Callable[[Tensor], Tensor], reduce: Callable[[Tensor], Tensor], v0: Tensor, k: int
) -> tuple[Tensor, Tensor, float]:
    """Run ``k`` steps of ``q = step(v); v = reduce(q)`` from ``v0``.

    Returns the last q, the last v, and the relative change of v in the last step (a convergence
    diagnostic: near 0 when k steps reached a fixed point).
    """
    v, q, prev = v0, v0, v0
    for _ in range(k):
        prev = v
        q = step(v)
        v = reduce(q)
    with torch.no_grad():
        residual = float((v - prev).norm() / (v.norm() + 1e-6))
    return q, v, residual
