"""The release manifest (DESIGN section 6): one YAML file listing the data sets and every model.

Layers: the registry's constructor defaults, then the manifest's ``defaults`` block, then the model
entry, then CLI flags. Unknown keys are rejected; a bad manifest is refused before any work starts,
naming the file, the entry and the field.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PositiveInt,
    ValidationError,
    model_validator,
)

from diffplan.errors import DiffplanError, ManifestError, ModelNotFoundError
from diffplan.release.layout import RELEASE_FOLDERS
from diffplan.scoring.metrics import METRICS
from diffplan.task import WORLDS, Task


def _world_to_task(value: Any) -> Any:
    if isinstance(value, str) and value not in WORLDS:
        raise ValueError(f"must be one of {', '.join(WORLDS)}, got {value!r}")
    return WORLDS[value] if isinstance(value, str) else value


# The manifest says ``task: GridWorld | GraphWorld``; the schema maps it onto ``Task`` and writes it back
# in the manifest's words, so resolved configs read as the manifest does.
WorldTask = Annotated[
    Task,
    BeforeValidator(_world_to_task),
    PlainSerializer(lambda task: next(w for w, t in WORLDS.items() if t is task), return_type=str),
]
NOT_RECIPE = ("target", "notes")  # entry fields that do not change what is trained
# Fields only a training run uses: an Ensemble entry is assembled from its members, so it takes none of
# them (the defaults block's values do not apply to it and its resolved config leaves them out).
TRAINING_FIELDS = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "scheduler",
    "gradient_clip",
    "early_stopping_patience",
    "max_minutes",
    "seed",
)
MAX_MANIFEST_BYTES = 1 << 20  # the release manifest is about 10 KB
MAX_EXPANDED_NODES = 100_000  # YAML values once aliases are expanded; the release manifest has 507
MAX_SEED = 2**32 - 1  # numpy's legacy seeding takes 0 .. 2**32 - 1


def _seed(value: Any) -> Any:
    """A whole number in 0 .. MAX_SEED (YAML may give 1.0e+30 or true); strings are pydantic's to refuse."""
    if isinstance(value, bool) or (isinstance(value, int | float) and not 0 <= value <= MAX_SEED):
        raise ValueError(f"a seed must be a whole number from 0 to {MAX_SEED}, got {value!r}")
    return value


Seed = Annotated[int, BeforeValidator(_seed)]
# Finite floats only: YAML reads .inf and .nan as floats, and a training run cannot use them.
FinitePositive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
FiniteNonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    """One data set the release needs: where it lives and the settings that generate it."""

    path: Path
    kind: Task
    maze_size: int = Field(15, ge=5)
    train_size: PositiveInt = 10000
    valid_size: PositiveInt = 2000
    test_size: PositiveInt = 2000
    seed: Seed = 0
    has_obstacle: bool = True
    cont_action: bool = False

    @model_validator(mode="after")
    def _grid_has_no_graph_flags(self) -> DatasetSpec:
        if self.kind is Task.GRID and self.cont_action:
            raise ValueError("cont_action applies to graph data sets only")
        return self


class Target(_Strict):
    """A release target: the model passes when ``metric`` on the test split is strictly above ``minimum``
    (so a minimum of 1 or more could never be met)."""

    metric: Literal[METRICS] = "accuracy"
    minimum: float = Field(ge=0.0, lt=1.0, allow_inf_nan=False)


