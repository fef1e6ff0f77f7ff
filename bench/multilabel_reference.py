"""Reference multi-label fine-tuning: a plain Hugging Face Trainer, set up the way a skilled user would.

The comparison point for our pipeline on multi-label text classification (GoEmotions, 28 labels).
`AutoModelForSequenceClassification(problem_type="multi_label_classification")` (sigmoid + BCE), float
multi-hot labels, dynamic padding (DataCollatorWithPadding), length-grouped batches, bf16 autocast where
the hardware has native bf16, fused AdamW, linear warmup/decay, weight decay, one evaluation and one
checkpoint per epoch, best epoch by validation macro-F1 (threshold 0.5) restored at the end. Every
optimisation setting comes from the project's params.yaml (`finetune:`, `tokenize.max_length`), so both
sides train with the same hyper-parameters. The best model's sigmoid probabilities on validation and test
are then scored under three threshold rules: 0.5 for every label, 0.3 for every label (the GoEmotions
paper's rule), and a per-label threshold tuned on the validation split (grid 0.05..0.95 step 0.05).

Input: `--data DIR` with the pipeline's split files {train,validation,test}.parquet (`text`, `label` = a
list of label names, possibly empty) + labels.json {"names": [...]}; or, without --data, `--goemotions DIR`
reads the original GoEmotions TSVs (train/dev/test.tsv: text, comma-separated label ids, comment id;
labels.txt: one name per line). `--export DIR` writes those TSVs out as such a split folder and stops.

    python -m bench.multilabel_reference --data <project>/data/augmented --out bench/results/multilabel_ref.json
    python -m bench.multilabel_reference --goemotions /work/shared/data/goemotions --out /tmp/ml_ref.json
    python -m bench.multilabel_reference --goemotions /work/shared/data/goemotions --export /tmp/goemotions_splits
    python -m bench.multilabel_reference --goemotions /work/shared/data/goemotions \\
        --max-train 300 --epochs 1 --out /tmp/ml_ref_smoke.json   # smoke run
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

import numpy as np

from bench.common import machine_info, model_dir, peak_rss_mb, write_result

SPLITS = ("train", "validation", "test")
GOEMOTIONS_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
THRESHOLD_GRID = np.round(np.arange(1, 20) * 0.05, 2)  # 0.05, 0.10, ..., 0.95
DEFAULT_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path,
                     help="folder with {train,validation,test}.parquet (text, label list) + labels.json")
    src.add_argument("--goemotions", type=Path, help="folder with GoEmotions train/dev/test.tsv + labels.txt")
    ap.add_argument("--export", type=Path, default=None, help="with --goemotions: write the split folder here and stop")
    ap.add_argument("--out", type=Path, default=None, help="the JSON result")
    ap.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params.yaml (finetune:, tokenize.max_length)")
    ap.add_argument("--epochs", type=float, default=None, help="override finetune.epochs (smoke runs)")
    ap.add_argument("--max-train", type=int, default=None, help="first N train rows only (smoke runs)")
    args = ap.parse_args(argv)
    if args.export is not None and args.goemotions is None:
        ap.error("--export needs --goemotions")
    if args.export is None and args.out is None:
        ap.error("--out is required (unless --export)")
    return args


def read_settings(path: Path) -> dict:
    """The training settings from params.yaml: the `finetune:` section and `tokenize.max_length`."""
    import yaml

    p = yaml.safe_load(path.read_text())
    ft, tok = p["finetune"], p["tokenize"]
    return {"learning_rate": float(ft["learning_rate"]), "batch_size": int(ft["batch_size"]),
            "gradient_accumulation_steps": int(ft.get("gradient_accumulation_steps", 1)),
            "epochs": float(ft["epochs"]), "warmup_ratio": float(ft["warmup_ratio"]),
            "weight_decay": float(ft["weight_decay"]), "max_grad_norm": float(ft["max_grad_norm"]),
            "seed": int(ft["seed"]), "eval_batch_size": int(ft["eval_batch_size"]),
            "max_length": int(tok["max_length"])}


def read_goemotions(folder: Path):
    """The original GoEmotions TSVs -> ({split: DataFrame(text, label=list of names)}, label names)."""
    import csv

    import pandas as pd

    names = [l.strip() for l in (folder / "labels.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
    frames = {}
    for split, fname in GOEMOTIONS_FILES.items():
        raw = pd.read_csv(folder / fname, sep="\t", header=None, names=["text", "ids", "comment_id"],
                          quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, encoding="utf-8")
        labels = [[names[int(i)] for i in ids.split(",") if i.strip()] for ids in raw["ids"]]
        frames[split] = pd.DataFrame({"text": raw["text"], "label": labels})
    return frames, names


def read_split_folder(folder: Path):
    """The pipeline's split folder -> ({split: DataFrame(text, label)}, label names)."""
    import pandas as pd

    names = json.loads((folder / "labels.json").read_text())["names"]
    return {s: pd.read_parquet(folder / f"{s}.parquet", columns=["text", "label"]) for s in SPLITS}, names


