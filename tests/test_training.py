"""The training loop on a tiny random BERT: batching, learning, best-epoch restore, early stopping."""

import numpy as np
import pytest
import torch

from stages.tasks import get
from stages.params import FinetuneParams
from stages.trainrows import make_batches
from stages.training import train

SEQ = get("sequence_classification")


def rows(xs, ys):
    import datasets

    return datasets.Dataset.from_dict({"input_ids": xs, "label": ys})


def seq_validator(xs, ys):
    return SEQ.validator(rows(xs, ys), ["no", "yes"], FinetuneParams(eval_batch_size=64), 0, CPU)

CPU = torch.device("cpu")


def test_batches_cover_every_row_once_and_group_by_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=5000)
    for group in (False, True):
        batches = make_batches(lengths, 32, np.random.default_rng(1), group)
        assert sorted(np.concatenate(batches).tolist()) == list(range(5000))
    pad = lambda bs: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in bs)  # noqa: E731
    grouped, plain = make_batches(lengths, 32, np.random.default_rng(1), True), make_batches(lengths, 32, np.random.default_rng(1), False)
    assert pad(grouped) < 0.2 * pad(plain)  # length grouping removes most padding


def toy(n, seed):
    """Label 1 iff token 2001 appears: learnable by a tiny model in a few epochs."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n):
        body = rng.integers(3000, 3050, size=rng.integers(3, 12)).tolist()
        if i % 2:
            body[rng.integers(len(body))] = 2001
        seqs.append([101, *body, 102])
        labels.append(i % 2)
    return seqs, labels


class Recorder:
    def __init__(self):
        self.steps, self.epochs = [], []

    def on_step(self, step, metrics):
        self.steps.append(step)

    def on_epoch(self, epoch, metrics):
        self.epochs.append((epoch, metrics))


def test_learns_a_separable_task_and_restores_best(tiny_model_dir):
    torch.manual_seed(0)
    model = SEQ.load_model(str(tiny_model_dir), ["no", "yes"])
    (xs, ys), (vx, vy) = toy(400, 0), toy(100, 1)
    p = FinetuneParams(learning_rate=3e-3, epochs=6, batch_size=16, log_every_steps=10, early_stopping_patience=6)
    rec = Recorder()
    validate = seq_validator(vx, vy)
    result = train(model, rows(xs, ys), SEQ.collate, validate, p, "accuracy", 0, CPU, rec)
    accs = [h["val_accuracy"] for h in result.history]
    assert max(accs) >= 0.9
    assert result.best_epoch == int(np.argmax(accs)) + 1 and result.best_value == max(accs)
    assert [e for e, _ in rec.epochs] == list(range(1, 7)) and rec.steps[:2] == [10, 20]
    again = validate(model, None)
    assert again["accuracy"] == pytest.approx(max(accs))  # the model holds the best epoch's weights
    s = result.summary
    assert s["train_samples_per_s"] > 0 and 0 <= s["padding_share"] < 0.5 and s["epochs_run"] == 6


def test_early_stopping(tiny_model_dir):
    model = SEQ.load_model(str(tiny_model_dir), ["no", "yes"])
    xs, ys = toy(64, 0)
    p = FinetuneParams(learning_rate=1e-9, epochs=10, batch_size=16, early_stopping_patience=1, best_metric="loss")
    result = train(model, rows(xs, ys), SEQ.collate, seq_validator(xs, ys), p, "loss", 0, CPU)
    assert result.stopped_early and len(result.history) < 10


def test_gradient_accumulation_counts_optimizer_steps(tiny_model_dir):
    model = SEQ.load_model(str(tiny_model_dir), ["no", "yes"])
    xs, ys = toy(64, 0)
    rec = Recorder()
    train(model, rows(xs, ys), SEQ.collate, seq_validator(xs, ys),
          FinetuneParams(epochs=1, batch_size=8, gradient_accumulation_steps=4, log_every_steps=1), "accuracy", 0, CPU, rec)
    assert rec.steps == [1, 2]  # 8 batches / 4 accumulation = 2 optimizer steps


def test_token_classification_learns_tags_and_selects_by_entity_f1(tiny_model_dir):
    """Words 3000-3009 are people (B-PER, then I-PER for a following 3010-3019), the rest O: after training,
    validation entity F1 (seqeval over word tags rebuilt from windows) is high and drives the best epoch."""
    import datasets

    from stages.align import IGNORE

    names = ["O", "B-PER", "I-PER"]
    rng = np.random.default_rng(0)

    def sentences(n):
        rows = []
        for s in range(n):
            ids, tags = [], []
            for _ in range(rng.integers(3, 9)):
                if rng.random() < 0.3:
                    ids += [int(rng.integers(3000, 3010)), int(rng.integers(3010, 3020))]
                    tags += [1, 2]
                else:
                    ids.append(int(rng.integers(4000, 4100)))
                    tags.append(0)
            n_words = len(ids)
            rows.append({"input_ids": [101, *ids, 102], "label": [IGNORE, *tags, IGNORE], "sentence": s,
                         "word": [-1, *range(n_words), -1], "word_labels": tags})
        return rows

    train_rows, val_rows = sentences(300), sentences(60)
    val = datasets.Dataset.from_list(val_rows)
    torch.manual_seed(0)
    task = get("token_classification")
    model = task.load_model(str(tiny_model_dir), names)
    p = FinetuneParams(learning_rate=3e-3, epochs=4, batch_size=16, early_stopping_patience=4)
    result = train(model, datasets.Dataset.from_list(train_rows).select_columns(["input_ids", "label"]), task.collate, task.validator(val, names, FinetuneParams(eval_batch_size=64), 0, CPU), p, "f1", 0, CPU)
    f1s = [h["val_f1"] for h in result.history]
    assert max(f1s) >= 0.9 and result.best_value == max(f1s) and result.best_epoch == int(np.argmax(f1s)) + 1
    assert {"val_strict_f1", "val_accuracy", "val_f1_macro", "val_loss"} <= set(result.history[0])
