"""Where a training step's time goes: the torch profiler around the pipeline's own loop (stages.training.train,
default params) on a slice of the real data, self time per operator grouped into what could move it.

    python -m bench.profile --data data/tokenized --out bench/results/profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.common import command_line, machine_info, write_result

GROUPS = [  # (group, operator names): the first group an operator's name matches takes its self time
    ("matmuls (mm, addmm, bmm)", ("aten::mm", "aten::addmm", "aten::bmm")),
    ("dropout masks (bernoulli_)", ("aten::bernoulli_",)),
    ("optimizer (fused AdamW, zero_grad, grad-norm clip)", ("aten::_fused_adamw_", "Optimizer.", "aten::linalg_vector_norm",
                                                           "aten::_foreach", "aten::clamp", "aten::stack")),
    ("zero fills (mostly the dense 30522x384 embedding gradient)", ("aten::fill_", "aten::zero_")),
    ("bf16 casts and copies", ("aten::copy_", "aten::_to_copy", "aten::to")),
    ("softmax, GELU, layer norm and their gradients", ("softmax", "gelu", "layer_norm")),
]


def train_slice(data: Path, rows: int):
    """A seeded random slice of the tokenized train split (the real length mix; a datasets.Dataset, as the training
    loop reads it) and the label names."""
    import datasets
    import numpy as np

    train = datasets.load_from_disk(str(data))["train"]
    pick = np.random.default_rng(0).permutation(len(train))[:rows]
    labels = json.loads((data / "labels.json").read_text())["names"]
    return train.select(pick, keep_in_memory=True), labels


def group_of(name: str) -> str:
    return next((g for g, keys in GROUPS if any(k in name for k in keys)), "other (adds, muls, masks, indexing, ...)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/tokenized"), help="the tokenize stage's output")
    ap.add_argument("--rows", type=int, default=640, help="train rows profiled (20 batches of 32)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/profile.json"))
    ap.add_argument("--quick", action="store_true", help="128 rows")
    args = ap.parse_args(argv)
    from stages.cli import set_env_defaults

    set_env_defaults()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from stages.params import PACKAGED_MODEL, FinetuneParams
    from stages.tasks import get
    from stages.training import train

    rows, labels = train_slice(args.data, 128 if args.quick else args.rows)
    p = FinetuneParams(epochs=1, seed=42)
    no_validation = lambda m, d: {"accuracy": 0.0}  # noqa: E731
    task = get("sequence_classification")
    warm = task.load_model(PACKAGED_MODEL, labels)  # one short run first: thread pools, allocator, oneDNN kernels
    train(warm, rows.select(range(64)), task.collate, no_validation, p, "accuracy", 0, torch.device("cpu"))
    model = task.load_model(PACKAGED_MODEL, labels)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        summary = train(model, rows, task.collate, no_validation, p, "accuracy", 0, torch.device("cpu")).summary
    ops = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in ops)
    groups: dict[str, float] = {}
    for e in ops:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    shares = {g: round(t / total, 4) for g, t in sorted(groups.items(), key=lambda kv: -kv[1])}
    top = [{"op": e.key, "self_ms_per_batch": round(e.self_cpu_time_total / 1e3 / (len(rows) / p.batch_size), 2),
            "calls_per_batch": round(e.count / (len(rows) / p.batch_size), 1)}
           for e in sorted(ops, key=lambda e: -e.self_cpu_time_total)[:15]]
    markdown = [f"### Profile of the default training step (torch profiler, {len(rows)} rows, {summary['precision']}, "
                f"{summary['train_samples_per_s']:.0f} samples/s under the profiler)", "",
                "| where the self time goes | share |", "|---|---|"]
    markdown += [f"| {g} | {s:.1%} |" for g, s in shares.items()]
    result = {"benchmark": "profile", "command": command_line("bench.profile", argv),
              "rows": len(rows), "summary": summary, "shares": shares, "top_ops": top, "markdown": markdown,
              "loadavg": os.getloadavg(), "machine": machine_info()}
    write_result(args.out, result)
    print("\n".join(markdown))
    for t in top[:10]:
        print(f"  {t['op']:<40} {t['self_ms_per_batch']:>8.2f} ms/batch  {t['calls_per_batch']:>6} calls/batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
