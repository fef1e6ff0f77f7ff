"""IOB2 tags for NER: parse, validate, repair, decode to spans, and the label list a model uses.

IOB2: every entity starts with `B-TYPE`, continues with `I-TYPE`; `O` is outside. IOB1 files (an
entity may start with `I-`) and slips such as `I-PER` after `O` or after `I-LOC` are repaired to
`B-PER` by `repair`, which counts what it changed.
"""

from __future__ import annotations

import re

OUTSIDE = "O"
TAG = re.compile(r"([BI])-(\S+)")


def parse(tag: str) -> tuple[str, str | None]:
    """('O', None) or ('B'|'I', type); ValueError for anything else (BIOES's E-/S-, lower-case b-, '')."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    m = TAG.fullmatch(tag)
    if not m:
        raise ValueError(f"tag '{tag}' is not IOB/IOB2 (O, B-TYPE or I-TYPE)")
    return m.group(1), m.group(2)


def invalid_at(tags: list[str]) -> int | None:
    """Index of the first tag that breaks IOB2 (I-X not after B-X/I-X), or None."""
    prev = None
    for i, tag in enumerate(tags):
        prefix, kind = parse(tag)
        if prefix == "I" and prev != kind:
            return i
        prev = kind
    return None


def repair(tags: list[str]) -> tuple[list[str], int]:
    """IOB1 / broken IOB2 → IOB2: an I-X that does not continue an X entity becomes B-X."""
    out, fixed, prev = [], 0, None
    for tag in tags:
        prefix, kind = parse(tag)
        if prefix == "I" and prev != kind:
            tag, fixed = f"B-{kind}", fixed + 1
        out.append(tag)
        prev = kind
    return out, fixed


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities as (type, first word, end word exclusive). Lenient like conlleval: an I-X that does not
    continue an X entity starts one, so model output that is not valid IOB2 still decodes."""
    out: list[tuple[str, int, int]] = []
    kind, start = None, 0
    for i, tag in enumerate([*tags, OUTSIDE]):
        prefix, t = parse(tag) if tag else (OUTSIDE, None)
        if kind is not None and (prefix != "I" or t != kind):
            out.append((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and kind is None):
            kind, start = t, i
    return out


def entity_types(tags) -> list[str]:
    """Sorted entity types among `tags` (an iterable of tags)."""
    return sorted({parse(t)[1] for t in tags} - {None})


def label_list(types: list[str]) -> list[str]:
    """The model's label names, in id order: O, then B-/I- of each type (both, even if a type never has I-)."""
    return [OUTSIDE] + [f"{p}-{t}" for t in sorted(types) for p in "BI"]
