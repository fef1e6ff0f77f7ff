"""Atomic outputs: a failing block leaves neither the output nor its temp dir behind."""

import json

import pytest

from stages.io import atomic_dir, write_json


def test_atomic_dir_commits_on_success_and_replaces(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (out / "new.txt").exists()  # nothing visible until the block ends
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # usual permissions, not mkdtemp's


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_write_json_is_whole_or_absent(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1} and len(list(tmp_path.iterdir())) == 1
