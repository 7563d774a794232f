"""The release checks of one model, one function each, with explicit inputs (``diffplan validate``).

Each check returns a ``Verdict``: pass, fail or skip, a message in words, and the value later checks
need (the metadata, the loaded model, a sample batch and its output). The order, and which check needs
which value, is spelled out in :func:`diffplan.release.validation.validate_model`.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from diffplan._threads import torch_threads
from diffplan.errors import DiffplanError
from diffplan.models import get_model_entry
from diffplan.models._output import PlanOutput
from diffplan.models._symmetry import clear_basis_cache
from diffplan.planning import PlanSettings, plan_maze, policy_of
from diffplan.release._memory import TensorMemory
from diffplan.release.checkpoint import load_model, model_from_record, read_release_checkpoint, sha256_file
from diffplan.release.equivariance import equivariance_errors, policy_of_logits, relative_error
from diffplan.release.layout import ReleasePaths
from diffplan.release.manifest import Manifest, ModelSpec, recipe_differences
from diffplan.release.metadata import read_info
from diffplan.release.results import FAIL, PASS, SKIP
from diffplan.scoring import METRICS, make_batch, run_planner
from diffplan.task import Task

MAX_CHECKPOINT_MB = 10.0  # 10 * 10**6 bytes, the unit of metadata's file_size_mb
SCORE_TOLERANCE_POINTS = 0.5
EQUIVARIANCE_TOLERANCE = 1e-4
# A planner's output on a maze must not depend on what else is planned with it or on the thread count:
# float reductions split differently there, up to 5e-7 relative measured on the explicit release planners.
# Equilibrium planners converge per maze and compute their encoder exactly (diffplan.models.deq, the grid
# planners' exact_encoder), and measured 0 (alone vs a batch of 16 vs two threads, DE-VIN_maze15 and
# DE-SymVIN_maze15, first 32 test maps); before, the batch-wide stopping rule gave up to 1.2e-1. A planner
# built or fed differently is off by order one.
QUICK_START_TOLERANCE = 1e-3
IMPLICIT_QUICK_START_TOLERANCE = 1e-3
THREAD_TOLERANCE = 1e-3
IMPLICIT_THREAD_TOLERANCE = 1e-3
SAMPLE_MAPS = 8
LATENCY_MAPS = 5


@dataclass
class Verdict:
    """A check's outcome and, when it passed, the value the later checks use."""

    status: str
    message: str
    value: Any = None


@dataclass
class Sample:
    """The first test maps as a batch, and the planner's output on them (what later checks compare to)."""

    batch: dict[str, torch.Tensor]
    output: PlanOutput


def task_of(split) -> Task:
    return split.task


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _short(digest: str | None) -> str:
    return f"{digest[:12]}..." if digest else "nothing"


def _implicit(spec: ModelSpec) -> bool:
    """Whether the planner solves for a fixed point (its outputs carry the solver's tolerance)."""
    return get_model_entry(spec.algorithm).implicit


def settings_for(spec: ModelSpec, split) -> PlanSettings:
    return PlanSettings(spec.task, getattr(split, "has_obstacle", True))


# -- files and checkpoint


def release_files(spec: ModelSpec, paths: ReleasePaths) -> Verdict:
    """The three release files exist; the metadata is complete and names this model. Value: the metadata."""
    missing = [str(p) for p in paths.files if not p.is_file()]
    if missing:
        info = None
        if paths.info.is_file():
            try:
                info = read_info(paths.info)
            except DiffplanError:
                pass  # reported as missing files already; the metadata's own problem comes next run
        return Verdict(FAIL, f"missing {', '.join(missing)}; train the model or restore the files.", info)
    info = read_info(paths.info)
    wrong = [
        f"{key} is {info[key]!r}, expected {want!r}"
        for key, want in (("model_name", spec.name), ("algorithm", spec.algorithm))
        if info[key] != want
    ]
    if wrong:
        return Verdict(FAIL, f"metadata {paths.info}: {'; '.join(wrong)}.")
    return Verdict(PASS, "checkpoint, metadata and config present; metadata complete.", info)


