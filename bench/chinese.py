"""ChnSentiCorp (Chinese hotel reviews) through the pipeline with the packaged English model: what a user who points
the default job at Chinese text gets, measured.

1. `dvc repro` in a fresh clone of HEAD with params.yaml's defaults and the ChnSentiCorp file: tokenize's coverage
   check stops the run (the English vocabulary turns most Chinese characters into [UNK]); the one line it says is
   recorded.
2. The same clone with `tokenize.max_unk_share: 1.0` (the user overrides the stop on purpose) and the three
   baselines (majority, frozen_probe, tfidf: TF-IDF character n-grams + logistic regression): the fine-tuned English
   model's test accuracy on Chinese next to the baselines, on the same split.

    python -m bench.chinese --out bench/results/chinese.json        # ~15 min on 2 cores
    python -m bench.chinese --max-train 800 --epochs 1 --out /tmp/chinese_smoke.json
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from bench.common import command_line, committed_params, finish, machine_info, project_args, repro, repro_in_clone

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chinese"


def project_params(max_train: int | None, epochs: int | None) -> dict:
    """params.yaml as committed, reading the ChnSentiCorp CSV (columns label, review; 1 positive, 0 negative)."""
    return committed_params("chnsenticorp", epochs, source="data/source/chnsenticorp_hotel.csv", text_column="review",
                            label_names=["negative", "positive"], max_rows=max_train)


def main(argv: list[str] | None = None) -> int:
    args = project_args(__doc__, DEFAULT_DATA, ROOT / "bench/results/chinese.json", argv)
    if not (args.data / "chnsenticorp_hotel.csv").exists():
        print(f"skip: no ChnSentiCorp file in {args.data}")
        return 0
    params = project_params(args.max_train, args.epochs)
    files = {"data/source/chnsenticorp_hotel.csv": (args.data / "chnsenticorp_hotel.csv").read_text(encoding="utf-8")}
    tmp, root, commit, env, proc, wall = repro_in_clone(ROOT, "bench-chinese-", files, params,
                                                        args.out.with_suffix(".log"))
    stop = [line for line in (proc.stdout + proc.stderr).splitlines() if "[UNK]" in line]
    if proc.returncode == 0 or not stop:
        print("expected tokenize to stop on Chinese text with the English model; it did not")
        return 1
    params["tokenize"]["max_unk_share"] = 1.0
    params["evaluate"]["baselines"] = ["majority", "frozen_probe", "tfidf"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc, overridden_wall = repro(root, env, args.out.with_suffix(".log"), append=True)
    if proc.returncode:
        return proc.returncode
    read = lambda name: json.loads((root / name).read_text())  # noqa: E731
    tokenize, metrics = read("reports/tokenize.json"), read("reports/metrics.json")
    result = {"command": command_line("bench.chinese", argv), "commit": commit, "params": params,
              "stop": {"message": stop[0].strip(), "seconds_to_stop": round(wall, 1)},
              "overridden": {"dvc_repro_seconds": round(overridden_wall, 1),
                             "coverage": {n: s["coverage"] for n, s in tokenize["splits"].items()},
                             "warnings": tokenize["warnings"], "train": read("reports/train.json"),
                             "test": metrics["test"], "baselines": metrics["baselines"],
                             "reliability": metrics.get("reliability"), "clean": read("reports/clean.json")["total"],
                             "ingest": read("data/raw/summary.json")},
              "published": {"model": "bert-base-chinese and similar Chinese BERTs", "accuracy": "0.90-0.94",
                            "source": "../shared/data/README.md (ChnSentiCorp-style hotel reviews)"},
              "machine": machine_info()}
    o = result["overridden"]
    return finish(args.out, result,
                  f"stop: {stop[0].strip()[:160]}...; overridden: test accuracy {o['test']['accuracy']:.4f} "
                  f"(tfidf {o['baselines']['tfidf']['accuracy']:.4f}, frozen_probe "
                  f"{o['baselines']['frozen_probe']['accuracy']:.4f}, majority {o['baselines']['majority']['accuracy']:.4f})"
                  f", train [UNK] {100 * o['coverage']['train']['unk_share']:.1f}%", tmp, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