def multi_hot(label_lists, names: list[str]) -> np.ndarray:
    """Rows of label-name lists (possibly empty) -> float32 (rows, labels) 0/1 matrix."""
    index = {n: i for i, n in enumerate(names)}
    y = np.zeros((len(label_lists), len(names)), dtype=np.float32)
    for r, labels in enumerate(label_lists):
        if isinstance(labels, str):  # a single-label column: one name per row
            labels = [labels]
        for name in labels if labels is not None else ():
            if str(name) not in index:
                raise SystemExit(f"row {r}: label {name!r} is not in labels.json")
            y[r, index[str(name)]] = 1.0
    return y


def cpu_has_native_bf16() -> bool:
    """True where the CPU does bf16 matmuls in hardware (avx512_bf16 or AMX); elsewhere torch emulates it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def scores(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> dict:
    """Multi-label scores of 0/1 predictions (scikit-learn, zero_division=0)."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    per_label = f1_score(y_true, y_pred, average=None, zero_division=0)
    return {
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "samples_f1": float(f1_score(y_true, y_pred, average="samples", zero_division=0)),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "mean_predicted_labels": float(y_pred.sum(1).mean()),
        "empty_predictions": int((y_pred.sum(1) == 0).sum()),
        "per_label_f1": {n: round(float(f), 4) for n, f in zip(names, per_label)},
    }


