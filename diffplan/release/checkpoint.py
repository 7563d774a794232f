"""Release checkpoints: weights plus the full model config, loadable with ``weights_only=True``.

A release checkpoint is a plain dict (no pickled classes) holding the registry name and the exact
constructor arguments beside the state dict, and no optimizer state. Loading rebuilds the planner
with ``create_model(algorithm, **model_config)`` and loads the weights strictly. Planners are saved
and loaded in eval mode (escnn modules keep different state-dict keys in training mode).

Formats, oldest first (one module owns them and their conversion; older files load, converted):

1. Complete-basis filter coefficients (``CompleteRegularFilter``) against an SVD basis that LAPACK picks
   differently with the thread count: a format-1 model loaded on two threads planned wrongly
   (SymVIN_maze15: 50.7% accuracy instead of 99.8%). Reading one converts its coefficients from that
   basis, computed on one thread as the models were trained.
2. Those coefficients against the canonical orbit basis (exact, host-independent).
3. Also every escnn steerable filter stored expanded (``expanded_filters``). escnn computes its bases
   numerically and they differ between CPUs' BLAS kernels: the format-2 SymVIN_maze15, trained on an
   AVX-512 Intel host, planned at 2.5% accuracy on an AMD EPYC. Reading a format-3 file sets each
   steerable filter's coefficients from its expanded filter on the reading host's basis.
   ``diffplan upgrade`` rewrites older files; run it where the model was trained (or with that host's
   BLAS kernels, e.g. ``OPENBLAS_CORETYPE=SkylakeX`` and a fresh escnn cache).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path
from typing import IO, Any, Literal

import torch
from torch import nn

from diffplan._atomic import atomic_path
from diffplan.envs._files import torch_zip_problem
from diffplan.errors import BadInputError, CheckpointError, DiffplanError, ModelNotFoundError
from diffplan.models import create_model
from diffplan.models._symmetry import CompleteRegularFilter, SteerableFilter, legacy_complete_regular_basis
from diffplan.release.layout import RELEASE_FOLDERS
from diffplan.release.metadata import read_info, write_info

CHECKPOINT_FORMAT = "diffplan-release-checkpoint"
CHECKPOINT_FORMAT_VERSION = 3
CANONICAL_BASIS_FORMAT = 2  # the first format whose complete-basis coefficients use the canonical basis
EXPANDED_FILTER_FORMAT = 3  # the first format that also stores every steerable filter expanded
MAX_CHECKPOINT_BYTES = 200 * 2**20  # read at most; a release checkpoint is under 10 MB (DESIGN section 7)
FILTER_TOLERANCE = 1e-4  # relative error of a stored filter rebuilt on this host's escnn basis
# Lightning run checkpoints (training's, not the release's) record which complete filter basis their
# coefficients refer to; older run checkpoints lack the key and are refused on resume.
RUN_BASIS_KEY, RUN_BASIS_VERSION = "diffplan_complete_basis", "orbit-v1"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_file_stats(path: str | Path) -> dict[str, Any]:
    """The metadata's record of a checkpoint file: ``file_size_mb`` (10**6 bytes), ``checkpoint_sha256``."""
    return {"file_size_mb": Path(path).stat().st_size / 1e6, "checkpoint_sha256": sha256_file(path)}


