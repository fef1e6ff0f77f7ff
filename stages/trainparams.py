"""The params of the training stages (finetune, pretrain: what stages.training's loop reads, and finetune's
strategies), and `Strict`, the base of every params section: frozen, a misspelt key an error."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrainingParams(Strict):
    """What the training loop (stages.training) reads: `finetune` and `pretrain` both train with it."""

    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    epochs: int = Field(3, ge=1)
    max_steps: int = Field(0, ge=0)  # stop after this many optimizer steps (0: no limit; smoke runs, benchmarks)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 42
    early_stopping_patience: int = Field(2, ge=1)  # epochs without improvement before stopping
    # auto: the task's own (accuracy; entity F1 for NER; macro-F1 for multi-label); names: Task.metrics
    best_metric: str = "auto"
    group_by_length: bool = True  # batches of similar length: less padding, same accuracy
    eval_batch_size: int = Field(128, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32
    log_every_steps: int = Field(50, ge=1)
    # data-parallel processes on this machine (the stage starts them with torchrun); under torchrun/accelerate launch
    # the launcher's count wins. batch_size stays the global batch: each process trains on batch_size / N of it.
    num_processes: int = Field(1, ge=1)
    checkpoint_every_steps: int = Field(100, ge=0)  # optimizer steps between checkpoints (0: only at epoch ends)
    keep_checkpoints: bool = False  # keep them after a successful run (else removed)
    checkpoint_dir: str = ".checkpoints"  # outside the DVC outputs; a subfolder per set of inputs (data + params)


class FreezeParams(Strict):
    embeddings: bool = True  # strategy freeze: the embedding layer stays as pretrained
    layers: int = Field(0, ge=0)  # ... and the lowest N encoder layers


class LoraParams(Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)  # the update is scaled by alpha / r
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = ["query", "value"]  # module names (suffixes) of the encoder that get an adapter


class AdaLoraParams(Strict):
    init_r: int = Field(12, ge=1)  # rank each adapted matrix starts with
    target_r: int = Field(4, ge=1)  # average rank the budget is pruned down to
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = ["query", "key", "value", "dense"]
    # the budget schedule, as shares of the run's optimizer steps: full rank for the first `tinit`, then pruned
    # (every `delta_t` steps) down to target_r, which the last `tfinal` trains at
    tinit: float = Field(0.1, ge=0, lt=1)
    tfinal: float = Field(0.2, ge=0, lt=1)
    delta_t: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _schedule(self) -> AdaLoraParams:
        if self.tinit + self.tfinal >= 1:
            raise ValueError("tinit + tfinal must leave steps for pruning (their sum is below 1)")
        if self.target_r > self.init_r:
            raise ValueError("target_r is above init_r: the budget only shrinks")
        return self


class IA3Params(Strict):
    target_modules: list[str] = ["key", "value", "output.dense"]
    feedforward_modules: list[str] = ["output.dense"]  # of target_modules: those scaled on their input (FFN)


class FinetuneParams(TrainingParams):
    # full: every weight trains | freeze: embeddings and/or the lowest `freeze.layers` encoder layers stay fixed |
    # head_only: only the task head trains (a linear probe by gradient) | lora / adalora / ia3: peft adapters
    strategy: Literal["full", "freeze", "head_only", "lora", "adalora", "ia3"] = "full"
    freeze: FreezeParams = FreezeParams()
    # layer-wise learning-rate decay: the head and top encoder layer train at learning_rate, each layer below at this
    # factor times the one above, the embeddings below the lowest layer (1.0: one rate for all)
    layer_lr_decay: float = Field(1.0, gt=0, le=1)
    lora: LoraParams = LoraParams()
    adalora: AdaLoraParams = AdaLoraParams()
    ia3: IA3Params = IA3Params()
    # none | balanced (n / (k x count) per class; multi-label: pos_weight = negatives / positives per label) |
    # {label: weight} for the labels named (others 1.0)
    class_weights: Literal["none", "balanced"] | dict[str, float] = "none"
    # multi-label: per_label / global thresholds tuned on validation (max F1), or one fixed probability for every label
    threshold: Literal["per_label", "global"] | float = "per_label"

    @model_validator(mode="after")
    def _threshold_range(self) -> FinetuneParams:
        if isinstance(self.threshold, float) and not 0 < self.threshold < 1:
            raise ValueError("threshold: a fixed threshold is a probability between 0 and 1 (exclusive)")
        return self


class PretrainParams(TrainingParams):
    """Domain-adaptive pre-training (stages.pretrain): masked-LM training of the encoder before finetune."""

    enabled: bool = False  # off: models/pretrained only names the base model, and finetune starts from it
    # null: the train split's texts (data/augmented); else a .txt (one text per line) or CSV/TSV/JSONL/Parquet file,
    # best under data/source/ (the stage's DVC dep: a file elsewhere is read, but a change to it is not seen)
    source: str | None = None
    text_column: str = "text"  # the table column of texts (a column of word lists, as NER's tokens, is joined)
    whole_word_mask: bool = False  # mask every sub-token of a chosen word together (transformers' rule: all [MASK])
    mlm_probability: float = Field(0.15, gt=0, lt=1)  # share of tokens (whole words: of words) masked and predicted
    holdout: float = Field(0.05, gt=0, lt=0.5)  # share of text windows held out for the MLM loss and perplexity
    epochs: int = Field(1, ge=1)  # one pass over in-domain text moves the encoder; finetune then trains for real
    best_metric: Literal["loss"] = "loss"  # the held-out MLM loss (lower is better); the only choice here
