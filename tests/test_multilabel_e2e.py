"""Multi-label end to end through the Prefect flow (which runs every dvc.yaml stage through DVC) with a tiny random
BERT: label sets in, per-label thresholds, multi-label metrics and plots, a registered pyfunc that returns label sets."""

import json
import random
from pathlib import Path

import pytest

from tests.conftest import make_project, project_env, run_in, store_client

pytestmark = pytest.mark.e2e
GENRES = ["action", "comedy", "drama"]
CUES = {"action": ["explosions", "chase", "fight"], "comedy": ["hilarious", "jokes", "laugh"],
        "drama": ["tears", "family", "grief"]}
FILLER = ["the", "film", "plot", "was", "really", "and", "story", "cast"]


def write_genres(path: Path, n: int, seed: int = 0) -> None:
    """JSONL rows whose cue words say their genres (0-3 of them), plus a duplicate for clean to count."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        labels = sorted(rng.sample(GENRES, rng.choice([0, 1, 1, 2, 2, 3])))
        words = rng.sample(FILLER, 4) + [rng.choice(CUES[g]) for g in labels] + [f"w{i}"]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "genres": labels})
    rows.append(rows[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir, prefect_harness):
    from flows.pipeline import _build_flow

    root = make_project(tmp_path_factory.mktemp("multilabel"), {
        "task": "multilabel_classification", "model": {"name": str(tiny_model_dir)},
        "ingest": {"source": "data/source/genres.jsonl", "label_column": "genres"},
        "augment": {"enabled": True, "operations": ["swap", "delete"]},
        "finetune": {"epochs": 12, "batch_size": 16, "learning_rate": 3e-3, "log_every_steps": 5,
                     "early_stopping_patience": 12},
        "evaluate": {"probe_max_train_rows": 200, "min_test_rows": 10, "min_test_per_class": 2}, "register": {"model_name": "toy-genres"}})
    write_genres(root / "data/source/genres.jsonl", 300)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for key, value in project_env().items():
            mp.setenv(key, value)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = _build_flow()()
    assert [r["stage"] for r in result["stages"]][-1] == "register"
    return root


def read(root: Path, name: str):
    return json.loads((root / name).read_text())


def test_stages_report_label_sets(project):
    ingest = read(project, "data/raw/summary.json")
    assert sum(s["rows"] for s in ingest.values()) == 301 and sum(s["no_label"] for s in ingest.values()) > 0
    assert read(project, "data/raw/labels.json")["names"] == GENRES
    assert read(project, "reports/clean.json")["total"]["dropped"]["duplicate"] == 1
    augment = read(project, "reports/augment.json")
    assert augment["rows_out"] > augment["rows_in"]


def test_model_thresholds_metrics_and_plots(project):
    config = read(project, "models/finetuned/config.json")
    assert config["problem_type"] == "multi_label_classification"
    meta = read(project, "models/finetuned/pipeline.json")
    assert meta["task"] == "multilabel_classification" and len(meta["thresholds"]) == 3
    assert meta["threshold_rule"] == "per_label" and all(0 < t < 1 for t in meta["thresholds"])
    m = read(project, "reports/metrics.json")
    for key in ("f1_micro", "f1_macro", "f1_weighted", "f1_samples", "accuracy", "hamming_loss",
                "label_cardinality_true", "label_cardinality_pred"):
        assert key in m["test"]
    assert m["test"]["f1_macro"] >= 0.8  # cue words decide each genre
    assert set(m["baselines"]) == {"majority", "frozen_probe"} and m["gain_f1_macro"]["majority"] > 0.05
    assert set(m["per_class"]) == set(GENRES) and set(m["thresholds"]) == set(GENRES)
    confusion = (project / "reports/plots/confusion.csv").read_text()
    assert "(none)" in confusion and (project / "reports/plots/confusion_matrix.png").stat().st_size > 0
    curves = (project / "reports/train_curves.csv").read_text().splitlines()[0]
    assert "val_f1_macro" in curves and "val_accuracy" in curves and "val_loss" in curves


def test_dag_is_dvcs_and_clean_after_the_flow(project):
    assert "up to date" in run_in(project, "dvc", "status").stdout
    assert "Running stage" not in run_in(project, "dvc", "repro").stdout  # the flow left what dvc repro makes


def test_pyfunc_returns_label_sets_in_another_process(project):
    code = ("import mlflow, json; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
            "m = mlflow.pyfunc.load_model('models:/toy-genres@champion');"
            "out = m.predict(['the hilarious jokes and a chase film', 'the family tears', 'the film plot']);"
            "print(out.to_json(orient='records'))")
    rows = json.loads(run_in(project, "python", "-c", code).stdout.strip().splitlines()[-1])
    thresholds = dict(zip(GENRES, read(project, "models/finetuned/pipeline.json")["thresholds"]))
    for r in rows:  # the labels over their threshold, most probable first, with their probabilities
        over = sorted((g for g in GENRES if r[f"prob_{g}"] >= thresholds[g]), key=lambda g: -r[f"prob_{g}"])
        assert r["labels"] == over and r["scores"] == pytest.approx([r[f"prob_{g}"] for g in over])
    assert {"comedy", "action"} <= set(rows[0]["labels"]) and "drama" in rows[1]["labels"]


def test_mlflow_run_and_registry(project):
    client = store_client(project)
    run = client.search_runs([client.get_experiment_by_name("nlp-transfer").experiment_id])[0]
    assert {"test_f1_macro", "test_hamming_loss", "baseline_frozen_probe_f1_macro"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "val_f1_macro")) >= 2
    mv = client.get_model_version_by_alias("toy-genres", "champion")
    assert mv.tags["task"] == "multilabel_classification" and "test_f1_macro" in mv.tags
