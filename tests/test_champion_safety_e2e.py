"""The champion alias is safe from bad data and races; credentials never reach a file or a log; a failed or killed
run leaves something a person can recover from. All through the real entry points."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_project, project_env, run_in, sentiment_rows, update_params, write_reviews
from tests.test_e2e import lock_outs, tiny_params

pytestmark = pytest.mark.e2e


def params(model_dir: Path, **over) -> dict:
    return tiny_params(model_dir) | {"augment": {"enabled": False}} | over


def report(root: Path) -> dict:
    return json.loads((root / "reports/register.json").read_text())


def client_for(uri: str, user: str | None = None, password: str | None = None):
    from mlflow import MlflowClient

    if user:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
    return MlflowClient(uri, registry_uri=uri)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_model_dir):
    """A project through `dvc repro` (version 1 of 'toy' is champion); tests copy it, never change it."""
    root = make_project(tmp_path_factory.mktemp("registered"), params(tiny_model_dir))
    write_reviews(root / "data/source/reviews.csv", 200)
    run_in(root, "dvc", "repro")
    return root


def test_bad_data_never_takes_the_champion_alias(tmp_path, registered):
    root = tmp_path / "p"
    shutil.copytree(registered, root, symlinks=True)
    assert report(root)["promoted"] and report(root)["version"] == "1"
    # 1) a source that leaves a 3-row test split: evaluate warns, register keeps it a challenger
    write_reviews(root / "data/source/reviews.csv", 30)
    proc = run_in(root, "dvc", "repro")
    assert "WARNING: test score not comparable: the test split has" in proc.stdout + proc.stderr
    rel = json.loads((root / "reports/metrics.json").read_text())["reliability"]
    assert rel["comparable"] is False and rel["test_rows"] < 10 and rel["ci95"]["accuracy"]
    r = report(root)
    assert (r["version"], r["promoted"], r["champion"], r["comparable"]) == ("2", False, "1", False)
    assert r["reason"].startswith("not comparable: the test split has")
    # 2) a label the champion never had (a stray "unknown" class): a 3-class model is not compared with a 2-class one
    rows = sentiment_rows(200) + [{"text": f"a film numbered {i} with no opinion", "label": "unknown"} for i in range(60)]
    pd.DataFrame(rows).to_csv(root / "data/source/reviews.csv", index=False)
    run_in(root, "dvc", "repro")
    r = report(root)
    assert (r["version"], r["promoted"], r["champion"]) == ("3", False, "1")
    assert r["reason"] == "not comparable: the label set differs from the champion's (new: ['unknown']; missing: none)"
    client = client_for(f"sqlite:///{root / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias("toy", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("toy", "challenger").version) == "3"
    assert client.get_model_version("toy", "2").tags["comparable"] == "false"
    # 3) good data again: compared with the champion as usual
    write_reviews(root / "data/source/reviews.csv", 200)
    run_in(root, "dvc", "repro")
    r = report(root)  # the same test split as version 1's: its logged counts, not a re-scoring
    assert r["previous_champion"]["version"] == "1" and r["gate"]["champion_scored"].startswith("its counts logged")
    assert r["gate"]["units"] == json.loads((root / "reports/metrics.json").read_text())["reliability"]["test_rows"]


def copies_for_registering(registered: Path, tmp_path: Path, uri: str, scores: list[float], env: dict) -> list[Path]:
    """Copies of a trained project, each with its own MLflow run in the shared store and its own test score."""
    client = client_for(uri, env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD"))
    exp = client.get_experiment_by_name("nlp-transfer") or client.get_experiment(client.create_experiment("nlp-transfer"))
    roots = []
    for i, score in enumerate(scores):
        root = tmp_path / f"clone{i}"
        shutil.copytree(registered, root, symlinks=True)
        metrics = json.loads((root / "reports/metrics.json").read_text())
        metrics["test"]["accuracy"] = score
        (root / "reports/metrics.json").write_text(json.dumps(metrics))
        fake_counts(root / "reports/test_counts.npz", score)
        run = client.create_run(exp.experiment_id)
        (root / "reports/mlflow_run.json").write_text(json.dumps({"run_id": run.info.run_id, "tracking_uri": uri}))
        roots.append(root)
    return roots


def fake_counts(path: Path, accuracy: float, units: int = 1000) -> None:
    """Test counts with this accuracy on `units` rows, the first ones right: any two such sets differ with confidence
    (the gate then decides by score alone, as these tests expect), on the project's own test split hash."""
    from stages.champion import load_counts, save_counts
    from stages.tasks.sequence import label_counts

    split = load_counts(path)[1]
    y = np.arange(units) % 2
    right = np.arange(units) < round(accuracy * units)
    save_counts(path, label_counts(y, np.where(right, y, 1 - y), ["neg", "pos"]), split)


