"""The split every task shares: a seeded hash per row, the source forms (file, given splits, HF).

Each row is assigned to a split by a seeded hash of a key (the text, a sentence's tokens), not by row order: the same
text always lands in the same split, so the test split stays stable when rows are added or reordered.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from stages.io import SPLITS, PipelineError
from stages.params import IngestParams
from stages.readers import read_hf

# Label cells that hold no value (str() of NaN or None, JSON's null, an empty cell): never a class
MISSING = frozenset({"", "nan", "NaN", "null", "NULL", "None"})
# A CSV read with the wrong separator has one column, named like 'text;label': which param reads it
SEPARATORS = {",": "ingest.format: csv", "\t": "ingest.format: tsv", ";": "ingest.separator: ';'",
              "|": "ingest.separator: '|'"}


def _hash_order(texts: pd.Series, seed: int, salt: str) -> pd.Series:
    key = f"{salt}{seed}".rjust(16, "0")[-16:]  # siphash key: 16 characters
    return pd.util.hash_pandas_object(texts, index=False, hash_key=key)


def require_columns(df: pd.DataFrame, p: IngestParams, params: tuple[str, ...], where: str) -> None:
    """Each `ingest.<param>` names a column of `df`, or a one-line error lists the columns present."""
    for param in params:
        col = getattr(p, param)
        if col not in df.columns:
            present = ", ".join(map(str, df.columns)) or "none"
            raise PipelineError(f"{where}: no column '{col}' (ingest.{param}); columns present: {present}"
                                f"{_separator_hint(df.columns, p)}")


def _separator_hint(columns: pd.Index, p: IngestParams) -> str:
    seps = [s for s in SEPARATORS if len(columns) == 1 and s in str(columns[0])]
    if not seps:
        return ""
    shown = "tab" if seps[0] == "\t" else f"'{seps[0]}'"
    fix = f"ingest.separator: {shown}" if p.separator else SEPARATORS[seps[0]]
    return f"; the header looks {shown}-separated: set {fix}"


def missing(values: pd.Series) -> pd.Series:
    """Where a label cell holds no value: NaN, None, or a string in MISSING (stripped)."""
    return values.isna() | values.map(lambda v: isinstance(v, str) and v.strip() in MISSING)


def missing_label_error(where: str, row: int, value, count: int, column: str) -> PipelineError:
    """The one line for a missing label under ingest.missing_labels: fail (row 1-based; `value`: the cell)."""
    if isinstance(value, str):
        shown = f" '{value.strip()}'" if value.strip() else ""
    else:
        shown = f" {str(list(value))[:60]}" if isinstance(value, list | tuple | np.ndarray) else ""
    return PipelineError(f"{where}: row {row}, column '{column}': missing label{shown} ({count} rows without a label); "
                         "set ingest.missing_labels: drop to drop them (counted)")


def _not_text(v) -> str | None:
    """None for a str; 'number' for what ingest.non_string_text: convert turns into text; else 'other'."""
    if isinstance(v, str):
        return None
    return "number" if isinstance(v, numbers.Number | np.bool_) else "other"


def _to_text(v) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))  # an integer column with a null in it reads as floats: 7.0 was 7
    return str(v.item() if isinstance(v, np.generic) else v)


def select_texts(df: pd.DataFrame, p: IngestParams, where: str) -> pd.Series:
    """The text column as objects. A missing text becomes '' (clean counts and drops empty texts); a number is an
    error naming file, row and column (ingest.non_string_text: fail) or kept for `prepare` to convert and count; a
    list, a struct or bytes is always an error."""
    texts = df[p.text_column]
    out = texts.astype(object).where(texts.notna(), "").reset_index(drop=True)
    kind = out.map(_not_text)
    bad = (kind == "other") if (kind == "other").any() or p.non_string_text == "convert" else kind.notna()
    if bad.any():
        r = int(bad.to_numpy().argmax())
        v = out.iat[r]
        fix = ("set ingest.non_string_text: convert to read them as text (counted)" if kind.iat[r] == "number"
               else "a text column holds strings")
        raise PipelineError(f"{where}: row {r + 1}, column '{p.text_column}': {type(v).__name__} {str(v)[:40]!r} is "
                            f"not a text (column dtype {texts.dtype}; {int(bad.sum())} such rows); {fix}")
    return out


def source_of(part: str, p: IngestParams) -> str:
    """The file (or HF split) a part of the source came from, for messages."""
    if p.source.startswith("hf:"):
        return p.source if part == "all" else f"{p.source}[{part}]"
    return {"validation": p.validation_file, "test": p.test_file}.get(part) or p.source


def prepare(frames: dict[str, pd.DataFrame], p: IngestParams) -> tuple[dict[str, pd.DataFrame], dict]:
    """Pure core, before the split: rows whose label is missing are dropped (ingest.missing_labels: drop; `select`
    made them None) and numbers in the text column become text (ingest.non_string_text: convert); both are counted
    in the returned report. A part left without rows is an error. Frames keep their index: rows keep their numbers."""
    report = {"dropped": {"missing_label": 0}, "converted": {"non_string_text": 0}}
    out = {}
    # with `fail`, the task's select (select_texts, the label checks) has already stopped at the first such row
    for part, f in frames.items():
        where = source_of(part, p)
        gone = missing(f["label"])
        f = f[~gone.to_numpy()]
        texts = f["text"].astype(object).where(f["text"].notna(), "")
        numeric = texts.map(_not_text).notna()
        if not len(f):
            raise PipelineError(f"{where}: no rows left after dropping {int(gone.sum())} rows without a label "
                                f"(ingest.missing_labels: drop)" if gone.any() else f"{where}: no rows")
        report["dropped"]["missing_label"] += int(gone.sum())
        report["converted"]["non_string_text"] += int(numeric.sum())
        out[part] = f.assign(text=texts.where(~numeric, texts[numeric].map(_to_text)))
    return out, report


def _groups(df: pd.DataFrame, by: str | None) -> list:
    """Row indexes per stratum (per value of `by`, sorted), or one group of every row."""
    return list(df.groupby(by, sort=True).groups.values()) if by else [df.index]


def stratified_split(df: pd.DataFrame, p: IngestParams, with_validation: bool = True, key: str = "text") -> dict:
    """Each row's split is a function of its own `key` alone: its seeded hash, read as a number u in [0, 1), puts it
    in test when u < test_size, in validation when u < test_size + validation_size, else in train. So a row never
    changes split when rows are added, removed or reordered (a retrain on new data keeps every old test row in test).
    Each split's share is the asked one in expectation (per label too: the hash ignores labels), not exactly; a rank
    cut per label, which we used before, gave exact shares but moved old rows whenever new ones arrived."""
    u = _hash_order(df[key], p.split_seed, "split").to_numpy() / 2.0**64
    val = p.validation_size if with_validation else 0.0
    where = np.where(u < p.test_size, "test", np.where(u < p.test_size + val, "validation", "train"))
    return {s: df[where == s].reset_index(drop=True) for s in SPLITS}


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
        return stratified_split(subsample(frames["all"], p.max_rows, p.split_seed, key, by), p, True, key)
    train = subsample(frames["train"], p.max_rows, p.split_seed, key, by)
    if "validation" in frames:
        return {"train": train, "validation": frames["validation"], "test": frames["test"]}
    carved = stratified_split(train, p.model_copy(update={"test_size": p.validation_size}), False, key)
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
    else:
        files = {"train": p.source, "validation": p.validation_file, "test": p.test_file}
        if not p.test_file:
            files = {"all": p.source}
        frames, names = {k: read_file(f) for k, f in files.items() if f}, None
    return with_landed(frames, p, read_file), names


def landed_files(p: IngestParams) -> list[Path]:
    """The files `ingest.landed` names (folders: their files, in name order; hidden ones left out)."""
    paths = [p.landed] if isinstance(p.landed, str) else (p.landed or [])
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            out.extend(sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")))
        elif path.is_file():
            out.append(path)
    return out


def with_landed(frames: dict[str, pd.DataFrame], p: IngestParams,
                read_file: Callable[[str], pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """`frames` with the rows of the landed files (flows.retrain) added to 'all', or to 'train' when the source gives
    its splits (their validation then comes out of train). Each row's split is its own hash, so the new rows take
    their share of test and validation and no old row moves."""
    files = landed_files(p)
    if not files:
        return frames
    part = "all" if "all" in frames else "train"
    frames = dict(frames)
    if part == "train" and "validation" in frames:  # validation from train by hash, like the test split
        frames["train"] = pd.concat([frames.pop("validation"), frames["train"]], ignore_index=True)
    frames[part] = pd.concat([frames[part], *(read_file(str(f)) for f in files)], ignore_index=True)
    return frames
