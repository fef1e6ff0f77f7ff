"""Evaluate the fine-tuned model on the test split, beside baselines that show what fine-tuning bought.

What is scored is the task's (stages.tasks): accuracy and P/R/F1 with a confusion over labels for texts; entity-level
P/R/F1 (seqeval) per type with a word-level type confusion for NER; micro/macro F1, subset accuracy and a per-label
confusion for multi-label.

Writes `reports/test_counts.npz` (per test unit and class: tp/fp/fn, what register's gate resamples),
`reports/scores.json` (the headline numbers: DVC's metrics, so `dvc metrics show` / `dvc exp show` print a
table that fits a terminal), `reports/metrics.json` (everything) and `reports/plots/` (confusion matrix PNG for MLflow,
confusion.csv and per_class.csv for `dvc plots`), and adds them to the pipeline's MLflow run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stages import tasks, tracking
from stages.champion import COUNTS, save_counts, split_hash
from stages.io import atomic_dir, read_json, read_splits, write_json
from stages.loading import Trust, load_encoder, load_tokenizer
from stages.modeling import pick_device
from stages.params import EvaluateParams
from stages.tasks.base import EvalInputs, Evaluation, Task

TOKENIZED, CLEAN, MODEL = Path("data/tokenized"), Path("data/clean"), Path("models/finetuned")
METRICS, SCORES, PLOTS = Path("reports/metrics.json"), Path("reports/scores.json"), Path("reports/plots")
log = logging.getLogger(__name__)


def confusion(actual: list[str], predicted: list[str], classes: list[str]) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(actual, predicted, labels=classes)


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


def bootstrap_ci(rescore, n: int, samples: int, seed: int = 0) -> list[float] | None:
    """95% percentile interval of a metric over `samples` resamples (with replacement) of the n test units."""
    if not samples or not n or rescore is None:
        return None
    rng = np.random.default_rng(seed)
    values = [rescore(rng.integers(0, n, n)) for _ in range(samples)]
    return [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]


def reliability(ev: Evaluation, metric: str, unit: str, p: EvaluateParams) -> dict:
    """Pure core: is the test split large enough for its score to mean anything? The size, the smallest class, the
    95% interval and, if not comparable, the reasons (register keeps such a version from the champion alias)."""
    reasons = []
    if ev.units < p.min_test_rows:
        reasons.append(f"the test split has {ev.units} {unit} (evaluate.min_test_rows: {p.min_test_rows})")
    small = sorted((r["support"], r["label"]) for r in ev.per_class if r["support"] < p.min_test_per_class)
    if small:
        shown = ", ".join(f"'{label}' {n}" for n, label in small[:5]) + (", ..." if len(small) > 5 else "")
        reasons.append(f"{len(small)} class(es) with fewer than {p.min_test_per_class} test examples "
                       f"(evaluate.min_test_per_class): {shown}")
    smallest = min(ev.per_class, key=lambda r: r["support"], default=None)
    return {f"test_{unit}": ev.units, "smallest_class": smallest and {"label": smallest["label"],
                                                                        "support": int(smallest["support"])},
            "ci95": {metric: bootstrap_ci(ev.rescore, ev.units, p.bootstrap_samples)},
            "comparable": not reasons, "reasons": reasons}


def evaluate(task: Task, inputs: EvalInputs, p: EvaluateParams) -> tuple[Evaluation, dict]:
    """Pure core: the task's evaluation, and metrics.json: test, its reliability, baselines, what fine-tuning gained
    over each baseline on the task's metric, per class, and the task's extras."""
    ev = task.evaluate(inputs, p.baselines, p.batch_size, p.probe_max_train_rows)
    primary = task.metric("auto")
    metrics = {"test": ev.test, "reliability": reliability(ev, primary, task.unit, p), "baselines": ev.baselines,
               f"gain_{primary}": {name: round(ev.test[primary] - b[primary], 4) for name, b in ev.baselines.items()},
               "per_class": {r["label"]: {k: v for k, v in r.items() if k != "label"} for r in ev.per_class}}
    return ev, metrics | ev.extra


def headline(metrics: dict, primary: str) -> dict[str, float]:
    """Pure core: the numbers runs are compared by: the test score with its 95% interval, macro-F1, and each
    baseline's score on the same metric. Per-class scores, the other averages and the reliability details stay in
    metrics.json and the plots."""
    test, ci = metrics["test"], metrics["reliability"]["ci95"][primary]
    out = {primary: test[primary]} | ({"ci95_low": ci[0], "ci95_high": ci[1]} if ci else {})
    if primary != "f1_macro" and "f1_macro" in test:
        out["f1_macro"] = test["f1_macro"]
    return out | {name: b[primary] for name, b in metrics["baselines"].items()}


def main() -> None:
    import datasets

    params, task = tasks.load()
    tracking.check_server()  # before data and model: a tracking server that is down fails in seconds
    tokenized = datasets.load_from_disk(str(TOKENIZED))
    meta = read_json(MODEL / "pipeline.json")
    task.require_same(meta.get("task"), f"{MODEL}: the model", "run dvc repro")
    device = pick_device(params.finetune.device)
    trust = Trust.of(params.model)
    model = task.load_model(str(MODEL), trust=trust).to(device)
    inputs = EvalInputs(model, tokenized, lambda: read_splits(CLEAN), meta,
                        load_tokenizer(str(MODEL), trust).pad_token_id, device,
                        lambda: load_encoder(params.model.name, trust), lambda: load_tokenizer(params.model.name, trust))
    log.info("scoring the test split: the fine-tuned model, then the baselines (%s)",
             ", ".join(params.evaluate.baselines) or "none")
    ev, metrics = evaluate(task, inputs, params.evaluate)
    primary = task.metric("auto")
    scores, per_class = headline(metrics, primary), pd.DataFrame(ev.per_class)
    with atomic_dir(PLOTS) as tmp:
        pd.DataFrame({"actual": ev.actual, "predicted": ev.predicted}).to_csv(tmp / "confusion.csv", index=False)
        per_class.to_csv(tmp / "per_class.csv", index=False)
        confusion_png(confusion(ev.actual, ev.predicted, ev.classes), ev.classes, tmp / "confusion_matrix.png")
    save_counts(COUNTS, ev.counts, split_hash(CLEAN))
    write_json(METRICS, metrics)
    write_json(SCORES, scores)
    rel = metrics["reliability"]
    with tracking.resume_run() as run:
        # MLflow draws a chart per metric: the test set's own metrics, the interval and the baselines' score are the
        # numbers to compare runs by; per-class scores go in as a table, the rest as reports/metrics.json.
        flat = {f"test_{k}": v for k, v in metrics["test"].items()}
        flat |= {f"test_{primary}_{k}": v for k, v in scores.items() if k.startswith("ci95")}
        flat |= {f"baseline_{n}_{primary}": b[primary] for n, b in metrics["baselines"].items()}
        tracking.log_metrics(flat | {f"test_{task.unit}": rel[f"test_{task.unit}"]})
        tracking.set_tags({"test.comparable": str(rel["comparable"]).lower()}
                          | ({"test.not_comparable_because": "; ".join(rel["reasons"])} if rel["reasons"] else {}))
        tracking.log_table(per_class, "per_class.json")
        tracking.log_artifacts([str(PLOTS)], "plots")
        tracking.log_artifacts([str(METRICS), str(SCORES)], "reports")
    ci = rel["ci95"][primary]
    log.info("test %s %.4f%s, f1_macro %.4f on %d %s; baselines %s; run %s", primary, metrics["test"][primary],
             f" (95% interval {ci[0]:.4f}-{ci[1]:.4f})" if ci else "", metrics["test"]["f1_macro"], ev.units, task.unit,
             {n: round(b[primary], 4) for n, b in metrics["baselines"].items()}, run.info.run_id)
    for reason in rel["reasons"]:
        log.warning("WARNING: test score not comparable: %s; register will not make this version champion", reason)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "evaluate")
