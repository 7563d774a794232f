"""What `validate` measured and decided (result types), and where it is stored.

Release QA (DESIGN section 9): a run that scored every named model on its own recorded test data, all of
it, with the default batch (:attr:`ValidationReport.release_qa`) is stored in the release:
``<release_root>/evaluation_results/<name>.json`` per model and ``summary.json``. Those hold only what the
run decided and counted (checks, verdicts, scores, sizes), never timings, so validating an unchanged
release again rewrites nothing (``git status`` stays clean; DESIGN section 10), on this host or another:
the float noise of another CPU's kernels in the scores and in a check's measured error is not a change
(:func:`_same_outcome`). The run's timings and
memory (:data:`TIMING_FIELDS`, dates, seconds) go to ``evaluation_results/timings.json``, untracked and
never shipped. Any other run (``--data``, ``--limit``, another batch size) is stored outside the release,
whole, in ``runs/validation/<UTC time>/report.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diffplan._atomic import atomic_write_text
from diffplan.release.layout import DEFAULT_RELEASE_ROOT, EVALUATION_FOLDER, TIMINGS_NAME, refresh_sums

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
PASS, FAIL, SKIP = "pass", "fail", "skip"
DEFAULT_BATCH_SIZE = 250
DEFAULT_RUNS_ROOT = Path("runs/validation")  # results of runs that are not release QA
# Measured anew on every run (wall time, memory): kept out of the release's evaluation results.
TIMING_FIELDS = ("latency_ms", "batched_ms_per_maze", "peak_memory_mb", "seconds")


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
    """The outcome of one ``validate`` run over several models.

    ``results_folder`` and ``results_in_release`` are set by :func:`write_results`: where it stored them.
    """

    models: list[ModelValidation]
    data_override: str | None = None
    limit: int | None = None
    seconds: float = 0.0
    created_date: str = ""
    threads: int = 1
    jobs: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE
    results_folder: str | None = None
    results_in_release: bool = False

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.models)

    @property
    def overrides(self) -> dict[str, Any]:
        """The settings that make this run something else than release QA (``--data``, ``--limit``, a
        batch size other than the default), by name; empty for release QA. Threads and jobs change how
        the work is spread, not what is scored, and are not overrides."""
        found = {"data": self.data_override, "limit": self.limit}
        if self.batch_size != DEFAULT_BATCH_SIZE:
            found["batch_size"] = self.batch_size
        return {key: value for key, value in found.items() if value is not None}

    @property
    def release_qa(self) -> bool:
        """Whether the run scored the models' own recorded test data, all of it, with no override: only
        such a run is stored in the release (DESIGN section 9)."""
        return not self.overrides

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "created_date": self.created_date,
            "data_override": self.data_override,
            "limit": self.limit,
            "batch_size": self.batch_size,
            "seconds": self.seconds,
            "threads": self.threads,
            "jobs": self.jobs,
            "results_folder": self.results_folder,
            "results_in_release": self.results_in_release,
            "models": [m.to_dict() for m in self.models],
        }


# --- the release's store -----------------------------------------------------------------------


def release_entry(model: ModelValidation) -> dict[str, Any]:
    """What ``evaluation_results/<name>.json`` holds for ``model``: its result without the timings
    (:data:`TIMING_FIELDS`), from a release-QA run (``data_override`` and ``limit`` are null)."""
    entry = {k: v for k, v in model.to_dict().items() if k not in TIMING_FIELDS}
    return {**entry, "data_override": None, "limit": None}


def _summary_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A model's line of ``summary.json``, from its stored entry."""
    checks = entry.get("checks", {})
    return {
        "passed": entry.get("passed"),
        "scores": entry.get("scores", {}),
        "target": {"metric": entry.get("target_metric"), "minimum": entry.get("target")},
        "parameters": entry.get("parameters"),
        "size_mb": entry.get("size_mb"),
        "failed_checks": sorted(name for name, check in checks.items() if check.get("status") == FAIL),
    }


# A measured error quoted in a check's message ("worst relative error 1.0e-06") or a score it restates
# ("test accuracy 99.76%", rounded, so noise within the score tolerance can flip its last digit): float
# noise of the host. The scores themselves are compared by :func:`_same_scores`, the target on its own.
_MEASURED_FIGURE = re.compile(r"\d\.\d+e[+-]\d+|\d+\.\d+%")
# Scores of two runs with the same outcome differ by float rounding only: the loss (a mean of logs) by
# about 5e-6 relative between hosts whose BLAS kernels differ, the fractions of maps by less. Equilibrium
# planners stop their solver at a relative tolerance and near-tied actions break either way, so between
# two hosts of one kind we measured up to 1.3e-5 in DE-VIN_maze15's loss (0.6% of it) and 4e-5 in
# SymVIN_maze15 v1.1's accuracy: scores within 1e-4 absolute (0.01 points) are the same outcome.
SCORE_RTOL, SCORE_ATOL = 1e-4, 1e-4


def _outcome(entry: dict[str, Any]) -> dict[str, Any]:
    """A stored entry without its float noise: scores left out (:func:`_same_scores` compares them) and
    the measured figures of check messages masked. Two runs on other hosts or thread counts differ in
    nothing else; any other change (a verdict, a message's words or counts, a checkpoint's sha256, the
    target, a timing field of the old layout) is another outcome."""
    checks = entry.get("checks")
    if isinstance(checks, dict):
        checks = {
            name: {**check, "message": _MEASURED_FIGURE.sub("#", str(check.get("message", "")))}
            if isinstance(check, dict)
            else check
            for name, check in checks.items()
        }
    return {**{k: v for k, v in entry.items() if k != "scores"}, "checks": checks}


