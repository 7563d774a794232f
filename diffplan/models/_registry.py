"""Planner registry: algorithm name -> builder (timm style).

Each planner class declares its ``task`` (``diffplan.task.Task``) and is decorated with
``@register_model("VIN")``; the registry reads the task from the class.
``create_model(name, **kwargs)`` builds one; ``list_models()`` lists the names, so tests
parametrised over it cover every registered planner.

A *composite* planner (``@register_model("Ensemble", composite=True)``) is built from other registered
planners named in its config; its task is its members' (set on each instance), so its entry has
``task=None`` and ``list_models(task)`` leaves it out. Its class provides ``members_of(config)``: the
members' ``(algorithm, config)`` pairs, checked without building anything.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from diffplan.errors import ModelNotFoundError
from diffplan.task import Task


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one planner."""

    name: str
    task: Task | None  # None only for a composite planner: it takes its members' task
    builder: Callable[..., nn.Module]
    symmetric: bool = False
    implicit: bool = False  # deep-equilibrium (fixed point, implicit gradient)
    composite: bool = False  # built from other registered planners (``builder.members_of(config)``)

    def __post_init__(self) -> None:
        if self.task is not None or not self.composite:
            object.__setattr__(self, "task", Task(self.task))


_REGISTRY: dict[str, ModelEntry] = {}


def constructor_config(init_locals: dict[str, Any]) -> dict[str, Any]:
    """A planner's ``config`` from ``locals()`` taken on the first line of its ``__init__``.

    ``config`` is what release checkpoints store to rebuild the model (``create_model(name, **config)``),
    so it must hold every constructor argument; taking it from ``locals()`` keeps it from drifting out of
    step with the signature.
    """
    return {key: value for key, value in init_locals.items() if key not in ("self", "__class__")}


def register_model(name: str, *, symmetric: bool = False, implicit: bool = False, composite: bool = False):
    """Class decorator registering a planner under its algorithm name; the class states its ``task``
    (a ``composite`` planner takes its members' task instead and provides ``members_of``)."""

    def decorator(builder):
        task = getattr(builder, "task", None)
        if composite:
            if not callable(getattr(builder, "members_of", None)):
                raise ValueError(f"composite planner {name!r} must provide members_of(config)")
            task = None
        elif not isinstance(task, Task):
            raise ValueError(f"planner {name!r} must declare its task (a diffplan.task.Task class attribute)")
        if name in _REGISTRY:
            raise ValueError(f"planner {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, task, builder, symmetric, implicit, composite)
        return builder

    return decorator


def _ensure_loaded() -> None:
    # Importing the packages runs the @register_model decorators.
    import diffplan.models.ensemble  # noqa: F401
    import diffplan.models.graph  # noqa: F401
    import diffplan.models.grid  # noqa: F401


def list_models(task: Task | None = None) -> list[str]:
    """Sorted names of registered planners, optionally only those of one task (composite planners, whose
    task is their members', are listed only when no task is given)."""
    _ensure_loaded()
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name lists the valid ones and the closest match."""
    _ensure_loaded()
    if name not in _REGISTRY:
        names = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ModelNotFoundError(f"unknown planner {name!r}.{hint} Registered planners: {', '.join(names)}.")
    return _REGISTRY[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the planner registered as ``name`` with constructor arguments ``kwargs``."""
    return get_model_entry(name).builder(**kwargs)
