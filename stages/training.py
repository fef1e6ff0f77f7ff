"""The fine-tuning loop on Hugging Face `accelerate`: one CPU, N processes (`torchrun`, `accelerate launch`: DDP, and
FSDP/DeepSpeed through accelerate's config), mixed precision, checkpoints with `save_state`/`load_state`. Around it,
what the pipeline adds: length-grouped batches read from Arrow (stages.trainrows), AdamW + linear warmup/decay,
per-epoch validation on the whole split (sharded across processes, gathered), best-epoch restore, early stopping,
resume from the newest whole checkpoint. Pure: tracking arrives as callbacks, checkpoints as an object."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch

from stages.checkpoints import Checkpoints
from stages.modeling import autocast_dtype
from stages.progress import Progress
from stages.trainparams import TrainingParams
from stages.trainrows import loader

log = logging.getLogger(__name__)


class Callbacks(Protocol):
    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


class NoCallbacks:
    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: losses, validation metrics, speed
    steps: list[dict[str, float]] = field(default_factory=list)  # per optimizer step: epoch (fractional), loss, LR
    best_epoch: int = 0
    best_value: float = math.nan
    stopped_early: bool = False
    summary: dict[str, float] = field(default_factory=dict)


@dataclass
class Loop:
    """Where the loop is, and what it has counted: all a checkpoint needs besides accelerate's state."""

    epoch: int = 1  # the epoch under way
    batch: int = 0  # batches of that epoch already trained on (global batches: every process's share)
    step: int = 0  # optimizer steps done
    result: dict = field(default_factory=lambda: asdict(TrainResult()))
    bad_epochs: int = 0
    seen: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    train_seconds: float = 0.0  # training loops only: validation and checkpoint saves left out
    epoch_seconds: float = 0.0  # this epoch's, so far
    loss_sum: float = 0.0  # this epoch's, over its batches so far
    resumed_from: int = 0  # the step a resume started from (0: a fresh start)


def _better(value: float, best: float, metric: str) -> bool:
    return math.isnan(best) or (value < best if metric == "loss" else value > best)


