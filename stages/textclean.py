"""Cleaning of texts, for every task whose rows are (text, label): NFKC, HTML tags/entities, whitespace; drop empty,
conflicting, duplicate and leaked rows.

Every change and every drop is counted per split and per reason. Drops are decided on a small key per row (a digest of
the cleaned text, its label key and length), so `clean_files` streams the texts through two passes in chunks and
holds only the keys of all splits. A task whose label is not a plain value (a list of labels) passes `label_key`,
which makes one comparable value of it, and `check`, its own label checks on the kept keys.
"""

from __future__ import annotations

import hashlib
import html
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from stages.drops import check_leakage, drop_repeats, dropper, examples, finish, leakage, totals
from stages.io import SPLITS, atomic_dir, check_labels, iter_split, read_labels, split_paths, split_writer, write_json
from stages.params import CleanParams

BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")  # a real tag, not "a < b > c"
ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);")
LabelKey = Callable[[pd.Series], pd.Series]  # labels → one hashable, comparable value per row


def _same(labels: pd.Series) -> pd.Series:
    return labels


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


def text_keys(df: pd.DataFrame, label_key: LabelKey = _same) -> pd.DataFrame:
    """All the drop rules need of a (cleaned) text row: a 128-bit digest of the text (16 bytes for ~1,300 chars of an
    IMDB review; two texts collide with odds ~2^-128), the label and the length in characters."""
    texts = df["text"]
    digests = [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts]
    return pd.DataFrame({"key": digests, "label": label_key(df["label"]).array, "chars": texts.str.len().to_numpy()})


def plan(keys: dict[str, pd.DataFrame], report: dict, p: CleanParams, in_dir: Path,
         check: Callable[[dict], None] = check_labels) -> tuple[dict[str, np.ndarray], dict]:
    """The drops of the text task, decided on every split's `text_keys`: the rows each split keeps (positions,
    ascending) and the (split, row) of each reason's examples. Counts go into `report`; errors are raised here."""
    out, picks = dict(keys), {}
    drop = dropper(out, report, picks)
    for name in SPLITS:
        drop(name, "empty", out[name]["chars"] < p.min_chars)
    drop_repeats(out, drop, p, "key", "label", "conflicting_labels")
    if p.drop_leakage:
        before = {name: len(out[name]) for name in SPLITS}
        leakage(out, drop, "key")
        check_leakage(before, report, in_dir, "rows")
    finish(out, report, in_dir, "rows", "check the data or clean.min_chars")
    check({name: df.reset_index(drop=True) for name, df in out.items()}, after=" after cleaning",
          source=str(in_dir / "train.parquet"))
    report["total"] = totals(report)
    return {name: df.index.to_numpy() for name, df in out.items()}, picks


def clean(splits: dict[str, pd.DataFrame], p: CleanParams, label_key: LabelKey = _same,
          check: Callable = check_labels) -> tuple[dict[str, pd.DataFrame], dict]:
    """Pure core: cleaned splits and the report of what was changed and dropped, per split."""
    report: dict = {"splits": {}, "examples": {}}
    cleaned, keys = {}, {}
    for name in SPLITS:
        texts, changed = clean_texts(splits[name]["text"].astype(str), p)
        cleaned[name] = splits[name].assign(text=texts)
        keys[name] = text_keys(cleaned[name], label_key)
        report["splits"][name] = {"rows_in": len(texts), "changed": changed, "dropped": {}}
    kept, picks = plan(keys, report, p, Path("data/raw"), check)
    report["examples"] = examples(picks, lambda name, i: cleaned[name]["text"].iat[i])
    return {name: cleaned[name].iloc[kept[name]].reset_index(drop=True) for name in SPLITS}, report


def clean_files(in_dir: Path, out_dir: Path, p: CleanParams, label_key: LabelKey = _same,
                check: Callable = check_labels) -> dict:
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
                    parts.append(text_keys(chunk, label_key))
                    changed.update(n)
            keys[name] = pd.concat(parts, ignore_index=True)
            report["splits"][name] = {"rows_in": len(keys[name]), "changed": dict(changed), "dropped": {}}
        kept, picks = plan(keys, report, p, in_dir, check)
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
