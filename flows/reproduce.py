"""Rebuild a registered model from its lineage, in a temporary git worktree, and check that it comes out the same.

    python -m flows.reproduce models:/sentiment-classifier@champion
    python -m flows.reproduce models:/sentiment-classifier/3 --tolerance 0.1 --out reproduce.json

The version's run says where the model came from: the git commit (`mlflow.source.git.commit`; refused when `git.dirty`
is true, i.e. trained from uncommitted changes, unless --allow-dirty) and the data hashes dvc.lock held (`dvc.data/`).
That commit is checked out with `git worktree add --detach` in a temp folder, its DVC cache pointed at this checkout's
(with this checkout's .dvc/config.local: remotes, credentials), the DVC-tracked sources checked out from that cache
(`dvc pull` from the default remote when it lacks them), and `dvc repro --force evaluate` runs there: every stage up
to evaluate runs again, none restored from a cache. Its MLflow store is a throwaway SQLite file in the temp folder, so
reproduce never registers a version nor writes to this project's store. Then it prints the recorded and the rebuilt
test metrics side by side, compares the rebuilt data hashes (the worktree's dvc.lock) and test split with the recorded
ones, and says whether the rebuilt weights are byte-identical to the registered ones (told, not judged). It fails
(exit 1, one line) when a score (0-1) differs by more than --tolerance points (0.5 points = 0.005; counts such as
test_rows must be equal) or a data hash differs. On the same machine (CPU, same seeds) the numbers are identical. The
worktree is removed afterwards, also on failure or Ctrl-C (--keep keeps it). Only what git and DVC hold at the commit
is rebuilt: a source neither committed nor DVC-tracked is named as missing.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from stages.io import PipelineError, write_json

COMMIT_TAG, DIRTY_TAG, DATA_PREFIX = "mlflow.source.git.commit", "git.dirty", "dvc."
SCORE_PREFIXES = ("test_", "baseline_")  # what evaluate logs about the test split: the model's and the baselines'
SCHEMES = ("demo:", "hf:", "packaged:")  # params naming a source or model that is not a path
log = logging.getLogger(__name__)


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/<name>@<alias>` → (name, alias, None); `models:/<name>/<version>` → (name, None, version)."""
    rest = uri.removeprefix("models:/") if uri.startswith("models:/") else None
    if rest and "@" in rest and "/" not in rest.split("@")[1]:
        name, alias = rest.rsplit("@", 1)
        if name and alias:
            return name, alias, None
    elif rest and "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    raise PipelineError(f"{uri}: name a registered version as models:/<name>@<alias> or models:/<name>/<version>")