def save_release_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    name: str,
    algorithm: str,
    model_config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``model``'s weights and config atomically. ``extra`` holds plain data only (flags, data kind)."""
    was_training = model.training
    model.eval()
    record = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "name": name,
        "algorithm": algorithm,
        "model_config": dict(model_config),
        "extra": dict(extra or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "expanded_filters": expanded_filters(model),
    }
    # Serialised in memory first: torch.save names the zip's root folder after the file it writes, and a
    # temporary file's random name would make the same weights give different bytes each time.
    buffer = io.BytesIO()
    torch.save(record, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    model.train(was_training)


def read_release_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's record, read with ``weights_only=True`` on the CPU; never unpickles code.

    Refused (``CheckpointError``): a file over ``MAX_CHECKPOINT_BYTES``, anything ``torch.load`` refuses
    or fails on, and a record not of the release schema (``check_record``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train the model or give another path.")
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path} is {size / 1e6:.0f} MB, over the {MAX_CHECKPOINT_BYTES // 2**20} MiB a release "
            f"checkpoint may have (release checkpoints are under 10 MB); it is not read."
        )
    return load_release_record(path, path)


def load_release_record(source: str | Path | IO[bytes], label: str | Path) -> dict[str, Any]:
    """``torch.load(source, weights_only=True)`` checked as a release record; ``label`` names it in errors
    (``source`` may be a file path or a binary stream, e.g. a checkpoint inside an archive). A zip whose
    records unpack to more than its size is refused before ``torch.load`` inflates them."""
    problem = torch_zip_problem(Path(source) if isinstance(source, str | Path) else source)
    if problem is not None:
        raise CheckpointError(f"{label} is refused unread: {problem}; re-download or retrain it.")
    try:
        record = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{label} holds objects that torch.load(weights_only=True) refuses to unpickle; it is not a "
            f"release checkpoint and will not be loaded (unpickling can run code)."
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]  # an empty file's EOFError has no text
        raise CheckpointError(f"{label} is corrupted or truncated ({reason}); re-download it.") from err
    except Exception as err:  # any other file: the unpickler fails in its own ways (IndexError, ...)
        raise CheckpointError(
            f"{label} is not a torch checkpoint ({type(err).__name__} while reading it); give the path of "
            f"a release .ckpt file."
        ) from err
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{label} is not a diffplan release checkpoint (no '{CHECKPOINT_FORMAT}' marker)."
        )
    version = format_version(record, label)
    if version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{label} has checkpoint format {version}, newer than this diffplan reads "
            f"({CHECKPOINT_FORMAT_VERSION}); upgrade diffplan."
        )
    check_record(record, label)
    return record


def _tensor_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def _str_keys(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _filter_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _tensor_map(f) for k, f in value.items())


def _first_bad_entry(value: dict, *, tensors: bool) -> Any:
    """The first key of ``value`` that is not a string naming a tensor (or a mapping of tensors)."""
    for name, item in value.items():
        valid = isinstance(item, torch.Tensor) if tensors else _tensor_map(item)
        if not isinstance(name, str) or not valid:
            return name
    return None


_SCHEMA = {  # field -> (check, what it must be)
    "name": (lambda value: isinstance(value, str), "a string"),
    "algorithm": (lambda value: isinstance(value, str), "a string"),
    "model_config": (_str_keys, "a mapping of argument names to values"),
    "extra": (_str_keys, "a mapping"),
    "state_dict": (_tensor_map, "a mapping of names to tensors"),
    "expanded_filters": (_filter_map, "a mapping of module names to {'weight': tensor, 'bias': tensor}"),
}


def check_record(record: dict[str, Any], source: str | Path = "checkpoint") -> None:
    """Raise ``CheckpointError`` naming the first field of ``record`` not of the release schema: ``name``
    and ``algorithm`` strings, ``model_config`` and ``extra`` dicts with string keys, ``state_dict`` a dict
    of name -> tensor, and (from format 3) ``expanded_filters`` of module -> {"weight", "bias"?: tensor}.
    """
    expanded = format_version(record, source) >= EXPANDED_FILTER_FORMAT
    fields = [key for key in _SCHEMA if key != "expanded_filters" or expanded]
    for key in fields:
        valid, what = _SCHEMA[key]
        value = record.get(key)
        if key not in record:
            got = "it has none"
        elif valid(value):
            continue
        elif isinstance(value, dict) and key in ("state_dict", "expanded_filters"):
            bad = _first_bad_entry(value, tensors=key == "state_dict")
            got = f"but its entry {bad!r} is a {type(value[bad]).__name__}"
        else:
            got = f"got {type(value).__name__}"
        raise CheckpointError(
            f"{source}: {key!r} must be {what}, {got}; it is not a release checkpoint diffplan wrote."
        )


def format_version(record: dict[str, Any], source: str | Path = "checkpoint") -> int:
    """The record's format version (1 when absent: the first format did not write one)."""
    version = record.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{source}: 'format_version' must be a whole number >= 1, got {version!r}; "
            f"it is not a release checkpoint diffplan wrote."
        )
    return version


def is_current(record: dict[str, Any]) -> bool:
    """Whether a record is in the format this diffplan writes (older ones load, converted)."""
    return format_version(record) >= CHECKPOINT_FORMAT_VERSION


