"""Clean raw text: NFKC, HTML tags/entities, whitespace; drop empty, conflicting, duplicate, leaked rows.

Every change and every drop is counted per split and per reason in `reports/clean.json`. The token task
(NER sentences) gets per-token NFKC and the same drops and report, keyed on a sentence's tokens.
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from stages.io import SPLITS, PipelineError, check_labels, read_labels, read_splits, write_json, write_splits
from stages.params import TOKEN_TASK, CleanParams, load_params
from stages.sentences import check_types, sentence_labels

IN, OUT, REPORT = Path("data/raw"), Path("data/clean"), Path("reports/clean.json")
BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")  # a real tag, not "a < b > c"
ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);")
N_EXAMPLES = 3  # texts kept per drop reason in the report, to see what went
SEP = "\x1f"  # joins a sentence's tokens (or tags) into one comparable key; never inside a real token
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
    drop = _dropper(out, report, lambda df: df["text"])
    for name in SPLITS:
        drop(name, "empty", out[name]["text"].str.len() < p.min_chars)
    _drop_repeats(out, drop, p, "text", "label", "conflicting_labels")
    if p.drop_leakage:
        _leakage(out, drop, "text")
    _finish(out, report, "rows", "check the data or clean.min_chars")
    check_labels(out, after=" after cleaning")
    report["total"] = _totals(report)
    return out, report


def clean_tokens(tokens: list[str]) -> list[str]:
    """NFKC per token, whitespace inside a token removed (NFKC makes a space of NBSP, ideographic space,
    ...): the token count never changes; a token that would become empty keeps its original form."""
    return [re.sub(r"\s+", "", unicodedata.normalize("NFKC", t)) or t for t in tokens]


def clean_sentences(splits: dict[str, pd.DataFrame], p: CleanParams) -> tuple[dict[str, pd.DataFrame], dict]:
    """Pure core for the token task: per-token NFKC, then the drops of `clean` keyed on a sentence's tokens.
    strip_html and min_chars are for texts: a token that looks like markup is data the tags label, and a
    sentence's length is its token count (empty sentences are dropped). Leakage is always counted (`leakage`
    per split) and dropped only with drop_leakage."""
    report: dict = {"splits": {}, "examples": {}}
    out: dict[str, pd.DataFrame] = {}
    for name in SPLITS:
        tokens = [list(t) for t in splits[name]["tokens"]]  # parquet gives numpy arrays
        tags = [list(t) for t in splits[name]["tags"]]
        changed = {}
        if p.normalize_unicode:
            new = [clean_tokens(t) for t in tokens]
            changed = {"unicode_nfkc": sum(a != b for a, b in zip(new, tokens)),
                       "unicode_nfkc_tokens": sum(x != y for a, b in zip(new, tokens) for x, y in zip(a, b))}
            tokens = new
        out[name] = pd.DataFrame({"tokens": pd.Series(tokens, dtype=object), "tags": pd.Series(tags, dtype=object),
                                  "_key": [SEP.join(t) for t in tokens], "_tags": [SEP.join(t) for t in tags]})
        report["splits"][name] = {"rows_in": len(tokens), "changed": changed, "dropped": {}}
    drop = _dropper(out, report, lambda df: df["tokens"].map(" ".join))
    for name in SPLITS:
        drop(name, "empty", out[name]["tokens"].map(len) == 0)
    _drop_repeats(out, drop, p, "_key", "_tags", "conflicting_tags")
    _leakage(out, drop, "_key", remove=p.drop_leakage, found=report["splits"])
    _finish(out, report, "sentences", "check the data")
    out = {name: df[["tokens", "tags"]] for name, df in out.items()}
    check_types(out, after=" after cleaning")
    report["total"] = _totals(report) | {"leakage": sum(r.get("leakage", 0) for r in report["splits"].values())}
    return out, report


def _dropper(out: dict, report: dict, shown: Callable[[pd.DataFrame], pd.Series]) -> Callable:
    """drop(split, reason, mask): remove the rows, count them, keep a few (as `shown` renders them) as examples."""
    def drop(name: str, reason: str, mask: pd.Series) -> None:
        df = out[name]
        report["splits"][name]["dropped"][reason] = int(mask.sum())
        if mask.any():
            report["examples"].setdefault(reason, []).extend(
                t[:120] for t in shown(df.loc[mask]).head(N_EXAMPLES - len(report["examples"].get(reason, []))))
        out[name] = df[~mask].reset_index(drop=True)

    return drop


def _drop_repeats(out: dict, drop: Callable, p: CleanParams, key: str, label: str, conflict: str) -> None:
    if p.drop_conflicting:  # one text, two labels: no split can say which is right
        labels = pd.concat(out.values())[[key, label]].drop_duplicates()
        conflicting = set(labels.loc[labels[key].duplicated(), key])
        for name in SPLITS:
            drop(name, conflict, out[name][key].isin(conflicting))
    if p.drop_duplicates:
        for name in SPLITS:
            drop(name, "duplicate", out[name].duplicated(subset=[key, label]))


def _leakage(out: dict, drop: Callable, key: str, remove: bool = True, found: dict | None = None) -> None:
    """Test rows also in train; validation rows also in train or test. The test split stays as it is;
    validation yields to both. `found` (report splits) gets the counts whether or not they are removed."""
    train = set(out["train"][key])
    for name in ("test", "validation"):
        mask = out[name][key].isin(train if name == "test" else train | set(out["test"][key]))
        if found is not None:
            found[name]["leakage"] = int(mask.sum())
        if remove:
            drop(name, "leakage", mask)


def _finish(out: dict, report: dict, unit: str, hint: str) -> None:
    for name in SPLITS:
        r = report["splits"][name]
        r["rows_out"] = len(out[name])
        if r["rows_out"] == 0:
            raise PipelineError(f"{IN / name}.parquet: empty after cleaning ({r['rows_in']} {unit} in, "
                                f"dropped {r['dropped']}); {hint}")


def _totals(report: dict) -> dict:
    totals = {k: sum(r[k] for r in report["splits"].values()) for k in ("rows_in", "rows_out")}
    reasons = dict.fromkeys(k for r in report["splits"].values() for k in r["dropped"])  # leakage: val/test only
    totals["dropped"] = {reason: sum(r["dropped"].get(reason, 0) for r in report["splits"].values())
                         for reason in reasons}
    return totals


def main() -> None:
    params = load_params()
    if params.task == TOKEN_TASK:  # NER sentences; labels from the cleaned train split's entity types
        splits, report = clean_sentences(read_splits(IN), params.clean)
        labels = sentence_labels(splits)
    else:
        splits, report = clean(read_splits(IN), params.clean)
        labels = read_labels(IN)
    write_splits(splits, OUT, labels)
    write_json(REPORT, report)
    t = report["total"]
    log.info("%d rows in, %d out; dropped %s", t["rows_in"], t["rows_out"], t["dropped"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "clean")
