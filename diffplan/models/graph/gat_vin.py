"""GAT-VIN: value iteration whose layers are graph-attention convolutions (``torch_geometric`` GATConv).

    h   = ELU(GAT_h(flags))                   encoder, flags = [is_goal, is_obstacle]
    r   = MLP_r([h, flags])                   reward, 1 channel
    q   = GAT_q([r, v]),  v = max_c q_c       K shared value-iteration steps from v = 0
    out = read-out over neighbours (``_readout.py``)

Geometry enters through GATConv's edge features (``edge_dim=2``): the attention logit of edge j -> i sees
``pos_j - pos_i``, so each Q head can attend to one direction (as VIN's per-action kernels do) and, since
the logits also see the sender's value, softly pick the best neighbour. The published model instead
concatenated absolute positions to every layer's input; here no layer sees absolute positions, so the
planner is translation invariant. Every node gets a self-loop with relative position (0, 0).

The Q layer's edge term of the attention logits depends only on geometry, so ``_StaticEdgeGATConv``
(a GATConv taking that term precomputed) computes it once per forward pass instead of once per step.

With ``value_step="convex"`` (release v1.1) the attention no longer sees v. One GATConv over the static
node features [h, flags], with edge features [pos_j - pos_i, is_self] and one head per Q channel, gives
once per forward pass each channel's attention alpha_ijc (summing to one over the senders j of i) and
its output b_ic; a step is then

    q_ic = r_i + b_ic + gamma * sum_j alpha_ijc v_j,      v_i = max_c q_ic

a gamma-contraction whatever was learned (the convex step of ``_convex_vi.py`` with GAT's attention as
the sender weights). The edge weights start as 10 times the unit move of action ``c mod 5`` (N, W, S, E,
stay on the self-loop) and the node terms of the logits at zero, so each head starts by moving one
neighbour's value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv
from torch_geometric.utils import softmax

from diffplan.errors import BadInputError
from diffplan.models._checks import check_choice, check_discount, check_k_range, steps_this_pass
from diffplan.models._output import PlanOutput
from diffplan.models._registry import constructor_config, register_model
from diffplan.models.graph._convex_vi import shift_prior
from diffplan.models.graph._geometry import check_graph_inputs, check_hyper_params, edge_geometry
from diffplan.models.graph._graph_vi import bound_value_weight, value_iteration
from diffplan.models.graph._readout import EdgeReadout
from diffplan.task import Task


class _StaticEdgeGATConv(GATConv):
    """GATConv (``edge_dim=2``, no self-loops added) whose ``edge_attr`` is the precomputed edge term of the
    attention logits, ``edge_logits(rel)`` of shape (E, heads): identical output, reused across calls."""

    def __init__(self, in_channels: int, out_channels: int, heads: int) -> None:
        super().__init__(in_channels, out_channels, heads=heads, edge_dim=2, add_self_loops=False)

    def edge_logits(self, edge_attr: Tensor) -> Tensor:
        edge = self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
        return (edge * self.att_edge).sum(dim=-1)

    def edge_update(
        self, alpha_j: Tensor, alpha_i: Tensor | None, edge_attr: Tensor | None, index: Tensor,
        ptr: Tensor | None, dim_size: int | None,
    ) -> Tensor:  # fmt: skip
        alpha = alpha_j if alpha_i is None else alpha_j + alpha_i
        if edge_attr is not None:
            alpha = alpha + edge_attr
        alpha = F.leaky_relu(alpha, self.negative_slope)
        alpha = softmax(alpha, index, ptr, dim_size)
        return F.dropout(alpha, p=self.dropout, training=self.training)


@register_model("GAT-VIN")
class GATVIN(nn.Module):
    """VIN on graphs with GATConv layers and relative-position edge features.

    Args:
        k: value-iteration steps.
        l_h: encoder output width.
        l_q: Q channels per node, split over ``heads`` attention heads (must divide evenly).
        heads: attention heads of the Q layer.
        readout_hidden: hidden width of the neighbour-scoring MLP (and of the reward MLP).
        cont_action: output a (dy, dx) move vector instead of logits over N, W, S, E.
        value_bound: keep the Q layer's weights on v inside (-value_bound, value_bound), < 1, so values
            cannot diverge (``_graph_vi.bound_value_weight``); None: unbounded, as published.
        k_train: None or ``[low, high]``: while training, each forward pass draws its number of VI
            steps uniformly from low..high (release v1.1), as the grid planners do; ``k`` in eval mode.
        value_step: "mlp" (the published Q layer: GATConv over [r, v]) or "convex" (module doc; needs
            ``heads == l_q``, one head per Q channel, and no ``value_bound``). The read-out then sees
            ``[q - v, r]``.
        gamma: the discount of the convex step, in (0, 1); unused by "mlp".

    Shapes:
        x: (V, 4) [row, col, is_goal, is_obstacle]; edge_index: (2, E) int64; batch: (V,) or None
        (unused). -> PlanOutput(logits (V, 4) or (V, 2), values (V, 1), stats {"vi_residual"}).
    """

    task = Task.GRAPH

    def __init__(
        self,
        k: int = 30,
        l_h: int = 16,
        l_q: int = 8,
        heads: int = 4,
        readout_hidden: int = 32,
        cont_action: bool = False,
        value_bound: float | None = None,
        k_train: list[int] | None = None,
        value_step: str = "mlp",
        gamma: float = 0.99,
    ) -> None:
        config = constructor_config(locals())
        super().__init__()
        check_hyper_params("GAT-VIN", k=k, l_h=l_h, l_q=l_q, heads=heads, readout_hidden=readout_hidden)
        if l_q % heads:
            raise BadInputError(f"GAT-VIN: l_q ({l_q}) must be a multiple of heads ({heads}).")
        self.config = config
        self.k_train = check_k_range(k_train)
        self.k = k
        self.h = GATConv(2, l_h, edge_dim=2, add_self_loops=False)
        self.r = nn.Sequential(nn.Linear(l_h + 2, readout_hidden), nn.ReLU(), nn.Linear(readout_hidden, 1))
        self.value_step = check_choice("value_step", value_step, ("mlp", "convex"))
        if self.value_step == "convex":
            if heads != l_q or value_bound is not None:
                raise BadInputError(
                    "GAT-VIN: value_step convex takes one attention head per Q channel and no value_bound; "
                    f"set heads equal to l_q ({l_q}) and drop value_bound."
                )
            self.gamma = check_discount(gamma)
            self.q = GATConv(l_h + 2, 1, heads=l_q, edge_dim=3, add_self_loops=False)
            _start_as_shifts(self.q)
            self.pi = EdgeReadout(node_dim=l_q + 1, hidden=readout_hidden, cont_action=cont_action)
            return
        self.q = _StaticEdgeGATConv(2, l_q // heads, heads=heads)
        self.pi = EdgeReadout(node_dim=l_q + 2, hidden=readout_hidden, cont_action=cont_action)
        if value_bound is not None:
            bound_value_weight(self.q, column=1, bound=value_bound)  # q's input is [r, v]

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> PlanOutput:
        check_graph_inputs("GAT-VIN", x, edge_index)
        geo = edge_geometry(x[:, :2], edge_index, self_loops=True)
        ei, rel = geo.edge_index, geo.rel
        flags = x[:, 2:]
        h = F.elu(self.h(flags, ei, rel))
        r = self.r(torch.cat([h, flags], dim=-1))
        if self.value_step == "convex":
            return self._convex_forward(geo, torch.cat([h, flags], dim=-1), r)
        edge_logits = self.q.edge_logits(rel)
        q, v, residual = value_iteration(
            lambda v: self.q(torch.cat([r, v], dim=-1), ei, edge_logits),
            lambda q: q.amax(-1, keepdim=True),
            torch.zeros_like(r),
            steps_this_pass(self.k, self.k_train, self.training),
        )
        logits = self.pi(geo, torch.cat([q, v, r], dim=-1), v)
        return PlanOutput(logits=logits, values=v, stats={"vi_residual": residual})

    def _convex_forward(self, geo, node: Tensor, r: Tensor) -> PlanOutput:
        is_self = (geo.src == geo.dst).to(geo.rel.dtype)[:, None]
        b, (edge_index, alpha) = self.q(
            node, geo.edge_index, torch.cat([geo.rel, is_self], dim=-1), return_attention_weights=True
        )  # b (V, C); alpha (E, C) over the edges of geo, in its order
        src, dst = edge_index
        static = r + b

        def step(v: Tensor) -> Tensor:
            backed_up = torch.zeros_like(static).index_add_(0, dst, alpha * v.index_select(0, src))
            return static + self.gamma * backed_up

        q, v, residual = value_iteration(
            step,
            lambda q: q.amax(-1, keepdim=True),
            torch.zeros_like(r),
            steps_this_pass(self.k, self.k_train, self.training),
        )
        logits = self.pi(geo, torch.cat([q - v, r], dim=-1), v)
        return PlanOutput(logits=logits, values=v, stats={"vi_residual": residual})


def _start_as_shifts(conv: GATConv) -> None:
    """Head c's attention logit starts as ``_convex_vi.shift_prior`` (10 times the unit move of action
    ``c mod 5``, or of the self-loop flag for stay) from the edge features [dy, dx, is_self], with the
    node terms at zero, so head c first moves the value of one neighbour."""
    with torch.no_grad():
        rows = torch.tensor(shift_prior(conv.heads), dtype=conv.lin_edge.weight.dtype)
        conv.lin_edge.weight.copy_(rows)  # (heads * 1 out channel, 3 edge features)
        conv.att_edge.fill_(1.0)
        conv.att_src.zero_()
        conv.att_dst.zero_()