def versions(client, name: str) -> int:
    return len(client.search_model_versions(f"name='{name}'"))


def register_at_once(roots: list[Path], env: dict, client) -> list[dict]:
    """`python -m stages.register` in every copy at once. The test holds the registry lock while they log their
    models, then lets go: all of them reach the champion decision in the same instant."""
    before = versions(client, "toy")
    client.create_registered_model("toy.register-lock", tags={"owner": "the test"})
    procs = [subprocess.Popen([sys.executable, "-m", "stages.register"], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for root in roots]
    deadline = time.monotonic() + 400
    while versions(client, "toy") < before + len(roots) and time.monotonic() < deadline:
        time.sleep(0.2)
    client.delete_registered_model("toy.register-lock")
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)
    return [report(root) for root in roots]


def check_one_history(reports: list[dict], client, best: float) -> None:
    """Versions distinct; the champion is the best; every decision compared with the champion of its moment."""
    assert len({r["version"] for r in reports}) == len(reports)
    champion = client.get_model_version_by_alias("toy", "champion")
    assert float(champion.tags["test_accuracy"]) == best
    for r in reports:
        before = r["previous_champion"]["value"]
        assert r["promoted"] == (before is None or r["value"] > before), r
    # the decisions form one chain: each promoted version's predecessor was the champion just before it
    promoted = sorted((r for r in reports if r["promoted"]), key=lambda r: r["value"])
    assert [r["previous_champion"]["value"] for r in promoted[1:]] == [r["value"] for r in promoted[:-1]]
    assert not client.search_registered_models("name LIKE 'toy.register-lock%'")  # the lock is released


SCORES = [0.70, 0.95, 0.80, 0.60]


def test_concurrent_registration_into_one_sqlite_store(tmp_path, registered):
    store = tmp_path / "shared" / "mlflow.db"
    uri = f"sqlite:///{store}"
    env = project_env() | {"MLFLOW_TRACKING_URI": uri}
    roots = copies_for_registering(registered, tmp_path, uri, SCORES, env)
    check_one_history(register_at_once(roots, env, client_for(uri)), client_for(uri), max(SCORES))


def test_concurrent_registration_into_an_mlflow_server(tmp_path, registered, mlflow_server):
    uri, user, password = mlflow_server
    env = project_env() | {"MLFLOW_TRACKING_URI": uri.replace("//", f"//{user}:{password}@")}
    roots = copies_for_registering(registered, tmp_path, uri, SCORES, env | {"MLFLOW_TRACKING_USERNAME": user,
                                                                              "MLFLOW_TRACKING_PASSWORD": password})
    client = client_for(uri, user, password)
    check_one_history(register_at_once(roots, env, client), client, max(SCORES))


def test_register_waits_for_the_registry_lock(tmp_path, registered):
    root = tmp_path / "p"
    shutil.copytree(registered, root, symlinks=True)
    client = client_for(f"sqlite:///{root / 'mlflow.db'}")
    client.create_registered_model("toy.register-lock", tags={"owner": "another-host:4242"})
    proc = subprocess.Popen([sys.executable, "-m", "stages.register"], cwd=root, env=project_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while len(client.search_model_versions("name='toy'")) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)  # the new version is logged before the lock is taken
    time.sleep(3)
    assert proc.poll() is None  # waiting to decide the aliases
    assert str(client.get_model_version_by_alias("toy", "challenger").version) == "1"
    client.delete_registered_model("toy.register-lock")
    assert proc.wait(120) == 0, proc.stdout.read()
    assert str(client.get_model_version_by_alias("toy", "challenger").version) == "2"


def test_a_new_sqlite_store_is_created_once_by_concurrent_first_runs(tmp_path):
    code = "from stages import tracking; tracking.client().search_experiments(); print('ok')"
    env = project_env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(o[-1500:] for o in outs)


