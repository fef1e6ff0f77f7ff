"""Multi-label classification: any number of labels per text (tags, topics, emotions), one sigmoid per label.

- Input: the label column holds a list (JSONL/Parquet/HF Sequence) or a string joined by `ingest.label_separator`;
  label names, or integer ids named by `ingest.label_names`. A row with no label means "none of these": kept and
  counted (`ingest.allow_no_label: false` makes it an error).
- Splits: each row is stratified by its rarest label (over the whole source; rows without a label form their own
  stratum), then cut by the seeded text hash as every task is. This approximates iterative stratification (Sechidis
  et al., 2011): rare labels get their share in every split, and the test split stays stable when rows are added.
- Clean compares label *sets*: the same text with another set is a conflict, with the same set a duplicate.
- Training: BCE with logits, computed by the HF head (`problem_type="multi_label_classification"`); after training,
  probability thresholds are tuned on the validation split (per label, or one global; `finetune.threshold`) and
  saved in pipeline.json, so evaluate and serving use them.
- Metrics: micro/macro/weighted/samples F1, subset accuracy, Hamming loss, label cardinality; per-label P/R/F1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.io import PipelineError
from stages.labelsets import check_label_sets, label_key, multi_hot, select_label_lists
from stages.params import AugmentParams, CleanParams, FinetuneParams, IngestParams
from stages.splits import assemble, prepare
from stages.tasks.base import EvalInputs, Evaluation, Ingested
from stages.tasks.sequence import SequenceClassification, frozen_embeddings, probe_texts
from stages.tasks.sequence_ingest import read_source
from stages.textclean import clean_files

NONE = "(none)"  # the confusion view's "no label" row/column
GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # thresholds tried when tuning on validation


def tune_thresholds(y: np.ndarray, probs: np.ndarray, rule) -> np.ndarray:
    """One threshold per label. 'per_label': each label's best F1 on (y, probs) over GRID (the lowest on ties; a label
    with no positive here takes the global one); 'global': the one grid value with the best macro-F1; a number: it."""
    if not isinstance(rule, str):
        return np.full(y.shape[1], float(rule))
    pred = probs[None] >= GRID[:, None, None]  # (thresholds, rows, labels)
    tp, pos = (pred & (y[None] > 0)).sum(1), y.sum(0)
    f1 = 2 * tp / np.maximum(pred.sum(1) + pos[None], 1)  # (thresholds, labels)
    best_global = GRID[int(f1.mean(1).argmax())]
    if rule == "global":
        return np.full(y.shape[1], best_global)
    return np.where(pos > 0, GRID[f1.argmax(0)], best_global)


def multilabel_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, hamming_loss, precision_recall_fscore_support

    out = {"accuracy": float(accuracy_score(y, pred)), "hamming_loss": float(hamming_loss(y, pred))}
    for avg in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        out |= {f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)}
    return out | {"label_cardinality_true": float(y.sum(1).mean()), "label_cardinality_pred": float(pred.sum(1).mean())}


def set_counts(y: np.ndarray, pred: np.ndarray, labels: list[str]):
    """Per row and label, tp/fp/fn of the label sets: what register's gate resamples."""
    from stages.gate import Counts

    t, q = y > 0, pred > 0
    return Counts(np.stack([t & q, ~t & q, t & ~q], axis=1).astype(np.int32), tuple(labels))


