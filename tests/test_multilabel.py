"""Multi-label classification: reading label lists and joined strings, the split, clean on label sets, thresholds,
metrics, and one-line errors for bad labels (file, row, column)."""

import json

import numpy as np
import pandas as pd
import pytest

from stages.io import PipelineError
from stages.labelsets import check_label_sets, label_key, parse_labels
from stages.params import CleanParams, IngestParams
from stages.tasks import get
from stages.tasks.multilabel import NONE, confusion_pairs, multilabel_metrics, tune_thresholds

TASK = get("multilabel_classification")
GENRES = ["action", "comedy", "drama"]


def rows(n: int = 120) -> pd.DataFrame:
    """Texts whose words say their genres; every 10th row has none."""
    out = []
    for i in range(n):
        labels = [] if i % 10 == 0 else [g for k, g in enumerate(GENRES) if (i >> k) & 1] or ["drama"]
        out.append({"text": f"movie {i} " + " ".join(f"{g}word" for g in labels), "label": labels})
    return pd.DataFrame(out)


def read(tmp_path, df: pd.DataFrame, fmt: str, **params):
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")) + "\n")
    elif fmt == "parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False)
    p = IngestParams(source=str(path), **params)
    return TASK.ingest(TASK.read(p), p), p


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_list_columns(tmp_path, fmt):
    result, _ = read(tmp_path, rows(), fmt)
    assert result.labels == GENRES
    total = sum(len(df) for df in result.splits.values())
    assert total == 120 and sum(s["no_label"] for s in result.summary.values()) == 12
    assert all(isinstance(v, list) for df in result.splits.values() for v in df["label"])


def test_joined_strings_and_ids_with_names(tmp_path):
    df = rows().assign(label=lambda d: d["label"].map(lambda ls: "|".join(str(GENRES.index(x)) for x in ls)))
    result, _ = read(tmp_path, df, "csv", label_separator="|", label_names=GENRES)
    assert result.labels == GENRES
    want = sorted(map(tuple, rows()["label"]))
    assert sorted(tuple(v) for d in result.splits.values() for v in d["label"]) == want


def test_every_label_reaches_every_split_and_the_test_split_is_stable(tmp_path):
    result, p = read(tmp_path, rows(), "jsonl")
    for df in result.splits.values():
        assert set().union(*map(set, df["label"])) == set(GENRES)
    shuffled, _ = read(tmp_path, rows().sample(frac=1, random_state=3), "jsonl")
    assert sorted(shuffled.splits["test"]["text"]) == sorted(result.splits["test"]["text"])


@pytest.mark.parametrize("cell, params, message", [
    ("horror", {"label_names": GENRES}, r"data.csv: row 2, column 'label': label 'horror' is not in ingest.label_names"),
    ("7", {"label_names": GENRES}, r"data.csv: row 2, column 'label': label id 7 outside 0..2"),
    ("", {"allow_no_label": False}, r"data.csv: row 2, column 'label': no label \(1 rows without one\); set ingest.allow_no_label"),
])
def test_bad_labels_are_one_line_naming_file_row_column(tmp_path, cell, params, message):
    df = pd.DataFrame({"text": ["one", "two", "three"], "label": ["action", cell, "comedy"]})
    with pytest.raises(PipelineError, match=message):
        read(tmp_path, df, "csv", label_separator=",", **params)


def test_parse_labels():
    assert parse_labels(["b", "a", "a"], None, None, "f") == ["a", "b"]
    assert parse_labels("b, a", ",", None, "f") == ["a", "b"]
    assert parse_labels(float("nan"), ",", None, "f") == [] and parse_labels("", ",", None, "f") == []
    assert parse_labels(np.array([2, 0]), None, GENRES, "f") == ["action", "drama"]
    with pytest.raises(PipelineError, match="several labels in one string need ingest.label_separator"):
        parse_labels("action,drama", None, GENRES, "f")


