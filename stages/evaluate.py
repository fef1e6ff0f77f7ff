"""Evaluate the fine-tuned model on the test split, beside baselines that show what fine-tuning bought.

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
from stages.io import atomic_dir, read_json, read_splits, write_json
from stages.metrics import classification_metrics, confusion, per_class
from stages.modeling import load_classifier, load_encoder, load_tokenizer, pick_device, predict_logits
from stages.params import EvaluateParams, Params, load_params

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


def main() -> None:
    import datasets

    params = load_params()
    p = params.evaluate
    tokenized = datasets.load_from_disk(str(TOKENIZED))
    test, train_labels = tokenized["test"], np.asarray(tokenized["train"]["label"])
    pipeline = read_json(MODEL / "pipeline.json")
    labels = pipeline["labels"]
    device = pick_device(params.finetune.device)
    model = load_classifier(str(MODEL)).to(device)
    y_true = np.asarray(test["label"])
    y_pred = predict_logits(model, list(test["input_ids"]), p.batch_size, load_tokenizer(str(MODEL)).pad_token_id,
                            device).argmax(-1)
    metrics = {"test": classification_metrics(y_true, y_pred), "baselines": {}}
    if "majority" in p.baselines:
        metrics["baselines"]["majority"] = classification_metrics(y_true, majority_predictions(train_labels, len(y_true)))
    if "frozen_probe" in p.baselines:
        metrics["baselines"]["frozen_probe"] = classification_metrics(
            y_true, frozen_probe(params, p, pipeline["max_length"], labels, device))
    metrics["gain_accuracy"] = {name: round(metrics["test"]["accuracy"] - b["accuracy"], 4)
                                for name, b in metrics["baselines"].items()}
    rows = per_class(y_true, y_pred, labels)
    metrics["per_class"] = {r["label"]: {k: v for k, v in r.items() if k != "label"} for r in rows}
    with atomic_dir(PLOTS) as tmp:
        pd.DataFrame({"actual": np.asarray(labels)[y_true], "predicted": np.asarray(labels)[y_pred]}).to_csv(
            tmp / "confusion.csv", index=False)
        pd.DataFrame(rows).to_csv(tmp / "per_class.csv", index=False)
        confusion_png(confusion(y_true, y_pred, len(labels)), labels, tmp / "confusion_matrix.png")
    write_json(METRICS, metrics)
    with tracking.resume_run() as run:
        import mlflow

        flat = {f"test_{k}": v for k, v in metrics["test"].items()}
        flat |= {f"baseline_{n}_{k}": v for n, b in metrics["baselines"].items() for k, v in b.items()}
        flat |= {f"test_f1_{label}": c["f1"] for label, c in metrics["per_class"].items()}
        mlflow.log_metrics(flat)
        mlflow.log_artifacts(str(PLOTS), artifact_path="plots")
        mlflow.log_artifact(str(METRICS), artifact_path="reports")
    log.info("test accuracy %.4f, f1_macro %.4f; baselines %s; run %s", metrics["test"]["accuracy"],
             metrics["test"]["f1_macro"], {n: round(b["accuracy"], 4) for n, b in metrics["baselines"].items()},
             run.info.run_id)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "evaluate")
