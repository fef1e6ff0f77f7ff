"""Hyper-parameter search: each trial one DVC experiment up to `finetune`, the winner picked on validation only.

    python -m flows.sweep --grid finetune.learning_rate=2e-5,5e-5,1e-4 --grid finetune.strategy=full,lora
    python -m flows.sweep --random 8 --space finetune.learning_rate=1e-5:1e-3:log --space finetune.epochs=2:4 --seed 1

DVC runs the trials: `dvc exp run --name <sweep>-<i> -S key=value ... finetune` in the workspace, one after another (a
2-core machine trains one model at a time; a queued run works in a temp copy of the repo, without data/source or the
MLflow store). Only the stages up to finetune run, so no trial computes a test score: the winner has the best
`best_val_<metric>` in its reports/train.json, the validation score finetune chose its epoch by. Prefect shows one task
per trial; a failed trial is recorded and the search goes on. MLflow: one parent run per sweep, each trial's finetune
run its child. At the end `dvc exp apply` puts the winner in the workspace; `dvc repro` then evaluates and registers it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from flows.pipeline import changed_stages, checkout_lock, dvc, run_flow
from flows.space import TARGET, dotted, plan
from stages import tracking
from stages.cli import set_env_defaults
from stages.io import PipelineError, read_json, write_json
from stages.lineage import FLOW_RUN_ENV, lineage_tags
from stages.params import load_params

SUMMARY = Path("reports/train.json")  # finetune's summary: best_val_<metric> is the only score a trial is picked by
# One <name>.json per sweep, outside reports/: no stage writes it, so dvc status never sees it, and it is committed with
# the winner's params.yaml as the record of why they won.
SWEEPS = Path("sweeps")
LOWER_IS_BETTER = {"loss"}  # as stages.training picks epochs: every other validation metric is higher-is-better


def validation_score(summary: dict) -> tuple[str, float]:
    """(metric, value) of finetune's summary: its one `best_val_<metric>` entry."""
    found = [(k.removeprefix("best_val_"), float(v)) for k, v in summary.items() if k.startswith("best_val_")]
    if len(found) != 1:
        raise PipelineError(f"{SUMMARY}: expected one best_val_<metric> entry, found {len(found)}")
    return found[0]


def trial_outcome() -> dict:
    """What a trial that just ran left in the workspace: its validation score and its MLflow run. Nothing else is read:
    the test split is scored once, by evaluate, on the winner."""
    metric, score = validation_score(read_json(SUMMARY))
    return {"metric": metric, "score": score, "run_id": read_json(tracking.RUN_FILE)["run_id"]}


class _Lines:
    """Prefect's logger that keeps the lines: a failed trial is reported by its stage's own error line."""

    def __init__(self, log) -> None:
        self.log, self.lines = log, []

    def info(self, line: str) -> None:
        self.lines.append(line)
        self.log.info(line)


def pick(trials: list[dict], metric: str) -> dict:
    """The trial with the best validation `score` (lower is better for loss; a tie goes to the earlier trial). Failed
    trials and NaN scores are no candidates; none left is an error naming the first failure."""
    scored = [t for t in trials if t.get("score") is not None and not math.isnan(t["score"])]
    if not scored:
        errors = [t["error"] for t in trials if t.get("error")]
        raise PipelineError(f"every trial failed ({len(trials)}); the first: {errors[0] if errors else 'no score'}")
    sign = -1 if metric in LOWER_IS_BETTER else 1
    return max(scored, key=lambda t: sign * t["score"])  # max keeps the first of equal scores


def _record(client, run_id: str, record: dict) -> None:
    """The sweep's outcome on its parent run: the winner as params and metric, every trial as a table."""
    from mlflow.entities import Metric, Param

    best, trials, metric = record["best"], record["trials"], record["metric"]
    params = {"metric": metric, "best.trial": best["trial"], "best.exp": best["exp"]}
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in (params | {
        f"best.{k}": v for k, v in best["params"].items()}).items()],
        metrics=[Metric(f"best_val_{metric}", best["score"], int(time.time() * 1000), 0)])
    columns = {"trial": "trial", "exp": "exp", "status": "status", "score": f"val_{metric}", "run_id": "run_id",
               "seconds": "seconds", "error": "error"}
    table = {name: [t.get(c) for t in trials] for c, name in columns.items()}
    client.log_table(run_id, table | {k: [t["params"][k] for t in trials] for k in best["params"]}, "trials.json")
    client.log_dict(run_id, record, "sweep.json")


def _open_parent(client, name: str, described: dict, flow_run_id: str) -> str:
    """The sweep's own MLflow run, in the pipeline's experiment: its trials' finetune runs become its children."""
    from mlflow.entities import Param

    experiment = load_params().tracking.experiment
    found = client.get_experiment_by_name(experiment)
    run = client.create_run(found.experiment_id if found else client.create_experiment(experiment), run_name=name,
                            tags=lineage_tags() | {"sweep.name": name, "prefect.flow_run_id": flow_run_id})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in described.items()])
    return run.info.run_id


