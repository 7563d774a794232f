"""The one task vocabulary: a planner works on grids or on graphs.

A planner class declares its ``task``; the registry reads it; splits and checkpoints carry it; the
manifest's ``task: GridWorld | GraphWorld`` maps onto it in the schema. ``Task`` is a ``str`` enum, so
``Task.GRID`` is stored (JSON, YAML, checkpoints) as the plain string ``"grid"`` and read back with
``Task(value)``.
"""

from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    """What a planner consumes: ``GRID`` maps (B, H, W) or ``GRAPH`` node/edge tensors."""

    GRID = "grid"
    GRAPH = "graph"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_world(cls, world: str) -> Task:
        """The task of a manifest ``task:`` value (``GridWorld`` / ``GraphWorld``)."""
        return WORLDS[world]


WORLDS = {"GridWorld": Task.GRID, "GraphWorld": Task.GRAPH}
