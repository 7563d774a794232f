"""Atomic writes: the final file appears whole, with ordinary permissions; a failed write leaves nothing."""

import os

import pytest

from diffplan._atomic import atomic_path, atomic_write_text


def test_an_atomic_write_gets_the_usual_permissions(tmp_path):
    target = tmp_path / "info.json"
    atomic_write_text(target, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "{}"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.ckpt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]