def resolve(client, uri: str):
    """The model version a URI names and its run."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_uri(uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise PipelineError(f"{uri}: no registered model '{name}' in this store") from None
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        known = ", ".join(sorted(model.aliases)) if alias else ""
        raise PipelineError(
            f"{uri}: {name} has no "
            + (f"alias '{alias}' (its aliases: {known or 'none'})" if alias else f"version {version}")
        ) from None
    if not mv.run_id:
        raise PipelineError(f"{uri}: version {mv.version} has no MLflow run, so no lineage to rebuild it from")
    try:
        return mv, client.get_run(mv.run_id)
    except MlflowException:
        raise PipelineError(f"{uri}: version {mv.version}'s run {mv.run_id} is not in this store") from None


def sh(*cmd: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A quick command's result, its output captured; the caller decides what its exit status means."""
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def git(*args: str, cwd: Path) -> str:
    proc = sh("git", *args, cwd=cwd)
    if proc.returncode:
        raise PipelineError(f"git {' '.join(args)}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return proc.stdout.strip()


def lineage_of(uri: str, mv, tags: dict[str, str], repo: Path, allow_dirty: bool) -> tuple[str, bool]:
    """The commit the version was trained from, and whether that run was dirty; refuses what cannot be rebuilt."""
    where = f"{uri} (version {mv.version}, run {mv.run_id})"
    commit = tags.get(COMMIT_TAG, "")
    if not commit:
        raise PipelineError(
            f"{where} has no '{COMMIT_TAG}' tag (trained outside a git checkout): nothing to rebuild from"
        )
    dirty = tags.get(DIRTY_TAG, "false") == "true"
    if dirty and not allow_dirty:
        raise PipelineError(
            f"{where} was trained from uncommitted changes ({DIRTY_TAG}: true) on commit {commit[:12]}: "
            "it cannot be rebuilt exactly (--allow-dirty rebuilds the commit anyway)"
        )
    if sh("git", "cat-file", "-e", f"{commit}^{{commit}}", cwd=repo).returncode:
        raise PipelineError(
            f"{where} was trained from commit {commit[:12]}, which is not in this repository "
            "(git fetch the branch that has it)"
        )
    return commit, dirty


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


def recorded_scores(mv, metrics: dict[str, float], metric_tag: str | None) -> dict[str, float]:
    """The version's numbers: its register metric (the version tag) first, then what evaluate logged to its run."""
    out = {}
    if metric_tag and mv.tags.get(metric_tag) not in (None, "None"):
        out[metric_tag] = float(mv.tags[metric_tag])
    return out | {k: v for k, v in sorted(metrics.items()) if k.startswith(SCORE_PREFIXES) and k not in out}


def count_names() -> set[str]:
    """The metrics that count test units (`test_rows`, NER's `test_sentences`): equal or not, no tolerance."""
    from stages.tasks import TASKS

    return {f"test_{t.unit}" for t in TASKS.values()}


def compare(
    recorded: dict[str, float], rebuilt: dict[str, float], tolerance: float, counts: set[str] | None = None
) -> list[dict]:
    """Pure core: one row per recorded number. Scores (0-1) may differ by `tolerance` points (hundredths: 0.5
    points = 0.005); counts (`counts`, default `count_names()`) must be equal."""
    counts = count_names() if counts is None else counts
    rows = []
    for name, old in recorded.items():
        new = rebuilt.get(name)
        count = name in counts
        if new is None:
            ok, diff = False, None
        elif math.isnan(old) or math.isnan(new):
            ok, diff = math.isnan(old) and math.isnan(new), None
        else:
            diff = new - old if count else (new - old) * 100
            ok = diff == 0 if count else abs(diff) <= tolerance + 1e-9
        rows.append(
            {
                "name": name,
                "recorded": old,
                "rebuilt": new,
                "kind": "count" if count else "score",
                "diff": diff,
                "ok": ok,
            }
        )
    return rows


def compare_data(recorded: dict[str, str], rebuilt: dict[str, str]) -> list[dict]:
    """Pure core: the recorded data hashes (and test split) against the rebuilt ones."""
    return [
        {"path": path, "recorded": md5, "rebuilt": rebuilt.get(path), "ok": rebuilt.get(path) == md5}
        for path, md5 in recorded.items()
    ]


def table(rows: list[dict], data: list[dict], tolerance: float, weights: dict | None = None) -> str:
    def num(v, count: bool) -> str:
        return "missing" if v is None else f"{v:.0f}" if count else f"{v:.6f}"

    width = max([len(r["name"]) for r in rows] + [len(d["path"]) for d in data] + [6])
    lines = [
        f"{'metric':<{width}}  {'recorded':>12}  {'rebuilt':>12}  {'diff':>10}",
    ]
    for r in rows:
        count = r["kind"] == "count"
        diff = "" if r["diff"] is None else f"{r['diff']:+.0f}" if count else f"{r['diff']:+.2f} pt"
        verdict = "" if r["ok"] else "  DIFFERS" + ("" if count or r["rebuilt"] is None else f" (> {tolerance} pt)")
        lines.append(
            f"{r['name']:<{width}}  {num(r['recorded'], count):>12}  {num(r['rebuilt'], count):>12}  "
            f"{diff:>10}{verdict}"
        )
    if data:
        lines += ["", f"{'data':<{width}}  {'recorded':<36}  {'rebuilt':<36}"]
        lines += [
            f"{d['path']:<{width}}  {d['recorded']:<36}  {d['rebuilt'] or 'missing':<36}"
            f"{'' if d['ok'] else '  DIFFERS'}"
            for d in data
        ]
    if weights:
        lines += [
            "",
            f"weights ({', '.join(weights['files'])}): "
            + (
                "byte-identical to the registered ones"
                if weights["identical"]
                else "not byte-identical to the registered ones (expected on another machine or a GPU: "
                "the metrics decide)"
            ),
        ]
    return "\n".join(lines)


def rebuilt_numbers(project: Path, store: str) -> tuple[str, dict[str, float], str | None]:
    """The rebuilt run's id and metrics (from the throwaway store), and the test split's hash evaluate wrote."""
    import numpy as np
    from mlflow import MlflowClient

    run_id = json.loads((project / "reports/mlflow_run.json").read_text())["run_id"]
    metrics = MlflowClient(store, registry_uri=store).get_run(run_id).data.metrics
    split = None
    if (project / "reports/test_counts.npz").exists():
        with np.load(project / "reports/test_counts.npz", allow_pickle=False) as z:
            split = str(z["split"]) if "split" in z else None
    return run_id, metrics, split


def model_files(client, mv, dest: Path) -> dict[str, str]:
    """md5 of each file of the version's registered fine-tuned folder (the pyfunc's one artifact folder)."""
    import mlflow

    from stages.lineage import file_md5

    base = f"{client.get_model_version_download_uri(mv.name, mv.version).rstrip('/')}/artifacts"
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=base, dst_path=str(dest), tracking_uri=client.tracking_uri)
    )
    folder = next(p for p in sorted(local.iterdir()) if p.is_dir())
    return {f.relative_to(folder).as_posix(): file_md5(f) for f in sorted(folder.rglob("*")) if f.is_file()}


