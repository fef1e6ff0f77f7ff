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
from stages.checkpoints import Checkpoints, stage_checkpoints
from stages.io import PipelineError, atomic_dir, read_json, write_json
from stages.launch import distributed_state, relaunch, tracked
from stages.loading import Trust, load_tokenizer
from stages.modeling import pick_device
from stages.params import FinetuneParams
from stages.pretrain import starting_point
from stages.strategies import Strategy, class_weights, parameter_counts, peak_memory_mb
from stages.tasks.base import Task
from stages.trackguard import stage_tags
from stages.training import Callbacks, NoCallbacks, TrainResult, train

IN, OUT, TEXTS = Path("data/tokenized"), Path("models/finetuned"), Path("data/augmented")  # TEXTS: what was tokenized
ADAPTER = Path("models/adapter")  # the unmerged peft adapter (lora/adalora/ia3) and strategy.json: its own small artifact
SUMMARY, CURVES, STEPS = Path("reports/train.json"), Path("reports/train_curves.csv"), Path("reports/train_steps.csv")
PIPELINE_FILE = "pipeline.json"  # what serving needs beyond the HF folder: task, max_length, labels, task extras
REPORTS = ("reports/clean.json", "reports/tokenize.json", "reports/augment.json")
log = logging.getLogger(__name__)


@dataclass
class Finetuned:
    result: TrainResult
    metric: str  # the validation metric the best epoch was chosen by
    extras: dict  # the task's additions to pipeline.json (e.g. thresholds)
    strategy: Strategy  # holds the trained model (adapters unmerged): .final() merges, .save_adapter() saves them
    counts: dict  # trainable / total parameters


def finetune(task: Task, model, dd, labels: list[str], p: FinetuneParams, pad_id: int, device,
             callbacks: Callbacks, checkpoints: Checkpoints | None = None) -> Finetuned:
    """Pure core: train `model` on dd['train'] by `finetune.strategy`, choosing the epoch on dd['validation']."""
    validate = task.validator(dd["validation"], labels, p, pad_id, device)
    metric = task.metric(p.best_metric)
    rows, strategy = task.train_rows(dd["train"]), Strategy(p)
    weights = class_weights(task, rows, labels, p.class_weights)
    result = train(model, rows, task.collate, validate, p, metric, pad_id, device, callbacks, checkpoints,
                   strategy=strategy, loss_fn=None if weights is None else task.class_loss(weights))
    trained = strategy.trained
    return Finetuned(result, metric, task.model_extras(trained, dd["validation"], labels, p, pad_id, device), strategy,
                     parameter_counts(trained))


