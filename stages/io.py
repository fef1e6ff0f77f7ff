"""Shared I/O: one-line errors, atomic outputs, split files and the label map."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")
_UMASK = os.umask(0)
os.umask(_UMASK)


class PipelineError(Exception):
    """A user-facing problem: printed as one line, exit status 1, no traceback."""


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp dir beside `final`; it replaces `final` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes 0700; outputs get the usual permissions
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    if not path.exists():
        raise PipelineError(f"{path}: not found (run the stage that writes it first: dvc repro)")
    return json.loads(path.read_text())


def write_splits(frames: dict, out_dir: Path, labels: list[str], extra: dict[str, Any] | None = None) -> None:
    """Write {split: DataFrame} as parquet, the label map (`labels.json`) and any JSON side files
    into `out_dir`, atomically: the label map travels with every data folder."""
    with atomic_dir(out_dir) as tmp:
        for name, df in frames.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False)
        for name, obj in ({"labels.json": {"names": labels}} | (extra or {})).items():
            write_json(tmp / name, obj)


def check_labels(splits: dict, after: str = "") -> None:
    """Train holds at least 2 classes, and every validation/test label occurs in train."""
    n = splits["train"]["label"].nunique()
    if n < 2:
        raise PipelineError(f"train split has {n} class{'' if n == 1 else 'es'}{after}; need at least 2")
    seen = set(splits["train"]["label"])
    for split in ("validation", "test"):
        unseen = ~splits[split]["label"].isin(seen)
        if unseen.any():
            raise PipelineError(f"{split} split, row {int(unseen.idxmax()) + 1}, column 'label': label "
                                f"'{splits[split]['label'][unseen].iloc[0]}' never occurs in train{after}")


def read_splits(in_dir: Path) -> dict:
    import pandas as pd

    missing = [s for s in SPLITS if not (in_dir / f"{s}.parquet").exists()]
    if missing:
        raise PipelineError(f"{in_dir}: missing {', '.join(missing)} split(s) (run dvc repro)")
    return {s: pd.read_parquet(in_dir / f"{s}.parquet") for s in SPLITS}


def read_labels(data_dir: Path) -> list[str]:
    """The label names in id order, as ingest saved them (`labels.json`)."""
    return read_json(data_dir / "labels.json")["names"]
