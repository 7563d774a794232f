"""GCN-VIN-v2: value iteration whose layers are graph convolutions (``torch_geometric`` GCNConv).

    h    = ReLU(GCN_h(flags))                         encoder (symmetric normalisation, self-loops)
    r    = MLP_r([h, flags])                          reward, 1 channel
    w^d  = softmax_j MLP_w([pos_j - pos_i, h_i, h_j])  d = 1..relations, static edge weights
    q    = [GCN_q([r, v]; w^d)]_d,  v = max q         K shared value-iteration steps from v = 0
    out  = read-out over neighbours (``_readout.py``)

A GCNConv aggregates with one scalar weight per edge, so on its own it cannot tell directions apart and
value iteration degrades into diffusion. The published model worked around that by concatenating
absolute positions to every layer. Here geometry enters where GCNConv allows it, through edge weights:
the Q layer runs on ``relations`` weighted copies of the graph (one GCNConv call over a block-diagonal
graph), copy d with weights ``w^d`` learned from relative positions and the encoder's static features and
normalised per receiver (rows sum to 1: the random-walk normalisation, in place of GCN's symmetric one).
Each copy can thus look in one direction, as VIN's per-action kernels do. The weights are computed once
per forward pass; every node gets a self-loop with relative position (0, 0).

With ``value_step="convex"`` (release v1.1) each copy d carries one Q channel whose GCNConv weight on v
is fixed at ``gamma``: ``q_id = theta_d . sum_j w^d_ij r_j + b_d + gamma * sum_j w^d_ij v_j``, a
gamma-contraction whatever was learned (the convex step of ``_convex_vi.py``, GCN's weighted copies as
its sender weights). The copies' weight logits get the shift prior of ``_convex_vi.shift_prior`` (copy d
first moves the value of its neighbour in direction d mod 5, the fifth being the node itself) and the
MLP's output layer starts at zero; the read-out sees ``[q - v, r]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import softmax

from diffplan.errors import BadInputError
from diffplan.models._checks import check_choice, check_discount, check_k_range, steps_this_pass
from diffplan.models._output import PlanOutput
from diffplan.models._registry import constructor_config, register_model
from diffplan.models.graph._convex_vi import shift_prior_parameters
from diffplan.models.graph._geometry import check_graph_inputs, check_hyper_params, edge_geometry, edge_linear
from diffplan.models.graph._graph_vi import bound_value_weight, fix_value_weight, value_iteration
from diffplan.models.graph._readout import EdgeReadout
from diffplan.task import Task


@register_model("GCN-VIN-v2")
class GCNVINv2(nn.Module):
    """VIN on graphs with GCNConv layers and learned relative-position edge weights.

    Args:
        k: value-iteration steps.
        l_h: encoder output width.
        l_q: Q channels per node, split over ``relations`` weighted graph copies (must divide evenly).
        relations: weighted copies of the graph the Q layer aggregates over (4: one per move).
        readout_hidden: hidden width of the neighbour-scoring, edge-weight and reward MLPs.
        cont_action: output a (dy, dx) move vector instead of logits over N, W, S, E.
        value_bound: keep the Q layer's weights on v inside (-value_bound, value_bound), < 1, so values
            cannot diverge (``_graph_vi.bound_value_weight``); None: unbounded, as published.
        k_train: None or ``[low, high]``: while training, each forward pass draws its number of VI
            steps uniformly from low..high (release v1.1), as the grid planners do; ``k`` in eval mode.
        value_step: "mlp" (the published Q layer, learned weights on v) or "convex" (module doc; needs
            ``relations == l_q``, one Q channel per copy, and no ``value_bound``).
        gamma: the convex step's fixed weight on v, in (0, 1); unused by "mlp".

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
        relations: int = 4,
        readout_hidden: int = 32,
        cont_action: bool = False,
        value_bound: float | None = None,
        k_train: list[int] | None = None,
        value_step: str = "mlp",
        gamma: float = 0.99,
    ) -> None:
        config = constructor_config(locals())
        super().__init__()
        check_hyper_params(
            "GCN-VIN-v2", k=k, l_h=l_h, l_q=l_q, relations=relations, readout_hidden=readout_hidden
        )
        if l_q % relations:
            raise BadInputError(f"GCN-VIN-v2: l_q ({l_q}) must be a multiple of relations ({relations}).")
        self.config = config
        self.k_train = check_k_range(k_train)
        self.k, self.relations = k, relations
        self.h = GCNConv(2, l_h, add_self_loops=False)  # self-loops come with the edge geometry
        self.r = nn.Sequential(nn.Linear(l_h + 2, readout_hidden), nn.ReLU(), nn.Linear(readout_hidden, 1))
        self.w_hid = nn.Linear(2 + 2 * (l_h + 2), readout_hidden)
        self.w_out = nn.Linear(readout_hidden, relations)
        self.q = GCNConv(2, l_q // relations, normalize=False, add_self_loops=False)
        self.value_step = check_choice("value_step", value_step, ("mlp", "convex"))
        if self.value_step == "convex":
            if relations != l_q or value_bound is not None:
                raise BadInputError(
                    "GCN-VIN-v2: value_step convex takes one Q channel per graph copy and no value_bound; "
                    f"set relations equal to l_q ({l_q}) and drop value_bound."
                )
            fix_value_weight(self.q, column=1, value=check_discount(gamma))  # q's input is [r, v]
            nn.init.zeros_(self.w_out.weight)
            nn.init.zeros_(self.w_out.bias)
            self.direction, self.stay = shift_prior_parameters(relations)  # (relations, 2), (relations,)
            self.pi = EdgeReadout(node_dim=l_q + 1, hidden=readout_hidden, cont_action=cont_action)
            return
        self.pi = EdgeReadout(node_dim=l_q + 2, hidden=readout_hidden, cont_action=cont_action)
        if value_bound is not None:
            bound_value_weight(self.q, column=1, bound=value_bound)  # q's input is [r, v]

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> PlanOutput:
        check_graph_inputs("GCN-VIN-v2", x, edge_index)
        geo = edge_geometry(x[:, :2], edge_index, self_loops=True)
        flags = x[:, 2:]
        n, rels = x.shape[0], self.relations
        h = torch.relu(self.h(flags, geo.edge_index))
        node = torch.cat([h, flags], dim=-1)
        r = self.r(node)

        # Static edge weights, one set per graph copy, rows normalised per receiver.
        hidden = torch.relu(edge_linear(geo, node, self.w_hid.weight, self.w_hid.bias))
        logits = self.w_out(hidden)
        if self.value_step == "convex":
            is_self = (geo.src == geo.dst).to(logits.dtype)[:, None]
            logits = logits + geo.rel @ self.direction.T + is_self * self.stay
        weight = softmax(logits, geo.dst, num_nodes=n)  # (E, relations)
        offsets = (torch.arange(rels, device=x.device) * n).repeat_interleave(geo.src.numel())
        copies = torch.stack([geo.src.repeat(rels) + offsets, geo.dst.repeat(rels) + offsets])
        copy_weight = weight.T.reshape(-1)

        def step(v: Tensor) -> Tensor:
            q = self.q(torch.cat([r, v], dim=-1).repeat(rels, 1), copies, copy_weight)  # (rels * V, C)
            return q.view(rels, n, -1).transpose(0, 1).reshape(n, -1)

        q, v, residual = value_iteration(
            step,
            lambda q: q.amax(-1, keepdim=True),
            torch.zeros_like(r),
            steps_this_pass(self.k, self.k_train, self.training),
        )
        policy = [q - v, r] if self.value_step == "convex" else [q, v, r]
        logits = self.pi(geo, torch.cat(policy, dim=-1), v)
        return PlanOutput(logits=logits, values=v, stats={"vi_residual": residual})
