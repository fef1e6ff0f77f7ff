"""The training engine through the real stage: 2 data-parallel CPU processes (torchrun, gloo) agree with 1, and a
fine-tuning killed with SIGKILL resumes from its newest whole checkpoint to the very weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from tests.conftest import make_project, project_env, run_in, store_client, tiny_bert, update_params, write_reviews

pytestmark = pytest.mark.e2e
BASE = {"evaluate": {"probe_max_train_rows": 200, "min_test_rows": 10, "min_test_per_class": 2},
        "ingest": {"source": "data/source/reviews.csv"}}


def finetune(root: Path, *launcher: str) -> subprocess.CompletedProcess:
    return run_in(root, *(launcher or (sys.executable,)), "-m", "stages.finetune")


def weights(root: Path) -> dict:
    return load_file(str(root / "models/finetuned/model.safetensors"))


@pytest.fixture(scope="module")
def no_dropout_model(tmp_path_factory, packaged_tokenizer) -> Path:
    """The tiny BERT with dropout 0: the only randomness a data-parallel run cannot share is gone."""
    out = tiny_bert(tmp_path_factory.mktemp("tiny-bert-nodrop"), packaged_tokenizer, packaged_tokenizer.vocab_size)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    return out


def test_two_processes_agree_with_one(tmp_path, no_dropout_model):
    root = make_project(tmp_path, BASE | {"model": {"name": str(no_dropout_model)}, "finetune": {
        "epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "precision": "fp32", "log_every_steps": 1}})
    write_reviews(root / "data/source/reviews.csv", 206)  # 160 train rows (split by hash): 10 batches of 16 per epoch
    run_in(root, "dvc", "repro", "tokenize")
    finetune(root)
    one = pd.read_csv(root / "reports/train_steps.csv")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = finetune(root, *torchrun)
    two = pd.read_csv(root / "reports/train_steps.csv")
    assert len(one) == len(two) == 20
    assert (one["train_loss"] - two["train_loss"]).abs().max() < 1e-5, pd.concat([one, two], axis=1)
    summary = json.loads((root / "reports/train.json").read_text())
    assert summary["processes"] == 2
    assert proc.stderr.count("best epoch") == 1  # one process logs and writes
    client = store_client(root)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 2  # one MLflow run per stage run, not one per process
    # the param starts the same processes itself
    update_params(root, {"finetune": {"num_processes": 2}})
    finetune(root)
    assert (pd.read_csv(root / "reports/train_steps.csv")["train_loss"] - two["train_loss"]).abs().max() < 1e-6


def checkpoints(root: Path) -> list[Path]:
    return sorted((root / ".checkpoints/finetune").glob("*/step-*[0-9]"))


def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_model_dir):
    """fp32 on CPU with dropout on: resume restores model, optimizer, schedule, RNG and the place in the epoch, so the
    weights equal an uninterrupted run's exactly. A damaged newest checkpoint falls back to the one before; other
    params never see these checkpoints. The MLflow run the kill left RUNNING is closed KILLED by the next finetune of
    the same inputs (not by one of other params), and the new run names it."""
    root = make_project(tmp_path, BASE | {"model": {"name": str(tiny_model_dir)}, "finetune": {
        "epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "precision": "fp32", "checkpoint_every_steps": 40}})
    write_reviews(root / "data/source/reviews.csv", 2500)  # ~2,000 train rows: ~250 steps per epoch
    run_in(root, "dvc", "repro", "tokenize")
    total = 2 * -(-len(pd.read_parquet(root / "data/augmented/train.parquet")) // 8)  # 2 epochs of batches of 8
    finetune(root)
    uninterrupted = weights(root)
    assert not checkpoints(root)  # removed after success

    proc = subprocess.Popen([sys.executable, "-m", "stages.finetune"], cwd=root, env=project_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not [c for c in checkpoints(root) if int(c.name[5:]) >= 240] and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = checkpoints(root)
    assert saved and int(saved[-1].name[5:]) < total, "killed after the run ended: nothing to resume"
    assert len(saved) <= 2  # the newest and the one before
    client = store_client(root)
    experiments = [e.experiment_id for e in client.search_experiments()]

    def running() -> list[str]:
        return [r.info.run_id for r in client.search_runs(experiments, "attributes.status = 'RUNNING'")]

    (killed,) = running()
    assert client.get_run(killed).data.tags["pipeline.pid"] == str(proc.pid)

    update_params(root, {"finetune": {"learning_rate": 2e-3}})
    other = finetune(root)
    assert "resumed from" not in other.stderr  # other params: a fresh start beside the old checkpoints
    assert checkpoints(root) == saved
    assert running() == [killed]  # other inputs: not this run's to close

    update_params(root, {"finetune": {"learning_rate": 1e-3}})
    newest = saved[-1] / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100] + b"\0" * 100)  # damaged in place: same size, other bytes
    resumed = finetune(root)
    fallback = int(saved[-2].name[5:]) if len(saved) == 2 else 0
    assert "damaged" in resumed.stderr
    if fallback:
        assert f"resumed from step {fallback} of {total}" in resumed.stderr
    got = weights(root)
    assert got.keys() == uninterrupted.keys()
    assert all((got[k] == uninterrupted[k]).all() for k in got), "resumed weights differ from the uninterrupted run's"
    assert not checkpoints(root)
    assert f"closed MLflow run {killed} left RUNNING by a killed finetune (pid {proc.pid})" in resumed.stderr
    new = json.loads((root / "reports/mlflow_run.json").read_text())["run_id"]
    old = client.get_run(killed)
    assert old.info.status == "KILLED" and old.data.tags["pipeline.closed_by_run"] == new
    tags = client.get_run(new).data.tags
    assert tags["pipeline.replaces_run"] == killed
    assert tags.get("finetune.resumed_from_run") == (killed if fallback else None)
    assert not running()


def test_the_flow_retries_a_killed_finetune_and_it_resumes(tmp_path, tiny_model_dir):
    """`python -m flows.pipeline --retries 1`: finetune is SIGKILLed after a checkpoint, Prefect retries the stage
    through dvc, and the retry continues from the checkpoint instead of step 0."""
    import psutil

    root = make_project(tmp_path, BASE | {"model": {"name": str(tiny_model_dir)}, "register": {"model_name": "toy"},
                                          "finetune": {"epochs": 2, "batch_size": 8, "checkpoint_every_steps": 40}})
    write_reviews(root / "data/source/reviews.csv", 2500)
    flow = subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--retries", "1", "--retry-delay", "1"], cwd=root,
                            env=project_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, killed = time.monotonic() + 600, False
    while not killed and flow.poll() is None:
        assert time.monotonic() < deadline
        if [c for c in checkpoints(root) if int(c.name[5:]) >= 120]:
            for p in psutil.process_iter(["cmdline", "cwd"]):
                if "stages.finetune" in (p.info["cmdline"] or []) and p.info["cwd"] == str(root):
                    p.kill()
                    killed = True
        time.sleep(0.05)
    out, _ = flow.communicate(timeout=600)
    assert killed and flow.returncode == 0, out[-3000:]
    assert "resumed from step" in out and "Retry 1/1" in out, out[-3000:]
    assert run_in(root, "dvc", "status").stdout.strip() == "Data and pipelines are up to date."
