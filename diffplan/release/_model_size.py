"""A planner's size from its config, found before its weights are allocated (DESIGN section 8).

``count_weights(algorithm, config)`` runs the planner's own argument checks and counts its weights (the
entries of its state dict: parameters and persistent buffers) without building it at that size;
``planner_size`` also refuses more than ``MAX_WEIGHTS`` (the release planners hold 1,600 to 16,000):

- Planners built from plain torch layers are built on the ``meta`` device: shapes, no storage.
- escnn computes its steerable bases numerically while a layer is built, so the symmetric (escnn)
  planners (registered ``symmetric=True``) cannot be built on ``meta``. Their weight count is a
  polynomial of degree at most two in their widths (a layer between ``m`` and ``n`` fields holds
  ``basis dimension x m x n`` coefficients), so it is found from builds at tiny widths: every integer
  argument over ``KEEP_UP_TO`` is built at 1, 2 and 3, pairs of the arguments that change the count at
  (2, 2), the quadratic through those counts is evaluated at the config's values, and one more build
  at other values checks it. Integers up to ``KEEP_UP_TO`` (kernel sizes, small widths) are built as
  they are.
- A composite planner (an Ensemble, registered ``composite=True``) holds its members' weights, each
  under ``members.<i>.``: its shapes and count are its members', each found as above.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any

import torch

from diffplan.errors import BadInputError, DiffplanError
from diffplan.models import create_model, get_model_entry
from diffplan.models.ensemble import member_key

MAX_WEIGHTS = 10_000_000
KEEP_UP_TO = 64  # integers up to this are built as they are: the release configs need 3 builds or fewer


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _weights(module: torch.nn.Module) -> int:
    return sum(tensor.numel() for tensor in module.state_dict().values())


def _members(algorithm: str, config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]] | None:
    """The (algorithm, config) of each member of a composite planner (checked), None for a plain one."""
    entry = get_model_entry(algorithm)
    return entry.builder.members_of(config) if entry.composite else None


def meta_shapes(algorithm: str, config: dict[str, Any]) -> dict[str, tuple[int, ...]] | None:
    """The state dict's shapes of ``create_model(algorithm, **config)`` built on the meta device (no
    storage), in eval mode; None for a symmetric (escnn) planner, which is never built there: escnn
    caches what it computes while building, and a meta build would leave tensors without data in its
    caches (and None for a composite planner with such a member). Raises the planner's argument errors
    (``DiffplanError``, ``TypeError`` for an unknown one)."""
    members = _members(algorithm, config)
    if members is not None:
        shapes: dict[str, tuple[int, ...]] = {}
        for index, (member, member_config) in enumerate(members):
            found = meta_shapes(member, member_config)
            if found is None:
                return None
            shapes.update({member_key(index, key): shape for key, shape in found.items()})
        return shapes
    if get_model_entry(algorithm).symmetric:
        return None
    with torch.device("meta"):
        model = create_model(algorithm, **config)
    if not isinstance(model, torch.nn.Module):  # a stand-in builder (tests): no weights to count
        return {}
    model.eval()
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _count(algorithm: str, config: dict[str, Any], probed: dict[str, int]) -> int:
    model = create_model(algorithm, **{**config, **probed})
    return _weights(model.eval()) if isinstance(model, torch.nn.Module) else 0


def _probed_size(algorithm: str, config: dict[str, Any]) -> int:
    """The weight count of a planner that cannot be built on meta, from builds at tiny widths."""
    large = sorted(key for key, value in config.items() if _is_int(value) and value > KEEP_UP_TO)
    ones = dict.fromkeys(large, 1)
    base = _count(algorithm, config, ones)  # runs every argument check on the values kept
    if not large:
        return base
    try:
        single = {
            k: (_count(algorithm, config, {**ones, k: 2}), _count(algorithm, config, {**ones, k: 3}))
            for k in large
        }
        # count(1 + x) = base + a x + b x^2 along one argument
        quad = {k: Fraction(c3 - 2 * c2 + base, 2) for k, (c2, c3) in single.items()}
        lin = {k: single[k][0] - base - quad[k] for k in large}
        relevant = [k for k in large if lin[k] or quad[k]]
        cross = {
            (i, j): _count(algorithm, config, {**ones, i: 2, j: 2}) - single[i][0] - single[j][0] + base
            for i, j in itertools.combinations(relevant, 2)
        }

        def predict(values: dict[str, int]) -> Fraction:
            x = {k: values[k] - 1 for k in relevant}
            total = Fraction(base) + sum(lin[k] * x[k] + quad[k] * x[k] ** 2 for k in relevant)
            return total + sum(d * x[i] * x[j] for (i, j), d in cross.items())

        if relevant:
            check = {k: 4 if n == 0 else 2 + n % 2 for n, k in enumerate(relevant)}
            if predict(check) != _count(algorithm, config, {**ones, **check}):
                raise ValueError("the weight count is not quadratic in these arguments")
    except (DiffplanError, ValueError) as err:
        listed = ", ".join(f"{k}={config[k]}" for k in large)
        raise BadInputError(
            f"{algorithm}: cannot bound the size of a planner with {listed} (arguments over {KEEP_UP_TO} are "
            f"sized as widths; {err}); use smaller values."
        ) from err
    return int(predict({k: config[k] for k in relevant}))


_SIZES: dict[tuple, int] = {}  # (algorithm, config) -> weights: a manifest is checked by several commands


def count_weights(algorithm: str, config: dict[str, Any]) -> int:
    """The number of weights ``create_model(algorithm, **config)`` holds, found without allocating them
    (module docstring); raises the planner's argument errors."""
    key = (algorithm, tuple(sorted((name, repr(value)) for name, value in config.items())))
    members = None if key in _SIZES else _members(algorithm, config)
    if members is not None:
        _SIZES[key] = sum(count_weights(member, member_config) for member, member_config in members)
    if key not in _SIZES:
        shapes = meta_shapes(algorithm, config)
        if shapes is None:
            _SIZES[key] = _probed_size(algorithm, config)
        else:
            _SIZES[key] = sum(math.prod(shape) for shape in shapes.values())
    return _SIZES[key]


def planner_size(algorithm: str, config: dict[str, Any]) -> int:
    """``count_weights``, refused (``BadInputError``) over ``MAX_WEIGHTS``."""
    size = count_weights(algorithm, config)
    if size > MAX_WEIGHTS:
        raise BadInputError(
            f"{algorithm} with this config would hold {size:,} weights, over the limit of {MAX_WEIGHTS:,} "
            f"(release planners hold under 20,000); reduce its widths."
        )
    return size
