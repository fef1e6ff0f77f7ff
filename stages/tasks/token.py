"""Token classification (NER): one IOB2 tag per word; sentences in, entity spans with character offsets out.

Reading (CoNLL / JSONL / Parquet / HF), IOB2 repair and the sentence split are `stages.sentences`; word → sub-token
alignment and windows are `stages.align`; span-preserving augmentation is `stages.span_augment`. Here: the task's
interface, baselines and serving; entity-level scores and raw text → words → spans are `stages.entities`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.align import IGNORE, tokenize_sentences
from stages.entities import entity_scores, entity_spans, per_type, type_confusion, type_counts
from stages.io import read_splits, write_splits
from stages.iob import OUTSIDE
from stages.params import AugmentParams, CleanParams, FinetuneParams, IngestParams, TokenizeParams
from stages.sentence_clean import clean_sentences
from stages.sentences import ingest_sentences, read_sentences, sentence_labels
from stages.tasks.base import EvalInputs, Evaluation, Ingested, Task
from stages.wordsplit import choose_rule, split_words


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


def sentence_gold(word_labels: list[list[int]], sentences: list[int]) -> list[list[int]]:
    """Each sentence's gold word label ids, put back together from its windows (stored in order)."""
    gold: dict[int, list[int]] = {}
    for labels, s in zip(word_labels, sentences):
        gold.setdefault(s, []).extend(labels)
    return [gold[s] for s in sorted(gold)]


def split_predictions(model, split, names: list[str], batch_size: int, pad_id: int, device, dtype=None, collate=None,
                      what: str | None = None):
    """Word tags (gold, predicted, as names) per sentence of a tokenized split, and the model's own loss over the
    labelled sub-tokens (with `collate`; else None)."""
    from stages.modeling import run_model

    seqs, sentences = list(split["input_ids"]), list(split["sentence"])
    gold = sentence_gold(list(split["word_labels"]), sentences)
    targets = list(split["label"]) if collate else None
    logits, loss = run_model(model, seqs, batch_size, pad_id, device, dtype, targets, collate, per_token=True, what=what)
    ids, _ = word_predictions(logits, list(split["word"]), sentences, [len(g) for g in gold], names.index(OUTSIDE))
    return [[names[t] for t in g] for g in gold], [[names[t] for t in s] for s in ids], loss


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
                                       [train["word"][int(i)] for i in rows], batch_size, pad_id, device,
                                       "train split, frozen encoder (probe baseline)")
        test_states = first_subtoken_states(encoder, list(test["input_ids"]), list(test["word"]), batch_size, pad_id, device,
                                            "test split, frozen encoder (probe baseline)")
        pred = probe_predictions(np.concatenate(states), np.concatenate([first[int(i)] for i in rows]),
                                 np.concatenate(test_states))
        per_window = np.split(pred, np.cumsum([len(s) for s in test_states])[:-1])
        ids = to_words(per_window, list(test["word"]), sentences, n_words, names.index(OUTSIDE), np.int64)
        out["frozen_probe"] = [[names[t] for t in s] for s in ids]
    return out


