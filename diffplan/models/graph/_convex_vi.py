"""The convex value step on graphs (release v1.1): the graph form of the grid planners' convex kernel.

For receiver i, senders j over its incoming edges and the node itself (a self-loop: staying put), and
Q channel c:

    w_ijc = softmax_j( MLP_c([pos_j - pos_i, p_i, p_j]) + u_c . (pos_j - pos_i) + s_c [j = i] )
    q_ic  = r_i + gamma * sum_j w_ijc v_j,        v_i = max_c q_ic

The weights depend only on the geometry and the static node features p (encoder output and flags), so
they are computed once per forward pass; a step is one gather, one weighted sum and a max. Because the
weights of each channel sum to one, a step is a gamma-contraction in the max norm whatever was learned:
values stay within ``max|r| / (1 - gamma)`` over any number of steps, and shifting v by a constant shifts
q by ``gamma`` times it. An MLP update over [r, v] has neither property; it is only ever trained on the
values of 15x15 mazes and drifts when run past its trained K on bigger ones (MP-VIN_graph v1.1 with the
MLP step: success 83% at K = longest BFS distance + 1 on 20 fresh 49x49 mazes, 90% at 1.5 times that).

The direction terms ``u_c`` start as 10 times the unit move of action ``c mod 5`` (N, W, S, E, stay;
the stay channels put 10 on the self-loop instead) and the MLP's output layer at zero, so at
initialisation each channel moves the value of one neighbour, as the grid planners' shift-initialised
kernels do: the goal's value reaches every cell within K steps from the first batch.

Shapes: ``prepare(geo, p)``: geo over V nodes (self-loops added here), p (V, node_dim) -> weights (E', C).
``step(ctx, r, v)``: r (V, 1), v (V, 1) -> q (V, C).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch_geometric.utils import softmax

from diffplan.envs.actions import ACTION_DELTAS, NUM_ACTIONS
from diffplan.errors import BadInputError
from diffplan.models.graph._geometry import EdgeGeometry, edge_geometry, edge_linear

# Initial logit of the preferred sender of each channel over the others: softmax weight ~ 1 - 4e-5.
_SHIFT_LOGIT = 10.0


class ConvexContext(NamedTuple):
    """What the steps reuse: the self-looped edges and each channel's sender weights."""

    src: Tensor  # (E',) senders, self-loops included
    dst: Tensor  # (E',) receivers
    weights: Tensor  # (E', C), summing to 1 over the incoming edges of each receiver, per channel
    num_nodes: int


class ConvexValueStep(nn.Module):
    """The convex graph value step (module doc).

    Args:
        node_dim: size of the static node features p the sender weights read.
        hidden: hidden width of the weight MLP.
        channels: Q channels C (v is their max).
        gamma: the discount in (0, 1): the step's contraction factor.
    """

    def __init__(self, node_dim: int, hidden: int, channels: int, gamma: float) -> None:
        super().__init__()
        if not 0.0 < float(gamma) < 1.0:
            raise BadInputError(f"gamma of the convex value step must lie strictly between 0 and 1, got {gamma!r}.")
        self.gamma = float(gamma)
        self.hid = nn.Linear(2 + 2 * node_dim, hidden)
        self.logit = nn.Linear(hidden, channels)
        nn.init.zeros_(self.logit.weight)
        nn.init.zeros_(self.logit.bias)
        # Channel c moves along action c mod 5 (N, W, S, E as ACTION_DELTAS (dy, dx), then stay). Built
        # from Python lists: models are also built on the meta device, where masked indexing fails.
        slots = [c % (NUM_ACTIONS + 1) for c in range(channels)]
        direction = [
            [_SHIFT_LOGIT * d for d in ACTION_DELTAS[slot]] if slot < NUM_ACTIONS else [0.0, 0.0] for slot in slots
        ]
        self.direction = nn.Parameter(torch.tensor(direction, dtype=torch.float32))  # u_c
        stay = [_SHIFT_LOGIT if slot == NUM_ACTIONS else 0.0 for slot in slots]
        self.stay = nn.Parameter(torch.tensor(stay, dtype=torch.float32))  # s_c

    def prepare(self, geo: EdgeGeometry, p: Tensor, pos: Tensor) -> ConvexContext:
        """Sender weights for the edges of ``geo`` plus one self-loop per node (``pos``: (V, 2))."""
        looped = edge_geometry(pos, geo.edge_index, self_loops=True)
        hidden = torch.relu(edge_linear(looped, p, self.hid.weight, self.hid.bias))
        logits = self.logit(hidden) + looped.rel @ self.direction.T
        is_self = (looped.src == looped.dst).to(logits.dtype)
        logits = logits + is_self[:, None] * self.stay
        weights = softmax(logits, looped.dst, num_nodes=looped.num_nodes)
        return ConvexContext(looped.src, looped.dst, weights, looped.num_nodes)

    def step(self, ctx: ConvexContext, r: Tensor, v: Tensor) -> Tensor:
        """q (V, C) from the rewards r (V, 1) and values v (V, 1)."""
        messages = ctx.weights * v.index_select(0, ctx.src)
        backed_up = messages.new_zeros(ctx.num_nodes, messages.shape[1]).index_add_(0, ctx.dst, messages)
        return r + self.gamma * backed_up