def test_credentials_never_reach_a_file_or_a_log(tmp_path, tiny_model_dir, mlflow_server):
    """The flow (which relays every stage's log) against a server that needs the password: it must work, and the
    password must appear nowhere: not in its output, the project's files, the DVC cache or Prefect's database."""
    uri, user, password = mlflow_server
    root = make_project(tmp_path / "p", params(tiny_model_dir, register={"model_name": "toy-auth"}))
    write_reviews(root / "data/source/reviews.csv", 200)
    env = project_env() | {"MLFLOW_TRACKING_URI": uri.replace("//", f"//{user}:{password}@"),
                           "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([sys.executable, "-m", "flows.pipeline"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((root / "reports/mlflow_run.json").read_text())["tracking_uri"] == uri
    assert password not in proc.stdout + proc.stderr
    leaks = [str(f) for folder in (root, tmp_path / "prefect") for f in folder.rglob("*")
             if f.is_file() and password.encode() in f.read_bytes()]
    assert not leaks
    champion = client_for(uri, user, password).get_model_version_by_alias("toy-auth", "champion")
    assert champion.version


def test_recover_puts_back_the_last_good_run(tmp_path, registered):
    root = tmp_path / "p"
    shutil.copytree(registered, root, symlinks=True)
    good_lock = (root / "dvc.lock").read_text()
    good_metrics = (root / "reports/metrics.json").read_text()
    run_in(root, "python", "-m", "flows.recover", "--save")
    # new data that ingests and cleans, then a stage that fails: the workspace is left half new, half gone
    write_reviews(root / "data/source/reviews.csv", 120)
    params_yaml = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params_yaml.replace(str(registered.parent), "/nowhere"))
    bad = run_in(root, "dvc", "repro", check=False)
    assert bad.returncode != 0 and not (root / "data/tokenized").exists()  # the failing stage's outputs: gone
    assert lock_outs(root / "dvc.lock")["data/raw"] != lock_outs(registered / "dvc.lock")["data/raw"]
    out = run_in(root, "python", "-m", "flows.recover").stdout
    assert "restored the snapshot of the last good run" in out and "differ from that run" in out
    assert (root / "dvc.lock").read_text() == good_lock and (root / "reports/metrics.json").read_text() == good_metrics
    assert (root / "models/finetuned/model.safetensors").exists() and (root / "data/tokenized").exists()
    # with the source and params put back too, nothing is left to do
    shutil.copy2(registered / "data/source/reviews.csv", root / "data/source/reviews.csv")
    (root / "params.yaml").write_text(params_yaml)
    assert "up to date" in run_in(root, "dvc", "status").stdout


