"""Entities: entity-level scores (seqeval, default and strict IOB2 mode) and per type, the word-level type confusion,
and word tags → entity spans with character offsets into the raw text (NER serving; words: stages.wordsplit)."""

from __future__ import annotations

import numpy as np

from stages.iob import OUTSIDE


def entity_scores(y_true: list[list[str]], y_pred: list[list[str]]) -> dict[str, float]:
    """Entity-level micro P/R/F1 (conlleval's default mode), strict IOB2 P/R/F1, macro F1 over types,
    and token accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    out = {"f1": f1_score(y_true, y_pred, zero_division=0), "precision": precision_score(y_true, y_pred, zero_division=0),
           "recall": recall_score(y_true, y_pred, zero_division=0),
           "f1_macro": f1_score(y_true, y_pred, average="macro", zero_division=0),
           "accuracy": accuracy_score(y_true, y_pred)}
    strict = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    out |= {"strict_f1": f1_score(y_true, y_pred, **strict), "strict_precision": precision_score(y_true, y_pred, **strict),
            "strict_recall": recall_score(y_true, y_pred, **strict)}
    return {k: float(v) for k, v in out.items()}


def per_type(y_true: list[list[str]], y_pred: list[list[str]], labels: list[str] = ()) -> list[dict]:
    """Per entity type: precision, recall, F1 and support (gold mentions), default mode; every type the model has
    (`labels`) gets a row, one absent from the test split with support 0."""
    from seqeval.metrics import classification_report

    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    rows = [{"label": t, "precision": float(r["precision"]), "recall": float(r["recall"]), "f1": float(r["f1-score"]),
             "support": int(r["support"])} for t, r in report.items() if not t.endswith(" avg")]
    seen = {r["label"] for r in rows}
    missing = sorted({type_of(t) for t in labels if t != OUTSIDE} - seen)
    return rows + [{"label": t, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for t in missing]


def type_counts(y_true: list[list[str]], y_pred: list[list[str]], labels: list[str]):
    """Per sentence and entity type: tp/fp/fn mentions, default mode (what register's gate resamples). The types are
    the model's (`labels`) and any a prediction or gold tag names besides."""
    from seqeval.metrics.sequence_labeling import get_entities

    from stages.gate import Counts

    gold = [set(get_entities(list(t))) for t in y_true]
    pred = [set(get_entities(list(p))) for p in y_pred]
    types = sorted({type_of(t) for t in labels if t != OUTSIDE} | {e[0] for s in gold + pred for e in s})
    col = {t: i for i, t in enumerate(types)}
    out = np.zeros((len(gold), 3, len(types)), np.int32)
    for i, (g, q) in enumerate(zip(gold, pred)):
        for k, found in enumerate((g & q, q - g, g - q)):
            for e in found:
                out[i, k, col[e[0]]] += 1
    return Counts(out, tuple(types))


def type_of(tag: str) -> str:
    return tag if tag == OUTSIDE else tag[2:]


def type_confusion(y_true: list[list[str]], y_pred: list[list[str]]) -> tuple[list[str], list[str]]:
    """Word-level (actual type, predicted type) pairs, B-/I- dropped: which types get mistaken for which."""
    actual = [type_of(t) for s in y_true for t in s]
    predicted = [type_of(t) for s in y_pred for t in s]
    return actual, predicted


def entity_spans(text: str, words: list[tuple[str, int, int]], tags: list[str], probs) -> list[dict]:
    """Word tags → entity dicts with character offsets into `text` (end exclusive) and the mean word probability."""
    from stages.iob import spans

    out = []
    for kind, first, end in spans(tags):
        start, stop = words[first][1], words[end - 1][2]
        out.append({"type": kind, "start": start, "end": stop, "text": text[start:stop],
                    "score": round(float(sum(probs[first:end]) / (end - first)), 4)})
    return out
