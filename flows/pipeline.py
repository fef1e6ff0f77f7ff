"""The pipeline as a Prefect flow: one task per `dvc.yaml` stage, run through DVC, in its order.

DVC owns the DAG: each task is `dvc repro --single-item <stage>`, so a flow run updates `dvc.lock`
exactly as `dvc repro` would (after it, `dvc status` is clean). Prefect owns the when: schedules,
retries, per-stage state and logs, and the steps outside the DAG (new-data check, `dvc push`).

    python -m flows.pipeline                        # run once (Prefect's temporary server)
    python -m flows.pipeline --only-if-changed      # skip when dvc status says nothing changed
    python -m flows.pipeline --restore-on-failure   # a failed stage puts back the last good run (flows.recover)
    python -m flows.pipeline --serve --cron "0 3 * * *"   # the plain DAG on a schedule (flows.retrain: new data)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from flows import recover
from stages.cli import set_env_defaults
from stages.credentials import redact
from stages.io import PipelineError
from stages.lineage import FLOW_RUN_ENV

DVC_FILE = Path("dvc.yaml")
# DVC's advice after every `dvc repro --single-item`: said once at the end of the flow, not after each stage.
DVC_HINTS = ("To track the changes with git, run:", "git add ", "To enable auto staging, run:",
             "dvc config core.autostage true", "Use `dvc push` to send your updates")


CHECKOUT_LOCK = Path(".dvc/tmp/pipeline.lock")  # one pipeline (flow or sweep) at a time in a checkout


@contextlib.contextmanager
def checkout_lock(wait_s: float = 0, lock_file: Path = CHECKOUT_LOCK):
    """Hold this checkout's pipeline lock for a flow run. Each stage takes DVC's own lock only while it runs, so two
    flows in one checkout would otherwise interleave their stages (one's tokenize on the other's data). The lock is
    an flock: the kernel drops it with its process, so a killed run never leaves one to clear by hand. A second run
    waits up to `wait_s` seconds, then stops with one line naming the holder."""
    from filelock import FileLock, Timeout

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    owner, lock = lock_file.with_suffix(".owner"), FileLock(lock_file)
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        holder = owner.read_text().strip() if owner.exists() else "another process"
        raise PipelineError(f"another pipeline run ({holder}) is running in this checkout ({lock_file} is held); "
                            "this one stops without touching anything: run it again when that one ends, or pass "
                            "--wait SECONDS to queue behind it") from None
    try:
        owner.write_text(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def stage_names(dvc_file: Path = DVC_FILE) -> list[str]:
    """The stages, in the order dvc.yaml defines them (no second copy of the list anywhere)."""
    return list((yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {}))


def _detach_temporary_server() -> None:
    """Start Prefect's temporary server in its own session. A terminal's Ctrl-C signals the whole foreground process
    group: the temporary server died with the flow, which then could not report its end, and the run stayed
    `RUNNING` forever. Detached, the server outlives the interrupt long enough to record the flow run `CRASHED`."""
    import types

    from prefect.server.api import server

    if not isinstance(server.subprocess, types.SimpleNamespace):
        server.subprocess = types.SimpleNamespace(**{k: getattr(subprocess, k) for k in dir(subprocess)
                                                     if not k.startswith("__")})
        server.subprocess.Popen = functools.partial(subprocess.Popen, start_new_session=True)


def _interrupt_stage(proc: subprocess.Popen) -> None:
    """Ctrl-C during a stage: interrupt the stage's command (dvc's child), not dvc itself, then let dvc finish. DVC
    records a stage that did finish (its outputs are complete) and nothing for one that did not; interrupted itself,
    it could stop between a finished stage and its dvc.lock entry."""
    import psutil

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()


def dvc(*args: str, env: dict[str, str] | None = None, log=None) -> str:
    """Run a dvc command, streaming its output (credentials redacted) to `log`; a failure raises with its last line.
    dvc runs in its own session: an interrupt reaches it through `_interrupt_stage` only."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **(env or {})}, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            line = redact(line.rstrip().rsplit("\r", 1)[-1])  # progress bars: keep their last state only
            if line and not line.strip().startswith(DVC_HINTS):
                lines.append(line)
                if log:
                    log.info(line)
    except KeyboardInterrupt:
        _interrupt_stage(proc)
        raise
    if proc.wait():
        errors = [ln for ln in lines if ln.startswith(("error:", "ERROR"))] or lines[-1:] or ["no output"]
        raise RuntimeError(f"dvc {' '.join(args)} failed (exit {proc.returncode}): {errors[-1]}")
    return "\n".join(lines)


