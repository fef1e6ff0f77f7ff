"""Word ↔ sub-token alignment for token classification, shared by the tokenize stage and serving.

A sentence arrives as words; the fast tokenizer splits each word into sub-tokens (`word_ids()`).
The word's tag goes on its first sub-token; the others get -100 (ignored by the loss), or, with
`label_all`, the word's tag with B-X turned into I-X so every sub-token still reads as IOB2.
A sentence longer than the model's window is cut between words into several windows, never
truncated: every word is labelled and predicted exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.io import PipelineError

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


class Wrapper:
    """Adds the tokenizer's special tokens around a window's sub-tokens ([CLS] … [SEP] for BERT)."""

    def __init__(self, prefix: list[int], suffix: list[int]) -> None:
        self.prefix, self.suffix = prefix, suffix
        self.n_pre, self.n_special = len(prefix), len(prefix) + len(suffix)

    @classmethod
    def of(cls, tokenizer) -> Wrapper:
        ids = tokenizer("a")["input_ids"]
        bare = tokenizer("a", add_special_tokens=False)["input_ids"]
        for start in range(len(ids) - len(bare) + 1):
            if ids[start : start + len(bare)] == bare:
                return cls(ids[:start], ids[start + len(bare):])
        raise PipelineError("tokenizer: cannot locate a text among its special tokens")

    def __call__(self, ids: list[int]) -> list[int]:
        return self.prefix + ids + self.suffix


def continuation_ids(labels: list[str]) -> dict[int, int]:
    """Label id → the id of a word's later sub-tokens: B-X → I-X, anything else unchanged."""
    index = {n: i for i, n in enumerate(labels)}
    return {i: index.get("I-" + n[2:], i) if n.startswith("B-") else i for i, n in enumerate(labels)}
