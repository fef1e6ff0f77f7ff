"""The pipeline as a Prefect flow: one task per `dvc.yaml` stage, run through DVC, in its order.

DVC owns the DAG: each task is `dvc repro --single-item <stage>`, so a flow run updates `dvc.lock`
exactly as `dvc repro` would (after it, `dvc status` is clean). Prefect owns the when: schedules,
retries, per-stage state and logs, and the steps outside the DAG (new-data check, `dvc push`).

    python -m flows.pipeline                        # run once (Prefect's temporary server)
    python -m flows.pipeline --only-if-changed      # skip when dvc status says nothing changed
    python -m flows.pipeline --serve --cron "0 3 * * *"   # nightly retraining (prefect server start)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from stages.cli import set_env_defaults
from stages.tracking import FLOW_RUN_ENV

DVC_FILE = Path("dvc.yaml")


def stage_names(dvc_file: Path = DVC_FILE) -> list[str]:
    """The stages, in the order dvc.yaml defines them (no second copy of the list anywhere)."""
    return list((yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {}))


def dvc(*args: str, env: dict[str, str] | None = None, log=None) -> str:
    """Run a dvc command, streaming its output to `log`; a failure raises with its last line."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **(env or {})})
    lines = []
    for line in proc.stdout:
        line = line.rstrip().rsplit("\r", 1)[-1]  # progress bars: keep their last state only
        if line:
            lines.append(line)
            if log:
                log.info(line)
    if proc.wait():
        errors = [ln for ln in lines if ln.startswith(("error:", "ERROR"))] or lines[-1:] or ["no output"]
        raise RuntimeError(f"dvc {' '.join(args)} failed (exit {proc.returncode}): {errors[-1]}")
    return "\n".join(lines)


def changed_stages() -> list[str]:
    """Stages whose deps, params or outs changed since dvc.lock (the new-data check)."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True)
    if proc.returncode:  # stdout alone is the JSON: warnings on stderr must not break the parse
        raise RuntimeError(f"dvc status failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return list(json.loads(proc.stdout or "{}"))


def _build_flow():
    """Define the Prefect flow and task lazily, so importing this module stays cheap."""
    from prefect import flow, get_run_logger, task
    from prefect.runtime import flow_run

    @task(name="dvc-stage", task_run_name="{stage}")
    def run_stage(stage: str) -> dict:
        log, t0 = get_run_logger(), time.perf_counter()
        out = dvc("repro", "--single-item", stage, env={FLOW_RUN_ENV: str(flow_run.id)}, log=log)
        return {"stage": stage, "seconds": round(time.perf_counter() - t0, 1), "skipped": "didn't change" in out}

    @flow(name="nlp-transfer-pipeline", log_prints=True)
    def pipeline(only_if_changed: bool = False, push: bool = False, retries: int = 0) -> dict:
        log = get_run_logger()
        if only_if_changed:
            pending = changed_stages()
            if not pending:
                log.info("dvc status: nothing changed; no retraining")
                return {"ran": False, "stages": []}
            log.info("changed: %s", ", ".join(pending))
        results = []
        for stage in stage_names():  # sequential: each stage consumes the previous one's outputs
            results.append(run_stage.with_options(retries=retries, retry_delay_seconds=30)(stage))
        if push:
            dvc("push", log=log)
        log.info("stage seconds: %s", {r["stage"]: r["seconds"] for r in results})
        return {"ran": True, "stages": results}

    return pipeline


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only-if-changed", action="store_true", help="skip the run when dvc status is clean")
    ap.add_argument("--push", action="store_true", help="dvc push after the run (needs a DVC remote)")
    ap.add_argument("--retries", type=int, default=0, help="retries per stage task")
    ap.add_argument("--serve", action="store_true", help="serve a scheduled deployment (needs prefect server start)")
    ap.add_argument("--cron", default="0 3 * * *", help="schedule for --serve (default: 03:00 daily)")
    ap.add_argument("--name", default="nightly-retrain", help="deployment name for --serve")
    args = ap.parse_args(argv)
    set_env_defaults()
    pipeline = _build_flow()
    params = {"only_if_changed": args.only_if_changed, "push": args.push, "retries": args.retries}
    if args.serve:  # the scheduled run retrains only when new data or params arrived
        pipeline.serve(name=args.name, cron=args.cron, parameters=params | {"only_if_changed": True})
        return
    try:
        result = pipeline(**params)
    except RuntimeError as e:
        print(f"error: flows.pipeline: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
