"""Clean: normalisation, and every drop counted per split and reason; empty results are errors."""

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.io import PipelineError
from stages.params import CleanParams, IngestParams
from stages.textclean import clean, clean_texts
from stages.wordsplit import CJK


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
    with pytest.raises(PipelineError, match=r"^data/raw/train.parquet: column 'label' has one class \('a'\) in the train "
                                            r"split after cleaning; need at least 2$"):
        clean(splits(train=[("x", "a"), ("", "b")], test=[("t", "a")], validation=[("v", "a")]), CleanParams())


def test_test_label_unseen_after_cleaning_is_an_error():
    with pytest.raises(PipelineError, match="label 'c' never occurs in train"):
        clean(splits(train=[("x", "a"), ("y", "b")], test=[("t", "c")]), CleanParams())


def test_a_test_split_of_train_rows_is_an_error():
    """Leakage emptying the test split, or leaving a tenth of it, means the test data was not held out."""
    train = [(f"text {i}", "ab"[i % 2]) for i in range(20)]
    message = (r"^data/raw/test.parquet: {} test rows also occur in data/raw/train.parquet \(same text after "
               r"cleaning\): the test score would be meaningless; hold the test data out of train \(check "
               r"ingest.test_file\)$")
    with pytest.raises(PipelineError, match=message.format("all 4")):
        clean(splits(train=train, test=train[:4]), CleanParams())
    with pytest.raises(PipelineError, match=message.format("10 of 11")):
        clean(splits(train=train, test=[*train[:10], ("held out", "a")]), CleanParams())
    out, report = clean(splits(train=train, test=[*train[:5], ("held out", "a"), ("also new", "b")]), CleanParams())
    assert report["splits"]["test"]["dropped"]["leakage"] == 5 and len(out["test"]) == 2  # 5 of 7: dropped, counted
    out, _ = clean(splits(train=train, test=train[:4]), CleanParams(drop_leakage=False))
    assert len(out["test"]) == 4  # kept when asked to


def test_leaks_and_conflicts_are_found_whatever_the_digest_ends_with():
    """'text 7' has a digest ending in a NUL byte: pandas' isin (numpy's bytes dtype) missed it."""
    from stages.textclean import text_keys

    train = [(f"text {i}", "ab"[i % 2]) for i in range(20)]
    assert text_keys(pd.DataFrame(train[7:8], columns=["text", "label"]))["key"][0].endswith(b"\x00")
    _, report = clean(splits(train=train, test=[*train[:10], ("held out", "a"), ("new", "b")]), CleanParams())
    assert report["splits"]["test"]["dropped"]["leakage"] == 10
    _, report = clean(splits(train=[*train, ("text 7", "a")]), CleanParams())
    assert report["splits"]["train"]["dropped"]["conflicting_labels"] == 2


def test_validation_rows_all_in_train_are_an_error():
    train = [(f"text {i}", "ab"[i % 2]) for i in range(20)]
    with pytest.raises(PipelineError, match=r"^data/raw/validation.parquet: all 3 validation rows also occur in "
                                            r"data/raw/train.parquet or test.parquet"):
        clean(splits(train=train, validation=train[:3]), CleanParams())


def test_empty_texts_from_a_file_are_dropped_and_counted(tmp_path):
    """A missing text (an empty CSV cell, a JSON null) is '' for clean to drop and count, never the text 'nan'."""
    from stages.tasks import get

    rows = "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(40))
    (tmp_path / "data.csv").write_text("text,label\n,a\n" + rows + "nan,b\n")
    task, p = get("sequence_classification"), IngestParams(source=str(tmp_path / "data.csv"))
    result = task.ingest(task.read(p), p)
    out, report = clean(result.splits, CleanParams())
    assert report["total"]["dropped"]["empty"] == 1 and report["total"]["rows_out"] == 41  # 'nan' itself is a text
    assert "" not in {t for df in out.values() for t in df["text"]}


def test_min_chars():
    _, report = clean(splits(train=[("ok text", "a"), ("no", "b"), ("yes text", "b")]), CleanParams(min_chars=3))
    assert report["splits"]["train"]["dropped"]["empty"] == 1


