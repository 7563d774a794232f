"""A bad manifest is refused before any work starts, naming the file, the entry and the field."""

from pathlib import Path

import pytest
import yaml

from diffplan.errors import ManifestError
from diffplan.release.manifest import load_manifest

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
        (lambda d: d["models"].append(dict(d["models"][0])), "appears twice"),
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
