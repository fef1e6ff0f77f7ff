"""The split every task shares: seeded hash order, per-stratum cuts, the source forms (file, given splits, HF).

Rows are assigned to splits per stratum (a label, or one group) by a seeded hash of a key (the text, a sentence's
tokens), not by row order: the same text always lands in the same split, so the test split stays stable when rows
are added or reordered.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from stages.io import SPLITS, PipelineError
from stages.params import IngestParams
from stages.readers import read_hf


def _hash_order(texts: pd.Series, seed: int, salt: str) -> pd.Series:
    key = f"{salt}{seed}".rjust(16, "0")[-16:]  # siphash key: 16 characters
    return pd.util.hash_pandas_object(texts, index=False, hash_key=key)


def require_columns(df: pd.DataFrame, p: IngestParams, params: tuple[str, ...], where: str) -> None:
    """Each `ingest.<param>` names a column of `df`, or a one-line error lists the columns present."""
    for param in params:
        col = getattr(p, param)
        if col not in df.columns:
            present = ", ".join(map(str, df.columns)) or "none"
            raise PipelineError(f"{where}: no column '{col}' (ingest.{param}); columns present: {present}")


def _groups(df: pd.DataFrame, by: str | None) -> list:
    """Row indexes per stratum (per value of `by`, sorted), or one group of every row."""
    return list(df.groupby(by, sort=True).groups.values()) if by else [df.index]


def stratified_split(df: pd.DataFrame, p: IngestParams, with_validation: bool = True,
                     key: str = "text", by: str | None = "label") -> dict:
    """Per `by` value, order rows by a seeded hash of `key`; the first test_size go to test, then validation."""
    order = _hash_order(df[key], p.split_seed, "split")
    parts: dict[str, list] = {s: [] for s in SPLITS}
    for idx in _groups(df, by):
        ranked = order[idx].sort_values(kind="stable").index
        n_test = round(len(ranked) * p.test_size)
        n_val = round(len(ranked) * p.validation_size) if with_validation else 0
        parts["test"].extend(ranked[:n_test])
        parts["validation"].extend(ranked[n_test:n_test + n_val])
        parts["train"].extend(ranked[n_test + n_val:])
    return {s: df.loc[sorted(parts[s])].reset_index(drop=True) for s in SPLITS}


def subsample(df: pd.DataFrame, n: int | None, seed: int, key: str = "text", by: str | None = "label") -> pd.DataFrame:
    """A stratified, seeded subsample of `n` rows (per `by` value in proportion); None keeps every row."""
    if n is None or n >= len(df):
        return df
    order = _hash_order(df[key], seed, "sub")
    keep = []
    for idx in _groups(df, by):
        keep.extend(order[idx].sort_values(kind="stable").index[: max(1, round(len(idx) * n / len(df)))])
    return df.loc[sorted(keep)].reset_index(drop=True)


def assemble(frames: dict[str, pd.DataFrame], p: IngestParams, key: str = "text", by: str | None = "label") -> dict:
    """{'all'} → subsample, then split; {'train','test'} → validation carved out of train; all three → as given.
    Only train (or 'all') is subsampled by max_rows: the given test split stays whole."""
    if "all" in frames:
        return stratified_split(subsample(frames["all"], p.max_rows, p.split_seed, key, by), p, True, key, by)
    train = subsample(frames["train"], p.max_rows, p.split_seed, key, by)
    if "validation" in frames:
        return {"train": train, "validation": frames["validation"], "test": frames["test"]}
    carved = stratified_split(train, p.model_copy(update={"test_size": p.validation_size}), False, key, by)
    return {"train": carved["train"], "validation": carved["test"], "test": frames["test"]}


def read_frames(p: IngestParams, read_file: Callable[[str], pd.DataFrame],
                select: Callable[[pd.DataFrame, str, list[str] | None], pd.DataFrame],
                names_column: str) -> tuple[dict[str, pd.DataFrame], list[str] | None]:
    """The source forms both tasks share: `hf:<name>` (its train/validation/test splits; 'all' without a
    test split), one file ('all', split here), or source + test_file (+ validation_file) as given splits.
    `read_file(path)` reads one local file; `select(frame, where, names)` keeps and checks an HF split's
    columns, given the ClassLabel names of `names_column` (None if it has none)."""
    if p.source.startswith("hf:"):
        raw, names = read_hf(p.source.removeprefix("hf:"), p.hf_config, names_column)
        frames = {k: select(v, f"{p.source}[{k}]", names) for k, v in raw.items() if k in SPLITS}
        if "train" not in frames:
            raise PipelineError(f"{p.source}: no 'train' split (found: {', '.join(raw)})")
        if "test" not in frames:
            frames = {"all": pd.concat(frames.values(), ignore_index=True)}
        return frames, names
    files = {"train": p.source, "validation": p.validation_file, "test": p.test_file}
    if not p.test_file:
        files = {"all": p.source}
    return {k: read_file(f) for k, f in files.items() if f}, None
