"""The pretrain stage's text: a source file's texts (.txt lines or a table column), cut into token windows, a seeded
share held out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.io import PipelineError
from stages.readers import FORMATS, read_table

CHUNK = 1000  # texts per tokenizer call


def read_texts(path: Path, column: str) -> list[str]:
    """A file's texts: each non-empty line of a .txt file, else the `column` of a CSV/TSV/JSONL/Parquet table (a
    column of word lists, as NER's `tokens`, is joined with spaces). Empty texts are left out."""
    if not path.exists():
        raise PipelineError(f"pretrain.source: {path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        try:
            values = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise PipelineError(f"{path}: byte {e.start} is not UTF-8 (pretrain reads .txt files as UTF-8)") from None
    elif suffix in FORMATS:
        table = read_table(path, "auto", "utf-8")
        if column not in table.columns:
            raise PipelineError(f"{path}: no column '{column}' (pretrain.text_column; it has: "
                                f"{', '.join(map(str, table.columns))})")
        values = table[column].tolist()
    else:
        raise PipelineError(f"pretrain.source: {path}: unknown format '{suffix}' (.txt: one text per line; .csv, .tsv, "
                            ".jsonl, .parquet: a text column)")
    texts = [" ".join(map(str, v)) if isinstance(v, list | tuple | np.ndarray) else v for v in values]
    return [t.strip() for t in texts if isinstance(t, str) and t.strip()]


def encode(texts: list[str], tokenizer, max_length: int, offsets: bool):
    """Texts → a datasets.Dataset of windows (input_ids, row: the window's number, and each token's character span
    when masking whole words): a text over `max_length` tokens gives several windows, each with the special tokens."""
    import datasets

    parts = []
    for start in range(0, len(texts), CHUNK):
        enc = tokenizer(texts[start : start + CHUNK], truncation=True, max_length=max_length,
                        return_overflowing_tokens=True, return_offsets_mapping=offsets)
        parts.append(datasets.Dataset.from_dict({"input_ids": enc["input_ids"]}
                                                | ({"offset_mapping": enc["offset_mapping"]} if offsets else {})))
    if not parts:
        raise PipelineError("pretrain: no texts to train on (an empty source, or only empty texts)")
    windows = datasets.concatenate_datasets(parts)  # a text over max_length tokens: several windows, none cut off
    return windows.add_column("row", np.arange(len(windows)))


def split_holdout(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train windows, held-out windows): a seeded `share`, at least one window, held out."""
    if n < 2:
        raise PipelineError(f"pretrain: {n} text window: too few to train on and hold out")
    order = np.random.default_rng(seed).permutation(n)
    k = min(n - 1, max(1, round(share * n)))
    return np.sort(order[k:]), np.sort(order[:k])
