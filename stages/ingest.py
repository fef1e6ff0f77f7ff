"""Ingest a labelled source into fixed train/validation/test splits with a saved label map.

What a row is (a labelled text, a tagged sentence, a text with a label set) and how it is read and checked is the
task's (`stages.tasks`); every task splits by a seeded hash of its rows (`stages.splits`), not by row order, so the
test split stays stable when rows are added or reordered.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stages import tasks
from stages.io import write_splits

OUT = Path("data/raw")
log = logging.getLogger(__name__)


def main() -> None:
    params, task = tasks.load()
    p = params.ingest
    result = task.ingest(task.read(p), p)
    # ingest.json: what reading dropped or converted (not per split: it happens before the split); clean copies it
    # into reports/clean.json
    write_splits(result.splits, OUT, result.labels,
                 {"summary.json": result.summary} | ({"ingest.json": result.report} if result.report else {}))
    log.info("%s → %s", p.source, ", ".join(f"{s} {v[task.unit]}" for s, v in result.summary.items()))
    for what, counts in result.report.items():
        if any(counts.values()):  # zeros are in ingest.json; the log says only what happened
            log.info("%s while reading: %s", what, counts)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "ingest")