def config(spec: ModelSpec, manifest: Manifest, paths: ReleasePaths) -> Verdict:
    """The release config is the manifest entry's training recipe (target and notes aside)."""
    if not paths.config.is_file():
        return Verdict(SKIP, "skipped: no release config file.")
    try:
        saved = yaml.safe_load(paths.config.read_text()) or {}
    except yaml.YAMLError as err:
        return Verdict(FAIL, f"{paths.config} is not readable YAML ({err.__class__.__name__}).")
    wanted = spec.resolved()
    differ = recipe_differences(saved, wanted)
    if differ:
        details = "; ".join(f"{k}: release {saved.get(k)!r}, manifest {wanted.get(k)!r}" for k in differ[:3])
        return Verdict(
            FAIL,
            f"the model was trained with another recipe than {manifest.path} lists ({details}); "
            f"retrain it with `diffplan train --only {spec.name} --force`.",
        )
    return Verdict(PASS, "trained from exactly this manifest entry.")


def checksum(paths: ReleasePaths, info: dict[str, Any]) -> Verdict:
    """The checkpoint's sha256 is the metadata's ``model_stats.checkpoint_sha256``."""
    if not paths.checkpoint.is_file():
        return Verdict(SKIP, "skipped: no checkpoint.")
    actual, recorded = sha256_file(paths.checkpoint), info["model_stats"]["checkpoint_sha256"]
    if actual != recorded:
        return Verdict(
            FAIL,
            f"sha256 of {paths.checkpoint} is {_short(actual)} but the metadata records "
            f"{_short(recorded)}: the checkpoint was modified or corrupted after training.",
        )
    return Verdict(PASS, f"sha256 {_short(actual)}.")


def safe_load(spec: ModelSpec, paths: ReleasePaths) -> Verdict:
    """``weights_only`` load and a strict rebuild of the manifest's planner. Value: the model."""
    if not paths.checkpoint.is_file():
        return Verdict(SKIP, "skipped: no checkpoint.")
    record = read_release_checkpoint(paths.checkpoint)
    if record.get("algorithm") != spec.algorithm or record.get("model_config") != spec.model_args():
        return Verdict(
            FAIL,
            f"{paths.checkpoint} holds {record.get('algorithm')} with "
            f"{record.get('model_config')}, but the manifest entry is {spec.algorithm} with "
            f"{spec.model_args()}.",
        )
    model = model_from_record(record, paths.checkpoint)
    parameters = sum(p.numel() for p in model.parameters())
    return Verdict(PASS, f"weights_only load and strict rebuild; {parameters:,} parameters.", model)


def size(paths: ReleasePaths) -> Verdict:
    """The checkpoint is under 10 MB. Value: its size in MB."""
    if not paths.checkpoint.is_file():
        return Verdict(SKIP, "skipped: no checkpoint.")
    size_mb = paths.checkpoint.stat().st_size / 1e6
    if size_mb >= MAX_CHECKPOINT_MB:
        return Verdict(
            FAIL, f"{paths.checkpoint} is {size_mb:.2f} MB; release checkpoints must be under 10 MB.", size_mb
        )
    return Verdict(PASS, f"{size_mb:.3f} MB.", size_mb)


# -- inference and scores


def inference(spec: ModelSpec, model: nn.Module, split, data_path: Path) -> Verdict:
    """Finite outputs of the right shapes on the first test maps. Value: the ``Sample``."""
    if task_of(split) is not spec.task:
        return Verdict(
            FAIL, f"{data_path} is a {task_of(split)} data set; {spec.name} is a {spec.task} planner."
        )
    count = min(SAMPLE_MAPS, len(split))
    batch = make_batch(split, torch.arange(count))
    with torch.no_grad():
        output = run_planner(model, batch, spec.task)
    batch_size, height, width = batch["maze"].shape
    if spec.task is Task.GRID:
        expected = {"logits": (batch_size, 4, height, width), "values": (batch_size, 1, height, width)}
    else:
        nodes = batch["x"].shape[0]
        expected = {"logits": (nodes, 2 if spec.cont_action else 4), "values": (nodes, 1)}
    for key, shape in expected.items():
        tensor = getattr(output, key)
        if tuple(tensor.shape) != shape:
            return Verdict(
                FAIL, f"{key} have shape {tuple(tensor.shape)} on {count} test maps; expected {shape}."
            )
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            return Verdict(FAIL, f"{bad} non-finite {key} (NaN or inf) on the first {count} test maps.")
    return Verdict(
        PASS, f"{count} maps: finite {spec.task} outputs of the right shapes.", Sample(batch, output)
    )