# Set on each steerable filter by ``_load_expanded_filters``: (its coefficients after loading, the
# expanded filter it was loaded from). Loading solves for coefficients by least squares, so expanding
# them again gives the stored filter only to float precision; a filter whose coefficients are still the
# loaded ones is saved as the filter it was loaded from, so that saving a loaded planner (an Ensemble
# assembled from release members, any re-save) writes the same filters and reloads to the same bits.
_LOADED_FILTER = "_diffplan_loaded_filter"


def _same_tensors(now: dict[str, torch.Tensor], then: dict[str, torch.Tensor]) -> bool:
    return now.keys() == then.keys() and all(
        now[k].dtype == then[k].dtype and now[k].shape == then[k].shape and torch.equal(now[k].cpu(), then[k])
        for k in now
    )


def _expanded(module: SteerableFilter) -> dict[str, torch.Tensor]:
    """``{"weight", "bias"?}`` of one steerable filter: the stored filter it was loaded with while its
    coefficients are unchanged (see ``_LOADED_FILTER``), else its expansion."""
    loaded = getattr(module, _LOADED_FILTER, None)
    if loaded is not None and _same_tensors(module.state_dict(), loaded[0]):
        return {key: value.clone() for key, value in loaded[1].items()}
    weight, bias = module()
    entry = {"weight": weight.detach().cpu().clone()}
    if bias is not None:
        entry["bias"] = bias.detach().cpu().clone()
    return entry


def expanded_filters(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Every escnn steerable filter of ``model`` expanded: ``{module name: {"weight", "bias"?}}``, named
    by its path in ``model`` (``members.1.h`` for a filter of an Ensemble's second member).

    Why (format 3): escnn's bases are computed numerically and differ between CPUs (see
    ``SteerableFilter.set_filter``), so coefficients alone define other filters on another host; the
    expanded filters are the same everywhere. A filter loaded from a format-3 file and not changed since
    is written as it was read (``_LOADED_FILTER``). Shapes: weight (out, in, k, k), bias (out,).
    """
    with torch.no_grad():
        return {
            name: _expanded(module)
            for name, module in model.named_modules()
            if isinstance(module, SteerableFilter)
        }


def _load_expanded_filters(model: nn.Module, filters: Any, source: str | Path) -> None:
    """Set each steerable filter's coefficients from its stored expanded filter, on this host's basis."""
    modules = dict(model.named_modules())
    steerable = {name for name, module in modules.items() if isinstance(module, SteerableFilter)}
    if not isinstance(filters, dict) or set(filters) != steerable:
        raise CheckpointError(
            f"{source}: its expanded filters do not match the planner's steerable filters "
            f"({sorted(steerable)}); the file is damaged or was not written by diffplan."
        )
    for name in sorted(steerable):
        entry, module = filters[name], modules[name]
        weight = entry.get("weight") if isinstance(entry, dict) else None
        expected = (module.out_size, module.in_size, module.kernel_size, module.kernel_size)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != expected:
            raise CheckpointError(
                f"{source}: expanded filter {name!r} is missing or not of shape {expected}."
            )
        error = module.set_filter(weight, entry.get("bias"))
        if not error <= FILTER_TOLERANCE:
            raise CheckpointError(
                f"{source}: filter {name!r} is not an equivariant filter of its layer on this host's "
                f"basis (relative error {error:.1e}); the file is damaged."
            )
        stored = {key: entry[key].detach().cpu().clone() for key in ("weight", "bias") if key in entry}
        coefficients = {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}
        setattr(module, _LOADED_FILTER, (coefficients, stored))


def canonical_basis_state(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` with every complete-basis filter's coefficients moved from the format-1 SVD basis to
    the canonical one (same filters, to float precision); other entries unchanged.

    Shapes: ``<module>.weights`` (out_fields, in_fields, d) -> the same.
    """
    converted = dict(state_dict)
    for name, module in model.named_modules():
        key = f"{name}.weights" if name else "weights"
        # Trivial-input filters came after format 1: no file of that format holds one.
        if isinstance(module, CompleteRegularFilter) and not module.trivial_input and key in converted:
            old = legacy_complete_regular_basis(module.group, module.kernel_size).flatten(1).double()
            change = old @ module.basis.flatten(1).double().T  # (d, d): old element -> new coefficients
            converted[key] = (converted[key].double() @ change).to(converted[key].dtype)
    return converted


def _check_sizes(record: dict[str, Any], source: str | Path) -> None:
    """The planner the record's config describes has the record's weights, checked before it is built:
    shapes from a build on the meta device, or the count of an escnn planner's weights (``_model_size``).
    A config describing a far larger planner than its weights (``l_h: 10**9``) is refused unallocated."""
    from diffplan.release._model_size import count_weights, meta_shapes

    algorithm, config, state = record["algorithm"], record["model_config"], record["state_dict"]
    stored = {key: tuple(value.shape) for key, value in state.items()}
    mismatch = "; the checkpoint is damaged, or was made by another version of the planner: retrain it"
    try:
        shapes = meta_shapes(algorithm, config)
        if shapes is None:
            size, held = count_weights(algorithm, config), sum(value.numel() for value in state.values())
            if size != held:
                raise CheckpointError(
                    f"{source}: its model config describes a {algorithm} of {size:,} weights but its state "
                    f"dict holds {held:,}{mismatch}."
                )
            return
    except CheckpointError:
        raise
    except (DiffplanError, TypeError) as err:
        raise CheckpointError(f"{source}: its model config does not build a {algorithm}: {err}") from err
    for key in sorted(set(shapes) | set(stored)):
        if shapes.get(key) != stored.get(key):
            raise CheckpointError(
                f"{source}: its model config gives {key!r} the shape {shapes.get(key)}, its state dict "
                f"{stored.get(key)}{mismatch}."
            )


def model_from_record(record: dict[str, Any], source: str | Path = "checkpoint") -> nn.Module:
    """Rebuild the planner of a checkpoint record and load its weights strictly, in eval mode.

    The record's schema (``check_record``) and its config's sizes against its state dict are checked
    before anything is built (``CheckpointError``).
    """
    check_record(record, source)
    _check_sizes(record, source)
    try:
        model = create_model(record["algorithm"], **record["model_config"])
    except (DiffplanError, TypeError) as err:
        raise CheckpointError(f"{source}: its model config does not build a planner ({err}).") from err
    model.eval()
    state = record["state_dict"]
    if format_version(record, source) < CANONICAL_BASIS_FORMAT:
        state = canonical_basis_state(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])[:300]
        raise CheckpointError(
            f"{source}: its weights do not match the planner built from its config ({detail}); "
            f"the checkpoint was made by another version of the planner: retrain it or use the "
            f"matching diffplan version."
        ) from err
    if format_version(record, source) >= EXPANDED_FILTER_FORMAT:
        _load_expanded_filters(model, record.get("expanded_filters"), source)
    return model