def compare_weights(client, mv, project: Path, dest: Path) -> dict | None:
    """Whether the rebuilt weights (models/finetuned/*.safetensors) are byte-identical to the registered ones: told,
    not judged (another machine or a GPU gives other bits, and the metrics decide); None when they cannot be read."""
    from mlflow.exceptions import MlflowException

    from stages.lineage import file_md5

    try:
        recorded = {k: v for k, v in model_files(client, mv, dest).items() if k.endswith(".safetensors")}
    except (MlflowException, OSError, StopIteration) as e:
        log.warning("could not read version %s's registered weights, so they are not compared: %s", mv.version, e)
        return None
    folder = project / "models/finetuned"
    rebuilt = {f.relative_to(folder).as_posix(): file_md5(f) for f in sorted(folder.rglob("*.safetensors"))}
    return {"files": sorted(recorded), "identical": bool(recorded) and recorded == rebuilt}


def rebuild(client, mv, tags: dict[str, str], commit: str, repo: Path, keep: bool) -> dict:
    """Check `commit` out in a temp worktree, `dvc repro --force evaluate` there into a throwaway store; returns the
    rebuilt run's id, metrics and scores, the data hashes (recorded and rebuilt) and the weights' comparison."""
    from stages.lineage import data_hashes

    top = Path(git("rev-parse", "--show-toplevel", cwd=repo))
    tmp = Path(tempfile.mkdtemp(prefix="reproduce-"))
    worktree, store = tmp / "worktree", f"sqlite:///{tmp / 'mlflow.db'}"
    project = worktree / repo.resolve().relative_to(top.resolve())
    try:
        git("worktree", "add", "--detach", "--quiet", str(worktree), commit, cwd=repo)
        env = pipeline_env(store, project)
        prepare(repo, project, env)
        if missing := missing_sources(project, repo):
            raise PipelineError(
                f"commit {commit[:12]} lacks what its pipeline reads: {', '.join(missing)}: neither in "
                "git nor tracked by DVC there (reproduce rebuilds only what git and DVC hold)"
            )
        log.info("dvc repro --force evaluate in %s (MLflow: %s; nothing is registered)", project, store)
        run_logged([dvc_exe(), "repro", "--force", "evaluate"], project, env, "dvc repro in the worktree")
        run_id, metrics, split = rebuilt_numbers(project, store)
        scores = json.loads(s.read_text()) if (s := project / "reports/scores.json").exists() else None
        recorded = {k.removeprefix(DATA_PREFIX): v for k, v in tags.items() if k.startswith(f"{DATA_PREFIX}data/")}
        rebuilt = data_hashes(project / "dvc.lock")
        if mv.tags.get("test_split"):  # the hash of the clean test split register compared the champion on
            recorded["test split (version tag test_split)"] = mv.tags["test_split"]
            rebuilt["test split (version tag test_split)"] = split
        weights = compare_weights(client, mv, project, tmp / "registered")
    finally:
        if keep:
            log.info("kept the worktree %s (remove it with: git worktree remove --force %s)", worktree, worktree)
        else:
            sh("git", "worktree", "remove", "--force", "--force", str(worktree), cwd=repo)
            shutil.rmtree(tmp, ignore_errors=True)
            sh("git", "worktree", "prune", cwd=repo)
    return {
        "run_id": run_id,
        "metrics": metrics,
        "scores": scores,
        "recorded_data": recorded,
        "rebuilt_data": rebuilt,
        "weights": weights,
        "worktree": str(worktree) if keep else None,
    }


