"""Release QA: every check a released model must pass, each with its own verdict (``diffplan validate``).

Per model, in order (a check that cannot run because an earlier one failed is skipped, not passed):

- ``release_files``: checkpoint, ``<name>_info.json`` and ``configs/<name>_config.yaml`` exist; the
  metadata has every required key and names this model and algorithm.
- ``config``: the release config is the manifest entry's training recipe (``target`` and ``notes`` aside:
  they are QA and prose, not training).
- ``checksum``: the checkpoint's sha256 equals the metadata's ``model_stats.checkpoint_sha256``.
- ``safe_load``: ``torch.load(weights_only=True)`` on the CPU, then a strict rebuild from the registry;
  the checkpoint's algorithm and constructor arguments are the manifest entry's.
- ``size``: the checkpoint is under 10 MB.
- ``inference``: on a sample of the test split, outputs are finite and of the right shapes; latency per
  maze (batch of one) and peak tensor memory of inference are measured.
- ``thread_count``: the model loaded and run on two torch threads gives the outputs of one thread
  (relative error under 1e-3, 5e-2 for deep-equilibrium planners): its weights define the same planner
  however the host computes (a thread-dependent filter basis once made two symmetric models plan at 50%
  accuracy on two threads).
- ``data_fingerprint``: the test data's fingerprint is the one the metadata names.
- ``target``: the target metric (accuracy) on the test split, scored by ``diffplan.training.evaluate``,
  is strictly above the manifest's minimum.
- ``recorded_scores``: measured accuracy, success and optimality agree with the metadata within 0.5 points.
- ``equivariance`` (symmetric planners): outputs commute with 90-degree rotations (and both flips for
  dihedral groups) within 1e-4 relative error; policy and value map, or the value map alone for
  ``no_equiv_policy`` planners (their policy head is not equivariant by design).
- ``quick_start``: ``load_model(path)`` + ``plan_maze(model, maze, (row, col))`` on a test maze runs and
  agrees with the batched inference on the data set's own input for that maze.

``data=PATH`` scores on another data set's test split; the fingerprint and recorded-score checks are then
skipped, saying so. The library returns result objects; the CLI renders them.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from diffplan._atomic import atomic_write_text
from diffplan._threads import torch_threads
from diffplan.envs import GridSplit, file_fingerprint, load_split
from diffplan.errors import BadInputError, CheckFailedError, DataFileError, DiffplanError
from diffplan.models._symmetry import clear_basis_cache
from diffplan.planning import PlanSettings, plan_maze, policy_of
from diffplan.release._memory import TensorMemory
from diffplan.release.checkpoint import load_model, model_from_record, read_release_checkpoint, sha256_file
from diffplan.release.equivariance import equivariance_errors, policy_of_logits, relative_error
from diffplan.release.manifest import Manifest, ModelSpec, recipe_differences
from diffplan.release.metadata import now_iso, read_info
from diffplan.training.batching import make_batch
from diffplan.training.evaluate import evaluate
from diffplan.training.module import plan

CHECKS: dict[str, str] = {
    "release_files": "release files exist and the metadata is complete",
    "config": "release config matches the manifest entry",
    "checksum": "checkpoint sha256 matches the metadata",
    "safe_load": "loads with weights_only=True on the CPU",
    "size": "checkpoint under 10 MB",
    "inference": "finite outputs of the right shape",
    "thread_count": "same outputs on one and two threads",
    "data_fingerprint": "test data is the data the metadata names",
    "target": "test accuracy above the target",
    "recorded_scores": "measured scores agree with the metadata",
    "equivariance": "equivariant under rotations and flips",
    "quick_start": "quick-start call runs",
}
MAX_CHECKPOINT_MB = 10.0  # 10 * 10**6 bytes, the unit of metadata's file_size_mb
SCORE_TOLERANCE_POINTS = 0.5
EQUIVARIANCE_TOLERANCE = 1e-4
QUICK_START_TOLERANCE = 1e-3
# Deep-equilibrium planners stop their solver on the whole batch's residual, so a batch of one and a
# batch of eight reach slightly different fixed points (a few 1e-3 measured on DE-VIN_maze15); a wrongly
# built input moves the outputs by order one.
IMPLICIT_QUICK_START_TOLERANCE = 2e-2
# Float reductions split differently on two threads: up to 5e-7 relative measured on the explicit release
# planners, 1.4e-3 and 6e-3 on the deep-equilibrium ones (their solver stops at a residual of 1e-4, where
# the rounding lands it); a planner built differently is off by order one.
THREAD_TOLERANCE = 1e-3
IMPLICIT_THREAD_TOLERANCE = 5e-2
SAMPLE_MAPS = 8
LATENCY_MAPS = 5
RECORDED = ("accuracy", "success", "optimality")
PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class CheckResult:
    """One check's verdict: ``status`` is pass, fail or skip; ``message`` says what was found, in words."""

    name: str
    status: str
    message: str

    @property
    def title(self) -> str:
        return CHECKS.get(self.name, self.name)


