"""Ingest a labelled text source into fixed train/validation/test splits with a saved label map.

The split is stratified and keyed on a seeded hash of each text, not on row order: the same text
always lands in the same split, so the test split stays stable when rows are added or reordered.
The token task (NER) reads sentences instead (`stages/sentences.py`) and shares the source forms and
the hash split defined here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from stages.io import SPLITS, PipelineError, check_labels, write_splits
from stages.params import TOKEN_TASK, IngestParams, load_params
from stages.readers import DEMO_LABEL_NAMES, read_demo, read_hf, read_table

OUT = Path("data/raw")
log = logging.getLogger(__name__)


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


def select_columns(df: pd.DataFrame, p: IngestParams, where: str) -> pd.DataFrame:
    """Keep the text and label columns, as `text`/`label`; missing columns or labels are errors."""
    require_columns(df, p, ("text_column", "label_column"), where)
    out = pd.DataFrame({"text": df[p.text_column], "label": df[p.label_column]}).reset_index(drop=True)
    missing = out["label"].isna() | (out["label"].astype(str).str.strip() == "")
    if missing.any():
        row = int(missing.idxmax()) + 1
        raise PipelineError(f"{where}: row {row}, column '{p.label_column}': missing label "
                            f"({int(missing.sum())} rows without a label)")
    out["text"] = out["text"].fillna("").astype(str)  # empty texts are clean's to count and drop
    return out


def label_names(labels: pd.Series, given: list[str] | None) -> tuple[pd.Series, list[str]]:
    """Map raw labels (strings or integers) to names; returns (names per row, names in id order)."""
    as_str = labels.astype(str).str.strip()
    is_int = as_str.str.fullmatch(r"-?\d+").all()
    if given:
        if is_int:
            ids = as_str.astype(int)
            bad = ~ids.between(0, len(given) - 1)
            if bad.any():
                raise PipelineError(f"{_where(bad.idxmax())}: label {ids[bad].iloc[0]} outside "
                                    f"0..{len(given) - 1} (ingest.label_names has {len(given)} names)")
            return ids.map(dict(enumerate(given))), list(given)
        unknown = sorted(set(as_str) - set(given))
        if unknown:
            raise PipelineError(f"labels {unknown[:5]} are not in ingest.label_names {given}")
        return as_str, list(given)
    uniques = sorted(set(as_str), key=int) if is_int else sorted(set(as_str))
    return as_str, uniques


def _where(idx) -> str:
    """'train part, row 7' for a (part, row) index of stacked frames; 'row 7' for a plain one."""
    part, row = idx if isinstance(idx, tuple) else (None, idx)
    return (f"{part} part, " if part else "") + f"row {int(row) + 1}, column 'label'"


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


def ingest(frames: dict[str, pd.DataFrame], p: IngestParams, names: list[str] | None = None) -> tuple[dict, list[str]]:
    """Pure core: {'all'} or {'train','validation'?,'test'?} frames → three splits + label names."""
    given = names or p.label_names
    # Name labels over all frames together so every split shares one id order.
    stacked = pd.concat(list(frames.values()), keys=list(frames), names=["part", "row"])
    named, label_list = label_names(stacked["label"], given)
    frames = {k: f.assign(label=named.loc[k].to_numpy()) for k, f in frames.items()}
    splits = assemble(frames, p)
    check_labels(splits)
    return splits, label_list


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


def read_source(p: IngestParams) -> tuple[dict[str, pd.DataFrame], list[str] | None]:
    """Shell: read whatever `ingest.source` names into raw frames (columns text, label)."""
    if p.source.startswith("demo:"):
        return {"all": read_demo(p.source.removeprefix("demo:"))}, p.label_names or DEMO_LABEL_NAMES
    return read_frames(p, lambda f: select_columns(read_table(Path(f), p.format, p.encoding), p, f),
                       lambda df, where, names: select_columns(df, p, where), p.label_column)


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


def main() -> None:
    params = load_params()
    p = params.ingest
    if params.task == TOKEN_TASK:  # NER: sentences of (token, tag) pairs instead of labelled texts
        from stages.sentences import ingest_sentences, read_sentences

        splits, labels, summary = ingest_sentences(read_sentences(p), p)
        unit = "sentences"
    else:
        frames, names = read_source(p)
        splits, labels = ingest(frames, p, names)
        summary = {s: {"rows": len(df), "labels": df["label"].value_counts().sort_index().to_dict()}
                   for s, df in splits.items()}
        unit = "rows"
    write_splits(splits, OUT, labels, {"summary.json": summary})
    log.info("%s → %s", p.source, ", ".join(f"{s} {v[unit]}" for s, v in summary.items()))


if __name__ == "__main__":
    from stages.cli import run

    run(main, "ingest")
