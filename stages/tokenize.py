"""Tokenize every split with the model's fast tokenizer, as the task stores its rows: texts truncated at max_length
(stages.texttok), NER sentences aligned word → sub-tokens and cut into windows (stages.align). No padding: batches pad
at training time. `reports/tokenize.json` holds token-length percentiles and what was truncated or windowed.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from stages import tasks
from stages.io import atomic_dir, read_labels, split_paths, write_json
from stages.modeling import load_tokenizer

IN, OUT, REPORT = Path("data/augmented"), Path("data/tokenized"), Path("reports/tokenize.json")
log = logging.getLogger(__name__)


def main() -> None:
    # Tokenizing is all this process does: the Rust tokenizer batches over every core (1.7x on 2 cores). The
    # other stages keep its thread pool off (stages.cli), as torch owns the cores there. RAYON_NUM_THREADS caps it.
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    params, task = tasks.load()
    split_paths(IN)  # all three splits are there, or one line says to run dvc repro
    labels = read_labels(IN)
    tokenizer = load_tokenizer(params.model.name)
    with atomic_dir(OUT) as tmp:
        scratch = tmp / "scratch"  # memory-mapped Arrow files of streamed texts; gone with the temp dir on failure
        scratch.mkdir()
        dd, report = task.tokenize(IN, tokenizer, labels, params.tokenize, scratch)
        dd.save_to_disk(str(tmp))
        shutil.rmtree(scratch)
        write_json(tmp / "labels.json", {"names": labels})
        write_json(tmp / "settings.json", {"task": task.name, "max_length": params.tokenize.max_length,
                                           "model": params.model.name})
    write_json(REPORT, report)
    for name, s in report["splits"].items():
        cut = (f"{s['windowed_sentences']} sentences split into windows" if "windows" in s
               else f"truncated {100 * s['truncated_share']:.1f}%")
        log.info("%s: %d rows, tokens p50 %d p95 %d max %d, %s", name, s["rows"], s["p50"], s["p95"], s["max"], cut)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "tokenize")
