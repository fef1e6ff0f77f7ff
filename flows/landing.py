"""flows.retrain's file side: what waits in the landing folder, its validation by the stages' own code, quarantine,
and the crash-safe append to the DVC-tracked landed folder (content-hash names, git-committed pointer)."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from flows.worktree import git, sh
from stages.io import PipelineError, read_splits, write_atomic, write_splits
from stages.lineage import file_md5
from stages.splits import landed_files

ERROR_SUFFIX = ".error.txt"


def landed_name(path: Path) -> str:
    """A landed file's name: its content hash (md5, as DVC's) first, so landing the same bytes twice gives one file."""
    return f"{file_md5(path)[:16]}-{path.name}"


def new_files(landing: Path) -> list[Path]:
    """The files waiting in `landing`, in name order (hidden files, error notes and folders left alone)."""
    if not landing.is_dir():
        return []
    return sorted(f for f in landing.iterdir()
                  if f.is_file() and not f.name.startswith(".") and not f.name.endswith(ERROR_SUFFIX))


def quarantine(path: Path, folder: Path, why: str) -> Path:
    """Move `path` into `folder` with its one-line reason beside it (a name already there gets a time suffix)."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / path.name
    if dest.exists():
        dest = folder / f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}"
    dest.with_name(dest.name + ERROR_SUFFIX).write_text(why.rstrip() + "\n")
    shutil.move(str(path), dest)
    return dest


def commit(paths: list[str], message: str) -> bool:
    """git-commit exactly `paths` (other staged or modified files stay as they are); False when nothing changed."""
    here, paths = Path.cwd(), [p for p in paths if Path(p).exists()]
    if not paths or sh("git", "rev-parse", "--is-inside-work-tree", cwd=here).returncode:
        return False
    git("add", "--", *paths, cwd=here)
    if not sh("git", "diff", "--cached", "--quiet", "--", *paths, cwd=here).returncode:
        return False
    who = [] if sh("git", "config", "user.email", cwd=here).stdout.strip() else [  # a scheduler's may have none
        "-c", "user.name=flows.retrain", "-c", "user.email=retrain@localhost"]
    git(*who, "commit", "-q", "-m", message, "--", *paths, cwd=here)
    return True


def dvc_remote() -> str | None:
    """The default DVC remote's name, or None."""
    proc = sh(sys.executable, "-m", "dvc", "remote", "default", cwd=Path.cwd())
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name and "No default remote" not in name else None


# --- validation: the stages' own checks --------------------------------------------------------------------------
def build(task, params, extra: list[Path], scratch: Path) -> tuple[dict, list[str]]:
    """The source as ingest reads it, plus `extra` files, through the task's ingest and clean into `scratch`: the
    cleaned splits and the label names. Raises the stages' own one-line errors."""
    p = params.ingest.model_copy(update={"landed": [*map(str, landed_files(params.ingest)), *map(str, extra)]})
    result = task.ingest(task.read(p), p)
    raw, clean = scratch / "raw", scratch / "clean"
    for d in (raw, clean):
        shutil.rmtree(d, ignore_errors=True)
    write_splits(result.splits, raw, result.labels, {"summary.json": result.summary})
    task.clean(raw, clean, params.clean)
    return read_splits(clean), result.labels


@dataclass
class Validated:
    base: dict  # the cleaned splits without the new files: the train split is the drift reference
    good: list[Path] = field(default_factory=list)
    rows: int = 0  # new units the good files add, after clean
    outcome: dict = field(default_factory=dict)  # file name → {rows?, outcome}
    with_new: dict | None = None  # the cleaned splits with the good files (None: no good file)

    def new_units(self, task):
        """The units (rows, sentences) of `with_new` that `base` does not hold, as one frame."""
        import pandas as pd

        old = {t for df in self.base.values() for t in task.drift_view(df)[0]}
        return pd.concat([df[[t not in old for t in task.drift_view(df)[0]]] for df in self.with_new.values()],
                         ignore_index=True)


def check(task, params, f: Path, v: Validated, base_labels: list[str], scratch: Path) -> tuple[dict, int]:
    """The cleaned splits with `f` added to the good files so far, and the units it adds; else its one-line error."""
    p = params.ingest.model_copy(update={"source": str(f), "validation_file": None, "test_file": None,
                                         "landed": None, "max_rows": None})
    task.read(p)  # the file alone: its own read errors name it, row and column
    try:
        splits, labels = build(task, params, [*v.good, f], scratch)
    except PipelineError as e:  # e.g. a label only in its test rows: say which file did it
        raise PipelineError(f"{f}: with this file added, ingest or clean stops: {e}") from None
    if labels != base_labels:
        added = sorted(set(labels) - set(base_labels)) or labels
        raise PipelineError(f"{f}: column '{params.ingest.label_column}': label(s) {added} not among the model's "
                            f"labels {base_labels}; a new class is a deliberate change of the source (add it there)")
    n = sum(map(len, splits.values())) - sum(map(len, v.base.values())) - v.rows
    if n <= 0:
        raise PipelineError(f"{f}: adds no row: every row is already in the source or dropped by clean (see "
                            f"clean's counts: empty, duplicate, conflicting, leakage)")
    return splits, n


def validate(task, params, files: list[Path], quarantined: Path, scratch: Path, log) -> Validated:
    """Each file in turn, on top of the good ones before it: good files are kept, bad ones quarantined."""
    base, base_labels = build(task, params, [], scratch / "base")
    v = Validated(base)
    for f in files:
        try:
            splits, n = check(task, params, f, v, base_labels, scratch / "with")
        except PipelineError as e:
            dest = quarantine(f, quarantined, str(e))
            log.error("quarantined %s: %s", dest, e)
            v.outcome[f.name] = {"outcome": f"quarantined: {e}"}
            continue
        v.good.append(f)
        v.rows += n
        v.with_new = splits  # the build with every good file so far: the last one is the drift report's
        v.outcome[f.name] = {"rows": n, "outcome": "valid"}
    return v


def land(files: list[Path], landed: Path, outcome: dict, message: str | None, dvc) -> None:
    """Copy each file (atomically) into `landed` under its content-hash name → `dvc add` → commit the pointer (when
    `message`) → only then remove it from landing. A run killed anywhere here is finished by the next one."""
    for f in files:
        dest = landed / landed_name(f)
        with f.open("rb") as src:
            write_atomic(dest, lambda out, src=src: shutil.copyfileobj(src, out), binary=True)
        outcome[f.name]["landed_as"] = str(dest)
    if landed.is_dir() and any(landed.iterdir()):
        dvc("add", str(landed))
        if message:
            commit([f"{landed}.dvc", str(landed.parent / ".gitignore")], message)
    for f in files:
        f.unlink()
        outcome[f.name]["outcome"] = "landed"
