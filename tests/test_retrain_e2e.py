"""flows.retrain end to end, under Prefect's test harness, with a tiny random BERT on toy reviews.

One project goes through a retraining history, test by test (in this order): nothing new → skipped; a bad file →
quarantined with its error; much more data → a better model, promoted, pushed; data with random labels → a worse
model, refused; a run killed between landing and training, then rerun → every new row once, none lost."""

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import make_project, project_env, run_in, sentiment_rows, store_client

pytestmark = pytest.mark.e2e
PARAMS = {"finetune": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-3, "log_every_steps": 50},
          "evaluate": {"probe_max_train_rows": 100, "min_test_rows": 3, "min_test_per_class": 1,
                       "baselines": ["majority"]},
          "register": {"model_name": "toy", "bootstrap_samples": 500},
          "ingest": {"source": "data/source/reviews.csv", "landed": "data/source/landed"},
          "retrain": {"drift": {"sample": 200, "seed": 0, "batch_size": 64,
                                "flag": {"label_p": 0.001, "length_ks": 0.15, "unk_increase": 0.005,
                                         "domain_auc": 0.75},
                                "skip": {"label_p": None, "length_ks": None, "unk_increase": 0.05,
                                         "domain_auc": 0.99}}}}


def rows(n: int, tag: str, seed: int, noisy: bool = False) -> pd.DataFrame:
    """`n` toy reviews whose texts no other call makes (the id word carries `tag`); `noisy`: random labels."""
    df = pd.DataFrame(sentiment_rows(n, seed))
    df["text"] = df["text"].str.replace(r"\bw(\d+)\b", rf"{tag}\1", regex=True)
    if noisy:
        rng = random.Random(seed)
        df["label"] = [rng.choice(["positive", "negative"]) for _ in range(n)]
    return df


def raw_rows(root: Path) -> int:
    return sum(s["rows"] for s in json.loads((root / "data/raw/summary.json").read_text()).values())


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    """A project whose champion (version 1) learnt from 80 rows (~12 optimizer steps): weak on purpose."""
    root = make_project(tmp_path_factory.mktemp("retrain") / "proj",
                        PARAMS | {"model": {"name": str(tiny_model_dir)}})
    rows(80, "a", 0).to_csv(root / "data/source/reviews.csv", index=False)
    run_in(root, "git", "add", "-A")
    run_in(root, "git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "source")
    run_in(root, "dvc", "repro")
    return root


@pytest.fixture
def retrain(project, monkeypatch, prefect_harness, tmp_path):
    """The flow, run in this process as a worker runs it: MLflow's global URIs point at another store, as an earlier
    flow run or test module may have left them; the flow must use the project's own (both are restored after)."""
    from mlflow.tracking._model_registry import utils as registry_globals
    from mlflow.tracking._tracking_service import utils as tracking_globals

    from flows.retrain import retrain

    monkeypatch.chdir(project)
    for key, value in project_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    elsewhere = f"sqlite:///{tmp_path / 'another-store.db'}"
    monkeypatch.setattr(tracking_globals, "_tracking_uri", elsewhere)
    monkeypatch.setattr(registry_globals, "_registry_uri", elsewhere)
    return retrain


def land(project: Path, name: str, df: pd.DataFrame) -> Path:
    path = project / "data/landing" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False) if name.endswith(".csv") else df.to_json(path, orient="records", lines=True)
    return path


def champion(project: Path) -> str:
    return str(store_client(project).get_model_version_by_alias("toy", "champion").version)


def test_nothing_new_skips_and_says_why(retrain, project):
    result = retrain()
    assert result["status"] == "skipped" and "no new files in data/landing" in result["reason"]


