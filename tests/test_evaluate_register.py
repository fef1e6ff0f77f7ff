"""Metrics, baselines, the champion decision and the pyfunc input handling."""

import os
import re

import numpy as np
import pandas as pd
import pytest

from stages.baselines import majority_predictions, probe_predictions
from stages.evaluate import bootstrap_ci, confusion, reliability
from stages.params import EvaluateParams
from stages.register import pip_requirements, precheck
from stages.registry import Facts
from stages.serving import as_texts
from stages.tasks.base import Evaluation
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


def facts(value, labels=("neg", "pos"), made_for="sequence_classification", reliable=True, why=""):
    return Facts("1", made_for, frozenset(labels), value, reliable, why)


def test_precheck_leaves_comparable_versions_to_the_gate():
    assert precheck(facts(0.80), None) == (True, "no champion yet")
    assert precheck(facts(0.85), facts(0.84)) is None  # scores alone decide nothing: tests/test_gate.py
    assert precheck(facts(0.80), facts(0.84)) is None
    assert precheck(facts(0.9, labels=("pos", "neg")), facts(0.8)) is None  # the same set in another order
    # a champion that won on a meaningless test split is re-scored on the current one like any other
    assert precheck(facts(0.7), facts(1.0, reliable=False, why="3 rows")) is None


def test_precheck_refuses_what_is_not_comparable():
    tiny = facts(1.0, reliable=False, why="the test split has 3 rows (evaluate.min_test_rows: 100)")
    assert precheck(tiny, None) == (False, "not comparable: the test split has 3 rows (evaluate.min_test_rows: 100)")
    assert precheck(tiny, facts(0.5))[0] is False
    promote, why = precheck(facts(0.99, labels=("neg", "pos", "NaN")), facts(0.8))
    assert not promote and why == ("not comparable: the label set differs from the champion's (new: ['NaN']; "
                                   "missing: none)")
    promote, why = precheck(facts(0.99, made_for="multilabel_classification"), facts(0.8))
    assert not promote and "task multilabel_classification, the champion's is sequence_classification" in why


def test_reliability_flags_small_test_splits_and_classes():
    p = EvaluateParams(min_test_rows=10, min_test_per_class=3, bootstrap_samples=200)
    y = np.array([0] * 9 + [1] * 2)
    pred = y.copy()
    pred[0] = 1
    ev = Evaluation({}, {}, per_class(y, pred, ["neg", "pos"]), [], [], [], units=len(y),
                    rescore=lambda idx: float(np.mean(y[idx] == pred[idx])))
    rel = reliability(ev, "accuracy", "rows", p)
    assert rel["comparable"] is False and rel["test_rows"] == 11
    assert rel["reasons"] == ["1 class(es) with fewer than 3 test examples (evaluate.min_test_per_class): 'pos' 2"]
    assert rel["smallest_class"] == {"label": "pos", "support": 2}
    low, high = rel["ci95"]["accuracy"]
    assert 0.7 <= low < 10 / 11 < high <= 1.0
    small = reliability(ev, "accuracy", "rows", EvaluateParams(min_test_rows=100, min_test_per_class=0))
    assert small["reasons"] == ["the test split has 11 rows (evaluate.min_test_rows: 100)"]
    assert bootstrap_ci(ev.rescore, 11, 200) == rel["ci95"]["accuracy"]  # seeded: the same interval every run


def test_entity_counts_give_seqevals_micro_f1():
    from seqeval.metrics import f1_score

    from stages.entities import type_counts

    gold = [["B-PER", "I-PER", "O"], ["B-LOC", "O", "B-ORG"], ["O"], ["I-MISC", "I-MISC"]]
    pred = [["B-PER", "O", "O"], ["B-LOC", "O", "B-ORG"], ["B-PER"], ["B-MISC", "I-MISC"]]
    micro_f1 = type_counts(gold, pred, []).rescorer("f1_micro", False)  # the token task's rescore
    assert micro_f1(np.arange(4)) == pytest.approx(f1_score(gold, pred))
    idx = np.array([1, 1, 3])
    assert micro_f1(idx) == pytest.approx(f1_score([gold[i] for i in idx], [pred[i] for i in idx]))


