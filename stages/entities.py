"""Token classification: sub-token logits → word tags, and entity-level scores (seqeval, IOB2).

Shared by finetune (per-epoch validation), evaluate (test) and serving (raw text → spans).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from stages.align import IGNORE
from stages.iob import OUTSIDE
from stages.modeling import predict_token_logits


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def to_words(values: list[np.ndarray], words: list[list[int]], sentences: list[int], n_words: list[int],
             fill, dtype) -> list[np.ndarray]:
    """Per sentence, one value per word: window i's values[i][k] (one per word of the window, in order) go to
    the words its first sub-tokens name; windows of one sentence are put back together; other words get `fill`."""
    out = [np.full(n, fill, dtype=dtype) for n in n_words]
    for v, wd, s in zip(values, words, sentences):
        wd = np.asarray(wd)
        out[s][wd[wd >= 0]] = v
    return out


def word_predictions(logits: list[np.ndarray], words: list[list[int]], sentences: list[int], n_words: list[int],
                     outside: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per sentence: the label id of each word (read on its first sub-token) and its probability. A word with no
    sub-token is `outside` (O) with probability 1."""
    probs = [softmax(lg[np.asarray(wd) >= 0]) for lg, wd in zip(logits, words)]
    return (to_words([p.argmax(-1) for p in probs], words, sentences, n_words, outside, np.int64),
            to_words([p.max(-1) for p in probs], words, sentences, n_words, 1.0, np.float32))


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


def per_type(y_true: list[list[str]], y_pred: list[list[str]]) -> list[dict]:
    """Per entity type: precision, recall, F1 and support (gold mentions), default mode."""
    from seqeval.metrics import classification_report

    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    return [{"label": t, "precision": float(r["precision"]), "recall": float(r["recall"]), "f1": float(r["f1-score"]),
             "support": int(r["support"])} for t, r in report.items() if not t.endswith(" avg")]


def type_of(tag: str) -> str:
    return tag if tag == OUTSIDE else tag[2:]


def type_confusion(y_true: list[list[str]], y_pred: list[list[str]]) -> tuple[list[str], list[str]]:
    """Word-level (actual type, predicted type) pairs, B-/I- dropped: which types get mistaken for which."""
    actual = [type_of(t) for s in y_true for t in s]
    predicted = [type_of(t) for s in y_pred for t in s]
    return actual, predicted


def sentence_gold(word_labels: list[list[int]], sentences: list[int]) -> list[list[int]]:
    """Each sentence's gold word label ids, put back together from its windows (stored in order)."""
    gold: dict[int, list[int]] = {}
    for labels, s in zip(word_labels, sentences):
        gold.setdefault(s, []).extend(labels)
    return [gold[s] for s in sorted(gold)]


def split_predictions(model, split, names: list[str], batch_size: int, pad_id: int, device, dtype=None):
    """Word tags (gold, predicted, as names) per sentence of a tokenized split, and the raw window logits."""
    seqs, sentences = list(split["input_ids"]), list(split["sentence"])
    gold = sentence_gold(list(split["word_labels"]), sentences)
    logits = predict_token_logits(model, seqs, batch_size, pad_id, device, dtype)
    ids, _ = word_predictions(logits, list(split["word"]), sentences, [len(g) for g in gold], names.index(OUTSIDE))
    return [[names[t] for t in g] for g in gold], [[names[t] for t in s] for s in ids], logits


def token_validator(split, names: list[str], batch_size: int, pad_id: int, device) -> Callable:
    """Validation for token classification: loss over labelled sub-tokens, then word tags → entity scores."""
    flat_labels = torch.as_tensor([t for s in split["label"] for t in s])

    def validate(model, dtype) -> dict[str, float]:
        y_true, y_pred, logits = split_predictions(model, split, names, batch_size, pad_id, device, dtype)
        loss = torch.nn.functional.cross_entropy(torch.from_numpy(np.concatenate(logits)), flat_labels,
                                                 ignore_index=IGNORE).item()
        return {"loss": loss} | entity_scores(y_true, y_pred)
    return validate


def token_baselines(train, test, names: list[str], which: list[str], probe_rows: int, encoder, batch_size: int,
                    pad_id: int, device) -> dict[str, list[list[str]]]:
    """Word tags per test sentence from each baseline: `majority` tags every word with train's most frequent
    tag; `frozen_probe` is a logistic regression on the frozen encoder's first-sub-token states."""
    from stages.baselines import first_subtoken_states, probe_predictions

    sentences = list(test["sentence"])
    n_words = [len(g) for g in sentence_gold(list(test["word_labels"]), sentences)]
    first = [[t for t, w in zip(lab, wd) if w >= 0] for lab, wd in zip(train["label"], train["word"])]
    out = {}
    if "majority" in which:
        top = names[int(np.bincount([t for s in first for t in s], minlength=len(names)).argmax())]
        out["majority"] = [[top] * n for n in n_words]
    if "frozen_probe" in which:
        rows = np.random.default_rng(0).permutation(len(first))[:probe_rows]
        states = first_subtoken_states(encoder, [train["input_ids"][int(i)] for i in rows],
                                       [train["word"][int(i)] for i in rows], batch_size, pad_id, device)
        test_states = first_subtoken_states(encoder, list(test["input_ids"]), list(test["word"]), batch_size, pad_id, device)
        pred = probe_predictions(np.concatenate(states), np.concatenate([first[int(i)] for i in rows]),
                                 np.concatenate(test_states))
        per_window = np.split(pred, np.cumsum([len(s) for s in test_states])[:-1])
        ids = to_words(per_window, list(test["word"]), sentences, n_words, names.index(OUTSIDE), np.int64)
        out["frozen_probe"] = [[names[t] for t in s] for s in ids]
    return out
