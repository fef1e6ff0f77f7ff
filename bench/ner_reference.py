"""Reference NER fine-tuning: a plain Hugging Face Trainer token-classification script.

Written the way a user would by hand after HF's `run_ner.py` / the token-classification course:
first sub-token of each word labelled (others -100), truncation at 128, dynamic padding, 3 epochs,
lr 5e-5, batch 32. Our pipeline's entity F1 and speed are compared against what this writes.

    python -m bench.ner_reference --out bench/results/ner_reference.json
    python -m bench.ner_reference --max-train 300 --epochs 1 --out /tmp/smoke.json   # smoke run
"""

from __future__ import annotations

import os

# Before any HF import: no network, no tokenizer thread pool fighting torch for the 2 cores.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine_info, model_dir, peak_rss_mb, read_conll, write_result

TYPES = ["LOC", "MISC", "ORG", "PER"]
LABELS = ["O"] + [f"{p}-{t}" for t in TYPES for p in ("B", "I")]  # O, B-LOC, I-LOC, B-MISC, ...
MAX_LEN = 128  # sub-word tokens incl. [CLS]/[SEP], as run_ner's max_seq_length


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/conll2003"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/ner_reference.json"))
    ap.add_argument("--max-train", type=int, default=None, help="first N train sentences only")
    ap.add_argument("--epochs", type=float, default=3)
    return ap.parse_args(argv)


def tokenize_split(tokenizer, words: list[list[str]], tags: list[list[str]]):
    """Tokenize pre-split words; label the first sub-token of each word, -100 elsewhere."""
    from datasets import Dataset

    label2id = {l: i for i, l in enumerate(LABELS)}
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=MAX_LEN)
    all_labels, all_word_ids = [], []
    for i, sent_tags in enumerate(tags):
        wids = enc.word_ids(batch_index=i)
        prev, labels = None, []
        for w in wids:
            labels.append(-100 if w is None or w == prev else label2id[sent_tags[w]])
            prev = w
        all_labels.append(labels)
        all_word_ids.append([-1 if w is None else w for w in wids])
    ds = Dataset.from_dict(
        {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
         "attention_mask": enc["attention_mask"], "labels": all_labels}
    )
    return ds, all_word_ids


def words_predictions(logits: np.ndarray, word_ids: list[list[int]], n_words: list[int]) -> list[list[str]]:
    """Map sub-token predictions back to words (first sub-token); words cut by truncation get 'O'."""
    preds = logits.argmax(-1)
    out = []
    for i, wids in enumerate(word_ids):
        tags = ["O"] * n_words[i]
        prev = -1
        for j, w in enumerate(wids):
            if w >= 0 and w != prev:
                tags[w] = LABELS[int(preds[i, j])]
            prev = w
        out.append(tags)
    return out