def _build_flow():
    """Define the Prefect flow and its trial task lazily, so importing this module stays cheap."""
    from prefect import flow, get_run_logger, task
    from prefect.runtime import flow_run

    @task(name="sweep-trial", task_run_name="{exp}")
    def run_trial(exp: str, sets: dict[str, str], values: dict[str, Any], env: dict[str, str]) -> dict:
        log, t0 = _Lines(get_run_logger()), time.perf_counter()
        current = load_params().model_dump(mode="json")
        force = []  # DVC skips finetune when the workspace already holds these params, trained: retrain it alone
        if all(dotted(current, k) == v for k, v in values.items()) and not changed_stages(TARGET):
            force = ["--force", "--single-item"]
        try:
            dvc("exp", "run", "--name", exp, *[a for k, v in sets.items() for a in ("-S", f"{k}={v}")], *force, TARGET,
                env=env, log=log)
        except RuntimeError as e:  # the stage's one line says why; DVC's last one only that it exited 1
            raise RuntimeError(next((ln for ln in reversed(log.lines) if ln.startswith("error: ")), str(e))) from None
        return trial_outcome() | {"seconds": round(time.perf_counter() - t0, 1)}

    @flow(name="nlp-transfer-sweep", log_prints=True)
    def sweep(name: str, search: str, space: dict[str, str], seed: int | None, trials: list[dict[str, str]],
              values: list[dict[str, Any]]) -> dict:
        with checkout_lock():  # its trials run in this workspace: no pipeline run beside it
            return _sweep(name, search, space, seed, trials, values)

    def _sweep(name: str, search: str, space: dict[str, str], seed: int | None, trials: list[dict[str, str]],
               values: list[dict[str, Any]]) -> dict:
        log, client = get_run_logger(), tracking.client()
        parent_id = _open_parent(client, name, {"search": search, "seed": seed, "trials": len(trials)}
                                 | {f"space.{k}": v for k, v in space.items()}, str(flow_run.id))
        env = {tracking.PARENT_RUN_ENV: parent_id, tracking.SWEEP_NAME_ENV: name, FLOW_RUN_ENV: str(flow_run.id)}
        results: list[dict] = []
        status = "FAILED"
        try:
            for i, (sets, vals) in enumerate(zip(trials, values), 1):  # one at a time: each trains on all the cores
                exp = f"{name}-{i}"
                row = {"trial": i, "exp": exp, "params": vals}
                state = run_trial(exp, sets, vals, env | {tracking.SWEEP_TRIAL_ENV: str(i)}, return_state=True)
                if state.is_completed():
                    row |= {"status": "completed"} | state.result()
                    client.log_metric(parent_id, f"val_{row['metric']}", row["score"], step=i)  # a chart over trials
                else:
                    row |= {"status": "failed", "error": str(state.result(raise_on_failure=False))}
                    log.error("trial %d failed, the sweep goes on: %s", i, row["error"])
                results.append(row)
            metrics = {r["metric"] for r in results if r["status"] == "completed"}
            if len(metrics) > 1:
                raise PipelineError(f"trials report different validation metrics: {', '.join(sorted(metrics))}")
            metric = next(iter(metrics), "")
            best = pick(results, metric)
            dvc("exp", "apply", best["exp"], log=log)  # the winner's params.yaml, dvc.lock and model in the workspace
            record = {"name": name, "search": search, "space": space, "seed": seed, "metric": metric,
                      "selected_on": f"validation: {SUMMARY} best_val_{metric}", "parent_run_id": parent_id,
                      "best": best, "trials": results}
            write_json(SWEEPS / f"{name}.json", record)
            _record(client, parent_id, record)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            client.set_terminated(parent_id, status)
        log.info("best: %s, validation %s %.4f, with %s. The workspace holds it: dvc repro evaluates and registers it, "
                 "then git add params.yaml dvc.lock reports %s && git commit", best["exp"], metric, best["score"],
                 ", ".join(f"{k}={v}" for k, v in best["params"].items()), SWEEPS / f"{name}.json")
        return record

    return sweep


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="a grid axis (repeat: the trials are every combination); values as dvc exp run -S reads them")
    ap.add_argument("--random", type=int, metavar="N", help="N trials drawn from --space (seeded)")
    ap.add_argument("--space", action="append", default=[], metavar="KEY=LO:HI[:log] | KEY=A,B,C",
                    help="for --random: a uniform (or log-uniform) range, integers when LO and HI are, or choices")
    ap.add_argument("--seed", type=int, default=42, help="seed of --random's draws (default 42)")
    ap.add_argument("--name", help="sweep name: experiments <name>-1, -2, ... (default: sweep-<date>-<time>)")
    args = ap.parse_args(argv)
    set_env_defaults()
    try:  # every key and value checked before anything runs
        params = plan(args.grid, args.random, args.space, args.seed, args.name or time.strftime("sweep-%Y%m%d-%H%M%S"))
        if (SWEEPS / f"{params['name']}.json").exists():
            raise PipelineError(f"{SWEEPS / params['name']}.json: a sweep of that name ran already (choose --name)")
        tracking.check_server()  # the sweep's own run, and every trial's: a server that is down fails now, in seconds
    except PipelineError as e:
        print(f"error: flows.sweep: {e}", file=sys.stderr)
        sys.exit(1)
    record = run_flow(_build_flow(), params, "flows.sweep", "the flow run is marked CRASHED and the sweep's MLflow run "
                      "KILLED; dvc exp show lists the trials that finished, dvc exp apply <name> takes one")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
