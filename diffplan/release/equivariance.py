"""Symmetry checks of grid-shaped planner outputs: what a rotation or flip of the map does to them,
and how far a planner is from commuting with it (DESIGN section 3)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from diffplan.envs.actions import FLIP_LR_ACTION_PERM, FLIP_UD_ACTION_PERM, ROT90_ACTION_PERM
from diffplan.planning import PlanSettings, plan_batch

# A float64 equivariance check solves deep-equilibrium planners far below the 1e-4 threshold it applies.
FIXED_POINT_TOL = 1e-10
FIXED_POINT_MAX_ITER = 500


def _power(perm, times: int) -> list[int]:
    result = list(range(4))
    for _ in range(times):
        result = [int(perm[a]) for a in result]
    return result


# name -> (spatial map of (..., H, W) tensors, action permutation new = perm[old], (dy, dx) matrix)
_TRANSFORMS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], list[int], list[list[int]]]] = {
    "rot90": (lambda t: torch.rot90(t, 1, dims=(-2, -1)), _power(ROT90_ACTION_PERM, 1), [[0, -1], [1, 0]]),
    "rot180": (lambda t: torch.rot90(t, 2, dims=(-2, -1)), _power(ROT90_ACTION_PERM, 2), [[-1, 0], [0, -1]]),
    "rot270": (lambda t: torch.rot90(t, 3, dims=(-2, -1)), _power(ROT90_ACTION_PERM, 3), [[0, 1], [-1, 0]]),
    "flip_lr": (lambda t: torch.flip(t, dims=(-1,)), list(FLIP_LR_ACTION_PERM), [[1, 0], [0, -1]]),
    "flip_ud": (lambda t: torch.flip(t, dims=(-2,)), list(FLIP_UD_ACTION_PERM), [[-1, 0], [0, 1]]),
}


def transform_logits(logits: torch.Tensor, name: str) -> torch.Tensor:
    """Where a symmetry sends grid-shaped policy outputs.

    Discrete logits (B, 4, H, W): cells move with the map and action a becomes ``perm[a]`` (rot90 CCW:
    a -> (a + 1) mod 4; flips swap W/E or N/S). Continuous vectors (B, 2, H, W) as (dy, dx) rotate with
    the map: rot90 CCW sends (dy, dx) to (-dx, dy).
    """
    spatial, perm, matrix = _TRANSFORMS[name]
    moved = spatial(logits)
    if logits.shape[1] == 4:
        inverse = [perm.index(c) for c in range(4)]
        return moved[:, inverse]
    return torch.einsum("ij,bjhw->bihw", torch.as_tensor(matrix, dtype=moved.dtype), moved)


def policy_of_logits(logits: torch.Tensor) -> torch.Tensor:
    """What symmetry errors compare: probabilities (B, 4, ...) or move vectors (B, 2, ...)."""
    # Discrete: action probabilities, so that masking sentinels (e.g. -1e4 logits) neither hide nor
    # inflate errors. Continuous: the (dy, dx) vectors themselves.
    return logits.softmax(dim=1) if logits.shape[1] == 4 else logits


def relative_error(error: torch.Tensor, reference: torch.Tensor) -> float:
    """max |error| / max |reference| (reference clamped away from 0)."""
    return float(error.abs().max() / reference.abs().max().clamp_min(1e-12))


def equivariance_errors(
    model,
    maze: torch.Tensor,
    goal: torch.Tensor,
    settings: PlanSettings,
    dihedral: bool,
    dtype: torch.dtype | None = None,
) -> dict[str, dict[str, float]]:
    """Relative errors ``max|f(g x) - g f(x)| / max|f(x)|`` of the policy and of the value map.

    The policy is compared as action probabilities (discrete) or move vectors (continuous). ``dtype``:
    run a copy of the model in this precision (float64 separates symmetry errors from float32
    rounding, which long value-iteration loops amplify; implicit planners are then also solved to
    ``FIXED_POINT_TOL``). Shapes: maze (B, H, W), goal (B, 1, H, W).
    Returns {transform: {"policy": err, "values": err}}.
    """
    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)
        if hasattr(model, "set_forward_solve"):  # implicit planners: solve to the precision checked
            model.set_forward_solve(tol=FIXED_POINT_TOL, max_iter=FIXED_POINT_MAX_ITER)
    base = plan_batch(model, maze, goal, settings)
    base_policy = policy_of_logits(base.logits)
    base_values = torch.nan_to_num(base.values, nan=0.0)
    errors = {}
    for name, (spatial, _, _) in _TRANSFORMS.items():
        if name.startswith("flip") and not dihedral:
            continue
        out = plan_batch(model, spatial(maze), spatial(goal), settings)
        expected_policy = policy_of_logits(transform_logits(base.logits, name))
        errors[name] = {
            "policy": relative_error(policy_of_logits(out.logits) - expected_policy, base_policy),
            "values": relative_error(
                torch.nan_to_num(out.values, nan=0.0) - spatial(base_values), base_values
            ),
        }
    return errors
