"""The training engine's parts on a tiny model: rows read from Arrow (never the whole split as lists), progress lines
in a log, max_steps, and checkpoint keys and folders."""

import logging
import tracemalloc

import datasets
import numpy as np
import pytest
import torch

from stages import progress
from stages.checkpoints import Checkpoints, inputs_key
from stages.params import FinetuneParams
from stages.tasks import get
from stages.training import train
from stages.trainrows import GroupedBatches, token_lengths

SEQ = get("sequence_classification")
CPU = torch.device("cpu")


def toy_rows(n: int, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 40, size=n)
    ids = [[101, *rng.integers(3000, 3100, size=k).tolist(), 102] for k in lengths]
    return datasets.Dataset.from_dict({"input_ids": ids, "label": (np.arange(n) % 2).tolist()})


def no_validation(model, dtype):
    return {"accuracy": 0.0}


def test_train_reads_rows_batch_by_batch_never_the_split_as_lists(tmp_path, tiny_model_dir):
    """20,000 rows of ~25 ids as Python lists are ~25 MB of int objects; the loop's own Python allocations while it
    trains stay a fraction of that (the split lives in memory-mapped Arrow files, read a batch at a time)."""
    toy_rows(20_000).save_to_disk(str(tmp_path / "train"))
    rows = datasets.load_from_disk(str(tmp_path / "train"))
    as_lists = len(rows) * 25 * 28  # bytes: ~25 ids per row, 28 bytes per int object, before the lists themselves
    model = SEQ.load_model(str(tiny_model_dir), ["no", "yes"])
    p = FinetuneParams(epochs=1, batch_size=500, precision="fp32")
    tracemalloc.start()
    try:
        train(model, rows, SEQ.collate, no_validation, p, "accuracy", 0, CPU)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < as_lists / 4, f"{peak / 1e6:.1f} MB traced while training; the split as lists is {as_lists / 1e6:.0f} MB"


def test_lengths_come_from_arrow_and_batches_are_a_function_of_seed_and_epoch():
    rows = toy_rows(300)
    lengths = token_lengths(rows)
    assert lengths.tolist() == [len(x) for x in rows["input_ids"]]
    assert token_lengths(rows.select([5, 2])).tolist() == [len(rows[5]["input_ids"]), len(rows[2]["input_ids"])]
    a, b = GroupedBatches(lengths, 32, 7, True), GroupedBatches(lengths, 32, 7, True)
    assert list(a.for_epoch(2)) == list(b.for_epoch(2)) != list(b.for_epoch(3))
    assert sorted(i for batch in a.for_epoch(1) for i in batch) == list(range(300)) and len(a) == 10


def test_max_steps_and_a_progress_line_at_least_every_interval(tiny_model_dir, monkeypatch, caplog):
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0)  # a line at every step (a log has no TTY here)
    model = SEQ.load_model(str(tiny_model_dir), ["no", "yes"])
    p = FinetuneParams(epochs=3, batch_size=16, max_steps=5, precision="fp32")
    with caplog.at_level(logging.INFO, logger="stages.training"):
        result = train(model, toy_rows(160), SEQ.collate, no_validation, p, "accuracy", 0, CPU)
    assert len(result.steps) == 5 and len(result.history) == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(lines) == 5 and lines[-1].startswith("step 5/5 (epoch 1/3), ")
    assert all("samples/s, loss " in line and ", ETA " in line for line in lines)


def test_checkpoint_key_follows_data_bytes_and_params(tmp_path):
    data = tmp_path / "tokenized"
    data.mkdir()
    (data / "a.arrow").write_bytes(b"rows")
    key = inputs_key(data, {"lr": 1e-3})
    assert inputs_key(data, {"lr": 1e-3}) == key != inputs_key(data, {"lr": 2e-3})
    (data / "a.arrow").write_bytes(b"rowz")
    assert inputs_key(data, {"lr": 1e-3}) != key


def test_only_whole_checkpoints_count(tmp_path):
    ckpt = Checkpoints(tmp_path, every_steps=10, keep=False)
    (tmp_path / "step-00000020.partial").mkdir()  # killed while writing
    (tmp_path / "step-00000010").mkdir()  # renamed, but its manifest lost
    assert ckpt._whole() == [tmp_path / "step-00000010"]
    assert ckpt.problem(tmp_path / "step-00000010") == "no manifest"
    assert ckpt.due(20) and not ckpt.due(25) and not Checkpoints(tmp_path, 0, False).due(10)
    ckpt.clear()
    assert not tmp_path.exists()
    Checkpoints(tmp_path, 10, keep=True).clear()  # keep_checkpoints: nothing removed (and no error when absent)



def test_epoch_seconds_count_the_whole_epoch_across_checkpoints(tmp_path, tiny_model_dir):
    model = SEQ.load_model(str(tiny_model_dir), ["no", "yes"])
    p = FinetuneParams(epochs=2, batch_size=16, precision="fp32")
    ckpt = Checkpoints(tmp_path / "ckpt", every_steps=3, keep=False)
    result = train(model, toy_rows(640), SEQ.collate, no_validation, p, "accuracy", 0, CPU, checkpoints=ckpt)
    seconds = [h["epoch_seconds"] for h in result.history]
    assert sum(seconds) == pytest.approx(result.summary["train_seconds"], rel=0.05, abs=0.02)
    assert all(s > 0 for s in seconds) and not (tmp_path / "ckpt").exists()  # removed after success
