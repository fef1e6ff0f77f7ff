"""Tokenize every split with the model's fast tokenizer: truncate at max_length, no padding.

For token classification, sentences are aligned word → sub-tokens and cut into windows instead of
truncated (stages.align). Padding happens per batch at training time. `reports/tokenize.json` holds token-length
percentiles (before truncation) and the share of texts that were truncated.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stages.align import AlignStats, Wrapper, align, continuation_ids, word_pieces
from stages.io import SPLITS, atomic_dir, read_labels, read_splits, write_json
from stages.modeling import load_tokenizer
from stages.params import TOKEN_TASK, TokenizeParams, load_params

IN, OUT, REPORT = Path("data/augmented"), Path("data/tokenized"), Path("reports/tokenize.json")
log = logging.getLogger(__name__)


def special_layout(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single text ([CLS] x [SEP]: 1, 1)."""
    wrap = Wrapper.of(tokenizer)
    return wrap.n_pre, wrap.n_special - wrap.n_pre


def length_stats(lengths: np.ndarray, max_length: int) -> dict:
    if not len(lengths):
        return {"rows": 0, "mean": 0, "p50": 0, "p90": 0, "p95": 0, "p99": 0, "max": 0, "truncated_share": 0.0}
    q = np.percentile(lengths, [50, 90, 95, 99])
    return {"rows": int(len(lengths)), "mean": round(float(lengths.mean()), 1),
            "p50": int(q[0]), "p90": int(q[1]), "p95": int(q[2]), "p99": int(q[3]), "max": int(lengths.max()),
            "truncated_share": round(float((lengths > max_length).mean()), 4)}


def fingerprint(tokenizer, settings: str, frame: pd.DataFrame) -> str:
    """A content-derived datasets fingerprint. datasets would derive it from the pickled tokenizer, which
    holds its install path, so the same tokens saved from two checkouts hashed differently in dvc.lock."""
    h = hashlib.sha256(hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest().encode())
    h.update(f"|{settings}".encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:32]


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

    out, report = {}, {"max_length": p.max_length, "splits": {}}
    for name in SPLITS:
        ds = datasets.Dataset.from_pandas(splits[name][["text", "label"]], preserve_index=False)
        out[name] = ds.map(encode, batched=True, batch_size=p.batch_size, remove_columns=["text"], features=features,
                           new_fingerprint=fingerprint(tokenizer, f"{p.max_length}|{labels}|{name}", splits[name][["text", "label"]]))
        report["splits"][name] = length_stats(np.asarray(out[name]["n_tokens"]), p.max_length)
    return datasets.DatasetDict(out), report


def tokenize_sentences(splits: dict[str, pd.DataFrame], tokenizer, labels: list[str], p: TokenizeParams):
    """Pure core for token classification: windows of sub-tokens with aligned label ids (see stages.align),
    the word index of each word's first sub-token, and the sentence each window came from."""
    import datasets
    import pyarrow as pa

    wrap = Wrapper.of(tokenizer)
    budget = p.max_length - wrap.n_special
    label2id = {n: i for i, n in enumerate(labels)}
    continuation = continuation_ids(labels) if p.label_all_subtokens else None
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                  "label": datasets.List(datasets.Value("int64")),
                                  "word": datasets.List(datasets.Value("int32")),
                                  "sentence": datasets.Value("int64"), "n_tokens": datasets.Value("int32"),
                                  "word_labels": datasets.List(datasets.Value("int64"))})
    out, report = {}, {"max_length": p.max_length, "label_all_subtokens": p.label_all_subtokens, "splits": {}}
    for name in SPLITS:
        df, stats, rows = splits[name], AlignStats(), []
        sentences = [list(map(str, t)) for t in df["tokens"]]
        for start in range(0, len(sentences), p.batch_size):
            chunk = sentences[start : start + p.batch_size]
            for k, pieces in enumerate(word_pieces(tokenizer, chunk) if chunk else []):
                i = start + k
                tags = [label2id[t] for t in df["tags"].iat[i]]
                for w in align(pieces, tags, i, budget, wrap, continuation, stats):
                    rows.append((w.input_ids, w.labels, w.words, w.sentence, stats.n_tokens[-1], w.word_labels))
        columns = dict(zip(features, map(list, zip(*rows)))) if rows else {k: [] for k in features}
        joined = pd.DataFrame({c: df[c].map(" ".join) for c in ("tokens", "tags")})  # lists do not hash
        settings = f"{p.max_length}|{p.label_all_subtokens}|{labels}|{name}"
        table = pa.Table.from_pydict(columns, schema=features.arrow_schema)
        out[name] = datasets.Dataset(table, info=datasets.DatasetInfo(features=features),
                                     fingerprint=fingerprint(tokenizer, settings, joined))
        report["splits"][name] = length_stats(np.asarray(stats.n_tokens), p.max_length) | {
            "windows": stats.windows, "windowed_sentences": stats.windowed_sentences,
            "empty_words": stats.empty_words, "truncated_words": stats.truncated_words}
    return datasets.DatasetDict(out), report


def main() -> None:
    params = load_params()
    splits, labels = read_splits(IN), read_labels(IN)
    tokenizer = load_tokenizer(params.model.name)
    core = tokenize_sentences if params.task == TOKEN_TASK else tokenize
    dd, report = core(splits, tokenizer, labels, params.tokenize)
    with atomic_dir(OUT) as tmp:
        dd.save_to_disk(str(tmp))
        write_json(tmp / "labels.json", {"names": labels})
        write_json(tmp / "settings.json", {"task": params.task, "max_length": params.tokenize.max_length,
                                           "model": params.model.name})
    write_json(REPORT, report)
    for name, s in report["splits"].items():
        cut = (f"{s['windowed_sentences']} sentences split into windows" if "windows" in s
               else f"truncated {100 * s['truncated_share']:.1f}%")
        log.info("%s: %d rows, tokens p50 %d p95 %d max %d, %s", name, s["rows"], s["p50"], s["p95"], s["max"], cut)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "tokenize")
