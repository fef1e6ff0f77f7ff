"""stages.drift: each measure on data where the answer is known, and the decision the thresholds make."""

import numpy as np
import pandas as pd
import pytest

from stages import drift
from stages.params import DriftParams, DriftThresholds, IngestParams
from stages.splits import landed_files
from stages.tasks.sequence_ingest import ingest, read_source


def test_label_drift_sees_a_changed_mix_and_not_an_equal_one():
    train = ["pos"] * 500 + ["neg"] * 500
    same = drift.label_drift(train, ["pos"] * 100 + ["neg"] * 100)
    shifted = drift.label_drift(train, ["pos"] * 180 + ["neg"] * 20)
    assert same["p_value"] > 0.5 and shifted["p_value"] < 1e-6
    assert shifted["shares"]["new"] == {"neg": 0.1, "pos": 0.9}
    assert drift.label_drift(train, [])["p_value"] == 1.0  # nothing to compare: no drift claimed


def test_length_drift_is_the_ks_statistic_of_word_counts():
    rng = np.random.default_rng(0)
    short = [" ".join(["w"] * int(n)) for n in rng.integers(5, 15, 300)]
    also_short = [" ".join(["w"] * int(n)) for n in rng.integers(5, 15, 300)]
    long = [" ".join(["w"] * int(n)) for n in rng.integers(40, 60, 300)]
    assert drift.length_drift(short, also_short)["ks"] < 0.15
    assert drift.length_drift(short, long)["ks"] == 1.0 and drift.length_drift(short, long)["new_median"] >= 40


def test_unk_drift_counts_the_unk_share_of_tokens():
    out = drift.unk_drift([[5, 6, 7, 8]], [[5, 100, 100, 8]], unk_id=100)
    assert out == {"train": 0.0, "new": 0.5, "increase": 0.5}


def test_domain_auc_is_half_for_one_distribution_and_one_for_two():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    assert abs(drift.domain_auc(a, b)["auc"] - 0.5) < 0.1
    assert drift.domain_auc(a, b + 3.0)["auc"] > 0.99
    assert drift.domain_auc(a[:1], b[:1])["auc"] is None


@pytest.mark.parametrize(("report", "decision"), [
    ({"labels": {"p_value": 0.5}, "length": {"ks": 0.05}, "unk": {"increase": 0.0}, "embeddings": {"auc": 0.55}},
     "retrain"),
    ({"labels": {"p_value": 1e-5}, "length": {"ks": 0.05}, "unk": {"increase": 0.0}, "embeddings": {"auc": 0.55}},
     "retrain_and_flag"),
    ({"labels": {"p_value": 0.5}, "length": {"ks": 0.05}, "unk": {"increase": 0.0}, "embeddings": {"auc": 0.97}},
     "skip"),
    ({"labels": {"p_value": 0.5}, "embeddings": {"auc": None}}, "retrain"),  # a measure it could not take: no drift
])
def test_thresholds_decide(report, decision):
    got, reasons = drift.decide(report, DriftParams())
    assert got == decision and bool(reasons) == (decision != "retrain")
    md = drift.markdown(report | {"new_rows": 10}, got, reasons)
    assert md.startswith(f"# Drift report: **{decision}**")


def test_a_null_threshold_never_fires():
    never = DriftParams(flag=DriftThresholds(), skip=DriftThresholds())
    assert drift.decide({"labels": {"p_value": 0.0}, "embeddings": {"auc": 1.0}}, never) == ("retrain", [])


def test_landed_files_add_their_rows_and_ids_beside_names_map_through_the_label_names(tmp_path):
    source, landed = tmp_path / "reviews.csv", tmp_path / "landed"
    pd.DataFrame({"text": [f"old {i}" for i in range(60)], "label": [i % 2 for i in range(60)]}).to_csv(source,
                                                                                                      index=False)
    landed.mkdir()
    pd.DataFrame({"text": [f"new {i}" for i in range(20)], "label": ["positive"] * 20}).to_csv(
        landed / "b-batch.csv", index=False)
    (landed / ".a-partial.csv.tmp").write_text("half a file")  # an unfinished copy is never read
    p = IngestParams(source=str(source), landed=str(landed), label_names=["negative", "positive"])
    assert landed_files(p) == [landed / "b-batch.csv"]
    splits, labels = ingest(*read_source(p)[:1], p)
    assert labels == ["negative", "positive"] and sum(map(len, splits.values())) == 80
    old_test = set(ingest(*read_source(p.model_copy(update={"landed": None}))[:1], p)[0]["test"]["text"])
    assert old_test <= set(splits["test"]["text"])  # new rows take their share; old test rows stay in test
