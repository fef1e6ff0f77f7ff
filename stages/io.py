"""Shared I/O: one-line errors, atomic outputs, split files (whole or in chunks) and the label map."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "validation", "test")
# Rows per parquet row group and per chunk a streaming stage holds: ~26 MB of IMDB-sized (~1,300-char) texts,
# so a stage's memory does not grow with the data.
CHUNK_ROWS = 20_000


@functools.cache
def _umask() -> int:
    """The process umask, read once (by setting it, then putting it back) on the first write: outputs get the
    permissions the user's umask gives."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class PipelineError(Exception):
    """A user-facing problem: printed as one line, exit status 1, no traceback."""


def _tmp_prefix(final: Path) -> str:
    """Temp files and dirs beside `final` are named `.<name>.tmp-<pid>-<random>`: the pid says whose they are."""
    return f".{final.name}.tmp-"


def remove_stale_temps(final: Path) -> list[Path]:
    """Remove the temp dirs/files beside `final` whose process is gone (a SIGKILL or OOM kill skips every
    `finally`); a live process's are left alone. Returns what was removed."""
    import psutil

    removed = []
    for path in final.parent.glob(f"{_tmp_prefix(final)}*"):
        pid = path.name.removeprefix(_tmp_prefix(final)).split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or psutil.pid_exists(int(pid))):
            continue
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp dir beside `final`; it replaces `final` only if the block succeeds. Temps a killed run left
    beside `final` are removed first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_tmp_prefix(final)}{os.getpid()}-", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; outputs get the usual permissions
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_atomic(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write a file atomically (temp file + rename), so a crash never leaves half a file: `write(f)` fills it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(path)}{os.getpid()}-", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    def dump(f) -> None:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    write_atomic(path, dump)


def read_json(path: Path) -> Any:
    if not path.exists():
        raise PipelineError(f"{path}: not found (run the stage that writes it first: dvc repro)")
    return json.loads(path.read_text())


def write_splits(frames: dict, out_dir: Path, labels: list[str], extra: dict[str, Any] | None = None) -> None:
    """Write {split: DataFrame} as parquet, the label map (`labels.json`) and any JSON side files
    into `out_dir`, atomically: the label map travels with every data folder."""
    with atomic_dir(out_dir) as tmp:
        for name, df in frames.items():
            with split_writer(tmp / f"{name}.parquet") as write:
                write(df)
        for name, obj in ({"labels.json": {"names": labels}} | (extra or {})).items():
            write_json(tmp / name, obj)


def check_labels(splits: dict, after: str = "", source: str = "", column: str = "label",
                 files: dict[str, str] | None = None) -> None:
    """Train holds at least 2 classes, and every validation/test label occurs in train. `source` and `column`: where
    the train labels came from, for the message; `files`: the file a validation/test split was read from, if its own."""
    classes = splits["train"]["label"].dropna().unique()
    if len(classes) < 2:
        one = f"one class ('{classes[0]}')" if len(classes) else "no class"
        raise PipelineError(f"{source + ': ' if source else ''}column '{column}' has {one} in the train split{after}; "
                            f"need at least 2")
    seen = set(splits["train"]["label"])
    for split in ("validation", "test"):
        unseen = ~splits[split]["label"].isin(seen)
        if unseen.any():
            where = f"{files[split]}: " if files and files.get(split) else ""
            raise PipelineError(f"{where}{split} split, row {int(unseen.idxmax()) + 1}, column 'label': label "
                                f"'{splits[split]['label'][unseen].iloc[0]}' never occurs in train{after}")


def split_paths(in_dir: Path) -> dict[str, Path]:
    paths = {s: in_dir / f"{s}.parquet" for s in SPLITS}
    missing = [s for s, path in paths.items() if not path.exists()]
    if missing:
        raise PipelineError(f"{in_dir}: missing {', '.join(missing)} split(s) (run dvc repro)")
    return paths


def read_splits(in_dir: Path) -> dict:
    import pandas as pd

    return {s: pd.read_parquet(path) for s, path in split_paths(in_dir).items()}


def iter_split(path: Path, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """A split file as DataFrames of CHUNK_ROWS rows (the last one shorter), in file order; an empty file gives one
    empty DataFrame, so a reader always sees the columns."""
    import pyarrow.parquet as pq

    # pre_buffer (on by default) keeps every column chunk it has read until the file closes: ~0.7 GB for 800k
    # IMDB-sized rows. Off, a chunk's memory is freed once the next one is read.
    with pq.ParquetFile(path, pre_buffer=False) as file:
        rows = 0
        for batch in file.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            rows += batch.num_rows
            yield batch.to_pandas()
        if not rows:
            yield file.schema_arrow.empty_table().select(columns or file.schema_arrow.names).to_pandas()


@contextlib.contextmanager
def split_writer(path: Path) -> Iterator[Callable[[pd.DataFrame], None]]:
    """write(df) appends a DataFrame to the parquet file `path`, in row groups of at most CHUNK_ROWS rows, so it can
    be read back chunk by chunk. One write of a whole frame gives the bytes `df.to_parquet(path, index=False)` would
    (but for no row group over CHUNK_ROWS); only empty frames give one empty row group, as to_parquet does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, empty = None, None
    try:
        def write(df: pd.DataFrame) -> None:
            nonlocal writer, empty
            table = pa.Table.from_pandas(df, schema=writer.schema if writer else None, preserve_index=False)
            if writer is None:
                writer, empty = pq.ParquetWriter(path, table.schema), table.slice(0, 0)
            if table.num_rows:
                writer.write_table(table, row_group_size=CHUNK_ROWS)
                empty = None

        yield write
        if empty is not None:
            writer.write_table(empty)
    finally:
        if writer is not None:
            writer.close()


def read_labels(data_dir: Path) -> list[str]:
    """The label names in id order, as ingest saved them (`labels.json`)."""
    return read_json(data_dir / "labels.json")["names"]
