"""Hostile input (issue #14): archives, checkpoints, data files and options crafted to exhaust memory, run
code or crash the reader are refused in one line (exit 2), before anything large is allocated and
without writing anything. The archive and data-file limits are lowered here, so the bombs stay small."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffplan.envs import generate_dataset, load_split
from diffplan.errors import CheckpointError, DataFileError
from diffplan.models import create_model, list_models
from diffplan.release import archive as archive_module
from diffplan.release import checkpoint as checkpoint_module
from diffplan.release._model_size import count_weights
from diffplan.release.archive import ArchiveError, extract_archive, verify_archive
from diffplan.release.checkpoint import (
    load_model,
    model_from_record,
    read_release_checkpoint,
    save_release_checkpoint,
)
from diffplan_cli.app import app

runner = CliRunner()
TOP = "pretrained_models"
VIN = {"k": 3, "l_h": 4, "l_q": 3}


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    """The CLI's refusal: exit 2 and a single ``Error: ...`` line."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def vin_checkpoint(tmp_path, name: str = "VIN_small", **config) -> bytes:
    path = tmp_path / f"{name}.ckpt"
    config = {**VIN, **config}
    save_release_checkpoint(
        path, create_model("VIN", **config), name=name, algorithm="VIN", model_config=config
    )
    return path.read_bytes()


