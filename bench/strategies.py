"""Transfer strategies side by side (finetune.strategy), a learning curve, and domain-adaptive pre-training.

All in one fresh clone of HEAD, one run after the other on this machine, through `dvc repro` (only finetune, evaluate
and register re-run between strategies; evaluate's baselines cut to `majority` to save time):
- table: each strategy on Rotten Tomatoes (params.yaml's split and recipe) and on a fixed IMDB subset (longer texts):
  test accuracy and macro-F1, train seconds and samples/s, trainable parameters, peak RSS of the finetune process,
  registered model bytes, adapter bytes. Each method at the rate its users usually pick (one run each, no tuning):
  the full model at params.yaml's 5e-5; adapters and the probe train few weights from scratch and take 10-60x that.
- curve: test accuracy vs train rows (100, 300, 1,000, all) for full, LoRA and head-only on the same validation/test
  rows (the split files of the RT run, train cut to its first N rows); PNG in bench/results and in MLflow.
- dapt: `pretrain` on IMDB texts (labels unused), then Rotten Tomatoes with 300 / 1,000 / all train rows, beside the
  curve's full runs without it.

    python -m bench.strategies --out bench/results/strategies.json                      # ~45 min on 2 cores
    python -m bench.strategies --parts curve --rows 100 --out /tmp/strategies_smoke.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import yaml

from bench.common import command_line, committed_params, finish, machine_info, repro, repro_in_clone

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = {
    "full": {"strategy": "full"},
    "full + layer_lr_decay 0.8": {"strategy": "full", "layer_lr_decay": 0.8, "learning_rate": 1e-4},
    "freeze (embeddings + 3 of 6 layers)": {"strategy": "freeze", "freeze": {"embeddings": True, "layers": 3}},
    "head_only": {"strategy": "head_only", "learning_rate": 3e-3},
    "lora": {"strategy": "lora", "learning_rate": 5e-4},
    "adalora": {"strategy": "adalora", "learning_rate": 1e-3},
    "ia3": {"strategy": "ia3", "learning_rate": 3e-3},
}
CURVE = ("full", "lora", "head_only")


def set_params(root: Path, base: dict, finetune: dict | None = None, ingest: dict | None = None,
               pretrain: dict | None = None, model: dict | None = None) -> None:
    params = json.loads(json.dumps(base))
    for section, extra in (("finetune", finetune), ("ingest", ingest), ("pretrain", pretrain), ("model", model)):
        for k, v in (extra or {}).items():
            params[section][k] = params[section][k] | v if isinstance(v, dict) else v
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def measured(root: Path, wall: float) -> dict:
    read = lambda name: json.loads((root / name).read_text())  # noqa: E731
    train, test = read("reports/train.json"), read("reports/metrics.json")["test"]
    keys = ("train_seconds", "train_samples_per_s", "trainable_params", "total_params", "peak_memory_mb",
            "model_bytes", "adapter_bytes", "best_epoch")
    return {"accuracy": test["accuracy"], "f1_macro": test["f1_macro"], **{k: train.get(k) for k in keys},
            "repro_seconds": round(wall, 1)}


def run(root: Path, env: dict, log: Path, name: str) -> dict:
    t0 = time.perf_counter()
    proc, _ = repro(root, env, log, append=True)
    if proc.returncode:
        raise SystemExit(f"{name}: dvc repro failed ({proc.returncode}); see {log}")
    out = measured(root, time.perf_counter() - t0)
    print(f"{name}: accuracy {out['accuracy']:.4f}, macro-F1 {out['f1_macro']:.4f}, {out['train_seconds']} s, "
          f"{out['trainable_params']} trainable", flush=True)
    return out


def export_splits(root: Path) -> dict[str, int]:
    """The RT run's clean splits as CSV files in data/source (fixed validation/test for the curve); train shuffled
    once (seed 0) so that its first N rows are a sample."""
    import pandas as pd

    sizes = {}
    for split in ("train", "validation", "test"):
        df = pd.read_parquet(root / f"data/clean/{split}.parquet", columns=["text", "label"])
        if split == "train":
            df = df.sample(frac=1.0, random_state=0)
        df.to_csv(root / f"data/source/rt_{split}.csv", index=False)
        sizes[split] = len(df)
    return sizes


def curve_plot(points: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, series in points.items():
        xs = sorted(series, key=int)
        ax.plot([int(x) for x in xs], [series[x] for x in xs], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("train rows (Rotten Tomatoes)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def log_to_mlflow(result: dict, png: Path) -> str:
    """The curve PNG and the result table into this repo's MLflow store (experiment `benchmarks`)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{ROOT / 'mlflow.db'}")
    mlflow.set_experiment("benchmarks")
    with mlflow.start_run(run_name="bench.strategies") as r:
        mlflow.log_dict(result, "strategies.json")
        if png.exists():
            mlflow.log_artifact(str(png))
        return r.info.run_id


