"""Training's side of a model's release files: whether they are up to date with the manifest entry, and
writing a trained model's three files as one switch (``diffplan.release.layout.stage_release_files``).

A model that misses its target does not replace the release: its files go to the run folder's
``candidate/`` unless the caller asks for a failing release (``release_failing``). A run with overrides
(``--max-epochs``, ``--limit-maps``) records them in its config and metadata (``overrides``), so it never
reads as up to date for the plain entry and ``validate`` does not pass it as trained from the entry.

The same scoring and writing (``score_splits``, ``release_root_for``, ``write_release``) publish an
Ensemble entry, which is assembled from its members' release files instead of trained
(:mod:`diffplan.training.ensemble`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from diffplan._atomic import atomic_write_text
from diffplan.envs import file_fingerprint, load_split
from diffplan.errors import TrainingError
from diffplan.release.checkpoint import checkpoint_file_stats, save_release_checkpoint, sha256_file
from diffplan.release.layout import ReleasePaths, release_files_problems, stage_release_files
from diffplan.release.manifest import Manifest, ModelSpec, recipe_differences
from diffplan.release.metadata import RunRecord, build_info, target_passed, write_info
from diffplan.scoring import evaluate
from diffplan.training.callbacks.nan_guard import first_non_finite
from diffplan.training.module import PlannerModule
from diffplan.training.run_folder import BEST, CANDIDATE, RunFacts


def release_config(spec: ModelSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """What ``configs/<name>_config.yaml`` stores: the resolved entry, plus ``overrides`` when there are
    any (a plain run's config is exactly the entry, as the v1.0 configs are)."""
    return {**spec.resolved(), **({"overrides": overrides} if overrides else {})}


def up_to_date_problems(spec: ModelSpec, release_root: Path, *, allow_overrides: bool = False) -> list[str]:
    """Why the model's release files are not the finished training of this entry (empty: they are).

    Every file must exist and match its record: the files manifest when there is one, the checkpoint's
    sha256 against the metadata's ``model_stats.checkpoint_sha256``, the config's recipe against the
    entry (target and notes aside; overrides count unless ``allow_overrides``) and against the
    metadata's ``training_config``. An Ensemble's files are also out of date when a member's release
    checkpoint is no longer the one it was assembled from (``ensemble_member_problems``).
    """
    paths = ReleasePaths.of(spec, release_root)
    missing = [str(p) for p in paths.files if not p.is_file()]
    if missing:
        return [f"missing {', '.join(missing)}"]
    if paths.files_manifest.is_file():
        problems = release_files_problems(paths)
        if problems:
            return problems
    try:
        info = json.loads(paths.info.read_text())
        recorded = info["model_stats"]["checkpoint_sha256"]
        saved = yaml.safe_load(paths.config.read_text()) or {}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, yaml.YAMLError) as err:
        return [f"unreadable metadata or config ({type(err).__name__})"]
    if sha256_file(paths.checkpoint) != recorded:
        return [f"{paths.checkpoint} does not match the sha256 in {paths.info.name}"]
    if not isinstance(saved, dict):
        return [f"{paths.config} is not a mapping"]
    recipe = {k: v for k, v in saved.items() if k != "overrides"} if allow_overrides else saved
    differ = recipe_differences(recipe, spec.resolved())
    if differ:
        return [f"{paths.config} differs from the entry in {', '.join(differ)}"]
    trained = info.get("training_config")
    if not isinstance(trained, dict) or recipe_differences(trained, saved):
        return [f"{paths.info.name} and {paths.config.name} record different recipes"]
    if spec.members is not None:
        return ensemble_member_problems(info, release_root)
    if spec.init_from is not None:
        return start_problems(spec, info, release_root)
    return []


def _recorded_checkpoint(record: Any, release_root: Path) -> tuple[Path, bool] | None:
    """A metadata record naming another model's release checkpoint ({name, folder, checkpoint_sha256}):
    (that checkpoint's path, whether it still has the recorded sha256); None if the record is unreadable."""
    try:
        paths = ReleasePaths.named(record["name"], record["folder"], release_root)
        recorded = record["checkpoint_sha256"]
    except (KeyError, TypeError):
        return None
    return paths.checkpoint, paths.checkpoint.is_file() and sha256_file(paths.checkpoint) == recorded


def start_problems(spec: ModelSpec, info: dict[str, Any], release_root: Path) -> list[str]:
    """Why a model trained from ``init_from`` no longer matches its starting point (empty: it does): the
    metadata must name that entry, whose release checkpoint must still have the recorded sha256."""
    start = info.get("init_from")
    if not isinstance(start, dict) or start.get("name") != spec.init_from:
        return [f"its metadata does not record starting from {spec.init_from}"]
    found = _recorded_checkpoint(start, release_root)
    if found is None:
        return ["its metadata's init_from record is unreadable"]
    checkpoint, unchanged = found
    if not unchanged:
        return [
            f"starting point {spec.init_from}'s checkpoint {checkpoint} changed since this model was trained"
        ]
    return []


def ensemble_member_problems(info: dict[str, Any], release_root: Path) -> list[str]:
    """Why an Ensemble's metadata no longer names its members' release checkpoints (empty: it does):
    each member recorded in ``info["ensemble"]["members"]`` must still have that checkpoint sha256."""
    members = (info.get("ensemble") or {}).get("members")
    if not isinstance(members, list) or not members:
        return ["its metadata records no ensemble members"]
    for member in members:
        found = _recorded_checkpoint(member, release_root)
        if found is None:
            return ["its metadata's ensemble members are unreadable"]
        checkpoint, unchanged = found
        if not unchanged:
            return [f"member {member['name']}'s checkpoint {checkpoint} changed since it was assembled"]
    return []


