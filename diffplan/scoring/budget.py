"""The planning budget: how many value-iteration steps a planner may take on a map.

Unrolled planners (VIN, SymVIN, the graph planners) run ``k`` steps; equilibrium planners (DE-VIN,
DE-SymVIN) run their solver for at most ``max_iter`` steps. Either way a planner cannot see a goal more
steps away than its budget, so a budget trained on 15x15 mazes (K = 40) is blind on a 49x49 maze whose
paths run to a few hundred steps. The budget can be set at evaluation:

- a number (``--k N`` / ``--max-iter N``);
- ``"trained"``: what the checkpoint was trained with;
- ``"side"``: ``ceil(sqrt(2) * side)`` for maps of side ``side`` (the SymPlan generalisation study);
- ``"bfs"``: one more than the longest BFS distance to the goal over the maps scored (every reachable
  cell is within reach of the goal's value), never below the trained budget.

Every result records the budget it used (:class:`Budget`). An Ensemble (``diffplan.models.ensemble``)
has one knob ``k`` for all its members: setting it sets each member's own (``k`` or ``max_iter``), and its
trained value is the largest of its members' trained budgets, so ``--k`` names it even when its members
are equilibrium planners.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from torch import nn

from diffplan.errors import BadInputError

AUTO_RULES = ("trained", "side", "bfs")


@dataclass(frozen=True)
class Budget:
    """The budget a planner used: ``knob`` is ``k`` or ``max_iter``, ``steps`` its value, ``rule`` how it
    was chosen (``trained``, ``side``, ``bfs`` or ``set``), ``trained`` the checkpoint's own value."""

    knob: str
    steps: int
    rule: str
    trained: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.knob}={self.steps} ({self.rule})"


def budget_knob(model: nn.Module) -> str:
    """``max_iter`` for equilibrium planners, ``k`` for unrolled ones."""
    if hasattr(model, "_deq"):
        return "max_iter"
    if isinstance(getattr(model, "k", None), int):
        return "k"
    raise BadInputError(f"{type(model).__name__} has no planning budget (neither k nor max_iter) to set.")


def current_steps(model: nn.Module) -> int:
    """The planner's budget as it is set now."""
    return int(model._deq["max_iter"]) if budget_knob(model) == "max_iter" else int(model.k)


def trained_steps(model: nn.Module) -> int:
    """The budget the planner was built (trained) with, from its config."""
    config = getattr(model, "config", {}) or {}
    knob = budget_knob(model)
    return int(config.get(knob, current_steps(model)))


def choose_budget(
    model: nn.Module, setting: int | str | None, *, side: int, longest: int, knob: str | None = None
) -> Budget:
    """The budget for maps of side ``side`` whose longest BFS distance is ``longest``.

    ``setting``: a positive int, one of :data:`AUTO_RULES`, or None (= ``trained``). ``knob``, when
    given, must be the planner's own (``--k`` names unrolled planners, ``--max-iter`` equilibrium ones);
    a setting for the other kind leaves this planner at its trained budget.
    """
    own = budget_knob(model)
    trained = trained_steps(model)
    if knob is not None and knob != own:
        return Budget(own, trained, "trained", trained)
    if setting is None or setting == "trained":
        return Budget(own, trained, "trained", trained)
    if isinstance(setting, bool) or (not isinstance(setting, (int, str))):
        raise BadInputError(
            f"a planning budget is a positive number or one of {AUTO_RULES}, got {setting!r}."
        )
    if isinstance(setting, int):
        if setting < 1:
            raise BadInputError(f"a planning budget must be a positive number of steps, got {setting}.")
        return Budget(own, setting, "set", trained)
    if setting == "side":
        return Budget(own, max(trained, math.ceil(math.sqrt(2) * side)), "side", trained)
    if setting == "bfs":
        return Budget(own, max(trained, longest + 1), "bfs", trained)
    raise BadInputError(
        f"unknown planning budget {setting!r}; give a number or one of {', '.join(AUTO_RULES)}."
    )


def parse_budget(text: str | None) -> int | str | None:
    """A command-line budget: a number, or a rule name (``trained``, ``side``, ``bfs``)."""
    if text is None:
        return None
    value = text.strip().lower()
    if value.isdigit():
        return int(value)
    if value in AUTO_RULES:
        return value
    raise BadInputError(f"planning budget {text!r} is neither a number nor one of {', '.join(AUTO_RULES)}.")


@contextlib.contextmanager
def planning_budget(model: nn.Module, steps: int) -> Iterator[None]:
    """Run the planner with ``steps`` VI steps (``k``) or solver iterations (``max_iter``), then restore."""
    knob = budget_knob(model)
    before = current_steps(model)
    _set(model, knob, steps)
    try:
        yield
    finally:
        _set(model, knob, before)


def _set(model: nn.Module, knob: str, steps: int) -> None:
    if knob == "max_iter":
        model._deq["max_iter"] = int(steps)
    else:
        model.k = int(steps)
