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
from stages.io import PipelineError, check_labels, iter_split, split_paths
from stages.params import AugmentParams, CleanParams, FinetuneParams, IngestParams, TokenizeParams
from stages.readers import DEMO_LABEL_NAMES, read_demo, read_table
from stages.splits import assemble, missing, prepare, read_frames, require_columns, select_texts
from stages.tasks.base import EvalInputs, Evaluation, Frames, Ingested, Task
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


def select_columns(df: pd.DataFrame, p: IngestParams, where: str, names: list[str] | None = None) -> pd.DataFrame:
    """Keep the text and label columns, as `text`/`label`; missing columns are errors, and so are missing labels
    (ingest.missing_labels: fail; with drop they become None, for `prepare` to drop and count) and texts that are not
    strings (`select_texts`). (Label names, if the source has them, are applied by `ingest`.)"""
    require_columns(df, p, ("text_column", "label_column"), where)
    labels = df[p.label_column].reset_index(drop=True)
    gone = missing(labels)
    if gone.any() and p.missing_labels == "fail":
        r = int(gone.to_numpy().argmax())
        value = labels.iat[r]
        shown = f" '{value.strip()}'" if isinstance(value, str) and value.strip() else ""
        raise PipelineError(f"{where}: row {r + 1}, column '{p.label_column}': missing label{shown} "
                            f"({int(gone.sum())} rows without a label); set ingest.missing_labels: drop to drop them "
                            f"(counted)")
    labels = class_labels(labels, gone, p.label_column, where)
    return pd.DataFrame({"text": select_texts(df, p, where), "label": labels})


def _label_kind(v) -> str | None:
    """None for a class name or an integer id (7.0 included: an int column with a null in it reads as floats)."""
    if isinstance(v, str | int | np.integer | np.bool_):
        return None
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return None
    if isinstance(v, float | np.floating):
        return "a number with a fraction is a regression target, not a class"
    if isinstance(v, list | tuple | np.ndarray):
        return "a list of labels per row is task multilabel_classification"
    return "a label is a class name or an integer id"


def class_labels(labels: pd.Series, gone: pd.Series, column: str, where: str) -> pd.Series:
    """Labels that are class names or integer ids (integral floats become ints), as objects, the missing ones
    (`gone`) None; anything else (a fraction, a list, a struct) is an error naming file, row, column and dtype."""
    out = labels.astype(object).where(~gone.to_numpy(), None)
    if labels.dtype.kind in "iub" or isinstance(labels.dtype, pd.StringDtype):
        return out
    kind = out.map(_label_kind).where(~gone.to_numpy(), None)
    if kind.notna().any():
        r = int(kind.notna().to_numpy().argmax())
        v = out.iat[r]
        raise PipelineError(f"{where}: row {r + 1}, column '{column}': label {str(v)[:40]!r} is a {type(v).__name__} "
                            f"(column dtype {labels.dtype}); {kind.iat[r]}")
    # a list, not Series.map: map would turn ints beside a None back into floats
    return pd.Series([int(v) if isinstance(v, float | np.floating) else v for v in out], dtype=object)


def _where(idx) -> str:
    """'train part, row 7' for a (part, row) index of stacked frames; 'row 7' for a plain one."""
    part, row = idx if isinstance(idx, tuple) else (None, idx)
    return (f"{part} part, " if part else "") + f"row {int(row) + 1}, column 'label'"


def label_names(labels: pd.Series, given: list[str] | None) -> tuple[pd.Series, list[str]]:
    """Map raw labels (strings or integers) to names; returns (names per row, names in id order)."""
    as_str = labels.astype(str).str.strip()
    is_int = as_str.str.fullmatch(r"-?\d+").all()
    if given:
        if is_int:
            ids = as_str.astype(int)
            bad = ~ids.between(0, len(given) - 1)
            if bad.any():
                raise PipelineError(f"{_where(bad.idxmax())}: label {ids[bad].iloc[0]} outside "
                                    f"0..{len(given) - 1} (ingest.label_names has {len(given)} names)")
            return ids.map(dict(enumerate(given))), list(given)
        unknown = sorted(set(as_str) - set(given))
        if unknown:
            raise PipelineError(f"labels {unknown[:5]} are not in ingest.label_names {given}")
        return as_str, list(given)
    uniques = sorted(set(as_str), key=int) if is_int else sorted(set(as_str))
    return as_str, uniques


def read_source(p: IngestParams, select=select_columns) -> tuple[Frames, list[str] | None]:
    """Shell: read whatever `ingest.source` names into raw frames (columns text, label), kept by `select`."""
    if p.source.startswith("demo:"):
        return {"all": read_demo(p.source.removeprefix("demo:"))}, p.label_names or DEMO_LABEL_NAMES
    return read_frames(p, lambda f: select(read_table(Path(f), p.format, p.encoding, p.separator), p, f),
                       lambda df, where, names: select(df, p, where, names), p.label_column)


def ingest(frames: Frames, p: IngestParams, names: list[str] | None = None) -> tuple[dict, list[str]]:
    """Pure core: {'all'} or {'train','validation'?,'test'?} frames → three splits + label names."""
    given = names or p.label_names
    # Name labels over all frames together so every split shares one id order.
    stacked = pd.concat(list(frames.values()), keys=list(frames), names=["part", "row"])
    named, label_list = label_names(stacked["label"], given)
    frames = {k: f.assign(label=named.loc[k].to_numpy()) for k, f in frames.items()}
    splits = assemble(frames, p)
    check_labels(splits, source=p.source, column=p.label_column,
                 files={"validation": p.validation_file, "test": p.test_file})
    return splits, label_list


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
        return Evaluation(classification_metrics(y_true, y_pred), scores, per_class(y_true, y_pred, labels),
                          list(names[y_true]), list(names[y_pred]), labels, units=len(y_true),
                          rescore=lambda idx: float(np.mean(y_true[idx] == y_pred[idx])))  # accuracy

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