def markdown(result: dict) -> str:
    """BENCHMARKS.md's tables from a result file (`--render`): strategies per data set, the curve, DAPT."""
    mb = lambda b: f"{b / 1e6:.1f}" if b else "-"
    out = []
    for key, title in (("rotten_tomatoes", "Rotten Tomatoes"), ("imdb", f"IMDB subset ({result.get('imdb', {}).get('rows')} rows)")):
        rows = {k: v for k, v in result.get(key, {}).items() if isinstance(v, dict)}
        if not rows:
            continue
        out += [f"**{title}**", "", "| strategy | test acc | macro-F1 | train s | samples/s | trainable params | "
                "peak RSS MB | registered MB | adapter MB |", "|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {name} | {r['accuracy']:.4f} | {r['f1_macro']:.4f} | {r['train_seconds']:.0f} | "
                f"{r['train_samples_per_s']:.0f} | {r['trainable_params']:,} ({100 * r['trainable_params'] / r['total_params']:.2f}%) | "
                f"{r['peak_memory_mb']:.0f} | {mb(r['model_bytes'])} | {mb(r['adapter_bytes'])} |" for name, r in rows.items()]
        out.append("")
    if curve := result.get("curve"):
        sizes = sorted({int(n) for name in CURVE for n in curve.get(name, {})})
        out += ["**Learning curve** (test accuracy; train rows)", "", "| strategy | " + " | ".join(map(str, sizes)) + " |",
                "|---|" + "---|" * len(sizes)]
        out += [f"| {name} | " + " | ".join(f"{curve[name].get(str(n)):.4f}" if curve[name].get(str(n)) is not None
                                           else "-" for n in sizes) + " |" for name in CURVE if name in curve]
        out.append("")
    if dapt := result.get("dapt"):
        without = result.get("curve", {}).get("full", {})
        out += [f"**DAPT** (pretrain on {dapt['texts']:,} IMDB texts, then full fine-tuning on Rotten Tomatoes)", "",
                "| train rows | without | with | pretrain s | MLM held-out perplexity |", "|---|---|---|---|---|"]
        for n, r in dapt.items():
            if not isinstance(r, dict):
                continue
            pre = r["pretrain"] if isinstance(r.get("pretrain"), dict) else None  # later sizes reuse the first's
            cost = (f"{pre['train_seconds']:.0f} | {math.exp(pre['best_val_loss']):.1f}" if pre
                    else "0 (the encoder above) | same")
            base = r.get("without", without.get(n))
            out.append(f"| {n} | {'-' if base is None else f'{base:.4f}'} | {r['accuracy']:.4f} | {cost} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/strategies.json")
    ap.add_argument("--parts", default="table,imdb,curve,dapt")
    ap.add_argument("--rows", default="100,300,1000", help="curve: train rows besides all")
    ap.add_argument("--imdb-rows", type=int, default=2000, help="IMDB subset (ingest.max_rows: 80%% of it trains)")
    ap.add_argument("--dapt-texts", type=int, default=5000, help="IMDB texts the pretrain stage trains on")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="table and imdb: these strategies only")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--render", type=Path, help="print the markdown tables of a result file and exit")
    args = ap.parse_args(argv)
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return 0
    parts, chosen = set(args.parts.split(",")), set(args.strategies.split(","))
    if unknown := chosen - set(STRATEGIES):
        ap.error(f"unknown strategies {sorted(unknown)}; choose from {list(STRATEGIES)}")
    base = committed_params("strategies", None)
    base["evaluate"]["baselines"] = ["majority"]
    tmp, root, commit, env, proc, wall = repro_in_clone(ROOT, "bench-strategies-", {}, base, args.out.with_suffix(".log"))
    if proc.returncode:
        return proc.returncode
    log = args.out.with_suffix(".log")
    result = {"command": command_line("bench.strategies", argv), "commit": commit, "machine": machine_info(),
              "strategies": STRATEGIES, "rotten_tomatoes": {"full": measured(root, wall)}}
    if "table" in parts:
        for name, extra in STRATEGIES.items():
            if name != "full" and name in chosen:
                set_params(root, base, extra)
                result["rotten_tomatoes"][name] = run(root, env, log, f"RT {name}")
    set_params(root, base)
    sizes = export_splits(root)
    if "imdb" in parts:
        result["imdb"] = {"rows": args.imdb_rows}
        for name, extra in STRATEGIES.items():
            if name not in chosen:
                continue
            set_params(root, base, extra, {"source": "demo:imdb", "max_rows": args.imdb_rows})
            result["imdb"][name] = run(root, env, log, f"IMDB {name}")
    files = {"source": "data/source/rt_train.csv", "validation_file": "data/source/rt_validation.csv",
             "test_file": "data/source/rt_test.csv"}
    rows = [int(n) for n in args.rows.split(",") if n]
    if "curve" in parts or "dapt" in parts:
        import pandas as pd

        train = pd.read_csv(root / "data/source/rt_train.csv")
        for n in rows:
            train.head(n).to_csv(root / f"data/source/rt_train_{n}.csv", index=False)
    if "curve" in parts:
        curve = result["curve"] = {"train_rows_all": sizes["train"]}
        for name in CURVE:
            curve[name] = {str(sizes["train"]): result["rotten_tomatoes"].get(name, {}).get("accuracy")}
            for n in rows:
                set_params(root, base, STRATEGIES[name], files | {"source": f"data/source/rt_train_{n}.csv"})
                curve[name][str(n)] = run(root, env, log, f"curve {name} {n}")["accuracy"]
        png = args.out.with_name("learning_curve.png")
        curve_plot({k: {x: y for x, y in v.items() if y is not None} for k, v in curve.items() if k in CURVE}, png)
        result["curve_plot"] = str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png)
    if "dapt" in parts:
        import pandas as pd

        from stages.readers import read_demo

        imdb = read_demo("imdb").sample(n=args.dapt_texts, random_state=0)
        imdb[["text"]].to_csv(root / "data/source/imdb_texts.csv", index=False)
        dapt = result["dapt"] = {"texts": args.dapt_texts}
        # One pretrain: its inputs (these texts, the model, max_length, the pretrain params) are the same for every
        # train size, so it would give the same encoder each time (~16 min here); the later sizes fine-tune from it.
        encoder, pre = tmp / "dapt-encoder", None
        for n in [*rows[-2:], sizes["train"]] if len(rows) >= 2 else [sizes["train"]]:
            ingest = files | {"source": f"data/source/rt_train_{n}.csv" if n != sizes["train"] else files["source"]}
            if pre is None:
                set_params(root, base, ingest=ingest, pretrain={"enabled": True, "source": "data/source/imdb_texts.csv"})
                dapt[str(n)] = run(root, env, log, f"dapt {n}")
                pre = json.loads((root / "reports/pretrain.json").read_text())
                shutil.copytree(root / "models/pretrained", encoder)
                dapt[str(n)]["pretrain"] = pre
            else:
                set_params(root, base, ingest=ingest, model={"name": str(encoder)})
                dapt[str(n)] = run(root, env, log, f"dapt {n}") | {"pretrain": "the encoder of the first size's run"}
            if n == sizes["train"]:  # without it: the table's full run, on these rows
                dapt[str(n)]["without"] = result["rotten_tomatoes"]["full"]["accuracy"]
            elif "curve" not in parts:  # the run without it, on the same rows
                set_params(root, base, ingest=ingest)
                result.setdefault("curve", {}).setdefault("full", {})[str(n)] = run(root, env, log,
                                                                                   f"no dapt {n}")["accuracy"]
    result["mlflow_run"] = log_to_mlflow(result, args.out.with_name("learning_curve.png"))
    return finish(args.out, result, f"wrote {args.out}", tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
