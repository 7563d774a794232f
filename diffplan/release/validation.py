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
  maze (batch of one) and peak tensor memory of inference are measured (in the result's fields, not the
  check's message: the stored release results hold no timings).
- ``thread_count``: the model loaded and run on two torch threads gives the outputs of one thread
  (relative error under 1e-3, deep-equilibrium planners included): its weights define the same planner
  however the host computes (a thread-dependent filter basis once made two symmetric models plan at 50%
  accuracy on two threads).
- ``data_fingerprint``: the test data's fingerprint is the one the metadata names.
- ``target``: the target metric (accuracy) on the test split, scored by ``diffplan.scoring.evaluate``,
  is strictly above the manifest's minimum.
- ``recorded_scores``: measured accuracy, success and optimality agree with the metadata within 0.5 points.
- ``equivariance`` (symmetric planners): outputs commute with 90-degree rotations (and both flips for
  dihedral groups) within 1e-4 relative error; policy and value map, or the value map alone for
  ``no_equiv_policy`` planners (their policy head is not equivariant by design).
- ``quick_start``: ``load_model(path)`` + ``plan_maze(model, maze, (row, col))`` on a test maze runs and
  agrees with the batched inference on the data set's own input for that maze.

``data=PATH`` scores on another data set's test split; the fingerprint and recorded-score checks are then
skipped, saying so. Such a run (and a ``limit``) is not release QA: ``results.write_results`` stores it
outside the release. The library returns result objects; the CLI renders them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffplan._pool import run_in_processes
from diffplan._threads import torch_threads
from diffplan.envs import file_fingerprint, load_split
from diffplan.errors import BadInputError, CheckFailedError, DataFileError, DiffplanError
from diffplan.release import checks
from diffplan.release.checks import Verdict
from diffplan.release.layout import DEFAULT_RELEASE_ROOT, ReleasePaths
from diffplan.release.manifest import Manifest, ModelSpec
from diffplan.release.metadata import now_iso
from diffplan.release.results import (
    CHECKS,
    DEFAULT_BATCH_SIZE,
    FAIL,
    SKIP,
    CheckResult,
    ModelValidation,
    ValidationReport,
)
from diffplan.scoring import evaluate

__all__ = ["CHECKS", "ModelValidation", "ValidationReport", "validate_model", "validate_models"]


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


class _Recorder:
    """Appends each check's verdict to a model's result; an unexpected error fails that check only."""

    def __init__(self, result: ModelValidation) -> None:
        self.result = result

    def run(self, name: str, check: Callable[[], Verdict]) -> Any:
        """Run ``check`` and record its verdict; returns its value when it passed, else None."""
        try:
            verdict = check()
        except DiffplanError as err:
            verdict = Verdict(FAIL, str(err))
        except Exception as err:  # a broken model must not stop the other models' checks
            first_line = str(err).splitlines()[0] if str(err) else ""
            verdict = Verdict(FAIL, f"raised {type(err).__name__}: {first_line}")
        self.result.checks.append(CheckResult(name, verdict.status, verdict.message))
        return verdict.value

    def skip(self, name: str, reason: str) -> None:
        self.result.checks.append(CheckResult(name, SKIP, f"skipped: {reason}."))


def validate_model(
    spec: ModelSpec,
    manifest: Manifest,
    *,
    release_root: Path,
    data: _Data,
    data_override: Path | None,
    limit: int | None,
    batch_size: int,
) -> ModelValidation:
    """Run every check of one model in order; a check whose input an earlier check could not provide is
    skipped, saying which."""
    start = time.perf_counter()
    paths = ReleasePaths.of(spec, release_root)
    data_path = Path(data_override or spec.data)
    result = ModelValidation(
        name=spec.name,
        algorithm=spec.algorithm,
        kind=spec.task.value,
        folder=spec.folder,
        target_metric=spec.target.metric,
        target=spec.target.minimum,
        data=str(data_path),
        data_note=f"scored on --data {data_override}, not the model's own test split"
        if data_override
        else "",
    )
    record = _Recorder(result)
    no_info, no_model, no_sample = "no readable metadata", "the checkpoint did not load", "inference failed"

    info = record.run("release_files", lambda: checks.release_files(spec, paths))
    record.run("config", lambda: checks.config(spec, manifest, paths))
    if info is None:
        record.skip("checksum", no_info)
    else:
        record.run("checksum", lambda: checks.checksum(paths, info))
    model = record.run("safe_load", lambda: checks.safe_load(spec, paths))
    if model is not None:
        result.parameters = sum(p.numel() for p in model.parameters())
    result.size_mb = record.run("size", lambda: checks.size(paths))
    split = data.split(data_path)
    settings = checks.settings_for(spec, split)

    sample = None
    if model is None:
        record.skip("inference", no_model)
    else:
        sample = record.run("inference", lambda: checks.inference(spec, model, split, data_path))
        if sample is not None:
            result.latency_ms = checks.latency_ms(model, split, spec.task)
            result.peak_memory_mb = checks.peak_memory_mb(model, split, spec.task)
    missing_sample = no_model if model is None else no_sample

    def scores() -> dict[str, float]:
        if not result.scores:
            begin = time.perf_counter()
            result.scores = evaluate(
                model,
                split,
                cont_action=spec.cont_action,
                has_obstacle=settings.has_obstacle,
                batch_size=batch_size,
                limit=limit,
            )
            result.batched_ms_per_maze = 1000 * (time.perf_counter() - begin) / max(result.scores["maps"], 1)
        return result.scores

    if sample is None:
        record.skip("thread_count", missing_sample)
    else:
        record.run("thread_count", lambda: checks.thread_count(spec, paths, sample))
    if info is None:
        record.skip("data_fingerprint", no_info)
    elif data_override:
        record.run(
            "data_fingerprint",
            lambda: Verdict(
                SKIP, f"skipped: scored on --data {data_override}, not the data the metadata names."
            ),
        )
    else:
        record.run(
            "data_fingerprint",
            lambda: checks.data_fingerprint(info, data_path, data.fingerprint(data_path), manifest),
        )
    if sample is None:
        record.skip("target", missing_sample)
    else:
        record.run("target", lambda: checks.target(spec, scores(), data_path))
    if info is None:
        record.skip("recorded_scores", no_info)
    elif sample is None:
        record.skip("recorded_scores", missing_sample)
    elif data_override:
        record.run(
            "recorded_scores",
            lambda: Verdict(
                SKIP, f"skipped: scored on --data {data_override}; the metadata's scores are on other data."
            ),
        )
    else:
        record.run("recorded_scores", lambda: checks.recorded_scores(info, scores(), paths))
    if sample is None:
        record.skip("equivariance", missing_sample)
        record.skip("quick_start", missing_sample)
    else:
        record.run("equivariance", lambda: checks.equivariance(spec, model, sample, settings))
        record.run("quick_start", lambda: checks.quick_start(spec, paths, sample, settings))
    result.seconds = time.perf_counter() - start
    return result


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
    release_root: str | Path = DEFAULT_RELEASE_ROOT,
    data: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = 1,
    jobs: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> ValidationReport:
    """Validate the named models of ``manifest`` (all when ``names`` is empty).

    Args:
        release_root: the folder holding ``grid/``, ``graph/``, ``continuous/``.
        data: score on this data set's test split instead of each model's own.
        limit: score only the first ``limit`` test maps.
        batch_size: maps per scoring batch. ``data``, ``limit`` and a batch size other than the default
            make the report something else than release QA (``ValidationReport.release_qa``).
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
        kind = cache.split(data_path).task
        wrong = [s.name for s in specs if s.task is not kind]
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
                results.append(validate_model(spec, data=cache, **arguments))
    return ValidationReport(
        results,
        str(data_path) if data_path else None,
        limit,
        time.perf_counter() - start,
        now_iso(),
        used_threads,
        max(jobs, 1),
        batch_size,
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
    return validate_model(spec, data=_worker_data, **arguments)


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
    run's. Symmetric planners are started first: they take the longest (their value steps are G = 4-8
    times wider), and starting the longest first keeps the last worker from finishing alone.
    Single-threaded workers are what makes this safe on a busy machine: two OpenMP thread pools sharing
    one free core spin against each other, two single-threaded processes do not.
    """
    done = 0

    def finished(index: int, _result: ModelValidation) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(specs[index].name, done, len(specs))

    def broken(index: int, err: BaseException) -> BaseException:
        return CheckFailedError(
            f"a validation process died while checking {specs[index].name} ({err}); run "
            f"`diffplan validate {specs[index].name} --jobs 1` to see the failure in one process."
        )

    return run_in_processes(
        _validate_in_worker,
        specs,
        jobs=jobs,
        arguments=lambda index, spec: (spec, arguments),
        order=sorted(range(len(specs)), key=lambda i: specs[i].group is None),  # stable: manifest order
        initializer=_start_worker,
        initargs=(threads,),
        on_done=finished,
        on_broken=broken,
    )
