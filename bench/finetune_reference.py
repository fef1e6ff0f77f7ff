"""Reference fine-tuning: a plain Hugging Face Trainer text-classification script, as run_glue.py does it.

(a) `--padding max_length`: every text padded to 128 tokens (run_glue's default, `pad_to_max_length`);
(b) `--padding dynamic`: DataCollatorWithPadding pads each random batch to its longest text.
fp32, run_glue's other defaults (AdamW, linear decay, no warmup, no weight decay), 3 epochs, lr 5e-5, batch 32,
no evaluation during training; the final model is scored on the test split. The data are the pipeline's own
split files, so both sides train and test on the very same rows.

    python -m bench.finetune_reference --data <project>/data/augmented --padding dynamic --out ref_b.json
    python -m bench.finetune_reference --data data/augmented --padding dynamic --max-train 300 --epochs 1 --out /tmp/smoke.json
"""

from __future__ import annotations

import os

# Before any HF import: no network, no tokenizer thread pool fighting torch for the 2 cores.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import command_line, machine_info, model_dir, peak_rss_mb, write_result

MAX_LEN = 128  # run_glue's max_seq_length


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with {train,test}.parquet (text, label) + labels.json")
    ap.add_argument("--padding", choices=("max_length", "dynamic"), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--max-train", type=int, default=None, help="first N train rows only (smoke runs)")
    args = ap.parse_args(argv)
    load_start, t_start = os.getloadavg(), time.perf_counter()

    import numpy as np
    import pandas as pd
    import torch
    import transformers
    from datasets import Dataset
    from sklearn.metrics import accuracy_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, default_data_collator, set_seed)

    labels = json.loads((args.data / "labels.json").read_text())["names"]
    frames = {s: pd.read_parquet(args.data / f"{s}.parquet") for s in ("train", "test")}
    if args.max_train:
        frames["train"] = frames["train"].head(args.max_train)
    mdir = model_dir()
    set_seed(42)  # before the model: the classifier head is freshly initialised
    tokenizer = AutoTokenizer.from_pretrained(mdir)
    model = AutoModelForSequenceClassification.from_pretrained(mdir, num_labels=len(labels))
    pad = "max_length" if args.padding == "max_length" else False

    def encode(df: pd.DataFrame) -> Dataset:
        enc = tokenizer(df["text"].tolist(), truncation=True, max_length=MAX_LEN, padding=pad)
        label_id = {n: i for i, n in enumerate(labels)}
        return Dataset.from_dict(dict(enc) | {"label": [label_id[str(x)] for x in df["label"]]})

    data = {s: encode(df) for s, df in frames.items()}
    real_tokens = int(sum(sum(m) for m in data["train"]["attention_mask"]))  # per epoch, no padding

    base = default_data_collator if pad else DataCollatorWithPadding(tokenizer)

    class Counting:
        """Counts the real and padded tokens of the batches the Trainer builds (the exact padding share)."""
        on, real, padded, batches = False, 0, 0, 0

        def __call__(self, features):
            batch = base(features)
            if self.on:
                self.padded += batch["attention_mask"].numel()
                self.real += int(batch["attention_mask"].sum())
                self.batches += 1
            return batch

    counting = Counting()
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, num_train_epochs=args.epochs, learning_rate=5e-5,
                                  per_device_train_batch_size=32, per_device_eval_batch_size=128, seed=42,
                                  eval_strategy="no", save_strategy="no", report_to=[], logging_steps=50,
                                  dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=data["train"], data_collator=counting,
                          processing_class=tokenizer)
        load_train = os.getloadavg()
        counting.on, t0 = True, time.perf_counter()
        train_out = trainer.train()
        train_s, counting.on = time.perf_counter() - t0, False
        t1 = time.perf_counter()
        pred = trainer.predict(data["test"])
        predict_s = time.perf_counter() - t1
    accuracy = accuracy_score(np.asarray(data["test"]["label"]), pred.predictions.argmax(-1))
    n = len(data["train"])
    result = {
        "benchmark": "finetune_reference",
        "description": f"plain HF Trainer, padding {args.padding}, fp32, run_glue defaults",
        "command": command_line("bench.finetune_reference", argv),
        "data": str(args.data), "model": mdir,
        "config": {"epochs": args.epochs, "learning_rate": 5e-5, "batch_size": 32, "max_length": MAX_LEN,
                   "padding": args.padding, "warmup": 0, "weight_decay": 0.0, "seed": 42, "precision": "fp32",
                   "max_train": args.max_train},
        "train": {"rows": n, "seconds": round(train_s, 1), "samples_per_s": round(n * args.epochs / train_s, 2),
                  "real_tokens_per_epoch": real_tokens, "real_tokens_per_s": round(real_tokens * args.epochs / train_s, 1),
                  "padding_share": round(1 - counting.real / max(counting.padded, 1), 4),
                  "mean_padded_len": round(counting.padded / max(n * args.epochs, 1), 1),
                  "final_loss": train_out.training_loss, "steps": train_out.global_step},
        "test": {"rows": len(data["test"]), "accuracy": float(accuracy), "predict_seconds": round(predict_s, 1)},
        "threads": torch.get_num_threads(), "peak_rss_mb": round(peak_rss_mb(), 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "loadavg": {"start": load_start, "train_start": load_train, "end": os.getloadavg()},
        "machine": machine_info(), "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    write_result(args.out, result)
    t = result["train"]
    print(f"reference ({args.padding}): {t['seconds']} s, {t['samples_per_s']} samples/s, {t['real_tokens_per_s']:.0f} "
          f"real tok/s, padding {t['padding_share']:.1%}; test accuracy {accuracy:.4f} ({len(data['test'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
