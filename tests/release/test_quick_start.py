"""The generated quick-start guide and README: their python code blocks run as written.

Blocks of one document run in order, in one namespace (the guide says "continuing from above" by
reusing names), from the folder that holds ``pretrained_models/``, as the guide tells its reader.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffplan.release.packaging import extract_archive
from diffplan_cli.app import app

BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_blocks(markdown: Path) -> list[str]:
    return BLOCK.findall(markdown.read_text())


def run_blocks(blocks: list[str]) -> str:
    namespace: dict = {"__name__": "__quick_start__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"<block {number}>", "exec"), namespace)  # noqa: S102 - our own generated guide
    return printed.getvalue()


@pytest.fixture
def packaged(release):
    result = CliRunner().invoke(app, ["package", "--manifest", str(release.manifest)])
    assert result.exit_code == 0, result.output
    return release


def test_the_quick_start_guide_runs_as_written(packaged):
    guide = packaged.release_root / "quick_start_guide.md"
    blocks = python_blocks(guide)
    assert len(blocks) >= 4
    assert 'diffplan.load_model("VIN_tiny")' in blocks[0] and "diffplan.plan_maze(model, maze" in blocks[0]
    printed = run_blocks(blocks)
    assert "reached the goal:" in printed
    assert "torch.Size([15, 15]) torch.Size([2, 15, 15])" in printed  # the continuous planner's vectors
    assert "torch.Size([2, 15, 15])" in printed and "accuracy" in printed


def test_the_readme_code_runs_as_written(packaged):
    blocks = python_blocks(packaged.release_root / "README.md")
    assert blocks
    run_blocks(blocks)


def test_the_guide_runs_from_an_unpacked_archive(packaged, tmp_path, monkeypatch):
    target = tmp_path / "download"
    extract_archive(packaged.root / "dist" / "diffplan_pretrained_models_v1.0.zip", target)
    shutil.copytree(packaged.root / "data", target / "data")  # the guide's scoring block reads the data set
    monkeypatch.chdir(target)
    printed = run_blocks(python_blocks(target / "pretrained_models" / "quick_start_guide.md"))
    assert "reached the goal:" in printed


BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def test_every_command_the_guide_shows_runs(packaged, monkeypatch):
    """The guide's `diffplan plan` block, run as a shell script from the release folder (the setup block,
    which installs diffplan, is skipped: this test runs inside the installed project)."""
    import subprocess

    guide = (packaged.release_root / "quick_start_guide.md").read_text()
    blocks = [b for b in BASH_BLOCK.findall(guide) if "diffplan plan" in b]
    assert len(blocks) == 1 and guide.index("diffplan plan") < guide.index("```python")
    done = subprocess.run(["bash", "-e", "-c", blocks[0]], cwd=packaged.root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "reached the goal" in done.stdout or "did not reach the goal" in done.stdout
    assert (packaged.root / "my_plan.png").is_file() and (packaged.root / "my_plan.json").is_file()
