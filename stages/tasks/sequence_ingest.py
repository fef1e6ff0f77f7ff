"""Reading a sequence-classification source: the text and label columns of a file (or a demo set), labels that are
class names or integer ids (missing ones failed or dropped, by param), label names in one id order over every file,
three checked splits. Shared with the multi-label task's reader (`read_source`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.io import PipelineError, check_labels
from stages.params import IngestParams
from stages.readers import DEMO_LABEL_NAMES, read_demo, read_table
from stages.splits import (assemble, missing, missing_label_error, read_frames, require_columns, select_texts,
                           with_landed)
from stages.tasks.base import Frames


def select_columns(df: pd.DataFrame, p: IngestParams, where: str, names: list[str] | None = None) -> pd.DataFrame:
    """Keep the text and label columns, as `text`/`label`; missing columns are errors, and so are missing labels
    (ingest.missing_labels: fail; with drop they become None, for `prepare` to drop and count) and texts that are not
    strings (`select_texts`). (Label names, if the source has them, are applied by `ingest`.)"""
    require_columns(df, p, ("text_column", "label_column"), where)
    labels = df[p.label_column].reset_index(drop=True)
    gone = missing(labels)
    if gone.any() and p.missing_labels == "fail":
        r = int(gone.to_numpy().argmax())
        raise missing_label_error(where, r + 1, labels.iat[r], int(gone.sum()), p.label_column)
    labels = class_labels(labels, gone, p.label_column, where)
    return pd.DataFrame({"text": select_texts(df, p, where), "label": labels})


def _label_kind(v) -> str | None:
    """None for a class name or an integer id (7.0 included: an int column with a null in it reads as floats)."""
    if isinstance(v, str | int | np.integer | np.bool_):
        return None
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return None
    if isinstance(v, float | np.floating):
        return "a number with a fraction is a regression target, not a class"
    if isinstance(v, list | tuple | np.ndarray):
        return "a list of labels per row is task multilabel_classification"
    return "a label is a class name or an integer id"


def class_labels(labels: pd.Series, gone: pd.Series, column: str, where: str) -> pd.Series:
    """Labels that are class names or integer ids (integral floats become ints), as objects, the missing ones
    (`gone`) None; anything else (a fraction, a list, a struct) is an error naming file, row, column and dtype."""
    out = labels.astype(object).where(~gone.to_numpy(), None)
    if labels.dtype.kind in "iub" or isinstance(labels.dtype, pd.StringDtype):
        return out
    kind = out.map(_label_kind).where(~gone.to_numpy(), None)
    if kind.notna().any():
        r = int(kind.notna().to_numpy().argmax())
        v = out.iat[r]
        raise PipelineError(f"{where}: row {r + 1}, column '{column}': label {str(v)[:40]!r} is a {type(v).__name__} "
                            f"(column dtype {labels.dtype}); {kind.iat[r]}")
    # a list, not Series.map: map would turn ints beside a None back into floats
    return pd.Series([int(v) if isinstance(v, float | np.floating) else v for v in out], dtype=object)


def _where(idx) -> str:
    """'train part, row 7' for a (part, row) index of stacked frames; 'row 7' for a plain one."""
    part, row = idx if isinstance(idx, tuple) else (None, idx)
    return (f"{part} part, " if part else "") + f"row {int(row) + 1}, column 'label'"


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
        # names, and ids beside them (a demo's 0/1 next to a landed file's 'positive'): an id that is not a name
        ids = as_str.str.fullmatch(r"\d+") & ~as_str.isin(given) & (as_str.str.len() < 10)
        named = as_str.where(~ids, as_str[ids].astype(int).map(dict(enumerate(given))))
        unknown = sorted(set(as_str[named.isna() | ~named.isin(given)]))
        if unknown:
            raise PipelineError(f"labels {unknown[:5]} are not in ingest.label_names {given}")
        return named, list(given)
    uniques = sorted(set(as_str), key=int) if is_int else sorted(set(as_str))
    return as_str, uniques


def read_source(p: IngestParams, select=select_columns) -> tuple[Frames, list[str] | None]:
    """Shell: read whatever `ingest.source` names into raw frames (columns text, label), kept by `select`."""
    def read_file(f: str) -> pd.DataFrame:
        return select(read_table(Path(f), p.format, p.encoding, p.separator), p, f)

    if p.source.startswith("demo:"):
        demo = {"all": read_demo(p.source.removeprefix("demo:"))}
        return with_landed(demo, p, read_file), p.label_names or DEMO_LABEL_NAMES
    return read_frames(p, read_file, lambda df, where, names: select(df, p, where, names), p.label_column)


def ingest(frames: Frames, p: IngestParams, names: list[str] | None = None) -> tuple[dict, list[str]]:
    """Pure core: {'all'} or {'train','validation'?,'test'?} frames → three splits + label names."""
    given = names or p.label_names
    # Name labels over all frames together so every split shares one id order.
    stacked = pd.concat(list(frames.values()), keys=list(frames), names=["part", "row"])
    named, label_list = label_names(stacked["label"], given)
    frames = {k: f.assign(label=named.loc[k].to_numpy()) for k, f in frames.items()}
    splits = assemble(frames, p)
    check_labels(splits, source=p.source, column=p.label_column,
                 files={"validation": p.validation_file, "test": p.test_file})
    return splits, label_list