def release_members(files: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """``files`` (paths inside the release) under ``pretrained_models/``, with a matching SHA256SUMS."""
    sums = "".join(f"{sha(data)}  {rel}\n" for rel, data in sorted(files.items()))
    return [(f"{TOP}/{rel}", data) for rel, data in files.items()] + [(f"{TOP}/SHA256SUMS", sums.encode())]


def small_release(tmp_path, checkpoint: bytes | None = None) -> dict[str, bytes]:
    """A release of one grid model: its checkpoint and the _info.json recording its sha256."""
    checkpoint = vin_checkpoint(tmp_path) if checkpoint is None else checkpoint
    info = {"model_name": "VIN_small", "model_stats": {"checkpoint_sha256": sha(checkpoint)}}
    return {
        "README.md": b"# release\n",
        "grid/VIN_small.ckpt": checkpoint,
        "grid/VIN_small_info.json": json.dumps(info).encode(),
    }


def write_zip(path, members, *, method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)  # str names: permission bits only, no file-type bits
    return path


def write_tar_gz(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def low_limits(monkeypatch):
    """Archive limits of 64 KiB unpacked and 200:1 above 4 KiB, so a bomb of a megabyte is one."""
    monkeypatch.setattr(archive_module, "MAX_UNPACKED_BYTES", 64 * 1024)
    monkeypatch.setattr(archive_module, "RATIO_FLOOR_BYTES", 4 * 1024)


# --- archives -------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [write_zip, write_tar_gz], ids=["zip", "tar.gz"])
def test_an_archive_that_unpacks_past_the_limit_is_refused(tmp_path, low_limits, writer):
    bomb = bytes(1 << 20)  # 1 MiB of zeros; a real bomb is 1 GB, the limit is lowered instead
    suffix = ".zip" if writer is write_zip else ".tar.gz"
    archive = writer(tmp_path / f"bomb{suffix}", release_members({"zeros.bin": bomb}))
    assert archive.stat().st_size < 8 * 1024
    with pytest.raises(ArchiveError, match="unpacks|over 200:1|add up to"):
        verify_archive(archive)
    line = one_line_error(cli("package", "--verify", archive))
    assert str(archive) in line and "re-download" in line
    target = tmp_path / "out"
    with pytest.raises(ArchiveError):
        extract_archive(archive, target)
    assert not target.exists()


@pytest.mark.parametrize("writer", [write_zip, write_tar_gz], ids=["zip", "tar.gz"])
def test_a_member_compressed_over_200_to_1_is_refused_within_the_size_limit(tmp_path, monkeypatch, writer):
    monkeypatch.setattr(archive_module, "RATIO_FLOOR_BYTES", 64 * 1024)  # 1 MiB of zeros: ratio ~1000
    suffix = ".zip" if writer is write_zip else ".tar.gz"
    archive = writer(tmp_path / f"bomb{suffix}", release_members({"zeros.bin": bytes(1 << 20)}))
    with pytest.raises(ArchiveError, match=r"\(over 200:1\), like a zip bomb"):
        verify_archive(archive)


def test_verify_hashes_members_in_chunks(tmp_path, monkeypatch):
    """A 6 MiB member is hashed 1 MiB at a time: verifying never holds it whole."""
    payload = np.random.default_rng(0).bytes(6 << 20)  # incompressible: no ratio limit applies
    archive = write_zip(
        tmp_path / "big.zip", release_members({"weights.bin": payload}), method=zipfile.ZIP_STORED
    )
    tracemalloc.start()
    try:
        result = verify_archive(archive)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok and result.files_checked == 1
    assert peak < 4 << 20


def test_regular_files_without_type_bits_are_accepted(tmp_path):
    """``ZipFile.writestr(name, data)`` records permissions but no file type; that is a plain file."""
    archive = write_zip(tmp_path / "release.zip", release_members(small_release(tmp_path)))
    with zipfile.ZipFile(archive) as opened:
        assert {info.external_attr >> 16 for info in opened.infolist()} == {0o600}
    result = verify_archive(archive)
    assert result.ok, result.problems
    assert result.files_checked == 3 and result.checkpoints_checked == 1


def encrypted_flag(path):
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # general-purpose flag: bit 0
        at = data.find(signature)
        data[at + offset] |= 0x1
    path.write_bytes(bytes(data))


def unknown_method(path):
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # compression method 99 (AES)
        at = data.find(signature)
        data[at + offset : at + offset + 2] = (99).to_bytes(2, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [(encrypted_flag, "is encrypted"), (unknown_method, "uses compression method 99")],
    ids=["encrypted", "unsupported-method"],
)
def test_encrypted_and_unsupported_zips_are_refused_in_one_line(tmp_path, damage, message):
    archive = write_zip(tmp_path / "odd.zip", [(f"{TOP}/README.md", b"x")], method=zipfile.ZIP_STORED)
    damage(archive)
    with pytest.raises(ArchiveError, match=message):
        verify_archive(archive)
    assert message in one_line_error(cli("package", "--verify", archive))


@pytest.mark.parametrize("writer", [write_zip, write_tar_gz], ids=["zip", "tar.gz"])
@pytest.mark.parametrize("second", [f"{TOP}/README.md", f"{TOP}/readme.MD", f"{TOP}/./README.md"])
def test_duplicate_names_are_refused(tmp_path, writer, second):
    suffix = ".zip" if writer is write_zip else ".tar.gz"
    members = [(f"{TOP}/README.md", b"one"), (second, b"two")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of an exact duplicate, and writes it
        archive = writer(tmp_path / f"dup{suffix}", members)
    with pytest.raises(ArchiveError, match="appears .*duplicate names"):
        verify_archive(archive)
    target = tmp_path / "out"
    with pytest.raises(ArchiveError):
        extract_archive(archive, target)
    assert not target.exists()


class Payload:
    """Unpickled, this would run code: ``torch.load(weights_only=True)`` refuses it."""

    def __reduce__(self):
        return (print, ("this ran while the archive was verified",))


def test_a_checkpoint_replaced_by_a_code_running_pickle_is_refused_though_its_sums_match(tmp_path, capsys):
    buffer = io.BytesIO()
    torch.save({"format": "diffplan-release-checkpoint", "payload": Payload()}, buffer)
    files = small_release(tmp_path)
    files["grid/VIN_small.ckpt"] = buffer.getvalue()  # and the embedded SHA256SUMS recomputed
    archive = write_zip(tmp_path / "release.zip", release_members(files))
    with pytest.raises(ArchiveError, match="refuses to unpickle"):
        verify_archive(archive)
    line = one_line_error(cli("package", "--verify", archive))
    assert "grid/VIN_small.ckpt" in line and "weights_only=True" in line
    assert "this ran" not in capsys.readouterr().out


def test_the_archive_is_checked_against_the_sha256sums_beside_it_or_the_one_given(tmp_path):
    genuine = write_zip(tmp_path / "genuine.zip", release_members(small_release(tmp_path)))
    (tmp_path / "dist").mkdir()
    tampered = tmp_path / "dist" / "release.zip"
    files = small_release(tmp_path)
    files["README.md"] = b"# release (edited)\n"
    write_zip(tampered, release_members(files))  # every inner sum recomputed: consistent inside
    assert verify_archive(tampered).ok and verify_archive(tampered).sha256_source is None
    (tmp_path / "dist" / "SHA256SUMS").write_text(f"{sha(genuine.read_bytes())}  release.zip\n")
    beside = verify_archive(tampered)
    assert not beside.ok and beside.sha256_source.endswith("SHA256SUMS")
    assert "was modified or corrupted" in beside.problems[0]
    given = verify_archive(tampered, sha256=sha(genuine.read_bytes()).upper())
    assert not given.ok and given.sha256_source == "--sha256"
    assert verify_archive(tampered, sha256=sha(tampered.read_bytes())).ok
    with pytest.raises(Exception, match="is not a sha256"):
        verify_archive(tampered, sha256="abc")


def test_a_checkpoint_that_differs_from_its_info_json_is_a_problem(tmp_path):
    files = small_release(tmp_path)
    files["grid/VIN_small.ckpt"] = vin_checkpoint(tmp_path, k=4)  # a valid checkpoint, not the recorded one
    recorded = json.loads(files["grid/VIN_small_info.json"])["model_stats"]["checkpoint_sha256"]
    result = verify_archive(write_zip(tmp_path / "release.zip", release_members(files)))
    assert result.problems == [
        f"{TOP}/grid/VIN_small.ckpt has sha256 {sha(files['grid/VIN_small.ckpt'])} but "
        f"{TOP}/grid/VIN_small_info.json records {recorded} (modified or replaced)"
    ]


# --- checkpoints ----------------------------------------------------------------------------------


def crafted(tmp_path, edit) -> object:
    path = tmp_path / "VIN_small.ckpt"
    vin_checkpoint(tmp_path)
    record = torch.load(path, weights_only=True)
    edit(record)
    torch.save(record, path)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(format_version="2"), "'format_version' must be a whole number >= 1, got '2'"),
        (lambda r: r.pop("state_dict"), "'state_dict' must be a mapping of names to tensors, it has none"),
        (
            lambda r: r.update(state_dict=[1, 2]),
            "'state_dict' must be a mapping of names to tensors, got list",
        ),
        (
            lambda r: r["state_dict"].update({"h.weight": 3.0}),
            "tensors, but its entry 'h.weight' is a float",
        ),
        (lambda r: r.update(model_config=[1]), "'model_config' must be a mapping"),
        (lambda r: r.update(algorithm=7), "'algorithm' must be a string, got int"),
        (lambda r: r.update(extra="flags"), "'extra' must be a mapping, got str"),
    ],
    ids=[
        "version-str",
        "no-state-dict",
        "list-state-dict",
        "non-tensor",
        "config-list",
        "algorithm-int",
        "extra-str",
    ],
)
def test_a_record_not_of_the_release_schema_is_refused_in_one_line(tmp_path, edit, message):
    path = crafted(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model_from_record(read_release_checkpoint(path), path)
    assert message in one_line_error(cli("inspect", path))


def refuse_large_builds(monkeypatch):
    """Fail the test if anything builds a planner wider than 1000 for real."""
    real = checkpoint_module.create_model

    def guarded(name, **config):
        if torch.get_default_device().type != "meta":  # shapes only: nothing allocated
            assert all(not isinstance(v, int) or v <= 1000 for v in config.values()), f"built {name} {config}"
        return real(name, **config)

    monkeypatch.setattr(checkpoint_module, "create_model", guarded)
    monkeypatch.setattr("diffplan.release._model_size.create_model", guarded)


def test_a_config_far_larger_than_its_weights_is_refused_before_building(tmp_path, monkeypatch):
    refuse_large_builds(monkeypatch)
    path = crafted(tmp_path, lambda r: r["model_config"].update(l_h=10**9))  # 72 GB of VIN weights
    with pytest.raises(
        CheckpointError, match=r"gives 'h.bias' the shape \(1000000000,\), its state dict \(4,\)"
    ):
        load_model(path, verify=False)


def test_an_escnn_config_larger_than_its_weights_is_refused_from_small_builds(tmp_path, monkeypatch):
    refuse_large_builds(monkeypatch)
    path = tmp_path / "SymVIN_small.ckpt"
    config = {"k": 2, "l_h": 2, "l_q": 2}
    save_release_checkpoint(
        path, create_model("SymVIN", **config), name="s", algorithm="SymVIN", model_config=config
    )
    record = torch.load(path, weights_only=True)
    record["model_config"]["l_h"] = 10**6
    torch.save(record, path)
    with pytest.raises(CheckpointError, match="describes a SymVIN of .* weights but its state dict holds"):
        load_model(path, verify=False)


def test_a_checkpoint_whose_records_are_compressed_is_refused_unread(tmp_path):
    path = tmp_path / "VIN_small.ckpt"
    vin_checkpoint(tmp_path)
    with zipfile.ZipFile(path) as source:
        records = [(info.filename, source.read(info)) for info in source.infolist()]
    bomb = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in records:
            target.writestr(name, data + bytes(4 << 20) if name.endswith("/data/0") else data)
    with pytest.raises(CheckpointError, match="refused unread: its records unpack to"):
        read_release_checkpoint(bomb)


def test_a_checkpoint_over_the_size_limit_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "MAX_CHECKPOINT_BYTES", 1024)
    path = tmp_path / "VIN_small.ckpt"
    vin_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="over the 0 MiB a release checkpoint may have"):
        read_release_checkpoint(path)


