"""flows.reproduce's worktree side: git and dvc in the temporary checkout a registered version is rebuilt in
(its DVC cache and config, its sources, the environment its pipeline runs with)."""

from __future__ import annotations

import collections
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from stages.io import PipelineError

SCHEMES = ("demo:", "hf:", "packaged:")  # params naming a source or model that is not a path
log = logging.getLogger("flows.reproduce")


def sh(*cmd: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A quick command's result, its output captured; the caller decides what its exit status means."""
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def git(*args: str, cwd: Path) -> str:
    proc = sh("git", *args, cwd=cwd)
    if proc.returncode:
        raise PipelineError(f"git {' '.join(args)}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return proc.stdout.strip()


def run_logged(cmd: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    """Run `cmd`, its output relayed to stderr as it comes; a failure is one line with its last error line."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    try:
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line.rstrip())
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: stop it before the worktree goes
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if rc:
        errors = [t for t in tail if t.lower().startswith(("error", "traceback")) or " error: " in t] or list(tail)
        raise PipelineError(f"{what} failed (exit {rc}): {(errors or ['no output'])[-1].strip()}")


def dvc_exe() -> str:
    """This interpreter's dvc (the venv's), else the one on PATH."""
    exe = Path(sys.executable).with_name("dvc")
    return str(exe) if exe.exists() else "dvc"


def prepare(repo: Path, project: Path, env: dict[str, str]) -> None:
    """The worktree's DVC: this checkout's cache and local config; DVC-tracked sources checked out (or pulled)."""
    dvc = [dvc_exe()]
    cache = sh(*dvc, "cache", "dir", cwd=repo, env=env).stdout.strip()
    if (repo / ".dvc/config.local").exists():  # remotes and their credentials live there, out of git
        shutil.copy2(repo / ".dvc/config.local", project / ".dvc/config.local")
    if cache:
        path = Path(cache) if Path(cache).is_absolute() else (repo / ".dvc" / cache).resolve()
        run_logged([*dvc, "cache", "dir", "--local", str(path)], project, env, "dvc cache dir")
    sources = [p for p in git("ls-files", "-z", "--", "*.dvc", cwd=project).split("\0") if p]
    if not sources:
        return
    try:  # the cache first: no remote needed for what this checkout already has
        run_logged([*dvc, "checkout", *sources], project, env, "dvc checkout")
        return
    except PipelineError as e:
        remote = sh(*dvc, "config", "core.remote", cwd=project, env=env).stdout.strip()
        if not remote:
            raise PipelineError(
                f"{e} (the DVC cache lacks a tracked source and no default remote is configured: "
                "dvc remote add -d <name> <url>)"
            ) from None
    log.info("the DVC cache lacks a tracked source: dvc pull from remote '%s'", remote)
    run_logged([*dvc, "pull", *sources], project, env, f"dvc pull from remote '{remote}'")


def missing_sources(project: Path, repo: Path) -> list[str]:
    """What the pipeline at the commit reads but git and DVC did not bring: dvc.yaml deps that no stage writes, and
    the files params.yaml names (ingest sources, a local base model)."""
    stages = (yaml.safe_load((project / "dvc.yaml").read_text()) or {}).get("stages", {})
    outs = {
        next(iter(o)) if isinstance(o, dict) else o
        for s in stages.values()
        for kind in ("outs", "metrics", "plots")
        for o in s.get(kind, [])
    }
    missing = [
        f"{dep} (a dvc.yaml dependency)"
        for s in stages.values()
        for dep in s.get("deps", [])
        if not any(dep == o or dep.startswith(f"{o}/") for o in outs) and not (project / dep).exists()
    ]
    params = yaml.safe_load((project / "params.yaml").read_text()) or {}
    named = {f"ingest.{k}": (params.get("ingest") or {}).get(k) for k in ("source", "validation_file", "test_file")}
    if (params.get("pretrain") or {}).get("enabled"):
        named["pretrain.source"] = params["pretrain"].get("source")
    for key, value in named.items():
        if isinstance(value, str) and not value.startswith(SCHEMES) and not (project / value).exists():
            missing.append(f"{value} ({key})")
    model = (params.get("model") or {}).get("name")
    if isinstance(model, str) and not model.startswith(SCHEMES):
        path = Path(model)
        if (path.is_absolute() and not path.exists()) or (
            not path.is_absolute() and (repo / path).exists() and not (project / path).exists()
        ):
            missing.append(f"{model} (model.name)")
    return sorted(set(missing))


def pipeline_env(store: str, project: Path) -> dict[str, str]:
    """The stages' environment: this interpreter's bin first (dvc's `python`), the worktree's code first, MLflow on
    the throwaway store, and nothing that would tie the run to a flow, sweep or experiment of this checkout."""
    from stages.lineage import EXP_BASELINE_ENV, EXP_NAME_ENV, FLOW_RUN_ENV
    from stages.tracking import SWEEP_TAGS

    drop = {
        FLOW_RUN_ENV,
        EXP_NAME_ENV,
        EXP_BASELINE_ENV,
        *SWEEP_TAGS,
        "MLFLOW_RUN_ID",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_EXPERIMENT_NAME",
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("MLFLOW_TRACKING", "MLFLOW_REGISTRY"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(project), os.environ.get("PYTHONPATH", "")) if p)
    return env | {"MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store}
