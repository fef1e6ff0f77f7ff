"""End to end: `dvc repro` on ~200 rows with a tiny random BERT, then everything a user checks."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import make_project, run_in, store_client, write_reviews

pytestmark = pytest.mark.e2e
TINY = {"finetune": {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3, "log_every_steps": 5},
        "evaluate": {"probe_max_train_rows": 200, "min_test_rows": 10, "min_test_per_class": 2}, "augment": {"enabled": True}, "register": {"model_name": "toy"},
        "ingest": {"source": "data/source/reviews.csv"}}


def tiny_params(model_dir: Path) -> dict:
    return TINY | {"model": {"name": str(model_dir)}}


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    root = make_project(tmp_path_factory.mktemp("e2e"), tiny_params(tiny_model_dir))
    write_reviews(root / "data/source/reviews.csv", 200)
    proc = run_in(root, "dvc", "repro")
    (root.parent / "repro.log").write_text(proc.stdout + proc.stderr)
    (root.parent / "first.lock").write_text((root / "dvc.lock").read_text())  # before exp run changes it
    return root


def test_artifacts(project):
    for split in ("train", "validation", "test"):
        assert (project / f"data/raw/{split}.parquet").exists() and (project / f"data/augmented/{split}.parquet").exists()
    assert (project / "data/tokenized/dataset_dict.json").exists()
    config = json.loads((project / "models/finetuned/config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert (project / "models/finetuned/model.safetensors").exists()
    clean = json.loads((project / "reports/clean.json").read_text())
    assert clean["total"]["dropped"]["empty"] == 1 and clean["total"]["dropped"]["duplicate"] == 1
    assert clean["total"]["rows_in"] == 202
    augment = json.loads((project / "reports/augment.json").read_text())
    assert augment["rows_out"] > augment["rows_in"]
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert set(metrics["baselines"]) == {"majority", "frozen_probe"}
    assert metrics["test"]["accuracy"] >= 0.8  # the toy task is separable by word identity
    for plot in ("confusion.csv", "per_class.csv", "confusion_matrix.png"):
        assert (project / "reports/plots" / plot).stat().st_size > 0
    register = json.loads((project / "reports/register.json").read_text())
    assert register["promoted"] and register["version"] == "1"


def test_one_mlflow_run_holds_everything(project):
    client = store_client(project)
    exp = client.get_experiment_by_name("nlp-transfer")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == json.loads((project / "reports/mlflow_run.json").read_text())["run_id"]
    m = run.data.metrics
    assert {"test_accuracy", "val_accuracy", "baseline_majority_accuracy", "baseline_frozen_probe_accuracy"} <= set(m)
    epochs = json.loads((project / "reports/train.json").read_text())["epochs_run"]
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == epochs >= 2  # one point per epoch
    assert run.data.params["finetune.learning_rate"] == "0.003" and run.data.params["ingest.source"] == "data/source/reviews.csv"
    tags = run.data.tags
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["dvc.data/raw"] and tags["dvc.data/tokenized"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/confusion_matrix.png" in artifacts
    # a name a person tells apart (MLflow's generated one repeated: the seed is set first), the splits as its data
    assert re.fullmatch(r"tiny-bert\d*-sequence-\d{8}-\d{6}", run.info.run_name), run.info.run_name
    from stages.lineage import file_md5

    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {f"data/source/reviews.csv/{s}" for s in ("train", "validation", "test")}
    for split, context in (("train", "training"), ("validation", "validation"), ("test", "test")):
        d = inputs[f"data/source/reviews.csv/{split}"]
        assert d.dataset.digest == file_md5(project / f"data/augmented/{split}.parquet")  # DVC's hash of the file
        tags = {t.key: t.value for t in d.tags}
        assert tags["mlflow.data.context"] == context
        assert tags["rows"] == str(len(pd.read_parquet(project / f"data/augmented/{split}.parquet")))  # from the footer
    # summary numbers: the test set's own, its interval, the baselines' score; per class as a table, not 40 charts
    single = sorted(k for k in m if len(client.get_metric_history(run.info.run_id, k)) == 1)
    assert "test_f1_positive" not in m and "baseline_majority_f1_macro" not in m and len(single) <= 14, single  # 14th: peak_memory_mb
    assert {"test_accuracy_ci95_low", "test_accuracy_ci95_high"} <= set(m)
    assert "per_class.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert [h.step for h in client.get_metric_history(run.info.run_id, "train_loss")] == list(range(1, epochs + 1))
    mv = client.get_model_version_by_alias("toy", "champion")
    assert str(mv.version) == "1" and mv.run_id == run.info.run_id
    assert str(client.get_model_version_by_alias("toy", "challenger").version) == "1"


def test_the_run_log_is_a_page_a_person_reads(project):
    """No progress-bar frames, no red MISSING table for the new head, no MLflow warnings about our own model class."""
    log = (project.parent / "repro.log").read_text()
    for noise in ("\r", "LOAD REPORT", "MISSING", "Loading weights", "Writing model shards", "Downloading artifacts",
                  "Add type hints", "CloudPickle", "it/s]", "Warning"):
        assert noise not in log, noise
    assert "new BertForSequenceClassification head, initialised from the seed" in log
    assert "test split, fine-tuned model: " in log and "frozen encoder (probe baseline)" in log
    assert len(log.splitlines()) <= 80, log  # 7 stages: ~10 lines each


def test_status_clean_and_repro_is_a_no_op(project):
    assert "up to date" in run_in(project, "dvc", "status").stdout
    out = run_in(project, "dvc", "repro").stdout
    assert "Running stage" not in out and "up to date" in out


def test_champion_loads_in_another_process(project):
    code = ("import mlflow, json; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
            "m = mlflow.pyfunc.load_model('models:/toy@champion');"
            "print(m.predict(['a great and superb film', 'an awful dull plot']).to_json(orient='records'))")
    rows = json.loads(run_in(project, "python", "-c", code).stdout.strip().splitlines()[-1])
    assert [r["label"] for r in rows] == ["positive", "negative"]
    for r in rows:
        assert r["prob_negative"] + r["prob_positive"] == pytest.approx(1, abs=1e-5) and r["score"] >= 0.5


def test_champion_refuses_inputs_it_would_guess_at(project):
    """A DataFrame without `text` (an id column) and a dict of lists: errors naming the expected input, not
    predictions for the id or for the string "['...']"."""
    code = ("import mlflow, pandas as pd; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
            "m = mlflow.pyfunc.load_model('models:/toy@champion')\n"
            "for x in (pd.DataFrame({'id': ['17', '18'], 'review': ['great', 'awful']}), {'text': ['great', 'awful']}):\n"
            "    try: print('PREDICTED', m.predict(x).label.tolist())\n"
            "    except Exception as e: print('ERROR', type(e).__name__, str(e).splitlines()[0])")
    lines = [ln for ln in run_in(project, "python", "-c", code).stdout.splitlines() if ln.startswith(("PREDICTED", "ERROR"))]
    assert len(lines) == 2 and all(ln.startswith("ERROR MlflowException") for ln in lines), lines
    assert "no 'text' column" in lines[0] and "input row 0: got list" in lines[1]  # MLflow makes the dict a DataFrame
    assert all("expected a string, a list of strings, or a DataFrame with a 'text' column" in ln for ln in lines)


def test_metrics_and_plots_offline(project):
    shown = run_in(project, "dvc", "metrics", "show").stdout
    assert "accuracy" in shown and "ci95_low" in shown and "frozen_probe" in shown
    assert max(len(line) for line in shown.splitlines()) <= 100, shown  # a table a terminal shows
    run_in(project, "dvc", "plots", "show", "-o", "plots_html")
    page = (project / "plots_html/index.html").read_text()
    assert "vegaEmbed" in page and "confusion" in page.lower()
    assert "Learning rate" in page and "learning_rate" in page and '"tickMinStep": 1' in page  # whole epochs
    assert "validation score" in page and "loss (the model" in page  # named y axes
    assert "cdn.jsdelivr" not in page and 'src="http' not in page  # renders with no network


def test_exp_run_reruns_only_training_stages(project):
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    run_in(project, *git, "add", "dvc.lock", "reports", "params.yaml")  # as a user records the run exps start from
    run_in(project, *git, "commit", "-qm", "the first run")
    # a rate that barely learns in 4 epochs: the scores differ from the first run's, so --only-changed shows them
    proc = run_in(project, "dvc", "exp", "run", "-S", "finetune.learning_rate=1e-5")
    out = proc.stdout
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["finetune", "evaluate", "register"]
    client = store_client(project)
    assert len(client.search_runs([client.get_experiment_by_name("nlp-transfer").experiment_id])) == 2
    assert str(client.get_model_version_by_alias("toy", "challenger").version) == "2"
    register = json.loads((project / "reports/register.json").read_text())
    champion = str(client.get_model_version_by_alias("toy", "champion").version)
    assert champion == ("2" if register["promoted"] else "1") and register["previous_champion"]["version"] == "1"
    assert register["workspace_model"] == ("models/finetuned is version 2, now the champion: models:/toy@champion serves it"
                                           if register["promoted"] else "models/finetuned is version 2, only the "
                                           "challenger; models:/toy@champion still serves version 1")
    assert f"register: {register['workspace_model']}" in proc.stderr  # the stage's last line says it too
    header = run_in(project, "dvc", "exp", "show", "--only-changed", "--csv").stdout.splitlines()[0].split(",")
    assert "finetune.learning_rate" in header and "accuracy" in header and "train_seconds" not in header
    assert len(",".join(header)) <= 200, header  # the scores and what changed, not ~1,870 characters of timings
    run = client.get_run(register["run_id"])  # named and tagged after the DVC experiment
    assert run.info.run_name.endswith(run.data.tags["dvc.exp_name"]) and len(run.data.tags["dvc.exp_baseline_rev"]) == 40


def lock_outs(lock: Path) -> dict:
    """md5 of each data and model output in a dvc.lock (reports hold run ids, which differ per run)."""
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {o["path"]: o["md5"] for s in stages.values() for o in s.get("outs", []) if o["path"].startswith(("data/", "models/"))}


def test_flow_matches_dvc_repro(project, tmp_path_factory, tiny_model_dir, monkeypatch, prefect_harness):
    from flows.pipeline import _build_flow
    from tests.conftest import project_env

    other = make_project(tmp_path_factory.mktemp("flow"), tiny_params(tiny_model_dir))
    write_reviews(other / "data/source/reviews.csv", 200)
    monkeypatch.chdir(other)
    for key, value in project_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = _build_flow()()
    assert [r["stage"] for r in result["stages"]] == ["ingest", "clean", "augment", "tokenize", "pretrain", "finetune", "evaluate", "register"]
    assert "up to date" in run_in(other, "dvc", "status").stdout
    assert lock_outs(other / "dvc.lock") == lock_outs(project.parent / "first.lock")  # same bytes as dvc repro made
    run = store_client(other).search_runs([store_client(other).get_experiment_by_name("nlp-transfer").experiment_id])[0]
    assert run.data.tags["prefect.flow_run_id"]
    again = _build_flow()(only_if_changed=True)
    assert again == {"ran": False, "stages": []}


def test_no_secret_in_params_yaml_or_logged_params(project):
    """Credentials come from the environment only: no key of params.yaml, and no param or tag logged to MLflow, is
    named like one (the values of the common names are never logged)."""
    secret = re.compile(r"(^|[._])(pass(word|wd)?|secret|token|api[_-]?key|credentials?|auth)($|[._])", re.IGNORECASE)
    assert secret.search("db.password") and secret.search("api_key") and not secret.search("ingest.tokens_column")

    def keys(d, prefix=""):
        for k, v in d.items():
            yield from keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]

    assert not [k for k in keys(yaml.safe_load((project / "params.yaml").read_text())) if secret.search(k)]
    run = store_client(project).get_run(json.loads((project / "reports/mlflow_run.json").read_text())["run_id"])
    assert len(run.data.params) > 20
    assert not [k for k in [*run.data.params, *run.data.tags] if secret.search(k)]
