"""Retraining on new data, as a Prefect flow: landing folder → validate → drift report → append → pipeline → gate → push.

    python -m flows.retrain                        # once, now (Prefect's temporary server)
    python -m flows.retrain --force                # train even when the drift report says skip
    prefect deploy --all && prefect worker start --pool nlp-transfer   # nightly, from prefect.yaml (README)

One run, holding the checkout's pipeline lock (a second retrain or pipeline run waits or stops):
  1. New files in `retrain.landing` (any format ingest reads). None, and `dvc status` clean: the run ends *skipped*,
     saying why. A file whose bytes were landed before (a run that died before removing it) is just removed.
  2. Each file is checked by the stages' own code: the source with the file added goes through the task's read and
     ingest and clean (errors name file, row and column), and must keep the model's labels. A bad file moves to
     `retrain.quarantine` with `<file>.error.txt` (its one line) beside it. A file that adds no row (all duplicates or
     dropped by clean, counted) is quarantined too, so nothing vanishes unexplained. Fewer than `min_new_rows` valid
     new rows: the files wait in landing and the run skips.
  3. Drift (stages.drift): the new rows against the train split, with the champion's tokenizer and encoder: label
     chi-square, length KS, [UNK] rate, domain-classifier AUC. `retrain.drift.skip` thresholds: skip (the files go
     to quarantine with the report; `--force` trains on them anyway); `flag`: retrain and flag for a human look.
     The report is a Prefect markdown artifact of the flow run, and an MLflow artifact of the run it trained.
  4. Append: each file is copied to `ingest.landed` (DVC-tracked) as `<md5 prefix>-<name>`, atomically, then
     `dvc add`; with `retrain.commit`, the pointer is git-committed; only then is the landing file removed. A run
     that dies anywhere in between is finished by the next one: same bytes, same name (no duplicate), and pending
     DVC changes mean retrain (no drop). Old rows keep their split (each row's seeded hash, stages.splits).
  5. The pipeline's stages run as this flow's tasks (flows.pipeline); register's gate decides promotion. After a
     promotion, `dvc push` to the default DVC remote (.dvc/config); with `retrain.commit`, dvc.lock and the reports
     are committed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flows.pipeline import changed_stages, checkout_lock, dvc, run_flow, stage_runner
from stages import drift, tasks
from stages.cli import set_env_defaults
from stages.io import PipelineError, read_json, read_splits, write_splits
from stages.lineage import file_md5, git_tracked_outs
from stages.splits import landed_files

REGISTER_REPORT = Path("reports/register.json")
ERROR_SUFFIX = ".error.txt"


# --- files ------------------------------------------------------------------------------------------------------
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
    note = dest.with_name(dest.name + ERROR_SUFFIX)
    note.write_text(why.rstrip() + "\n")
    shutil.move(str(path), dest)
    return dest


def copy_atomic(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=check)


def in_git() -> bool:
    return git("rev-parse", "--is-inside-work-tree", check=False).returncode == 0


def commit(paths: list[str], message: str) -> bool:
    """git-commit exactly `paths` (other staged or modified files stay as they are); False when nothing changed."""
    paths = [p for p in paths if Path(p).exists()]
    if not paths or not in_git():
        return False
    git("add", "--", *paths)
    if not git("diff", "--cached", "--quiet", "--", *paths, check=False).returncode:
        return False
    who = [] if git("config", "user.email", check=False).stdout.strip() else [  # a scheduler's account may have none
        "-c", "user.name=flows.retrain", "-c", "user.email=retrain@localhost"]
    git(*who, "commit", "-q", "-m", message, "--", *paths)
    return True


# --- validation: the stages' own checks --------------------------------------------------------------------------
def build(task, params, extra: list[Path], scratch: Path) -> tuple[dict, list[str], dict]:
    """The source as ingest reads it, plus `extra` files, through the task's ingest and clean into `scratch`: the
    cleaned splits, the label names and clean's report. Raises the stages' own one-line errors."""
    p = params.ingest.model_copy(update={"landed": [*map(str, landed_files(params.ingest)), *map(str, extra)]})
    result = task.ingest(task.read(p), p)
    raw, clean = scratch / "raw", scratch / "clean"
    for d in (raw, clean):
        shutil.rmtree(d, ignore_errors=True)
    write_splits(result.splits, raw, result.labels, {"summary.json": result.summary})
    report = task.clean(raw, clean, params.clean)
    return read_splits(clean), result.labels, report


def unit_keys(task, splits: dict) -> set[str]:
    return {t for df in splits.values() for t in task.drift_view(df)[0]}


# --- drift ------------------------------------------------------------------------------------------------------
def encoder_folder(params, scratch: Path) -> tuple[str, str]:
    """(folder, what it is): the champion's fine-tuned folder if there is one, else the pretrained model."""
    from stages import registry
    from stages.loading import resolve_model

    mv = registry.alias_version(params.register.model_name, params.register.champion_alias)
    if mv is not None:
        return str(registry.model_folder(mv, scratch / "champion")), f"champion, version {mv.version}"
    return resolve_model(params.model.name), f"{params.model.name} (no champion yet)"


