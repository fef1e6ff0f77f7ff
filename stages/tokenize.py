"""Tokenize every split with the model's fast tokenizer: truncate at max_length, no padding.

Padding happens per batch at training time. `reports/tokenize.json` holds token-length
percentiles (before truncation) and the share of texts that were truncated.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stages.io import SPLITS, PipelineError, atomic_dir, read_labels, read_splits, write_json
from stages.modeling import load_tokenizer
from stages.params import TokenizeParams, load_params

IN, OUT, REPORT = Path("data/augmented"), Path("data/tokenized"), Path("reports/tokenize.json")
log = logging.getLogger(__name__)


def special_layout(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single text ([CLS] x [SEP]: 1, 1)."""
    ids = tokenizer("a")["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(ids) - len(bare) + 1):
        if ids[start : start + len(bare)] == bare:
            return start, len(ids) - start - len(bare)
    raise PipelineError("tokenizer: cannot locate the text among its special tokens")


def length_stats(lengths: np.ndarray, max_length: int) -> dict:
    if not len(lengths):
        return {"rows": 0, "mean": 0, "p50": 0, "p90": 0, "p95": 0, "p99": 0, "max": 0, "truncated_share": 0.0}
    q = np.percentile(lengths, [50, 90, 95, 99])
    return {"rows": int(len(lengths)), "mean": round(float(lengths.mean()), 1),
            "p50": int(q[0]), "p90": int(q[1]), "p95": int(q[2]), "p99": int(q[3]), "max": int(lengths.max()),
            "truncated_share": round(float((lengths > max_length).mean()), 4)}


def tokenize(splits: dict[str, pd.DataFrame], tokenizer, labels: list[str], p: TokenizeParams):
    """Pure core: a DatasetDict of input_ids (int32), label ids and untruncated lengths + stats."""
    import datasets

    datasets.disable_progress_bars()  # the stage logs one line per split instead
    label2id = {n: i for i, n in enumerate(labels)}
    _, n_suf = special_layout(tokenizer)
    keep = p.max_length - n_suf
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                  "label": datasets.Value("int64"), "n_tokens": datasets.Value("int32")})

    def encode(batch: dict) -> dict:
        enc = tokenizer(batch["text"], truncation=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)["input_ids"]
        return {"input_ids": [s if len(s) <= p.max_length else s[:keep] + s[len(s) - n_suf:] for s in enc],
                "label": [label2id[x] for x in batch["label"]], "n_tokens": [len(s) for s in enc]}

    # datasets would fingerprint the result from the pickled tokenizer, which holds its install path, so
    # the same tokens saved from two checkouts hashed differently in dvc.lock. Derive it from content.
    vocab = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()

    def fingerprint(name: str, df: pd.DataFrame) -> str:
        h = hashlib.sha256(f"{vocab}|{p.max_length}|{labels}|{name}".encode())
        h.update(pd.util.hash_pandas_object(df[["text", "label"]], index=False).to_numpy().tobytes())
        return h.hexdigest()[:32]

    out, report = {}, {"max_length": p.max_length, "splits": {}}
    for name in SPLITS:
        ds = datasets.Dataset.from_pandas(splits[name][["text", "label"]], preserve_index=False)
        out[name] = ds.map(encode, batched=True, batch_size=p.batch_size, remove_columns=["text"],
                           features=features, new_fingerprint=fingerprint(name, splits[name]))
        report["splits"][name] = length_stats(np.asarray(out[name]["n_tokens"]), p.max_length)
    return datasets.DatasetDict(out), report


def main() -> None:
    params = load_params()
    splits, labels = read_splits(IN), read_labels(IN)
    tokenizer = load_tokenizer(params.model.name)
    dd, report = tokenize(splits, tokenizer, labels, params.tokenize)
    with atomic_dir(OUT) as tmp:
        dd.save_to_disk(str(tmp))
        write_json(tmp / "labels.json", {"names": labels})
        write_json(tmp / "settings.json", {"max_length": params.tokenize.max_length, "model": params.model.name})
    write_json(REPORT, report)
    for name, s in report["splits"].items():
        log.info("%s: %d texts, tokens p50 %d p95 %d max %d, truncated %.1f%%",
                 name, s["rows"], s["p50"], s["p95"], s["max"], 100 * s["truncated_share"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "tokenize")
