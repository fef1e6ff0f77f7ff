"""Reference fine-tuning: Hugging Face Trainer text-classification scripts, run_glue.py's and a tuned one.

(a) `--padding max_length`: every text padded to 128 tokens (run_glue's default, `pad_to_max_length`);
(b) `--padding dynamic`: DataCollatorWithPadding pads each random batch to its longest text.
    (a) and (b): fp32, run_glue's other defaults (AdamW, linear decay, no warmup, no weight decay), 3 epochs, lr 5e-5,
    batch 32, no evaluation during training; the final model is scored on the test split.
(c) `--padding tuned`: the Trainer as a skilled user sets it up: dynamic padding, length-grouped batches
    (`train_sampling_strategy="group_by_length"`, transformers 5's name for `group_by_length=True`), bf16 autocast
    where the hardware has native bf16 (else fp32, said in the JSON), fused AdamW, and the pipeline's own recipe read
    from the project's params.yaml (`finetune:` learning rate, batch size, accumulation, epochs, warmup ratio, weight
    decay, max grad norm, seed, eval batch size, early stopping patience; `tokenize.max_length`); validation every
    epoch, the best epoch's weights kept (load_best_model_at_end on validation accuracy), scored on the test split.
The data are the pipeline's own split files, so every side trains and tests on the very same rows.

    python -m bench.finetune_reference --data <project>/data/augmented --padding dynamic --out ref_b.json
    python -m bench.finetune_reference --data <project>/data/augmented --padding tuned --out ref_c.json
    python -m bench.finetune_reference --data data/augmented --padding tuned --max-train 600 --max-eval 200 \
        --epochs 1 --out /tmp/smoke.json
"""

from __future__ import annotations

import os

# Before any HF import: no network, no tokenizer thread pool fighting torch for the 2 cores.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import command_line, machine_info, model_dir, native_bf16, peak_rss_mb, write_result