def measure(task, params, train, new, scratch: Path) -> dict:
    """stages.drift's four measures: the new units against the train split."""
    import torch

    from stages.baselines import mean_pooled
    from stages.loading import load_encoder, load_tokenizer
    from stages.modeling import pick_device

    d = params.retrain.drift
    (train_texts, train_labels), (new_texts, new_labels) = task.drift_view(train), task.drift_view(new)
    report = {"train_rows": len(train_texts), "new_rows": len(new_texts),
              "labels": drift.label_drift(train_labels, new_labels),
              "length": drift.length_drift(train_texts, new_texts)}
    a, b = drift.sample(train_texts, d.sample, d.seed), drift.sample(new_texts, d.sample, d.seed + 1)
    folder, what = encoder_folder(params, scratch)
    tokenizer = load_tokenizer(folder)
    max_length = params.tokenize.max_length
    ids = [tokenizer(list(t), truncation=True, max_length=max_length)["input_ids"] for t in (a, b)]
    plain = [[s[1:-1] for s in seqs] for seqs in ids]  # without [CLS]/[SEP]
    report["unk"] = drift.unk_drift(*plain, tokenizer.unk_token_id)
    device = pick_device("auto")
    with torch.inference_mode():
        encoder = load_encoder(folder).to(device)
        vectors = [mean_pooled(encoder, seqs, d.batch_size, tokenizer.pad_token_id, device) for seqs in ids]
    report["embeddings"] = drift.domain_auc(*vectors, seed=d.seed)
    return report | {"sampled_train": len(a), "sampled_new": len(b), "encoder": what}


# --- the flow ---------------------------------------------------------------------------------------------------
def _build_flow():
    from prefect import flow, get_run_logger

    @flow(name="nlp-transfer-retrain", log_prints=True)
    def retrain(force: bool = False, retries: int = 0, retry_delay: float = 30, wait: float = 0) -> dict:
        """New files in the landing folder → validated → drift report → appended → pipeline → gate → dvc push."""
        with checkout_lock(wait):
            return run(get_run_logger(), force, retries, retry_delay)

    return retrain


def publish(log, markdown: str, report: dict, run_id: str | None, params) -> None:
    """The drift report as a Prefect markdown artifact and an MLflow artifact (of `run_id`, else a small run)."""
    from prefect.artifacts import create_markdown_artifact

    from stages import tracking

    create_markdown_artifact(markdown=markdown, key="drift-report", description="retrain: new data vs train split")
    mlflow = tracking._mlflow()
    if run_id:
        client = tracking.client()
        client.log_text(run_id, markdown, "drift/report.md")
        client.log_dict(run_id, report, "drift/report.json")
        client.set_tag(run_id, "drift.decision", report["decision"])
        return
    mlflow.set_experiment(params.tracking.experiment)
    with mlflow.start_run(run_name="retrain-" + report["decision"], tags={"drift.decision": report["decision"]}):
        mlflow.log_text(markdown, "drift/report.md")
        mlflow.log_dict(report, "drift/report.json")
    log.info("drift report logged to MLflow experiment %s", params.tracking.experiment)


