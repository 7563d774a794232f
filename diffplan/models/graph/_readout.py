"""Policy read-out shared by the graph planners: score every neighbour, then turn scores into a policy.

For receiver i and neighbour j (edge j -> i, self-loops excluded) a small MLP gives a score

    s_ij = w2 . act(A [pos_j - pos_i, p_i, p_j] + b1) + b2 + gain * (val_j - val_i)

from the planner's per-node policy features p (its last Q, value and reward) and its scalar values val.
Moving to j is then the action whose direction ``ACTION_DELTAS[d]`` is closest to ``pos_j - pos_i``:

- discrete: ``logits[i, d] = s_ij`` for that neighbour (the largest score if several fall in one
  direction); a direction with no neighbour gets ``MISSING_LOGIT``, a large negative number rather than
  -inf so losses stay finite;
- continuous: the move vector ``scale * sum_j softmax_j(s_ij) * unit(pos_j - pos_i)``, a (dy, dx) vector
  pointing at the neighbours the planner prefers, with a learned global ``scale > 0`` so that the
  vector's length can carry confidence (training scores the dot products with the four unit moves).

Both outputs are equivariant by construction when the scores are invariant (``_escnn.EqEdgeReadout``):
a rotation or reflection of the map moves each neighbour to the rotated offset with an unchanged score,
so the logits permute as DESIGN section 3 says and the move vector rotates with the map. A subclass may
add per-node action logits (``node_logits``) to the discrete scores, as Sym-MP-VIN's equivariant head
does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import softmax

from diffplan.envs.actions import ACTION_DELTAS, NUM_ACTIONS
from diffplan.models.graph._geometry import EdgeGeometry, edge_linear

MISSING_LOGIT = -1.0e4  # logit of a direction with no neighbour: effectively impossible, still finite

_DIRECTIONS = torch.as_tensor(ACTION_DELTAS, dtype=torch.float32)  # (4, 2) (dy, dx)


class EdgeReadout(nn.Module):
    """Neighbour scoring head (module doc). Subclasses provide ``weights()``; this class is the plain one.

    Args:
        node_dim: size of the per-node policy features p.
        hidden: hidden width of the scoring MLP.
        cont_action: output a (dy, dx) move vector instead of 4 logits.

    Shapes:
        geo: edges of V nodes; p: (V, node_dim); values: (V, 1) -> (V, 4) logits or (V, 2) vectors.
    """

    def __init__(self, node_dim: int, hidden: int, cont_action: bool = False, *, build: bool = True) -> None:
        super().__init__()
        self.node_dim, self.cont_action = node_dim, cont_action
        if build:
            self.hid = nn.Linear(2 + 2 * node_dim, hidden)
            self.score = nn.Linear(hidden, 1)
        self.gain = nn.Parameter(torch.ones(()))
        if cont_action:
            self.log_scale = nn.Parameter(torch.zeros(()))

    def weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(W1 (hidden, 2 + 2 node_dim) over [rel | p_i | p_j], b1, w2 (1, hidden), b2)."""
        return self.hid.weight, self.hid.bias, self.score.weight, self.score.bias

    def node_logits(self, p: Tensor) -> Tensor | None:
        """Optional (V, 4) per-node action logits added to the neighbour scores (discrete only)."""
        return None

    def forward(self, geo: EdgeGeometry, p: Tensor, values: Tensor) -> Tensor:
        moves = geo.rel.abs().sum(-1) > 1e-6  # neighbours only, not self-loops
        if not bool(moves.all()):
            geo = EdgeGeometry(geo.src[moves], geo.dst[moves], geo.rel[moves], geo.num_nodes)
        w1, b1, w2, b2 = self.weights()
        scores = F.linear(torch.relu(edge_linear(geo, p, w1, b1)), w2, b2).squeeze(-1)
        scores = scores + self.gain * (values[geo.src, 0] - values[geo.dst, 0])
        node = None if self.cont_action else self.node_logits(p)
        if node is not None:
            scores = scores + node[geo.dst, action_slot(geo.rel)]
        if self.cont_action:
            return self.log_scale.exp() * neighbour_vector(scores, geo.dst, geo.rel, geo.num_nodes)
        return neighbour_logits(scores, geo.dst, geo.rel, geo.num_nodes)


def action_slot(rel: Tensor) -> Tensor:
    """(E,) index of the action whose direction is closest in angle to each (non-zero) ``rel`` (E, 2)."""
    return (rel @ _DIRECTIONS.to(rel).T).argmax(-1)


def neighbour_logits(scores: Tensor, dst: Tensor, rel: Tensor, num_nodes: int) -> Tensor:
    """(V, 4) logits: each neighbour's score placed at its direction's action; ``MISSING_LOGIT`` elsewhere."""
    flat = dst * NUM_ACTIONS + action_slot(rel)
    logits = scores.new_full((num_nodes * NUM_ACTIONS,), MISSING_LOGIT)
    logits = logits.scatter_reduce(0, flat, scores, reduce="amax", include_self=False)
    return logits.view(num_nodes, NUM_ACTIONS)


def neighbour_vector(scores: Tensor, dst: Tensor, rel: Tensor, num_nodes: int) -> Tensor:
    """(V, 2) move vectors ``sum_j softmax_j(s_ij) unit(rel_ij)``; zero for a node without neighbours."""
    weights = softmax(scores, dst, num_nodes=num_nodes)
    unit = rel / rel.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    out = scores.new_zeros(num_nodes, 2)
    return out.index_add(0, dst, weights.unsqueeze(-1) * unit)
