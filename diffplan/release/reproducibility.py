"""Reruns of release models: does the recipe give the same model again, and how much do seeds matter?

A rerun trains a release entry again into folders of its own, with the entry's seed or another one::

    diffplan train --only VIN_maze15 --release-root pretrained_models/reproducibility/seed42 \\
        --run-root runs/reproducibility/seed42
    diffplan train --only SymVIN_maze15 --seed 43 --release-root pretrained_models/reproducibility/seed43 \\
        --run-root runs/reproducibility/seed43

Its metadata then lies at ``pretrained_models/reproducibility/<label>/<folder>/<name>_info.json``: the
reruns ship with the release as the evidence for its README's reproducibility section.
``collect_reruns`` pairs each release model with its reruns; a rerun whose recipe differs from the
manifest entry in anything but the seed is listed as such and left out of the statistics.
``diffplan package`` writes the result into the release README.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from diffplan.errors import CheckpointError
from diffplan.release.layout import DEFAULT_RELEASE_ROOT
from diffplan.release.manifest import Manifest, ModelSpec, recipe_differences
from diffplan.release.metadata import read_info

RERUN_FOLDER = "reproducibility"  # inside the release root
METRICS = ("accuracy", "success", "optimality")


@dataclass(frozen=True)
class RunScores:
    """One trained copy of a model: where it came from and its test scores (fractions)."""

    label: str  # "release" or the rerun's folder name under the rerun root
    seed: int
    accuracy: float
    success: float
    optimality: float
    epochs_run: int
    training_hours: float


@dataclass
class ModelReruns:
    """A release model, its reruns, and reruns left out because their recipe differs."""

    name: str
    release: RunScores | None
    reruns: list[RunScores] = field(default_factory=list)
    other_recipe: list[str] = field(default_factory=list)  # labels of reruns of a different recipe

    @property
    def same_seed_gap(self) -> float | None:
        """Largest |accuracy difference| between the release and a rerun with the release's seed."""
        if self.release is None:
            return None
        gaps = [abs(r.accuracy - self.release.accuracy) for r in self.reruns if r.seed == self.release.seed]
        return max(gaps) if gaps else None

    @property
    def seed_runs(self) -> list[RunScores]:
        """One run per seed: the release for its own seed, else the first rerun of each seed."""
        runs = [self.release] if self.release is not None else []
        for run in self.reruns:
            if all(run.seed != other.seed for other in runs):
                runs.append(run)
        return runs

    def spread(self, metric: str) -> tuple[float, float, float, float]:
        """(mean, sample standard deviation, min, max) of ``metric`` over ``seed_runs``."""
        values = [getattr(run, metric) for run in self.seed_runs]
        deviation = statistics.stdev(values) if len(values) > 1 else math.nan
        return statistics.fmean(values), deviation, min(values), max(values)


def _scores(label: str, info: dict) -> RunScores:
    performance, stats = info.get("performance", {}), info.get("model_stats", {})
    return RunScores(
        label=label,
        seed=int(info.get("training_config", {}).get("seed", -1)),
        accuracy=float(performance.get("test_accuracy", math.nan)),
        success=float(performance.get("test_success", math.nan)),
        optimality=float(performance.get("test_optimality", math.nan)),
        epochs_run=int(info.get("training_run", {}).get("epochs_run", 0)),
        training_hours=float(stats.get("training_time_hours", math.nan)),
    )


def _read(path: Path) -> dict | None:
    try:
        return read_info(path)
    except CheckpointError:  # missing or incomplete: not a (finished) rerun
        return None


def collect_reruns(
    manifest: Manifest,
    release_root: str | Path = DEFAULT_RELEASE_ROOT,
    rerun_root: str | Path | None = None,
) -> list[ModelReruns]:
    """The release models that have at least one rerun under ``rerun_root`` (default:
    ``<release_root>/reproducibility``), in manifest order."""
    release_root = Path(release_root)
    rerun_root = release_root / RERUN_FOLDER if rerun_root is None else Path(rerun_root)
    labels = sorted(p.name for p in rerun_root.iterdir() if p.is_dir()) if rerun_root.is_dir() else []
    found = []
    for spec in manifest.models:
        model = _model_reruns(spec, release_root, rerun_root, labels)
        if model.reruns or model.other_recipe:
            found.append(model)
    return found


def _model_reruns(spec: ModelSpec, release_root: Path, rerun_root: Path, labels: list[str]) -> ModelReruns:
    info_name = Path(spec.folder) / f"{spec.name}_info.json"
    release_info = _read(release_root / info_name)
    model = ModelReruns(spec.name, _scores("release", release_info) if release_info else None)
    recipe = {**spec.resolved(), "seed": None}  # a rerun may change the seed and stay the same recipe
    for label in labels:
        info = _read(rerun_root / label / info_name)
        if info is None:
            continue
        if not recipe_differences({**info.get("training_config", {}), "seed": None}, recipe):
            model.reruns.append(_scores(label, info))
        else:
            model.other_recipe.append(label)
    return model
