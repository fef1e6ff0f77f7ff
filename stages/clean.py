"""Clean raw text: NFKC, HTML tags/entities, whitespace; drop empty, conflicting, duplicate, leaked rows.

Every change and every drop is counted per split and per reason in `reports/clean.json`.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import pandas as pd

from stages.io import SPLITS, PipelineError, check_labels, read_labels, read_splits, write_json, write_splits
from stages.params import CleanParams, load_params

IN, OUT, REPORT = Path("data/raw"), Path("data/clean"), Path("reports/clean.json")
BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")  # a real tag, not "a < b > c"
ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);")
N_EXAMPLES = 3  # texts kept per drop reason in the report, to see what went
log = logging.getLogger(__name__)


def clean_texts(texts: pd.Series, p: CleanParams) -> tuple[pd.Series, dict[str, int]]:
    """Normalise texts; returns them and the number of texts each step changed."""
    changed: dict[str, int] = {}

    def step(name: str, new: pd.Series) -> pd.Series:
        changed[name] = int((new != texts).sum())
        return new

    if p.normalize_unicode:
        texts = step("unicode_nfkc", texts.str.normalize("NFKC"))
    if p.strip_html:
        texts = step("html_tags", texts.str.replace(BREAK, " ", regex=True).str.replace(TAG, " ", regex=True))
        has_entity = texts.str.contains(ENTITY, regex=True)
        texts = step("html_entities", texts.where(~has_entity, texts[has_entity].map(html.unescape)))
    texts = step("whitespace", texts.str.replace(r"\s+", " ", regex=True).str.strip())
    return texts, changed


def clean(splits: dict[str, pd.DataFrame], p: CleanParams) -> tuple[dict[str, pd.DataFrame], dict]:
    """Pure core: cleaned splits and the report of what was changed and dropped, per split."""
    report: dict = {"splits": {}, "examples": {}}
    out: dict[str, pd.DataFrame] = {}
    for name in SPLITS:
        texts, changed = clean_texts(splits[name]["text"].astype(str), p)
        out[name] = splits[name].assign(text=texts)
        report["splits"][name] = {"rows_in": len(texts), "changed": changed, "dropped": {}}

    def drop(name: str, reason: str, mask: pd.Series) -> None:
        df = out[name]
        report["splits"][name]["dropped"][reason] = int(mask.sum())
        if mask.any():
            report["examples"].setdefault(reason, []).extend(
                t[:120] for t in df.loc[mask, "text"].head(N_EXAMPLES - len(report["examples"].get(reason, []))))
        out[name] = df[~mask].reset_index(drop=True)

    for name in SPLITS:
        drop(name, "empty", out[name]["text"].str.len() < p.min_chars)
    if p.drop_conflicting:  # one text, two labels: no split can say which is right
        labels = pd.concat(out.values())[["text", "label"]].drop_duplicates()
        conflicting = set(labels.loc[labels["text"].duplicated(), "text"])
        for name in SPLITS:
            drop(name, "conflicting_labels", out[name]["text"].isin(conflicting))
    if p.drop_duplicates:
        for name in SPLITS:
            drop(name, "duplicate", out[name].duplicated(subset=["text", "label"]))
    if p.drop_leakage:  # the test split stays as it is; validation yields to both train and test
        train = set(out["train"]["text"])
        drop("test", "leakage", out["test"]["text"].isin(train))
        drop("validation", "leakage", out["validation"]["text"].isin(train | set(out["test"]["text"])))

    for name in SPLITS:
        r = report["splits"][name]
        r["rows_out"] = len(out[name])
        if r["rows_out"] == 0:
            raise PipelineError(f"{IN / name}.parquet: empty after cleaning ({r['rows_in']} rows in, "
                                f"dropped {r['dropped']}); check the data or clean.min_chars")
    check_labels(out, after=" after cleaning")
    totals = {k: sum(r[k] for r in report["splits"].values()) for k in ("rows_in", "rows_out")}
    reasons = dict.fromkeys(k for r in report["splits"].values() for k in r["dropped"])  # leakage: val/test only
    totals["dropped"] = {reason: sum(r["dropped"].get(reason, 0) for r in report["splits"].values()) for reason in reasons}
    report["total"] = totals
    return out, report


def main() -> None:
    p = load_params().clean
    splits, report = clean(read_splits(IN), p)
    write_splits(splits, OUT, read_labels(IN))
    write_json(REPORT, report)
    t = report["total"]
    log.info("%d rows in, %d out; dropped %s", t["rows_in"], t["rows_out"], t["dropped"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "clean")
