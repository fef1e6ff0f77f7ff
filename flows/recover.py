"""Put the workspace back to the last good pipeline run, in one command.

What a failed run leaves: DVC deletes a stage's outputs before running it, so the failing stage's outputs are gone
(ours never leave half a file: they appear whole or not at all), the stages before it that succeeded hold the new
(possibly bad) data, and `dvc.lock` records those. The registry is untouched unless `register` ran.

The last good run is a snapshot taken when a run succeeds (the Prefect flow and `make run` take it): `dvc.lock` and
the git-tracked outputs (reports, plots). Without one, it is the last commit's `dvc.lock` and reports. Restoring
writes them back and `dvc checkout`s data/ and models/ from the DVC cache, where every run's outputs stay.

    python -m flows.recover            # restore the last good run (make recover)
    python -m flows.recover --save     # record the workspace as the last good run
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from stages.cli import set_env_defaults
from stages.io import PipelineError, atomic_dir
from stages.lineage import git_tracked_outs

SNAPSHOT = Path(".dvc/tmp/last-good")  # .dvc/tmp is DVC's own scratch space: never committed
LOCK = Path("dvc.lock")


def _dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)


def _copy(src: Path, dst: Path) -> None:
    """A file or a folder, if it exists, to `dst` (its parent made)."""
    if src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def save() -> None:
    """Record dvc.lock and the git-tracked outputs as the last good run (call after a successful run)."""
    if not LOCK.exists():
        raise PipelineError(f"{LOCK}: not found: nothing to record (run the pipeline first)")
    with atomic_dir(SNAPSHOT) as tmp:
        for path in [str(LOCK), *git_tracked_outs()]:
            _copy(Path(path), tmp / path)


def _from_snapshot() -> str:
    for path in git_tracked_outs():
        if Path(path).is_dir():
            shutil.rmtree(path)
        _copy(SNAPSHOT / path, Path(path))
    shutil.copy2(SNAPSHOT / LOCK, LOCK)
    return f"the snapshot of the last good run ({SNAPSHOT})"


def _from_git() -> str:
    tracked = [p for p in [str(LOCK), *git_tracked_outs()]
               if not subprocess.run(["git", "cat-file", "-e", f"HEAD:{p}"], capture_output=True).returncode]
    if str(LOCK) not in tracked:
        raise PipelineError(f"no last good run: no snapshot in {SNAPSHOT} (taken by a successful flow run or make "
                            f"run) and no {LOCK} in the last git commit")
    proc = subprocess.run(["git", "checkout", "HEAD", "--", *tracked], capture_output=True, text=True)
    if proc.returncode:
        raise PipelineError(f"git checkout HEAD -- {LOCK} ...: {proc.stderr.strip()}")
    return "the last git commit's dvc.lock and reports"


def restore() -> str:
    """Write back the last good dvc.lock and reports, and check data/ and models/ out of the DVC cache. Returns
    where they came from; what still differs from it (the new data or params) is left for the user to fix."""
    source = _from_snapshot() if (SNAPSHOT / LOCK).exists() else _from_git()
    proc = _dvc("checkout", "--force", "--relink")
    if proc.returncode:
        raise PipelineError(f"dvc checkout: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]} (is the DVC "
                            f"cache still there? dvc pull fetches it from a remote)")
    return source


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.recover", description=__doc__.split("\n\n")[0])
    ap.add_argument("--save", action="store_true", help="record the workspace as the last good run")
    args = ap.parse_args(argv)
    set_env_defaults()
    try:
        if args.save:
            save()
            print(f"recorded the last good run in {SNAPSHOT}")
            return
        print(f"restored {restore()}: data/, models/ and reports/ are those of the last good run")
    except PipelineError as e:
        print(f"error: flows.recover: {e}", file=sys.stderr)
        sys.exit(1)
    changed = _dvc("status", "--quiet").returncode
    print("dvc status: " + ("the workspace's deps (data/source, params.yaml or code) differ from that run: fix them, "
                            "then dvc repro" if changed else "up to date"))


if __name__ == "__main__":
    main()