def test_pip_requirements_are_pinned_without_torchvision():
    reqs = pip_requirements()
    assert any(r.startswith("torch==") for r in reqs) and all("==" in r for r in reqs)
    assert not any(r.startswith("torchvision") for r in reqs) and not any("+cpu" in r for r in reqs)


def test_pyfunc_accepts_the_usual_inputs():
    assert as_texts("one") == ["one"]
    assert as_texts(["a", "b"]) == ["a", "b"]
    assert as_texts(np.array(["a"])) == ["a"]
    assert as_texts(pd.Series(["s"])) == ["s"]
    assert as_texts(pd.DataFrame({"text": ["x"], "other": [1]})) == ["x"]
    assert as_texts(pd.DataFrame({0: ["y"]})) == ["y"]  # how MLflow hands over a list
    assert as_texts(["", "x"], allow_empty=True) == ["", "x"]  # NER: no words, no entities


@pytest.mark.parametrize("bad, says", [
    (pd.DataFrame({"id": ["17"], "review": ["fine"]}), "got a DataFrame with columns ['id', 'review'] and no 'text'"),
    ({"text": ["a", "b"]}, "got a dict with keys ['text']"),
    (pd.DataFrame({"text": [["a", "b"]]}), "input row 0: got list"),
    (["a", None], "input row 1: got a missing value (null/None/NaN)"),
    (["a", 1], "input row 1: got int '1'"),
    (["fine", "  "], "input row 1: empty text"),
    (["fine", "\u200b"], "input row 1: empty text"),  # a zero-width space: no token at all
])
def test_pyfunc_refuses_to_guess(bad, says):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=re.escape(says)) as e:
        as_texts(bad)
    assert "expected a string, a list of strings, or a DataFrame with a 'text' column" in str(e.value)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"  # the scoring server answers 400


def test_headline_is_the_few_numbers_runs_are_compared_by():
    from stages.evaluate import headline

    metrics = {"test": {"accuracy": 0.86, "f1_macro": 0.85, "precision_macro": 0.8},
               "reliability": {"ci95": {"accuracy": [0.83, 0.88]}},
               "baselines": {"majority": {"accuracy": 0.5, "f1_macro": 0.33}, "frozen_probe": {"accuracy": 0.75}},
               "per_class": {"negative": {"f1": 0.86}, "positive": {"f1": 0.85}}}
    assert headline(metrics, "accuracy") == {"accuracy": 0.86, "ci95_low": 0.83, "ci95_high": 0.88, "f1_macro": 0.85,
                                             "majority": 0.5, "frozen_probe": 0.75}
    metrics["test"] = {"f1_macro": 0.4, "f1_micro": 0.5}
    metrics["reliability"]["ci95"] = {"f1_macro": None}  # bootstrap_samples: 0
    metrics["baselines"] = {"majority": {"f1_macro": 0.0}}
    assert headline(metrics, "f1_macro") == {"f1_macro": 0.4, "majority": 0.0}


def test_register_says_which_version_serves():
    from stages.register import workspace_note

    aliases = ("champion", "challenger")
    assert workspace_note("m", "3", True, "3", aliases) == "models/finetuned is version 3, now the champion: models:/m@champion serves it"
    assert workspace_note("m", "4", False, "1", aliases) == ("models/finetuned is version 4, only the challenger; "
                                                            "models:/m@champion still serves version 1")
    assert "no version serves (m has no champion)" in workspace_note("m", "1", False, None, aliases)


def test_registry_lock_taken_when_its_holder_lets_go_mid_collision(tmp_path, monkeypatch):
    """The race CI hit: our insert collides with the holder's lock, the holder releases it, and the sqlite store's own
    lookup of the existing model then says "not found". The lock is free: take it, do not crash."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    from stages import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    c = registry.client()
    name = f"toy{registry.LOCK_SUFFIX}"
    c.create_registered_model(name)  # another process holds the lock
    real, released = SqlAlchemyStore.get_registered_model, []

    def holder_lets_go_first(self, n):
        if n == name and not released:
            released.append(n)
            c.delete_registered_model(n)
        return real(self, n)

    monkeypatch.setattr(SqlAlchemyStore, "get_registered_model", holder_lets_go_first)
    with registry.lock("toy", timeout_s=5):
        assert released and c.get_registered_model(name).tags["owner"].endswith(f":{os.getpid()}")
    assert not c.search_registered_models(f"name = '{name}'")
