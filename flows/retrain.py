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
import tempfile
from pathlib import Path

from flows.drift_report import measure, publish
from flows.landing import commit, dvc_remote, land, landed_name, new_files, quarantine, validate
from flows.pipeline import changed_stages, checkout_lock, dvc, run_flow, stage_runner
from stages import drift, tasks
from stages.cli import set_env_defaults
from stages.io import PipelineError, read_json
from stages.lineage import git_tracked_outs

REGISTER_REPORT = Path("reports/register.json")


def _build_flow():
    from prefect import flow, get_run_logger

    @flow(name="nlp-transfer-retrain", log_prints=True)
    def retrain(force: bool = False, retries: int = 0, retry_delay: float = 30, wait: float = 0) -> dict:
        """New files in the landing folder → validated → drift report → appended → pipeline → gate → dvc push."""
        with checkout_lock(wait):
            return run(get_run_logger(), force, retries, retry_delay)

    return retrain


def skipped(log, why: str, outcome: dict, **more) -> dict:
    log.info("skipped: %s", why)
    return {"status": "skipped", "reason": why, "files": outcome, **more}


def run(log, force: bool = False, retries: int = 0, retry_delay: float = 30) -> dict:
    params, task = tasks.load()
    r = params.retrain
    if not params.ingest.landed or not isinstance(params.ingest.landed, str):
        raise PipelineError("params.yaml: ingest.landed must name one folder (e.g. data/source/landed): retrain "
                            "appends new files there and ingest reads them from there")
    landing, landed = Path(r.landing), Path(params.ingest.landed)
    files, outcome = new_files(landing), {}
    for f in list(files):  # landed by a run that died before removing it: same bytes, same name
        if (landed / landed_name(f)).exists():
            log.info("%s: landed by an earlier run; removed from %s", f.name, landing)
            f.unlink()
            files.remove(f)
            outcome[f.name] = {"outcome": "already landed"}
    pending = changed_stages()
    if not files and not pending:
        return skipped(log, f"no new files in {landing}, and dvc status is clean: nothing to retrain on", outcome)

    report, good, new_rows = {"decision": "retrain", "reasons": [], "files": outcome}, [], 0
    with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
        if files:
            v = validate(task, params, files, Path(r.quarantine), Path(tmp), log)
            outcome |= v.outcome
            good, new_rows = v.good, v.rows
            if not good and not pending:
                why = f"no valid new file in {landing} ({len(files)} quarantined), and dvc status is clean"
                publish(log, report | {"decision": "skip", "reasons": [why]}, None, params)
                return skipped(log, why, outcome)
            if good and new_rows < r.min_new_rows and not pending:
                return skipped(log, f"{new_rows} valid new {task.unit} < retrain.min_new_rows {r.min_new_rows}: "
                               f"left in {landing}", outcome)
        if good:
            report |= measure(task, params, v.base["train"], v.new_units(task), Path(tmp))
            decision, reasons = drift.decide(report, r.drift)
            if decision == "skip" and force:
                decision, reasons = "retrain_and_flag", [*reasons, "skip overridden by --force"]
            report |= {"decision": decision, "reasons": reasons}
            log.info("drift: %s%s", decision, f" ({'; '.join(reasons)})" if reasons else "")
    decision, reasons = report["decision"], report["reasons"]
    if decision == "skip":
        for f in good:
            dest = quarantine(f, Path(r.quarantine), f"{f}: drift past retrain.drift.skip ({'; '.join(reasons)}); "
                              f"not trained on. To train on it anyway: move it back to {landing} and run "
                              "python -m flows.retrain --force")
            outcome[f.name]["outcome"] = f"quarantined: drift ({dest})"
        publish(log, report, None, params)
        return skipped(log, f"drift: {'; '.join(reasons)}", outcome, drift=report)

    names = ", ".join(f.name for f in good) or "landing"
    land(good, landed, outcome, f"retrain: land {new_rows} new {task.unit} from {names}" if r.commit else None,
         lambda *args: dvc(*args, log=log))
    result = stage_runner()(log, False, False, retries, True, retry_delay)
    registered = read_json(REGISTER_REPORT) if REGISTER_REPORT.exists() else {}
    if outcome:  # a drift report (or the files' outcomes) to publish, now with the gate's answer
        report["register"] = {k: registered.get(k) for k in ("version", "promoted", "reason")}
        publish(log, report, registered.get("run_id"), params)
        if decision == "retrain_and_flag" and registered.get("version"):
            from stages import registry

            registry.tag_version(registered["model_name"], registered["version"],
                                 {"drift.flagged": "true", "drift.reasons": "; ".join(reasons)[:500]})
    pushed = bool(registered.get("promoted") and r.push and dvc_remote())
    if pushed:
        dvc("push", log=log)
    elif registered.get("promoted") and r.push:
        log.warning("promoted, but no default DVC remote is configured: nothing pushed (dvc remote add -d ...)")
    if r.commit and result["ran"]:
        commit(["dvc.lock", *git_tracked_outs()], f"retrain: pipeline run (register: version "
               f"{registered.get('version')}, {'promoted' if registered.get('promoted') else 'not promoted'})")
    return {"status": "retrained", "decision": decision, "reasons": reasons, "new_rows": new_rows, "files": outcome,
            "pending_before": pending, "pushed": pushed, "stages": result["stages"],
            "register": {k: registered.get(k) for k in ("version", "promoted", "champion", "reason")}}


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
