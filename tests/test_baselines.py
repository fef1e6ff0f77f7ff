"""The tfidf baseline (TF-IDF character n-grams + logistic regression): beats the majority class, reads Chinese without
word segmentation, scores multi-label, is refused where it does not fit (token classification), and is a valid
evaluate.baselines entry."""

import random

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from stages import tasks
from stages.baselines import tfidf_predictions
from stages.io import PipelineError
from stages.params import EvaluateParams
from stages.tasks.base import EvalInputs
from stages.tasks.sequence import probe_texts
from tests.conftest import sentiment_rows


def no_encoder():
    raise AssertionError("tfidf must not need the pretrained encoder or tokenizer")


def eval_inputs(task, model_dir, tokenizer, train: pd.DataFrame, test: pd.DataFrame, labels: list[str], meta=None,
                encode=lambda label, label2id: label2id[label]) -> EvalInputs:
    """What evaluate hands a task, built in memory: the tiny model, tokenized splits and the cleaned frames."""
    import datasets
    import torch

    label2id = {n: i for i, n in enumerate(labels)}

    def split(df: pd.DataFrame) -> datasets.Dataset:
        ids = tokenizer(list(df["text"]), truncation=True, max_length=32)["input_ids"]
        return datasets.Dataset.from_dict({"input_ids": ids, "label": [encode(x, label2id) for x in df["label"]]})

    return EvalInputs(task.load_model(str(model_dir), labels), datasets.DatasetDict(train=split(train), test=split(test)),
                      lambda: {"train": train, "test": test}, {"labels": labels, "max_length": 32} | (meta or {}),
                      tokenizer.pad_token_id, torch.device("cpu"), no_encoder, no_encoder)


def test_tfidf_beats_majority_on_a_learnable_set(tiny_model_dir, packaged_tokenizer):
    task = tasks.get("sequence_classification")
    train, test = pd.DataFrame(sentiment_rows(200)), pd.DataFrame(sentiment_rows(100, seed=1))
    inputs = eval_inputs(task, tiny_model_dir, packaged_tokenizer, train, test, ["negative", "positive"])
    ev = task.evaluate(inputs, ["majority", "tfidf"], 32, 10_000)
    assert ev.baselines["majority"]["accuracy"] == 0.5
    assert ev.baselines["tfidf"]["accuracy"] >= 0.95
    assert len(probe_texts(inputs, 10)[0]) == 10  # evaluate.probe_max_train_rows caps tfidf's train rows too


def test_probe_and_tfidf_share_one_read_of_the_cleaned_texts(tiny_model_dir, packaged_tokenizer):
    from stages.loading import load_encoder, load_tokenizer

    task, reads = tasks.get("sequence_classification"), []
    train, test = pd.DataFrame(sentiment_rows(60)), pd.DataFrame(sentiment_rows(20, seed=1))
    inputs = eval_inputs(task, tiny_model_dir, packaged_tokenizer, train, test, ["negative", "positive"])
    inputs.clean = lambda: reads.append(1) or {"train": train, "test": test}
    inputs.encoder, inputs.tokenizer = lambda: load_encoder(str(tiny_model_dir)), lambda: load_tokenizer(str(tiny_model_dir))
    ev = task.evaluate(inputs, ["frozen_probe", "tfidf"], 32, 10_000)
    assert set(ev.baselines) == {"frozen_probe", "tfidf"} and len(reads) == 1


def chinese_rows(n: int, seed: int) -> pd.DataFrame:
    """Reviews with no spaces whose label is carried only by characters (好/棒/赞 vs 差/脏/吵) among neutral ones."""
    rng = random.Random(seed)
    neutral, pos, neg = list("酒店房间服务早餐位置前台设施感觉这个非常还是我们"), list("好棒赞"), list("差脏吵")
    rows = []
    for i in range(n):
        chars = rng.sample(neutral, 6) + rng.sample(pos if i % 2 else neg, 2)
        rng.shuffle(chars)
        rows.append({"text": "".join(chars), "label": i % 2})
    return pd.DataFrame(rows)


def test_tfidf_reads_chinese_without_word_segmentation():
    train, test = chinese_rows(200, 0), chinese_rows(100, 1)
    assert not train["text"].str.contains(" ").any()
    pred = tfidf_predictions(train["text"], train["label"].to_numpy(), test["text"])
    assert (pred == test["label"].to_numpy()).mean() >= 0.95


def genre_rows(n: int, seed: int) -> pd.DataFrame:
    """Multi-label: each genre has its own words; 'western' is never on in train (its classifier cannot be fit)."""
    rng = random.Random(seed)
    words = {"action": ["explosion", "chase", "gunfight"], "comedy": ["joke", "laugh", "prank"],
             "drama": ["tears", "grief", "family"]}
    rows = []
    for _ in range(n):
        on = [g for g in words if rng.random() < 0.5]
        text = [w for g in on for w in rng.sample(words[g], 2)] + rng.sample(["the", "film", "was", "a", "story"], 3)
        rng.shuffle(text)
        rows.append({"text": " ".join(text), "label": on})
    return pd.DataFrame(rows)


def test_tfidf_scores_multilabel_one_classifier_per_label(tiny_model_dir, packaged_tokenizer):
    task, labels = tasks.get("multilabel_classification"), ["action", "comedy", "drama", "western"]

    def hot(row, label2id):
        return [float(n in row) for n in label2id]
    inputs = eval_inputs(task, tiny_model_dir, packaged_tokenizer, genre_rows(300, 0), genre_rows(100, 1), labels,
                         {"thresholds": [0.5] * 4}, hot)
    ev = task.evaluate(inputs, ["majority", "tfidf"], 32, 10_000)
    tfidf = ev.baselines["tfidf"]
    assert tfidf["f1_micro"] >= 0.95 and tfidf["accuracy"] > ev.baselines["majority"]["accuracy"] + 0.5
    assert tfidf["label_cardinality_pred"] == pytest.approx(tfidf["label_cardinality_true"], abs=0.05)
    one_hot = tfidf_predictions(["a joke", "a chase"] * 5, np.array([[0, 1], [1, 0]] * 5), ["joke", "chase"])
    assert one_hot.tolist() == [[0, 1], [1, 0]]


def test_tasks_refuse_baselines_they_do_not_support(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("task: token_classification\nevaluate:\n  baselines: [majority, tfidf]\n")
    with pytest.raises(PipelineError) as err:
        tasks.load(params)
    assert str(err.value) == ("params.yaml: evaluate.baselines: ['tfidf'] do not fit task token_classification "
                              "(choose from majority, frozen_probe)")
    for task in ("sequence_classification", "multilabel_classification"):
        params.write_text(f"task: {task}\nevaluate:\n  baselines: [majority, frozen_probe, tfidf]\n")
        assert tasks.load(params)[1].name == task


def test_params_accept_tfidf_but_not_unknown_baselines():
    assert EvaluateParams(baselines=["tfidf"]).baselines == ["tfidf"]
    assert "tfidf" not in EvaluateParams().baselines  # opt-in: the default stays majority + frozen_probe
    with pytest.raises(ValidationError):
        EvaluateParams(baselines=["bm25"])
