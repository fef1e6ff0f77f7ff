"""Our pipeline on CoNLL-2003: `dvc repro` with task token_classification in a fresh clone of HEAD, then
the trained model scored on the full, uncleaned test.txt with the same seqeval calls as the reference
(bench/ner_reference.py), so the two F1s are comparable.

    python -m bench.ner --out bench/results/ner.json            # ~30 min on 2 cores
    python -m bench.ner --max-train 300 --epochs 1 --out /tmp/ner_smoke.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench.common import command_line, committed_params, finish, machine_info, project_args, read_conll, repro_in_clone

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "conll2003"


def project_params(max_train: int | None, epochs: int | None) -> dict:
    """params.yaml as committed, switched to NER on the CoNLL files: the 'default NER params'."""
    return committed_params("conll2003-ner", epochs, "token_classification", source="data/source/train.txt",
                            validation_file="data/source/dev.txt", test_file="data/source/test.txt", max_rows=max_train)


def score_full_test(model_dir: Path, test_file: Path) -> dict:
    """The trained model on every test.txt sentence (also those clean drops as duplicates or train leaks),
    scored with the same seqeval calls as the reference."""
    import pandas as pd
    import torch

    from stages.align import tokenize_sentences
    from stages.entities import entity_scores, per_type
    from stages.loading import load_tokenizer
    from stages.params import TokenizeParams
    from stages.tasks import get
    from stages.tasks.token import split_predictions

    words, tags = read_conll(test_file)
    meta = json.loads((model_dir / "pipeline.json").read_text())
    tokenizer = load_tokenizer(str(model_dir))
    frame = pd.DataFrame({"tokens": words, "tags": tags})
    dd, _ = tokenize_sentences({s: frame for s in ("train", "validation", "test")}, tokenizer, meta["labels"],
                               TokenizeParams(max_length=meta["max_length"]))
    model = get(meta["task"]).load_model(str(model_dir))
    t0 = time.perf_counter()
    y_true, y_pred, _ = split_predictions(model, dd["test"], meta["labels"], 128, tokenizer.pad_token_id, torch.device("cpu"))
    seconds = time.perf_counter() - t0
    assert y_true == tags, "gold tags rebuilt from windows must equal the file's"
    return {"sentences": len(words), "scores": entity_scores(y_true, y_pred), "per_type": per_type(y_true, y_pred),
            "predict_seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    args = project_args(__doc__, DEFAULT_DATA, ROOT / "bench/results/ner.json", argv)
    if not (args.data / "train.txt").exists():
        print(f"skip: no CoNLL-2003 files in {args.data}")
        return 0
    files = {f"data/source/{name}": (args.data / name).read_text(encoding="utf-8")
             for name in ("train.txt", "dev.txt", "test.txt")}
    load = os.getloadavg()
    params = project_params(args.max_train, args.epochs)
    tmp, root, commit, _, proc, wall = repro_in_clone(ROOT, "bench-ner-", files, params, args.out.with_suffix(".log"))
    if proc.returncode:
        return proc.returncode
    read = lambda name: json.loads((root / name).read_text())  # noqa: E731
    result = {
        "command": command_line("bench.ner", argv),
        "commit": commit, "params": project_params(args.max_train, args.epochs),
        "dvc_repro_seconds": round(wall, 1), "train": read("reports/train.json"),
        "pipeline_test": read("reports/metrics.json")["test"], "clean": read("reports/clean.json")["total"],
        "tokenize": read("reports/tokenize.json"), "full_test": score_full_test(root / "models/finetuned", args.data / "test.txt"),
        "loadavg_start": load, "loadavg_end": os.getloadavg(), "machine": machine_info(),
    }
    s = result["full_test"]["scores"]
    return finish(args.out, result, f"full test.txt: entity F1 {s['f1']:.4f} (strict {s['strict_f1']:.4f}); pipeline "
                  f"test F1 {result['pipeline_test']['f1']:.4f}; training {result['train']['train_seconds']} s; "
                  f"dvc repro {wall:.0f} s", tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
