"""What `validate` measured and decided (result types), and the release's store of it:
``<release_root>/evaluation_results/<name>.json`` per model and ``summary.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diffplan._atomic import atomic_write_text
from diffplan.release.layout import DEFAULT_RELEASE_ROOT, EVALUATION_FOLDER

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


# --- the store ---------------------------------------------------------------------------------


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


def results_describe(report: ValidationReport, release_root: str | Path = DEFAULT_RELEASE_ROOT) -> bool:
    """Whether ``evaluation_results/`` already records ``report``'s outcome for each of its models.

    Timings aside (they differ from run to run), see :func:`_outcome`. False when a file is missing or
    unreadable, or when the summary does not list every model as the report does.
    """
    folder = Path(release_root) / EVALUATION_FOLDER
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


def write_results(report: ValidationReport, release_root: str | Path = DEFAULT_RELEASE_ROOT) -> list[Path]:
    """Store the report under ``<release_root>/evaluation_results/``: ``<name>.json`` per model and
    ``summary.json`` (merged with earlier runs' entries for models not validated now). Atomic writes."""
    folder = Path(release_root) / EVALUATION_FOLDER
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
