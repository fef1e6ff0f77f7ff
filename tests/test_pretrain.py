"""The pretrain stage (domain-adaptive masked-LM training): transformers' masking (whole words together), masks that
replay on resume, and through `dvc repro`: off it is a marker and a no-op, on it trains and finetune starts from it."""

import json
import shutil

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stages.checkpoints import Checkpoints, inputs_key
from stages.io import PipelineError
from stages.mlmtext import encode, read_texts, split_holdout
from stages.pretrain import pretrain, starting_point
from stages.trainparams import PretrainParams
from stages.trainrows import MaskedCollator
from tests.conftest import make_project, run_in, sentiment_rows, store_client, update_params, write_reviews

CPU = torch.device("cpu")
LONG_WORDS = ["the unbelievably overwrought cinematography was breathtaking", "an incomprehensibly dull screenplay",
              "hello world, superbly choreographed"]


def test_whole_word_mask_masks_every_subtoken_of_a_word_together(packaged_tokenizer):
    windows = encode(LONG_WORDS * 20, packaged_tokenizer, 32, offsets=True)
    masked = MaskedCollator(packaged_tokenizer, 0.4, whole_word=True, seed=0)
    batch = masked([windows[i] for i in range(len(windows))])
    enc = packaged_tokenizer(LONG_WORDS * 20)
    split_words = 0
    for row in range(len(windows)):
        picked = (batch["labels"][row] != -100).tolist()
        words: dict[int, list[bool]] = {}
        for pos, word in enumerate(enc.word_ids(row)):
            if word is None:
                assert not picked[pos]  # [CLS], [SEP], padding: never
            else:
                words.setdefault(word, []).append(picked[pos])
        assert all(all(w) or not any(w) for w in words.values()), (row, words)
        split_words += sum(len(w) > 1 and all(w) for w in words.values())
    assert split_words > 10  # words of several sub-tokens were picked, each whole
    picked = batch["labels"] != -100
    assert (batch["input_ids"][picked] == packaged_tokenizer.mask_token_id).all()  # whole words: all [MASK]
    assert (batch["labels"][picked] == torch.as_tensor(packaged_tokenizer(LONG_WORDS * 20, padding=True)[
        "input_ids"])[picked]).all()  # labels: the original tokens


def test_masks_are_a_function_of_seed_epoch_and_rows_and_leave_the_global_rng_alone(packaged_tokenizer):
    windows = encode(LONG_WORDS * 10, packaged_tokenizer, 32, offsets=False)
    rows = [windows[i] for i in range(8)]
    state, epoch = torch.get_rng_state(), [1]
    masked = MaskedCollator(packaged_tokenizer, 0.15, whole_word=False, seed=3, epoch=lambda: epoch[0])
    first, again = masked(rows), masked(rows)
    epoch[0] = 2
    other = masked(rows)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first["labels"], again["labels"]) and not torch.equal(first["labels"], other["labels"])
    assert (first["labels"] != -100).any() and first["n_tokens"] == first["attention_mask"].sum()


def test_texts_from_lines_tables_and_word_lists(tmp_path):
    (tmp_path / "a.txt").write_text("first text\n\n  second  \n")
    assert read_texts(tmp_path / "a.txt", "text") == ["first text", "second"]
    datasets.Dataset.from_dict({"tokens": [["EU", "rejects", "calls"], []], "tags": [[0, 0, 0], []]}).to_parquet(
        str(tmp_path / "ner.parquet"))
    assert read_texts(tmp_path / "ner.parquet", "tokens") == ["EU rejects calls"]
    with pytest.raises(PipelineError, match=r"ner.parquet: no column 'text' \(pretrain.text_column; it has: tokens"):
        read_texts(tmp_path / "ner.parquet", "text")
    with pytest.raises(PipelineError, match="unknown format '.doc'"):
        (tmp_path / "x.doc").write_text("x")
        read_texts(tmp_path / "x.doc", "text")
    train, held = split_holdout(100, 0.05, 42)
    assert len(held) == 5 and sorted([*train, *held]) == list(range(100))


def test_starting_point_is_the_base_model_unless_pretrain_ran(tmp_path):
    folder = tmp_path / "pretrained"
    assert starting_point("base", folder) == ("base", {})  # no folder (finetune run by hand on an old project)
    folder.mkdir()
    (folder / "pretrain.json").write_text(json.dumps({"enabled": False, "base_model": "base"}))
    assert starting_point("base", folder) == ("base", {})
    (folder / "pretrain.json").write_text(json.dumps({"enabled": True, "base_model": "base", "run_id": "r1"}))
    assert starting_point("base", folder) == (str(folder), {"pretrain.sha256": inputs_key(folder, {}),
                                                            "pretrain.run_id": "r1"})
    with pytest.raises(PipelineError, match="pre-trained from 'base', but model.name is 'other'"):
        starting_point("other", folder)


def mlm_model(model_dir):
    from transformers import AutoModelForMaskedLM, set_seed

    set_seed(0)  # the new MLM head
    return AutoModelForMaskedLM.from_pretrained(str(model_dir))


