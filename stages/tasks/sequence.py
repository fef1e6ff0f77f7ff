"""Sequence classification: one label per text (sentiment, topic, intent), single-label cross-entropy.

Rows are (text, label); splits are stratified by label; metrics are accuracy and macro/weighted P/R/F1 (scikit-learn);
baselines are the majority class, a logistic-regression probe on the frozen, mean-pooled pretrained encoder, and a
logistic regression on TF-IDF character n-grams (opt-in: `tfidf`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.eda import augment_text, with_copies
from stages.io import iter_split, split_paths
from stages.params import AugmentParams, CleanParams, FinetuneParams, IngestParams, TokenizeParams
from stages.splits import prepare
from stages.tasks.base import EvalInputs, Evaluation, Frames, Ingested, Task
from stages.tasks.sequence_ingest import ingest, read_source
from stages.textclean import clean_files


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro/weighted precision, recall and F1 (zero_division=0: no warning spam)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    out = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        out |= {f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)}
    return out


def per_class(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> list[dict]:
    from sklearn.metrics import precision_recall_fscore_support

    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return [{"label": labels[i], "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
             "support": int(s[i])} for i in ids]


def label_counts(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]):
    """Per row and class, tp/fp/fn (one label per row: a hit is a tp of its class, a miss a fp of the predicted class
    and a fn of the true one): what register's gate resamples."""
    from stages.gate import Counts

    n, rows, hit = len(y_true), np.arange(len(y_true)), y_true == y_pred
    out = np.zeros((n, 3, len(labels)), np.int32)
    out[rows[hit], 0, y_true[hit]] = 1
    out[rows[~hit], 1, y_pred[~hit]] = 1
    out[rows[~hit], 2, y_true[~hit]] = 1
    return Counts(out, tuple(labels))


def probe_texts(inputs: EvalInputs, probe_rows: int) -> tuple[pd.DataFrame, pd.Series]:
    """Up to `probe_rows` cleaned train rows (text, label; a seeded shuffle) and the cleaned test texts: what the
    baselines that read texts (frozen_probe, tfidf) learn from and score."""
    clean = inputs.clean()
    return clean["train"].sample(frac=1.0, random_state=0).head(probe_rows), clean["test"]["text"]


def frozen_embeddings(inputs: EvalInputs, texts: tuple[pd.DataFrame, pd.Series],
                      batch_size: int) -> tuple[np.ndarray, pd.Series, np.ndarray]:
    """Mean-pooled frozen-encoder vectors of the `probe_texts` train texts (their labels beside) and test texts."""
    from stages.baselines import mean_pooled

    (train, test), tokenizer, encoder = texts, inputs.tokenizer(), inputs.encoder().to(inputs.device)

    def embed(texts: pd.Series, split: str) -> np.ndarray:
        seqs = tokenizer(list(texts), truncation=True, max_length=inputs.meta["max_length"])["input_ids"]
        return mean_pooled(encoder, seqs, batch_size, tokenizer.pad_token_id, inputs.device,
                           f"{split} split, frozen encoder (probe baseline)")

    return embed(train["text"], "train"), train["label"], embed(test, "test")