class ModelSpec(_Strict):
    """Everything one model's training run needs (a resolved manifest entry).

    An Ensemble entry (algorithm ``Ensemble``) lists ``members``, the names of other entries of the same
    manifest (same task and data), and is assembled from their release checkpoints rather than trained;
    the manifest resolves its ``model`` to the Ensemble's constructor arguments (each member's algorithm
    and arguments, and the budget ``k``: the entry's own ``model: {k: N}`` or the largest of the members'
    trained budgets). See :func:`parse_manifest`.

    ``init_from`` names another trained entry of the same manifest and data set: training starts from the
    weights of its release checkpoint (loaded strictly, so the two planners must have the same
    parameters, e.g. a VIN and the DE-VIN of the same VI step) instead of a random initialisation.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    algorithm: str
    members: list[str] | None = None  # Ensemble entries only: the entries it averages
    # Another trained entry of the manifest (same data) whose release checkpoint gives the initial weights.
    init_from: str | None = None
    task: WorldTask
    data: Path
    group: str | None = None
    has_obstacle: bool = False  # graph entries: must equal their data set's (grid planners see every cell)
    cont_action: bool = False
    no_equiv_policy: bool = False
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 32
    lr: FinitePositive = 1e-3
    optimizer: Literal["RMSprop", "Adam", "AdamW", "SGD"] = "RMSprop"
    weight_decay: FiniteNonNegative = 0.0
    scheduler: Literal["none", "cosine", "plateau"] = "none"
    gradient_clip: FinitePositive | None = None
    early_stopping_patience: PositiveInt | None = None
    max_minutes: FinitePositive | None = None
    seed: Seed = 42
    model: dict[str, Any] = Field(default_factory=dict)
    folder: Literal[RELEASE_FOLDERS]
    target: Target
    notes: str = ""

    def model_args(self) -> dict[str, Any]:
        """Constructor arguments for ``create_model(self.algorithm, **args)``."""
        if self.members is not None:  # resolved by the manifest: {"members": [...], "k": ...}
            return dict(self.model)
        args = dict(self.model)
        if self.group is not None:
            args["group"] = self.group
        if self.task is Task.GRAPH:
            args["cont_action"] = self.cont_action
        if self.no_equiv_policy:
            args["no_equiv_policy"] = True
        return args

    def resolved(self) -> dict[str, Any]:
        """The entry as plain data (what ``configs/<name>_config.yaml`` stores); an Ensemble's leaves out
        the fields only training uses (``TRAINING_FIELDS``), a trained entry's leaves out ``members``."""
        unused = set(TRAINING_FIELDS) if self.members is not None else {"members"}
        if self.init_from is None:  # configs written before the field existed hold no such key
            unused.add("init_from")
        return self.model_dump(mode="json", exclude=unused)


def recipe_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The fields in which two resolved entries differ as training recipes, sorted.

    ``target`` and ``notes`` are not part of the recipe: they are QA and prose, so editing them neither
    retrains a model nor fails its release config check.
    """
    keys = (set(saved) | set(wanted)) - set(NOT_RECIPE)
    return sorted(k for k in keys if saved.get(k) != wanted.get(k))


class Manifest(_Strict):
    """A parsed, validated release manifest."""

    version: str = "1.0"
    path: Path = Path("manifests/release_v1.yaml")
    datasets: dict[str, DatasetSpec]
    models: list[ModelSpec]

    def model(self, name: str) -> ModelSpec:
        """The entry called ``name``; an unknown name lists the valid ones."""
        for spec in self.models:
            if spec.name == name:
                return spec
        names = ", ".join(m.name for m in self.models)
        raise ModelNotFoundError(f"{self.path}: no model named {name!r}; the manifest lists: {names}.")

    def select(self, names: list[str] | None) -> list[ModelSpec]:
        """The entries named (in manifest order), or all of them when ``names`` is empty."""
        if not names:
            return list(self.models)
        for name in names:
            self.model(name)
        return [m for m in self.models if m.name in set(names)]

    def dataset_for(self, spec: ModelSpec) -> DatasetSpec:
        """The data set entry whose path is the model's ``data``."""
        for dataset in self.datasets.values():
            if dataset.path == spec.data:
                return dataset
        raise ManifestError(
            f"{self.path}: model {spec.name!r} uses data {spec.data}, which no data set lists."
        )


