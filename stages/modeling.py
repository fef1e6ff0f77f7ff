"""Model plumbing shared by finetune, evaluate and serving: devices, precision, padding, batched prediction. Locating
and loading a model is stages.loading."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from stages.io import PipelineError

PROGRESS_SECONDS = 60  # a line at least this often while a named pass runs (evaluate on 25,000 texts: minutes on CPU)
log = logging.getLogger(__name__)


def pick_device(pref: str = "auto") -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise PipelineError("finetune.device: cuda asked for, but torch sees no CUDA device")
    return torch.device("cuda" if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()) else "cpu")


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (avx512_bf16 or AMX): there bf16 matmuls run ~4x
    faster than fp32 (bench/peak). Elsewhere torch emulates bf16 and fp32 is the faster choice."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # not Linux: no cheap way to ask, stay with fp32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. auto: bf16 (or fp16) on CUDA; on CPU bf16 where the
    CPU has native bf16, else fp32. Weights, optimizer state and the loss stay fp32 either way."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def encode_cut(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], np.ndarray]:
    """Serving's classifier input: each text's ids cut to `max_length` tokens, and whether it was cut (the `truncated`
    column). The fast tokenizer keeps what it cut in each Encoding's `overflowing`: one tokenization, no re-count."""
    if not texts:  # the tokenizer refuses an empty batch
        return [], np.zeros(0, dtype=bool)
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return enc["input_ids"], np.array([bool(e.overflowing) for e in enc.encodings], dtype=bool)


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence of this batch (not to max_length): input ids + mask."""
    longest = max(len(s) for s in seqs)
    ids = np.full((len(seqs), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), longest), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def shard() -> tuple[int, int]:
    """(this process's rank, number of processes) when training data-parallel (torchrun, accelerate launch), else (0, 1)."""
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def sorted_batches(seqs: list[list[int]], batch_size: int, pad_id: int, device: torch.device, what: str | None = None,
                   part: tuple[int, int] = (0, 1)):
    """Yield (row indices, ids, mask) over length-sorted inputs, so each batch pads little; with `part` (rank, N) only
    every N-th batch from the rank-th. A named pass (`what`) logs a line when it starts and one a minute while it runs."""
    order = np.argsort([len(s) for s in seqs], kind="stable")
    t0 = last = time.monotonic()
    if what:
        log.info("%s: %d rows", what, len(seqs))
    rank, n = part
    for start in range(rank * batch_size, len(seqs), n * batch_size):
        idx = order[start : start + batch_size]
        ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
        yield idx, ids.to(device), mask.to(device)
        if what and time.monotonic() - last >= PROGRESS_SECONDS:
            last, done = time.monotonic(), start + len(idx)
            log.info("%s: %d/%d rows, %.0f rows/s", what, done, len(seqs), done / (last - t0))


@torch.inference_mode()
def run_model(model, seqs: list[list[int]], batch_size: int, pad_id: int, device: torch.device,
              dtype: torch.dtype | None = None, targets: list | None = None, collate=None, per_token: bool = False,
              what: str | None = None):
    """(logits in input order, loss) over length-sorted batches in eval mode. Logits: one (labels,) row per input, or
    with `per_token` one (its length, labels) array per input. With `targets` and `collate(targets, idx, width)` the
    model computes its own loss per batch, and `loss` is their mean weighted by labelled units (rows, or positions
    that are not IGNORE); else it is None. `what` names the pass in the log (sorted_batches). Under data-parallel
    training each process runs its share of the batches and all get every row's logits (gathered)."""
    model.eval()
    out = [np.empty(0)] * len(seqs) if per_token else np.zeros((len(seqs), model.config.num_labels), np.float32)
    total = units = 0.0
    part, mine = shard(), []
    for idx, ids, mask in sorted_batches(seqs, batch_size, pad_id, device, what, part):
        labels = None if targets is None else collate(targets, idx, ids.shape[1]).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            res = model(input_ids=ids, attention_mask=mask, labels=labels)
        logits = res.logits.float().cpu().numpy()
        if labels is not None:
            k = labels.numel() if labels.is_floating_point() else int((labels != -100).sum())
            total, units = total + res.loss.item() * k, units + k
        mine.append((idx, logits))
    if part[1] > 1:
        import torch.distributed as dist

        parts = [None] * part[1]
        dist.all_gather_object(parts, (mine, total, units))
        mine, total, units = [b for m, _, _ in parts for b in m], sum(p[1] for p in parts), sum(p[2] for p in parts)
    for idx, logits in mine:
        if per_token:
            for row, i in enumerate(idx):
                out[i] = logits[row, : len(seqs[i])]
        else:
            out[idx] = logits
    return out, (None if targets is None else total / max(units, 1))


def predict_logits(model, seqs: list[list[int]], batch_size: int, pad_id: int,
                   device: torch.device, dtype: torch.dtype | None = None, what: str | None = None) -> np.ndarray:
    """Logits in input order."""
    return run_model(model, seqs, batch_size, pad_id, device, dtype, what=what)[0]


def predict_token_logits(model, seqs: list[list[int]], batch_size: int, pad_id: int,
                         device: torch.device, dtype: torch.dtype | None = None) -> list[np.ndarray]:
    """Per-token logits of each input, in input order, each (its length, labels)."""
    return run_model(model, seqs, batch_size, pad_id, device, dtype, per_token=True)[0]
