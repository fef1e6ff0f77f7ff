"""Tokenizing texts, for every task whose rows are (text, label): the model's fast tokenizer, truncated at max_length,
no padding (batches pad at training time). Texts stream from parquet chunks into memory-mapped Arrow files (bounded
memory); the report holds token-length percentiles (before truncation), the share of texts truncated and
the vocabulary's coverage of the text (stages.coverage).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.coverage import Coverage
from stages.io import SPLITS, PipelineError
from stages.params import TokenizeParams


class Wrapper:
    """Adds the tokenizer's special tokens around a window's sub-tokens ([CLS] … [SEP] for BERT)."""

    def __init__(self, prefix: list[int], suffix: list[int]) -> None:
        self.prefix, self.suffix = prefix, suffix
        self.n_pre, self.n_special = len(prefix), len(prefix) + len(suffix)

    @classmethod
    def of(cls, tokenizer) -> Wrapper:
        ids = tokenizer("a")["input_ids"]
        bare = tokenizer("a", add_special_tokens=False)["input_ids"]
        for start in range(len(ids) - len(bare) + 1):
            if ids[start : start + len(bare)] == bare:
                return cls(ids[:start], ids[start + len(bare):])
        raise PipelineError("tokenizer: cannot locate a text among its special tokens")

    def __call__(self, ids: list[int]) -> list[int]:
        return self.prefix + ids + self.suffix


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


def _label_id():
    import datasets

    return datasets.Value("int64")


def _ids(labels: pd.Series, label2id: dict[str, int]) -> list:
    return [label2id[x] for x in labels]


@dataclass(frozen=True)
class LabelCodec:
    """How a task stores its labels in the tokenized data: the datasets feature, the encoder of a chunk's labels
    (given the label → id map), and a hashable form for the fingerprint. The default: one label id per text."""

    feature: Callable[[], Any] = _label_id
    encode: Callable[[pd.Series, dict[str, int]], list] = _ids
    key: Callable[[pd.Series], pd.Series] = lambda labels: labels  # label ids hash as they are


def tokenize(splits: dict[str, pd.DataFrame | Iterable[pd.DataFrame]], tokenizer, labels: list[str], p: TokenizeParams,
             scratch: Path | None = None, codec: LabelCodec = LabelCodec()):
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
    n_pre, n_suf = special_layout(tokenizer)
    keep = p.max_length - n_suf
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                  "label": codec.feature(), "n_tokens": datasets.Value("int32")})

    def encode(batch: pd.DataFrame, coverage: Coverage) -> dict:
        texts = batch["text"].tolist()
        enc = tokenizer(texts, truncation=False, return_attention_mask=False, return_token_type_ids=False,
                        verbose=False)["input_ids"]
        coverage.add(texts, (s[n_pre : len(s) - n_suf] for s in enc))
        return {"input_ids": [s if len(s) <= p.max_length else s[:keep] + s[len(s) - n_suf:] for s in enc],
                "label": codec.encode(batch["label"], label2id), "n_tokens": [len(s) for s in enc]}

    out, report = {}, {"max_length": p.max_length, "splits": {}}
    for name in SPLITS:
        chunks = [splits[name]] if isinstance(splits[name], pd.DataFrame) else splits[name]
        path = str(scratch / f"{name}.arrow") if scratch else None
        sink = pa.OSFile(path, "wb") if path else pa.BufferOutputStream()
        fp, lengths = Fingerprint(tokenizer, f"{p.max_length}|{labels}|{name}"), [np.zeros(0, np.int32)]
        coverage = Coverage(tokenizer)
        with ArrowWriter(features=features, stream=sink) as writer:
            for batch in (c.iloc[i : i + p.batch_size] for c in chunks for i in range(0, len(c), p.batch_size)):
                fp.add(batch[["text"]].assign(label=codec.key(batch["label"])))
                columns = encode(batch, coverage)
                writer.write_batch(columns)
                lengths.append(np.asarray(columns["n_tokens"], np.int32))
            writer.finalize()
        table = MemoryMappedTable.from_file(path) if path else InMemoryTable.from_buffer(sink.getvalue())
        out[name] = datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint=fp.value())
        lengths = np.concatenate(lengths)
        report["splits"][name] = length_stats(lengths, p.max_length) | {
            "truncated": int((lengths > p.max_length).sum()), "coverage": coverage.report()}  # texts cut at max_length
    return datasets.DatasetDict(out), report