class SequenceClassification(Task):
    name = "sequence_classification"
    metrics = ("accuracy", "f1_macro", "f1_weighted", "loss")
    gate_metrics = {"accuracy": "exact", "f1_macro": "f1_macro", "f1_weighted": "f1_weighted"}
    operations = ("synonym", "insert", "swap", "delete")
    baselines = (*Task.baselines, "tfidf")
    examples = ["a gem of a film", "a dull, lifeless remake"]
    auto_model = "AutoModelForSequenceClassification"
    problem_type = "single_label_classification"

    def read(self, p: IngestParams) -> tuple[Frames, list[str] | None]:  # (frames, label names the source gives)
        return read_source(p)

    def ingest(self, source: tuple[Frames, list[str] | None], p: IngestParams) -> Ingested:
        frames, report = prepare(source[0], p)
        splits, labels = ingest(frames, p, source[1])
        summary = {s: {"rows": len(df), "labels": df["label"].value_counts().sort_index().to_dict()}
                   for s, df in splits.items()}
        return Ingested(splits, labels, summary, report)

    def clean(self, in_dir: Path, out_dir: Path, p: CleanParams) -> dict:
        return clean_files(in_dir, out_dir, p)

    def augment(self, train: pd.DataFrame, p: AugmentParams, synonyms) -> tuple[pd.DataFrame, dict]:
        def change(row, op, rng):
            return augment_text(row[0], op, p.rate, synonyms, rng), row[1]
        return with_copies(train, ["text", "label"], p, change)

    def label_codec(self):
        """How labels are stored in the tokenized data: texttok's default, one label id per text."""
        from stages.texttok import LabelCodec

        return LabelCodec()

    def tokenize(self, in_dir: Path, tokenizer, labels: list[str], p: TokenizeParams, scratch: Path):
        from stages.texttok import tokenize

        splits = {name: iter_split(path, columns=["text", "label"]) for name, path in split_paths(in_dir).items()}
        return tokenize(splits, tokenizer, labels, p, scratch, self.label_codec())

    def collate(self, targets: list, idx: np.ndarray, width: int):
        import torch

        return torch.as_tensor([targets[i] for i in idx])

    def validator(self, split, labels: list[str], p: FinetuneParams, pad_id: int, device):
        from stages.modeling import run_model

        batch_size, seqs, targets = p.eval_batch_size, list(split["input_ids"]), list(split["label"])

        def validate(model, dtype) -> dict[str, float]:
            logits, loss = run_model(model, seqs, batch_size, pad_id, device, dtype, targets, self.collate)
            return {"loss": loss} | classification_metrics(np.asarray(targets), logits.argmax(-1))
        return validate

    def evaluate(self, inputs: EvalInputs, baselines: list[str], batch_size: int, probe_rows: int) -> Evaluation:
        from stages.baselines import majority_predictions, probe_predictions, tfidf_predictions
        from stages.modeling import predict_logits

        labels, test = inputs.labels, inputs.tokenized["test"]
        y_true = np.asarray(test["label"])
        y_pred = predict_logits(inputs.model, list(test["input_ids"]), batch_size, inputs.pad_id, inputs.device,
                                what="test split, fine-tuned model").argmax(-1)
        scores = {}
        if "majority" in baselines:
            train_labels = np.asarray(inputs.tokenized["train"]["label"])
            scores["majority"] = classification_metrics(y_true, majority_predictions(train_labels, len(y_true)))
        texts = probe_texts(inputs, probe_rows) if {"frozen_probe", "tfidf"} & set(baselines) else None
        label2id = {n: i for i, n in enumerate(labels)}
        if "frozen_probe" in baselines:
            train_x, train_y, test_x = frozen_embeddings(inputs, texts, batch_size)
            scores["frozen_probe"] = classification_metrics(
                y_true, probe_predictions(train_x, train_y.map(label2id).to_numpy(), test_x))
        if "tfidf" in baselines:  # TF-IDF character n-grams + logistic regression: no model, any language
            train, test_texts = texts
            scores["tfidf"] = classification_metrics(
                y_true, tfidf_predictions(train["text"], train["label"].map(label2id).to_numpy(), test_texts))
        names = np.asarray(labels)
        return self.evaluation(label_counts(y_true, y_pred, labels), test=classification_metrics(y_true, y_pred),
                               baselines=scores, per_class=per_class(y_true, y_pred, labels),
                               actual=list(names[y_true]), predicted=list(names[y_pred]), classes=labels)

    def predictor(self, path: Path, meta: dict):
        """Raw texts in; a DataFrame of label, score (its probability), truncated (the text had more than max_length
        tokens and only its first max_length were read) and prob_<label> columns out; no texts, no rows."""
        import torch

        from stages.modeling import encode_cut, predict_logits

        model, tokenizer, device = self.load_for_serving(path)
        labels = np.asarray(meta["labels"])

        def predict(texts: list[str]) -> pd.DataFrame:
            seqs, truncated = encode_cut(tokenizer, texts, meta["max_length"])
            logits = predict_logits(model, seqs, 64, tokenizer.pad_token_id, device)
            probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
            out = pd.DataFrame({"label": labels[probs.argmax(-1)], "score": probs.max(-1), "truncated": truncated})
            for i, name in enumerate(labels):
                out[f"prob_{name}"] = probs[:, i]
            return out
        return predict

    def example_output(self, labels: list[str]):
        return pd.DataFrame({"label": labels[:1], "score": [0.5], "truncated": [False]}
                            | {f"prob_{n}": [0.5] for n in labels})
