"""Two runs in one checkout: the second waits or stops with one line, never mixes its stages with the first's; a
killed run leaves no lock behind."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from flows.pipeline import CHECKOUT_LOCK, checkout_lock
from stages.io import PipelineError
from tests.conftest import make_project, project_env, run_in, write_reviews
from tests.test_e2e import tiny_params

HOLD = ("import sys, time; from pathlib import Path; from flows.pipeline import checkout_lock\n"
        "with checkout_lock(0, Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(float(sys.argv[2]))")


def holder(lock_file, seconds: float) -> subprocess.Popen:
    """Another process holding the checkout lock for `seconds`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_file), str(seconds)], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_checkout_lock_stops_or_waits_and_a_killed_holder_leaves_none(tmp_path):
    lock_file = tmp_path / ".dvc/tmp/pipeline.lock"
    proc = holder(lock_file, 60)
    t0 = time.monotonic()
    with pytest.raises(PipelineError, match=rf"another pipeline run \(pid {proc.pid}, started .*\) is running in this "
                                            r"checkout .*--wait SECONDS"):
        with checkout_lock(0, lock_file):
            pass
    assert time.monotonic() - t0 < 2
    proc.send_signal(signal.SIGKILL)  # a killed run: the kernel drops its flock
    proc.wait()
    with checkout_lock(0, lock_file):
        pass
    proc = holder(lock_file, 1.5)  # --wait: queue behind a run that ends
    t0 = time.monotonic()
    with checkout_lock(30, lock_file):
        assert time.monotonic() - t0 > 0.5  # it waited for the holder's release
    proc.wait()


@pytest.mark.e2e
def test_two_runs_in_one_checkout(tmp_path, tiny_model_dir):
    root = make_project(tmp_path / "p", tiny_params(tiny_model_dir) | {"augment": {"enabled": False}})
    write_reviews(root / "data/source/reviews.csv", 200)
    # a flow while another run holds the checkout: one line, nothing run
    proc = holder(root / CHECKOUT_LOCK, 300)
    try:
        env = project_env() | {"PREFECT_HOME": str(tmp_path / "prefect")}
        env.pop("PREFECT_API_URL", None)
        flow = subprocess.run([sys.executable, "-m", "flows.pipeline"], cwd=root, env=env, capture_output=True,
                              text=True, timeout=600)
    finally:
        proc.kill()
        proc.wait()
    assert flow.returncode == 1, flow.stderr[-2000:]
    assert f"error: flows.pipeline: another pipeline run (pid {proc.pid}" in flow.stderr
    assert not (root / "data/raw").exists() and not (root / "dvc.lock").exists()
    # two `dvc repro` at once: DVC's own lock stops the second; the first finishes and leaves the pipeline whole
    first = subprocess.Popen(["dvc", "repro"], cwd=root, env=project_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    second = run_in(root, "dvc", "repro", check=False)
    out = first.communicate(timeout=900)[0]
    assert first.returncode == 0, out[-3000:]
    # DVC locks each stage's outputs while it runs: the second stops at the first one the first run holds
    said = second.stdout + second.stderr
    assert second.returncode != 0 and re.search(r"is busy, it is being blocked by:\s+\(PID \d+\): .*dvc repro|Unable "
                                                r"to acquire lock", said), said[-2000:]
    assert "up to date" in run_in(root, "dvc", "status").stdout