def score(gold: list[list[str]], pred: list[list[str]]) -> dict:
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    rep = classification_report(gold, pred, output_dict=True, zero_division=0)
    rep_strict = classification_report(gold, pred, output_dict=True, mode="strict", scheme=IOB2, zero_division=0)
    return {
        "default": {"precision": precision_score(gold, pred), "recall": recall_score(gold, pred),
                    "f1": f1_score(gold, pred)},
        "strict": {"precision": precision_score(gold, pred, mode="strict", scheme=IOB2),
                   "recall": recall_score(gold, pred, mode="strict", scheme=IOB2),
                   "f1": f1_score(gold, pred, mode="strict", scheme=IOB2)},
        "per_type": {t: {k: float(rep[t][k]) for k in ("precision", "recall", "f1-score", "support")}
                     for t in TYPES if t in rep},
        "per_type_strict_f1": {t: float(rep_strict[t]["f1-score"]) for t in TYPES if t in rep_strict},
        "token_accuracy": accuracy_score(gold, pred),  # over words, first sub-token decides
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not all((args.data / f).is_file() for f in ("train.txt", "dev.txt", "test.txt")):
        print(f"skip: CoNLL-2003 not found under {args.data}")
        return 0
    load_start = os.getloadavg()
    t_start = time.perf_counter()

    import torch
    import transformers
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments, set_seed)

    splits = {s: read_conll(args.data / f"{s}.txt") for s in ("train", "dev", "test")}
    if args.max_train:
        w, t = splits["train"]
        splits["train"] = (w[: args.max_train], t[: args.max_train])

    mdir = model_dir()
    set_seed(42)  # before the model: the classifier head is freshly initialised
    tokenizer = AutoTokenizer.from_pretrained(mdir)
    model = AutoModelForTokenClassification.from_pretrained(
        mdir, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)}
    )

    data, word_ids = {}, {}
    for s, (w, t) in splits.items():
        data[s], word_ids[s] = tokenize_split(tokenizer, w, t)
    n_trunc_words = {s: sum(len(w) - (max(wi) + 1) for w, wi in zip(splits[s][0], word_ids[s])) for s in splits}
    real_train_tokens = sum(len(x) for x in data["train"]["input_ids"])  # = sum of attention masks

    # Counts real vs padded tokens of the batches the Trainer actually builds (exact padding share).
    class CountingCollator(DataCollatorForTokenClassification):
        padded = real = batches = 0
        counting = False  # on only around trainer.train(), so predict batches are not counted

        def __call__(self, features, return_tensors=None):
            batch = super().__call__(features, return_tensors)
            if CountingCollator.counting:
                CountingCollator.padded += batch["attention_mask"].numel()
                CountingCollator.real += int(batch["attention_mask"].sum())
                CountingCollator.batches += 1
            return batch

    collator = CountingCollator(tokenizer=tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, num_train_epochs=args.epochs, learning_rate=5e-5,
            per_device_train_batch_size=32, per_device_eval_batch_size=128,
            weight_decay=0.0, seed=42, eval_strategy="no", save_strategy="no", report_to=[],
            logging_steps=100, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,  # the PrinterCallback logs loss every 100 steps instead of a progress bar
        )
        trainer = Trainer(model=model, args=targs, train_dataset=data["train"], data_collator=collator,
                          processing_class=tokenizer)
        load_train_start = os.getloadavg()
        CountingCollator.counting = True
        t0 = time.perf_counter()
        train_out = trainer.train()
        train_s = time.perf_counter() - t0
        CountingCollator.counting = False
        load_train_end = os.getloadavg()

        results = {}
        for s in ("test", "dev"):
            t1 = time.perf_counter()
            pred = trainer.predict(data[s])
            pred_s = time.perf_counter() - t1
            words_pred = words_predictions(pred.predictions, word_ids[s], [len(w) for w in splits[s][0]])
            results[s] = score(splits[s][1], words_pred) | {
                "sentences": len(splits[s][0]), "words": sum(len(w) for w in splits[s][0]),
                "words_cut_by_truncation": n_trunc_words[s], "predict_seconds": round(pred_s, 2),
                "loss": float(pred.metrics.get("test_loss", float("nan"))),
            }

    n_train = len(data["train"])
    out = {
        "benchmark": "ner_reference",
        "description": "plain HF Trainer token classification, CoNLL-2003, all-MiniLM-L6-v2, first sub-token labelled",
        "command": " ".join([os.path.relpath(sys.executable), "-m", "bench.ner_reference", *(argv or sys.argv[1:])]),
        "data": str(args.data), "model": mdir, "labels": LABELS,
        "config": {"epochs": args.epochs, "learning_rate": 5e-5, "train_batch_size": 32, "eval_batch_size": 128,
                   "max_length": MAX_LEN, "warmup_steps": 0, "weight_decay": 0.0, "seed": 42,
                   "lr_scheduler": getattr(targs.lr_scheduler_type, "value", str(targs.lr_scheduler_type)),
                   "optim": getattr(targs.optim, "value", str(targs.optim)),
                   "padding": "dynamic (DataCollatorForTokenClassification)", "max_train": args.max_train},
        "train": {
            "sentences": n_train, "words": sum(len(w) for w in splits["train"][0]),
            "words_cut_by_truncation": n_trunc_words["train"],
            "real_tokens_per_epoch": real_train_tokens,
            "mean_tokens_per_sentence": real_train_tokens / max(n_train, 1),
            "seconds": round(train_s, 1),
            "samples_per_s": n_train * args.epochs / train_s,
            "real_tokens_per_s": real_train_tokens * args.epochs / train_s,
            "trainer_metrics": train_out.metrics,
            "steps": train_out.global_step,
            "batches_seen": CountingCollator.batches,
            "padded_tokens": CountingCollator.padded, "real_tokens_in_batches": CountingCollator.real,
            "padding_share": 1 - CountingCollator.real / max(CountingCollator.padded, 1),
            "mean_padded_len": CountingCollator.padded / max(CountingCollator.batches * 32, 1),
            "final_loss": train_out.training_loss,
        },
        "test": results["test"], "dev": results["dev"],
        "machine": machine_info(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "timing_note": "shared machine: timings may be contended by other work; see loadavg (1/5/15 min)",
        "loadavg": {"start": load_start, "train_start": load_train_start, "train_end": load_train_end,
                    "end": os.getloadavg()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    write_result(args.out, out)

    t, tr = out["test"], out["train"]
    print(f"test  entity F1 default {t['default']['f1']:.4f}  strict {t['strict']['f1']:.4f}  "
          f"P {t['default']['precision']:.4f} R {t['default']['recall']:.4f}  token acc {t['token_accuracy']:.4f}")
    print("      per type F1: " + "  ".join(f"{k} {v['f1-score']:.4f}" for k, v in t["per_type"].items()))
    print(f"dev   entity F1 default {out['dev']['default']['f1']:.4f}  strict {out['dev']['strict']['f1']:.4f}")
    print(f"train {tr['seconds']} s, {tr['samples_per_s']:.1f} samples/s, {tr['real_tokens_per_s']:.0f} real tok/s, "
          f"padding {tr['padding_share']:.1%}, peak RSS {out['peak_rss_mb']:.0f} MiB, "
          f"threads {out['machine']['torch_num_threads']}, loadavg {out['loadavg']['start'][0]:.2f}->"
          f"{out['loadavg']['end'][0]:.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
