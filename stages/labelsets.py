"""Label sets, for multi-label rows: reading a cell (a list, a joined string, ids or names, nothing) into sorted label
names, one comparable key per set, the split checks, and the multi-hot encoding the model trains on. Every problem is
one line naming file, row and column."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stages.io import PipelineError
from stages.params import IngestParams
from stages.splits import MISSING, missing_label_error, require_columns, select_texts

SEP = "\x1f"  # joins a row's sorted labels into one comparable key


def label_key(labels: pd.Series) -> pd.Series:
    """A row's label set as one string (sorted, joined by SEP): what clean and the fingerprint compare."""
    return labels.map(lambda v: SEP.join(sorted(map(str, v))))


def _absent(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def parse_labels(value, sep: str | None, names: list[str] | None, where: str) -> list[str] | None:
    """One cell → its label names (sorted, no repeats). Lists/arrays, a string joined by `sep`, or NaN/'' (none);
    integer ids are named by `names`. None: a missing value (the string nan/null/None..., or a null item in a list),
    not "none of these". Anything else is a one-line error at `where` (file, row, column)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    elif _absent(value):
        items = []
    elif isinstance(value, str):
        if value.strip() in MISSING - {""}:
            return None
        items = value.split(sep) if sep else [value]
    else:
        items = [value]
    out = set()
    for item in items:
        if _absent(item) or isinstance(item, str) and item.strip() in MISSING - {""}:
            return None
        if isinstance(item, float | np.floating) and float(item).is_integer():
            item = int(item)  # an integer column with a null in it reads as floats
        elif not isinstance(item, str | int | np.integer):
            raise PipelineError(f"{where}: label {str(item)[:40]!r} is a {type(item).__name__}; a cell holds a list of "
                                f"label names or integer ids, or names joined by ingest.label_separator")
        text = str(item).strip()
        if not text:
            continue
        is_int = isinstance(item, (int, np.integer)) or text.lstrip("-").isdigit()
        if names and is_int and text not in names:
            i = int(text)
            if not 0 <= i < len(names):
                raise PipelineError(f"{where}: label id {i} outside 0..{len(names) - 1} "
                                    f"(ingest.label_names has {len(names)} names)")
            text = names[i]
        elif names and text not in names:
            hint = "" if sep else "; several labels in one string need ingest.label_separator"
            raise PipelineError(f"{where}: label '{text}' is not in ingest.label_names{hint}")
        out.add(text)
    return sorted(out)


def select_label_lists(df: pd.DataFrame, p: IngestParams, where: str, names: list[str] | None = None) -> pd.DataFrame:
    """Keep text and label columns as `text` (str) and `label` (a list of label names per row; None where the label
    is missing, for `prepare` to drop and count with ingest.missing_labels: drop)."""
    require_columns(df, p, ("text_column", "label_column"), where)
    names = names or p.label_names
    cells = df[p.label_column].tolist()
    labels = [parse_labels(v, p.label_separator, names, f"{where}: row {r}, column '{p.label_column}'")
              for r, v in enumerate(cells, 1)]
    gone = [r for r, v in enumerate(labels, 1) if v is None]
    if gone and p.missing_labels == "fail":
        raise missing_label_error(where, gone[0], cells[gone[0] - 1], len(gone), p.label_column)
    if not p.allow_no_label:
        empty = [r for r, v in enumerate(labels, 1) if v == []]
        if empty:
            raise PipelineError(f"{where}: row {empty[0]}, column '{p.label_column}': no label ({len(empty)} rows "
                                f"without one); set ingest.allow_no_label: true if 'none of these' is an answer")
    return pd.DataFrame({"text": select_texts(df, p, where).to_numpy(), "label": pd.Series(labels, dtype=object)})


def check_label_sets(splits: dict, after: str = "", source: str = "") -> None:
    """Train holds at least 2 distinct labels, and every validation/test label occurs in train. Labels are lists,
    or the keys `label_key` makes of them. `source`: the train split's file, named in the message."""
    def sets(df):
        return [set(v.split(SEP)) - {""} if isinstance(v, str) else set(v) for v in df["label"]]

    seen = set().union(*sets(splits["train"]))
    if len(seen) < 2:
        raise PipelineError(f"{source + ': ' if source else ''}train split has {len(seen)} distinct label"
                            f"{'' if len(seen) == 1 else 's'}{after}; need at least 2")
    for split in ("validation", "test"):
        for r, labels in enumerate(sets(splits[split]), 1):
            if labels - seen:
                raise PipelineError(f"{split} split, row {r}, column 'label': label '{sorted(labels - seen)[0]}' "
                                    f"never occurs in train{after}")


def multi_hot(labels: pd.Series, label2id: dict[str, int]) -> list[list[float]]:
    out = np.zeros((len(labels), len(label2id)), np.float32)
    for r, row in enumerate(labels):
        out[r, [label2id[x] for x in row]] = 1.0
    return out.tolist()
