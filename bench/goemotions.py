"""Multi-label on GoEmotions (28 labels, the authors' split): our pipeline, then the plain-Trainer reference on the very
same split files, one after the other on this machine.

Ours: `dvc repro` in a fresh clone of HEAD with `task: multilabel_classification` and params.yaml's defaults
otherwise; the TSVs are given a header line and read as they are (comma-joined label ids named by labels.txt).
The reference (bench/multilabel_reference.py: HF Trainer with group_by_length, bf16, fused AdamW, best epoch by
validation macro-F1) then trains on the clone's `data/augmented` split files with the same params.yaml values, and is
scored with per-label thresholds tuned on validation, as ours is (and with 0.5 and the paper's 0.3).

    python -m bench.goemotions --out bench/results/goemotions.json                       # ~1 h on 2 cores
    python -m bench.goemotions --max-train 500 --epochs 1 --out /tmp/goemotions_smoke.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.common import command_line, committed_params, finish, machine_info, project_args, repro_in_clone

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "goemotions"
FILES = {"train.tsv": "train", "dev.tsv": "validation", "test.tsv": "test"}


def project_params(names: list[str], max_train: int | None, epochs: int | None) -> dict:
    """params.yaml as committed, switched to multi-label on the GoEmotions files."""
    return committed_params("goemotions", epochs, "multilabel_classification", source="data/source/train.tsv",
                            validation_file="data/source/dev.tsv", test_file="data/source/test.tsv",
                            label_column="labels", label_separator=",", label_names=names, max_rows=max_train)


def main(argv: list[str] | None = None) -> int:
    args = project_args(__doc__, DEFAULT_DATA, ROOT / "bench/results/goemotions.json", argv)
    if not (args.data / "train.tsv").exists():
        print(f"skip: no GoEmotions files in {args.data}")
        return 0
    names = (args.data / "labels.txt").read_text().split()
    params = project_params(names, args.max_train, args.epochs)
    # the authors' files, with a header line: text, labels (ids), comment id
    files = {f"data/source/{name}": "text\tlabels\tid\n" + (args.data / name).read_text(encoding="utf-8")
             for name in FILES}
    tmp, root, commit, env, proc, wall = repro_in_clone(ROOT, "bench-goemotions-", files, params,
                                                        args.out.with_suffix(".log"))
    if proc.returncode:
        return proc.returncode
    read = lambda name: json.loads((root / name).read_text())  # noqa: E731
    ours = {"dvc_repro_seconds": round(wall, 1), "train": read("reports/train.json"),
            "test": read("reports/metrics.json")["test"], "baselines": read("reports/metrics.json")["baselines"],
            "clean": read("reports/clean.json")["total"], "ingest": read("data/raw/summary.json")}
    ref_out = tmp / "reference.json"
    ref_cmd = [sys.executable, "-m", "bench.multilabel_reference", "--data", str(root / "data/augmented"),
               "--params", str(root / "params.yaml"), "--out", str(ref_out)]
    if args.epochs:
        ref_cmd += ["--epochs", str(args.epochs)]
    ref = subprocess.run(ref_cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if ref.returncode:
        print(ref.stdout[-3000:], ref.stderr[-3000:], file=sys.stderr)
        return ref.returncode
    reference = json.loads(ref_out.read_text())
    tuned = reference["test"]["tuned_on_validation"]
    result = {"command": command_line("bench.goemotions", argv),
              "commit": commit, "params": params, "ours": ours, "reference": reference,
              "published": {"model": "BERT-base", "macro_f1": 0.46, "threshold": 0.3, "source": "Demszky et al., 2020"},
              "machine": machine_info()}
    return finish(args.out, result,
                  f"ours: test macro-F1 {ours['test']['f1_macro']:.4f}, micro-F1 {ours['test']['f1_micro']:.4f}, "
                  f"training {ours['train']['train_seconds']} s ({ours['train']['train_samples_per_s']} samples/s); "
                  f"reference (tuned thresholds): macro-F1 {tuned['macro_f1']:.4f}, micro-F1 {tuned['micro_f1']:.4f}, "
                  f"training {reference['train']['seconds']} s", tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