def test_clean_compares_label_sets(tmp_path):
    from stages.io import write_splits

    train = pd.DataFrame({"text": ["a b", "a b", "c d", "c d", "e f", "g h"],
                          "label": [["x", "y"], ["y", "x"], ["x"], ["y"], ["x"], ["y"]]})
    test = pd.DataFrame({"text": ["e f", "z z"], "label": [["x"], ["x", "y"]]})
    val = pd.DataFrame({"text": ["q q"], "label": [["y"]]})
    write_splits({"train": train, "validation": val, "test": test}, tmp_path / "raw", ["x", "y"])
    report = TASK.clean(tmp_path / "raw", tmp_path / "clean", CleanParams())
    dropped = report["total"]["dropped"]
    # {x,y} twice = one duplicate (order does not matter); "c d" with {x} and {y} = a conflict; "e f" in test = leak
    assert dropped["duplicate"] == 1 and dropped["conflicting_labels"] == 2 and dropped["leakage"] == 1
    assert pd.read_parquet(tmp_path / "clean/train.parquet")["label"].map(list).tolist()[0] == ["x", "y"]


def test_label_checks():
    check_label_sets({"train": pd.DataFrame({"label": [["a"], ["b"], []]}),
                      "validation": pd.DataFrame({"label": [["a"]]}), "test": pd.DataFrame({"label": [[]]})})
    with pytest.raises(PipelineError, match=r"test split, row 1, column 'label': label 'c' never occurs in train"):
        check_label_sets({"train": pd.DataFrame({"label": [["a"], ["b"]]}), "validation": pd.DataFrame({"label": [[]]}),
                          "test": pd.DataFrame({"label": [["c", "a"]]})})
    with pytest.raises(PipelineError, match="train split has 1 distinct label; need at least 2"):
        check_label_sets({"train": label_key(pd.Series([["a"], ["a"]])).to_frame("label"),
                          "validation": pd.DataFrame({"label": []}), "test": pd.DataFrame({"label": []})})


def test_thresholds_per_label_global_and_fixed():
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    probs = np.array([[0.32, 0.9], [0.31, 0.2], [0.1, 0.8], [0.2, 0.7]])
    per = tune_thresholds(y, probs, "per_label")
    assert per[0] == pytest.approx(0.25) and 0.7 < per[1] <= 0.8  # each label's own best F1, the lowest such
    assert (probs >= per).astype(int)[:, 0].tolist() == [1, 1, 0, 0]
    glob = tune_thresholds(y, probs, "global")
    assert glob[0] == glob[1]
    assert tune_thresholds(y, probs, 0.3).tolist() == [0.3, 0.3]
    no_positive = tune_thresholds(np.array([[1, 0], [0, 0]]), np.array([[0.9, 0.1], [0.1, 0.2]]), "per_label")
    assert no_positive[1] == tune_thresholds(np.array([[1, 0], [0, 0]]), np.array([[0.9, 0.1], [0.1, 0.2]]), "global")[1]


def test_metrics_against_hand_computed():
    y = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    p = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    m = multilabel_metrics(y, p)
    assert m["accuracy"] == pytest.approx(1 / 3)  # subset accuracy: row 2 only
    assert m["hamming_loss"] == pytest.approx(2 / 9)
    assert m["f1_micro"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # tp 2, fp 1, fn 1
    assert m["f1_macro"] == pytest.approx(np.mean([1, 1, 0]))
    assert m["label_cardinality_true"] == pytest.approx(1) and m["label_cardinality_pred"] == pytest.approx(1)
    actual, predicted = confusion_pairs(y, p, ["a", "b", "c"])
    assert list(zip(actual, predicted)) == [("a", "a"), ("c", NONE), ("b", "b"), (NONE, "c")]
    assert confusion_pairs(np.zeros((1, 2)), np.zeros((1, 2)), ["a", "b"]) == ([NONE], [NONE])