# --- the stage: streams chunks, decides on keys, and must give what the in-memory core gives ---------------------

def messy_splits(seed=0, n=(60, 15, 15)):
    """Rows from a small pool of texts: repeats, whitespace/HTML variants that clean into repeats, conflicting labels,
    texts shared across splits and empty ones, scattered so that they fall in different chunks."""
    import random

    rng = random.Random(seed)
    pool = [(f"review number {k} " + "word " * (k % 4), "ab"[k % 2]) for k in range(40)]

    def row():
        text, label = rng.choice(pool)
        r = rng.random()
        if r < 0.1:
            return "<br /> ", label  # empty after cleaning
        if r < 0.2:
            return f"  <b>{text}</b>&amp;", label  # cleans into "… &", a repeat of the others so written
        if r < 0.25:
            return text, "ba"[label == "b"]  # a conflicting label
        return text, label

    return {name: pd.DataFrame([row() for _ in range(k)], columns=["text", "label"])
            for name, k in zip(("train", "validation", "test"), n)}


@pytest.mark.parametrize("p", [CleanParams(), CleanParams(drop_leakage=False, min_chars=18),
                               CleanParams(drop_duplicates=False, drop_conflicting=False, strip_html=False)])
def test_the_stage_streams_to_what_the_core_gives(tmp_path, monkeypatch, p):
    import json

    import pyarrow.parquet as pq

    from stages import io
    from stages.io import read_splits, write_splits
    from stages.textclean import clean_files

    data = messy_splits()
    write_splits(data, tmp_path / "raw", ["a", "b"])
    want, want_report = clean(read_splits(tmp_path / "raw"), p)
    monkeypatch.setattr(io, "CHUNK_ROWS", 7)  # 9 chunks of train, 3 of validation and test
    report = clean_files(tmp_path / "raw", tmp_path / "clean", p)
    got = read_splits(tmp_path / "clean")
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name])
    assert pq.ParquetFile(tmp_path / "clean/train.parquet").metadata.num_row_groups > 1
    assert json.dumps(report) == json.dumps(want_report)  # same numbers, examples and key order
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["labels.json", "test.parquet", "train.parquet",
                                                                     "validation.parquet"]
    d = report["splits"]
    if p == CleanParams():  # the data hold every kind of drop, across chunks and splits
        assert all(d["train"]["dropped"].values()) and d["test"]["dropped"]["leakage"]
        assert set(report["examples"]) == {"empty", "conflicting_labels", "duplicate", "leakage"}
        assert d["train"]["changed"]["html_tags"] > 7  # counted over several chunks


def test_a_failing_stage_leaves_no_output(tmp_path, monkeypatch):
    from stages import io
    from stages.io import write_splits
    from stages.textclean import clean_files

    data = messy_splits()
    data["test"].loc[11] = ["a text of its own", "c"]  # unseen in train: found after pass 1 wrote its scratch files
    write_splits(data, tmp_path / "raw", ["a", "b", "c"])
    monkeypatch.setattr(io, "CHUNK_ROWS", 7)
    with pytest.raises(PipelineError, match=r"test split, row \d+, column 'label': label 'c' never occurs in train"):
        clean_files(tmp_path / "raw", tmp_path / "clean", CleanParams())
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_keys_are_digests_of_the_cleaned_text():
    from stages.textclean import text_keys

    keys = text_keys(pd.DataFrame({"text": ["same", "same", "Same", "é"], "label": ["a", "b", "a", "a"]}))
    assert keys["key"].map(len).tolist() == [16] * 4 and keys["chars"].tolist() == [4, 4, 4, 1]
    assert keys["key"][0] == keys["key"][1] != keys["key"][2]


# --- Chinese (CJK) text: ideographs kept whole and in order, full-width ASCII → half-width, U+3000 is a space -------
IDEOGRAPHS = st.one_of(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
                       st.characters(min_codepoint=0x3400, max_codepoint=0x4DBF),
                       st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF))
