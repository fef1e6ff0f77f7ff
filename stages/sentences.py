"""NER sentences for ingest: CoNLL / JSONL / Parquet / HF readers, IOB2 checks and repair, the split.

A sentence frame has one row per sentence: `tokens` and `tags` (lists of str, same length, IOB2) and,
until the splits are written, `_at`: where the sentence came from, so that errors name file and line/row.
Source forms, `max_rows` and the seeded hash split are the classification ones (`stages/ingest.py`),
keyed on the sentence's tokens and not stratified.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from stages import iob
from stages.io import PipelineError
from stages.params import IngestParams
from stages.readers import _decode, read_table
from stages.splits import assemble, read_frames, require_columns

TOKEN_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}  # else CoNLL
DOCSTART = "-DOCSTART-"  # CoNLL-2003's document separator: not a sentence
COLUMNS = re.compile(r"[ \t]+")  # CoNLL columns; other whitespace (NBSP, ...) may be part of a word
Where = tuple[str, str, int, str | None]  # (file, 'line' | 'row', 1-based number, column name of a row)


def where(at: Where, i: int | None = None) -> str:
    """Where token i came from: 'f.conll: line 14' (the sentence's first line + i), or
    "f.jsonl: row 3, column 'tags', item 2"; without i, the sentence."""
    src, unit, n, column = at
    if unit == "line":
        return f"{src}: line {n + (i or 0)}"
    return f"{src}: row {n}, column '{column}'" + ("" if i is None else f", item {i + 1}")


def read_conll(path: Path, encoding: str = "utf-8", tag_column: int = -1) -> pd.DataFrame:
    """One token per line: whitespace-separated columns, the word first, the tag in column `tag_column`
    (0-based; -1: the last); a blank line ends a sentence; -DOCSTART- lines are skipped."""
    if not path.exists():
        raise PipelineError(f"{path}: file not found (ingest.source / validation_file / test_file)")
    if tag_column == 0:
        raise PipelineError("ingest.conll_tag_column: 0 is the word's column; the tag is another one (-1: the last)")
    need = tag_column + 1 if tag_column > 0 else 1 - tag_column  # -1: a word and a tag, 2 columns
    rows: dict[str, list] = {"tokens": [], "tags": [], "_at": []}
    tokens: list[str] = []
    tags: list[str] = []

    def end_sentence() -> None:
        if tokens:
            for col, value in (("tokens", tokens[:]), ("tags", tags[:]), ("_at", (str(path), "line", first, None))):
                rows[col].append(value)
            tokens.clear()
            tags.clear()

    first = 0
    for n, line in enumerate(_decode(path, encoding, "conll").split("\n"), 1):  # line numbers as _decode counts them
        text = line.strip(" \t\r")
        cols = COLUMNS.split(text)
        if not text.strip() or cols[0] == DOCSTART:
            end_sentence()
            continue
        if len(cols) < need:
            raise PipelineError(f"{path}: line {n}, column {len(cols) + 1}: missing; a token line needs {need} "
                                f"whitespace-separated columns (word first; ingest.conll_tag_column: {tag_column}), "
                                f"found {len(cols)}")
        k = tag_column if tag_column > 0 else len(cols) + tag_column
        try:
            iob.parse(cols[k])
        except ValueError as e:
            raise PipelineError(f"{path}: line {n}, column {k + 1}: {e}") from None
        first = first if tokens else n
        tokens.append(cols[0])
        tags.append(cols[k])
    end_sentence()
    if not rows["tokens"]:
        raise PipelineError(f"{path}: no sentences (CoNLL: one 'word ... tag' line per token, a blank line "
                            f"between sentences); set ingest.format if this is not CoNLL")
    return pd.DataFrame(rows)


def _strings(value, at: Where, names: list[str] | None = None, tags: bool = False) -> list[str]:
    """A list cell as a list of str; integer tags become `names[i]`; anything else is a one-line error."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise PipelineError(f"{where(at)}: expected a list of strings, got {type(value).__name__} {str(value)[:40]!r}")
    out = []
    for i, v in enumerate(value):
        is_int = isinstance(v, (int, np.integer)) and not isinstance(v, bool)
        if tags and is_int and names:
            if not 0 <= v < len(names):
                raise PipelineError(f"{where(at, i)}: tag {v} outside 0..{len(names) - 1} ({len(names)} tag names)")
            v = names[v]
        elif not isinstance(v, str):
            hint = "; integer tags need ingest.label_names (in id order) or an HF ClassLabel" if tags and is_int else ""
            raise PipelineError(f"{where(at, i)}: expected a string, got {type(v).__name__} {v!r}{hint}")
        out.append(v)
    return out


def sentence_frame(df: pd.DataFrame, p: IngestParams, src: str, names: list[str] | None = None) -> pd.DataFrame:
    """A table's tokens/tags list columns, checked, as a sentence frame; integer tags are named by `names`
    (an HF ClassLabel's) or else ingest.label_names."""
    require_columns(df, p, ("tokens_column", "tags_column"), src)
    names = names or p.label_names
    rows: dict[str, list] = {"tokens": [], "tags": [], "_at": []}
    for r, (tokens, tags) in enumerate(zip(df[p.tokens_column], df[p.tags_column]), 1):
        tokens = _strings(tokens, (src, "row", r, p.tokens_column))
        tags = _strings(tags, (src, "row", r, p.tags_column), names, tags=True)
        if len(tokens) != len(tags):
            raise PipelineError(f"{src}: row {r}: {len(tokens)} tokens (column '{p.tokens_column}') but "
                                f"{len(tags)} tags (column '{p.tags_column}')")
        for col, value in (("tokens", tokens), ("tags", tags), ("_at", (src, "row", r, p.tags_column))):
            rows[col].append(value)
    return pd.DataFrame(rows)


def read_sentence_file(f: str, p: IngestParams) -> pd.DataFrame:
    """One local file: .jsonl/.ndjson and .parquet/.pq by suffix (format: auto), anything else CoNLL."""
    path = Path(f)
    fmt = TOKEN_FORMATS.get(path.suffix.lower(), "conll") if p.format == "auto" else p.format
    if fmt == "conll":
        return read_conll(path, p.encoding, p.conll_tag_column)
    if fmt not in ("jsonl", "parquet"):
        raise PipelineError(f"{f}: ingest.format '{fmt}' is for texts; token_classification reads conll, jsonl "
                            f"or parquet")
    return sentence_frame(read_table(path, fmt, p.encoding), p, f)


def read_sentences(p: IngestParams) -> dict[str, pd.DataFrame]:
    """Shell: the sentence frames `ingest.source` names ({'all'} or given splits), as for classification."""
    if p.source.startswith("demo:"):
        raise PipelineError(f"ingest.source '{p.source}': the demos are texts (sequence_classification); "
                            f"token_classification reads a CoNLL, JSONL or Parquet file or hf:<name>")
    frames, _ = read_frames(p, lambda f: read_sentence_file(f, p),
                            lambda df, src, names: sentence_frame(df, p, src, names), p.tags_column)
    return frames


def fix_iob(df: pd.DataFrame, how: str) -> pd.DataFrame:
    """Every tag parses; an I-X that does not continue an X entity becomes B-X ('repair', counted per
    sentence in `_repaired`) or is an error naming where it is ('reject')."""
    fixed, repaired = [], []
    for at, tags in zip(df["_at"], df["tags"]):
        for i, tag in enumerate(tags):
            try:
                iob.parse(tag)
            except ValueError as e:
                raise PipelineError(f"{where(at, i)}: {e}") from None
        i = iob.invalid_at(tags)
        if i is not None and how == "reject":
            prev = tags[i - 1] if i else "the sentence start"
            raise PipelineError(f"{where(at, i)}: tag '{tags[i]}' after '{prev}' is not IOB2 (IOB1, or a slip); "
                                f"ingest.iob_repair: repair makes it B-{iob.parse(tags[i])[1]}")
        new, n = iob.repair(tags) if i is not None else (tags, 0)
        fixed.append(new)
        repaired.append(n)
    return df.assign(tags=fixed, _repaired=repaired)


def ingest_sentences(frames: dict[str, pd.DataFrame], p: IngestParams) -> tuple[dict, list[str], dict]:
    """Pure core: sentence frames ({'all'} or given splits) → three splits (tokens, tags), the label names
    (O, B-/I- per train entity type) and the summary (per split: sentences, tokens, entities, repairs)."""
    keyed = {}
    for k, f in frames.items():
        if "_at" not in f:  # frames built in code: name rows
            f = f.assign(_at=[(f"{k} part", "row", r, "tags") for r in range(1, len(f) + 1)])
        f = f.assign(tokens=f["tokens"].map(list), tags=f["tags"].map(list))
        keyed[k] = fix_iob(f, p.iob_repair).assign(_key=lambda d: d["tokens"].map(" ".join))
    splits = assemble(keyed, p, key="_key", by=None)
    check_types(splits)
    return {s: df[["tokens", "tags"]] for s, df in splits.items()}, sentence_labels(splits), summarize(splits)


def train_types(splits: dict) -> list[str]:
    return iob.entity_types(t for tags in splits["train"]["tags"] for t in tags)


def sentence_labels(splits: dict) -> list[str]:
    """The model's labels: O, then B-/I- of each entity type in train."""
    return iob.label_list(train_types(splits))


def check_types(splits: dict, after: str = "") -> None:
    """Train has at least one entity type, and validation/test have no type that train lacks."""
    train = set(train_types(splits))
    if not train:
        raise PipelineError(f"train split has no entities{after}; need at least one entity type (B-TYPE tags)")
    for split in ("validation", "test"):
        df = splits[split]
        for r, tags in enumerate(df["tags"]):
            unseen = sorted(set(iob.entity_types(tags)) - train)
            if unseen:
                at = f" ({where(df['_at'].iloc[r])})" if "_at" in df else f", row {r + 1}"
                raise PipelineError(f"{split} split{at}: entity type '{unseen[0]}' never occurs in train{after} "
                                    f"(train has {', '.join(sorted(train))})")


def summarize(splits: dict) -> dict:
    """Per split: sentences, tokens, entities per type, and the IOB repairs (tags, sentences) ingest made."""
    out = {}
    for s, df in splits.items():
        fixed = df["_repaired"] if "_repaired" in df else pd.Series(0, index=df.index)
        entities = Counter(kind for tags in df["tags"] for kind, _, _ in iob.spans(list(tags)))
        out[s] = {"sentences": len(df), "tokens": int(df["tokens"].map(len).sum()),
                  "entities": dict(sorted(entities.items())),
                  "iob_repairs": {"tags": int(fixed.sum()), "sentences": int((fixed > 0).sum())}}
    return out