@pytest.mark.parametrize("name", list_models())
def test_a_config_is_sized_exactly_without_building_it(name, monkeypatch):
    """Every registered planner: the count (meta build, or small escnn builds) equals the real one."""
    monkeypatch.setattr("diffplan.release._model_size.KEEP_UP_TO", 16)  # size these widths from probes
    monkeypatch.setattr("diffplan.release._model_size._SIZES", {})
    widths = {"l_h": 19, "l_q": 18, "k": 17, "mp_h": 17, "mp_q": 18, "readout_hidden": 17}
    takes = create_model(name).config
    config = {key: value for key, value in widths.items() if key in takes}
    if name == "GAT-VIN":
        config.update(l_h=18, heads=2)  # widths must be multiples of the heads
    if name == "GCN-VIN-v2":
        config.update(l_q=20)  # a multiple of the four relations
    model = create_model(name, **config).eval()
    assert count_weights(name, config) == sum(t.numel() for t in model.state_dict().values())


# --- data files -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "grid.npz"
    generate_dataset("grid", path, maze_size=7, train_size=4, valid_size=2, test_size=2, seed=1)
    return path


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "graph.pth"
    generate_dataset("graph", path, maze_size=7, train_size=4, valid_size=2, test_size=2, seed=1)
    return path


def npz_with(source, target, replace: dict[str, bytes]):
    """``source`` with some ``.npy`` members replaced (or added) by raw bytes."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            key = info.filename[: -len(".npy")]
            new.writestr(info.filename, replace.pop(key, None) or old.read(info))
        for key, data in replace.items():
            new.writestr(f"{key}.npy", data)
    return target


def npy_header_only(shape, dtype="<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize("key", ["metadata", "diffplan_format", "extra"])
def test_an_npz_header_claiming_365_gib_is_refused_before_reading(tmp_path, grid_file, key):
    path = npz_with(grid_file, tmp_path / "huge.npz", {key: npy_header_only((49 * 10**9,))})
    with pytest.raises(DataFileError, match=f"array '{key}' declares 392000000000 bytes"):
        load_split(path, "test")
    assert f"array '{key}' declares" in one_line_error(cli("data", "info", path))


def test_an_npz_zip_bomb_is_refused_a_block_at_a_time(tmp_path, grid_file, monkeypatch):
    """50,000 all-wall test mazes without goals: 40 MB of float64 maze and goal in a file of 200 KB."""
    monkeypatch.setattr("diffplan.envs._grid_file.BLOCK_BYTES", 1 << 20)
    with np.load(grid_file) as data:
        arrays = {key: data[key] for key in data.files}
    n = 50_000
    arrays["arr_6"] = np.zeros((n, 7, 7))
    arrays["arr_7"] = np.zeros((n, 1, 7, 7))
    arrays["arr_8"] = np.zeros((n, 4, 1, 7, 7))
    arrays["test_optimal"] = np.zeros((n, 4, 7, 7), dtype=bool)
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, **arrays)
    tracemalloc.start()
    try:
        with pytest.raises(DataFileError, match="test goal map 0 is not one-hot"):
            load_split(path, "test")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size < 1 << 20
    assert peak < 12 << 20  # not 40 MB: a block of 1 MiB at a time, the mazes kept as one byte a cell


def graph_with(tmp_path, graph_file, edit):
    content = torch.load(graph_file, weights_only=True)
    edit(content)
    path = tmp_path / "crafted.pth"
    torch.save(content, path)
    return path


def _test_split(content):
    return content["splits"]["test"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: _test_split(c).update(goal_cell=_test_split(c)["goal_cell"].double()),
            "goal cells are float64",
        ),
        (
            lambda c: _test_split(c).update(maze=_test_split(c)["maze"].tolist()),
            "test maze is a list, not a tensor",
        ),
        (lambda c: c.update(metadata="settings"), "'metadata' is a str, not a mapping"),
        (lambda c: c.update(has_obstacle="no"), "'has_obstacle' is 'no', not true or false"),
    ],
    ids=["float-goal", "list-maze", "metadata-str", "flag-str"],
)
def test_a_malformed_graph_file_is_refused_in_one_line(tmp_path, graph_file, edit, message):
    path = graph_with(tmp_path, graph_file, edit)
    with pytest.raises(DataFileError, match=message):
        load_split(path, "test")
    assert message in one_line_error(cli("data", "info", path))


def test_an_npz_whose_metadata_is_not_an_object_is_refused(tmp_path, grid_file):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array(json.dumps("settings")))
    path = npz_with(grid_file, tmp_path / "meta.npz", {"metadata": buffer.getvalue()})
    assert "metadata is a JSON str" in one_line_error(cli("data", "info", path))


def test_a_published_graph_pickle_without_graphs_is_refused(tmp_path):
    path = tmp_path / "empty.pth"
    torch.save([[], [], []], path)
    with pytest.raises(DataFileError, match="the train list holds no graphs"):
        load_split(path, "test")


def test_a_graph_file_whose_records_are_compressed_is_refused_unread(tmp_path, graph_file):
    with zipfile.ZipFile(graph_file) as source:
        records = [(info.filename, source.read(info)) for info in source.infolist()]
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in records:
            target.writestr(name, data + bytes(4 << 20) if name.endswith("/data/0") else data)
    with pytest.raises(DataFileError, match="refused unread: its records unpack to"):
        load_split(bomb, "test")


# --- options ----------------------------------------------------------------------------------------


def test_a_negative_test_map_index_is_refused(release):
    out = release.root / "map.png"
    line = one_line_error(
        cli("inspect", "VIN_tiny", "--manifest", release.manifest, "--plot", out, "--index", -1)
    )
    assert "--index -1 is out of range" in line and "numbered 0 to 15" in line
    assert not out.exists()
