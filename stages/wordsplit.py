"""Raw text → words, for every language: CJK ideographs are words of one character (Chinese has no spaces; BERT's own
pre-tokenizer splits them the same way), other text splits as CoNLL-style data does. NER serving splits raw text with
the rule its training data was split by (`words` or `chars`, recorded in the model's pipeline.json); augment's
language-independent operations work on the same units.

Rules:
- `words`: a CJK ideograph is a word; Latin/digit runs are words, abbreviations (U.S.) whole, a possessive 's apart,
  hyphenated/dotted words whole; every other punctuation mark is a word of its own. CoNLL-2003, and Chinese text
  with Latin words and numbers kept whole.
- `chars`: every character but whitespace is a word (MSRA-style data: one character per line, digits and Latin too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

WordSplit = Literal["words", "chars"]

# The CJK ideograph blocks BERT's tokenizer treats as Chinese characters (BasicTokenizer._is_chinese_char).
CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f"
CJK = re.compile(f"[{CJK_RANGES}]")
LATIN = re.compile(f"[^\\W{CJK_RANGES}]")  # a word character that is not a CJK ideograph (letters, digits)
_W = LATIN.pattern
PATTERNS = {
    "words": re.compile(rf"(?:[A-Za-z]\.){{2,}}|'[sS]\b|{_W}+(?:[-.&]{_W}+)*|[{CJK_RANGES}]|[^\w\s]"),
    "chars": re.compile(r"\S"),
}


def split_words(text: str, rule: WordSplit = "words") -> list[tuple[str, int, int]]:
    """(word, start, end) character offsets into `text` of each word, by `rule` (end exclusive)."""
    return [(m.group(), m.start(), m.end()) for m in PATTERNS[rule].finditer(text)]


def cjk_share(text: str) -> float:
    """Share of the text's word characters (letters, digits, ideographs) that are CJK ideographs; 0 for none."""
    letters = sum(ch.isalnum() for ch in text)
    return len(CJK.findall(text)) / letters if letters else 0.0


def is_cjk_text(text: str) -> bool:
    """Mostly CJK ideographs: a text that English word resources (WordNet) cannot touch."""
    return cjk_share(text) > 0.5


def infer_rule(sentences: Iterable[list[str]]) -> tuple[WordSplit, dict]:
    """The rule training sentences were split by: `chars` when (nearly) every token is one character (MSRA), else
    `words`; the evidence as a dict for the report. 1% slack: NFKC can turn one character into several (㈱ → (株))."""
    tokens = single = cjk_multi = 0
    for sentence in sentences:
        for t in sentence:
            tokens += 1
            single += len(t) == 1
            cjk_multi += len(t) > 1 and bool(CJK.search(t))
    share = single / tokens if tokens else 0.0
    rule: WordSplit = "chars" if tokens and share >= 0.99 else "words"
    return rule, {"tokens": tokens, "single_char_share": round(share, 4), "multi_char_cjk_tokens": cjk_multi}


def choose_rule(train_sentences: Iterable[list[str]], param: str) -> tuple[WordSplit, dict, list[str]]:
    """The rule serving will split raw text by: `param` (tokenize.word_split), or inferred from the train sentences
    when it is `auto`; the report entry; a warning when serving cannot split as train was (segmented Chinese words:
    serving has no segmenter and reads CJK text one character per word)."""
    inferred, evidence = infer_rule(train_sentences)
    rule: WordSplit = inferred if param == "auto" else param  # type: ignore[assignment]
    entry = {"rule": rule, "chosen_by": "inferred from train" if param == "auto" else "tokenize.word_split"} | evidence
    warnings = []
    if rule == "words" and evidence["multi_char_cjk_tokens"] > 0.01 * evidence["tokens"]:
        warnings.append(f"{evidence['multi_char_cjk_tokens']} train tokens are Chinese words of several characters; "
                        f"serving splits Chinese text one character per word, so raw-text predictions will differ "
                        f"from the test scores (re-split the data into characters, as MSRA is)")
    elif param != "auto" and rule != inferred:
        warnings.append(f"tokenize.word_split is {rule}, but the train sentences look split by {inferred} "
                        f"({100 * evidence['single_char_share']:.1f}% one-character tokens)")
    return rule, entry, warnings
