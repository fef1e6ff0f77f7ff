"""NER end to end: `dvc repro` with task token_classification on ~120 CoNLL sentences and a tiny random BERT."""

import json
import random
from pathlib import Path

import pytest

from tests.conftest import make_project, run_in, store_client

pytestmark = pytest.mark.e2e
FIRST, LAST = ["Alice", "Bruno", "Chen", "Dana", "Emil"], ["Smith", "Okafor", "Lindqvist", "Moreau"]
CITIES, FILLER = ["Paris", "Lagos", "Oslo", "Lima", "Kyoto"], ["the", "visited", "met", "in", "yesterday", "said",
                                                             "report", "a", "new", "plan", "talks", "on"]


def toy_conll(path: Path, n: int, seed: int = 0) -> None:
    """People (B-PER I-PER) and cities (B-LOC) among filler words, CoNLL-style (word POS tag), with a
    -DOCSTART- line, an IOB1-style I-PER start for ingest to repair, a duplicate sentence for clean, and a few
    sentences longer than the 16-token window for tokenize to cut."""
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- O", ""]
    sentences = []
    for i in range(n):
        words: list[tuple[str, str]] = []
        for _ in range(rng.randint(2, 5 if i % 10 else 14)):
            r = rng.random()
            if r < 0.25:
                words += [(rng.choice(FIRST), "B-PER"), (rng.choice(LAST), "I-PER")]
            elif r < 0.45:
                words.append((rng.choice(CITIES), "B-LOC"))
            else:
                words.append((rng.choice(FILLER), "O"))
        words.append((".", "O"))
        sentences.append(words)
    sentences[5] = [("Dana", "I-PER"), ("Smith", "I-PER"), ("said", "O"), (".", "O")]  # IOB1: repaired to B-PER
    sentences.append(sentences[3])  # duplicate
    for s in sentences:
        lines += [f"{w} NN {t}" for w, t in s] + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    root = make_project(tmp_path_factory.mktemp("ner"), {
        "task": "token_classification", "model": {"name": str(tiny_model_dir)},
        "ingest": {"source": "data/source/toy.conll"}, "tokenize": {"max_length": 16},
        "augment": {"enabled": True, "operations": ["synonym", "mention", "shuffle"]},
        "finetune": {"epochs": 6, "batch_size": 8, "learning_rate": 3e-3, "log_every_steps": 5},
        "evaluate": {"probe_max_train_rows": 200, "min_test_rows": 10, "min_test_per_class": 2}, "register": {"model_name": "toy-ner"}})
    toy_conll(root / "data/source/toy.conll", 150)
    run_in(root, "dvc", "repro")
    return root


def read(root: Path, name: str):
    return json.loads((root / name).read_text())


def test_stages_report_what_they_did(project):
    summary = read(project, "data/raw/summary.json")
    assert sum(s["iob_repairs"]["tags"] for s in summary.values()) == 1  # the IOB1-style I-PER start
    assert sum(s["sentences"] for s in summary.values()) == 151 and set(summary["train"]["entities"]) == {"LOC", "PER"}
    assert read(project, "data/raw/labels.json")["names"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    clean = read(project, "reports/clean.json")
    assert clean["total"]["rows_in"] == 151 and clean["total"]["dropped"]["duplicate"] >= 1
    augment = read(project, "reports/augment.json")
    assert augment["rows_out"] > augment["rows_in"]
    tokenize = read(project, "reports/tokenize.json")
    assert sum(s["windowed_sentences"] for s in tokenize["splits"].values()) >= 1


def test_entity_metrics_plots_and_registry(project):
    metrics = read(project, "reports/metrics.json")
    test = metrics["test"]
    assert test["f1"] >= 0.8, test  # the toy task is separable by word identity
    assert {"strict_f1", "precision", "recall", "accuracy", "f1_macro"} <= set(test)
    assert set(metrics["per_class"]) == {"LOC", "PER"} and set(metrics["baselines"]) == {"majority", "frozen_probe"}
    assert metrics["baselines"]["majority"]["f1"] == 0.0 and "gain_f1" in metrics
    confusion = metrics["type_confusion"]  # words, actual type → predicted type
    assert set(confusion) == {"LOC", "O", "PER"} and confusion["PER"]["PER"] > confusion["PER"]["O"]
    curves = (project / "reports/train_curves.csv").read_text().splitlines()[0].split(",")
    assert {"val_f1", "val_accuracy", "val_f1_macro", "val_loss"} <= set(curves)
    train = read(project, "reports/train.json")
    assert "best_val_f1" in train
    for plot in ("confusion.csv", "per_class.csv", "confusion_matrix.png"):
        assert (project / "reports/plots" / plot).stat().st_size > 0
    register = read(project, "reports/register.json")
    assert register["metric"] == "test_f1" and register["promoted"]
    assert run_in(project, "dvc", "status").stdout.strip() == "Data and pipelines are up to date."
    html = run_in(project, "dvc", "plots", "show", "-o", "plots_out").stdout
    assert (project / "plots_out/index.html").exists(), html


def test_pyfunc_returns_spans_on_raw_text(project):
    code = """
import json, mlflow
mlflow.set_tracking_uri('sqlite:///mlflow.db')
m = mlflow.pyfunc.load_model('models:/toy-ner@champion')
long = ' '.join(['the report said'] * 30) + ' Chen Okafor visited Oslo.'
print(json.dumps(m.predict(['Alice Smith visited Paris yesterday.', long, ''])))
"""
    out = json.loads(run_in(project, "python", "-c", code).stdout.strip().splitlines()[-1])
    short, long, empty = out
    assert {(e["type"], e["text"], e["start"], e["end"]) for e in short} >= {("PER", "Alice Smith", 0, 11), ("LOC", "Paris", 20, 25)}
    assert all(0 < e["score"] <= 1 for e in short) and empty == []
    # the long text spans several 16-token windows: entities in the last window still come back, offsets right
    start = len(" ".join(["the report said"] * 30)) + 1
    assert ("PER", "Chen Okafor", start) in {(e["type"], e["text"], e["start"]) for e in long}



def test_mlflow_run_has_entity_metrics(project):
    client = store_client(project)
    run_id = read(project, "reports/mlflow_run.json")["run_id"]
    run = client.get_run(run_id)
    assert run.data.params["task"] == "token_classification"
    assert {"test_f1", "test_strict_f1", "test_f1_ci95_low", "baseline_frozen_probe_f1"} <= set(run.data.metrics)
    table = json.loads(Path(client.download_artifacts(run_id, "per_class.json")).read_text())  # not a chart per type
    assert {"PER", "LOC"} <= {row[table["columns"].index("label")] for row in table["data"]}
    assert "test_f1_PER" not in run.data.metrics
    assert {d.dataset.name for d in run.inputs.dataset_inputs} >= {"data/source/toy.conll/train"}
    epochs = read(project, "reports/train.json")["epochs_run"]
    assert [m.step for m in client.get_metric_history(run_id, "val_f1")] == list(range(1, epochs + 1))  # per epoch
    version = client.get_model_version_by_alias("toy-ner", "champion")
    assert version.tags["task"] == "token_classification" and version.run_id == run_id
