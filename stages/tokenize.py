"""Tokenize every split with the model's fast tokenizer, as the task stores its rows: texts truncated at max_length
(stages.texttok), NER sentences aligned word → sub-tokens and cut into windows (stages.align). No padding: batches pad
at training time. `reports/tokenize.json` holds token-length percentiles, what was truncated or windowed, and the
vocabulary's coverage of each split (stages.coverage): too many [UNK] tokens warn, or stop before anything is written.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from stages import tasks
from stages.coverage import check_coverage
from stages.io import atomic_dir, read_labels, split_paths, write_json
from stages.loading import Trust, check_model, load_tokenizer

IN, OUT, REPORT = Path("data/augmented"), Path("data/tokenized"), Path("reports/tokenize.json")
log = logging.getLogger(__name__)


def main() -> None:
    # Tokenizing is all this process does: the Rust tokenizer batches over every core (1.7x on 2 cores). The
    # other stages keep its thread pool off (stages.cli), as torch owns the cores there. RAYON_NUM_THREADS caps it.
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    params, task = tasks.load()
    split_paths(IN)  # all three splits are there, or one line says to run dvc repro
    labels = read_labels(IN)
    check_model(params.model.name, Trust.of(params.model))
    tokenizer = load_tokenizer(params.model.name, Trust.of(params.model))
    with atomic_dir(OUT) as tmp:
        scratch = tmp / "scratch"  # memory-mapped Arrow files of streamed texts; gone with the temp dir on failure
        scratch.mkdir()
        dd, report = task.tokenize(IN, tokenizer, labels, params.tokenize, scratch)
        # before anything is written: a vocabulary that cannot represent the text stops here, leaving no output
        report["warnings"] = check_coverage(report["splits"], params.tokenize, params.model.name) + report.get(
            "warnings", [])
        dd.save_to_disk(str(tmp))
        shutil.rmtree(scratch)
        write_json(tmp / "labels.json", {"names": labels})
        # finetune copies `serving` into the model's pipeline.json and tags the MLflow run with the warnings
        write_json(tmp / "settings.json", {"task": task.name, "max_length": params.tokenize.max_length,
                                           "model": params.model.name, "serving": report.get("serving", {}),
                                           "unk_share": {n: s["coverage"]["unk_share"] for n, s in
                                                         report["splits"].items()}, "warnings": report["warnings"]})
    write_json(REPORT, report)
    for name, s in report["splits"].items():
        cut = (f"{s['windowed_sentences']} sentences split into windows" if "windows" in s
               else f"truncated {s['truncated']} ({100 * s['truncated_share']:.1f}%)")
        log.info("%s: %d rows, tokens p50 %d p95 %d max %d, %s, [UNK] %.2f%%", name, s["rows"], s["p50"], s["p95"],
                 s["max"], cut, 100 * s["coverage"]["unk_share"])
    if "word_split" in report:
        w = report["word_split"]
        log.info("serving splits raw text by '%s' (%s: %.1f%% of %d train tokens are one character)", w["rule"],
                 w["chosen_by"], 100 * w["single_char_share"], w["tokens"])
    for warning in report["warnings"]:
        log.warning("%s", warning)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "tokenize")
