"""IOB2 handling, word ↔ sub-token alignment with windows, and word tags → entity spans."""

import numpy as np
import pandas as pd
import pytest

from stages import iob
from stages.align import IGNORE, AlignStats, Wrapper, align, continuation_ids, windows_of, word_pieces
from stages.entities import entity_scores, entity_spans, per_type, type_confusion
from stages.wordsplit import split_words
from stages.tasks.token import sentence_gold, word_predictions
from stages.params import TokenizeParams
from stages.align import tokenize_sentences

NAMES = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_iob_parse_repair_and_spans():
    assert iob.parse("O") == ("O", None) and iob.parse("I-PER") == ("I", "PER")
    for bad in ("S-PER", "b-per", "", "B-", "E-LOC"):
        with pytest.raises(ValueError, match="not IOB"):
            iob.parse(bad)
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"]
    assert iob.invalid_at(tags) == 0
    fixed, n = iob.repair(tags)
    assert fixed == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-PER"] and n == 3 and iob.invalid_at(fixed) is None
    # decoding is lenient: a stray I- starts an entity, a type change ends one
    assert iob.spans(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("PER", 5, 6)]
    assert iob.spans([]) == [] and iob.spans(["O", "O"]) == []
    assert iob.label_list(iob.entity_types(["B-PER", "O", "I-LOC"])) == NAMES


def test_windows_cut_between_words():
    assert windows_of([2, 3, 1, 4], 5) == [(0, 2), (2, 4)] and windows_of([3, 3, 3], 5) == [(0, 1), (1, 2), (2, 3)]
    assert windows_of([9, 1], 5) == [(0, 1), (1, 2)]  # a word over budget gets a window alone
    assert windows_of([], 5) == [(0, 0)]


def test_alignment_of_long_words_and_windows(packaged_tokenizer):
    words = ["Angela", "Merkel", "visited", "Pneumonoultramicroscopicsilicovolcanoconiosis", "\u200b", "Paris", "."]
    tags = [3, 4, 0, 0, 0, 1, 0]
    pieces = word_pieces(packaged_tokenizer, [words])[0]
    assert len(pieces[3]) > 10 and pieces[4] == []  # many sub-tokens; none for a zero-width space
    wrap = Wrapper.of(packaged_tokenizer)
    for budget, label_all in ((126, False), (126, True), (6, False)):
        stats = AlignStats()
        windows = align(pieces, tags, 0, budget, wrap, continuation_ids(NAMES) if label_all else None, stats)
        assert all(len(w.input_ids) <= budget + 2 for w in windows)
        assert all(w.input_ids[0] == packaged_tokenizer.cls_token_id and w.input_ids[-1] == packaged_tokenizer.sep_token_id
                   for w in windows)
        firsts = [(wd, lab) for w in windows for wd, lab in zip(w.words, w.labels) if wd >= 0]
        # every word with sub-tokens is labelled exactly once, on its first sub-token, with its own tag
        assert firsts == [(i, tags[i]) for i in range(len(words)) if pieces[i]]
        assert sum((w.word_labels for w in windows), []) == tags
        rest = [lab for w in windows for wd, lab in zip(w.words, w.labels) if wd < 0]
        if label_all:  # Merkel's continuation of I-PER stays I-PER; specials stay ignored
            assert rest.count(IGNORE) == 2 * len(windows) and set(rest) - {IGNORE} <= {0, 4}
        else:
            assert set(rest) == {IGNORE}
        assert stats.empty_words == 1 and stats.windowed_sentences == (budget == 6)
    assert continuation_ids(NAMES) == {0: 0, 1: 2, 2: 2, 3: 4, 4: 4}
    assert stats.truncated_words == 1 and stats.windows == 3


def test_tokenize_sentences_reports_windows(packaged_tokenizer):
    df = pd.DataFrame({"tokens": [["Paris", "is", "big"], ["Anna"] * 40], "tags": [["B-LOC", "O", "O"], ["B-PER"] * 40]})
    dd, report = tokenize_sentences({"train": df, "validation": df, "test": df}, packaged_tokenizer, NAMES,
                                    TokenizeParams(max_length=16))
    assert report["splits"]["test"]["windowed_sentences"] == 1 and report["splits"]["test"]["windows"] == 1 + 3
    gold = sentence_gold(list(dd["test"]["word_labels"]), list(dd["test"]["sentence"]))
    assert gold == [[1, 0, 0], [3] * 40]


def test_word_predictions_rebuild_sentences_from_windows():
    eye = np.eye(3) * 5
    logits = [eye[[0, 1, 2, 0]], eye[[0, 2, 0]], eye[[0, 1, 0]]]  # windows: [CLS] w w [SEP]
    words = [[-1, 0, 1, -1], [-1, 2, -1], [-1, 0, -1]]
    ids, probs = word_predictions(logits, words, [0, 0, 1], [4, 1], outside=0)
    assert ids[0].tolist() == [1, 2, 2, 0] and ids[1].tolist() == [1]  # word 3 had no sub-token → O
    assert probs[0][3] == 1.0 and 0.9 < probs[0][0] < 1


def test_entity_scores_default_vs_strict():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert entity_scores(gold, gold)["f1"] == 1.0
    stray = [["I-PER", "I-PER", "O", "O"]]  # right span, invalid start; LOC missed
    s = entity_scores(gold, stray)
    assert s["precision"] == 1.0 and s["recall"] == 0.5 and s["strict_precision"] == 0.0
    assert s["accuracy"] == 0.5
    rows = {r["label"]: r for r in per_type(gold, stray)}
    assert rows["PER"]["f1"] == 1.0 and rows["LOC"]["support"] == 1 and rows["LOC"]["f1"] == 0.0
    assert type_confusion(gold, stray) == (["PER", "PER", "O", "LOC"], ["PER", "PER", "O", "O"])


def test_split_words_and_entity_spans():
    text = "Angela Merkel's trip: U.S. talks in New-York."
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Angela", "Merkel", "'s", "trip", ":", "U.S.", "talks", "in", "New-York", "."]
    assert all(text[a:b] == w for w, a, b in words)
    tags = ["B-PER", "I-PER", "O", "O", "O", "B-LOC", "O", "O", "B-LOC", "O"]
    probs = np.array([0.9, 0.7, 1, 1, 1, 0.8, 1, 1, 0.6, 1])
    assert entity_spans(text, words, tags, probs) == [
        {"type": "PER", "start": 0, "end": 13, "text": "Angela Merkel", "score": 0.8},
        {"type": "LOC", "start": 22, "end": 26, "text": "U.S.", "score": 0.8},
        {"type": "LOC", "start": 36, "end": 44, "text": "New-York", "score": 0.6}]
