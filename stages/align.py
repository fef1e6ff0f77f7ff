"""Word ↔ sub-token alignment for token classification, shared by the tokenize stage and serving.

A sentence arrives as words; the fast tokenizer splits each word into sub-tokens (`word_ids()`).
The word's tag goes on its first sub-token; the others get -100 (ignored by the loss), or, with
`label_all`, the word's tag with B-X turned into I-X so every sub-token still reads as IOB2.
A sentence longer than the model's window is cut between words into several windows, never
truncated: every word is labelled and predicted exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stages.coverage import Coverage
from stages.io import SPLITS
from stages.params import TokenizeParams
from stages.texttok import Fingerprint, Wrapper, length_stats

IGNORE = -100  # CrossEntropyLoss's ignore_index


@dataclass
class Window:
    input_ids: list[int]
    labels: list[int]  # per sub-token: a label id or IGNORE
    words: list[int]  # per sub-token: the sentence's word index on a word's first sub-token, else -1
    sentence: int
    word_labels: list[int]  # the gold label id of every word in this window (words without sub-tokens too)


@dataclass
class AlignStats:
    sentences: int = 0
    windows: int = 0
    windowed_sentences: int = 0  # sentences longer than one window, split between words
    empty_words: int = 0  # words the tokenizer turns into no sub-token (e.g. a lone zero-width space)
    truncated_words: int = 0  # single words longer than a whole window: their extra sub-tokens are cut
    n_tokens: list[int] = field(default_factory=list)  # per sentence, with special tokens, before windowing


def word_pieces(tokenizer, sentences: list[list[str]]) -> list[list[list[int]]]:
    """Sub-token ids of every word of every sentence (a word may get none)."""
    enc = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False)
    out = []
    for i, (ids, sentence) in enumerate(zip(enc["input_ids"], sentences)):
        pieces: list[list[int]] = [[] for _ in sentence]
        for tok, w in zip(ids, enc.word_ids(i)):
            pieces[w].append(tok)
        out.append(pieces)
    return out


def windows_of(lengths: list[int], budget: int) -> list[tuple[int, int]]:
    """Cut words with these sub-token counts into consecutive [start, end) runs of at most `budget`
    sub-tokens; a single word over budget gets a window of its own."""
    out, start, used = [], 0, 0
    for i, n in enumerate(lengths):
        if used + n > budget and i > start:
            out.append((start, i))
            start, used = i, 0
        used += n
    if start < len(lengths) or not out:
        out.append((start, len(lengths)))
    return out


def align(pieces: list[list[int]], tags: list[int] | None, sentence: int, budget: int, wrap: Wrapper,
          continuation: dict[int, int] | None, stats: AlignStats) -> list[Window]:
    """Windows of one sentence. `wrap(ids)` adds the special tokens (n_pre before, the rest after);
    `continuation` maps a label id to the id its later sub-tokens get (None: they get IGNORE)."""
    n_pre = wrap.n_pre
    lengths = [min(len(p), budget) for p in pieces]
    stats.sentences += 1
    stats.empty_words += sum(1 for p in pieces if not p)
    stats.truncated_words += sum(1 for p in pieces if len(p) > budget)
    stats.n_tokens.append(sum(len(p) for p in pieces) + wrap.n_special)
    spans = windows_of(lengths, budget)
    stats.windows += len(spans)
    stats.windowed_sentences += len(spans) > 1
    out = []
    for start, end in spans:
        body, labels, words = [], [], []
        for w in range(start, end):
            sub = pieces[w][:budget]
            body.extend(sub)
            words.extend([w] + [-1] * (len(sub) - 1) if sub else [])
            if tags is None:
                labels.extend([IGNORE] * len(sub))
            elif sub:
                later = IGNORE if continuation is None else continuation[tags[w]]
                labels.extend([tags[w]] + [later] * (len(sub) - 1))
        ids = wrap(body)
        n_suf = len(ids) - len(body) - n_pre
        out.append(Window(ids, [IGNORE] * n_pre + labels + [IGNORE] * n_suf, [-1] * n_pre + words + [-1] * n_suf,
                          sentence, list(tags[start:end]) if tags is not None else []))
    return out


def continuation_ids(labels: list[str]) -> dict[int, int]:
    """Label id → the id of a word's later sub-tokens: B-X → I-X, anything else unchanged."""
    index = {n: i for i, n in enumerate(labels)}
    return {i: index.get("I-" + n[2:], i) if n.startswith("B-") else i for i, n in enumerate(labels)}


def tokenize_sentences(splits: dict[str, pd.DataFrame], tokenizer, labels: list[str], p: TokenizeParams):
    """Pure core for token classification: windows of sub-tokens with aligned label ids (see stages.align),
    the word index of each word's first sub-token, and the sentence each window came from."""
    import datasets
    import pyarrow as pa

    wrap = Wrapper.of(tokenizer)
    budget = p.max_length - wrap.n_special
    label2id = {n: i for i, n in enumerate(labels)}
    continuation = continuation_ids(labels) if p.label_all_subtokens else None
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                  "label": datasets.List(datasets.Value("int64")),
                                  "word": datasets.List(datasets.Value("int32")),
                                  "sentence": datasets.Value("int64"), "n_tokens": datasets.Value("int32"),
                                  "word_labels": datasets.List(datasets.Value("int64"))})
    out, report = {}, {"max_length": p.max_length, "label_all_subtokens": p.label_all_subtokens, "splits": {}}
    for name in SPLITS:
        df, stats, rows, coverage = splits[name], AlignStats(), [], Coverage(tokenizer)
        sentences = [list(map(str, t)) for t in df["tokens"]]
        for start in range(0, len(sentences), p.batch_size):
            chunk = sentences[start : start + p.batch_size]
            for k, pieces in enumerate(word_pieces(tokenizer, chunk) if chunk else []):
                i = start + k
                coverage.add(chunk[k], pieces)
                tags = [label2id[t] for t in df["tags"].iat[i]]
                for w in align(pieces, tags, i, budget, wrap, continuation, stats):
                    rows.append((w.input_ids, w.labels, w.words, w.sentence, stats.n_tokens[-1], w.word_labels))
        columns = dict(zip(features, map(list, zip(*rows)))) if rows else {k: [] for k in features}
        joined = pd.DataFrame({c: df[c].map(" ".join) for c in ("tokens", "tags")})  # lists do not hash
        settings = f"{p.max_length}|{p.label_all_subtokens}|{labels}|{name}"
        table = pa.Table.from_pydict(columns, schema=features.arrow_schema)
        out[name] = datasets.Dataset(table, info=datasets.DatasetInfo(features=features),
                                     fingerprint=Fingerprint(tokenizer, settings).add(joined).value())
        report["splits"][name] = length_stats(np.asarray(stats.n_tokens), p.max_length) | {
            "windows": stats.windows, "windowed_sentences": stats.windowed_sentences,
            "empty_words": stats.empty_words, "truncated_words": stats.truncated_words, "coverage": coverage.report()}
    return datasets.DatasetDict(out), report