def _release_roots() -> list[Path]:
    roots = [Path.cwd() / "pretrained_models", Path(__file__).resolve().parents[2] / "pretrained_models"]
    return list(dict.fromkeys(roots))


def find_release_checkpoint(name: str, release_root: str | Path | None = None) -> Path:
    """The ``<folder>/<name>.ckpt`` of a release model: under ``release_root`` when given (e.g.
    ``pretrained_models/v1.1``), else in ./pretrained_models or the source tree's (release v1.0)."""
    if release_root is None:
        roots, where = _release_roots(), "pretrained_models"
    else:
        roots, where = [Path(release_root)], str(release_root)
        if not roots[0].is_dir():
            raise ModelNotFoundError(f"release root {where} is not a folder; check the path.")
    for root in roots:
        for folder in RELEASE_FOLDERS:
            candidate = root / folder / f"{name}.ckpt"
            if candidate.is_file():
                return candidate
    raise ModelNotFoundError(
        f"no release model {name!r} under {where}/{{grid,graph,continuous}}/; "
        f"give a checkpoint path or train it with `diffplan train --only {name}`."
    )


def info_path_of(checkpoint: str | Path) -> Path:
    """The ``<name>_info.json`` beside a release checkpoint ``<name>.ckpt``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}_info.json")


def verify_checkpoint(checkpoint: str | Path, info: str | Path | None = None) -> str:
    """Check the checkpoint's sha256 against ``model_stats.checkpoint_sha256`` of its metadata (default:
    the ``<name>_info.json`` beside it); returns the sha256. Raises ``CheckpointError`` (one line naming
    both sums) when they differ, and when the metadata is missing or records no sha256."""
    checkpoint = Path(checkpoint)
    info = info_path_of(checkpoint) if info is None else Path(info)
    skip = "or pass verify=False to load the checkpoint unchecked"
    if not info.is_file():
        raise CheckpointError(
            f"{checkpoint} has no metadata {info} to check its sha256 against; restore that file {skip}."
        )
    try:
        recorded = json.loads(info.read_text())["model_stats"]["checkpoint_sha256"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{info} records no model_stats.checkpoint_sha256 to check {checkpoint} against "
            f"({type(err).__name__}); restore the metadata {skip}."
        ) from err
    actual = sha256_file(checkpoint)
    if actual != recorded:
        raise CheckpointError(
            f"{checkpoint} has sha256 {actual} but {info} records {recorded}: the checkpoint was modified "
            f"or corrupted after training; re-download or retrain it ({skip})."
        )
    return actual


def load_model(
    name_or_path: str | Path,
    *,
    verify: bool | Literal["auto"] = "auto",
    release_root: str | Path | None = None,
) -> nn.Module:
    """A released planner in eval mode, by release name (``"VIN_maze15"``) or checkpoint path.

    A name is looked up in ``release_root``'s ``{grid,graph,continuous}/`` folders when given
    (``release_root="pretrained_models/v1.1"`` for release v1.1), else in ./pretrained_models (v1.0).

    The checkpoint's sha256 is first checked against its metadata (:func:`verify_checkpoint`):

    - ``verify="auto"`` (default): always for a release name (its ``_info.json`` must be there); for a
      path, when a ``<name>_info.json`` lies beside the checkpoint, and not at all when none does (a bare
      checkpoint, copied out of the release, loads as it is);
    - ``verify=True``: always; a checkpoint without metadata beside it is refused;
    - ``verify=False``: never (a checkpoint being repaired, or checked separately as ``validate`` does).

    A mismatch raises ``CheckpointError``. The returned module carries ``release_info`` (name,
    algorithm, config and flags) for planning.
    """
    if not (isinstance(verify, bool) or verify == "auto"):
        raise BadInputError(f"verify must be True, False or 'auto', got {verify!r}.")
    path = Path(name_or_path)
    by_name = False
    if not path.is_file():
        if path.suffix == ".ckpt" or len(path.parts) > 1:
            raise CheckpointError(f"checkpoint {path} does not exist; check the path.")
        path = find_release_checkpoint(str(name_or_path), release_root)
        by_name = True
    check = verify if isinstance(verify, bool) else by_name or info_path_of(path).is_file()
    if check:
        verify_checkpoint(path)
    record = read_release_checkpoint(path)
    model = model_from_record(record, path)
    model.release_info = {k: record[k] for k in ("name", "algorithm", "model_config", "extra")}
    return model


def upgrade_release_checkpoint(checkpoint: str | Path) -> bool:
    """Rewrite ``checkpoint`` (and its ``<name>_info.json`` beside it, if any) in the current format.

    Why: a format-1 file still loads, but its conversion rebuilds the old SVD basis on the reading machine,
    and LAPACK may choose that basis differently on another CPU. Upgrading on the machine that trained the
    model fixes the filters once. The metadata's checksum and size follow the new file; every other figure
    stays, as the filters are the same to float precision (``diffplan validate`` re-scores).

    Returns False, touching nothing, when the file is already current, or is format 2 and its planner
    has no escnn steerable filter (nothing host-dependent to fix).
    """
    checkpoint = Path(checkpoint)
    record = read_release_checkpoint(checkpoint)
    if is_current(record):
        return False
    model = model_from_record(record, checkpoint)
    portable = format_version(record, checkpoint) >= CANONICAL_BASIS_FORMAT
    if portable and not any(isinstance(m, SteerableFilter) for m in model.modules()):
        return False  # no host-dependent basis in this planner: the file is portable as it is
    save_release_checkpoint(
        checkpoint,
        model,
        name=record["name"],
        algorithm=record["algorithm"],
        model_config=record["model_config"],
        extra=record["extra"],
    )
    info_path = checkpoint.with_name(f"{checkpoint.stem}_info.json")
    if info_path.is_file():
        info = read_info(info_path)
        info["model_stats"].update(checkpoint_file_stats(checkpoint))
        write_info(info_path, info)
    return True
