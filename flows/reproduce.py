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
import json
import logging
import shutil
import signal
import tempfile
import time
from pathlib import Path

from flows.reproduce_compare import compare, compare_data, compare_weights, rebuilt_numbers, recorded_scores, table
from flows.worktree import dvc_exe, git, missing_sources, pipeline_env, prepare, run_logged, sh
from stages.io import PipelineError, write_json

COMMIT_TAG, DIRTY_TAG, DATA_PREFIX = "mlflow.source.git.commit", "git.dirty", "dvc."
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