def per_label(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> list[dict]:
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    return [{"label": n, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, n in enumerate(labels)]


def confusion_pairs(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> tuple[list[str], list[str]]:
    """Per-label confusion: for each row and label in truth or prediction, (label | NONE, label | NONE) — the
    diagonal counts hits, a NONE column misses, a NONE row false alarms; a row with nothing on either side counts once
    as (NONE, NONE)."""
    actual, predicted = [], []
    for t, q in zip(y > 0, pred > 0):
        for i in np.flatnonzero(t | q):
            actual.append(labels[i] if t[i] else NONE)
            predicted.append(labels[i] if q[i] else NONE)
        if not (t.any() or q.any()):
            actual.append(NONE)
            predicted.append(NONE)
    return actual, predicted


def _multi_hot_feature():
    import datasets

    return datasets.List(datasets.Value("float32"))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class MultiLabelClassification(SequenceClassification):
    name = "multilabel_classification"
    metrics = ("f1_macro", "f1_micro", "f1_weighted", "f1_samples", "accuracy", "loss")
    gate_metrics = {"f1_macro": "f1_macro", "f1_micro": "f1_micro", "f1_weighted": "f1_weighted", "accuracy": "exact"}
    macro_over_all = True  # sklearn's macro over label-indicator columns counts every label
    examples = ["I love this, thank you so much!", "This is scary and sad."]
    problem_type = "multi_label_classification"

    def read(self, p: IngestParams):
        if p.source.startswith("demo:"):
            raise PipelineError(f"ingest.source '{p.source}': the demos are single-label (sequence_classification); "
                                f"multilabel_classification reads a CSV/TSV/JSONL/Parquet file or hf:<name>")
        return read_source(p, select_label_lists)

    def ingest(self, source, p: IngestParams) -> Ingested:
        frames, report = prepare(source[0], p)
        names = source[1] or p.label_names
        if names is None:
            found = {x for f in frames.values() for row in f["label"] for x in row}
            names = sorted(found, key=int) if found and all(x.lstrip("-").isdigit() for x in found) else sorted(found)
        frames = {k: f.assign(label=f["label"].map(list)) for k, f in frames.items()}
        counts = pd.Series([x for f in frames.values() for row in f["label"] for x in row]).value_counts()
        rank = {n: (counts.get(n, 0), n) for n in names}  # rarest first; ties by name: same strata every run

        def stratum(row: list[str]) -> str:
            return min(row, key=rank.__getitem__) if row else NONE
        frames = {k: f.assign(_stratum=f["label"].map(stratum)) for k, f in frames.items()}
        splits = {s: df.drop(columns="_stratum") for s, df in assemble(frames, p, by="_stratum").items()}
        check_label_sets(splits, source=p.source)
        summary = {s: {"rows": len(df), "no_label": int((df["label"].map(len) == 0).sum()),
                       "labels_per_row": round(float(df["label"].map(len).mean()), 3) if len(df) else 0.0,
                       "labels": pd.Series([x for row in df["label"] for x in row]).value_counts().sort_index().to_dict()}
                   for s, df in splits.items()}
        return Ingested(splits, list(names), summary, report)

    def drift_view(self, df: pd.DataFrame) -> tuple[list[str], list[str]]:
        """Each label of each row (a row without a label adds none)."""
        return df["text"].astype(str).tolist(), [str(x) for labels in df["label"] for x in labels]

    def clean(self, in_dir: Path, out_dir: Path, p: CleanParams) -> dict:
        return clean_files(in_dir, out_dir, p, label_key, check_label_sets)

    def augment(self, train: pd.DataFrame, p: AugmentParams, synonyms) -> tuple[pd.DataFrame, dict]:
        return super().augment(train.assign(label=train["label"].map(list)), p, synonyms)

    def label_codec(self):
        """A multi-hot float vector per text (BCE's targets); the label key for the fingerprint."""
        from stages.texttok import LabelCodec

        return LabelCodec(_multi_hot_feature, multi_hot, label_key)

    def collate(self, targets: list, idx: np.ndarray, width: int):
        import torch

        return torch.as_tensor(np.asarray([targets[i] for i in idx], np.float32))

    def balanced_weights(self, split, n_labels: int) -> np.ndarray:
        """BCE's pos_weight per label: negatives / positives (1.0 for a label with no positive row)."""
        import pyarrow.compute as pc

        y = pc.list_flatten(self.label_column(split)).to_numpy().reshape(-1, n_labels)
        pos = y.sum(0)
        return np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 1.0)

    def class_loss(self, weights):
        """BCE with logits, `weights` as pos_weight (a positive of label j counts weights[j] times)."""
        import torch.nn.functional as F

        def loss(logits, labels):
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weights.to(logits.device))
        return loss

    def _probs(self, model, split, p: FinetuneParams, pad_id: int, device, dtype=None):
        from stages.modeling import run_model

        targets = list(split["label"])
        logits, loss = run_model(model, list(split["input_ids"]), p.eval_batch_size, pad_id, device, dtype, targets,
                                 self.collate)
        return np.asarray(targets, np.float32), sigmoid(logits), loss

    def validator(self, split, labels: list[str], p: FinetuneParams, pad_id: int, device):
        """Metrics at the thresholds `finetune.threshold` would pick on this split (what the saved model will use)."""
        def validate(model, dtype) -> dict[str, float]:
            y, probs, loss = self._probs(model, split, p, pad_id, device, dtype)
            return {"loss": loss} | multilabel_metrics(y, probs >= tune_thresholds(y, probs, p.threshold))
        return validate

    def model_extras(self, model, split, labels: list[str], p: FinetuneParams, pad_id: int, device) -> dict:
        y, probs, _ = self._probs(model, split, p, pad_id, device)
        rule = p.threshold if isinstance(p.threshold, str) else "fixed"
        return {"thresholds": [float(t) for t in tune_thresholds(y, probs, p.threshold)], "threshold_rule": rule}

    def evaluate(self, inputs: EvalInputs, baselines: list[str], batch_size: int, probe_rows: int) -> Evaluation:
        from stages.modeling import predict_logits

        labels, test, train = inputs.labels, inputs.tokenized["test"], inputs.tokenized["train"]
        y = np.asarray(test["label"], np.float32)
        probs = sigmoid(predict_logits(inputs.model, list(test["input_ids"]), batch_size, inputs.pad_id, inputs.device,
                                       what="test split, fine-tuned model"))
        pred = probs >= np.asarray(inputs.meta["thresholds"])
        scores = {}
        if "majority" in baselines:  # each label on when it is on in most train rows (usually: nothing)
            on = np.asarray(train["label"], np.float32).mean(0) > 0.5
            scores["majority"] = multilabel_metrics(y, np.broadcast_to(on, y.shape))
        texts = probe_texts(inputs, probe_rows) if {"frozen_probe", "tfidf"} & set(baselines) else None
        label2id = {n: i for i, n in enumerate(labels)}
        if "frozen_probe" in baselines:  # one logistic regression per label on frozen, mean-pooled vectors
            from stages.baselines import one_vs_rest, probe_predictions

            train_x, train_y, test_x = frozen_embeddings(inputs, texts, batch_size)
            scores["frozen_probe"] = multilabel_metrics(y, one_vs_rest(
                lambda col: probe_predictions(train_x, col, test_x), np.asarray(multi_hot(train_y, label2id)), len(y)))
        if "tfidf" in baselines:  # one logistic regression per label on TF-IDF character n-grams
            from stages.baselines import tfidf_predictions

            train, test_texts = texts
            hot = np.asarray(multi_hot(train["label"], label2id))
            scores["tfidf"] = multilabel_metrics(y, tfidf_predictions(train["text"], hot, test_texts))
        actual, predicted = confusion_pairs(y, pred, labels)
        return self.evaluation(set_counts(y, pred, labels), test=multilabel_metrics(y, pred), baselines=scores,
                               per_class=per_label(y, pred, labels), actual=actual, predicted=predicted,
                               classes=list(labels) + [NONE],
                               extra={"thresholds": dict(zip(labels, inputs.meta["thresholds"]))})

    def predictor(self, path: Path, meta: dict):
        """Raw texts in; a DataFrame out: `labels` (the names over their threshold, most probable first), `scores`
        (their probabilities), `truncated` (the text had more than max_length tokens and only its first max_length
        were read) and prob_<label> for every label; no texts, no rows."""
        from stages.modeling import encode_cut, predict_logits

        model, tokenizer, device = self.load_for_serving(path)
        names, thresholds = np.asarray(meta["labels"]), np.asarray(meta["thresholds"])

        def predict(texts: list[str]) -> pd.DataFrame:
            seqs, truncated = encode_cut(tokenizer, texts, meta["max_length"])
            probs = sigmoid(predict_logits(model, seqs, 64, tokenizer.pad_token_id, device))
            on = [np.flatnonzero(row >= thresholds) for row in probs]
            order = [i[np.argsort(-row[i], kind="stable")] for i, row in zip(on, probs)]
            out = pd.DataFrame({"labels": [names[i].tolist() for i in order],
                                "scores": [[float(x) for x in row[i]] for i, row in zip(order, probs)],
                                "truncated": truncated})
            for i, n in enumerate(names):
                out[f"prob_{n}"] = probs[:, i]
            return out
        return predict

    def example_output(self, labels: list[str]):
        return pd.DataFrame({"labels": [labels[:1]], "scores": [[0.9]], "truncated": [False]}
                            | {f"prob_{n}": [0.5] for n in labels})
