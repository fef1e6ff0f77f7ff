"""Atomic outputs: a failing block leaves neither the output nor its temp dir behind; split files in chunks."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from stages import io
from stages.io import atomic_dir, iter_split, split_writer, write_json, write_splits


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


# --- split files in chunks ----------------------------------------------------------------------------------------

def frame(n, start=0):
    return pd.DataFrame({"text": [f"text {i}" for i in range(start, start + n)], "label": ["a", "b"] * (n // 2)
                         + ["a"] * (n % 2)})


def test_split_writer_and_iter_split_round_trip_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "CHUNK_ROWS", 7)
    path = tmp_path / "s.parquet"
    with split_writer(path) as write:
        for start, n in ((0, 10), (10, 0), (10, 3), (13, 20)):  # an empty chunk on the way changes nothing
            write(frame(n, start))
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [7, 3, 3, 7, 7, 6]
    chunks = list(iter_split(path))
    assert [len(c) for c in chunks] == [7, 7, 7, 7, 5]  # chunks do not follow the row groups
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), pd.read_parquet(path))
    assert pd.read_parquet(path)["text"].tolist() == [f"text {i}" for i in range(33)]
    assert list(iter_split(path, columns=["label"]))[0].columns.tolist() == ["label"]


def test_an_empty_split_reads_as_one_empty_chunk_with_its_columns(tmp_path):
    path = tmp_path / "s.parquet"
    with split_writer(path) as write:
        write(frame(0))
    chunks = list(iter_split(path))
    assert len(chunks) == 1 and chunks[0].empty and chunks[0].columns.tolist() == ["text", "label"]
    frame(0).to_parquet(tmp_path / "pandas.parquet", index=False)
    assert (tmp_path / "pandas.parquet").read_bytes() == path.read_bytes()


def test_write_splits_writes_what_to_parquet_writes(tmp_path):
    """Small splits keep the bytes (and so the dvc.lock hashes) of plain DataFrame.to_parquet."""
    df = frame(50)
    write_splits({"train": df}, tmp_path / "out", ["a", "b"])
    df.to_parquet(tmp_path / "pandas.parquet", index=False)
    assert (tmp_path / "out/train.parquet").read_bytes() == (tmp_path / "pandas.parquet").read_bytes()


def test_split_writer_leaves_no_file_behind_an_atomic_dir_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            with split_writer(tmp / "train.parquet") as write:
                write(frame(5))
                raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_iter_split_holds_one_chunk_at_a_time(tmp_path, monkeypatch):
    """Reading a split chunk by chunk must not keep what it has read (pyarrow's pre_buffer would): ~1 MB a chunk."""
    import os

    import pyarrow as pa

    monkeypatch.setattr(io, "CHUNK_ROWS", 1000)
    path = tmp_path / "s.parquet"
    with split_writer(path) as write:
        for _ in range(30):  # 30 chunks of 1,000 incompressible 1,000-char texts: ~30 MB
            write(pd.DataFrame({"text": [os.urandom(500).hex() for _ in range(1000)], "label": ["a"] * 1000}))
    before, allocated = pa.total_allocated_bytes(), []
    for chunk in iter_split(path):
        allocated.append(pa.total_allocated_bytes() - before)
    assert len(allocated) == 30 and max(allocated) < 8e6, allocated