def test_a_bad_file_is_quarantined_with_its_error_and_nothing_trains(retrain, project):
    bad = land(project, "bad.csv", pd.DataFrame({"review": ["good film"], "label": ["positive"]}))
    unknown = land(project, "unknown.jsonl", pd.DataFrame({"text": ["meh film", "ok film"],
                                                           "label": ["neutral", "positive"]}))
    before = (project / "dvc.lock").read_text()
    result = retrain()
    assert result["status"] == "skipped" and "2 quarantined" in result["reason"]
    assert not bad.exists() and not unknown.exists()
    q = project / "data/quarantine"
    assert (q / "bad.csv").exists() and (q / "unknown.jsonl").exists()
    assert (q / "bad.csv.error.txt").read_text() == (
        "data/landing/bad.csv: no column 'text' (ingest.text_column); columns present: review, label\n")
    error = (q / "unknown.jsonl.error.txt").read_text()
    assert error.startswith("data/landing/unknown.jsonl: ") and "'neutral'" in error and error.count("\n") == 1
    assert (project / "dvc.lock").read_text() == before and not (project / "data/source/landed").exists()


def test_more_data_makes_a_better_model_promoted_and_pushed(retrain, project):
    land(project, "batch1.csv", rows(400, "b", 1))
    before = raw_rows(project)
    result = retrain()
    assert result["status"] == "retrained" and result["new_rows"] == 400
    assert result["decision"] in ("retrain", "retrain_and_flag")
    assert raw_rows(project) == before + 400
    assert result["register"]["promoted"], result["register"]
    assert champion(project) == result["register"]["version"] == "2"
    assert result["pushed"] and any((project.parent / "nlp-transfer-dvc-remote").rglob("*"))
    landed = list((project / "data/source/landed").iterdir())
    assert len(landed) == 1 and landed[0].name.endswith("-batch1.csv")
    assert not list((project / "data/landing").iterdir())
    # the pointer and the run are committed; dvc status is clean: a rerun has nothing to do
    log = run_in(project, "git", "log", "--format=%s").stdout
    assert "retrain: land 400 new rows from batch1.csv" in log and "retrain: pipeline run" in log
    assert "up to date" in run_in(project, "dvc", "status").stdout
    run = store_client(project).get_run(json.loads((project / "reports/register.json").read_text())["run_id"])
    assert run.data.tags["drift.decision"] == result["decision"]
    report = json.loads(Path(store_client(project).download_artifacts(run.info.run_id, "drift/report.json")).read_text())
    assert report["new_rows"] == 400 and 0 <= report["embeddings"]["auc"] <= 1 and report["labels"]["p_value"] > 0.001


def test_random_labels_make_a_worse_model_that_is_refused(retrain, project):
    land(project, "noisy.jsonl", rows(400, "c", 2, noisy=True))
    result = retrain()
    assert result["status"] == "retrained" and result["new_rows"] == 400
    assert not result["register"]["promoted"] and not result["pushed"]
    assert champion(project) == "2" and result["register"]["version"] == "3"


def test_a_run_killed_after_landing_is_finished_by_the_next_one(retrain, project, monkeypatch):
    import flows.retrain

    land(project, "batch2.csv", rows(100, "d", 3))
    before = raw_rows(project)

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    real_dvc = flows.retrain.dvc

    def dvc_dies_on_add(*args, **kwargs):  # dies after the copy, before dvc add and before the landing file goes
        if args[0] == "add":
            raise RuntimeError("killed during dvc add")
        return real_dvc(*args, **kwargs)

    monkeypatch.setattr(flows.retrain, "dvc", dvc_dies_on_add)
    with pytest.raises(RuntimeError, match="killed during dvc add"):
        retrain()
    assert (project / "data/landing/batch2.csv").exists() and len(list((project / "data/source/landed").iterdir())) == 3
    monkeypatch.setattr(flows.retrain, "dvc", real_dvc)
    monkeypatch.setattr(flows.retrain, "stage_runner", lambda: killed)  # now dies after landing, before training
    with pytest.raises(RuntimeError, match="killed"):
        retrain()
    assert not (project / "data/landing/batch2.csv").exists()
    assert "ingest" in json.dumps(run_in(project, "dvc", "status", "--json").stdout)
    monkeypatch.undo()
    monkeypatch.chdir(project)
    for key, value in project_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = retrain()  # nothing new in landing, but the landed data is not trained on yet
    assert result["status"] == "retrained" and "ingest" in result["pending_before"]
    assert raw_rows(project) == before + 100  # each new row once: none duplicated, none lost
    assert len(list((project / "data/source/landed").iterdir())) == 3  # batch1, noisy, batch2
    assert retrain()["status"] == "skipped"
