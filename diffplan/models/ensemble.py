"""Ensemble: one planner made of several trained planners of one task, averaging their log-probabilities.

    logits = mean_i log_softmax(logits_i)   over the four actions N, W, S, E
    values = mean_i values_i

Why log-probabilities and not raw logits: a planner's logits are defined only up to a constant per
state (``softmax`` ignores it), and the members' logits live on different scales and offsets (a VIN's,
a DEQ's and a SymVIN's are not in the same units). ``log_softmax`` removes each member's per-state
offset, so the ensemble's output is a function of the members' policies alone, and the mean of
log-probabilities is the log of their geometric mean: ``softmax(logits)`` is the normalised geometric
mean of the members' policies (a product of experts), which is what the scored loss and probabilities
then measure. The argmax is a vote weighted by confidence: each member weighs in by how much more
likely it finds one action than another (its log-probability gaps). Note that this argmax is the same
as that of the mean raw logits (the offsets are constant per state), and that a member with sharper
logits counts more; per-member temperatures, or a mean of probabilities (a mixture, where no member
counts for more than 1/n), would change the vote.
The values are only averaged for display (a value map), never used for the policy; their scales differ
as the logits' do.

Continuous-action graph planners output a (dy, dx) move vector, not logits over actions; averaging
vectors of different lengths (the length carries each member's confidence in its own units) is not the
same kind of vote, so such members are refused.

The planning budget is one number ``k`` (the scoring budget's knob, :mod:`diffplan.scoring.budget`):
setting it sets every member's own knob, ``k`` of an unrolled planner and ``max_iter`` of an
equilibrium one. Its default, and the value the config records, is the largest of the members' trained
budgets, so at its trained budget every member runs at least as many steps as it was trained with.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffplan.envs.actions import NUM_ACTIONS
from diffplan.errors import BadInputError
from diffplan.models._checks import check_int
from diffplan.models._output import PlanOutput
from diffplan.models._registry import constructor_config, create_model, get_model_entry, register_model
from diffplan.task import Task

# What ``create_model("Ensemble")`` builds with no members given (the registry's tests build every
# planner from its defaults): an ensemble of one default VIN.
DEFAULT_MEMBERS = ({"algorithm": "VIN", "config": {}},)
MEMBERS = "members"  # the ModuleList: member i's state-dict keys are ``members.<i>.<key>``


def member_key(index: int, key: str) -> str:
    """The ensemble's state-dict key of member ``index``'s ``key``."""
    return f"{MEMBERS}.{index}.{key}"


def _check_members(members: Any) -> list[tuple[str, dict[str, Any]]]:
    """``members`` as (algorithm, config) pairs, checked without building: registered, non-composite,
    discrete-action planners of one task. Raises ``BadInputError`` (``ModelNotFoundError`` for an
    unknown algorithm)."""
    if members is None:
        members = DEFAULT_MEMBERS
    if not isinstance(members, list | tuple) or not members:
        raise BadInputError(
            f"Ensemble members must be a non-empty list of {{'algorithm': name, 'config': {{...}}}}, "
            f"got {members!r:.80}."
        )
    pairs = []
    for index, member in enumerate(members):
        shaped = (
            isinstance(member, dict)
            and set(member) == {"algorithm", "config"}
            and isinstance(member["algorithm"], str)
            and isinstance(member["config"], dict)
            and all(isinstance(key, str) for key in member["config"])
        )
        if not shaped:
            raise BadInputError(
                f"Ensemble member {index} must be {{'algorithm': name, 'config': {{argument: value}}}}, "
                f"got {member!r:.80}."
            )
        algorithm, config = member["algorithm"], member["config"]
        if get_model_entry(algorithm).composite:
            raise BadInputError(f"Ensemble member {index} is itself a {algorithm}; list its members instead.")
        if config.get("cont_action"):
            raise BadInputError(
                f"Ensemble member {index} ({algorithm}) has continuous actions: it outputs move vectors, "
                f"not action logits, and an Ensemble averages action log-probabilities."
            )
        pairs.append((algorithm, dict(config)))
    tasks = {algorithm: get_model_entry(algorithm).task for algorithm, _ in pairs}
    if len(set(tasks.values())) > 1:
        listed = ", ".join(f"{algorithm} ({task})" for algorithm, task in tasks.items())
        raise BadInputError(
            f"Ensemble members must be planners of one task (all grid or all graph); got {listed}."
        )
    return pairs


def member_budget(algorithm: str, config: dict[str, Any]) -> int:
    """The trained budget of a member from its config, without building it: ``max_iter`` of an
    equilibrium planner, ``k`` of an unrolled one (the constructor's default when the config omits it)."""
    entry = get_model_entry(algorithm)
    knob = "max_iter" if entry.implicit else "k"
    if knob in config:
        return check_int(f"{algorithm} {knob}", config[knob])
    parameter = inspect.signature(entry.builder).parameters.get(knob)
    if parameter is None or not isinstance(parameter.default, int):
        raise BadInputError(f"{algorithm} has no planning budget ({knob}) an Ensemble could set.")
    return parameter.default


def _steps_of(member: nn.Module) -> int:
    return int(member._deq["max_iter"]) if hasattr(member, "_deq") else int(member.k)


@register_model("Ensemble", composite=True)
class Ensemble(nn.Module):
    """Ensemble of trained planners of one task: mean log-probabilities and mean values (module doc).

    Args:
        members: list of ``{"algorithm": name, "config": constructor arguments}`` (JSON-able, so a
            release checkpoint's config rebuilds it), all grid or all graph planners with discrete
            actions; None: one default VIN. Weights come from loading a state dict (each member's under
            ``members.<i>.``), e.g. from the members' release checkpoints.
        k: the planning budget every member runs (``k`` steps of an unrolled member, at most ``max_iter``
            solver steps of an equilibrium one); None: the largest of the members' own budgets.

    Attributes:
        task: the members' task (``Task.GRID`` or ``Task.GRAPH``), per instance.
        k: the budget (settable: setting it sets every member's knob).

    Shapes: the members' inputs. Grid: maze (B, H, W), goal (B, 1, H, W) -> logits (B, 4, H, W) of
    log-probabilities over N, W, S, E, values (B, 1, H, W). Graph: x (V, 4), edge_index (2, E), batch
    (V,) -> logits (V, 4), values (V, 1). ``stats`` holds each member's as ``members.<i>.<name>``.
    """

    task: Task | None = None  # the members' task, set per instance (a composite registry entry)

    def __init__(self, members: list[dict[str, Any]] | None = None, k: int | None = None) -> None:
        config = constructor_config(locals())
        super().__init__()
        pairs = _check_members(members)
        self.task = get_model_entry(pairs[0][0]).task
        self.members = nn.ModuleList(create_model(algorithm, **args) for algorithm, args in pairs)
        for index, member in enumerate(self.members):
            if not hasattr(member, "_deq") and not isinstance(getattr(member, "k", None), int):
                raise BadInputError(
                    f"Ensemble member {index} ({pairs[index][0]}) has no planning budget to set."
                )
        self._k = 0
        self.k = max(_steps_of(member) for member in self.members) if k is None else k
        config["k"] = self.k
        self.config = config

    @staticmethod
    def members_of(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The (algorithm, config) of each member of ``Ensemble(**config)``, with the constructor's
        argument checks, building nothing (``TypeError`` for an unknown argument, as a call would)."""
        unknown = sorted(set(config) - {"members", "k"})
        if unknown:
            raise TypeError(f"Ensemble got an unexpected keyword argument {unknown[0]!r}")
        if config.get("k") is not None:
            check_int("k", config["k"])
        return _check_members(config.get("members"))

    @property
    def k(self) -> int:
        """The planning budget of every member."""
        return self._k

    @k.setter
    def k(self, steps: int) -> None:
        steps = check_int("k", steps)
        for member in self.members:
            if hasattr(member, "_deq"):
                member._deq["max_iter"] = steps
            else:
                member.k = steps
        self._k = steps

    def extra_repr(self) -> str:
        return f"k={self.k}"

    def forward(self, *inputs: torch.Tensor, **kwargs: Any) -> PlanOutput:
        outputs = [member(*inputs, **kwargs) for member in self.members]
        for index, output in enumerate(outputs):
            if output.logits.shape[1] != NUM_ACTIONS:  # a (dy, dx) vector: see the module doc
                raise BadInputError(
                    f"Ensemble member {index} returned {output.logits.shape[1]} channels, not logits over "
                    f"{NUM_ACTIONS} actions; continuous-action planners cannot be ensembled."
                )
        # Actions are dim 1 of grid (B, 4, H, W) and graph (V, 4) logits alike.
        logits = torch.stack([F.log_softmax(output.logits, dim=1) for output in outputs]).mean(0)
        values = torch.stack([output.values for output in outputs]).mean(0)
        stats = {
            member_key(index, name): value
            for index, output in enumerate(outputs)
            for name, value in output.stats.items()
        }
        return PlanOutput(logits=logits, values=values, stats=stats)
