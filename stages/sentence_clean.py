"""Clean for the token task (NER sentences): per-token NFKC that never changes the token count, then clean's drop
rules keyed on a sentence's tokens, counted per split and reason as for texts."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pandas as pd

from stages.drops import check_leakage, drop_repeats, dropper, examples, finish, leakage, totals
from stages.io import SPLITS
from stages.params import CleanParams
from stages.sentences import check_types

SEP = "\x1f"  # joins a sentence's tokens (or tags) into one comparable key; never inside a real token


def clean_tokens(tokens: list[str]) -> list[str]:
    """NFKC per token, whitespace inside a token removed (NFKC makes a space of NBSP, ideographic space,
    ...): the token count never changes; a token that would become empty keeps its original form."""
    return [re.sub(r"\s+", "", unicodedata.normalize("NFKC", t)) or t for t in tokens]


def clean_sentences(splits: dict[str, pd.DataFrame], p: CleanParams,
                    in_dir: Path = Path("data/raw")) -> tuple[dict[str, pd.DataFrame], dict]:
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
    cleaned, picks = dict(out), {}
    drop = dropper(out, report, picks)
    for name in SPLITS:
        drop(name, "empty", out[name]["tokens"].map(len) == 0)
    drop_repeats(out, drop, p, "_key", "_tags", "conflicting_tags")
    before = {name: len(out[name]) for name in SPLITS}
    leakage(out, drop, "_key", remove=p.drop_leakage, found=report["splits"])
    check_leakage(before, report, in_dir, "sentences")  # only what was dropped counts: off, nothing is
    finish(out, report, in_dir, "sentences", "check the data")
    report["examples"] = examples(picks, lambda name, i: " ".join(cleaned[name]["tokens"].iat[i]))
    out = {name: df[["tokens", "tags"]].reset_index(drop=True) for name, df in out.items()}
    check_types(out, after=" after cleaning")
    report["total"] = totals(report) | {"leakage": sum(r.get("leakage", 0) for r in report["splits"].values())}
    return out, report