def _optimizer(model, p: TrainingParams, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """AdamW over the trainable weights; `groups` (a strategy's: per-layer rates) or, by default, BERT's recipe: no
    weight decay on biases and LayerNorm weights."""
    trainable = [w for w in model.parameters() if w.requires_grad]
    decay, rest = [w for w in trainable if w.ndim > 1], [w for w in trainable if w.ndim <= 1]
    groups = groups or [{"params": decay, "weight_decay": p.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    # fused: one kernel for the whole update instead of ~10 per tensor group (82 → 25 ms per step on 2 CPU
    # cores for MiniLM's 22.7M parameters, a quarter of a bf16 training step); same math as foreach.
    fused = all(w.device.type in ("cpu", "cuda") and w.is_floating_point() for w in trainable)
    return torch.optim.AdamW(groups, lr=p.learning_rate, fused=fused or None)


def accelerator(device: torch.device, dtype: torch.dtype | None, p: TrainingParams):
    """accelerate's Accelerator for this run. split_batches: `batch_size` is the global batch, each of N processes
    trains on 1/N of it, so N processes take the same optimizer steps as one."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState

    mixed = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
    if AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
        AcceleratorState._reset_state()  # one process training twice (tests, benchmarks) with another precision
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mixed, step_scheduler_with_optimizer=True,
                       gradient_accumulation_steps=p.gradient_accumulation_steps,
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def _global_batch(acc, loss: torch.Tensor, ids: torch.Tensor, n_tokens: torch.Tensor) -> tuple[float, int, int, int]:
    """The whole global batch's (loss, rows, real tokens, padded tokens): every process's share summed, its loss the
    mean of their means. One all-reduce per batch, and none on a single process."""
    stats = torch.tensor([loss.item(), len(ids), n_tokens.item(), ids.numel()], dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        stats = acc.reduce(stats, "sum")
        stats[0] /= acc.num_processes
    batch_loss, rows, real, padded = stats.tolist()
    return batch_loss, int(rows), int(real), int(padded)


Validate = Callable[[torch.nn.Module, "torch.dtype | None"], dict[str, float]]  # model, autocast dtype → metrics
Collate = Callable[[list, "object", int], torch.Tensor]  # (targets, row indices, padded width) → the labels= tensor


def train(model, rows, collate: Collate, validate: Validate, p: TrainingParams, metric: str, pad_id: int,
          device: torch.device, callbacks: Callbacks = NoCallbacks(), checkpoints: Checkpoints | None = None, *,
          strategy=None, loss_fn: Callable | None = None, collator: Callable | None = None) -> TrainResult:
    """Fine-tune `model` in place on `rows` (a datasets.Dataset of input_ids and label); on return it holds the weights
    of the best validation epoch by `metric`. `collate(labels, idx, width)` gives a batch's `labels=` tensor; the model
    computes its own loss from it, unless `loss_fn(logits, labels)` is given. `strategy` (stages.strategies) decides
    what trains, at which rates, and wraps the model (then the trained model is `strategy.trained`). With
    `checkpoints`, the newest whole one is resumed from, and new ones are saved every `finetune.checkpoint_every_steps`
    optimizer steps and after each epoch. `collator` builds batches another way (stages.trainrows.loader: masked-LM)."""
    dtype = autocast_dtype(device, p.precision)
    acc = accelerator(device, dtype, p)
    data, batches = loader(rows, collate, pad_id, p.batch_size, p.seed, p.group_by_length, collator)
    steps_per_epoch = math.ceil(len(batches) / p.gradient_accumulation_steps)
    total_steps = min(steps_per_epoch * p.epochs, p.max_steps or steps_per_epoch * p.epochs)
    warmup = int(p.warmup_ratio * total_steps)
    model = model.to(acc.device)
    if strategy is not None:  # freezing / adapters, once the step count is known (AdaLoRA's schedule needs it)
        model = strategy.prepare(model, total_steps)
    optimizer = _optimizer(model, p, strategy.param_groups(model) if strategy is not None else None)
    after_step = strategy.after_step if strategy is not None else None
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warmup, then linear decay to 0
        optimizer, lambda s: s / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    wrapped, optimizer, data, schedule = acc.prepare(model, optimizer, data, schedule)
    loop, best_state = Loop(), None
    if checkpoints is not None and (found := checkpoints.load_newest(acc)) is not None:
        loop, best_state = Loop(**found[0]), found[1]
        loop.resumed_from = loop.step
        log.info("resumed from step %d of %d (epoch %d, batch %d of %d) in %s", loop.step, total_steps, loop.epoch,
                 loop.batch, len(batches), checkpoints.folder)
    res = loop.result
    log.info("training: %d epoch(s) x %d steps, %d rows per step (%d per process x %d process(es)), %s on %s",
             p.epochs, steps_per_epoch, p.batch_size * p.gradient_accumulation_steps,
             p.batch_size // acc.num_processes, acc.num_processes, acc.mixed_precision, acc.device)
    progress = Progress(total_steps, loop.step, p.epochs, p.batch_size * p.gradient_accumulation_steps, acc.is_main_process)

    def save() -> None:
        if checkpoints is not None:
            checkpoints.save(acc, loop.step, asdict(loop), best_state)

    while loop.epoch <= p.epochs and loop.step < total_steps and not res["stopped_early"]:
        epoch, t0 = loop.epoch, time.perf_counter()
        wrapped.train()
        batches.for_epoch(epoch)
        for batch in acc.skip_first_batches(data, loop.batch) if loop.batch else data:
            n_tokens = batch.pop("n_tokens")
            with acc.accumulate(wrapped):
                if loss_fn is None:
                    loss = wrapped(**batch).loss
                else:  # e.g. class weights: the task's loss on the logits (AdaLoRA's orthogonal penalty is then off)
                    loss = loss_fn(wrapped(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"])
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(wrapped.parameters(), p.max_grad_norm)
                lr = schedule.get_last_lr()[0]  # the rate this step uses (the schedule moves on below)
                optimizer.step()
                schedule.step()
                if after_step is not None and acc.sync_gradients:  # AdaLoRA: importance from this step's gradients
                    after_step(loop.step + 1)
                optimizer.zero_grad(set_to_none=True)
            batch_loss, rows_, real, padded = _global_batch(acc, loss, batch["input_ids"], n_tokens)
            loop.batch, loop.loss_sum = loop.batch + 1, loop.loss_sum + batch_loss
            loop.seen, loop.real_tokens, loop.padded_tokens = loop.seen + rows_, loop.real_tokens + real, loop.padded_tokens + padded
            if not acc.sync_gradients:
                continue
            loop.step += 1
            res["steps"].append({"step": loop.step, "epoch": round(epoch - 1 + loop.batch / len(batches), 4),
                                 "train_loss": batch_loss, "learning_rate": lr})
            if loop.step % p.log_every_steps == 0:
                callbacks.on_step(loop.step, {"train_loss": loop.loss_sum / loop.batch, "learning_rate": lr})
            progress.update(loop.step, epoch, loop.loss_sum / loop.batch)
            if checkpoints is not None and checkpoints.due(loop.step) and loop.batch < len(batches):
                loop.epoch_seconds += time.perf_counter() - t0
                save()
                t0 = time.perf_counter()
            if loop.step >= total_steps:  # finetune.max_steps: the epoch ends here
                break
        epoch_seconds = loop.epoch_seconds + time.perf_counter() - t0
        loop.train_seconds += epoch_seconds
        model = acc.unwrap_model(wrapped, keep_fp32_wrapper=True)
        val = validate(model, dtype)
        n_batches = max(1, loop.batch)
        metrics = {"train_loss": loop.loss_sum / n_batches, **{f"val_{k}": v for k, v in val.items()},
                   "epoch_seconds": epoch_seconds, "train_samples_per_s": len(rows) / max(epoch_seconds, 1e-9)}
        res["history"].append({"epoch": epoch, **metrics})
        callbacks.on_epoch(epoch, metrics)
        log.info("epoch %d: train loss %.4f, val %s, %.0f samples/s", epoch, metrics["train_loss"],
                 ", ".join(f"{k} {v:.4f}" for k, v in val.items() if k in ("loss", "accuracy", "f1", "f1_macro")),
                 metrics["train_samples_per_s"])
        if _better(val[metric], res["best_value"], metric):
            res["best_epoch"], res["best_value"], loop.bad_epochs = epoch, val[metric], 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            loop.bad_epochs += 1
            if loop.bad_epochs >= p.early_stopping_patience and epoch < p.epochs:
                res["stopped_early"] = True
                log.info("early stop: no %s gain for %d epoch(s)", metric, loop.bad_epochs)
        loop.epoch, loop.batch, loop.loss_sum, loop.epoch_seconds = epoch + 1, 0, 0.0, 0.0
        save()
    progress.close()
    model = acc.unwrap_model(wrapped, keep_fp32_wrapper=False)  # and accelerate's autocast wrapper off forward: what follows runs in fp32
    model.load_state_dict(best_state)
    acc.wait_for_everyone()
    if checkpoints is not None and acc.is_main_process:
        checkpoints.clear()
    result = TrainResult(**res)
    secs = max(loop.train_seconds, 1e-9)
    result.summary = {"best_epoch": result.best_epoch, f"best_val_{metric}": result.best_value,
                      "epochs_run": len(result.history), "train_seconds": round(loop.train_seconds, 2),
                      "train_samples_per_s": round(loop.seen / secs, 2),
                      "train_real_tokens_per_s": round(loop.real_tokens / secs, 1),
                      "padding_share": round(1 - loop.real_tokens / max(loop.padded_tokens, 1), 4),
                      "precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32"),
                      "processes": acc.num_processes, "resumed_from_step": loop.resumed_from}
    return result
