"""Evaluate the fine-tuned model on the test split, beside baselines that show what fine-tuning bought.

Sequence classification: accuracy, P/R/F1, confusion over labels. Token classification: entity-level
P/R/F1 (seqeval, default and strict IOB2), per type, token accuracy, and a word-level type confusion.

Writes `reports/metrics.json` (DVC metrics) and `reports/plots/` (confusion matrix PNG for MLflow,
confusion.csv and per_class.csv for `dvc plots`), and adds all of it to the pipeline's MLflow run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stages import tracking
from stages.baselines import majority_predictions, mean_pooled, probe_predictions
from stages.io import PipelineError, atomic_dir, read_json, read_splits, write_json
from stages.metrics import classification_metrics, confusion, per_class
from stages.modeling import load_classifier, load_encoder, load_tokenizer, pick_device, predict_logits
from stages.params import SEQUENCE_TASK, TOKEN_TASK, EvaluateParams, Params, load_params

TOKENIZED, CLEAN, MODEL = Path("data/tokenized"), Path("data/clean"), Path("models/finetuned")
METRICS, PLOTS = Path("reports/metrics.json"), Path("reports/plots")
log = logging.getLogger(__name__)


def confusion_png(cm: np.ndarray, labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    ax.imshow(cm, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="actual", title="Confusion matrix (test)")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def frozen_probe(params: Params, p: EvaluateParams, max_length: int, labels: list[str], device) -> np.ndarray:
    """Test predictions of a logistic regression on frozen, mean-pooled pretrained embeddings."""
    clean = read_splits(CLEAN)
    train = clean["train"].sample(frac=1.0, random_state=0).head(p.probe_max_train_rows)
    tokenizer = load_tokenizer(params.model.name)
    encoder = load_encoder(params.model.name).to(device)
    label2id = {n: i for i, n in enumerate(labels)}

    def embed(texts: pd.Series) -> np.ndarray:
        seqs = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        return mean_pooled(encoder, seqs, p.batch_size, tokenizer.pad_token_id, device)

    return probe_predictions(embed(train["text"]), train["label"].map(label2id).to_numpy(), embed(clean["test"]["text"]))


def evaluate_sequences(params: Params, tokenized, model, labels: list[str], max_length: int, pad_id: int, device):
    """Test metrics, baselines and per-class rows for sequence classification; plus (actual, predicted) names."""
    p = params.evaluate
    test, train_labels = tokenized["test"], np.asarray(tokenized["train"]["label"])
    y_true = np.asarray(test["label"])
    y_pred = predict_logits(model, list(test["input_ids"]), p.batch_size, pad_id, device).argmax(-1)
    metrics = {"test": classification_metrics(y_true, y_pred), "baselines": {}}
    if "majority" in p.baselines:
        metrics["baselines"]["majority"] = classification_metrics(y_true, majority_predictions(train_labels, len(y_true)))
    if "frozen_probe" in p.baselines:
        metrics["baselines"]["frozen_probe"] = classification_metrics(
            y_true, frozen_probe(params, p, max_length, labels, device))
    rows = per_class(y_true, y_pred, labels)
    names = np.asarray(labels)
    return metrics, rows, list(names[y_true]), list(names[y_pred]), labels


def evaluate_tokens(params: Params, tokenized, model, labels: list[str], pad_id: int, device):
    """Entity-level metrics (seqeval default and strict), baselines and per-type rows for token classification;
    plus word-level (actual type, predicted type) pairs."""
    from stages.entities import entity_scores, per_type, split_predictions, token_baselines, type_confusion

    p = params.evaluate
    y_true, y_pred, _ = split_predictions(model, tokenized["test"], labels, p.batch_size, pad_id, device)
    metrics = {"test": entity_scores(y_true, y_pred), "baselines": {}}
    encoder = load_encoder(params.model.name).to(device) if "frozen_probe" in p.baselines else None
    for name, pred in token_baselines(tokenized["train"], tokenized["test"], labels, p.baselines,
                                      p.probe_max_train_rows, encoder, p.batch_size, pad_id, device).items():
        metrics["baselines"][name] = entity_scores(y_true, pred)
    actual, predicted = type_confusion(y_true, y_pred)
    classes = sorted(set(actual) | set(predicted))
    index = {c: i for i, c in enumerate(classes)}
    cm = confusion(np.asarray([index[a] for a in actual]), np.asarray([index[x] for x in predicted]), len(classes))
    # words: actual type → predicted type
    metrics["type_confusion"] = {a: {c: int(cm[i, j]) for j, c in enumerate(classes)} for i, a in enumerate(classes)}
    return metrics, per_type(y_true, y_pred), actual, predicted, classes


def main() -> None:
    import datasets

    params = load_params()
    tokenized = datasets.load_from_disk(str(TOKENIZED))
    pipeline = read_json(MODEL / "pipeline.json")
    labels, task = pipeline["labels"], pipeline.get("task", SEQUENCE_TASK)
    if task != params.task:
        raise PipelineError(f"{MODEL}: trained for {task}, but params.yaml task is {params.task} (run dvc repro)")
    device = pick_device(params.finetune.device)
    model = load_classifier(str(MODEL), task=task).to(device)
    pad_id = load_tokenizer(str(MODEL)).pad_token_id
    if task == TOKEN_TASK:
        metrics, rows, actual, predicted, classes = evaluate_tokens(params, tokenized, model, labels, pad_id, device)
    else:
        metrics, rows, actual, predicted, classes = evaluate_sequences(params, tokenized, model, labels,
                                                                      pipeline["max_length"], pad_id, device)
    primary = params.metric("auto")  # accuracy, or entity F1
    metrics[f"gain_{primary}"] = {name: round(metrics["test"][primary] - b[primary], 4)
                                  for name, b in metrics["baselines"].items()}
    metrics["per_class"] = {r["label"]: {k: v for k, v in r.items() if k != "label"} for r in rows}
    with atomic_dir(PLOTS) as tmp:
        pd.DataFrame({"actual": actual, "predicted": predicted}).to_csv(tmp / "confusion.csv", index=False)
        pd.DataFrame(rows).to_csv(tmp / "per_class.csv", index=False)
        index = {c: i for i, c in enumerate(classes)}
        cm = confusion(np.asarray([index[a] for a in actual]), np.asarray([index[x] for x in predicted]), len(classes))
        confusion_png(cm, classes, tmp / "confusion_matrix.png")
    write_json(METRICS, metrics)
    with tracking.resume_run() as run:
        import mlflow

        flat = {f"test_{k}": v for k, v in metrics["test"].items()}
        flat |= {f"baseline_{n}_{k}": v for n, b in metrics["baselines"].items() for k, v in b.items()}
        flat |= {f"test_f1_{label}": c["f1"] for label, c in metrics["per_class"].items()}
        mlflow.log_metrics(flat)
        mlflow.log_artifacts(str(PLOTS), artifact_path="plots")
        mlflow.log_artifact(str(METRICS), artifact_path="reports")
    log.info("test %s %.4f, f1_macro %.4f; baselines %s; run %s", primary, metrics["test"][primary],
             metrics["test"]["f1_macro"], {n: round(b[primary], 4) for n, b in metrics["baselines"].items()},
             run.info.run_id)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "evaluate")
