"""Metrics, baselines, the champion decision and the pyfunc input handling."""

import numpy as np
import pandas as pd

from stages.baselines import majority_predictions, probe_predictions
from stages.evaluate import confusion
from stages.register import decide, pip_requirements
from stages.serving import as_texts
from stages.tasks.sequence import classification_metrics, per_class


def test_metrics_against_hand_computed():
    y, p = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0])
    m = classification_metrics(y, p)
    assert m["accuracy"] == 0.6
    assert np.isclose(m["f1_macro"], np.mean([0.5, 2 / 3]))
    names = np.array(["neg", "pos"])
    assert confusion(list(names[y]), list(names[p]), ["neg", "pos"]).tolist() == [[1, 1], [1, 2]]
    rows = per_class(y, p, ["neg", "pos"])
    assert rows[1] == {"label": "pos", "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}


def test_baselines():
    assert majority_predictions(np.array([1, 1, 0]), 4).tolist() == [1, 1, 1, 1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] > 0).astype(int)
    assert (probe_predictions(x[:150], y[:150], x[150:]) == y[150:]).mean() > 0.9


def test_champion_decision():
    assert decide(0.80, None, 0.0) == (True, "no champion yet")
    assert decide(0.85, 0.84, 0.0)[0]
    assert not decide(0.845, 0.84, 0.01)[0]
    assert decide(0.85, 0.84, 0.01)[0]
    assert not decide(0.80, 0.84, 0.0)[0]
    assert not decide(0.84, 0.84, 0.0)[0]  # a tie keeps the champion


def test_pip_requirements_are_pinned_without_torchvision():
    reqs = pip_requirements()
    assert any(r.startswith("torch==") for r in reqs) and all("==" in r for r in reqs)
    assert not any(r.startswith("torchvision") for r in reqs) and not any("+cpu" in r for r in reqs)


def test_pyfunc_accepts_the_usual_inputs():
    assert as_texts("one") == ["one"]
    assert as_texts(["a", "b"]) == ["a", "b"]
    assert as_texts(np.array(["a"])) == ["a"]
    assert as_texts(pd.DataFrame({"text": ["x"], "other": [1]})) == ["x"]
    assert as_texts(pd.DataFrame({0: ["y"]})) == ["y"]
