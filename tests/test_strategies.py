"""Transfer strategies on a tiny random BERT: what must stay frozen is bit-identical, what must train changes, merged
adapters predict as unmerged ones, AdaLoRA's budget shrinks on schedule, class weights weigh the loss as by hand."""

import copy

import numpy as np
import pytest
import torch

from stages.io import PipelineError
from stages.strategies import Strategy, class_weights, parameter_counts
from stages.tasks import get
from stages.training import train
from stages.trainparams import AdaLoraParams, FinetuneParams
from tests.test_training import CPU, rows, seq_validator, toy

SEQ = get("sequence_classification")


def trained(tiny_model_dir, strategy: str, **extra):
    torch.manual_seed(0)
    model = SEQ.load_model(str(tiny_model_dir), ["no", "yes"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (xs, ys), (vx, vy) = toy(96, 0), toy(32, 1)
    p = FinetuneParams(strategy=strategy, learning_rate=1e-2, epochs=2, batch_size=16, early_stopping_patience=2,
                       **extra)
    s = Strategy(p)
    train(model, rows(xs, ys), SEQ.collate, seq_validator(vx, vy), p, "accuracy", 0, CPU, strategy=s)
    return s, before


def changed(before: dict, after: dict) -> set[str]:
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def test_full_trains_every_tensor(tiny_model_dir):
    s, before = trained(tiny_model_dir, "full")
    assert changed(before, s.final().state_dict()) == set(before)


def test_freeze_keeps_embeddings_and_the_lowest_layer_bit_identical(tiny_model_dir):
    s, before = trained(tiny_model_dir, "freeze", freeze={"embeddings": True, "layers": 1})
    moved = changed(before, s.final().state_dict())
    frozen = {k for k in before if "embeddings" in k or ".layer.0." in k}
    assert frozen and not moved & frozen
    assert moved == set(before) - frozen  # layer 1, the pooler and the head all trained


def test_head_only_is_a_linear_probe(tiny_model_dir):
    s, before = trained(tiny_model_dir, "head_only")
    assert changed(before, s.final().state_dict()) == {"classifier.weight", "classifier.bias"}
    counts = parameter_counts(s.trained)
    assert counts["trainable_params"] == 32 * 2 + 2  # hidden 32 x 2 labels + bias


def test_freezing_more_layers_than_the_model_has_is_one_line(tiny_model_dir):
    with pytest.raises(PipelineError, match=r"finetune.freeze.layers 5: the model has 2 encoder layers"):
        trained(tiny_model_dir, "freeze", freeze={"embeddings": False, "layers": 5})


@pytest.mark.parametrize("method", ["lora", "adalora", "ia3"])
def test_adapters_train_only_themselves_and_merge_to_the_same_logits(tiny_model_dir, method):
    extra = {"adalora": {"init_r": 4, "target_r": 2, "tinit": 0.1, "tfinal": 0.2, "delta_t": 1}} if method == "adalora" else {}
    s, before = trained(tiny_model_dir, method, **extra)
    peft_model = s.trained
    base = {k.removeprefix("base_model.model.").replace(".base_layer", ""): v
            for k, v in peft_model.state_dict().items()
            if not any(t in k for t in ("lora_", "ia3_", "ranknum", "modules_to_save", "original_module"))}
    # every pretrained weight (the head's original copy aside) is bit-identical after training
    assert {k: torch.equal(v, base[k]) for k, v in before.items() if not k.startswith("classifier")} == \
           {k: True for k in before if not k.startswith("classifier")}
    adapters = [n for n, w in peft_model.named_parameters() if w.requires_grad and "modules_to_save" not in n]
    assert adapters and all(("lora_" in n or "ia3_" in n) for n in adapters)
    ids = torch.tensor([[101, 3001, 2001, 3002, 102], [101, 3003, 3004, 102, 0]])
    mask = (ids != 0).long()
    peft_model.eval()
    with torch.no_grad():
        unmerged = peft_model(input_ids=ids, attention_mask=mask).logits
        merged_model = s.final().eval()
        merged = merged_model(input_ids=ids, attention_mask=mask).logits
    assert type(merged_model).__name__ == "BertForSequenceClassification"  # a plain HF model again
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-4)
    assert changed(before, merged_model.state_dict()) >= {"classifier.weight"}


def test_adapter_is_saved_unmerged_and_small(tiny_model_dir, tmp_path):
    s, _ = trained(tiny_model_dir, "lora")
    size = s.save_adapter(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "adapter_config.json").exists()
    full = sum(w.numel() * 4 for w in s.trained.get_base_model().parameters())
    assert 0 < size < full / 10


def test_adalora_budget_shrinks_as_scheduled(tiny_model_dir):
    c = AdaLoraParams(init_r=6, target_r=2, tinit=0.2, tfinal=0.3, delta_t=1)
    s, _ = trained(tiny_model_dir, "adalora", adalora=c.model_dump())
    allocator = s.trained.base_model.rankallocator
    total = s.trained.peft_config["default"].total_step  # 2 epochs x 6 batches
    assert total == 12
    budgets = [allocator.budget_schedule(step)[0] for step in range(total + 1)]
    n_matrices = len(s.trained.peft_config["default"].rank_pattern)
    assert budgets[0] == 6 * n_matrices and budgets[-1] == 2 * n_matrices
    assert all(a >= b for a, b in zip(budgets, budgets[1:], strict=False))  # never grows
    final = s.trained.peft_config["default"].rank_pattern
    assert sum(int(np.sum(m)) for m in final.values()) == 2 * n_matrices  # the target budget is what is left


def test_layer_wise_rates_decay_downwards(tiny_model_dir):
    model = SEQ.load_model(str(tiny_model_dir), ["no", "yes"])
    s = Strategy(FinetuneParams(learning_rate=1e-3, layer_lr_decay=0.5))
    model = s.prepare(model, 10)
    rate = {id(w): g["lr"] for g in s.param_groups(model) for w in g["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["classifier.weight"])] == rate[id(named["bert.encoder.layer.1.output.dense.weight"])] == 1e-3
    assert rate[id(named["bert.encoder.layer.0.output.dense.weight"])] == pytest.approx(5e-4)
    assert rate[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(2.5e-4)
    decay = {id(w): g["weight_decay"] for g in s.param_groups(model) for w in g["params"]}
    assert decay[id(named["bert.encoder.layer.0.output.LayerNorm.weight"])] == 0.0


def test_class_weights_weigh_the_loss_as_by_hand():
    import datasets

    logits = torch.tensor([[2.0, -1.0], [0.5, 0.2], [-1.0, 1.5], [0.0, 0.3]])
    y = torch.tensor([0, 0, 0, 1])
    split = datasets.Dataset.from_dict({"input_ids": [[1]] * 4, "label": y.tolist()})
    w = class_weights(SEQ, split, ["no", "yes"], "balanced")
    torch.testing.assert_close(w, torch.tensor([4 / (2 * 3), 4 / (2 * 1)]))
    nll = -torch.log_softmax(logits, -1)[torch.arange(4), y]
    by_hand = (w[y] * nll).sum() / w[y].sum()
    torch.testing.assert_close(SEQ.class_loss(w)(logits, y), by_hand)

    token = get("token_classification")  # positions labelled -100 are neither counted nor weighed
    tags = [[-100, 0, 0, 1, -100], [-100, 0, 2, -100, -100]]
    w = class_weights(token, datasets.Dataset.from_dict({"input_ids": [[1] * 5] * 2, "label": tags}), ["O", "B", "I"],
                      "balanced")
    torch.testing.assert_close(w, torch.tensor([5 / (3 * 3), 5 / 3, 5 / 3]))
    tok_logits, tok_y = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0)), torch.tensor(tags)
    keep = tok_y.reshape(-1) != -100
    flat, ty = tok_logits.reshape(-1, 3)[keep], tok_y.reshape(-1)[keep]
    nll = -torch.log_softmax(flat, -1)[torch.arange(len(ty)), ty]
    torch.testing.assert_close(token.class_loss(w)(tok_logits, tok_y), (w[ty] * nll).sum() / w[ty].sum())

    multi = get("multilabel_classification")  # pos_weight = negatives / positives per label
    hot = [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    w = class_weights(multi, datasets.Dataset.from_dict({"input_ids": [[1]] * 4, "label": hot}), ["a", "b"], "balanced")
    torch.testing.assert_close(w, torch.tensor([2 / 2, 3 / 1]))
    ml_logits, my = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.4, 0.8], [0.0, -1.0]]), torch.tensor(hot)
    sig = torch.sigmoid(ml_logits)
    by_hand = -(w * my * torch.log(sig) + (1 - my) * torch.log(1 - sig)).mean()
    torch.testing.assert_close(multi.class_loss(w)(ml_logits, my), by_hand)


