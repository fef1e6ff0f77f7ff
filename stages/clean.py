"""Clean raw text: NFKC, HTML tags/entities, whitespace; drop empty, conflicting, duplicate, leaked rows.

Every change and every drop is counted per split and per reason in `reports/clean.json`. Drops are decided on a
small key per row (a digest of the cleaned text, its label and length), so the stage streams the texts through two
passes in chunks and holds only the keys of all splits. The token task (NER sentences) gets per-token NFKC and the
same drops and report, keyed on a sentence's tokens, in memory.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import shutil
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from stages.drops import drop_repeats, dropper, examples, finish, leakage, totals
from stages.io import (SPLITS, atomic_dir, check_labels, iter_split, read_labels, read_splits, split_paths,
                       split_writer, write_json, write_splits)
from stages.params import TOKEN_TASK, CleanParams, load_params
from stages.sentences import check_types, sentence_labels

IN, OUT, REPORT = Path("data/raw"), Path("data/clean"), Path("reports/clean.json")
BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")  # a real tag, not "a < b > c"
ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);")
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


def text_keys(df: pd.DataFrame) -> pd.DataFrame:
    """All the drop rules need of a (cleaned) text row: a 128-bit digest of the text (16 bytes for ~1,300 chars of an
    IMDB review; two texts collide with odds ~2^-128), the label and the length in characters."""
    texts = df["text"]
    digests = [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts]
    return pd.DataFrame({"key": digests, "label": df["label"].array, "chars": texts.str.len().to_numpy()})


def plan(keys: dict[str, pd.DataFrame], report: dict, p: CleanParams,
         in_dir: Path = IN) -> tuple[dict[str, np.ndarray], dict]:
    """The drops of the text task, decided on every split's `text_keys`: the rows each split keeps (positions,
    ascending) and the (split, row) of each reason's examples. Counts go into `report`; errors are raised here."""
    out, picks = dict(keys), {}
    drop = dropper(out, report, picks)
    for name in SPLITS:
        drop(name, "empty", out[name]["chars"] < p.min_chars)
    drop_repeats(out, drop, p, "key", "label", "conflicting_labels")
    if p.drop_leakage:
        leakage(out, drop, "key")
    finish(out, report, in_dir, "rows", "check the data or clean.min_chars")
    check_labels({name: df.reset_index(drop=True) for name, df in out.items()}, after=" after cleaning")
    report["total"] = totals(report)
    return {name: df.index.to_numpy() for name, df in out.items()}, picks


def clean(splits: dict[str, pd.DataFrame], p: CleanParams) -> tuple[dict[str, pd.DataFrame], dict]:
    """Pure core: cleaned splits and the report of what was changed and dropped, per split."""
    report: dict = {"splits": {}, "examples": {}}
    cleaned, keys = {}, {}
    for name in SPLITS:
        texts, changed = clean_texts(splits[name]["text"].astype(str), p)
        cleaned[name] = splits[name].assign(text=texts)
        keys[name] = text_keys(cleaned[name])
        report["splits"][name] = {"rows_in": len(texts), "changed": changed, "dropped": {}}
    kept, picks = plan(keys, report, p)
    report["examples"] = examples(picks, lambda name, i: cleaned[name]["text"].iat[i])
    return {name: cleaned[name].iloc[kept[name]].reset_index(drop=True) for name in SPLITS}, report


def clean_files(in_dir: Path, out_dir: Path, p: CleanParams) -> dict:
    """`clean` from split files to split files in bounded memory; returns the report. Pass 1 cleans chunk by chunk
    into scratch files and keeps only the `text_keys`; `plan` decides every drop; pass 2 copies the kept rows."""
    paths, labels = split_paths(in_dir), read_labels(in_dir)
    report: dict = {"splits": {}, "examples": {}}
    keys: dict[str, pd.DataFrame] = {}
    with atomic_dir(out_dir) as tmp:
        scratch = tmp / "scratch"  # inside the temp dir: gone with it if anything fails
        scratch.mkdir()
        for name in SPLITS:
            changed, parts = Counter(), []
            with split_writer(scratch / f"{name}.parquet") as write:
                for chunk in iter_split(paths[name]):
                    texts, n = clean_texts(chunk["text"].astype(str), p)
                    write(chunk := chunk.assign(text=texts))
                    parts.append(text_keys(chunk))
                    changed.update(n)
            keys[name] = pd.concat(parts, ignore_index=True)
            report["splits"][name] = {"rows_in": len(keys[name]), "changed": dict(changed), "dropped": {}}
        kept, picks = plan(keys, report, p, in_dir)
        del keys  # pass 2 needs only `kept`
        wanted = [pick for rows in picks.values() for pick in rows]
        shown = {}
        for name in SPLITS:
            keep, start = np.zeros(report["splits"][name]["rows_in"], bool), 0
            keep[kept[name]] = True
            with split_writer(tmp / f"{name}.parquet") as write:
                for chunk in iter_split(scratch / f"{name}.parquet"):
                    write(chunk[keep[start : start + len(chunk)]])
                    shown |= {(s, i): chunk["text"].iat[i - start] for s, i in wanted
                              if s == name and start <= i < start + len(chunk)}
                    start += len(chunk)
        shutil.rmtree(scratch)
        write_json(tmp / "labels.json", {"names": labels})
    report["examples"] = examples(picks, lambda name, i: shown[name, i])
    return report


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
    cleaned, picks = dict(out), {}
    drop = dropper(out, report, picks)
    for name in SPLITS:
        drop(name, "empty", out[name]["tokens"].map(len) == 0)
    drop_repeats(out, drop, p, "_key", "_tags", "conflicting_tags")
    leakage(out, drop, "_key", remove=p.drop_leakage, found=report["splits"])
    finish(out, report, IN, "sentences", "check the data")
    report["examples"] = examples(picks, lambda name, i: " ".join(cleaned[name]["tokens"].iat[i]))
    out = {name: df[["tokens", "tags"]].reset_index(drop=True) for name, df in out.items()}
    check_types(out, after=" after cleaning")
    report["total"] = totals(report) | {"leakage": sum(r.get("leakage", 0) for r in report["splits"].values())}
    return out, report


def main() -> None:
    params = load_params()
    if params.task == TOKEN_TASK:  # NER sentences; labels from the cleaned train split's entity types
        splits, report = clean_sentences(read_splits(IN), params.clean)
        write_splits(splits, OUT, sentence_labels(splits))
    else:
        report = clean_files(IN, OUT, params.clean)
    write_json(REPORT, report)
    t = report["total"]
    log.info("%d rows in, %d out; dropped %s", t["rows_in"], t["rows_out"], t["dropped"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "clean")