def _format_validation_error(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(entry)"
    return f"{where}: field {field!r}: {first['msg'].removeprefix('Value error, ')}"


def _check_model_args(spec: ModelSpec, where: str) -> None:
    """The planner exists for the task, takes these arguments, accepts their values and is not too large:
    its own argument checks run on a build that allocates no weights (``_model_size``)."""
    from diffplan.models import get_model_entry
    from diffplan.release._model_size import planner_size

    try:
        entry = get_model_entry(spec.algorithm)
    except ModelNotFoundError as err:
        raise ManifestError(f"{where}: field 'algorithm': {err}") from err
    if not entry.composite and entry.task is not spec.task:
        raise ManifestError(
            f"{where}: field 'task': {spec.algorithm} is a {entry.task} planner, "
            f"but the entry says {spec.resolved()['task']}."
        )
    params = inspect.signature(entry.builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(spec.model_args()) - set(params))
        if unknown:
            raise ManifestError(
                f"{where}: field 'model': {spec.algorithm} takes no argument {unknown[0]!r}; "
                f"it takes: {', '.join(p for p in params if p != 'self')}."
            )
    try:
        planner_size(spec.algorithm, spec.model_args())
    except (DiffplanError, TypeError) as err:
        field = "group" if spec.group is not None and repr(spec.group) in str(err) else "model"
        raise ManifestError(f"{where}: field {field!r}: {err}") from err


def _is_composite(algorithm: Any) -> bool:
    """Whether ``algorithm`` names a registered composite planner (an Ensemble); False when unknown (the
    entry's own check names the valid planners)."""
    from diffplan.models import get_model_entry

    try:
        return isinstance(algorithm, str) and get_model_entry(algorithm).composite
    except ModelNotFoundError:
        return False


def _check_ensemble_fields(raw: dict[str, Any], where: str) -> None:
    """An Ensemble entry takes no training fields, no symmetry flags and no planner arguments but ``k``."""
    algorithm = raw["algorithm"]
    for key in TRAINING_FIELDS:
        if key in raw:
            raise ManifestError(
                f"{where}: field {key!r}: an {algorithm} entry is assembled from its members' release "
                f"checkpoints, not trained; remove it."
            )
    for key in ("group", "no_equiv_policy", "cont_action"):
        if raw.get(key) not in (None, False):
            raise ManifestError(
                f"{where}: field {key!r}: an {algorithm} entry takes its planners from its members' entries"
                + (
                    "; continuous-action planners output move vectors, which it does not average."
                    if key == "cont_action"
                    else "; remove it."
                )
            )
    extra = sorted(set(raw.get("model") or {}) - {"k"})
    if extra:
        raise ManifestError(
            f"{where}: field 'model': an {algorithm} entry takes only k (the planning budget of every "
            f"member), not {extra[0]!r}; its members' arguments come from their own entries."
        )


def _resolve_ensemble(spec: ModelSpec, entries: dict[str, ModelSpec], where: str) -> ModelSpec:
    """The Ensemble entry with its members checked (entries of this manifest, trained planners of its
    task and data, each once) and its ``model`` resolved to the Ensemble's constructor arguments."""
    from diffplan.models.ensemble import member_budget

    if not spec.members:
        raise ManifestError(f"{where}: field 'members': list the names of at least one entry to average.")
    for name in spec.members:
        member = entries.get(name)
        if spec.members.count(name) > 1:
            raise ManifestError(f"{where}: field 'members': {name!r} appears twice; list each member once.")
        if name == spec.name:
            raise ManifestError(f"{where}: field 'members': an {spec.algorithm} cannot be its own member.")
        if member is None:
            raise ManifestError(
                f"{where}: field 'members': {name!r} is not an entry of this manifest; it lists: "
                f"{', '.join(entries)}."
            )
        if member.members is not None:
            raise ManifestError(
                f"{where}: field 'members': {name} is itself an {member.algorithm}; list its members instead."
            )
        if member.task is not spec.task or member.data != spec.data:
            raise ManifestError(
                f"{where}: field 'members': {name} is a {member.resolved()['task']} entry on {member.data}, "
                f"this one a {spec.resolved()['task']} entry on {spec.data}; members must share its task "
                f"and data."
            )
    members = [entries[name] for name in spec.members]
    configs = [{"algorithm": m.algorithm, "config": m.model_args()} for m in members]
    k = spec.model.get("k")
    if k is None:
        k = max(member_budget(m.algorithm, m.model_args()) for m in members)
    resolved = spec.model_copy(update={"model": {"members": configs, "k": k}})
    _check_model_args(resolved, where)
    return resolved


def parse_manifest(data: Any, path: Path) -> Manifest:
    """Validate already-parsed YAML ``data`` read from ``path``."""
    if not isinstance(data, dict):
        raise ManifestError(
            f"{path}: expected a mapping with 'datasets' and 'models', got {type(data).__name__}."
        )
    unknown = sorted(set(data) - {"version", "defaults", "datasets", "models"})
    if unknown:
        raise ManifestError(
            f"{path}: unknown top-level key {unknown[0]!r}; allowed: version, defaults, datasets, models."
        )
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ManifestError(f"{path}: 'defaults' must be a mapping of entry fields.")

    datasets: dict[str, DatasetSpec] = {}
    raw_datasets = data.get("datasets") or {}
    if not isinstance(raw_datasets, dict) or not raw_datasets:
        raise ManifestError(f"{path}: 'datasets' must be a non-empty mapping of name -> data set.")
    for key, raw in raw_datasets.items():
        try:
            datasets[key] = DatasetSpec.model_validate(raw)
        except ValidationError as err:
            raise ManifestError(_format_validation_error(err, f"{path}: datasets.{key}")) from err

    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise ManifestError(f"{path}: 'models' must be a non-empty list of model entries.")
    models: list[ModelSpec] = []
    places: list[str] = []  # each entry's "<file>: models[i] (name)", for errors found once all are read
    seen: set[str] = set()
    for index, raw in enumerate(raw_models):
        label = raw.get("name", "?") if isinstance(raw, dict) else "?"
        where = f"{path}: models[{index}] ({label})"
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: expected a mapping of fields.")
        for source, block in (("defaults", defaults), (where, raw)):
            if not isinstance(block.get("model") or {}, dict):
                raise ManifestError(
                    f"{path if source == 'defaults' else where}: field "
                    f"'{'defaults.model' if source == 'defaults' else 'model'}': must be a mapping of the "
                    f"planner's arguments (e.g. {{k: 20, l_h: 150}}), got {type(block['model']).__name__}."
                )
        ensemble = _is_composite(raw.get("algorithm"))
        if ensemble:
            _check_ensemble_fields(raw, where)
            # The defaults' training fields and planner arguments are for trained entries.
            shared = {k: v for k, v in defaults.items() if k not in (*TRAINING_FIELDS, "model")}
            merged = {**shared, **raw, "model": dict(raw.get("model") or {})}
        else:
            merged = {**defaults, **raw}
            merged["model"] = {**(defaults.get("model") or {}), **(raw.get("model") or {})}
        try:
            spec = ModelSpec.model_validate(merged)
        except ValidationError as err:
            raise ManifestError(_format_validation_error(err, where)) from err
        if spec.name in seen:
            raise ManifestError(f"{where}: field 'name': {spec.name!r} appears twice; names must be unique.")
        seen.add(spec.name)
        if ensemble and spec.members is None:
            raise ManifestError(
                f"{where}: field 'members': an {spec.algorithm} entry lists the entries it averages, "
                f"e.g. members: [VIN_maze15, SymVIN_maze15]."
            )
        if not ensemble and spec.members is not None:
            raise ManifestError(
                f"{where}: field 'members': only an Ensemble entry lists members; a {spec.algorithm} is "
                f"trained from its data, not assembled."
            )
        if not ensemble:
            _check_model_args(spec, where)
        if not any(d.path == spec.data for d in datasets.values()):
            raise ManifestError(f"{where}: field 'data': {spec.data} is not one of the manifest's data sets.")
        dataset = next(d for d in datasets.values() if d.path == spec.data)
        if dataset.kind is not spec.task:
            raise ManifestError(
                f"{where}: field 'data': {spec.data} is a {dataset.kind} data set; "
                f"{spec.resolved()['task']} needs {spec.task}."
            )
        if ensemble and dataset.cont_action:
            raise ManifestError(
                f"{where}: field 'data': {spec.data} is a continuous-action data set; its planners output "
                f"move vectors, which an {spec.algorithm} does not average."
            )
        if spec.task is Task.GRAPH and spec.has_obstacle != dataset.has_obstacle:
            # One source: the data set builds the graphs; the entry may only repeat what it says.
            raise ManifestError(
                f"{where}: field 'has_obstacle': the entry says {spec.has_obstacle}, its data set "
                f"{spec.data} says {dataset.has_obstacle}; make them agree."
            )
        if spec.cont_action != dataset.cont_action:
            raise ManifestError(
                f"{where}: field 'cont_action': the entry says {spec.cont_action}, "
                f"its data set {spec.data} says "
                f"{dataset.cont_action}; make them agree."
            )
        models.append(spec)
        places.append(where)
    entries = {spec.name: spec for spec in models}
    for spec, where in zip(models, places, strict=True):
        _check_init_from(spec, entries, where)
    models = [
        _resolve_ensemble(spec, entries, where) if spec.members is not None else spec
        for spec, where in zip(models, places, strict=True)
    ]
    return Manifest(version=str(data.get("version", "1.0")), path=path, datasets=datasets, models=models)


def _check_init_from(spec: ModelSpec, entries: dict[str, ModelSpec], where: str) -> None:
    """``init_from`` names another trained entry on the same data, and following it never loops."""
    if spec.init_from is None:
        return
    field = f"{where}: field 'init_from'"
    if spec.members is not None:
        raise ManifestError(
            f"{field}: an {spec.algorithm} entry is assembled, not trained; remove init_from."
        )
    source = entries.get(spec.init_from)
    if source is None:
        raise ManifestError(
            f"{field}: {spec.init_from!r} is not an entry of this manifest; name one of "
            f"{', '.join(name for name in entries if name != spec.name)}."
        )
    if source.members is not None:
        raise ManifestError(
            f"{field}: {source.name} is an {source.algorithm} entry; start from a trained one."
        )
    if source.data != spec.data:
        raise ManifestError(
            f"{field}: {source.name} is trained on {source.data}, this entry on {spec.data}; "
            f"start from an entry trained on the same data."
        )
    chain = [spec.name]
    while source is not None:
        if source.name in chain:
            raise ManifestError(f"{field}: {' -> '.join([*chain, source.name])} loops; break the cycle.")
        chain.append(source.name)
        source = entries.get(source.init_from) if source.init_from else None


class _ManifestLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing duplicate keys (YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    if key in first:
                        raise _ManifestSyntaxError(
                            key_node.start_mark,
                            f"key {key!r} appears twice in one mapping (first on line {first[key]}); YAML "
                            f"would keep only the last, so remove one",
                        )
                    first[key] = key_node.start_mark.line + 1
                except TypeError:  # an unhashable key: the constructor below says so
                    break
        return super().construct_mapping(node, deep=deep)


class _ManifestSyntaxError(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark, message: str):
        super().__init__(message)
        self.line, self.message = mark.line + 1, message


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose anchors and aliases expand to over ``MAX_EXPANDED_NODES`` values.

    An alias is the node it names, shared: nine nested levels of nine aliases are a kilobyte that every
    reader of the parsed data (validation, copies, dumps) walks as 387 million values. Counted bottom-up
    with each node's expanded size memoised, so the count itself costs one pass over the distinct nodes.
    """
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        if isinstance(node, yaml.ScalarNode):
            children = []
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = [item for pair in node.value for item in pair]
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in size)
            continue
        size[id(node)] = 1 + sum(size[id(child)] for child in children)
        if size[id(node)] > MAX_EXPANDED_NODES:
            raise _ManifestSyntaxError(
                node.start_mark,
                f"through YAML anchors and aliases (&name, *name) this expands to more than "
                f"{MAX_EXPANDED_NODES:,} values (a manifest holds a few thousand); write the values out, "
                f"or put fields shared by entries in the `defaults:` block",
            )


def _parse_yaml(text: str) -> Any:
    loader = _ManifestLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_expansion(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; raises ``ManifestError`` naming file, entry and field.

    Refused before anything else: files over ``MAX_MANIFEST_BYTES``, documents that anchors and aliases
    expand past ``MAX_EXPANDED_NODES`` values (``_check_expansion``), and duplicate keys
    (``_ManifestLoader``).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            f"manifest {path} does not exist; pass --manifest with the path of a release manifest."
        )
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{path}: {size} bytes, over the {MAX_MANIFEST_BYTES} a manifest may have; is it a manifest?"
        )
    try:
        data = _parse_yaml(path.read_text())
    except _ManifestSyntaxError as err:
        raise ManifestError(f"{path}: line {err.line}: {err.message}.") from err
    except RecursionError as err:
        raise ManifestError(f"{path}: nested too deeply to be a manifest; check its brackets.") from err
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ManifestError(
            f"{path}: not readable YAML ({err.__class__.__name__}: {(str(err).splitlines() or [''])[0]})."
        ) from err
    return parse_manifest(data, path)
