"""Training losses on the scored states, using the full optimal-action sets.

Why a set loss: about 44% of scored cells have two or more optimal actions (DESIGN section 3). A
one-hot target with ties broken at random teaches noise and caps the reachable cross-entropy; the
loss ``-log P(optimal set)`` = ``-log sum_{a in A*(s)} softmax(logits)_a`` is zero for any policy
that puts all its mass on optimal actions, and its argmax lies in the set as soon as the set holds
more than half the mass.

Continuous planners output a (dy, dx) vector v; its logits over the four unit moves are the dot
products v . d_a (the vector's length is the policy's confidence), so the same set loss applies and
its argmax is the neighbour snapping rule of DESIGN section 5.
"""

from __future__ import annotations

import torch

from diffplan.envs.actions import ACTION_DELTAS


def vector_logits(vectors: torch.Tensor) -> torch.Tensor:
    """Logits over N, W, S, E of (dy, dx) move vectors. Shapes: (..., 2) -> (..., 4)."""
    directions = torch.as_tensor(ACTION_DELTAS, dtype=vectors.dtype, device=vectors.device)
    return vectors @ directions.T


def optimal_set_nll(logits: torch.Tensor, optimal: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log P(optimal set)`` over the rows given.

    Shapes: logits (N, 4); optimal (N, 4) bool with at least one True per row -> scalar.
    """
    log_total = torch.logsumexp(logits, dim=-1)
    log_optimal = torch.logsumexp(logits.masked_fill(~optimal, float("-inf")), dim=-1)
    return (log_total - log_optimal).mean()
