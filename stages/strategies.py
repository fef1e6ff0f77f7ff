"""Transfer strategies (`finetune.strategy`): what of the pretrained model trains, and at which rate.

- full: every weight; freeze: the embeddings and/or the lowest `freeze.layers` encoder layers stay as pretrained;
  head_only: only the task head (a linear probe trained by gradient).
- lora / adalora / ia3: `peft` adapters on the encoder, the task head trained in full (peft's modules_to_save). After
  training the adapter is merged into the base weights (`merge_and_unload`), so the registered model is a plain HF
  folder that loads and serves like any other; the unmerged adapter is saved beside it (its own small artifact).
- layer_lr_decay < 1 (any strategy that trains encoder layers): the head and the top layer at learning_rate, each
  layer below at decay x the one above, the embeddings below the lowest layer.
Bottleneck adapters (Houlsby/Pfeiffer) would come from the `adapters` library, whose 1.3.0 pins transformers ~=4.57:
not installable beside transformers 5.23. The closest peft methods are LoRA (a parallel low-rank adapter) and IA³.

Layers are found by parameter name, BERT-family style: `*embeddings*`, `*.layer.<i>.*` (or `.layers.<i>.`); the head
is what lies outside `model.base_model_prefix` (e.g. `classifier`; the pooler belongs to the encoder).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from stages.io import PipelineError
from stages.trainparams import FinetuneParams

ADAPTERS = ("lora", "adalora", "ia3")
_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def head_modules(model) -> list[str]:
    """Names of the top-level modules that are the task head (all but the encoder and parameter-free ones)."""
    prefix = model.base_model_prefix
    return [n for n, m in model.named_children() if n != prefix and any(True for _ in m.parameters())]


def depth(name: str, n_layers: int, head: list[str]) -> int:
    """0 embeddings, i + 1 encoder layer i, n_layers + 1 the rest (pooler, head)."""
    if name.split(".")[0] in head:
        return n_layers + 1
    if "embeddings" in name:
        return 0
    found = _LAYER.search(name)
    return int(found.group(1)) + 1 if found else n_layers + 1


def _n_layers(model) -> int:
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layers", None)
    if not n:
        raise PipelineError(f"finetune.strategy: {type(model).__name__} has no num_hidden_layers in its config")
    return int(n)


def _freeze(model, p: FinetuneParams, n_layers: int) -> None:
    head = head_modules(model)
    if p.strategy == "freeze" and p.freeze.layers > n_layers:
        raise PipelineError(f"finetune.freeze.layers {p.freeze.layers}: the model has {n_layers} encoder layers")
    for name, w in model.named_parameters():
        d = depth(name, n_layers, head)
        if p.strategy == "head_only":
            w.requires_grad_(name.split(".")[0] in head)
        elif p.strategy == "freeze" and ((d == 0 and p.freeze.embeddings) or 1 <= d <= p.freeze.layers):
            w.requires_grad_(False)


def _peft_config(model, p: FinetuneParams, total_steps: int):
    import peft

    head = head_modules(model)
    if p.strategy == "lora":
        c = p.lora
        return peft.LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=c.target_modules,
                               exclude_modules=head, modules_to_save=head)
    if p.strategy == "adalora":
        c = p.adalora
        tinit, tfinal = int(c.tinit * total_steps), int(c.tfinal * total_steps)
        if tinit >= total_steps - tfinal:
            raise PipelineError(f"finetune.adalora: {total_steps} steps leave none for pruning between tinit "
                                f"({tinit}) and tfinal ({tfinal}); train longer or lower them")
        return peft.AdaLoraConfig(init_r=c.init_r, target_r=c.target_r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                                  target_modules=c.target_modules, exclude_modules=head, modules_to_save=head,
                                  tinit=tinit, tfinal=tfinal, deltaT=c.delta_t, total_step=total_steps)
    c = p.ia3
    return peft.IA3Config(target_modules=c.target_modules, feedforward_modules=c.feedforward_modules,
                          exclude_modules=head, modules_to_save=head)


class Strategy:
    """Built from the params; `prepare` (inside the loop, once the step count is known) returns the model to train,
    `param_groups` feeds the optimizer, `after_step` runs between the optimizer step and zero_grad, `final` gives
    the plain HF model to save (adapters merged)."""

    def __init__(self, p: FinetuneParams) -> None:
        self.p, self.trained = p, None
        self.after_step: Callable[[int], None] | None = None

    def prepare(self, model, total_steps: int):
        n_layers = _n_layers(model)
        if self.p.strategy in ADAPTERS:
            import peft

            try:
                model = peft.get_peft_model(model, _peft_config(model, self.p, total_steps))
            except ValueError as e:  # e.g. a target module name the model does not have
                raise PipelineError(f"finetune.{self.p.strategy}: {str(e).splitlines()[0]}") from None
            if self.p.strategy == "adalora":
                self.after_step = model.base_model.update_and_allocate
        else:
            _freeze(model, self.p, n_layers)
        self.trained = model
        return model

    def param_groups(self, model) -> list[dict]:
        """AdamW groups: no weight decay on biases and LayerNorm weights (BERT's recipe); with layer_lr_decay < 1,
        one rate per depth. Only trainable weights: frozen ones never enter the optimizer (nor its state)."""
        p, n_layers = self.p, _n_layers(model)
        plain = model.get_base_model() if hasattr(model, "get_base_model") else model
        head = head_modules(plain)
        groups: dict[tuple[float, bool], list] = {}
        for name, w in model.named_parameters():
            if not w.requires_grad:
                continue
            local = name.removeprefix("base_model.model.")  # peft's wrapper prefix
            scale = p.layer_lr_decay ** max(0, n_layers - depth(local, n_layers, head))
            groups.setdefault((scale, w.ndim > 1), []).append(w)
        return [{"params": ws, "lr": p.learning_rate * scale, "weight_decay": p.weight_decay if decays else 0.0}
                for (scale, decays), ws in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1]))]

    def final(self):
        """The trained model as a plain HF model: adapters merged into the base weights."""
        model = self.trained
        return model.merge_and_unload() if self.p.strategy in ADAPTERS else model

    def save_adapter(self, folder) -> int:
        """The unmerged adapter (peft folder) → its bytes; 0 and nothing written for the other strategies."""
        if self.p.strategy not in ADAPTERS:
            return 0
        self.trained.save_pretrained(folder)
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def parameter_counts(model) -> dict[str, int | float]:
    total = sum(w.numel() for w in model.parameters())
    trainable = sum(w.numel() for w in model.parameters() if w.requires_grad)
    return {"trainable_params": trainable, "total_params": total, "trainable_share": round(trainable / total, 6)}


def peak_memory_mb(device: torch.device) -> float:
    """Peak RSS of this process (MiB), or peak CUDA memory allocated when training on a GPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def class_weights(task, rows, labels: list[str], spec) -> torch.Tensor | None:
    """finetune.class_weights → one weight per label (multi-label: BCE's pos_weight), or None (the model's own loss).
    balanced: from the train rows' counts (the task's unit: rows, labelled tokens, positive rows per label)."""
    if spec == "none":
        return None
    if spec == "balanced":
        return torch.tensor(task.balanced_weights(rows, len(labels)), dtype=torch.float32)
    if unknown := sorted(set(spec) - set(labels)):
        raise PipelineError(f"finetune.class_weights: {unknown[0]!r} is not a label (labels: {', '.join(labels)})")
    if bad := [k for k, v in spec.items() if not v > 0]:
        raise PipelineError(f"finetune.class_weights: {bad[0]!r}: {spec[bad[0]]} is not a positive weight")
    return torch.tensor([spec.get(n, 1.0) for n in labels], dtype=torch.float32)
