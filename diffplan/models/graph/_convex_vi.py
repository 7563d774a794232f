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

Equivariant form (Sym-MP-VIN): with ``frames`` A_g (G, 2, 2), one per group channel g of a regular
field, every channel runs its own copy of the step on v_g and r_g, seeing the geometry in its own frame:

    w_ijgc = softmax_j( MLP_c([A_g (pos_j - pos_i), p_i, p_j]) + u_c . A_g (pos_j - pos_i) + s_c [j = i] )
    q_igc  = r_ig + gamma * sum_j w_ijgc v_jg

With A_g = rho(g)^-1 (rho: the standard representation, g the element whose regular-representation
matrix sends channel 0 to channel g) and invariant node features p, transforming the map by t permutes
the channels exactly as the regular representation does, so q and v stay regular fields. Plain MP-VIN
is the case G = 1, A = identity.

Shapes: ``prepare(geo, p, pos)``: geo over V nodes (self-loops added here), p (V, node_dim), pos (V, 2)
-> weights (E', G, C). ``step(ctx, r, v)``: r (V, G), v (V, G) -> q (V, G, C); for G = 1 also
r (V, 1), v (V, 1) -> q (V, C).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import softmax

from diffplan.envs.actions import ACTION_DELTAS, NUM_ACTIONS
from diffplan.models._checks import check_discount
from diffplan.models.graph._geometry import EdgeGeometry, edge_geometry, edge_node_terms

# Initial logit of the preferred sender of each channel over the others: softmax weight ~ 1 - 4e-5.
SHIFT_LOGIT = 10.0


def shift_prior(channels: int) -> list[list[float]]:
    """Initial logit terms of each channel, rows [u_dy, u_dx, s]: channel c moves along action
    ``c mod 5`` (N, W, S, E as ``ACTION_DELTAS`` (dy, dx), then stay, the self-loop's s), times
    ``SHIFT_LOGIT``. Plain lists: models are also built on the meta device, where masked indexing fails."""
    rows = []
    for c in range(channels):
        slot = c % (NUM_ACTIONS + 1)
        if slot < NUM_ACTIONS:
            rows.append([SHIFT_LOGIT * float(d) for d in ACTION_DELTAS[slot]] + [0.0])
        else:
            rows.append([0.0, 0.0, SHIFT_LOGIT])
    return rows


def shift_prior_parameters(channels: int) -> tuple[nn.Parameter, nn.Parameter]:
    """:func:`shift_prior` as learnable logit terms: directions u (channels, 2) and stay weights s
    (channels,), added to each edge's logits as ``rel @ u.T + [self-loop] * s``."""
    prior = torch.tensor(shift_prior(channels), dtype=torch.float32)
    return nn.Parameter(prior[:, :2].contiguous()), nn.Parameter(prior[:, 2].contiguous())


class ConvexContext(NamedTuple):
    """What the steps reuse: the self-looped edges and each channel's sender weights."""

    src: Tensor  # (E',) senders, self-loops included
    dst: Tensor  # (E',) receivers
    weights: Tensor  # (E', G, C), summing to 1 over the incoming edges of each receiver, per (g, c)
    num_nodes: int


class ConvexValueStep(nn.Module):
    """The convex graph value step (module doc).

    Args:
        node_dim: size of the static node features p the sender weights read (invariant ones when
            ``frames`` is given).
        hidden: hidden width of the weight MLP.
        channels: Q channels C per group channel (v is their max).
        gamma: the discount in (0, 1): the step's contraction factor.
        frames: None (plain) or (G, 2, 2) the matrices A_g applied to ``pos_j - pos_i`` for group
            channel g (equivariant form; not part of the state dict, which keeps the plain keys).
    """

    def __init__(
        self, node_dim: int, hidden: int, channels: int, gamma: float, frames: Tensor | None = None
    ) -> None:
        super().__init__()
        self.gamma = check_discount(gamma)
        self.hid = nn.Linear(2 + 2 * node_dim, hidden)
        self.logit = nn.Linear(hidden, channels)
        nn.init.zeros_(self.logit.weight)
        nn.init.zeros_(self.logit.bias)
        self.direction, self.stay = shift_prior_parameters(channels)  # u_c, s_c
        self.register_buffer("frames", None if frames is None else frames.float(), persistent=False)

    def prepare(self, geo: EdgeGeometry, p: Tensor, pos: Tensor) -> ConvexContext:
        """Sender weights for the edges of ``geo`` plus one self-loop per node (``pos``: (V, 2))."""
        looped = edge_geometry(pos, geo.edge_index, self_loops=True)
        rel = looped.rel[:, None, :]  # (E', 1, 2)
        if self.frames is not None:
            rel = torch.einsum("gab,eb->ega", self.frames.to(rel), looped.rel)  # (E', G, 2)
        receiver, sender = edge_node_terms(looped, p, self.hid.weight)
        hidden = torch.relu(
            F.linear(rel, self.hid.weight[:, :2], self.hid.bias) + (receiver + sender)[:, None, :]
        )
        logits = self.logit(hidden) + rel @ self.direction.T  # (E', G, C)
        is_self = (looped.src == looped.dst).to(logits.dtype)
        logits = logits + is_self[:, None, None] * self.stay
        edges, groups, channels = logits.shape
        weights = softmax(logits.reshape(edges, -1), looped.dst, num_nodes=looped.num_nodes)
        return ConvexContext(looped.src, looped.dst, weights.view(edges, groups, channels), looped.num_nodes)

    def step(self, ctx: ConvexContext, r: Tensor, v: Tensor) -> Tensor:
        """q (V, G, C) from the rewards r (V, G) and values v (V, G); (V, C) when G = 1 and plain."""
        messages = ctx.weights * v.index_select(0, ctx.src)[:, :, None]
        backed_up = messages.new_zeros(ctx.num_nodes, *messages.shape[1:]).index_add_(0, ctx.dst, messages)
        q = r[:, :, None] + self.gamma * backed_up
        return q[:, 0] if self.frames is None else q


def regular_frames(gspace) -> Tensor:
    """(G, 2, 2) A_g = rho(g)^-1 for the group channels of escnn's regular representation of ``gspace``
    (channel g: the element whose regular matrix sends channel 0 to g), rho its standard representation."""
    from diffplan.models.graph._escnn import standard_repr

    std, regular = standard_repr(gspace), gspace.regular_repr
    frames = [None] * gspace.fibergroup.order()
    for element in gspace.fibergroup.elements:
        channel = int(abs(torch.as_tensor(regular(element))[:, 0]).argmax())
        frames[channel] = torch.as_tensor(std(element), dtype=torch.float32).T  # orthogonal: T = inverse
    return torch.stack(frames)
