"""Span-preserving augmentation for NER (after Dai & Adel, 2020): the tags stay valid IOB2 by construction.

- synonym: `O` words get a WordNet synonym (EDA's candidates: stop words excluded; case kept); a multi-word
  synonym becomes several `O` tokens. Entity words are never touched.
- mention: an entity mention is replaced by another mention of the same type seen in train, retagged
  `B-X I-X…` for its new length.
- shuffle: the tokens of one segment (a run of `O`, or one mention) are shuffled; the tags stay in place.

Each operation touches about `rate` of its units (O words, mentions, segments of 2+ tokens), at least one.
On a Chinese (mostly CJK) sentence synonym raises UnsupportedText (English WordNet): `augment.unsupported_text`
decides; mention and shuffle work on tokens whatever their language.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pandas as pd

from stages.eda import WORD, Synonyms, UnsupportedText, _candidates, _synonym_of, with_copies
from stages.iob import OUTSIDE, spans
from stages.params import AugmentParams
from stages.wordsplit import cjk_share, is_cjk_text

Sentence = tuple[list[str], list[str]]  # (tokens, tags)
Pool = dict[str, list[tuple[str, ...]]]  # entity type → distinct mentions (token tuples), in order of first use


def mention_pool(sentences: list[Sentence]) -> Pool:
    pool: dict[str, dict[tuple[str, ...], None]] = {}  # a dict keeps first-seen order: same pool every run
    for tokens, tags in sentences:
        for kind, a, b in spans(tags):
            pool.setdefault(kind, {})[tuple(tokens[a:b])] = None
    return {kind: list(mentions) for kind, mentions in pool.items()}


def _n(rate: float, units: int) -> int:
    return max(1, int(rate * units))  # EDA: n = alpha * units, at least one change


def _keep_case(source: str, word: str) -> str:
    """WordNet lemmas are lower-case; capitalisation is a strong NER cue, so copy it from the replaced word."""
    if len(source) > 1 and source.isupper():
        return word.upper()
    return word[:1].upper() + word[1:] if source[:1].isupper() else word


def replace_synonyms(tokens: list[str], tags: list[str], rate: float, synonyms: Synonyms,
                     rng: random.Random) -> Sentence:
    outside = sum(tag == OUTSIDE for tag in tags)
    cands = [i for i in _candidates(tokens, synonyms) if tags[i] == OUTSIDE]
    tokens, tags = list(tokens), list(tags)
    for i in sorted(rng.sample(cands, min(_n(rate, outside), len(cands))), reverse=True):  # right to left:
        pre, synonym, post = _synonym_of(tokens[i], synonyms, rng)  # a longer synonym keeps earlier indices
        words = (pre + _keep_case(WORD.match(tokens[i]).group(2), synonym) + post).split()
        tokens[i:i + 1], tags[i:i + 1] = words, [OUTSIDE] * len(words)
    return tokens, tags


def replace_mentions(tokens: list[str], tags: list[str], rate: float, pool: Pool, rng: random.Random) -> Sentence:
    found = spans(tags)
    cands = [(kind, a, b) for kind, a, b in found
             if any(m != tuple(tokens[a:b]) for m in pool.get(kind, ()))]  # a type seen once has no substitute
    tokens, tags = list(tokens), list(tags)
    for kind, a, b in sorted(rng.sample(cands, min(_n(rate, len(found)), len(cands))), key=lambda s: -s[1]):
        old = tuple(tokens[a:b])
        while (new := rng.choice(pool[kind])) == old:  # mentions are distinct: at most 1 in 2 draws repeats
            pass
        tokens[a:b], tags[a:b] = new, [f"B-{kind}"] + [f"I-{kind}"] * (len(new) - 1)
    return tokens, tags


def segments(tags: list[str]) -> list[tuple[int, int]]:
    """(start, end exclusive) of each run of `O` and each mention; a new one starts at B- or where O-ness flips."""
    starts = [i for i, tag in enumerate(tags)
              if i == 0 or tag.startswith("B-") or (tag == OUTSIDE) != (tags[i - 1] == OUTSIDE)]
    return list(zip(starts, [*starts[1:], len(tags)]))


def shuffle_segments(tokens: list[str], tags: list[str], rate: float, rng: random.Random) -> Sentence:
    segs = [(a, b) for a, b in segments(tags) if b - a > 1]
    tokens = list(tokens)
    for a, b in rng.sample(segs, min(_n(rate, len(segs)), len(segs))):
        seg = tokens[a:b]
        rng.shuffle(seg)
        if seg == tokens[a:b]:  # the shuffle drew the same order: rotate, which changes any non-constant run
            seg = seg[1:] + seg[:1]
        tokens[a:b] = seg
    return tokens, list(tags)


def augment_sentence(tokens: list[str], tags: list[str], op: str, rate: float, synonyms: Synonyms, pool: Pool,
                     rng: random.Random) -> Sentence:
    if op == "synonym" and is_cjk_text(text := "".join(tokens)):  # the same rule as a text's (stages.eda)
        raise UnsupportedText(op, cjk_share(text))
    ops: dict[str, Callable[[], Sentence]] = {
        "synonym": lambda: replace_synonyms(tokens, tags, rate, synonyms, rng),
        "mention": lambda: replace_mentions(tokens, tags, rate, pool, rng),
        "shuffle": lambda: shuffle_segments(tokens, tags, rate, rng),
    }
    return ops[op]()


TOKEN_OPERATIONS = ("synonym", "mention", "shuffle")


def augment_sentences(train: pd.DataFrame, p: AugmentParams, synonyms: Synonyms) -> tuple[pd.DataFrame, dict]:
    """Pure core: train sentences plus `copies` span-preserving copies each (an operation picked per copy)."""
    wrong = [op for op in p.operations if op not in TOKEN_OPERATIONS]
    if p.enabled and wrong:
        raise ValueError(f"augment.operations {wrong} do not fit token classification (choose from "
                         f"{', '.join(TOKEN_OPERATIONS)})")
    train = train.assign(tokens=train["tokens"].map(list), tags=train["tags"].map(list))
    # from train only: validation/test mentions never leak into training
    pool = mention_pool(list(zip(train["tokens"], train["tags"]))) if p.enabled else {}

    def change(row, op, rng):
        return augment_sentence(row[0], row[1], op, p.rate, synonyms, pool, rng)
    return with_copies(train, ["tokens", "tags"], p, change)
