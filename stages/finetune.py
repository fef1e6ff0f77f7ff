"""Fine-tune the pretrained encoder with the task's head on the tokenized train split.

Writes `models/finetuned/` (HF folder: safetensors, tokenizer, label map, pipeline.json),
`reports/train.json` (summary), `reports/train_curves.csv` (per epoch), `reports/train_steps.csv` (per optimizer step:
loss and learning rate) and the MLflow run id that evaluate and register add to. The run gets a name a person can
tell apart and the splits as its dataset inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stages import lineage, tasks, tracking
from stages.io import PipelineError, atomic_dir, read_json, write_json
from stages.modeling import load_tokenizer, pick_device
from stages.params import FinetuneParams
from stages.tasks.base import Task
from stages.training import Callbacks, TrainResult, train

IN, OUT, TEXTS = Path("data/tokenized"), Path("models/finetuned"), Path("data/augmented")  # TEXTS: what was tokenized
SUMMARY, CURVES, STEPS = Path("reports/train.json"), Path("reports/train_curves.csv"), Path("reports/train_steps.csv")
PIPELINE_FILE = "pipeline.json"  # what serving needs beyond the HF folder: task, max_length, labels, task extras
REPORTS = ("reports/clean.json", "reports/tokenize.json", "reports/augment.json")
log = logging.getLogger(__name__)


@dataclass
class Finetuned:
    result: TrainResult
    metric: str  # the validation metric the best epoch was chosen by
    extras: dict  # the task's additions to pipeline.json (e.g. thresholds)


def finetune(task: Task, model, dd, labels: list[str], p: FinetuneParams, pad_id: int, device,
             callbacks: Callbacks) -> Finetuned:
    """Pure core: train `model` in place on dd['train'], choosing the epoch on dd['validation']."""
    seqs, targets = task.train_rows(dd["train"])
    validate = task.validator(dd["validation"], labels, p, pad_id, device)
    metric = task.metric(p.best_metric)
    result = train(model, seqs, targets, task.collate, validate, p, metric, pad_id, device, callbacks)
    return Finetuned(result, metric, task.model_extras(model, dd["validation"], labels, p, pad_id, device))


def data_tags(settings: dict) -> dict[str, str]:
    """What tokenize found worth seeing beside the run: [UNK] share per split, its warnings, how serving splits words."""
    tags = {f"tokenize.unk_share.{name}": str(share) for name, share in settings.get("unk_share", {}).items()}
    tags |= {f"serving.{k}": str(v) for k, v in settings.get("serving", {}).items()}
    return tags | ({"tokenize.warnings": " | ".join(settings["warnings"])[:5000]} if settings.get("warnings") else {})


def main() -> None:
    import datasets
    import torch
    from transformers import set_seed

    params, task = tasks.load()
    p = params.finetune
    if not (IN / "dataset_dict.json").exists():
        raise PipelineError(f"{IN}: no tokenized data (run dvc repro tokenize)")
    dd = datasets.load_from_disk(str(IN))
    labels = read_json(IN / "labels.json")["names"]
    settings = read_json(IN / "settings.json")
    task.require_same(settings.get("task"), f"{IN}: tokenized data", "run dvc repro")
    device = pick_device(p.device)
    set_seed(p.seed)  # before the model: the new head's initial weights come from this seed
    tokenizer = load_tokenizer(params.model.name)
    model = task.load_model(params.model.name, labels)
    log.info("%s on %s: %d train, %d validation rows, %d labels", params.model.name, device,
             len(dd["train"]), len(dd["validation"]), len(labels))
    run_id = tracking.start_run(params.tracking.experiment, params.model_dump(mode="json"),
                                lineage.run_name(params.model.name, task.name))
    try:
        tracking.log_datasets(TEXTS, {"train": "training", "validation": "validation", "test": "test"},
                              params.ingest.source)
        tracking.set_tags(data_tags(settings))
        out = finetune(task, model, dd, labels, p, tokenizer.pad_token_id, device, tracking.EpochLogger())
        result = out.result
        with atomic_dir(OUT) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / PIPELINE_FILE, {"task": task.name, "max_length": settings["max_length"], "labels": labels,
                                             "base_model": params.model.name, "torch": torch.__version__}
                       | settings.get("serving", {}) | out.extras)
        summary = result.summary | {"device": str(device), "stopped_early": result.stopped_early}
        pd.DataFrame(result.history).to_csv(CURVES, index=False)
        pd.DataFrame(result.steps).to_csv(STEPS, index=False)
        write_json(SUMMARY, summary)
        # The per-epoch curves (speed included) are the run's charts; of the summary only the number runs are
        # compared by (the rest is in reports/train.json): each number logged is one more single-point chart.
        tracking.log_metrics({f"best_val_{out.metric}": float(result.best_value)})
        tracking.log_artifacts([r for r in (*REPORTS, str(SUMMARY), str(CURVES), str(STEPS)) if Path(r).exists()],
                               "reports")
        tracking.save_run_file(run_id)
    except BaseException:
        tracking.end_run("FAILED")
        raise
    tracking.end_run()
    log.info("best epoch %d (val %s %.4f), %.1f samples/s, padding %.1f%%, run %s", result.best_epoch,
             out.metric, result.best_value, summary["train_samples_per_s"], 100 * summary["padding_share"], run_id)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "finetune")
