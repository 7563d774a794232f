"""An Ensemble entry's "training": assemble it from its members' release checkpoints, score, publish.

Nothing is fitted. Each member is loaded from its release checkpoint under the release root (checked
against its metadata's sha256, its entry's recipe and the data's fingerprint), the Ensemble is built
from the loaded planners themselves (so each plans exactly as its release file does, and the Ensemble's
checkpoint stores each steerable filter as the member's file stores it), scored on the valid and test
splits like any trained model, and its three release files are written as one switch. Its metadata
records a training time of 0 and, under ``ensemble``, each member's name, folder, checkpoint sha256 and
recorded accuracies, and whether the Ensemble beats its best member (by validation accuracy).

A member trained with overrides (``--max-epochs``, ``--limit-maps``) may be used; its overrides become
the Ensemble's (``member_overrides``), so such an Ensemble is never the release either.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from diffplan.envs import file_fingerprint
from diffplan.errors import DataFileError, TrainingError
from diffplan.models import create_model
from diffplan.release.checkpoint import model_from_record, read_release_checkpoint
from diffplan.release.layout import DEFAULT_RELEASE_ROOT, ReleasePaths
from diffplan.release.manifest import Manifest, ModelSpec
from diffplan.release.metadata import read_info
from diffplan.scoring.metrics import ACCURACY
from diffplan.training.locks import file_lock, release_lock_path, training_locks
from diffplan.training.release_files import (
    release_root_for,
    score_splits,
    up_to_date_problems,
    write_release,
)


@dataclass
class Assembled:
    """What assembling an Ensemble entry did: ``status`` trained or below target, where it was written,
    its metadata and scores."""

    status: str
    written_to: Path
    info: dict[str, Any]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


def _train_command(manifest: Manifest, name: str, release_root: Path) -> str:
    root = "" if Path(release_root) == DEFAULT_RELEASE_ROOT else f" --release-root {release_root}"
    return f"`diffplan train --manifest {manifest.path} --only {name}{root}`"


def load_member(
    spec: ModelSpec, member: ModelSpec, manifest: Manifest, release_root: Path, fingerprint: str,
    role: str = "member",
):  # fmt: skip
    """Entry ``member``'s planner, loaded from its release checkpoint for entry ``spec``, and its
    metadata: an Ensemble's member, or (``role="starting point"``) the entry an ``init_from`` names.

    Raises ``TrainingError`` (one line naming the entry and the command that trains it) when its
    release files are missing, incomplete or inconsistent, were trained from another recipe than its
    entry, or on other data than the entry's.
    """
    paths = ReleasePaths.of(member, release_root)
    command = _train_command(manifest, member.name, release_root)
    if not paths.checkpoint.is_file():
        raise TrainingError(
            f"{spec.name}: {role} {member.name} has no release checkpoint {paths.checkpoint}; train it "
            f"first with {command}."
        )
    problems = up_to_date_problems(member, release_root, allow_overrides=True)
    if problems:
        raise TrainingError(
            f"{spec.name}: {role} {member.name}'s release files are not its finished training "
            f"({problems[0]}); train it again with {command} (add --force to replace them)."
        )
    info = read_info(paths.info)
    if info["training_data"].get("fingerprint") != fingerprint:
        raise TrainingError(
            f"{spec.name}: {role} {member.name} was trained on other data than {spec.data} holds now "
            f"(fingerprints differ); retrain it with {command} --force."
        )
    record = read_release_checkpoint(paths.checkpoint)
    if record["algorithm"] != member.algorithm or record["model_config"] != member.model_args():
        raise TrainingError(
            f"{spec.name}: {role} {member.name}'s checkpoint holds another planner than its entry "
            f"describes; retrain it with {command} --force."
        )
    return model_from_record(record, paths.checkpoint), info


def assemble(spec: ModelSpec, members: list[nn.Module]) -> nn.Module:
    """The Ensemble of ``spec`` made of the loaded ``members`` themselves, in eval mode, every member at
    the Ensemble's budget."""
    model = create_model(spec.algorithm, **spec.model_args()).eval()
    for index, member in enumerate(members):
        model.members[index] = member.eval()
    model.k = model.k  # the budget reaches the members just put in
    return model


def _member_record(member: ModelSpec, info: dict[str, Any]) -> dict[str, Any]:
    performance = info["performance"]
    return {
        "name": member.name,
        "algorithm": member.algorithm,
        "folder": member.folder,
        "checkpoint_sha256": info["model_stats"]["checkpoint_sha256"],
        "validation_accuracy": performance.get("validation_accuracy"),
        "test_accuracy": performance.get("test_accuracy"),
    }


def assemble_ensemble(
    spec: ModelSpec,
    manifest: Manifest,
    *,
    release_root: Path,
    run_root: Path,
    release_failing: bool,
    limit_maps: int | None,
    overrides: dict[str, Any],
    trust_pickle: bool = False,
) -> Assembled:
    """Assemble, score and publish Ensemble entry ``spec`` (module doc); the caller has checked that its
    release files are not up to date (or was told to redo them)."""
    if not Path(spec.data).is_file():
        raise DataFileError(
            f"data set {spec.data} for {spec.name} does not exist; make it with "
            f"`diffplan data generate --manifest {manifest.path}`."
        )
    release_root, run_dir = Path(release_root), Path(run_root) / spec.name
    members = [manifest.model(name) for name in spec.members]
    fingerprint = file_fingerprint(spec.data)
    with contextlib.ExitStack() as locks:
        locks.enter_context(training_locks(release_root / spec.folder, run_dir, spec.name))
        for member in members:  # no member is retrained while it is read
            folder = release_root / member.folder
            locks.enter_context(file_lock(release_lock_path(folder, member.name), member.name, remove=True))
        loaded = [load_member(spec, member, manifest, release_root, fingerprint) for member in members]
        model = assemble(spec, [planner for planner, _ in loaded])
        member_overrides = {
            member.name: info["training_config"]["overrides"]
            for member, (_, info) in zip(members, loaded, strict=True)
            if info["training_config"].get("overrides")
        }
        overrides = {**overrides, **({"member_overrides": member_overrides} if member_overrides else {})}
        scores = score_splits(model, spec, manifest, limit_maps=limit_maps, trust_pickle=trust_pickle)
        root = release_root_for(spec, scores, release_root, run_dir, release_failing)
        records = [_member_record(member, info) for member, (_, info) in zip(members, loaded, strict=True)]
        best = max(records, key=lambda r: r["validation_accuracy"] or 0.0)
        ensemble = {
            "members": records,
            "best_member": best["name"],
            "beats_best_member": {
                split: scores[key][ACCURACY] > (best[f"{split}_accuracy"] or 0.0)
                for split, key in (("validation", "valid"), ("test", "test"))
            },
        }
        run = dict(
            seconds=0.0,  # assembled, not trained
            epochs_run=0,
            best_epoch=0,
            max_epochs=0,
            best_validation_accuracy=scores["valid"][ACCURACY],
            final_loss=None,
            train_size=int(loaded[0][1]["training_data"].get("train_size") or 0),
            valid_size=int(scores["valid"]["maps"]),
            limit_maps=limit_maps,
        )
        info = write_release(
            spec, manifest, model, scores=scores, root=root, run=run, overrides=overrides,
            info_extra={"ensemble": ensemble},
        )  # fmt: skip
    status = "trained" if root == release_root else "below target"
    return Assembled(status, root, info, scores)
