"""The real packaged all-MiniLM-L6-v2 through `dvc repro` on small Rotten Tomatoes and CoNLL-2003 slices."""

import json
from pathlib import Path

import pytest

from tests.conftest import make_project, run_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MIN_SLICE_F1 = 0.5  # measured 0.679 / 0.686 / 0.703 with seeds 1 / 2 / 42 (majority: 0.0); the full data reaches ~0.85


def test_packaged_minilm_learns_sentiment(tmp_path):
    root = make_project(tmp_path, {
        "ingest": {"max_rows": 1500},                      # 1,200 train / 150 validation / 150 test
        "finetune": {"epochs": 2, "learning_rate": 1.5e-4},  # small data: a higher rate (measured 0.753)
        "evaluate": {"baselines": ["majority"]},
    })
    run_in(root, "dvc", "repro")
    metrics = json.loads((root / "reports/metrics.json").read_text())
    train = json.loads((root / "reports/train.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.7, metrics["test"]  # majority is 0.5; full data reaches ~0.85
    assert train["padding_share"] < 0.25  # length-grouped batches
    code = ("import mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
            "m = mlflow.pyfunc.load_model('models:/sentiment-classifier@champion');"
            "print(m.predict(['a gem of a film, moving and beautifully acted', 'a dull, lifeless and boring mess']).label.tolist())")
    assert run_in(root, "python", "-c", code).stdout.strip().splitlines()[-1] == "['positive', 'negative']"


CONLL = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"


@pytest.mark.skipif(not (CONLL / "train.txt").exists(), reason=f"CoNLL-2003 not found at {CONLL} (development data, not shipped)")
def test_packaged_minilm_learns_conll_slice(tmp_path):
    """NER on a CI-sized CoNLL-2003 slice: 1,000 train sentences, the first 300 of dev and test."""
    root = make_project(tmp_path, {
        "task": "token_classification",
        "ingest": {"source": "data/source/train.conll", "validation_file": "data/source/dev.conll",
                   "test_file": "data/source/test.conll", "max_rows": 1000},
        # 2 epochs at 1e-4 (58 steps) left the model half-way: test F1 0.24-0.43 over 6 seeds, on either training
        # engine, under a 0.3 bar that one batch order passed and the next failed
        "finetune": {"epochs": 3, "learning_rate": 2e-4},
        "evaluate": {"baselines": ["majority"]}, "register": {"model_name": "conll-slice"}})
    for split, n in (("train", None), ("dev", 300), ("test", 300)):
        blocks = (CONLL / f"{split}.txt").read_text().split("\n\n")
        (root / f"data/source/{split}.conll").write_text("\n\n".join(blocks[:n]))
    run_in(root, "dvc", "repro")
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["test"]["f1"] >= MIN_SLICE_F1, metrics["test"]
    code = ("import mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
            "m = mlflow.pyfunc.load_model('models:/conll-slice@champion');"
            "print(sorted((e['type'], e['text']) for e in m.predict(['Angela Merkel visited Paris on Monday.'])[0]))")
    print(run_in(root, "python", "-c", code).stdout)