class TokenClassification(Task):
    name = "token_classification"
    # entity-level (seqeval); `accuracy` is token accuracy and `f1_macro` the mean of the per-type F1s
    metrics = ("f1", "precision", "recall", "f1_macro", "accuracy", "loss")
    gate_metrics = {"f1": "f1_micro", "precision": "precision_micro", "recall": "recall_micro", "f1_macro": "f1_macro"}
    operations = ("synonym", "mention", "shuffle")
    unit = "sentences"
    answers_empty_text = True  # no words, no entities
    examples = ["Angela Merkel visited Paris.", "Shares of Apple rose in New York."]
    auto_model = "AutoModelForTokenClassification"

    def read(self, p: IngestParams) -> dict[str, pd.DataFrame]:
        return read_sentences(p)

    def ingest(self, source: dict[str, pd.DataFrame], p: IngestParams) -> Ingested:
        return Ingested(*ingest_sentences(source, p))

    def drift_view(self, df: pd.DataFrame) -> tuple[list[str], list[str]]:
        """A sentence's words joined by spaces; its entities' types (one per B- tag; O is not a label here)."""
        texts = [" ".join(map(str, tokens)) for tokens in df["tokens"]]
        return texts, [str(t)[2:] for tags in df["tags"] for t in tags if str(t).startswith("B-")]

    def clean(self, in_dir: Path, out_dir: Path, p: CleanParams) -> dict:
        """Sentences in memory; the labels come from the cleaned train split's entity types."""
        splits, report = clean_sentences(read_splits(in_dir), p, in_dir)
        write_splits(splits, out_dir, sentence_labels(splits))
        return report

    def augment(self, train: pd.DataFrame, p: AugmentParams, synonyms) -> tuple[pd.DataFrame, dict]:
        from stages.span_augment import augment_sentences

        return augment_sentences(train, p, synonyms)

    def tokenize(self, in_dir: Path, tokenizer, labels: list[str], p: TokenizeParams, scratch: Path):
        """Also decides how serving splits raw text into words (tokenize.word_split, or as the train split was)."""
        splits = read_splits(in_dir)
        dd, report = tokenize_sentences(splits, tokenizer, labels, p)
        rule, report["word_split"], warnings = choose_rule(splits["train"]["tokens"], p.word_split)
        return dd, report | {"serving": {"word_split": rule}, "warnings": warnings}

    def train_rows(self, split):
        # a window whose words all lack sub-tokens carries no label: nothing to learn from it. Found in Arrow (the
        # positions of labelled tokens → their rows), so the split is never read into Python lists.
        import pyarrow.compute as pc

        labels = super().label_column(split)  # the lists, one per window (label_column here gives the tokens)
        rows = pc.list_parent_indices(labels).to_numpy()[pc.not_equal(pc.list_flatten(labels), IGNORE).to_numpy(zero_copy_only=False)]
        keep = np.unique(rows)
        return split if len(keep) == len(split) else split.select(keep, keep_in_memory=True)

    def label_column(self, split):
        """Every labelled position's label id (the IGNORE ones left out): class weights count tokens."""
        import pyarrow.compute as pc

        flat = pc.list_flatten(split.with_format("arrow", columns=["label"])[:]["label"])
        return flat.filter(pc.not_equal(flat, IGNORE))

    def collate(self, targets: list, idx: np.ndarray, width: int):
        """One label id per position, right-padded with IGNORE (no loss there)."""
        import torch

        out = torch.full((len(idx), width), IGNORE, dtype=torch.long)
        for row, i in enumerate(idx):
            out[row, : len(targets[i])] = torch.as_tensor(targets[i])
        return out

    def validator(self, split, labels: list[str], p: FinetuneParams, pad_id: int, device):
        def validate(model, dtype) -> dict[str, float]:
            y_true, y_pred, loss = split_predictions(model, split, labels, p.eval_batch_size, pad_id, device, dtype,
                                                     self.collate)
            return {"loss": loss} | entity_scores(y_true, y_pred)
        return validate

    def evaluate(self, inputs: EvalInputs, baselines: list[str], batch_size: int, probe_rows: int) -> Evaluation:
        """Entity-level metrics (seqeval default and strict), per type; the confusion is word-level, over types."""
        tokenized, labels = inputs.tokenized, inputs.labels
        y_true, y_pred, _ = split_predictions(inputs.model, tokenized["test"], labels, batch_size, inputs.pad_id,
                                              inputs.device, what="test split, fine-tuned model")
        encoder = inputs.encoder().to(inputs.device) if "frozen_probe" in baselines else None
        scores = {name: entity_scores(y_true, pred) for name, pred in token_baselines(
            tokenized["train"], tokenized["test"], labels, baselines, probe_rows, encoder, batch_size, inputs.pad_id,
            inputs.device).items()}
        from sklearn.metrics import confusion_matrix

        actual, predicted = type_confusion(y_true, y_pred)
        classes = sorted(set(actual) | set(predicted))
        cm = confusion_matrix(actual, predicted, labels=classes)
        # words: actual type → predicted type
        extra = {"type_confusion": {a: {c: int(cm[i, j]) for j, c in enumerate(classes)} for i, a in enumerate(classes)}}
        return self.evaluation(type_counts(y_true, y_pred, labels), test=entity_scores(y_true, y_pred),
                               baselines=scores, per_class=per_type(y_true, y_pred, labels), actual=actual,
                               predicted=predicted, classes=classes, extra=extra)

    def predictor(self, path: Path, meta: dict):
        """Raw texts in; per text, a list of entity spans out: {"type", "start", "end", "text", "score"} with
        character offsets into the input text (end exclusive) and score = the mean probability of the span's word
        tags. Raw text splits into words by the rule the training data was split by (pipeline.json's word_split,
        stages.wordsplit: Chinese one character per word). Nothing is truncated, so there is no `truncated` column: a text longer than the model's window is cut
        into windows between words, as in training, and every word gets a tag; a single word longer than a whole window
        (max_length minus the special tokens, in sub-tokens: a long URL) is tagged from its first sub-tokens, and its
        span still covers the whole word. An empty text has no words, so no entities."""
        from stages.align import AlignStats, align, word_pieces
        from stages.modeling import predict_token_logits
        from stages.texttok import Wrapper

        model, tokenizer, device = self.load_for_serving(path)
        labels, wrap = meta["labels"], Wrapper.of(tokenizer)

        def predict(texts: list[str]) -> list[list[dict]]:
            words = [split_words(t, meta.get("word_split", "words")) for t in texts]  # as train was split
            budget, stats, windows = meta["max_length"] - wrap.n_special, AlignStats(), []
            for i, pieces in enumerate(word_pieces(tokenizer, [[w for w, _, _ in ws] for ws in words]) if texts else []):
                windows.extend(align(pieces, None, i, budget, wrap, None, stats))
            logits = predict_token_logits(model, [w.input_ids for w in windows], 64, tokenizer.pad_token_id, device)
            ids, probs = word_predictions(logits, [w.words for w in windows], [w.sentence for w in windows],
                                          [len(ws) for ws in words], labels.index(OUTSIDE))
            return [entity_spans(text, ws, [labels[t] for t in tag_ids], p)
                    for text, ws, tag_ids, p in zip(texts, words, ids, probs)]
        return predict

    def example_output(self, labels: list[str]):
        return [[{"type": "PER", "start": 0, "end": 13, "text": "Angela Merkel", "score": 0.99}]]
