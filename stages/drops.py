"""The drop rules of `clean`, shared by both tasks: decided on a key column per row, counted per split and reason.

The frames keep their index through the drops, so a dropped or kept row is known by its position in the input:
the text task decides on small keys and copies the kept rows from its files afterwards (stages.clean).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from stages.io import SPLITS, PipelineError
from stages.params import CleanParams

N_EXAMPLES = 3  # texts kept per drop reason in the report, to see what went
# Leakage removing this share of a test/validation split is an error: that split was not held out. Below it, the
# leaked rows are dropped and counted (a given test file often shares a few texts with train).
MAX_LEAKED_SHARE = 0.9


def dropper(out: dict, report: dict, picks: dict) -> Callable:
    """drop(split, reason, mask): remove the rows and count them; the first few of each reason go to `picks` as
    (split, row) to be shown as examples. Frames keep their index, so a row is known by its position in the input."""
    def drop(name: str, reason: str, mask: pd.Series) -> None:
        df = out[name]
        report["splits"][name]["dropped"][reason] = int(mask.sum())
        if mask.any():
            rows = picks.setdefault(reason, [])
            rows.extend((name, int(i)) for i in df.index[mask.to_numpy()][: N_EXAMPLES - len(rows)])
        out[name] = df[~mask]

    return drop


def examples(picks: dict, text: Callable[[str, int], str]) -> dict:
    return {reason: [text(name, i)[:120] for name, i in rows] for reason, rows in picks.items()}


def member(keys: pd.Series, values: set) -> pd.Series:
    """keys.isin(values), key by key: isin goes through numpy's bytes dtype, which strips trailing NUL bytes, so a
    16-byte digest ending in 0x00 (1 text in 256) never matched itself and its leak or conflict went unseen."""
    return pd.Series([k in values for k in keys], index=keys.index, dtype=bool)


def drop_repeats(out: dict, drop: Callable, p: CleanParams, key: str, label: str, conflict: str) -> None:
    if p.drop_conflicting:  # one text, two labels: no split can say which is right
        labels = pd.concat(out.values())[[key, label]].drop_duplicates()
        conflicting = set(labels.loc[labels[key].duplicated(), key])
        for name in SPLITS:
            drop(name, conflict, member(out[name][key], conflicting))
    if p.drop_duplicates:
        for name in SPLITS:
            drop(name, "duplicate", out[name].duplicated(subset=[key, label]))


def leakage(out: dict, drop: Callable, key: str, remove: bool = True, found: dict | None = None) -> None:
    """Test rows also in train; validation rows also in train or test. The test split stays as it is;
    validation yields to both. `found` (report splits) gets the counts whether or not they are removed."""
    train = set(out["train"][key])
    for name in ("test", "validation"):
        mask = member(out[name][key], train if name == "test" else train | set(out["test"][key]))
        if found is not None:
            found[name]["leakage"] = int(mask.sum())
        if remove:
            drop(name, "leakage", mask)


def check_leakage(before: dict[str, int], report: dict, in_dir: Path, unit: str) -> None:
    """A test (or validation) split nearly all of whose rows leakage removed was not held out (ingest.test_file names
    a sample of the train data?): its score would be meaningless, and what is left too small to say much. An
    error, not a drop. `before`: rows per split before leakage."""
    for name, others in (("test", "train.parquet"), ("validation", "train.parquet or test.parquet")):
        leaked = report["splits"][name]["dropped"].get("leakage", 0)
        if before[name] and leaked >= MAX_LEAKED_SHARE * before[name]:
            share = "all" if leaked == before[name] else f"{leaked} of"
            raise PipelineError(f"{in_dir / name}.parquet: {share} {before[name]} {name} {unit} also occur in "
                                f"{in_dir}/{others} (same text after cleaning): the {name} score would be meaningless; "
                                f"hold the {name} data out of train (check ingest.{name}_file)")


def finish(out: dict, report: dict, in_dir: Path, unit: str, hint: str) -> None:
    """rows_out per split; a split left empty is an error."""
    for name in SPLITS:
        r = report["splits"][name]
        r["rows_out"] = len(out[name])
        if r["rows_out"] == 0:
            raise PipelineError(f"{in_dir / name}.parquet: empty after cleaning ({r['rows_in']} {unit} in, "
                                f"dropped {r['dropped']}); {hint}")


def totals(report: dict) -> dict:
    out = {k: sum(r[k] for r in report["splits"].values()) for k in ("rows_in", "rows_out")}
    reasons = dict.fromkeys(k for r in report["splits"].values() for k in r["dropped"])  # leakage: val/test only
    out["dropped"] = {reason: sum(r["dropped"].get(reason, 0) for r in report["splits"].values()) for reason in reasons}
    return out