def changed_stages(target: str | None = None) -> list[str]:
    """Stages whose deps, params or outs changed since dvc.lock (the new-data check); with `target`, of that stage and
    the stages it depends on."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", *(["--with-deps", target] if target else [])],
                          check=False, capture_output=True, text=True)
    if proc.returncode:  # stdout alone is the JSON: warnings on stderr must not break the parse
        raise RuntimeError(f"dvc status failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return list(json.loads(proc.stdout or "{}"))


def _build_flow():
    """The pipeline flow (built lazily, so importing this module stays cheap)."""
    return _build()[0]


def stage_runner():
    """`run(log, only_if_changed, push, retries, restore_on_failure, retry_delay)`: the pipeline flow's body without
    its checkout lock, for a flow that holds the lock itself (flows.retrain) and runs the stages as its own tasks."""
    return _build()[1]


@functools.cache
def _build():
    """Define the Prefect flow and task once: (pipeline flow, its body)."""
    from prefect import flow, get_run_logger, task
    from prefect.runtime import flow_run

    @task(name="dvc-stage", task_run_name="{stage}")
    def run_stage(stage: str) -> dict:
        log, t0 = get_run_logger(), time.perf_counter()
        out = dvc("repro", "--single-item", stage, env={FLOW_RUN_ENV: str(flow_run.id)}, log=log)
        return {"stage": stage, "seconds": round(time.perf_counter() - t0, 1), "skipped": "didn't change" in out}

    @flow(name="nlp-transfer-pipeline", log_prints=True)
    def pipeline(only_if_changed: bool = False, push: bool = False, retries: int = 0,
                 restore_on_failure: bool = False, retry_delay: float = 30, wait: float = 0) -> dict:
        with checkout_lock(wait):
            return _pipeline(get_run_logger(), only_if_changed, push, retries, restore_on_failure, retry_delay)

    def _pipeline(log, only_if_changed: bool, push: bool, retries: int, restore_on_failure: bool,
                  retry_delay: float) -> dict:
        if only_if_changed:
            pending = changed_stages()
            if not pending:
                log.info("dvc status: nothing changed; no retraining")
                return {"ran": False, "stages": []}
            log.info("changed: %s", ", ".join(pending))
        results = []
        try:
            for stage in stage_names():  # sequential: each stage consumes the previous one's outputs
                # a retried finetune resumes from its newest checkpoint (stages.checkpoints), not from step 0
                results.append(run_stage.with_options(retries=retries, retry_delay_seconds=retry_delay)(stage))
        except Exception:
            if restore_on_failure:
                log.error("a stage failed; restored %s", recover.restore())
            else:
                log.error("a stage failed: its outputs are gone and the stages before it hold the new data; "
                          "python -m flows.recover restores the last good run")
            raise
        recover.save()  # the last good run, for flows.recover
        if push:
            dvc("push", log=log)
        log.info("stage seconds: %s", {r["stage"]: r["seconds"] for r in results})
        ran = not all(r["skipped"] for r in results)
        if ran:
            log.info("to record this run: git add dvc.lock reports && git commit%s", "" if push else "; dvc push")
        return {"ran": ran, "stages": results}

    return pipeline, _pipeline


def run_flow(flow, params: dict, prog: str, interrupted: str):
    """Run `flow` once, now (on Prefect's temporary server unless PREFECT_API_URL names one); its result. A failed stage
    or a bad param prints one line and exits 1; Ctrl-C prints `interrupted` and exits 130."""
    if not os.environ.get("PREFECT_API_URL"):
        _detach_temporary_server()
    try:
        return flow(**params)
    except (RuntimeError, PipelineError) as e:
        print(f"error: {prog}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {prog}: interrupted; {interrupted}", file=sys.stderr)
        sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only-if-changed", action="store_true", help="skip the run when dvc status is clean")
    ap.add_argument("--push", action="store_true", help="dvc push after the run (needs a DVC remote)")
    ap.add_argument("--retries", type=int, default=0, help="retries per stage task (finetune resumes from its checkpoint)")
    ap.add_argument("--retry-delay", type=float, default=30, help="seconds before a retry (default 30)")
    ap.add_argument("--restore-on-failure", action="store_true",
                    help="when a stage fails, put back the last good run's outputs (python -m flows.recover)")
    ap.add_argument("--wait", type=float, default=0,
                    help="seconds to wait when another run holds this checkout (default 0: stop at once)")
    ap.add_argument("--serve", action="store_true", help="serve a scheduled deployment (needs prefect server start)")
    ap.add_argument("--cron", default="0 3 * * *", help="schedule for --serve (default: 03:00 daily)")
    ap.add_argument("--name", default="nightly-pipeline", help="deployment name for --serve")
    args = ap.parse_args(argv)
    set_env_defaults()
    pipeline = _build_flow()
    params = {"only_if_changed": args.only_if_changed, "push": args.push, "retries": args.retries,
              "restore_on_failure": args.restore_on_failure, "retry_delay": args.retry_delay, "wait": args.wait}
    if args.serve:  # the scheduled run retrains only when new data or params arrived; a bad night keeps the last good
        pipeline.serve(name=args.name, cron=args.cron,
                       parameters=params | {"only_if_changed": True, "restore_on_failure": True,
                                            "wait": args.wait or 3600})  # a night run queues behind a manual one
        return
    result = run_flow(pipeline, params, "flows.pipeline", "the flow run is marked CRASHED, every stage that finished "
                      "is recorded in dvc.lock: run again to continue")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