def latency_ms(model: nn.Module, split, task: Task) -> float:
    """Median wall time of planning one maze (batch of one), after a warm-up run."""
    times = []
    with torch.no_grad():
        for i in range(-1, min(LATENCY_MAPS, len(split))):  # -1: a warm-up run, not timed
            batch = make_batch(split, [max(i, 0)])
            start = time.perf_counter()
            run_planner(model, batch, task)
            if i >= 0:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def peak_memory_mb(model: nn.Module, split, task: Task) -> float:
    """Peak tensor memory of planning one maze, in MB."""
    batch = make_batch(split, [0])
    with torch.no_grad(), TensorMemory() as tracker:
        output = run_planner(model, batch, task)
        del output
    return tracker.peak / 1e6


def thread_count(spec: ModelSpec, paths: ReleasePaths, sample: Sample) -> Verdict:
    """The model rebuilt from scratch on two threads gives one thread's outputs."""
    clear_basis_cache()  # build the planner from scratch on 2 threads, as a fresh process would
    try:
        with torch_threads(2), torch.no_grad():
            other = run_planner(load_model(paths.checkpoint, verify=False), sample.batch, spec.task)
    finally:
        clear_basis_cache()
    error = max(
        relative_error(other.logits - sample.output.logits, sample.output.logits),
        relative_error(other.values - sample.output.values, sample.output.values),
    )
    tolerance = IMPLICIT_THREAD_TOLERANCE if _implicit(spec) else THREAD_TOLERANCE
    if not error <= tolerance:
        return Verdict(
            FAIL,
            f"loaded and run on 2 threads its outputs differ from 1 thread's by {error:.2g} relative "
            f"(> {tolerance:g}): its weights do not define one planner on every host; a "
            f"format-1 checkpoint is fixed by `diffplan upgrade` where it was trained.",
        )
    return Verdict(PASS, f"2 threads vs 1: outputs agree within {error:.1e} relative.")


def data_fingerprint(info: dict[str, Any], data_path: Path, actual: str, manifest: Manifest) -> Verdict:
    """The test data's content fingerprint is the one the metadata names."""
    recorded = info["training_data"].get("fingerprint")
    if actual != recorded:
        return Verdict(
            FAIL,
            f"{data_path} has fingerprint {_short(actual)} but the metadata names "
            f"{_short(recorded)}: these are not the data the model was trained and scored on; "
            f"regenerate them with `diffplan data generate --manifest {manifest.path}` "
            f"or retrain the model.",
        )
    return Verdict(PASS, f"fingerprint {_short(actual)}.")


def target(spec: ModelSpec, scores: dict[str, float], data_path: Path) -> Verdict:
    """The target metric on the test split is strictly above the manifest's minimum."""
    metric, minimum = spec.target.metric, spec.target.minimum
    measured = scores[metric]
    where = f"on {scores['maps']} test maps of {data_path}"
    if not measured > minimum:
        return Verdict(
            FAIL, f"test {metric} {percent(measured)} is not above the target {percent(minimum)} ({where})."
        )
    return Verdict(PASS, f"test {metric} {percent(measured)} > {percent(minimum)} ({where}).")


def recorded_scores(info: dict[str, Any], scores: dict[str, float], paths: ReleasePaths) -> Verdict:
    """Measured accuracy, success and optimality agree with the metadata within 0.5 points."""
    performance = info["performance"]
    recorded_maps = performance.get("test_maps")
    if recorded_maps is not None and recorded_maps != scores["maps"]:
        return Verdict(
            SKIP,
            f"skipped: scored {scores['maps']} maps, the metadata's scores are over {recorded_maps}; "
            f"they are not comparable.",
        )
    gaps = []
    for metric in METRICS:
        recorded = performance[f"test_{metric}"]
        if recorded is None or abs(scores[metric] - recorded) * 100 > SCORE_TOLERANCE_POINTS:
            gaps.append(
                f"test_{metric} recorded {'none' if recorded is None else percent(recorded)}, "
                f"measured {percent(scores[metric])}"
            )
    if gaps:
        return Verdict(
            FAIL,
            f"the file and the model disagree: {'; '.join(gaps)} (more than "
            f"{SCORE_TOLERANCE_POINTS} points apart) in {paths.info}.",
        )
    return Verdict(
        PASS, f"accuracy, success and optimality within {SCORE_TOLERANCE_POINTS} points of the metadata."
    )


