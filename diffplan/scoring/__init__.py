"""Scoring: batching, the metrics of DESIGN section 5, the training loss, ``evaluate`` and
``run_planner`` -- the one scoring path shared by training, validation, evaluation, planning and
inspection. It sits above ``envs`` and ``models`` and imports nothing above them."""

from diffplan.scoring.batching import iterate_batches, make_batch, nodes_to_grid
from diffplan.scoring.evaluate import evaluate
from diffplan.scoring.metrics import (
    ACCURACY,
    ANGLE_ERROR,
    LOSS,
    METRICS,
    MONITOR,
    OPTIMALITY,
    SUCCESS,
    score_logits,
)
from diffplan.scoring.planner import batch_metrics, grid_output, run_planner, scored_logits

__all__ = [
    "ACCURACY",
    "ANGLE_ERROR",
    "LOSS",
    "METRICS",
    "MONITOR",
    "OPTIMALITY",
    "SUCCESS",
    "batch_metrics",
    "evaluate",
    "grid_output",
    "iterate_batches",
    "make_batch",
    "nodes_to_grid",
    "run_planner",
    "score_logits",
    "scored_logits",
]