def _same_scores(stored: Any, new: dict[str, Any]) -> bool:
    """Whether two score dicts name the same scores and agree to :data:`SCORE_RTOL` / :data:`SCORE_ATOL`."""
    if not isinstance(stored, dict) or stored.keys() != new.keys():
        return False
    try:
        return all(
            math.isclose(float(stored[k]), float(new[k]), rel_tol=SCORE_RTOL, abs_tol=SCORE_ATOL) for k in new
        )
    except (TypeError, ValueError):
        return False


def _same_outcome(stored: Any, new: dict[str, Any]) -> bool:
    """Whether a stored entry already records ``new``'s outcome (see :func:`_outcome`)."""
    return (
        isinstance(stored, dict)
        and _outcome(stored) == _outcome(new)
        and _same_scores(stored.get("scores"), new.get("scores", {}))
    )


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _release_texts(report: ValidationReport, folder: Path) -> dict[Path, str]:
    """The text each file of ``evaluation_results/`` should hold after storing ``report``.

    A stored model entry with the same outcome (:func:`_same_outcome`) is kept as it is, so a rerun
    rewrites nothing, on this host or another; ``summary.json`` keeps the lines of models not in ``report``.
    """
    texts: dict[Path, str] = {}
    lines: dict[str, Any] = {}
    for model in report.models:
        path = folder / f"{model.name}.json"
        new, stored = release_entry(model), _read_json(path)
        keep = _same_outcome(stored, json.loads(_dump(new)))
        entry = stored if keep else new
        texts[path] = _dump(entry)
        lines[model.name] = _summary_entry(entry)
    summary = _read_json(folder / "summary.json")
    earlier = summary.get("models") if isinstance(summary, dict) else None
    entries = {**(earlier if isinstance(earlier, dict) else {}), **lines}
    passed = all(isinstance(e, dict) and e.get("passed") for e in entries.values())
    texts[folder / "summary.json"] = _dump({"passed": passed, "models": dict(sorted(entries.items()))})
    return texts


def _current_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def results_describe(report: ValidationReport, release_root: str | Path = DEFAULT_RELEASE_ROOT) -> bool:
    """Whether ``evaluation_results/`` already holds ``report``'s outcome for each of its models (and the
    summary lists them so): storing it would rewrite nothing. False for a report that is not release QA."""
    if not report.release_qa:
        return False
    folder = Path(release_root) / EVALUATION_FOLDER
    return all(_current_text(path) == text for path, text in _release_texts(report, folder).items())


def _timings(report: ValidationReport, path: Path) -> dict[str, Any]:
    """``timings.json``: the run's own figures, and each model's latest, merged with earlier runs'."""
    earlier = _read_json(path)
    models = earlier.get("models") if isinstance(earlier, dict) else None
    models = dict(models) if isinstance(models, dict) else {}
    for model in report.models:
        models[model.name] = {
            "created_date": report.created_date,
            "threads": report.threads,
            **{name: getattr(model, name) for name in TIMING_FIELDS},
        }
    return {
        "created_date": report.created_date,
        "seconds": report.seconds,
        "threads": report.threads,
        "jobs": report.jobs,
        "models": dict(sorted(models.items())),
    }


def _run_folder(runs_root: Path, created_date: str) -> Path:
    """A new folder ``<runs_root>/<UTC time>`` (``-2``, ``-3`` ... when one run already took it)."""
    try:
        when = dt.datetime.fromisoformat(created_date)
    except ValueError:
        when = dt.datetime.now(dt.timezone.utc)
    stamp = when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    runs_root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        folder = runs_root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{runs_root} already holds 999 validation runs named {stamp}; clear some.")


def write_results(
    report: ValidationReport,
    release_root: str | Path = DEFAULT_RELEASE_ROOT,
    *,
    runs_root: str | Path = DEFAULT_RUNS_ROOT,
) -> list[Path]:
    """Store ``report`` where it belongs and return the files that hold it (the last one names the folder).

    Release QA (:attr:`ValidationReport.release_qa`): ``<release_root>/evaluation_results/<name>.json``
    and ``summary.json``, each rewritten only when its outcome changed (the release's ``SHA256SUMS`` then
    follows), then the untracked ``timings.json``. Any other run: ``<runs_root>/<UTC time>/report.json``
    (the whole report, timings too); the release is not touched. Sets ``report.results_folder`` and
    ``report.results_in_release``. Atomic writes.
    """
    if not report.release_qa:
        folder = _run_folder(Path(runs_root), report.created_date)
        report.results_folder, report.results_in_release = str(folder), False
        path = folder / "report.json"
        atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")
        return [path]
    folder = Path(release_root) / EVALUATION_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    report.results_folder, report.results_in_release = str(folder), True
    texts = _release_texts(report, folder)
    changed = [path for path, text in texts.items() if _current_text(path) != text]
    for path in changed:
        atomic_write_text(path, texts[path])
    refresh_sums(release_root, changed)
    timings = folder / TIMINGS_NAME
    atomic_write_text(timings, _dump(_timings(report, timings)))
    *models, summary = texts
    return [*models, timings, summary]
