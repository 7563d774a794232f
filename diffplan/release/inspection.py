"""One release model in depth (``diffplan inspect``): metadata, config, parameters, file, data, curve.

Reads the checkpoint with ``weights_only=True`` only: no code from the file ever runs. The planner is
rebuilt from the registry (our code) to count parameters per top-level module.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from diffplan.envs import load_split
from diffplan.errors import BadInputError, CheckpointError, DataFileError, ModelNotFoundError
from diffplan.planning import PlanSettings, policy_of
from diffplan.release.checkpoint import (
    format_version,
    load_model,
    model_from_record,
    read_release_checkpoint,
    sha256_file,
)
from diffplan.release.layout import DEFAULT_RELEASE_ROOT, RELEASE_FOLDERS
from diffplan.release.manifest import Manifest, ModelSpec
from diffplan.release.metadata import read_info
from diffplan.release.plotting import draw_plan
from diffplan.scoring import make_batch, run_planner
from diffplan.scoring.metrics import MONITOR, rollout, score_logits
from diffplan.task import Task


@dataclass
class TrainingCurve:
    """The per-epoch summary of a run's ``logs/metrics.csv``; epochs count from 1."""

    path: str
    epochs: int
    best_epoch: int | None
    best_val_accuracy: float | None
    final_train_loss: float | None
    train_loss: list[float | None] = field(default_factory=list)
    val_accuracy: list[float | None] = field(default_factory=list)


@dataclass
class Inspection:
    """What ``inspect`` reports on one release checkpoint."""

    name: str
    checkpoint: Path
    algorithm: str
    task: Task | None
    model_config: dict[str, Any]
    extra: dict[str, Any]
    size_mb: float
    sha256: str
    parameters: dict[str, int]
    total_parameters: int
    info_path: Path
    info: dict[str, Any] | None
    info_problem: str | None
    config_path: Path
    config: dict[str, Any] | None
    curve: TrainingCurve | None
    spec: ModelSpec | None = None
    format_version: int = 1  # checkpoint format (``release.checkpoint``); 1: upgrade it

    @property
    def sha256_matches_metadata(self) -> bool | None:
        if self.info is None:
            return None
        return self.info.get("model_stats", {}).get("checkpoint_sha256") == self.sha256

    @property
    def data_path(self) -> Path | None:
        if self.spec is not None:
            return Path(self.spec.data)
        path = (self.info or {}).get("training_data", {}).get("path")
        return Path(path) if path else None

    @property
    def data_fingerprint(self) -> str | None:
        return (self.info or {}).get("training_data", {}).get("fingerprint")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checkpoint": str(self.checkpoint),
            "algorithm": self.algorithm,
            "task": None if self.task is None else self.task.value,
            "model_config": self.model_config,
            "extra": self.extra,
            "file": {
                "size_mb": self.size_mb,
                "sha256": self.sha256,
                "sha256_matches_metadata": self.sha256_matches_metadata,
                "format_version": self.format_version,
            },
            "parameters": {"per_module": self.parameters, "total": self.total_parameters},
            "data": {
                "path": None if self.data_path is None else str(self.data_path),
                "fingerprint": self.data_fingerprint,
            },
            "metadata_path": str(self.info_path),
            "metadata": self.info,
            "metadata_problem": self.info_problem,
            "config_path": str(self.config_path),
            "config": self.config,
            "training_curve": None if self.curve is None else self.curve.__dict__,
        }


def locate(
    name_or_path: str | Path, manifest: Manifest | None, release_root: Path
) -> tuple[Path, ModelSpec | None]:
    """The checkpoint of a release model given by name or path, and its manifest entry when listed."""
    path = Path(name_or_path)
    if path.is_file():
        spec = _spec_or_none(manifest, path.stem)
        return path, spec
    if path.suffix == ".ckpt" or len(path.parts) > 1:
        raise CheckpointError(f"checkpoint {path} does not exist; check the path.")
    name = str(name_or_path)
    spec = _spec_or_none(manifest, name)
    folders = [spec.folder] if spec is not None else list(RELEASE_FOLDERS)
    for folder in folders:
        candidate = Path(release_root) / folder / f"{name}.ckpt"
        if candidate.is_file():
            return candidate, spec
    if spec is not None:
        raise ModelNotFoundError(
            f"{name} is listed in {manifest.path} but has no checkpoint under {release_root}/"
            f"{spec.folder}/; train it with `diffplan train --only {name}`."
        )
    listed = f" The manifest lists: {', '.join(m.name for m in manifest.models)}." if manifest else ""
    raise ModelNotFoundError(
        f"no release model {name!r} under {release_root}/{{{','.join(RELEASE_FOLDERS)}}}/; "
        f"give a model name or a checkpoint path.{listed}"
    )


def _spec_or_none(manifest: Manifest | None, name: str) -> ModelSpec | None:
    if manifest is None:
        return None
    return next((m for m in manifest.models if m.name == name), None)


def read_training_curve(metrics_csv: Path) -> TrainingCurve | None:
    """Per-epoch train loss and validation accuracy from a Lightning ``CSVLogger`` file, or None."""
    if not metrics_csv.is_file():
        return None
    per_epoch: dict[int, dict[str, float]] = {}
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                epoch = int(float(row.get("epoch") or "nan"))
            except ValueError:
                continue
            values = per_epoch.setdefault(epoch, {})
            for key in ("train/loss", MONITOR):
                if row.get(key) not in (None, ""):
                    values[key] = float(row[key])
    if not per_epoch:
        return None
    epochs = sorted(per_epoch)
    losses = [per_epoch[e].get("train/loss") for e in epochs]
    accuracies = [per_epoch[e].get(MONITOR) for e in epochs]
    scored = [(a, e) for a, e in zip(accuracies, epochs, strict=True) if a is not None and not math.isnan(a)]
    best = max(scored, key=lambda pair: pair[0]) if scored else None  # first epoch reaching the best
    final_loss = next((loss for loss in reversed(losses) if loss is not None), None)
    return TrainingCurve(
        path=str(metrics_csv),
        epochs=len(epochs),
        best_epoch=None if best is None else best[1] + 1,
        best_val_accuracy=None if best is None else best[0],
        final_train_loss=final_loss,
        train_loss=losses,
        val_accuracy=accuracies,
    )


