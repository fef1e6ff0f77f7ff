"""Fine-tune the pretrained encoder with a sequence or token classification head on the tokenized train split.

Writes `models/finetuned/` (HF folder: safetensors, tokenizer, label map, pipeline.json),
`reports/train.json` (summary metrics), `reports/train_curves.csv` (per-epoch curves) and the
MLflow run id that evaluate and register add to.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from stages import tracking
from stages.align import IGNORE
from stages.io import PipelineError, atomic_dir, read_json, write_json
from stages.modeling import load_classifier, load_tokenizer, pick_device
from stages.params import TOKEN_TASK, load_params
from stages.training import sequence_validator, train

IN, OUT = Path("data/tokenized"), Path("models/finetuned")
SUMMARY, CURVES = Path("reports/train.json"), Path("reports/train_curves.csv")
PIPELINE_FILE = "pipeline.json"  # what serving needs beyond the HF folder: task, max_length, labels
log = logging.getLogger(__name__)


def main() -> None:
    import datasets
    import torch
    from transformers import set_seed

    params = load_params()
    p = params.finetune
    if not (IN / "dataset_dict.json").exists():
        raise PipelineError(f"{IN}: no tokenized data (run dvc repro tokenize)")
    dd = datasets.load_from_disk(str(IN))
    labels = read_json(IN / "labels.json")["names"]
    settings = read_json(IN / "settings.json")
    if settings.get("task", params.task) != params.task:
        raise PipelineError(f"{IN}: tokenized for {settings['task']}, but params.yaml task is {params.task} (run dvc repro)")
    max_length = settings["max_length"]
    device = pick_device(p.device)
    set_seed(p.seed)  # before the model: the new head's initial weights come from this seed
    tokenizer = load_tokenizer(params.model.name)
    model = load_classifier(params.model.name, labels, params.task)
    metric = params.metric(p.best_metric)
    log.info("%s on %s: %d train, %d validation rows, %d labels", params.model.name, device,
             len(dd["train"]), len(dd["validation"]), len(labels))
    run_id = tracking.start_run(params.tracking.experiment, params.model_dump(mode="json"))
    try:
        # Plain lists once: a datasets Column reads Arrow on every index.
        pad, val = tokenizer.pad_token_id, dd["validation"]
        seqs, targets = list(dd["train"]["input_ids"]), list(dd["train"]["label"])
        if params.task == TOKEN_TASK:
            from stages.entities import token_validator

            validate = token_validator(val, labels, p.eval_batch_size, pad, device)
            # a window whose words all lack sub-tokens carries no label: nothing to learn from it
            keep = [i for i, t in enumerate(targets) if any(x != IGNORE for x in t)]
            seqs, targets = [seqs[i] for i in keep], [targets[i] for i in keep]
        else:
            validate = sequence_validator(list(val["input_ids"]), list(val["label"]), p.eval_batch_size, pad, device)
        result = train(model, seqs, targets, validate, p, metric, pad, device, tracking.EpochLogger())
        with atomic_dir(OUT) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / PIPELINE_FILE, {"task": params.task, "max_length": max_length, "labels": labels,
                                             "base_model": params.model.name, "torch": torch.__version__})
        summary = result.summary | {"device": str(device), "stopped_early": result.stopped_early}
        pd.DataFrame(result.history).to_csv(CURVES, index=False)
        write_json(SUMMARY, summary)
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})
        for report in ("reports/clean.json", "reports/tokenize.json", "reports/augment.json", str(CURVES)):
            if Path(report).exists():
                mlflow.log_artifact(report, artifact_path="reports")
        tracking.save_run_file(run_id)
    except BaseException:
        tracking.end_run("FAILED")
        raise
    tracking.end_run()
    log.info("best epoch %d (val %s %.4f), %.1f samples/s, padding %.1f%%, run %s", result.best_epoch,
             metric, result.best_value, summary["train_samples_per_s"], 100 * summary["padding_share"], run_id)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "finetune")
