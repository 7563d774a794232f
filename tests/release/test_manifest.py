"""A bad manifest is refused before any work starts, naming the file, the entry and the field."""

import copy
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from diffplan.errors import ManifestError
from diffplan.release.manifest import MAX_MANIFEST_BYTES, load_manifest
from diffplan_cli.app import app

RELEASE = Path(__file__).resolve().parents[2] / "manifests" / "release_v1.yaml"


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def minimal() -> dict:
    return {
        "defaults": {"epochs": 2, "batch_size": 4},
        "datasets": {"grid": {"path": "data/g.npz", "kind": "grid", "maze_size": 7}},
        "models": [
            {
                "name": "VIN_tiny",
                "algorithm": "VIN",
                "task": "GridWorld",
                "data": "data/g.npz",
                "folder": "grid",
                "target": {"minimum": 0.5},
            }
        ],
    }


def test_the_release_manifest_lists_the_ten_release_models_with_their_targets():
    manifest = load_manifest(RELEASE)
    targets = {m.name: m.target.minimum for m in manifest.models}
    assert targets == {
        "VIN_maze15": 0.94,
        "SymVIN_maze15": 0.96,
        "DE-VIN_maze15": 0.93,
        "DE-SymVIN_maze15": 0.95,
        "MP-VIN_graph": 0.91,
        "Sym-MP-VIN_graph": 0.93,
        "GAT-VIN_graph": 0.90,
        "GCN-VIN-v2_graph": 0.89,
        "MP-VIN_continuous": 0.90,
        "Sym-MP-VIN_continuous": 0.92,
    }
    assert {str(d.path) for d in manifest.datasets.values()} == {
        "data/m15_4abs-cc_10k.npz",
        "data/m15_graph-cc_10k.pth",
        "data/m15_graph-cc_10k_cont_act.pth",
    }
    assert all(m.target.metric == "accuracy" for m in manifest.models)


def test_defaults_fill_entries_and_entries_override_them(tmp_path):
    data = minimal()
    data["models"][0]["batch_size"] = 8
    manifest = load_manifest(write(tmp_path, data))
    entry = manifest.model("VIN_tiny")
    assert entry.epochs == 2 and entry.batch_size == 8 and entry.lr == 1e-3 and entry.optimizer == "RMSprop"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["models"][0].update(lr=-1), "models[0] (VIN_tiny): field 'lr'"),
        (lambda d: d["models"][0].update(epochs="many"), "field 'epochs'"),
        (lambda d: d["models"][0].update(learning_rate=0.1), "field 'learning_rate'"),
        (lambda d: d["models"][0].update(algorithm="VNI"), "Did you mean 'VIN'"),
        (lambda d: d["models"][0].update(task="GraphWorld"), "field 'task'"),
        (lambda d: d["models"][0].update(data="data/other.npz"), "field 'data'"),
        (lambda d: d["models"][0].update(model={"widht": 3}), "takes no argument 'widht'"),
        (lambda d: d["models"][0]["target"].update(minimum=1.5), "field 'target.minimum'"),
        (lambda d: d["models"].append(copy.deepcopy(d["models"][0])), "appears twice"),
        (lambda d: d["datasets"]["grid"].update(train_size=0), "datasets.grid: field 'train_size'"),
        (lambda d: d.update(extra=1), "unknown top-level key 'extra'"),
        (lambda d: d.pop("models"), "'models' must be a non-empty list"),
    ],
)
def test_bad_manifests_name_file_entry_and_field(tmp_path, mutate, expected):
    data = minimal()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_unparsable_yaml_and_missing_files_are_refused(tmp_path):
    with pytest.raises(ManifestError, match="not readable YAML"):
        load_manifest(write(tmp_path, "models: [\n"))
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "absent.yaml")


# --- hostile manifests (issue #14): refused before any work, one line naming file, line or field -------