def test_a_second_run_resumes_from_the_pretrain_checkpoint_to_the_same_weights(tmp_path, tiny_model_dir,
                                                                                packaged_tokenizer):
    """fp32 on CPU, dropout on: a run resumed from a mid-epoch checkpoint ends on an uninterrupted run's weights (the
    masks of the batch after the checkpoint, collated ahead by accelerate, are drawn again the same)."""
    windows = encode([r["text"] for r in sentiment_rows(80)], packaged_tokenizer, 32, offsets=True)
    train, held = split_holdout(len(windows), 0.05, 42)
    p = PretrainParams(enabled=True, epochs=2, batch_size=8, learning_rate=1e-3, precision="fp32", whole_word_mask=True)
    masked = MaskedCollator(packaged_tokenizer, p.mlm_probability, True, p.seed)

    def run(checkpoints):
        model = mlm_model(tiny_model_dir)
        result = pretrain(model, windows.select(train), windows.select(held), masked, p, 0, CPU,
                          checkpoints=checkpoints)
        return model, result

    folder = tmp_path / "ckpt"
    # 76 train windows: 10 steps per epoch, checkpoints at 4, 8, 10 (epoch end), 12, 16, 20 (end); the last 2 kept
    whole, result = run(Checkpoints(folder, every_steps=4, keep=True))
    assert [h["epoch"] for h in result.history] == [1, 2] and all(h["val_perplexity"] > 1 for h in result.history)
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    saved = sorted(folder.glob("step-*"))
    assert [s.name for s in saved] == ["step-00000016", "step-00000020"]
    shutil.rmtree(saved[-1])  # as if killed after step 16 of 20 (epoch 2, batch 6 of 10)
    resumed, again = run(Checkpoints(folder, every_steps=4, keep=False))
    assert again.summary["resumed_from_step"] == 16
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run's"
    assert not folder.exists()


E2E = {"ingest": {"source": "data/source/reviews.csv"}, "finetune": {"epochs": 1, "batch_size": 16}}


@pytest.mark.e2e
def test_disabled_is_a_marker_and_a_no_op(tmp_path, tiny_model_dir):
    root = make_project(tmp_path, E2E | {"model": {"name": str(tiny_model_dir)}})
    write_reviews(root / "data/source/reviews.csv", 100)
    run_in(root, "dvc", "repro", "pretrain")
    assert [f.name for f in (root / "models/pretrained").iterdir()] == ["pretrain.json"]
    marker = json.loads((root / "models/pretrained/pretrain.json").read_text())
    assert marker == {"enabled": False, "base_model": str(tiny_model_dir)}
    assert run_in(root, "dvc", "status", "pretrain").stdout.strip() == "Data and pipelines are up to date."
    assert "Stage 'pretrain' didn't change, skipping" in run_in(root, "dvc", "repro", "pretrain").stdout
    # the stage itself imports no torch when off: the default job pays about nothing for it
    probe = run_in(root, "python", "-c",
                   "import sys; from stages.pretrain import main; main(); print('torch' in sys.modules)")
    assert probe.stdout.strip() == "False"
    assert run_in(root, "dvc", "status", "pretrain").stdout.strip() == "Data and pipelines are up to date."


@pytest.mark.e2e
def test_enabled_trains_and_finetune_starts_from_it(tmp_path, tiny_model_dir):
    """Pretrain at a high rate moves the encoder; finetune at a rate too small to move it (1e-8) ends on the
    pre-trained encoder, not the base one, and its MLflow run names the pre-trained folder's hash and run."""
    root = make_project(tmp_path, E2E | {"model": {"name": str(tiny_model_dir)}})
    update_params(root, {"pretrain": {"enabled": True, "learning_rate": 3e-3, "batch_size": 16,
                                      "whole_word_mask": True},
                         "finetune": {"learning_rate": 1e-8, "epochs": 1, "batch_size": 16}})
    write_reviews(root / "data/source/reviews.csv", 200)
    run_in(root, "dvc", "repro", "finetune")
    report = json.loads((root / "reports/pretrain.json").read_text())
    assert report["enabled"] and report["windows"]["heldout"] == 8 and len(report["epochs"]) == 1
    assert np.isfinite(report["epochs"][0]["val_loss"]) and report["epochs"][0]["val_perplexity"] > 1
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    pre = load_file(str(root / "models/pretrained/model.safetensors"))
    tuned = load_file(str(root / "models/finetuned/model.safetensors"))
    assert pre.keys() == base.keys()  # the base model's layout (pooler kept), MLM head left out
    key = "encoder.layer.0.attention.self.query.weight"
    assert (pre[key] - base[key]).abs().max() > 1e-3
    assert (tuned[f"bert.{key}"] - pre[key]).abs().max() < 1e-5
    client = store_client(root)
    runs = {r.data.tags.get("stage", "finetune"): r for r in client.search_runs(
        [e.experiment_id for e in client.search_experiments()])}
    assert set(runs) == {"pretrain", "finetune"}
    assert "val_perplexity" in runs["pretrain"].data.metrics and "val_loss" in runs["pretrain"].data.metrics
    tags = runs["finetune"].data.tags
    assert tags["pretrain.run_id"] == runs["pretrain"].info.run_id == report["run_id"]
    assert tags["pretrain.sha256"] == inputs_key(root / "models/pretrained", {})
    assert json.loads((root / "reports/mlflow_run.json").read_text())["run_id"] == runs["finetune"].info.run_id
    assert run_in(root, "dvc", "status", "finetune").stdout.strip() == "Data and pipelines are up to date."
