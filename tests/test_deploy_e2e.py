"""prefect.yaml, deployed as a user does: a real `prefect server start` on 127.0.0.1, `prefect work-pool create`,
`prefect deploy --all`, `prefect worker start`; two runs triggered at once both complete, one after the other (the
deployment's concurrency limit of 1 holds the second in AwaitingConcurrencySlot while the first runs)."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from uuid import UUID

import pytest

from tests.conftest import free_port, make_project, project_env, run_in, write_reviews
from tests.test_e2e import tiny_params

pytestmark = pytest.mark.e2e
PREFECT = str(Path(sys.executable).parent / "prefect")
POOL, DEPLOYMENT = "nlp-transfer", "nlp-transfer-retrain/nightly-retrain"
SKIPPED = "skipped: no new files"  # flows.retrain, with nothing landed and nothing pending


def quick_params(model_dir: Path) -> dict:
    """The smallest real pipeline (~1 min): `dvc repro` once, so that `dvc status` is clean and a run skips."""
    return tiny_params(model_dir) | {
        "augment": {"enabled": False},
        "finetune": {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "log_every_steps": 5},
        "evaluate": {"baselines": ["majority"], "bootstrap_samples": 0, "min_test_rows": 1, "min_test_per_class": 1},
        "register": {"model_name": "toy", "bootstrap_samples": 100},
    }


def prefect_env(home: Path, api_url: str, cwd: Path) -> dict[str, str]:
    """The environment of every prefect command here: its own home (SQLite database, profiles), this server, no
    telemetry, and short polls so the test does not wait on Prefect's default intervals."""
    env = {k: v for k, v in project_env().items() if not k.startswith("PREFECT_")}
    return env | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1",  # default 30: a held run retries this soon
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # default 10
        "PWD": str(cwd),  # what a shell sets: prefect.yaml's pull step names the checkout through it
    }


def stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """End `proc` with SIGTERM (a worker passes it on to its flow runs, as Prefect means it to), then SIGKILL its
    process group and every descendant left (a flow run's dvc runs in a session of its own): after `grace` seconds, or
    at once when `proc` has ended."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(family, timeout=10)


# A command started in the background of a script inherits SIGINT ignored, and Prefect's worker stops on SIGTERM by
# sending itself SIGINT: it would not stop. Commands here start with SIGINT at its default, as from a terminal.
DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


@contextlib.contextmanager
def background(args: list[str], cwd: Path, env: dict, log: Path):
    """`args` in a process group of its own, output to `log`, ended (with everything it started) when the block
    ends, also on failure."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", DEFAULT_SIGINT, *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc)


def tail(log: Path, n: int = 3000) -> str:
    return f"--- {log.name} ---\n{log.read_text(errors='replace')[-n:]}" if log.exists() else ""


def prefect(cwd: Path, env: dict, *args: str) -> str:
    proc = subprocess.run([PREFECT, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def wait_healthy(api_url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"prefect server exited ({server.returncode})\n{tail(log)}"
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(f"{api_url}/health", timeout=2).status == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"prefect server not healthy after {timeout} s\n{tail(log)}")


def test_prefect_yaml_deploys_and_runs_one_retrain_at_a_time(tmp_path, tiny_model_dir):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    root = make_project(tmp_path / "project", quick_params(tiny_model_dir))
    write_reviews(root / "data/source/reviews.csv", 200)
    run_in(root, "dvc", "repro")
    assert run_in(root, "dvc", "status", "--json").stdout.strip() in ("{}", "")  # nothing pending: a run skips

    port = str(free_port())
    api_url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(tmp_path / "prefect-home", api_url, root)
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            background([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port], tmp_path, env, server_log)
        )
        wait_healthy(api_url, server, server_log)
        prefect(root, env, "work-pool", "create", POOL, "--type", "process")
        prefect(root, env, "--no-prompt", "deploy", "--all")
        client = stack.enter_context(SyncPrefectClient(api_url))

        deployment = client.read_deployment_by_name(DEPLOYMENT)
        assert deployment.work_pool_name == POOL and deployment.entrypoint == "flows/retrain.py:retrain"
        schedules = [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules]
        assert schedules == [("0 3 * * *", "UTC", True)]
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"
        pull = {"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}  # $PWD, resolved
        assert deployment.pull_steps == [pull]

        stack.enter_context(background([PREFECT, "worker", "start", "--pool", POOL], tmp_path, env, worker_log))
        out = prefect(root, env, "deployment", "run", DEPLOYMENT)  # the user's "run it now"
        first = UUID(re.search(r"UUID: ([0-9a-f-]{36})", out).group(1))
        second = client.create_flow_run_from_deployment(deployment.id).id  # while the first is pending or running

        deadline, runs = time.monotonic() + 180, {}
        while time.monotonic() < deadline:
            runs = {i: client.read_flow_run(i) for i in (first, second)}
            if all(r.state and r.state.is_final() for r in runs.values()):
                break
            time.sleep(1)
        diagnostics = f"{[(r.name, r.state_name) for r in runs.values()]}\n{tail(worker_log)}\n{tail(server_log)}"
        assert all(r.state.is_completed() for r in runs.values()), diagnostics

        a, b = sorted(runs.values(), key=lambda r: r.start_time)
        assert b.start_time >= a.end_time, diagnostics  # never both running
        held = [s.name for s in client.read_flow_run_states(b.id)]
        assert "AwaitingConcurrencySlot" in held, f"{held}\n{diagnostics}"  # queued behind the first, not refused
        assert "AwaitingConcurrencySlot" not in [s.name for s in client.read_flow_run_states(a.id)]
        assert client.read_deployment(deployment.id).global_concurrency_limit.active_slots == 0  # released

        for run in (a, b):  # each ran the real flow in the checkout, with prefect.yaml's parameters
            assert run.parameters == {"wait": 3600} and run.deployment_id == deployment.id
            messages = []
            for _ in range(20):  # a finished run's last log lines may still be on their way
                logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
                messages = [entry.message for entry in logs]
                if any(m.startswith(SKIPPED) for m in messages):
                    break
                time.sleep(0.5)
            assert any(m.startswith(SKIPPED) for m in messages), f"{messages}\n{diagnostics}"