def text_of(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def test_an_alias_bomb_is_refused_at_once_naming_the_line(tmp_path):
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = write(tmp_path, "\n".join(levels) + "\n" + text_of(minimal()))
    assert len(path.read_bytes()) < 2048  # nine levels of nine: 387 million strings once expanded
    start = time.perf_counter()
    with pytest.raises(
        ManifestError, match="anchors and aliases .* expands to more than 100,000 values"
    ) as err:
        load_manifest(path)
    assert time.perf_counter() - start < 5
    assert str(path) in str(err.value) and "line " in str(err.value) and "defaults:" in str(err.value)


def test_aliases_that_yaml_safe_dump_writes_for_shared_values_load(tmp_path):
    data = minimal()
    data["models"].append({**copy.deepcopy(data["models"][0]), "name": "VIN_two"})
    data["models"][1]["target"] = data["models"][0]["target"]  # one object twice: &id001 ... *id001
    path = write(tmp_path, data)
    assert "*id001" in path.read_text()
    assert [m.target.minimum for m in load_manifest(path).models] == [0.5, 0.5]


def test_a_manifest_nested_too_deeply_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="nested too deeply"):
        load_manifest(write(tmp_path, "models: " + "[" * 50_000))


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda text: text + "models:\n- {name: X}\n", "'models'"),
        (
            lambda text: text.replace("  folder: grid\n", "  folder: grid\n  epochs: 3\n  epochs: 4\n"),
            "'epochs'",
        ),
    ],
)
def test_duplicate_keys_are_refused_naming_key_and_lines(tmp_path, edit, key):
    path = write(tmp_path, edit(text_of(minimal())))
    with pytest.raises(ManifestError, match=f"line [0-9]+: key {key} appears twice .*first on line [0-9]+"):
        load_manifest(path)


def test_an_oversized_manifest_is_not_parsed(tmp_path):
    path = write(tmp_path, text_of(minimal()) + "#" * MAX_MANIFEST_BYTES)
    with pytest.raises(ManifestError, match="over the .* a manifest may have"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"model": {"k": "forty"}}, "field 'model': k must be an integer >= 1, got 'forty'"),
        ({"model": {"k": -1}}, "field 'model': k must be an integer >= 1, got -1"),
        ({"algorithm": "SymVIN", "group": "z99"}, "field 'group': unknown symmetry group 'z99'"),
        ({"model": {"l_h": 10**9}}, "field 'model': VIN with this config would hold 20,000,000,880 weights"),
        (
            {"algorithm": "SymVIN", "model": {"l_h": 10**9}},
            "field 'model': SymVIN with this config would hold",
        ),
        ({"model": [1, 2]}, "field 'model': must be a mapping of the planner's arguments"),
    ],
)
def test_every_entrys_planner_arguments_are_checked_before_any_work(tmp_path, entry, expected):
    data = minimal()
    data["models"].insert(0, {**copy.deepcopy(data["models"][0]), "name": "VIN_ok"})
    data["models"][1].update(entry)  # the second entry: found at load time, not when it trains
    with pytest.raises(ManifestError, match="models\\[1\\] \\(VIN_tiny\\): " + expected.replace("(", "\\(")):
        load_manifest(write(tmp_path, data))


def test_a_planner_argument_in_defaults_must_be_a_mapping(tmp_path):
    data = minimal()
    data["defaults"]["model"] = [1]
    with pytest.raises(ManifestError, match="field 'defaults.model': must be a mapping"):
        load_manifest(write(tmp_path, data))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seed", -1, "a seed must be a whole number from 0 to 4294967295, got -1"),
        ("seed", 2**32, "from 0 to 4294967295, got 4294967296"),
        ("seed", 1e30, "from 0 to 4294967295, got 1e\\+30"),
        ("seed", True, "got True"),
        ("seed", 4.5, "fractional part"),
        ("lr", float("inf"), "finite number"),
        ("weight_decay", float("inf"), "finite number"),
        ("gradient_clip", float("inf"), "finite number"),
        ("max_minutes", float("inf"), "finite number"),
        ("lr", float("nan"), "finite number"),
    ],
)
def test_seeds_are_32_bit_and_training_numbers_finite(tmp_path, field, value, message):
    data = minimal()
    data["models"][0][field] = value
    with pytest.raises(ManifestError, match=f"field '{field}': .*{message}"):
        load_manifest(write(tmp_path, data))


def test_a_data_set_seed_is_32_bit_too(tmp_path):
    data = minimal()
    data["datasets"]["grid"]["seed"] = 2**40
    with pytest.raises(ManifestError, match="datasets.grid: field 'seed'"):
        load_manifest(write(tmp_path, data))


def test_a_target_minimum_must_be_reachable_under_strictly_greater_than(tmp_path):
    data = minimal()
    data["models"][0]["target"]["minimum"] = 1.0
    with pytest.raises(ManifestError, match="field 'target.minimum': Input should be less than 1"):
        load_manifest(write(tmp_path, data))


def test_a_bad_seed_stops_train_before_it_writes_anything(tmp_path):
    data = minimal()
    data["models"][0]["seed"] = 10**30
    path = write(tmp_path, data)
    runs = tmp_path / "runs"
    args = [
        "train",
        "--manifest",
        str(path),
        "--run-root",
        str(runs),
        "--release-root",
        str(tmp_path / "rel"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "field 'seed': a seed must be a whole number" in result.output
    assert not list(tmp_path.rglob("*.lock")) and not list(runs.rglob("*"))
