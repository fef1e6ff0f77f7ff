"""This machine's matmul peak, fp32 and bf16, with the threads torch uses: the denominator of the
hardware-efficiency figures (training FLOP/s on real tokens / peak).

    python -m bench.peak --out bench/results/peak.json

The peak is the best single square matmul rate over a few sizes (1024-4096), each timed repeatedly
for a few seconds: what the BLAS reaches on this CPU when nothing else limits it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.common import command_line, machine_info, write_result

SIZES = (1024, 2048, 4096)


def matmul_gflops(dtype, n: int, seconds: float) -> float:
    """Best rate of an n x n x n matmul (2n^3 FLOP) over repeated calls for `seconds`."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(dtype) for _ in range(2))
    for _ in range(2):  # warm-up: thread pool, packing buffers
        a @ b
    best, stop = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def measure(seconds: float = 2.0) -> dict:
    import torch

    from stages.modeling import cpu_has_native_bf16

    out: dict = {"threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(), "gflops": {}}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        out["gflops"][name] = {n: round(matmul_gflops(dtype, n, seconds), 1) for n in SIZES}
        out[f"{name}_peak_gflops"] = max(out["gflops"][name].values())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/peak.json"))
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per size and dtype")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    result = {"benchmark": "peak", "command": command_line("bench.peak", argv),
              **measure(args.seconds), "loadavg": {"start": load, "end": os.getloadavg()}, "machine": machine_info()}
    write_result(args.out, result)
    print(f"matmul peak ({result['threads']} threads): fp32 {result['fp32_peak_gflops']:.0f} GFLOP/s, "
          f"bf16 {result['bf16_peak_gflops']:.0f} GFLOP/s (native bf16: {result['native_bf16']}); by size {result['gflops']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