def test_explicit_class_weights_name_labels():
    import datasets

    split = datasets.Dataset.from_dict({"input_ids": [[1]] * 2, "label": [0, 1]})
    torch.testing.assert_close(class_weights(SEQ, split, ["neg", "pos"], {"pos": 3.0}), torch.tensor([1.0, 3.0]))
    with pytest.raises(PipelineError, match="'positive' is not a label"):
        class_weights(SEQ, split, ["neg", "pos"], {"positive": 3.0})
    assert class_weights(SEQ, split, ["neg", "pos"], "none") is None


def test_weighted_training_runs_through_the_loop(tiny_model_dir):
    torch.manual_seed(0)
    model = SEQ.load_model(str(tiny_model_dir), ["no", "yes"])
    xs, ys = toy(64, 0)
    w = torch.tensor([1.0, 5.0])
    p = FinetuneParams(learning_rate=1e-3, epochs=1, batch_size=16)
    res = train(copy.deepcopy(model), rows(xs, ys), SEQ.collate, seq_validator(xs, ys), p, "accuracy", 0, CPU,
                loss_fn=SEQ.class_loss(w))
    plain = train(model, rows(xs, ys), SEQ.collate, seq_validator(xs, ys), p, "accuracy", 0, CPU)
    assert res.steps[0]["train_loss"] != pytest.approx(plain.steps[0]["train_loss"])