def checkpoints_for(params, p: FinetuneParams, main: bool, start: dict[str, str] | None = None) -> Checkpoints:
    """This run's checkpoint folder (stages.checkpoints.stage_checkpoints): keyed by the tokenized data's bytes, the
    model, the pre-trained weights it starts from if any (`start`: stages.pretrain.starting_point's tags) and every
    param that shapes the weights."""
    return stage_checkpoints("finetune", IN, {"model": params.model.name, "task": params.task} | (start or {}), p, main)


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
    tracking.check_server()  # before torchrun, data and model: a tracking server that is down fails in seconds
    if (status := relaunch("stages.finetune", p.num_processes)) is not None:
        if status:
            raise PipelineError(f"finetune.num_processes {p.num_processes}: a process exited with status {status}")
        return
    if not (IN / "dataset_dict.json").exists():
        raise PipelineError(f"{IN}: no tokenized data (run dvc repro tokenize)")
    state = distributed_state(pick_device(p.device))  # pick_device: a one-line error when CUDA is asked for and missing
    if p.batch_size % state.num_processes:
        raise PipelineError(f"finetune.batch_size {p.batch_size}: not divisible by the {state.num_processes} "
                            "processes (each trains on an equal share of the global batch)")
    dd = datasets.load_from_disk(str(IN))
    labels = read_json(IN / "labels.json")["names"]
    settings = read_json(IN / "settings.json")
    task.require_same(settings.get("task"), f"{IN}: tokenized data", "run dvc repro")
    device, main = state.device, state.is_main_process
    set_seed(p.seed)  # before the model: the new head's initial weights come from this seed
    trust = Trust.of(params.model)
    tokenizer = load_tokenizer(params.model.name, trust)
    start, start_tags = starting_point(params.model.name)  # models/pretrained when pretrain ran; the tokenizer stays
    model = task.load_model(start, labels, trust)
    log.info("%s on %s x %d: %d train, %d validation rows, %d labels", params.model.name, device,
             state.num_processes, len(dd["train"]), len(dd["validation"]), len(labels))
    checkpoints = checkpoints_for(params, p, main, start_tags)
    run_id = tracking.start_run(params.tracking.experiment, params.model_dump(mode="json"),
                                lineage.run_name(params.model.name, task.name),
                                stage_tags("finetune", checkpoints.folder.name)) if main else None
    with tracked(state, main):  # a raise marks the run FAILED; the process group ends either way
        if main:
            replaced = tracking.close_dangling(run_id)  # runs a killed finetune of these inputs left RUNNING
            tracking.log_datasets(TEXTS, {"train": "training", "validation": "validation", "test": "test"},
                                  params.ingest.source)
            tracking.set_tags(data_tags(settings) | start_tags)
        out = finetune(task, model, dd, labels, p, tokenizer.pad_token_id, device,
                       tracking.EpochLogger() if main else NoCallbacks(), checkpoints)
        result = out.result
        if not main:  # only the first process writes outputs, reports and the MLflow run
            return
        with atomic_dir(ADAPTER) as tmp:  # before merging: merge_and_unload folds the adapter into the base weights
            adapter_bytes = out.strategy.save_adapter(tmp)
            write_json(tmp / "strategy.json", {"strategy": p.strategy, **out.counts, "adapter_bytes": adapter_bytes})
        model = out.strategy.final()
        with atomic_dir(OUT) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / PIPELINE_FILE, {"task": task.name, "max_length": settings["max_length"], "labels": labels,
                                             "base_model": params.model.name, "torch": torch.__version__,
                                             "trust_remote_code": params.model.trust_remote_code}
                       | settings.get("serving", {}) | out.extras)
        sizes = {"adapter_bytes": adapter_bytes, "model_bytes": sum(f.stat().st_size for f in OUT.glob("*.safetensors"))}
        summary = result.summary | {"device": str(device), "stopped_early": result.stopped_early, "strategy": p.strategy,
                                    **out.counts, "peak_memory_mb": peak_memory_mb(device), **sizes}
        if result.summary["resumed_from_step"]:  # from the checkpoint of a killed run: the newest it replaced, if any
            tracking.set_tags({"finetune.resumed_from_step": str(result.summary["resumed_from_step"])}
                              | ({"finetune.resumed_from_run": replaced[-1]} if replaced else {}))
        pd.DataFrame(result.history).to_csv(CURVES, index=False)
        pd.DataFrame(result.steps).to_csv(STEPS, index=False)
        write_json(SUMMARY, summary)
        # The per-epoch curves (speed included) are the run's charts; of the summary only the number runs are
        # compared by (the rest is in reports/train.json): each number logged is one more single-point chart.
        # what the strategy trains and the sizes it leaves are facts of the setup: params (compared like any param);
        # of the measured numbers, peak memory (one number each is one more single-point chart)
        tracking.log_metrics({f"best_val_{out.metric}": float(result.best_value), "peak_memory_mb": summary["peak_memory_mb"]})
        tracking.log_params({f"strategy.{k}": v for k, v in (out.counts | sizes).items()})
        if adapter_bytes:
            tracking.log_artifacts([str(ADAPTER)], "adapter")
        tracking.log_artifacts([r for r in (*REPORTS, str(SUMMARY), str(CURVES), str(STEPS)) if Path(r).exists()],
                               "reports")
        tracking.save_run_file(run_id)
    tracking.end_run()
    log.info("best epoch %d (val %s %.4f), %.1f samples/s, padding %.1f%%, run %s", result.best_epoch,
             out.metric, result.best_value, summary["train_samples_per_s"], 100 * summary["padding_share"], run_id)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "finetune")