def tune_thresholds(y_val: np.ndarray, p_val: np.ndarray) -> np.ndarray:
    """Per label: the grid threshold with the best validation F1 of that label (ties: the lowest threshold)."""
    from sklearn.metrics import f1_score

    best = np.empty(y_val.shape[1])
    for j in range(y_val.shape[1]):
        f1s = [f1_score(y_val[:, j], p_val[:, j] >= t, zero_division=0) for t in THRESHOLD_GRID]
        best[j] = THRESHOLD_GRID[int(np.argmax(f1s))]  # argmax: first of equal maxima
    return best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.goemotions is not None:
        frames, names = read_goemotions(args.goemotions)
        if args.export is not None:
            args.export.mkdir(parents=True, exist_ok=True)
            for s, df in frames.items():
                df.to_parquet(args.export / f"{s}.parquet", index=False)
            (args.export / "labels.json").write_text(json.dumps({"names": names}, indent=2) + "\n")
            print(f"wrote {args.export}: " + ", ".join(f"{s} {len(df)} rows" for s, df in frames.items())
                  + f", {len(names)} labels")
            return 0
    else:
        frames, names = read_split_folder(args.data)
    if args.max_train:
        frames["train"] = frames["train"].head(args.max_train)
    cfg = read_settings(args.params)
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    load_start, t_start = os.getloadavg(), time.perf_counter()

    import datasets
    import pandas as pd
    import sklearn
    import torch
    import transformers
    from datasets import Dataset, Features, Sequence, Value
    from sklearn.metrics import f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    cuda = torch.cuda.is_available()
    bf16 = bool(torch.cuda.is_bf16_supported()) if cuda else cpu_has_native_bf16()
    mdir = model_dir()
    set_seed(cfg["seed"])  # before the model: the classifier head is freshly initialised
    tokenizer = AutoTokenizer.from_pretrained(mdir)
    model = AutoModelForSequenceClassification.from_pretrained(
        mdir, num_labels=len(names), problem_type="multi_label_classification",
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})

    gold = {s: multi_hot(df["label"].tolist(), names) for s, df in frames.items()}

    def encode(split: str) -> Dataset:
        enc = tokenizer(frames[split]["text"].astype(str).tolist(), truncation=True, max_length=cfg["max_length"])
        feats = Features({k: Sequence(Value("int8" if k != "input_ids" else "int32")) for k in enc.keys()}
                         | {"labels": Sequence(Value("float32"))})  # float multi-hot: BCEWithLogitsLoss
        return Dataset.from_dict(dict(enc) | {"labels": gold[split].tolist()}, features=feats)

    data = {s: encode(s) for s in SPLITS}
    real_tokens = int(sum(len(x) for x in data["train"]["input_ids"]))  # per epoch, no padding

    def compute_metrics(pred) -> dict:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        y_hat = (1 / (1 + np.exp(-logits.astype(np.float64)))) >= 0.5
        return {"macro_f1": float(f1_score(pred.label_ids, y_hat, average="macro", zero_division=0)),
                "micro_f1": float(f1_score(pred.label_ids, y_hat, average="micro", zero_division=0))}

    with tempfile.TemporaryDirectory() as tmp:
        # transformers 5.x: `warmup_ratio` and `group_by_length` are gone from TrainingArguments; a float
        # warmup_steps in [0, 1) is the ratio (ceil(ratio * total steps)) and length grouping is
        # train_sampling_strategy="group_by_length".
        targs = TrainingArguments(
            output_dir=tmp, num_train_epochs=cfg["epochs"], learning_rate=cfg["learning_rate"],
            per_device_train_batch_size=cfg["batch_size"], per_device_eval_batch_size=cfg["eval_batch_size"],
            gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
            warmup_steps=cfg["warmup_ratio"], lr_scheduler_type="linear", weight_decay=cfg["weight_decay"],
            max_grad_norm=cfg["max_grad_norm"], optim="adamw_torch_fused", bf16=bf16,
            train_sampling_strategy="group_by_length", seed=cfg["seed"],
            eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
            metric_for_best_model="macro_f1", greater_is_better=True, save_total_limit=1,
            logging_steps=50, report_to=[], disable_tqdm=True, dataloader_num_workers=0, use_cpu=not cuda)
        trainer = Trainer(model=model, args=targs, train_dataset=data["train"], eval_dataset=data["validation"],
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                          compute_metrics=compute_metrics)
        load_train = os.getloadavg()
        t0 = time.perf_counter()
        train_out = trainer.train()
        train_s = time.perf_counter() - t0
        load_train_end = os.getloadavg()
        state = trainer.state
        # transformers 5.x: with train_sampling_strategy="group_by_length" the eval/predict dataloader uses a
        # (seeded, shuffled) LengthGroupedSampler too, so predictions come back in a permuted row order. The
        # label_ids come back in that same order: score against them, never against the split's row order.
        probs, y_true, predict_s = {}, {}, {}
        for s in ("validation", "test"):
            t1 = time.perf_counter()
            pred = trainer.predict(data[s])
            predict_s[s] = round(time.perf_counter() - t1, 2)
            logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
            probs[s] = 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))
            y_true[s] = (np.asarray(pred.label_ids) > 0.5).astype(np.int8)
            if y_true[s].shape != gold[s].shape or not np.array_equal(y_true[s].sum(0), gold[s].sum(0)):
                raise SystemExit(f"{s}: predict() returned labels that do not match the split")

    evals = [h for h in state.log_history if "eval_macro_f1" in h]
    best_step = int(state.best_model_checkpoint.rsplit("-", 1)[1]) if state.best_model_checkpoint else None
    best = next((h for h in evals if h.get("step") == best_step), None)
    losses = [h["loss"] for h in state.log_history if "loss" in h]

    thresholds = {"0.5": np.full(len(names), 0.5), "0.3": np.full(len(names), 0.3),
                  "tuned_on_validation": tune_thresholds(y_true["validation"], probs["validation"])}
    rules = {}
    for rule, th in thresholds.items():
        rules[rule] = {s: scores(y_true[s], (probs[s] >= th).astype(np.int8), names) for s in ("test", "validation")}
    tuned = {n: float(t) for n, t in zip(names, thresholds["tuned_on_validation"])}

    n = len(data["train"])
    result = {
        "benchmark": "multilabel_reference",
        "description": "plain HF Trainer multi-label (sigmoid/BCE), best epoch by val macro-F1, "
                       "test under thresholds 0.5 / 0.3 / tuned per label on validation",
        "command": " ".join([os.path.relpath(sys.executable), "-m", "bench.multilabel_reference",
                             *(argv if argv is not None else sys.argv[1:])]),
        "data": str(args.data or args.goemotions), "data_format": "split folder" if args.data else "goemotions tsv",
        "model": mdir, "labels": names, "params_file": str(args.params),
        "config": cfg | {"max_train": args.max_train, "epochs_overridden": args.epochs is not None,
                         "precision": "bf16" if bf16 else "fp32", "device": "cuda" if cuda else "cpu",
                         "optim": getattr(targs.optim, "value", str(targs.optim)),
                         "lr_scheduler": getattr(targs.lr_scheduler_type, "value", str(targs.lr_scheduler_type)),
                         "warmup_steps": targs.get_warmup_steps(state.max_steps),
                         "train_sampling_strategy": targs.train_sampling_strategy,
                         "padding": "dynamic (DataCollatorWithPadding)", "best_metric": "eval macro-F1 at 0.5",
                         "threshold_grid": THRESHOLD_GRID.tolist()},
        "rows": {s: len(df) for s, df in frames.items()},
        "label_counts": {s: {n_: int(c) for n_, c in zip(names, gold[s].sum(0))} for s in SPLITS},
        "rows_without_label": {s: int((gold[s].sum(1) == 0).sum()) for s in SPLITS},
        "train": {
            "rows": n, "seconds": round(train_s, 1), "samples_per_s": round(n * cfg["epochs"] / train_s, 2),
            "real_tokens_per_epoch": real_tokens, "real_tokens_per_s": round(real_tokens * cfg["epochs"] / train_s, 1),
            "eval_seconds_in_training": round(sum(h.get("eval_runtime", 0.0) for h in evals), 1),
            "steps": train_out.global_step, "final_loss": train_out.training_loss,
            "last_logged_loss": losses[-1] if losses else None,
            "best_epoch": best["epoch"] if best else None, "best_step": best_step,
            "best_val_macro_f1": state.best_metric,
            "val_per_epoch": [{"epoch": h["epoch"], "step": h["step"], "macro_f1": h["eval_macro_f1"],
                               "micro_f1": h["eval_micro_f1"], "loss": h.get("eval_loss")} for h in evals],
            "trainer_metrics": train_out.metrics,
        },
        "test": {rule: r["test"] for rule, r in rules.items()},
        "validation": {rule: r["validation"] for rule, r in rules.items()},
        "tuned_thresholds": tuned,
        "predict_seconds": predict_s,
        "threads": torch.get_num_threads(), "peak_rss_mb": round(peak_rss_mb(), 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "timing_note": "shared machine: timings may be contended by other work; see loadavg (1/5/15 min)",
        "loadavg": {"start": load_start, "train_start": load_train, "train_end": load_train_end,
                    "end": os.getloadavg()},
        "machine": machine_info(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "datasets": datasets.__version__, "sklearn": sklearn.__version__,
                     "numpy": np.__version__, "pandas": pd.__version__},
    }
    write_result(args.out, result)
    t, te = result["train"], result["test"]
    print(f"multilabel reference ({len(names)} labels, {'bf16' if bf16 else 'fp32'}): {n} train rows x "
          f"{cfg['epochs']:g} ep, {t['seconds']} s, {t['samples_per_s']} samples/s, best epoch {t['best_epoch']}; "
          f"test macro/micro-F1 @0.5 {te['0.5']['macro_f1']:.4f}/{te['0.5']['micro_f1']:.4f}, "
          f"@0.3 {te['0.3']['macro_f1']:.4f}/{te['0.3']['micro_f1']:.4f}, "
          f"tuned {te['tuned_on_validation']['macro_f1']:.4f}/{te['tuned_on_validation']['micro_f1']:.4f} "
          f"({len(data['test'])} rows) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
