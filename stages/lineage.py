"""What an MLflow run records about where it came from: its name, the git and DVC lineage tags, the data it used.

Pure reads of git, dvc.yaml, dvc.lock and the environment DVC and the flow set; stages.tracking writes them to the run.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import yaml

FLOW_RUN_ENV = "PIPELINE_PREFECT_FLOW_RUN_ID"  # set by flows.pipeline for the stages it runs
EXP_NAME_ENV, EXP_BASELINE_ENV = "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"  # set by `dvc exp run` for its stages


def run_name(model: str, task: str) -> str:
    """`<model>-<task>-<dvc experiment name, or the local time>`, e.g. all-MiniLM-L6-v2-sequence-20261124-013312.
    MLflow's generated names repeat here (every run seeds the RNG before it starts), so runs get a meaningful one."""
    short_model = re.split(r"[:/]", model.rstrip("/"))[-1]
    return f"{short_model}-{task.removesuffix('_classification')}-{os.environ.get(EXP_NAME_ENV) or time.strftime('%Y%m%d-%H%M%S')}"


def git_tracked_outs(dvc_file: Path = Path("dvc.yaml")) -> list[str]:
    """The outputs dvc.yaml leaves to git (`cache: false`: reports, plots)."""
    out = []
    for stage in (yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {}).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                if isinstance(entry, dict):
                    out += [path for path, opts in entry.items() if (opts or {}).get("cache") is False]
    return out


def data_hashes(lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """DVC's md5 of each data/ output dvc.lock records."""
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    return {out["path"]: out.get("md5", "") for stage in stages.values() for out in stage.get("outs", [])
            if out["path"].startswith("data/")}


def lineage_tags(lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """git commit (+dirty), the data hashes dvc.lock holds, the DVC experiment and the Prefect flow run if any.
    `git.dirty` looks at what decides the model (code, params.yaml, dvc.yaml, data pointers), not at the pipeline's
    own outputs or dvc.lock: DVC deletes and rewrites those during every run, so counting them made every run dirty."""
    tags: dict[str, str] = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        outputs = [str(lock), *(git_tracked_outs() if Path("dvc.yaml").exists() else [])]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *[f":(exclude){path}" for path in outputs]],
                               capture_output=True, text=True, check=True).stdout.strip()
        tags |= {"mlflow.source.git.commit": commit, "git.dirty": str(bool(dirty)).lower()}
    except (OSError, subprocess.CalledProcessError):
        tags["git.commit"] = "unknown (not a git checkout, or no commit yet)"
    tags |= {f"dvc.{path}": md5 for path, md5 in data_hashes(lock).items()}
    if os.environ.get(EXP_NAME_ENV):
        tags |= {"dvc.exp_name": os.environ[EXP_NAME_ENV], "dvc.exp_baseline_rev": os.environ.get(EXP_BASELINE_ENV, "")}
    if os.environ.get(FLOW_RUN_ENV):
        tags["prefect.flow_run_id"] = os.environ[FLOW_RUN_ENV]
    return tags


def file_md5(path: Path) -> str:
    """md5 of a file's bytes: DVC's hash of that file inside a tracked folder (its .dir manifest lists these)."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
