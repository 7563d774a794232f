"""Conventions every command keeps (DESIGN section 8): clean help, one --json / --json-out, fast start-up."""

from __future__ import annotations

import importlib.util
import inspect
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from diffplan.errors import BadInputError
from diffplan.release.checkpoint import CHECKPOINT_FORMAT_VERSION, read_release_checkpoint, sha256_file
from diffplan_cli.app import COMMANDS, app, load_command


def _tiny_release_fixtures():
    """tests/release/conftest.py, whose ``release`` fixture (a tiny trained release) some tests here use."""
    spec = importlib.util.spec_from_file_location(
        "_tiny_release_conftest", Path(__file__).parents[1] / "release" / "conftest.py"
    )
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_tiny = _tiny_release_fixtures()
tiny_release_source, release = _tiny.tiny_release_source, _tiny.release
runner = CliRunner()
HELP_PAGES = [[], *([name] for name in COMMANDS), ["data", "info"], ["data", "generate"]]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def fails_with(result, message: str, code: int = 2) -> None:
    """The exit code and exactly one line on stderr: ``Error: ...`` naming the problem."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]


# --- help ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", HELP_PAGES, ids=lambda c: " ".join(c) or "diffplan")
def test_help_shows_no_bool_metavar(command):
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--help" in result.stdout and "<bool>" not in result.stdout


def test_root_help_lists_each_command_with_its_own_first_help_line():
    listed = cli("--help").stdout
    for name, lazy in COMMANDS.items():
        command = load_command(name)
        first = inspect.cleandoc(command.help or "").split("\n\n")[0].replace("\n", " ")
        assert lazy.summary == first, name
        assert f" {name} " in listed


def test_installed_diffplan_help_runs_without_loading_torch_or_the_commands():
    executable = shutil.which("diffplan")
    if executable is None:
        pytest.skip("the diffplan console script is not installed (pip install -e .)")
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in COMMANDS) and "<bool>" not in result.stdout
    probe = textwrap.dedent(
        """
        import sys
        from diffplan_cli.app import app
        try:
            app(["--help"])
        except SystemExit:
            pass
        print(sorted(m for m in sys.modules if m in ("torch", "escnn") or m.startswith("diffplan_cli.")))
        """
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines()[-1] == "['diffplan_cli._common', 'diffplan_cli.app']"


def test_library_errors_are_one_line_or_a_traceback_when_asked(monkeypatch, tmp_path):
    missing = tmp_path / "missing.ckpt"
    fails_with(cli("upgrade", missing), "does not exist")
    monkeypatch.setenv("DIFFPLAN_DEBUG", "1")
    result = cli("validate")
    assert isinstance(result.exception, BadInputError)


# --- --json-out is checked before the work ------------------------------------------------------------

COMMANDS_WITH_JSON = {
    # command line, and the library call that must not run when --json-out is bad
    "validate": (["validate", "--all"], "diffplan_cli.validate.validate_models"),
    "inspect": (["inspect", "VIN_tiny"], "diffplan_cli.inspect.inspect_model"),
    "package": (["package"], "diffplan_cli.package.run_validation"),
    "package --verify": (["package", "--verify", "x.tar.gz"], "diffplan_cli.package.verify_archive"),
    "upgrade": (["upgrade", "x.ckpt"], "diffplan_cli.upgrade.read_release_checkpoint"),
    "data info": (["data", "info", "x.npz"], "diffplan_cli.data.dataset_info"),
    "evaluate": (["evaluate", "VIN_tiny", "--data", "x.npz"], "diffplan_cli.evaluate.evaluate_models"),
    "plan": (["plan", "VIN_tiny", "x.txt"], "diffplan_cli.plan.plan_map"),
}


@pytest.mark.parametrize("command", COMMANDS_WITH_JSON)
@pytest.mark.parametrize(
    ("where", "message"),
    [("missing/out.json", "does not exist"), (".", "is a folder"), ("file.txt/out.json", "is a file")],
)
def test_a_bad_json_out_fails_in_one_line_before_any_work(command, where, message, tmp_path, monkeypatch):
    args, work = COMMANDS_WITH_JSON[command]
    load_command(args[0])  # the command's module, so that its library call can be replaced

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before --json-out was checked")

    monkeypatch.setattr(work, no_work)
    (tmp_path / "file.txt").write_text("")
    result = cli(*args, "--json-out", tmp_path / where)
    fails_with(result, message)
    assert "--json-out" in result.stderr


# --- --json prints, --json-out writes the same -------------------------------------------------------


def json_run(tmp_path, *args, code: int = 0):
    """(the JSON printed on stdout, the JSON written by --json-out): stdout must hold nothing else."""
    out = tmp_path / "out.json"
    result = cli(*args, "--json", "--json-out", out)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout), json.loads(out.read_text())


def test_inspect_json_goes_to_stdout_and_json_out_to_a_file(release):
    printed, written = json_run(release.root, "inspect", "VIN_tiny", "--manifest", release.manifest)
    assert printed == written and printed["name"] == "VIN_tiny"


def test_validate_json_goes_to_stdout_and_json_out_to_a_file(release):
    args = ("validate", "VIN_tiny", "--limit", "4", "--manifest", release.manifest)
    printed, written = json_run(release.root, *args)
    assert printed == written
    assert [m["name"] for m in printed["models"]] == ["VIN_tiny"] and printed["models"][0]["passed"]
    table = cli(*args, "--json-out", release.root / "again.json")  # without --json: the table, as before
    assert table.exit_code == 0, table.output
    assert "Release validation" in table.stdout and "all checks passed" in table.stdout


def test_package_and_verify_json(release):
    printed, written = json_run(release.root, "package", "--manifest", release.manifest)
    assert printed == written and printed["version"] == "1.0" and not printed["failing"]
    for name, archive in printed["archives"].items():
        verified, _ = json_run(release.root, "package", "--verify", archive["path"])
        assert verified["archive"] == archive["path"] and verified["ok"] and not verified["problems"]
        assert verified["files_checked"] > len(printed["files"]) // 2
        assert name.endswith((".tar.gz", ".zip"))


# --- upgrade --------------------------------------------------------------------------------------


def test_upgrade_leaves_a_current_checkpoint_alone(release):
    path = release.file("VIN_tiny")
    before = sha256_file(path)
    result = cli("upgrade", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{path}: already format {CHECKPOINT_FORMAT_VERSION}"
    assert sha256_file(path) == before


def test_upgrade_rewrites_an_older_checkpoint_and_its_metadata(release, tmp_path):
    path = release.file("SymVIN_tiny")
    record = read_release_checkpoint(path)
    record["format_version"] = 2  # as before the steerable filters were stored expanded
    del record["expanded_filters"]
    torch.save(record, path)
    current = release.file("VIN_tiny")
    printed, written = json_run(tmp_path, "upgrade", path, current)
    assert printed == written
    current_format = CHECKPOINT_FORMAT_VERSION
    assert [
        (c["path"], c["upgraded"], c["previous_format"], c["format_version"]) for c in printed["checkpoints"]
    ] == [
        (str(path), True, 2, current_format),
        (str(current), False, current_format, current_format),
    ]
    assert read_release_checkpoint(path)["format_version"] == CHECKPOINT_FORMAT_VERSION
    info = json.loads(release.file("SymVIN_tiny", "_info.json").read_text())
    assert info["model_stats"]["checkpoint_sha256"] == sha256_file(path)


def test_upgrade_reads_every_file_before_rewriting_any(release):
    path = release.file("SymVIN_tiny")
    record = read_release_checkpoint(path)
    record["format_version"] = 2
    del record["expanded_filters"]
    torch.save(record, path)
    before = sha256_file(path)
    fails_with(cli("upgrade", path, release.root / "missing.ckpt"), "missing.ckpt does not exist")
    assert sha256_file(path) == before