def parameters_per_module(model: torch.nn.Module) -> dict[str, int]:
    """Parameter counts grouped by top-level submodule (``(own)`` for parameters of the root itself); the
    items of a top-level ``ModuleList`` (an Ensemble's ``members``) count one by one (``members.0``)."""
    lists = {name for name, child in model.named_children() if isinstance(child, torch.nn.ModuleList)}
    counts: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        top = "(own)" if len(parts) == 1 else ".".join(parts[:2]) if parts[0] in lists else parts[0]
        counts[top] = counts.get(top, 0) + parameter.numel()
    return counts


def inspect_model(
    name_or_path: str | Path,
    *,
    manifest: Manifest | None = None,
    release_root: str | Path = DEFAULT_RELEASE_ROOT,
    run_root: str | Path = Path("runs"),
) -> Inspection:
    """Inspect a release model by name or checkpoint path (weights-only read; nothing is scored)."""
    checkpoint, spec = locate(name_or_path, manifest, Path(release_root))
    record = read_release_checkpoint(checkpoint)
    model = model_from_record(record, checkpoint)
    per_module = parameters_per_module(model)
    name = str(record.get("name") or checkpoint.stem)
    info_path = checkpoint.parent / f"{checkpoint.stem}_info.json"
    config_path = checkpoint.parent / "configs" / f"{checkpoint.stem}_config.yaml"
    info, problem = None, None
    try:
        info = read_info(info_path)
    except CheckpointError as err:
        problem = str(err)
        if info_path.is_file():
            try:
                info = json.loads(info_path.read_text())  # incomplete but readable: still worth showing
            except ValueError:
                info = None
    config = None
    if config_path.is_file():
        config = yaml.safe_load(config_path.read_text())
    elif info is not None:
        config = info.get("training_config")
    return Inspection(
        name=name,
        checkpoint=checkpoint,
        algorithm=record["algorithm"],
        task=_recorded_task(record),
        model_config=dict(record["model_config"]),
        extra=dict(record.get("extra", {})),
        size_mb=checkpoint.stat().st_size / 1e6,
        sha256=sha256_file(checkpoint),
        parameters=per_module,
        total_parameters=sum(per_module.values()),
        info_path=info_path,
        info=info,
        info_problem=problem,
        config_path=config_path,
        config=config,
        curve=read_training_curve(Path(run_root) / name / "logs" / "metrics.csv"),
        spec=spec,
        format_version=format_version(record, checkpoint),
    )


def _recorded_task(record: dict[str, Any]) -> Task | None:
    """The task a checkpoint records (``extra["kind"]``), if it records a known one."""
    recorded = record.get("extra", {}).get("kind")
    return Task(recorded) if recorded in tuple(Task) else None


def plot_test_map(
    inspection: Inspection,
    output: str | Path,
    index: int = 0,
    *,
    data: str | Path | None = None,
    manifest_path: Path | None = None,
) -> dict[str, float]:
    """Draw test map ``index`` with the model's value map, policy and failures; returns the map's scores."""
    path = Path(data) if data is not None else inspection.data_path
    if path is None or not path.is_file():
        hint = (
            f"`diffplan data generate --manifest {manifest_path}`"
            if manifest_path
            else "`diffplan data generate`"
        )
        raise DataFileError(
            f"test data {path} for {inspection.name} does not exist; make it with {hint} or pass --data PATH."
        )
    split = load_split(path, "test")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(split):
        raise BadInputError(
            f"--index {index} is out of range: the test split of {path} has {len(split)} maps, "
            f"numbered 0 to {len(split) - 1}."
        )
    model = load_model(inspection.checkpoint)
    task = inspection.task or split.task
    settings = PlanSettings(task, getattr(split, "has_obstacle", True))
    batch = make_batch(split, [index])
    with torch.no_grad():
        planned = run_planner(model, batch, task)
    result = policy_of(planned, batch, settings)
    continuous = result.logits.shape[1] == 2
    scores = score_logits(
        batch["maze"],
        batch["goal"],
        batch["dist"],
        batch["optimal"],
        result.logits,
        continuous=continuous,
        has_obstacle=settings.has_obstacle,
    )
    reached, _ = rollout(batch["maze"], batch["goal"], result.actions.clamp_min(0))
    correct = batch["optimal"].gather(1, result.actions.clamp_min(0).unsqueeze(1))[:, 0]
    scored = batch["dist"] > 0
    summary = {key: float(value[0]) for key, value in scores.items()}
    title = (
        f"{inspection.name}: test map {index}  accuracy {100 * summary['accuracy']:.1f}%  "
        f"success {100 * summary['success']:.1f}%"
    )
    edges = None
    if task is Task.GRAPH:
        node_cell = batch["node_cell"]
        edges = node_cell[batch["edge_index"]].T.tolist()  # (E, 2) cell pairs
    draw_plan(
        output=Path(output),
        maze=result.maze[0],
        goal=result.goal[0],
        values=result.values[0],
        actions=result.actions[0],
        failed=(scored & ~reached)[0],
        wrong=(scored & ~correct)[0],
        title=title,
        edges=edges,
    )
    return summary
