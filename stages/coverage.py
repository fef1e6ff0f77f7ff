"""Vocabulary coverage: how much of a split's text the model's tokenizer can represent, for any language and model.

A model fed text its vocabulary does not cover trains on [UNK] noise while its metrics still print (the packaged
English MiniLM turns 65% of ChnSentiCorp's tokens into [UNK]). Per split, tokenize reports the share of [UNK]
tokens, the share of characters the tokenizer cannot represent on their own and the most frequent of them, and
tokens per character; above `tokenize.warn_unk_share` it warns, above `tokenize.max_unk_share` it stops.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable

from stages.io import PipelineError
from stages.params import TokenizeParams
from stages.wordsplit import CJK

TOP = 10  # unknown characters listed per split


def _counted(ch: str) -> bool:
    """Characters coverage is about: not whitespace, control/format characters or combining marks, which tokenizers
    drop or fold into their base character by design."""
    return unicodedata.category(ch)[0] not in "ZCM"


class Coverage:
    """Fed a split's texts and their (untruncated, special-token-free) ids, chunk by chunk; `report()` at the end."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.unk_id = tokenizer, tokenizer.unk_token_id
        self.chars: Counter[str] = Counter()
        self.tokens = self.unk = 0

    def add(self, texts: Iterable[str], ids: Iterable[list[int]]) -> None:
        for text in texts:
            self.chars.update(text)  # C-level counting: ~1 s per 30M characters
        for seq in ids:
            self.tokens += len(seq)
            if self.unk_id is not None:
                self.unk += seq.count(self.unk_id)

    def unknown_chars(self, chars: list[str]) -> set[str]:
        """Characters that tokenize, alone, to [UNK] or to nothing: the vocabulary cannot represent them."""
        if not chars:
            return set()
        enc = self.tokenizer(chars, add_special_tokens=False, return_attention_mask=False,
                             return_token_type_ids=False, verbose=False)["input_ids"]
        return {c for c, ids in zip(chars, enc) if not ids or (self.unk_id is not None and self.unk_id in ids)}

    def report(self) -> dict:
        chars = {c: n for c, n in self.chars.items() if _counted(c)}
        total = sum(chars.values())
        unknown = sorted(self.unknown_chars(sorted(chars)), key=lambda c: (chars[c], c), reverse=True)
        n_unknown = sum(chars[c] for c in unknown)
        return {"tokens": self.tokens, "unk_tokens": self.unk, "unk_share": round(self.unk / self.tokens, 4)
                if self.tokens else 0.0, "chars": total,
                "unknown_char_share": round(n_unknown / total, 4) if total else 0.0,
                "top_unknown_chars": [[c, chars[c]] for c in unknown[:TOP]],
                "tokens_per_char": round(self.tokens / total, 3) if total else 0.0}


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%" if x >= 0.001 or x == 0 else f"{100 * x:.2f}%"


def check_coverage(splits: dict[str, dict], p: TokenizeParams, model: str) -> list[str]:
    """Warnings for the splits whose [UNK] share is above `warn_unk_share`; a one-line error for the worst split
    above `max_unk_share` (the tokenized data would be noise the model cannot learn from)."""
    shares = {name: s["coverage"] for name, s in splits.items() if "coverage" in s}
    if not shares:
        return []
    worst = max(shares, key=lambda n: shares[n]["unk_share"])
    c = shares[worst]
    top = " ".join(ch for ch, _ in c["top_unknown_chars"])
    said = (f"{_percent(c['unk_share'])} of the {worst} split's tokens are [UNK] "
            f"({_percent(c['unknown_char_share'])} of its characters cannot be represented"
            + (f"; most frequent: {top}" if top else "") + ")")
    cjk = sum(n for ch, n in c["top_unknown_chars"] if CJK.match(ch)) > sum(n for _, n in c["top_unknown_chars"]) / 2
    pick = "e.g. model.name: bert-base-chinese for Chinese" if cjk else "e.g. a multilingual one"
    if c["unk_share"] > p.max_unk_share:
        raise PipelineError(f"{said}: model {model} does not cover this text; pick a model whose vocabulary "
                            f"does ({pick}), or raise tokenize.max_unk_share (now {p.max_unk_share}) on purpose")
    return [f"{_percent(s['unk_share'])} of the {name} split's tokens are [UNK] (tokenize.warn_unk_share: "
            f"{p.warn_unk_share}); see reports/tokenize.json for the characters" for name, s in shares.items()
            if s["unk_share"] > p.warn_unk_share]