def reproduce(client, uri: str, repo: Path, tolerance: float, allow_dirty: bool, keep: bool) -> dict:
    """Rebuild the version `uri` names in a temp worktree; returns the report (`problems` empty when it reproduced)."""
    mv, run = resolve(client, uri)
    commit, dirty = lineage_of(uri, mv, run.data.tags, repo, allow_dirty)
    metric_tag = next((k for k in mv.tags if k.startswith("test_") and k != "test_split"), None)
    recorded = recorded_scores(mv, run.data.metrics, metric_tag)
    if not recorded:
        raise PipelineError(f"{uri}: version {mv.version}'s run logged no test metrics: nothing to compare with")
    log.info(
        "%s is version %s of %s, run %s, commit %s%s: rebuilding it",
        uri,
        mv.version,
        mv.name,
        mv.run_id,
        commit[:12],
        " (dirty: rebuilding the commit as it is)" if dirty else "",
    )
    started = time.monotonic()
    new = rebuild(client, mv, run.data.tags, commit, repo, keep)
    rows = compare(recorded, new["metrics"], tolerance)
    data = compare_data(new["recorded_data"], new["rebuilt_data"])
    problems = [f"{r['name']}: recorded {r['recorded']}, rebuilt {r['rebuilt']}" for r in rows if not r["ok"]]
    problems += [f"{d['path']}: recorded hash {d['recorded']}, rebuilt {d['rebuilt']}" for d in data if not d["ok"]]
    return {
        "model_uri": uri,
        "model_name": mv.name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "commit": commit,
        "dirty": dirty,
        "tolerance_points": tolerance,
        "metrics": rows,
        "data": data,
        "rebuilt_run_id": new["run_id"],
        "rebuilt_scores": new["scores"],
        "weights": new["weights"],
        "worktree": new["worktree"],
        "seconds": round(time.monotonic() - started, 1),
        "reproduced": not problems,
        "problems": problems,
    }


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM too: the worktree is removed on the way out


def main(argv: list[str] | None = None) -> None:
    from stages import tracking

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_uri", help="models:/<name>@<alias> or models:/<name>/<version>")
    ap.add_argument(
        "--tolerance",
        type=float,
        default=0.5,
        help="largest allowed difference of a score, in points: hundredths of a 0-1 score (default 0.5 = "
        "0.005 accuracy); counts such as test_rows must be equal",
    )
    ap.add_argument("--out", type=Path, help="write the full report (both sides, every hash) as JSON here")
    ap.add_argument(
        "--allow-dirty",
        action="store_true",
        help="rebuild a version trained from uncommitted changes anyway (its commit, without them)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary worktree (its path is logged)")
    args = ap.parse_args(argv)
    if args.tolerance < 0:
        raise PipelineError(f"--tolerance {args.tolerance}: a difference in points, 0 or more")
    signal.signal(signal.SIGTERM, _interrupt)
    tracking.check_server()
    report = reproduce(tracking.client(), args.model_uri, Path.cwd(), args.tolerance, args.allow_dirty, args.keep)
    print(table(report["metrics"], report["data"], args.tolerance, report["weights"]), flush=True)
    if args.out:
        write_json(args.out, report)
    if report["problems"]:
        more = f" (and {len(report['problems']) - 1} more)" if len(report["problems"]) > 1 else ""
        raise PipelineError(
            f"{args.model_uri} (version {report['version']}) does not reproduce: "
            f"{report['problems'][0]}{more}; tolerance {args.tolerance} points"
        )
    same = sum(r["rebuilt"] == r["recorded"] for r in report["metrics"])
    weights = {None: "", True: "; weights byte-identical", False: "; weights not byte-identical"}[
        report["weights"] and report["weights"]["identical"]
    ]
    log.info(
        "%s (version %s) reproduces: %d of %d numbers identical, all within %s points; %d data hashes equal%s (%.0f s)",
        args.model_uri,
        report["version"],
        same,
        len(report["metrics"]),
        args.tolerance,
        len(report["data"]),
        weights,
        report["seconds"],
    )


if __name__ == "__main__":
    from stages.cli import run

    run(main, "reproduce")
