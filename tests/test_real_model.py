"""The real packaged all-MiniLM-L6-v2 through `dvc repro` on a small Rotten Tomatoes slice."""

import json

import pytest

from tests.conftest import make_project, run_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


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
