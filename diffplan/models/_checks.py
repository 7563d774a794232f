"""Argument checks the planners share, and the number of VI steps of a training pass (``k_train``)."""

from __future__ import annotations

import torch

from diffplan.errors import BadInputError


def check_int(name: str, value: int, *, minimum: int = 1, odd: bool = False) -> int:
    """``value`` if it is an int >= minimum (and odd if asked), else BadInputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (odd and value % 2 == 0):
        kind = "an odd integer" if odd else "an integer"
        raise BadInputError(f"{name} must be {kind} >= {minimum}, got {value!r}.")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else BadInputError naming ``name`` and the choices."""
    if value not in choices:
        raise BadInputError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
    return value


def check_k_range(k_train: list[int] | tuple[int, int] | None) -> tuple[int, int] | None:
    """``k_train`` as (low, high) with 1 <= low <= high, None kept; else BadInputError."""
    if k_train is None:
        return None
    if not isinstance(k_train, (list, tuple)) or len(k_train) != 2:
        raise BadInputError(f"k_train must be None or [low, high], got {k_train!r}.")
    low = check_int("k_train[0]", k_train[0])
    high = check_int("k_train[1]", k_train[1], minimum=low)
    return low, high


def draw_k(k_range: tuple[int, int]) -> int:
    """A number of VI steps drawn uniformly from ``k_range`` (inclusive) with torch's global generator."""
    low, high = k_range
    return int(torch.randint(low, high + 1, ()))


def steps_this_pass(k: int, k_train: tuple[int, int] | None, training: bool) -> int:
    """VI steps of one forward pass: drawn from ``k_train`` while training (when set), else ``k``."""
    return draw_k(k_train) if training and k_train is not None else k


def check_discount(gamma: float) -> float:
    """``gamma`` as a float strictly between 0 and 1 (a contraction factor), else BadInputError."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 < float(gamma) < 1.0:
        raise BadInputError(
            f"gamma of the convex value step must lie strictly between 0 and 1, got {gamma!r}."
        )
    return float(gamma)