@dataclass
class ModelValidation:
    """Everything ``validate`` measured and decided for one model."""

    name: str
    algorithm: str
    kind: str
    folder: str
    target_metric: str
    target: float
    data: str
    data_note: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    parameters: int | None = None
    size_mb: float | None = None
    latency_ms: float | None = None
    batched_ms_per_maze: float | None = None
    peak_memory_mb: float | None = None
    seconds: float = 0.0
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == FAIL]

    def check(self, name: str) -> CheckResult:
        """The verdict of check ``name`` (see ``CHECKS``)."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["checks"] = {
            c.name: {"status": c.status, "message": c.message, "title": c.title} for c in self.checks
        }
        return data


@dataclass
class ValidationReport:
    """The outcome of one ``validate`` run over several models."""

    models: list[ModelValidation]
    data_override: str | None = None
    limit: int | None = None
    seconds: float = 0.0
    created_date: str = ""
    threads: int = 1
    jobs: int = 1

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "created_date": self.created_date,
            "data_override": self.data_override,
            "limit": self.limit,
            "seconds": self.seconds,
            "threads": self.threads,
            "jobs": self.jobs,
            "models": [m.to_dict() for m in self.models],
        }


class _Data:
    """Test splits and fingerprints, loaded once per file for all the models that share it."""

    def __init__(self) -> None:
        self._splits: dict[Path, Any] = {}
        self._fingerprints: dict[Path, str] = {}

    def split(self, path: Path):
        if path not in self._splits:
            self._splits[path] = load_split(path, "test")
        return self._splits[path]

    def fingerprint(self, path: Path) -> str:
        if path not in self._fingerprints:
            self._fingerprints[path] = file_fingerprint(path)
        return self._fingerprints[path]


def _kind_of(split) -> str:
    return "grid" if isinstance(split, GridSplit) else "graph"


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _short(digest: str | None) -> str:
    return f"{digest[:12]}..." if digest else "nothing"


# --- one model ----------------------------------------------------------------------------------


class _ModelCheck:
    """Runs the checks of one model in order, recording each verdict."""

    def __init__(
        self,
        spec: ModelSpec,
        manifest: Manifest,
        release_root: Path,
        data: _Data,
        data_override: Path | None,
        limit: int | None,
        batch_size: int,
    ) -> None:
        from diffplan.training.run import ReleasePaths

        self.spec, self.manifest, self.data = spec, manifest, data
        self.data_override, self.limit, self.batch_size = data_override, limit, batch_size
        self.paths = ReleasePaths.of(spec, release_root)
        self.data_path = Path(data_override or spec.data)
        self.result = ModelValidation(
            name=spec.name,
            algorithm=spec.algorithm,
            kind=spec.kind,
            folder=spec.folder,
            target_metric=spec.target.metric,
            target=spec.target.minimum,
            data=str(self.data_path),
            data_note=f"scored on --data {data_override}, not the model's own test split"
            if data_override
            else "",
        )
        self.info: dict[str, Any] | None = None
        self.model = None
        self.split = None
        self.sample_output = None

    def record(self, name: str, status: str, message: str) -> None:
        self.result.checks.append(CheckResult(name, status, message))

    def run_check(self, name: str, needs: tuple[str, ...], body: Callable[[], tuple[str, str]]) -> None:
        """Run ``body`` unless a prerequisite is missing; an unexpected error fails the check."""
        for need in needs:
            if getattr(self, need) is None:
                reason = {
                    "info": "no readable metadata",
                    "model": "the checkpoint did not load",
                    "sample_output": "inference failed",
                }[need]
                self.record(name, SKIP, f"skipped: {reason}.")
                return
        try:
            status, message = body()
        except DiffplanError as err:
            status, message = FAIL, str(err)
        except Exception as err:  # a broken model must not stop the other models' checks
            status, message = (
                FAIL,
                f"raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            )
        self.record(name, status, message)

    def run(self) -> ModelValidation:
        start = time.perf_counter()
        self.run_check("release_files", (), self.check_files)
        self.run_check("config", (), self.check_config)
        self.run_check("checksum", ("info",), self.check_checksum)
        self.run_check("safe_load", (), self.check_safe_load)
        self.run_check("size", (), self.check_size)
        self.split = self.data.split(self.data_path)
        self.run_check("inference", ("model",), self.check_inference)
        self.run_check("thread_count", ("model", "sample_output"), self.check_thread_count)
        self.run_check("data_fingerprint", ("info",), self.check_fingerprint)
        self.run_check("target", ("model", "sample_output"), self.check_target)
        self.run_check("recorded_scores", ("info", "model", "sample_output"), self.check_recorded)
        self.run_check("equivariance", ("model", "sample_output"), self.check_equivariance)
        self.run_check("quick_start", ("model", "sample_output"), self.check_quick_start)
        self.result.seconds = time.perf_counter() - start
        return self.result

    # -- files and checkpoint

    def check_files(self) -> tuple[str, str]:
        missing = [
            str(p) for p in (self.paths.checkpoint, self.paths.info, self.paths.config) if not p.is_file()
        ]
        if missing:
            if self.paths.info.is_file():
                try:
                    self.info = read_info(self.paths.info)
                except DiffplanError:
                    pass  # reported as missing files already; the metadata's own problem comes next run
            return FAIL, f"missing {', '.join(missing)}; train the model or restore the files."
        info = read_info(self.paths.info)
        wrong = [
            f"{key} is {info[key]!r}, expected {want!r}"
            for key, want in (("model_name", self.spec.name), ("algorithm", self.spec.algorithm))
            if info[key] != want
        ]
        if wrong:
            return FAIL, f"metadata {self.paths.info}: {'; '.join(wrong)}."
        self.info = info
        return PASS, "checkpoint, metadata and config present; metadata complete."

    def check_config(self) -> tuple[str, str]:
        if not self.paths.config.is_file():
            return SKIP, "skipped: no release config file."
        try:
            saved = yaml.safe_load(self.paths.config.read_text()) or {}
        except yaml.YAMLError as err:
            return FAIL, f"{self.paths.config} is not readable YAML ({err.__class__.__name__})."
        wanted = self.spec.resolved()
        differ = recipe_differences(saved, wanted)
        if differ:
            details = "; ".join(
                f"{k}: release {saved.get(k)!r}, manifest {wanted.get(k)!r}" for k in differ[:3]
            )
            return FAIL, (
                f"the model was trained with another recipe than {self.manifest.path} lists ({details}); "
                f"retrain it with `diffplan train --only {self.spec.name} --force`."
            )
        return PASS, "trained from exactly this manifest entry."

    def check_checksum(self) -> tuple[str, str]:
        if not self.paths.checkpoint.is_file():
            return SKIP, "skipped: no checkpoint."
        actual, recorded = sha256_file(self.paths.checkpoint), self.info["model_stats"]["checkpoint_sha256"]
        if actual != recorded:
            return FAIL, (
                f"sha256 of {self.paths.checkpoint} is {_short(actual)} but the metadata records "
                f"{_short(recorded)}: the checkpoint was modified or corrupted after training."
            )
        return PASS, f"sha256 {_short(actual)}."

    def check_safe_load(self) -> tuple[str, str]:
        if not self.paths.checkpoint.is_file():
            return SKIP, "skipped: no checkpoint."
        record = read_release_checkpoint(self.paths.checkpoint)
        if (
            record.get("algorithm") != self.spec.algorithm
            or record.get("model_config") != self.spec.model_args()
        ):
            return FAIL, (
                f"{self.paths.checkpoint} holds {record.get('algorithm')} with "
                f"{record.get('model_config')}, but the manifest entry is {self.spec.algorithm} with "
                f"{self.spec.model_args()}."
            )
        model = model_from_record(record, self.paths.checkpoint)
        self.result.parameters = sum(p.numel() for p in model.parameters())
        self.model = model
        return PASS, f"weights_only load and strict rebuild; {self.result.parameters:,} parameters."

    def check_size(self) -> tuple[str, str]:
        if not self.paths.checkpoint.is_file():
            return SKIP, "skipped: no checkpoint."
        size = self.paths.checkpoint.stat().st_size / 1e6
        self.result.size_mb = size
        if size >= MAX_CHECKPOINT_MB:
            return FAIL, f"{self.paths.checkpoint} is {size:.2f} MB; release checkpoints must be under 10 MB."
        return PASS, f"{size:.3f} MB."

    # -- inference and scores

    @property
    def settings(self) -> PlanSettings:
        has_obstacle = getattr(self.split, "has_obstacle", True)
        return PlanSettings(self.spec.kind, has_obstacle)

    def check_inference(self) -> tuple[str, str]:
        split, model = self.split, self.model
        if _kind_of(split) != self.spec.kind:
            return (
                FAIL,
                f"{self.data_path} is a {_kind_of(split)} data set; "
                f"{self.spec.name} is a {self.spec.kind} planner.",
            )
        count = min(SAMPLE_MAPS, len(split))
        batch = make_batch(split, torch.arange(count))
        with torch.no_grad():
            output = plan(model, batch, self.spec.kind)
        batch_size, height, width = batch["maze"].shape
        if self.spec.kind == "grid":
            expected = {"logits": (batch_size, 4, height, width), "values": (batch_size, 1, height, width)}
        else:
            nodes = batch["x"].shape[0]
            expected = {"logits": (nodes, 2 if self.spec.cont_action else 4), "values": (nodes, 1)}
        for key, shape in expected.items():
            tensor = getattr(output, key)
            if tuple(tensor.shape) != shape:
                return FAIL, f"{key} have shape {tuple(tensor.shape)} on {count} test maps; expected {shape}."
            if not torch.isfinite(tensor).all():
                bad = int((~torch.isfinite(tensor)).sum())
                return FAIL, f"{bad} non-finite {key} (NaN or inf) on the first {count} test maps."
        self.sample_output = (batch, output)
        self.result.latency_ms = self._latency_ms(split)
        self.result.peak_memory_mb = self._peak_memory_mb(split)
        return PASS, (
            f"{count} maps: finite {self.spec.kind} outputs of the right shapes; "
            f"{self.result.latency_ms:.2f} ms per maze, peak {self.result.peak_memory_mb:.2f} MB."
        )

    @property
    def _implicit(self) -> bool:
        """Whether the planner solves for a fixed point (its outputs carry the solver's tolerance)."""
        from diffplan.models import get_model_entry

        return get_model_entry(self.spec.algorithm).implicit

    def check_thread_count(self) -> tuple[str, str]:
        batch, output = self.sample_output
        clear_basis_cache()  # build the planner from scratch on 2 threads, as a fresh process would
        try:
            with torch_threads(2), torch.no_grad():
                other = plan(load_model(self.paths.checkpoint), batch, self.spec.kind)
        finally:
            clear_basis_cache()
        error = max(
            relative_error(other.logits - output.logits, output.logits),
            relative_error(other.values - output.values, output.values),
        )
        tolerance = IMPLICIT_THREAD_TOLERANCE if self._implicit else THREAD_TOLERANCE
        if not error <= tolerance:
            return FAIL, (
                f"loaded and run on 2 threads its outputs differ from 1 thread's by {error:.2g} relative "
                f"(> {tolerance:g}): its weights do not define one planner on every host; a "
                f"format-1 checkpoint is fixed by `python -m diffplan.release.upgrade` where it was trained."
            )
        return PASS, f"2 threads vs 1: outputs agree within {error:.1e} relative."

    def _latency_ms(self, split) -> float:
        times = []
        with torch.no_grad():
            for i in range(-1, min(LATENCY_MAPS, len(split))):  # -1: a warm-up run, not timed
                batch = make_batch(split, [max(i, 0)])
                start = time.perf_counter()
                plan(self.model, batch, self.spec.kind)
                if i >= 0:
                    times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    def _peak_memory_mb(self, split) -> float:
        batch = make_batch(split, [0])
        with torch.no_grad(), TensorMemory() as tracker:
            output = plan(self.model, batch, self.spec.kind)
            del output
        return tracker.peak / 1e6

    def _scores(self) -> dict[str, float]:
        if not self.result.scores:
            start = time.perf_counter()
            self.result.scores = evaluate(
                self.model,
                self.split,
                kind=self.spec.kind,
                cont_action=self.spec.cont_action,
                has_obstacle=self.settings.has_obstacle,
                batch_size=self.batch_size,
                limit=self.limit,
            )
            self.result.batched_ms_per_maze = (
                1000 * (time.perf_counter() - start) / max(self.result.scores["maps"], 1)
            )
        return self.result.scores

    def check_fingerprint(self) -> tuple[str, str]:
        if self.data_override:
            return SKIP, f"skipped: scored on --data {self.data_override}, not the data the metadata names."
        recorded = self.info["training_data"].get("fingerprint")
        actual = self.data.fingerprint(self.data_path)
        if actual != recorded:
            return FAIL, (
                f"{self.data_path} has fingerprint {_short(actual)} but the metadata names "
                f"{_short(recorded)}: these are not the data the model was trained and scored on; "
                f"regenerate them with `diffplan data generate --manifest {self.manifest.path}` "
                f"or retrain the model."
            )
        return PASS, f"fingerprint {_short(actual)}."

    def check_target(self) -> tuple[str, str]:
        scores = self._scores()
        metric, minimum = self.spec.target.metric, self.spec.target.minimum
        measured = scores[metric]
        where = f"on {scores['maps']} test maps of {self.data_path}"
        if not measured > minimum:
            return (
                FAIL,
                f"test {metric} {_percent(measured)} is not above the target {_percent(minimum)} ({where}).",
            )
        return PASS, f"test {metric} {_percent(measured)} > {_percent(minimum)} ({where})."

    def check_recorded(self) -> tuple[str, str]:
        if self.data_override:
            return (
                SKIP,
                f"skipped: scored on --data {self.data_override}; the metadata's scores are on other data.",
            )
        scores = self._scores()
        performance = self.info["performance"]
        recorded_maps = performance.get("test_maps")
        if recorded_maps is not None and recorded_maps != scores["maps"]:
            return SKIP, (
                f"skipped: scored {scores['maps']} maps, the metadata's scores are over {recorded_maps}; "
                f"they are not comparable."
            )
        gaps = []
        for metric in RECORDED:
            recorded = performance[f"test_{metric}"]
            if recorded is None or abs(scores[metric] - recorded) * 100 > SCORE_TOLERANCE_POINTS:
                gaps.append(
                    f"test_{metric} recorded {'none' if recorded is None else _percent(recorded)}, "
                    f"measured {_percent(scores[metric])}"
                )
        if gaps:
            return FAIL, (
                f"the file and the model disagree: {'; '.join(gaps)} (more than "
                f"{SCORE_TOLERANCE_POINTS} points apart) in {self.paths.info}."
            )
        return (
            PASS,
            f"accuracy, success and optimality within {SCORE_TOLERANCE_POINTS} points of the metadata.",
        )

    # -- symmetry and the quick start

    def check_equivariance(self) -> tuple[str, str]:
        from diffplan.models import get_model_entry

        entry = get_model_entry(self.spec.algorithm)
        if not entry.symmetric and self.spec.group is None:
            return SKIP, "not a symmetric planner."
        group = (self.spec.group or self.spec.model_args().get("group") or "d4").lower()
        dihedral = group.startswith("d")
        batch, _ = self.sample_output
        count = min(4, batch["maze"].shape[0])
        maze, goal = batch["maze"][:count], batch["goal"][:count]
        try:
            errors = equivariance_errors(self.model, maze, goal, self.settings, dihedral, torch.float64)
            precision = "float64"
        except (RuntimeError, TypeError):  # a planner that cannot run in float64: float32 rounding counts
            errors = equivariance_errors(self.model, maze, goal, self.settings, dihedral)
            precision = "float32"
        parts = ("values",) if self.spec.no_equiv_policy else ("policy", "values")
        what = (
            "value map only (no_equiv_policy: the policy head is not equivariant by design)"
            if self.spec.no_equiv_policy
            else "policy and value map"
        )
        worst = max(((errors[t][p], t, p) for t in errors for p in parts), key=lambda e: e[0])
        transforms = ", ".join(errors)
        if not worst[0] < EQUIVARIANCE_TOLERANCE or math.isnan(worst[0]):
            return FAIL, (
                f"{group} planner is not equivariant: its {worst[2]} under {worst[1]} is off by "
                f"{worst[0]:.2e} (relative), above {EQUIVARIANCE_TOLERANCE:.0e}; checked {what} "
                f"under {transforms} on {count} test maps in {precision}."
            )
        return PASS, f"{what} under {transforms} ({precision}): worst relative error {worst[0]:.1e}."

    def check_quick_start(self) -> tuple[str, str]:
        model = load_model(self.paths.checkpoint)
        batch, output = self.sample_output
        maze = batch["maze"][0].numpy()
        goal = divmod(int(batch["goal"][0].flatten().argmax()), maze.shape[1])
        result = plan_maze(model, maze, goal)
        if tuple(result.actions.shape) != maze.shape or result.actions.dtype != torch.long:
            return (
                FAIL,
                f"plan_maze returned actions of shape {tuple(result.actions.shape)}, expected {maze.shape}.",
            )
        reference = policy_of(output, batch, self.settings)
        expected = policy_of_logits(reference.logits[:1])
        policy_gap = relative_error(policy_of_logits(result.logits[None]) - expected, expected)
        values = torch.nan_to_num(reference.values[0], nan=0.0)
        value_gap = relative_error(torch.nan_to_num(result.values, nan=0.0) - values, values)
        tolerance = IMPLICIT_QUICK_START_TOLERANCE if self._implicit else QUICK_START_TOLERANCE
        if not max(policy_gap, value_gap) <= tolerance:
            return FAIL, (
                f"plan_maze on test map 0 disagrees with the planner on the data set's input (policy off by "
                f"{policy_gap:.1e}, values by {value_gap:.1e}, relative): the quick start builds the "
                f"planner's input differently."
            )
        return PASS, f"load_model + plan_maze(model, maze, {goal}) agree with the data set's inference."


# --- the run ------------------------------------------------------------------------------------


def _check_inputs(specs: list[ModelSpec], manifest: Manifest, data: Path | None, limit: int | None) -> None:
    """Refuse bad input before any work (exit 2)."""
    if limit is not None and limit < 1:
        raise BadInputError(f"--limit must be a positive number of maps, got {limit}.")
    if data is not None:
        if not Path(data).is_file():
            raise DataFileError(f"data set {data} does not exist; give the path of a generated data set.")
        return
    for spec in specs:
        if not Path(spec.data).is_file():
            raise DataFileError(
                f"data set {spec.data} for {spec.name} does not exist; make it with "
                f"`diffplan data generate --manifest {manifest.path}`."
            )


def validate_models(
    manifest: Manifest,
    names: list[str] | None = None,
    *,
    release_root: str | Path = Path("pretrained_models"),
    data: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 250,
    threads: int | None = 1,
    jobs: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> ValidationReport:
    """Validate the named models of ``manifest`` (all when ``names`` is empty).

    Args:
        release_root: the folder holding ``grid/``, ``graph/``, ``continuous/``.
        data: score on this data set's test split instead of each model's own.
        limit: score only the first ``limit`` test maps.
        threads: torch CPU threads per model for inference and latency (``None``: torch's setting);
            restored after.
        jobs: validate this many models at once, each in a process of its own (see
            :func:`_validate_in_processes`); 1 validates them one after the other in this process.
        progress: called with (model name, models done, total) when a model starts (one job) or has
            finished (several jobs).

    Raises ``ModelNotFoundError`` / ``DataFileError`` / ``BadInputError`` (exit 2) before any work.
    The report lists the models in manifest order, whatever order they finished in.
    """
    start = time.perf_counter()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise BadInputError(f"jobs must be a positive number of processes, got {jobs!r}.")
    specs = manifest.select(names)
    data_path = Path(data) if data is not None else None
    _check_inputs(specs, manifest, data_path, limit)
    cache = _Data()
    if data_path is not None:
        kind = _kind_of(cache.split(data_path))
        wrong = [s.name for s in specs if s.kind != kind]
        if wrong:
            verb = f"is not a {kind} planner" if len(wrong) == 1 else f"are not {kind} planners"
            raise BadInputError(
                f"--data {data_path} is a {kind} data set, but {', '.join(wrong)} {verb}; "
                f"name {kind} models only."
            )
    arguments = dict(
        manifest=manifest,
        release_root=Path(release_root),
        data_override=data_path,
        limit=limit,
        batch_size=batch_size,
    )
    jobs = min(jobs, len(specs))
    with torch_threads(threads) as used_threads:
        if jobs > 1:
            results = _validate_in_processes(specs, arguments, threads, jobs, progress)
        else:
            results = []
            for index, spec in enumerate(specs):
                if progress is not None:
                    progress(spec.name, index, len(specs))
                results.append(_ModelCheck(spec, data=cache, **arguments).run())
    return ValidationReport(
        results,
        str(data_path) if data_path else None,
        limit,
        time.perf_counter() - start,
        now_iso(),
        used_threads,
        max(jobs, 1),
    )


# --- several models at once -------------------------------------------------------------------

_worker_data: _Data | None = None


def _start_worker(threads: int | None) -> None:
    """Process-pool initialiser: the thread count, and one data cache shared by the worker's models."""
    global _worker_data
    if threads is not None:
        torch.set_num_threads(threads)
    _worker_data = _Data()


def _validate_in_worker(spec: ModelSpec, arguments: dict[str, Any]) -> ModelValidation:
    return _ModelCheck(spec, data=_worker_data, **arguments).run()


def _validate_in_processes(
    specs: list[ModelSpec],
    arguments: dict[str, Any],
    threads: int | None,
    jobs: int,
    progress: Callable[[str, int, int], None] | None,
) -> list[ModelValidation]:
    """Validate ``specs`` in ``jobs`` spawned processes of ``threads`` threads each.

    Every check of a model runs inside one worker, as it would in a single-model run; with no more jobs
    than free cores each worker has a core to itself, so latency figures stay close to a sequential
    run's (the workers share only memory bandwidth). Models are independent, so on a 2-core machine two
    jobs validate the release in about half the time of one. Symmetric planners are started first: they
    take the longest (their value steps are G = 4-8 times wider), and starting the longest first keeps
    the last worker from finishing alone. Single-threaded workers are what makes this safe on a busy
    machine: two OpenMP thread pools sharing one free core spin against each other, two single-threaded
    processes do not.
    """
    order = sorted(range(len(specs)), key=lambda i: specs[i].group is None)  # stable: manifest order
    context = multiprocessing.get_context("spawn")  # fork after torch's thread pools is unsafe
    results: dict[int, ModelValidation] = {}
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_start_worker, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(_validate_in_worker, specs[i], arguments): i for i in order}
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    results[index] = future.result()
                except BrokenProcessPool as err:
                    raise CheckFailedError(
                        f"a validation process died while checking {specs[index].name} ({err}); run "
                        f"`diffplan validate {specs[index].name} --jobs 1` to see the failure in one process."
                    ) from err
                if progress is not None:
                    progress(specs[index].name, len(results), len(specs))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [results[i] for i in range(len(specs))]


def _outcome(entry: dict[str, Any]) -> dict[str, Any]:
    """What a stored per-model result decides, without the run's timings (latency, seconds, date).

    ``entry`` is a ``<name>.json`` of ``evaluation_results/`` (or the same built from a report). Two runs
    over the same release files and data give the same outcome; a changed checkpoint (its sha256 is in the
    checksum message), score, verdict, ``--limit`` or ``--data`` gives another.
    """
    checks = entry.get("checks", {})
    return {
        "scores": {k: round(float(v), 9) for k, v in entry.get("scores", {}).items()},
        "verdicts": {name: check.get("status") for name, check in checks.items()},
        "checksum": checks.get("checksum", {}).get("message"),
        "parameters": entry.get("parameters"),
        "size_mb": entry.get("size_mb"),
        "data_override": entry.get("data_override"),
        "limit": entry.get("limit"),
    }


def results_describe(report: ValidationReport, release_root: str | Path = Path("pretrained_models")) -> bool:
    """Whether ``evaluation_results/`` already records ``report``'s outcome for each of its models.

    Timings aside (they differ from run to run), see :func:`_outcome`. False when a file is missing or
    unreadable, or when the summary does not list every model as the report does.
    """
    folder = Path(release_root) / "evaluation_results"
    try:
        summary = json.loads((folder / "summary.json").read_text()).get("models", {})
        for model in report.models:
            stored = json.loads((folder / f"{model.name}.json").read_text())
            if _outcome(stored) != _outcome(_stored_entry(report, model)) or model.name not in summary:
                return False
    except (OSError, ValueError, AttributeError):
        return False
    return True


def _run_settings(report: ValidationReport) -> dict[str, Any]:
    """The settings of a validation run stored beside each model's result."""
    return {"created_date": report.created_date, "data_override": report.data_override, "limit": report.limit}


def _stored_entry(report: ValidationReport, model: ModelValidation) -> dict[str, Any]:
    """What ``evaluation_results/<name>.json`` holds for ``model``: its result and the run's settings."""
    return {**_run_settings(report), **model.to_dict()}


def write_results(
    report: ValidationReport, release_root: str | Path = Path("pretrained_models")
) -> list[Path]:
    """Store the report under ``<release_root>/evaluation_results/``: ``<name>.json`` per model and
    ``summary.json`` (merged with earlier runs' entries for models not validated now). Atomic writes."""
    folder = Path(release_root) / "evaluation_results"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    common = _run_settings(report)
    for model in report.models:
        path = folder / f"{model.name}.json"
        atomic_write_text(path, json.dumps(_stored_entry(report, model), indent=2, sort_keys=True) + "\n")
        written.append(path)
    summary_path = folder / "summary.json"
    entries: dict[str, Any] = {}
    if summary_path.is_file():
        try:
            entries = json.loads(summary_path.read_text()).get("models", {})
        except (OSError, ValueError, AttributeError):
            entries = {}
    for model in report.models:
        entries[model.name] = {
            **common,
            "passed": model.passed,
            "scores": model.scores,
            "target": {"metric": model.target_metric, "minimum": model.target},
            "parameters": model.parameters,
            "size_mb": model.size_mb,
            "latency_ms": model.latency_ms,
            "peak_memory_mb": model.peak_memory_mb,
            "failed_checks": [c.name for c in model.failed],
        }
    summary = {"passed": all(e["passed"] for e in entries.values()), "models": dict(sorted(entries.items()))}
    atomic_write_text(summary_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    written.append(summary_path)
    return written