def is_up_to_date(spec: ModelSpec, release_root: Path) -> bool:
    """True when the release files are complete, consistent, and trained from this entry's recipe with
    no overrides (notes and target may have been edited since)."""
    return not up_to_date_problems(spec, release_root)


def _check_finite(name: str, model, scores: dict[str, dict[str, float]]) -> None:
    bad = first_non_finite(model)
    if bad is not None:
        raise TrainingError(f"{name}'s best checkpoint holds non-finite weights ({bad}); it is not released.")
    for split, values in scores.items():
        broken = [k for k, v in values.items() if not math.isfinite(float(v))]
        if broken:
            raise TrainingError(
                f"{name}'s outputs on the {split} maps are not finite ({', '.join(broken)} "
                f"{values[broken[0]]}); it is not released."
            )


def score_splits(
    model,
    spec: ModelSpec,
    manifest: Manifest,
    *,
    limit_maps: int | None,
    trust_pickle: bool = False,
    loaded: dict | None = None,
) -> dict[str, dict[str, float]]:
    """``{"valid": ..., "test": ...}``: the model scored on both splits of its entry's data, as every
    released model is (``loaded``: splits already in memory)."""
    dataset = manifest.dataset_for(spec)
    scores = {}
    for split in ("valid", "test"):
        data = (loaded or {}).get(split) or load_split(spec.data, split, trust_pickle=trust_pickle)
        scores[split] = evaluate(
            model, data, cont_action=spec.cont_action, has_obstacle=dataset.has_obstacle, limit=limit_maps
        )
    _check_finite(spec.name, model, scores)
    return scores


def write_release(
    spec: ModelSpec,
    manifest: Manifest,
    model,
    *,
    scores: dict[str, dict[str, float]],
    root: Path,
    run: dict[str, Any],
    overrides: dict[str, Any],
    info_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the model's three release files under ``root`` as one switch; returns the metadata.

    ``run``: the :class:`RunRecord` fields the run measured, but for ``parameters``, ``checkpoint_stats``
    and ``overrides``, filled in here; ``info_extra``: keys added to the metadata (an Ensemble's members).
    """
    dataset = manifest.dataset_for(spec)
    paths = ReleasePaths.of(spec, root)
    with stage_release_files(paths, release_root=root) as staged:
        save_release_checkpoint(
            staged.checkpoint,
            model,
            name=spec.name,
            algorithm=spec.algorithm,
            model_config=spec.model_args(),
            extra={
                "kind": spec.task.value,
                "cont_action": spec.cont_action,
                "has_obstacle": dataset.has_obstacle,
            },
        )
        record = RunRecord(
            **run,
            parameters=sum(p.numel() for p in model.parameters()),
            checkpoint_stats=checkpoint_file_stats(staged.checkpoint),
            overrides=overrides,
        )
        info = {
            **build_info(spec, dataset, scores, record, file_fingerprint(spec.data)),
            **(info_extra or {}),
        }
        write_info(staged.info, info)
        atomic_write_text(staged.config, yaml.safe_dump(release_config(spec, overrides), sort_keys=False))
    return info


def release_root_for(
    spec: ModelSpec,
    scores: dict[str, dict[str, float]],
    release_root: Path,
    run_dir: Path,
    release_failing: bool,
) -> Path:
    """Where the files go: the release when the test scores pass the target (or ``release_failing``),
    else the run folder's ``candidate/``."""
    return release_root if target_passed(spec, scores["test"]) or release_failing else run_dir / CANDIDATE


def publish(
    spec: ModelSpec,
    manifest: Manifest,
    *,
    run_dir: Path,
    release_root: Path,
    release_failing: bool,
    facts: RunFacts,
    final_loss: float | None,
    overrides: dict[str, Any],
    limit_maps: int | None,
    trust_pickle: bool = False,
    loaded: dict | None = None,
    info_extra: dict[str, Any] | None = None,
) -> tuple[str, Path, dict[str, Any], dict[str, dict[str, float]]]:
    """Score the run's best checkpoint on one process and write its release files as one switch.

    Returns (status, release root written, info, scores): ``trained`` into ``release_root``, or
    ``below target`` into ``<run_dir>/candidate`` (unless ``release_failing``). ``loaded``: splits
    already in memory; ``info_extra``: keys added to the metadata (``init_from``).
    """
    module = PlannerModule.load_from_checkpoint(run_dir / BEST, map_location="cpu")
    model = module.model.eval()
    scores = score_splits(
        model, spec, manifest, limit_maps=limit_maps, trust_pickle=trust_pickle, loaded=loaded
    )
    root = release_root_for(spec, scores, release_root, run_dir, release_failing)
    run = dict(
        seconds=facts.seconds,
        epochs_run=facts.epochs_run,
        best_epoch=facts.best_epoch,
        max_epochs=overrides.get("max_epochs", spec.epochs),
        best_validation_accuracy=facts.best_validation_accuracy,
        final_loss=final_loss,
        train_size=facts.train_size,
        valid_size=facts.valid_size,
        limit_maps=limit_maps,
        world_size=facts.world_size,
        per_device_batch=facts.per_device_batch,
    )
    info = write_release(
        spec, manifest, model, scores=scores, root=root, run=run, overrides=overrides, info_extra=info_extra
    )
    return ("trained" if root == release_root else "below target"), root, info, scores
