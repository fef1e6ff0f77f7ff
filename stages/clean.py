"""Clean the raw splits: normalise what the task's rows hold, drop empty, conflicting, duplicate and leaked rows.

Every change and every drop is counted per split and per reason in `reports/clean.json`. Texts (stages.textclean)
stream through in chunks; NER sentences are cleaned per token (stages.sentences). The task picks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stages import tasks
from stages.io import read_json, write_json

IN, OUT, REPORT = Path("data/raw"), Path("data/clean"), Path("reports/clean.json")
log = logging.getLogger(__name__)


def main() -> None:
    params, task = tasks.load()
    report = task.clean(IN, OUT, params.clean)
    if (IN / "ingest.json").exists():  # rows ingest dropped (or texts it converted) before the split: counted too
        report["ingest"] = read_json(IN / "ingest.json")
    write_json(REPORT, report)
    t = report["total"]
    log.info("%d %s in, %d out; dropped %s", t["rows_in"], task.unit, t["rows_out"], t["dropped"])
    if any(n for counts in report.get("ingest", {}).values() for n in counts.values()):
        log.info("before that, ingest: %s", report["ingest"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "clean")
