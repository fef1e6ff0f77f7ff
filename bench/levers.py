"""Where the fine-tuning speed comes from: the pipeline's own training loop (stages.training.train) on the same
rows with one lever switched on at a time, interleaved in rounds so that drifting machine load hits all alike.

    python -m bench.levers --data data/tokenized --out bench/results/levers.json

1. fp32, random batches, foreach AdamW  (the recipe of a plain Trainer with dynamic padding)
2. + length-grouped batches             (finetune.group_by_length)
3. + fused AdamW                        (one kernel per optimizer step)
4. + bf16 autocast                      (finetune.precision auto on a CPU with native bf16) = the default

Then levers beyond the defaults, tried and not adopted (2 epochs each, the second epoch's speed: torch.compile
spends the first compiling): the default again, + torch.compile (inductor, dynamic shapes: batch lengths vary),
+ dropout masks from `torch.rand(...) >= p` instead of `bernoulli_` (the profile's 17%).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from unittest import mock

from bench.common import command_line, machine_info, write_result
from bench.profile import train_slice

LEVERS = [("fp32, random batches, foreach AdamW", dict(group_by_length=False, precision="fp32"), False),
          ("+ length-grouped batches", dict(group_by_length=True, precision="fp32"), False),
          ("+ fused AdamW", dict(group_by_length=True, precision="fp32"), True),
          ("+ bf16 autocast (the default here)", dict(group_by_length=True, precision="bf16"), True)]


def one(model_state, labels, rows, overrides: dict, fused: bool) -> dict:
    import torch

    from stages.params import FinetuneParams
    from stages.tasks import get
    from stages.training import train

    task = get("sequence_classification")
    model = task.load_model(model_state, labels)
    p = FinetuneParams(epochs=1, seed=42, **overrides)
    adamw = torch.optim.AdamW
    with mock.patch.object(torch.optim, "AdamW", lambda *a, **k: adamw(*a, **(k | {"fused": fused or None}))):
        summary = train(model, rows, task.collate, lambda m, d: {"accuracy": 0.0}, p, "accuracy", 0, torch.device("cpu")).summary
    return {k: summary[k] for k in ("train_samples_per_s", "train_real_tokens_per_s", "padding_share", "precision")}


def beyond(model_state, labels, rows, hook: str | None) -> dict:
    """Two epochs of the default recipe with `hook` applied; the second epoch's speed and the first's extra seconds."""
    import torch

    from stages.params import FinetuneParams
    from stages.tasks import get
    from stages.training import train

    task = get("sequence_classification")
    model = task.load_model(model_state, labels)
    if hook == "compile":
        model.forward = torch.compile(model.forward, dynamic=True)
    plain = torch.nn.Dropout.forward

    def rand_dropout(self, x):
        return x if not self.training or self.p == 0 else x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))
    with mock.patch.object(torch.nn.Dropout, "forward", rand_dropout if hook == "rand_dropout" else plain):
        h = train(model, rows, task.collate, lambda m, d: {"accuracy": 0.0}, FinetuneParams(epochs=2, seed=42),
                  "accuracy", 0, torch.device("cpu")).history
    return {"samples_per_s": round(h[1]["train_samples_per_s"], 1),
            "first_epoch_extra_s": round(h[0]["epoch_seconds"] - h[1]["epoch_seconds"], 1)}


BEYOND = [("the default (bf16, grouped, fused)", None), ("+ torch.compile (inductor, dynamic=True)", "compile"),
          ("+ dropout masks from torch.rand (not bernoulli_)", "rand_dropout")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/tokenized"), help="the tokenize stage's output")
    ap.add_argument("--rows", type=int, default=1600, help="train rows per measurement (50 batches of 32)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results/levers.json"))
    ap.add_argument("--quick", action="store_true", help="320 rows, 1 round")
    ap.add_argument("--no-beyond", action="store_true", help="skip the levers beyond the defaults")
    args = ap.parse_args(argv)
    from stages.cli import set_env_defaults

    set_env_defaults()
    from stages.params import PACKAGED_MODEL

    rows, rounds = (320, 1) if args.quick else (args.rows, args.rounds)
    data, labels = train_slice(args.data, rows)
    load, runs = os.getloadavg(), {name: [] for name, _, _ in LEVERS}
    for r in range(rounds):
        for name, overrides, fused in LEVERS:
            runs[name].append(one(PACKAGED_MODEL, labels, data, overrides, fused))
            print(f"round {r + 1} {name}: {runs[name][-1]['train_samples_per_s']:.1f} samples/s", flush=True)
    table = {name: {"samples_per_s": statistics.median(x["train_samples_per_s"] for x in rs),
                    "real_tokens_per_s": statistics.median(x["train_real_tokens_per_s"] for x in rs),
                    "padding_share": rs[0]["padding_share"], "precision": rs[0]["precision"], "runs": rs}
             for name, rs in runs.items()}
    base = table[LEVERS[0][0]]["samples_per_s"]
    markdown = ["### Fine-tuning levers, one at a time (the pipeline's loop, same rows, median of "
                f"{rounds} interleaved rounds of {rows} rows)", "", "| | samples/s | real tokens/s | padding | vs first row |",
                "|---|---|---|---|---|"]
    markdown += [f"| {n} | {t['samples_per_s']:.1f} | {t['real_tokens_per_s']:,.0f} | {t['padding_share']:.1%} | "
                 f"{t['samples_per_s'] / base:.2f}x |" for n, t in table.items()]
    extra = {}
    if not args.no_beyond:
        for name, hook in BEYOND:
            extra[name] = beyond(PACKAGED_MODEL, labels, data, hook)
            print(f"{name}: {extra[name]}", flush=True)
        base2 = extra[BEYOND[0][0]]["samples_per_s"]
        markdown += ["", (f"Beyond the defaults, tried and not adopted (the second of 2 epochs on the same {rows} rows; "
                          "the first epoch's extra seconds are compilation and warm-up):"), "",
                     "| | samples/s | vs the default | first epoch's extra seconds |", "|---|---|---|---|"]
        markdown += [f"| {n} | {t['samples_per_s']:.1f} | {t['samples_per_s'] / base2:.2f}x | {t['first_epoch_extra_s']:.0f} s |"
                     for n, t in extra.items()]
    result = {"benchmark": "levers", "command": command_line("bench.levers", argv), "beyond": extra,
              "rows": rows, "rounds": rounds, "levers": table, "markdown": markdown,
              "loadavg": {"start": load, "end": os.getloadavg()}, "machine": machine_info()}
    write_result(args.out, result)
    print("\n".join(markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
