"""Tokenize every split with the model's fast tokenizer: truncate at max_length, no padding.

For token classification, sentences are aligned word → sub-tokens and cut into windows instead of
truncated (stages.align). Padding happens per batch at training time. `reports/tokenize.json` holds token-length
percentiles (before truncation) and the share of texts that were truncated. Texts stream from parquet in chunks into
memory-mapped Arrow files (bounded memory); NER sentences are tokenized in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from stages.align import AlignStats, Wrapper, align, continuation_ids, word_pieces
from stages.io import SPLITS, atomic_dir, iter_split, read_labels, read_splits, split_paths, write_json
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


class Fingerprint:
    """A content-derived datasets fingerprint, fed chunk by chunk: a pure function of the tokenizer, the settings and
    the rows in order, however they are chunked. datasets would derive it from the pickled tokenizer, which holds its
    install path, so the same tokens saved from two checkouts hashed differently in dvc.lock."""

    def __init__(self, tokenizer, settings: str):
        self._h = hashlib.sha256(hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest().encode())
        self._h.update(f"|{settings}".encode())

    def add(self, frame: pd.DataFrame) -> Fingerprint:
        self._h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())  # one uint64 per row
        return self

    def value(self) -> str:
        return self._h.hexdigest()[:32]


def tokenize(splits: dict[str, pd.DataFrame | Iterable[pd.DataFrame]], tokenizer, labels: list[str], p: TokenizeParams,
             scratch: Path | None = None):
    """Pure core: a DatasetDict of input_ids (int32), label ids and untruncated lengths + stats. A split is a
    DataFrame or a stream of DataFrame chunks; with `scratch`, each split is written there as an Arrow file and
    memory-mapped (the stage), else kept in memory. save_to_disk writes the same bytes either way: it re-cuts the
    rows into its own record batches."""
    import datasets
    import pyarrow as pa
    from datasets.arrow_writer import ArrowWriter
    from datasets.table import InMemoryTable, MemoryMappedTable

    datasets.disable_progress_bars()  # the stage logs one line per split instead
    label2id = {n: i for i, n in enumerate(labels)}
    _, n_suf = special_layout(tokenizer)
    keep = p.max_length - n_suf
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                  "label": datasets.Value("int64"), "n_tokens": datasets.Value("int32")})

    def encode(batch: pd.DataFrame) -> dict:
        enc = tokenizer(batch["text"].tolist(), truncation=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)["input_ids"]
        return {"input_ids": [s if len(s) <= p.max_length else s[:keep] + s[len(s) - n_suf:] for s in enc],
                "label": [label2id[x] for x in batch["label"]], "n_tokens": [len(s) for s in enc]}

    out, report = {}, {"max_length": p.max_length, "splits": {}}
    for name in SPLITS:
        chunks = [splits[name]] if isinstance(splits[name], pd.DataFrame) else splits[name]
        path = str(scratch / f"{name}.arrow") if scratch else None
        sink = pa.OSFile(path, "wb") if path else pa.BufferOutputStream()
        fp, lengths = Fingerprint(tokenizer, f"{p.max_length}|{labels}|{name}"), [np.zeros(0, np.int32)]
        with ArrowWriter(features=features, stream=sink) as writer:
            for batch in (c.iloc[i : i + p.batch_size] for c in chunks for i in range(0, len(c), p.batch_size)):
                fp.add(batch[["text", "label"]])
                columns = encode(batch)
                writer.write_batch(columns)
                lengths.append(np.asarray(columns["n_tokens"], np.int32))
            writer.finalize()
        table = MemoryMappedTable.from_file(path) if path else InMemoryTable.from_buffer(sink.getvalue())
        out[name] = datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint=fp.value())
        report["splits"][name] = length_stats(np.concatenate(lengths), p.max_length)
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
                                     fingerprint=Fingerprint(tokenizer, settings).add(joined).value())
        report["splits"][name] = length_stats(np.asarray(stats.n_tokens), p.max_length) | {
            "windows": stats.windows, "windowed_sentences": stats.windowed_sentences,
            "empty_words": stats.empty_words, "truncated_words": stats.truncated_words}
    return datasets.DatasetDict(out), report


def main() -> None:
    # Tokenizing is all this process does: the Rust tokenizer batches over every core (1.7x on 2 cores). The
    # other stages keep its thread pool off (stages.cli), as torch owns the cores there. RAYON_NUM_THREADS caps it.
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    params = load_params()
    paths, labels = split_paths(IN), read_labels(IN)
    tokenizer = load_tokenizer(params.model.name)
    with atomic_dir(OUT) as tmp:
        scratch = tmp / "scratch"  # the memory-mapped Arrow files of the texts; gone with the temp dir on failure
        scratch.mkdir()
        if params.task == TOKEN_TASK:
            dd, report = tokenize_sentences(read_splits(IN), tokenizer, labels, params.tokenize)
        else:  # texts stream from parquet in chunks
            splits = {name: iter_split(path, columns=["text", "label"]) for name, path in paths.items()}
            dd, report = tokenize(splits, tokenizer, labels, params.tokenize, scratch)
        dd.save_to_disk(str(tmp))
        shutil.rmtree(scratch)
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