def run(log, force: bool = False, retries: int = 0, retry_delay: float = 30) -> dict:
    params, task = tasks.load()
    r = params.retrain
    if not params.ingest.landed or not isinstance(params.ingest.landed, str):
        raise PipelineError("params.yaml: ingest.landed must name one folder (e.g. data/source/landed): retrain "
                            "appends new files there and ingest reads them from there")
    landing, quarantined, landed = Path(r.landing), Path(r.quarantine), Path(params.ingest.landed)
    files, outcome = new_files(landing), {}
    for f in list(files):  # landed by a run that died before removing it: same bytes, same name
        if (landed / landed_name(f)).exists():
            log.info("%s: landed by an earlier run; removed from %s", f.name, landing)
            f.unlink()
            files.remove(f)
            outcome[f.name] = {"outcome": "already landed"}
    pending = changed_stages()
    if not files and not pending:
        why = f"no new files in {landing}, and dvc status is clean: nothing to retrain on"
        log.info("skipped: %s", why)
        return {"status": "skipped", "reason": why, "files": outcome}

    with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
        scratch = Path(tmp)
        good, new_rows, report = [], 0, {}
        if files:
            base_splits, base_labels, _ = build(task, params, [], scratch / "base")
            base_n = sum(map(len, base_splits.values()))
            for f in files:
                p = params.ingest.model_copy(update={"source": str(f), "validation_file": None, "test_file": None,
                                                     "landed": None, "max_rows": None})
                try:
                    task.read(p)  # the file alone: its own read errors name it, row and column
                    try:
                        splits, labels, _ = build(task, params, [*good, f], scratch / "with")
                    except PipelineError as e:  # e.g. a label only in its test rows: say which file did it
                        raise PipelineError(f"{f}: with this file added, ingest or clean stops: {e}") from None
                    n = sum(map(len, splits.values())) - base_n - new_rows
                    if labels != base_labels:
                        added = sorted(set(labels) - set(base_labels)) or labels
                        raise PipelineError(
                            f"{f}: column '{params.ingest.label_column}': label(s) {added} not among the model's "
                            f"labels {base_labels}; a new class is a deliberate change of the source (add it there)")
                    if n <= 0:
                        raise PipelineError(f"{f}: adds no row: every row is already in the source or dropped by "
                                            f"clean (see clean's counts: empty, duplicate, conflicting, leakage)")
                except PipelineError as e:
                    dest = quarantine(f, quarantined, str(e))
                    log.error("quarantined %s: %s", dest, e)
                    outcome[f.name] = {"outcome": f"quarantined: {e}"}
                    continue
                good.append(f)
                new_rows += n
                outcome[f.name] = {"rows": n, "outcome": "valid"}
            if not good and not pending:
                why = f"no valid new file in {landing} ({len(files)} quarantined), and dvc status is clean"
                log.info("skipped: %s", why)
                report = {"decision": "skip", "reasons": [why], "files": outcome}
                publish(log, drift.markdown(report, "skip", [why]), report, None, params)
                return {"status": "skipped", "reason": why, "files": outcome}
            if good and new_rows < r.min_new_rows and not pending:
                why = f"{new_rows} valid new {task.unit} < retrain.min_new_rows {r.min_new_rows}: left in {landing}"
                log.info("skipped: %s", why)
                return {"status": "skipped", "reason": why, "files": outcome}
        decision, reasons = "retrain", []
        if good:
            with_new, _, _ = build(task, params, good, scratch / "with")
            old = unit_keys(task, base_splits)
            new = {s: df[[t not in old for t in task.drift_view(df)[0]]] for s, df in with_new.items()}
            import pandas as pd

            report = measure(task, params, base_splits["train"], pd.concat(new.values(), ignore_index=True), scratch)
            decision, reasons = drift.decide(report, r.drift)
            if decision == "skip" and force:
                decision, reasons = "retrain_and_flag", [*reasons, "skip overridden by --force"]
            log.info("drift: %s%s", decision, f" ({'; '.join(reasons)})" if reasons else "")
        report |= {"decision": decision, "reasons": reasons, "files": outcome}
        markdown = drift.markdown(report, decision, reasons) if (good or outcome) else ""

        if decision == "skip":
            for f in good:
                dest = quarantine(f, quarantined, f"{f}: drift past retrain.drift.skip ({'; '.join(reasons)}); not "
                                  f"trained on. To train on it anyway: move it back to {landing} and run "
                                  "python -m flows.retrain --force")
                outcome[f.name] = {"rows": outcome[f.name]["rows"], "outcome": f"quarantined: drift ({dest})"}
            markdown = drift.markdown(report, decision, reasons)
            publish(log, markdown, report, None, params)
            return {"status": "skipped", "reason": f"drift: {'; '.join(reasons)}", "drift": report,
                    "files": outcome}

        if good:  # append: copy (atomic) → dvc add → commit the pointer → only then remove from landing
            landed.mkdir(parents=True, exist_ok=True)
            for f in good:
                outcome[f.name]["landed_as"] = str(landed / landed_name(f))
                copy_atomic(f, Path(outcome[f.name]["landed_as"]))
        if landed.is_dir() and any(landed.iterdir()):
            dvc("add", str(landed), log=log)
            if r.commit:
                commit([f"{landed}.dvc", str(landed.parent / ".gitignore")],
                       f"retrain: land {new_rows} new {task.unit} from {', '.join(f.name for f in good) or 'landing'}")
        for f in good:
            f.unlink()
            outcome[f.name]["outcome"] = "landed"

    result = stage_runner()(log, False, False, retries, True, retry_delay)
    registered = read_json(REGISTER_REPORT) if REGISTER_REPORT.exists() else {}
    if markdown:  # made again: the files' outcomes moved on (landed)
        report["register"] = {k: registered.get(k) for k in ("version", "promoted", "reason")}
        publish(log, drift.markdown(report, decision, reasons), report, registered.get("run_id"), params)
        if decision == "retrain_and_flag" and registered.get("version"):
            from stages import registry

            registry.tag_version(registered["model_name"], registered["version"],
                                 {"drift.flagged": "true", "drift.reasons": "; ".join(reasons)[:500]})
    pushed = False
    if registered.get("promoted") and r.push:
        if dvc_remote():
            dvc("push", log=log)
            pushed = True
        else:
            log.warning("promoted, but no default DVC remote is configured: nothing pushed (dvc remote add -d ...)")
    if r.commit and result["ran"]:
        commit(["dvc.lock", *git_tracked_outs()], f"retrain: pipeline run (register: version "
               f"{registered.get('version')}, {'promoted' if registered.get('promoted') else 'not promoted'})")
    return {"status": "retrained", "decision": decision, "reasons": reasons, "new_rows": new_rows,
            "files": outcome, "pending_before": pending, "register": {k: registered.get(k) for k in
                                                                      ("version", "promoted", "champion", "reason")},
            "pushed": pushed, "stages": result["stages"]}


def dvc_remote() -> str | None:
    """The default DVC remote's name, or None."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "remote", "default"], capture_output=True, text=True,
                          check=False)
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name and "No default remote" not in name else None


set_env_defaults()  # offline, no telemetry: also when a Prefect worker imports this file
retrain = _build_flow()  # the deployment's entrypoint: flows/retrain.py:retrain (prefect.yaml)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="train even when the drift report says skip")
    ap.add_argument("--retries", type=int, default=0, help="retries per stage task (finetune resumes)")
    ap.add_argument("--retry-delay", type=float, default=30, help="seconds before a retry (default 30)")
    ap.add_argument("--wait", type=float, default=0,
                    help="seconds to wait when another run holds this checkout (default 0: stop at once)")
    args = ap.parse_args(argv)
    params = {"force": args.force, "retries": args.retries, "retry_delay": args.retry_delay, "wait": args.wait}
    result = run_flow(retrain, params, "flows.retrain", "the flow run is marked CRASHED; run it again: what was "
                      "landed stays landed, what was not is still in the landing folder")
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