MAX_LEN = 128  # run_glue's max_seq_length
# finetune: keys the tuned reference must read (a missing one is an error, never a silent Trainer default)
RECIPE_KEYS = ("learning_rate", "batch_size", "epochs", "warmup_ratio", "weight_decay", "max_grad_norm", "seed",
               "eval_batch_size")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True,
                    help="folder with {train,test}.parquet (text, label) + labels.json; tuned: validation.parquet too")
    ap.add_argument("--padding", choices=("max_length", "dynamic", "tuned"), required=True,
                    help="(a) max_length, (b) dynamic: run_glue's defaults; (c) tuned: the pipeline's recipe")
    ap.add_argument("--params", type=Path, default=None,
                    help="tuned: the params.yaml to read the recipe from (default: <data>/../../params.yaml)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=float, default=None, help="default: 3 for (a)/(b), finetune.epochs for tuned")
    ap.add_argument("--max-train", type=int, default=None, help="a seeded sample of N train rows (smoke runs)")
    ap.add_argument("--max-eval", type=int, default=None,
                    help="a seeded sample of N validation and N test rows (smoke runs)")
    return ap.parse_args(argv)


def read_recipe(path: Path) -> dict:
    """The pipeline's training recipe: params.yaml's finetune: section (each key the Trainer has a knob for) and
    tokenize.max_length."""
    import yaml

    params = yaml.safe_load(path.read_text())
    ft = params.get("finetune") or {}
    missing = [k for k in RECIPE_KEYS if k not in ft]
    if missing:
        raise SystemExit(f"error: {path}: finetune: has no {', '.join(missing)}")
    if not 0 <= float(ft["warmup_ratio"]) < 1:  # transformers 5 reads a warmup_steps < 1 as a ratio, >= 1 as steps
        raise SystemExit(f"error: {path}: finetune.warmup_ratio {ft['warmup_ratio']} is not in [0, 1)")
    best = ft.get("best_metric", "auto")
    if best not in ("auto", "accuracy", "loss"):
        raise SystemExit(f"error: {path}: finetune.best_metric {best!r}: the tuned reference knows accuracy and loss")
    return {k: ft[k] for k in RECIPE_KEYS} | {
        "gradient_accumulation_steps": ft.get("gradient_accumulation_steps", 1),
        "early_stopping_patience": ft.get("early_stopping_patience"), "precision_param": ft.get("precision", "auto"),
        "best_metric": "loss" if best == "loss" else "accuracy", "max_length": (params.get("tokenize") or {}).get(
            "max_length", MAX_LEN), "params_file": str(path)}


def pick_precision(pref: str) -> tuple[str, str]:
    """(precision, why), as the pipeline's `finetune.precision` picks its autocast dtype."""
    import torch

    if pref in ("fp32", "bf16", "fp16"):
        return pref, f"finetune.precision: {pref}"
    if native_bf16():
        return "bf16", "bf16 autocast: native bf16 here, a CPU with avx512_bf16/AMX or a CUDA device"
    if torch.cuda.is_available():
        return "fp16", "fp16 autocast: a CUDA device without bf16, as the pipeline picks"
    return "fp32", "fp32: this CPU has no native bf16, where emulated bf16 is slower than fp32"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tuned = args.padding == "tuned"
    recipe = read_recipe(args.params or args.data.resolve().parents[1] / "params.yaml") if tuned else None
    epochs = args.epochs if args.epochs is not None else (recipe["epochs"] if tuned else 3)
    load_start, t_start = os.getloadavg(), time.perf_counter()

    import numpy as np
    import pandas as pd
    import torch
    import transformers
    from datasets import Dataset
    from sklearn.metrics import accuracy_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    labels = json.loads((args.data / "labels.json").read_text())["names"]
    splits = ("train", "validation", "test") if tuned else ("train", "test")
    frames = {s: pd.read_parquet(args.data / f"{s}.parquet") for s in splits}
    # Smoke runs: a seeded sample, not the first rows (the split files are sorted by label: those are one class).
    if args.max_train:
        frames["train"] = frames["train"].sample(n=min(args.max_train, len(frames["train"])), random_state=0)
    if args.max_eval:
        frames |= {s: frames[s].sample(n=min(args.max_eval, len(frames[s])), random_state=0) for s in splits[1:]}
    seed, max_len = (recipe["seed"], recipe["max_length"]) if tuned else (42, MAX_LEN)
    mdir = model_dir()
    set_seed(seed)  # before the model: the classifier head is freshly initialised
    tokenizer = AutoTokenizer.from_pretrained(mdir)
    model = AutoModelForSequenceClassification.from_pretrained(mdir, num_labels=len(labels))
    pad = "max_length" if args.padding == "max_length" else False

    def encode(df: pd.DataFrame) -> Dataset:
        enc = tokenizer(df["text"].tolist(), truncation=True, max_length=max_len, padding=pad)
        label_id = {n: i for i, n in enumerate(labels)}
        return Dataset.from_dict(dict(enc) | {"label": [label_id[str(x)] for x in df["label"]]})

    data = {s: encode(df) for s, df in frames.items()}
    real_tokens = int(sum(sum(m) for m in data["train"]["attention_mask"]))  # per epoch, no padding

    base = default_data_collator if pad else DataCollatorWithPadding(tokenizer)

    class Counting:
        """Counts the rows and the real and padded tokens of the training batches the Trainer builds (the exact
        padding share); off during evaluation."""
        on, real, padded, batches, samples = False, 0, 0, 0, 0

        def __call__(self, features):
            batch = base(features)
            if self.on:
                self.padded += batch["attention_mask"].numel()
                self.real += int(batch["attention_mask"].sum())
                self.batches += 1
                self.samples += len(features)
            return batch

    counting = Counting()
    n = len(data["train"])
    with tempfile.TemporaryDirectory() as tmp:
        if tuned:
            precision, why = pick_precision(recipe["precision_param"])
            run = train_tuned(tmp, model, tokenizer, data, counting, recipe, epochs, precision)
            train_out, train_s, predictions, predict_s = run.pop("train_out"), run.pop("seconds"), *run.pop("test")
            config = {k: v for k, v in recipe.items() if k != "epochs"} | {
                "epochs": epochs, "padding": "dynamic", "group_by_length": True, "optim": "adamw_torch_fused",
                "precision": precision, "precision_why": why, "max_train": args.max_train, "max_eval": args.max_eval}
            description = (f"HF Trainer tuned: group_by_length, {precision}, fused AdamW, the pipeline's recipe from "
                           f"{recipe['params_file']}, best validation epoch kept")
            samples, real_seen = counting.samples, counting.real  # early stopping can end it before `epochs`
        else:
            targs = TrainingArguments(output_dir=tmp, num_train_epochs=epochs, learning_rate=5e-5,
                                      per_device_train_batch_size=32, per_device_eval_batch_size=128, seed=42,
                                      eval_strategy="no", save_strategy="no", report_to=[], logging_steps=50,
                                      dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
                                      disable_tqdm=True)
            trainer = Trainer(model=model, args=targs, train_dataset=data["train"], data_collator=counting,
                              processing_class=tokenizer)
            run, load_train = {}, os.getloadavg()
            counting.on, t0 = True, time.perf_counter()
            train_out = trainer.train()
            train_s, counting.on = time.perf_counter() - t0, False
            t1 = time.perf_counter()
            predictions = trainer.predict(data["test"])
            predict_s = time.perf_counter() - t1
            precision, run["load_train"] = "fp32", load_train
            config = {"epochs": epochs, "learning_rate": 5e-5, "batch_size": 32, "max_length": MAX_LEN,
                      "padding": args.padding, "warmup": 0, "weight_decay": 0.0, "seed": 42, "precision": "fp32",
                      "max_train": args.max_train}
            description = f"plain HF Trainer, padding {args.padding}, fp32, run_glue defaults"
            samples, real_seen = n * epochs, real_tokens * epochs
    accuracy = accuracy_score(predictions.label_ids, np.asarray(predictions.predictions).argmax(-1))
    result = {
        "benchmark": "finetune_reference",
        "description": description,
        "command": command_line("bench.finetune_reference", argv),
        "data": str(args.data), "model": mdir, "precision": precision, "config": config,
        "train": {"rows": n, "seconds": round(train_s, 1), "samples_per_s": round(samples / train_s, 2),
                  "real_tokens_per_epoch": real_tokens, "real_tokens_per_s": round(real_seen / train_s, 1),
                  "padding_share": round(1 - counting.real / max(counting.padded, 1), 4),
                  "mean_padded_len": round(counting.padded / max(counting.samples, 1), 1),
                  "final_loss": train_out.training_loss, "steps": train_out.global_step} | run.pop("train", {}),
        "test": {"rows": len(data["test"]), "accuracy": float(accuracy), "predict_seconds": round(predict_s, 1)}
        | run.pop("test_extra", {}),
        **run.pop("extra", {}),
        "threads": torch.get_num_threads(), "peak_rss_mb": round(peak_rss_mb(), 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "loadavg": {"start": load_start, "train_start": run.pop("load_train"), "end": os.getloadavg()},
        "machine": machine_info(), "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    write_result(args.out, result)
    t = result["train"]
    print(f"reference ({args.padding}, {precision}): {t['seconds']} s, {t['samples_per_s']} samples/s, "
          f"{t['real_tokens_per_s']:.0f} real tok/s, padding {t['padding_share']:.1%}; test accuracy {accuracy:.4f} "
          f"({len(data['test'])} rows)")
    return 0


def train_tuned(tmp: str, model, tokenizer, data: dict, counting, recipe: dict, epochs: float, precision: str) -> dict:
    """Reference (c): train with per-epoch validation and best-epoch restore, then score the test split. Its training
    seconds are the epochs' training loops only (on_epoch_begin to on_epoch_end), as the pipeline's train_seconds
    leave out its validation passes; the whole trainer.train() call (with validation, checkpoint saves and the
    best-checkpoint reload) is recorded beside it. The test accuracy is the fp32 forward of the kept weights, as the
    pipeline's evaluate stage scores it; the Trainer's own predict (in the training precision) is recorded too."""
    import numpy as np
    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

    class EpochClock(TrainerCallback):
        def __init__(self):
            self.seconds, self.evals, self.t0 = [], [], 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            counting.on, self.t0 = True, time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.t0)  # the validation pass and the save come after this
            counting.on = False

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            kept = {k.removeprefix("eval_"): round(v, 4) for k, v in (metrics or {}).items()
                    if k in ("eval_loss", "eval_accuracy")}
            self.evals.append({"epoch": round(state.epoch, 3)} | kept)

    def accuracy(pred) -> dict:
        return {"accuracy": float((np.asarray(pred.predictions).argmax(-1) == pred.label_ids).mean())}

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    grouping = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in fields
                else {"group_by_length": True})  # transformers < 5
    cuda = torch.cuda.is_available()
    targs = TrainingArguments(
        output_dir=tmp, num_train_epochs=epochs, learning_rate=recipe["learning_rate"],
        per_device_train_batch_size=recipe["batch_size"], per_device_eval_batch_size=recipe["eval_batch_size"],
        gradient_accumulation_steps=recipe["gradient_accumulation_steps"], lr_scheduler_type="linear",
        warmup_steps=float(recipe["warmup_ratio"]),  # a float < 1: a ratio of the total steps (transformers 5)
        weight_decay=recipe["weight_decay"],  # the Trainer leaves biases and LayerNorm weights undecayed, as ours does
        max_grad_norm=recipe["max_grad_norm"], seed=recipe["seed"], optim="adamw_torch_fused",
        bf16=precision == "bf16", fp16=precision == "fp16", eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model=recipe["best_metric"], save_total_limit=1,
        save_only_model=True, report_to=[], logging_steps=50, dataloader_num_workers=0, use_cpu=not cuda,
        disable_tqdm=True, **grouping)
    clock = EpochClock()
    patience = recipe["early_stopping_patience"]
    trainer = Trainer(model=model, args=targs, train_dataset=data["train"], eval_dataset=data["validation"],
                      data_collator=counting, processing_class=tokenizer, compute_metrics=accuracy,
                      callbacks=[clock] + [EarlyStoppingCallback(early_stopping_patience=patience)] * bool(patience))
    load_train, t0 = os.getloadavg(), time.perf_counter()
    train_out = trainer.train()
    call_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    autocast_pred = trainer.predict(data["test"])  # the script's own test pass: in the training precision
    autocast_s = time.perf_counter() - t1
    autocast_active = "_original_forward" in trainer.model.__dict__  # accelerate wrapped forward in autocast
    # fp32: the weights without accelerate's autocast wrapper around forward
    fp32 = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
    collate, test = DataCollatorWithPadding(tokenizer), data["test"]
    t1, logits = time.perf_counter(), []
    with torch.inference_mode():
        for i in range(0, len(test), recipe["eval_batch_size"]):
            batch = collate([test[j] for j in range(i, min(i + recipe["eval_batch_size"], len(test)))])
            batch.pop("labels")
            logits.append(fp32(**{k: v.to(fp32.device) for k, v in batch.items()}).logits.float().cpu().numpy())
    predict_s = time.perf_counter() - t1
    pred = type("Pred", (), {"predictions": np.concatenate(logits), "label_ids": np.asarray(test["label"])})
    best = max(clock.evals, key=lambda e: -e["loss"] if recipe["best_metric"] == "loss" else e["accuracy"])
    return {"train_out": train_out, "seconds": sum(clock.seconds), "test": (pred, predict_s), "load_train": load_train,
            "train": {"epoch_seconds": [round(s, 1) for s in clock.seconds], "epochs_run": len(clock.seconds),
                      "train_call_seconds": round(call_s, 1),
                      "outside_loop_seconds": round(call_s - sum(clock.seconds), 1),
                      "autocast_active": autocast_active,
                      "seconds_note": "the epochs' training loops only (validation passes, checkpoint saves and "
                                      "the best-checkpoint reload excluded, as in the pipeline's train_seconds); "
                                      "train_call_seconds is the whole trainer.train()"},
            "test_extra": {"accuracy_note": "fp32 forward of the kept (best-epoch) weights, as our evaluate stage",
                           "accuracy_training_precision": float(accuracy(autocast_pred)["accuracy"]),
                           "predict_seconds_training_precision": round(autocast_s, 1)},
            "extra": {"validation": clock.evals, "best_epoch": round(best["epoch"]),
                      "best_checkpoint": Path(trainer.state.best_model_checkpoint or "").name}}


if __name__ == "__main__":
    sys.exit(main())