MARKUP = "<>&＜＞＆"  # HTML's own characters (full-width ones become them under NFKC): tags get their own property
ASCII = st.sampled_from([chr(c) for c in range(0x20, 0x7F) if chr(c) not in MARKUP])
FULL_WIDTH = st.sampled_from([chr(c) for c in range(0xFF01, 0xFF5F) if chr(c) not in MARKUP])  # ＡＢＣ１２３，！…
CJK_TEXT = st.text(st.one_of(IDEOGRAPHS, IDEOGRAPHS, ASCII, FULL_WIDTH, st.sampled_from("\u3000。、「」《》\n\t")),
                   max_size=40)
TAGS = st.sampled_from(["<b>", "</b>", "<br />", "<br>", '<a href="x.html">', "</a>", "<p class='c'>", "</p>"])


def ideographs(text):
    return CJK.findall(text)


def expected(text):
    """What clean should give, derived without NFKC: full-width ASCII moved down by 0xFEE0, whitespace (U+3000 too)
    collapsed to one space."""
    return " ".join("".join(chr(ord(c) - 0xFEE0) if "\uff01" <= c <= "\uff5e" else c for c in text).split())


@settings(max_examples=300, deadline=None)
@given(st.lists(CJK_TEXT, min_size=1, max_size=8))
def test_clean_keeps_cjk_and_halves_full_width(texts):
    for p in (CleanParams(), CleanParams(strip_html=False)):
        out, _ = clean_texts(pd.Series(texts), p)
        for before, after in zip(texts, out):
            assert ideographs(after) == ideographs(before)  # none split off, dropped, changed or reordered
            assert after == expected(before)
            assert not any("\uff01" <= c <= "\uff5e" or c == "\u3000" for c in after)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(CJK_TEXT, TAGS)))
def test_html_stripping_keeps_the_cjk_text_around_tags(parts):
    text = "".join(segment + tag for segment, tag in parts)
    out, _ = clean_texts(pd.Series([text]), CleanParams())
    assert ideographs(out[0]) == ideographs(text) and "<" not in out[0]


def test_full_width_and_ideographic_space_examples():
    out, changed = clean_texts(pd.Series(["ＡＢＣ１２３，！好评", "\u3000很\u3000\u3000好\u3000", "<p>我<br/>爱</p>&lt;你&gt;"]),
                               CleanParams())
    assert out.tolist() == ["ABC123,!好评", "很 好", "我 爱 <你>"] and changed["unicode_nfkc"] == 2
    off, _ = clean_texts(pd.Series(["\u3000很\u3000\u3000好\u3000"]), CleanParams(normalize_unicode=False))
    assert off.tolist() == ["很 好"]  # U+3000 is whitespace without NFKC too
    # a CJK *compatibility* ideograph (U+F900 block) is canonically equal to a unified one: NFKC maps it there
    assert clean_texts(pd.Series(["\uf900"]), CleanParams())[0][0] == "\u8c48"


def test_full_width_and_half_width_copies_are_one_duplicate():
    out, report = clean(splits(train=[("ＡＢＣ很好看！", "a"), ("ABC很好看!", "a"), ("很难看", "b")],
                               validation=[("ＡＢＣ很好看!", "a"), ("还行", "b")],
                               test=[("ABC\u3000很好看！", "a")]), CleanParams())
    assert out["train"]["text"].tolist() == ["ABC很好看!", "很难看"]
    dropped = {s: {k: n for k, n in r["dropped"].items() if n} for s, r in report["splits"].items()}
    assert dropped == {"train": {"duplicate": 1}, "validation": {"leakage": 1},
                       "test": {}}  # "ABC 很好看!": the space makes it another text


@settings(max_examples=200, deadline=None)
@given(CJK_TEXT)
def test_clean_tokens_keeps_single_chinese_characters(text):
    from stages.sentence_clean import clean_tokens

    tokens = list(text)  # MSRA-style: one character per token
    out = clean_tokens(tokens)
    assert len(out) == len(tokens) and ideographs("".join(out)) == ideographs(text)
    assert all(a == b if CJK.match(b) else a in (expected(b), b) for a, b in zip(out, tokens))
    assert clean_tokens([*"我在北京", "Ａ", "１", "，", "！", "\u3000", "。"]) == [*"我在北京", "A", "1", ",", "!",
                                                                             "\u3000", "。"]  # U+3000 alone: kept