def test_a_killed_stage_leaves_no_temp_folder_behind_the_next_run(tmp_path, tiny_model_dir):
    root = make_project(tmp_path / "p", params(tiny_model_dir))
    write_reviews(root / "data/source/reviews.csv", 4000)
    run_in(root, "dvc", "repro", "augment")
    proc = subprocess.Popen([sys.executable, "-m", "stages.tokenize"], cwd=root, env=project_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((root / "data").glob(".tokenized.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list((root / "data").glob(".tokenized.tmp-*")), "the kill came too late to leave a temp folder"
    run_in(root, "dvc", "repro", "tokenize")
    assert (root / "data/tokenized").exists() and not list((root / "data").glob(".tokenized.tmp-*"))


def test_ctrl_c_ends_the_flow_run_and_keeps_dvc_lock_true(tmp_path, tiny_model_dir):
    root = make_project(tmp_path / "p", params(tiny_model_dir, finetune={**tiny_params(tiny_model_dir)["finetune"],
                                                                           "epochs": 30, "early_stopping_patience": 30}))
    write_reviews(root / "data/source/reviews.csv", 2000)  # finetune: tens of seconds, time to be interrupted
    env = project_env() | {"PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)  # the temporary server, as a new user runs it
    # As a terminal runs it: SIGINT at its default (a test run started in the background, `nohup make test &`,
    # inherits it ignored, and Python then never raises KeyboardInterrupt), in a process group of its own.
    proc = subprocess.Popen([sys.executable, "-m", "flows.pipeline"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "finetune: epoch 1:" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground process group
    rest, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        states = [s for (s,) in db.execute("select state_type from flow_run")]
    assert states == ["CRASHED"]
    status = json.loads(run_in(root, "dvc", "status", "--json").stdout)
    assert set(status) <= {"finetune", "evaluate", "register"}, status  # the stages that finished are recorded
    # the rest of the pipeline still runs: with 2 epochs, not 30 (30 only gave the interrupt time to land; on a loaded
    # 2-core machine they took 19 min, past run_in's limit)
    update_params(root, {"finetune": {"epochs": 2, "early_stopping_patience": 2}})
    run_in(root, "dvc", "repro")
    assert report(root)["promoted"]


def test_the_temporary_prefect_server_gets_time_to_start(monkeypatch):
    from stages.cli import set_env_defaults

    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    set_env_defaults()
    from prefect.settings import Settings

    assert Settings().server.ephemeral.startup_timeout_seconds >= 120


def test_git_dirty_counts_what_decides_the_model_not_the_pipelines_outputs(tmp_path, registered):
    root = tmp_path / "p"
    shutil.copytree(registered, root, symlinks=True)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    run_in(root, *git, "add", "-A")
    run_in(root, *git, "commit", "-qm", "a good run: dvc.lock and reports in git")
    run_in(root, "dvc", "repro", "-f", "-s", "finetune")  # DVC deletes finetune's git-tracked reports first
    run_id = json.loads((root / "reports/mlflow_run.json").read_text())["run_id"]
    client = client_for(f"sqlite:///{root / 'mlflow.db'}")
    assert client.get_run(run_id).data.tags["git.dirty"] == "false"
    (root / "stages/__init__.py").write_text((root / "stages/__init__.py").read_text() + "\n# an edit\n")
    run_in(root, "dvc", "repro", "-f", "-s", "finetune")
    run_id = json.loads((root / "reports/mlflow_run.json").read_text())["run_id"]
    assert client.get_run(run_id).data.tags["git.dirty"] == "true"


def test_the_champion_is_rescored_when_the_test_split_changes(tmp_path, registered):
    """New data moves the test split: register re-scores the champion from its registered folder, on the new split,
    and both models are compared on the same units; re-scoring the champion on its own split gives its logged counts."""
    from stages import tasks
    from stages.champion import load_counts, rescore

    root = tmp_path / "p"
    shutil.copytree(registered, root, symlinks=True)
    logged, split = load_counts(root / "reports/test_counts.npz")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        params, task = tasks.load()
        again = rescore(task, root / "models/finetuned", root / "data/clean", params)
    finally:
        os.chdir(cwd)
    assert again.classes == logged.classes and np.array_equal(again.counts, logged.counts)
    write_reviews(root / "data/source/reviews.csv", 320)
    run_in(root, "dvc", "repro")
    r = report(root)
    units = json.loads((root / "reports/metrics.json").read_text())["reliability"]["test_rows"]
    assert r["test_split"] != split and r["gate"]["champion_scored"] == "re-scored on the current test split"
    assert r["gate"]["units"] == units != len(logged.counts)
    client = client_for(f"sqlite:///{root / 'mlflow.db'}")
    v2 = client.get_model_version("toy", "2")
    assert v2.tags["test_split"] == r["test_split"] and v2.tags["decision"] == r["reason"]
    assert v2.description.startswith("# toy version 2") and "## Lineage" in v2.description
    assert "paired bootstrap interval" in v2.description and "dvc.data/clean" in v2.description


def test_rollback_restores_the_replaced_champion_and_says_why(tmp_path, registered):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = project_env() | {"MLFLOW_TRACKING_URI": uri}
    roots = copies_for_registering(registered, tmp_path, uri, [0.60, 0.90], env)
    for root in roots:  # one after the other: 0.90 replaces 0.60 with confidence
        subprocess.run([sys.executable, "-m", "stages.register"], cwd=root, env=env, check=True, capture_output=True)
    client = client_for(uri)
    alias = lambda a: str(client.get_model_version_by_alias("toy", a).version)
    assert (alias("champion"), alias("previous")) == ("2", "1") and report(roots[1])["gate"]["checks"]["mcnemar"]
    rollback = [sys.executable, "-m", "flows.rollback", "--reason", "complaints since version 2"]
    proc = subprocess.run(rollback, cwd=roots[0], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "toy: the champion is version 1 again (was 2): complaints since version 2" in proc.stderr
    assert alias("champion") == "1" and "previous" not in client.get_registered_model("toy").aliases
    assert client.get_model_version("toy", "2").tags["rolled_back"].endswith(
        "complaints since version 2 (champion now version 1)")
    assert json.loads(client.get_registered_model("toy").tags["rollbacks"])[0]["replaced"] == "2"
    proc = subprocess.run(rollback, cwd=roots[0], env=env, capture_output=True, text=True)  # no `previous` any more
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        "error: rollback: toy has no 'previous' alias (no promotion has replaced a champion, or a rollback used it): "
        "name the version with --to")
    proc = subprocess.run([*rollback, "--to", "7"], cwd=roots[0], env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == "error: rollback: toy has no version 7"
    subprocess.run([*rollback, "--to", "2"], cwd=roots[0], env=env, check=True, capture_output=True)
    assert alias("champion") == "2"
