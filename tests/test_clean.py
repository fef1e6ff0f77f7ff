"""Clean: normalisation, and every drop counted per split and reason; empty results are errors."""

import pandas as pd
import pytest

from stages.clean import clean, clean_texts
from stages.io import PipelineError
from stages.params import CleanParams


def splits(train, validation=None, test=None):
    def df(rows):
        return pd.DataFrame(rows, columns=["text", "label"])

    return {"train": df(train), "validation": df(validation or [("val text", "a")]), "test": df(test or [("test text", "b")])}


def test_html_entities_unicode_whitespace():
    texts = pd.Series(["Great film.<br /><br />Really &amp; truly", "ﬁne\u00a0\u00a0 acting ", "a < b > c", "<i>bold</i> move"])
    out, changed = clean_texts(texts, CleanParams())
    assert out.tolist() == ["Great film. Really & truly", "fine acting", "a < b > c", "bold move"]
    assert changed["html_tags"] == 2 and changed["html_entities"] == 1 and changed["unicode_nfkc"] == 1


def test_switches_turn_steps_off():
    out, changed = clean_texts(pd.Series(["<b>x</b> &amp;"]), CleanParams(strip_html=False, normalize_unicode=False))
    assert out.tolist() == ["<b>x</b> &amp;"] and set(changed) == {"whitespace"}


def test_every_drop_is_counted():
    data = splits(
        train=[("good", "a"), ("good", "a"), ("bad", "b"), ("   ", "a"), ("odd", "a"), ("odd", "b"), ("fine", "a"), ("meh", "b")],
        validation=[("good", "a"), ("new val", "b"), ("shared", "a")],
        test=[("bad", "b"), ("shared", "a"), ("fresh", "b")],
    )
    out, report = clean(data, CleanParams())
    d = report["splits"]
    assert d["train"]["dropped"] == {"empty": 1, "conflicting_labels": 2, "duplicate": 1}
    assert d["test"]["dropped"]["leakage"] == 1  # "bad" is in train
    assert d["validation"]["dropped"]["leakage"] == 2  # "good" in train, "shared" in test
    assert out["train"]["text"].tolist() == ["good", "bad", "fine", "meh"]
    assert out["test"]["text"].tolist() == ["shared", "fresh"]
    for r in d.values():  # nothing vanishes: in = out + dropped
        assert r["rows_in"] == r["rows_out"] + sum(r["dropped"].values())
    assert report["total"]["rows_in"] == 14 and report["examples"]["leakage"]
    assert report["total"]["dropped"] == {"empty": 1, "conflicting_labels": 2, "duplicate": 1, "leakage": 3}
    assert report["total"]["rows_in"] == report["total"]["rows_out"] + sum(report["total"]["dropped"].values())


def test_empty_after_cleaning_is_an_error():
    with pytest.raises(PipelineError, match=r"test.parquet: empty after cleaning"):
        clean(splits(train=[("x", "a"), ("y", "b")], test=[("<br />", "a")]), CleanParams())


def test_one_class_left_is_an_error():
    with pytest.raises(PipelineError, match="1 class after cleaning"):
        clean(splits(train=[("x", "a"), ("", "b")], test=[("t", "a")], validation=[("v", "a")]), CleanParams())


def test_test_label_unseen_after_cleaning_is_an_error():
    with pytest.raises(PipelineError, match="label 'c' never occurs in train"):
        clean(splits(train=[("x", "a"), ("y", "b")], test=[("t", "c")]), CleanParams())


def test_min_chars():
    out, report = clean(splits(train=[("ok text", "a"), ("no", "b"), ("yes text", "b")]), CleanParams(min_chars=3))
    assert report["splits"]["train"]["dropped"]["empty"] == 1