# -- symmetry and the quick start


def equivariance(spec: ModelSpec, model: nn.Module, sample: Sample, settings: PlanSettings) -> Verdict:
    """Symmetric planners commute with rotations (and flips for dihedral groups)."""
    if not get_model_entry(spec.algorithm).symmetric and spec.group is None:
        return Verdict(SKIP, "not a symmetric planner.")
    group = (spec.group or spec.model_args().get("group") or "d4").lower()
    dihedral = group.startswith("d")
    count = min(4, sample.batch["maze"].shape[0])
    maze, goal = sample.batch["maze"][:count], sample.batch["goal"][:count]
    try:
        errors = equivariance_errors(model, maze, goal, settings, dihedral, torch.float64)
        precision = "float64"
    except (RuntimeError, TypeError):  # a planner that cannot run in float64: float32 rounding counts
        errors = equivariance_errors(model, maze, goal, settings, dihedral)
        precision = "float32"
    parts = ("values",) if spec.no_equiv_policy else ("policy", "values")
    what = (
        "value map only (no_equiv_policy: the policy head is not equivariant by design)"
        if spec.no_equiv_policy
        else "policy and value map"
    )
    worst = max(((errors[t][p], t, p) for t in errors for p in parts), key=lambda e: e[0])
    transforms = ", ".join(errors)
    if not worst[0] < EQUIVARIANCE_TOLERANCE or math.isnan(worst[0]):
        return Verdict(
            FAIL,
            f"{group} planner is not equivariant: its {worst[2]} under {worst[1]} is off by "
            f"{worst[0]:.2e} (relative), above {EQUIVARIANCE_TOLERANCE:.0e}; checked {what} "
            f"under {transforms} on {count} test maps in {precision}.",
        )
    return Verdict(PASS, f"{what} under {transforms} ({precision}): worst relative error {worst[0]:.1e}.")


def quick_start(spec: ModelSpec, paths: ReleasePaths, sample: Sample, settings: PlanSettings) -> Verdict:
    """``load_model(path)`` + ``plan_maze`` on test map 0 agree with the batched inference (the sha256 is
    the checksum check's verdict, so it is not checked again here)."""
    model = load_model(paths.checkpoint, verify=False)
    maze = sample.batch["maze"][0].numpy()
    goal = divmod(int(sample.batch["goal"][0].flatten().argmax()), maze.shape[1])
    result = plan_maze(model, maze, goal)
    if tuple(result.actions.shape) != maze.shape or result.actions.dtype != torch.long:
        return Verdict(
            FAIL, f"plan_maze returned actions of shape {tuple(result.actions.shape)}, expected {maze.shape}."
        )
    reference = policy_of(sample.output, sample.batch, settings)
    expected = policy_of_logits(reference.logits[:1])
    policy_gap = relative_error(policy_of_logits(result.logits[None]) - expected, expected)
    values = torch.nan_to_num(reference.values[0], nan=0.0)
    value_gap = relative_error(torch.nan_to_num(result.values, nan=0.0) - values, values)
    tolerance = IMPLICIT_QUICK_START_TOLERANCE if _implicit(spec) else QUICK_START_TOLERANCE
    if not max(policy_gap, value_gap) <= tolerance:
        return Verdict(
            FAIL,
            f"plan_maze on test map 0 disagrees with the planner on the data set's input (policy off by "
            f"{policy_gap:.1e}, values by {value_gap:.1e}, relative): the quick start builds the "
            f"planner's input differently.",
        )
    return Verdict(PASS, f"load_model + plan_maze(model, maze, {goal}) agree with the data set's inference.")
