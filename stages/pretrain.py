"""Domain-adaptive pre-training (DAPT): continue the encoder's masked-LM training on unlabelled in-domain text, so
finetune starts from an encoder that has read the domain. Off by default: `models/pretrained/pretrain.json` then only
names the base model (torch never imported) and finetune starts from it. On, the train split's texts (or
`pretrain.source`) are cut into windows of `tokenize.max_length` tokens, `pretrain.holdout` of them held out, and the
encoder trains with finetune's loop (stages.training: checkpoints, resume, mixed precision, N processes) on
transformers' masking (stages.trainrows.MaskedCollator). Writes `models/pretrained/` (the base model with the adapted
encoder, the tokenizer, pretrain.json: held-out MLM loss and perplexity per epoch), `reports/pretrain.json` and its own
MLflow run, which finetune's run names in its tags (reports/mlflow_run.json stays finetune's).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from stages import lineage, tracking
from stages.checkpoints import inputs_key, stage_checkpoints
from stages.io import PipelineError, atomic_dir, read_json, write_json
from stages.mlmtext import encode, read_texts, split_holdout
from stages.params import load_params
from stages.trainparams import PretrainParams

TEXTS, OUT, REPORT = Path("data/augmented"), Path("models/pretrained"), Path("reports/pretrain.json")
MARKER = "pretrain.json"  # in OUT: whether it holds a pre-trained model, from which base, the run's numbers
SOURCES = Path("data/source")  # the stage's DVC dep for a named source: a file elsewhere is read, but not watched
log = logging.getLogger(__name__)


def validator(held, masked, batch_size: int):
    """Scores the model on the held-out windows: the masked-LM loss (mean cross-entropy per masked token, nats) and
    its perplexity (exp of it). `masked` is bound to no epoch, so the held-out masks are the same every epoch."""
    import torch

    from stages.trainrows import token_lengths

    order, rows = np.argsort(token_lengths(held), kind="stable"), held.with_format(None)  # sorted: little padding

    def validate(model, dtype) -> dict[str, float]:
        model.eval()
        device, total, units = next(model.parameters()).device, 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = masked([rows[int(i)] for i in order[start : start + batch_size]])
                k = int((batch["labels"] != -100).sum())
                if k:  # a batch of short windows may get no mask at all: no loss to average
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        loss = model(input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device),
                                     attention_mask=batch["attention_mask"].to(device)).loss
                    total, units = total + loss.item() * k, units + k
        loss = total / units if units else math.nan
        return {"loss": loss, "perplexity": math.exp(loss) if units else math.nan}
    return validate


def pretrain(model, windows, held, masked, p: PretrainParams, pad_id: int, device, callbacks=None, checkpoints=None):
    """Pure core: train `model` (a masked-LM model) in place on `windows`, keeping the epoch of least held-out loss."""
    from stages.training import NoCallbacks, train

    return train(model, windows, None, validator(held, masked, p.eval_batch_size), p, "loss", pad_id, device,
                 callbacks or NoCallbacks(), checkpoints, collator=masked.bind)


def adapted_encoder(mlm, base: str, trust=None):
    """The base model as finetune loads it (AutoModel: a masked-LM model has no pooler) with `mlm`'s trained encoder
    weights; the MLM head is left out (finetune puts its own head on). `trust`: stages.loading.Trust (default safe)."""
    from transformers import AutoModel

    from stages.loading import SAFE, load_pretrained

    encoder = load_pretrained(AutoModel, base, trust or SAFE)
    unexpected = encoder.load_state_dict(mlm.base_model.state_dict(), strict=False).unexpected_keys
    if unexpected:
        raise PipelineError(f"model.name '{base}': its masked-LM encoder does not fit its base model ({unexpected[0]})")
    return encoder


def starting_point(model_name: str, folder: Path = OUT) -> tuple[str, dict[str, str]]:
    """What finetune loads its encoder from, and the MLflow tags saying so: `folder` when it holds an enabled
    pretrain's model of `model_name` (tagged with the hash of its files, what was loaded, and the pretrain run), else
    the base model (no tags)."""
    info = read_json(folder / MARKER) if (folder / MARKER).exists() else {}
    if not info.get("enabled"):
        return model_name, {}
    if info["base_model"] != model_name:
        raise PipelineError(f"{folder}: pre-trained from '{info['base_model']}', but model.name is '{model_name}' "
                            "(run dvc repro pretrain)")
    return str(folder), {"pretrain.sha256": inputs_key(folder, {}), "pretrain.run_id": info.get("run_id") or ""}


def main() -> None:
    params = load_params()
    p, name, max_length = params.pretrain, params.model.name, params.tokenize.max_length
    if not p.enabled:  # torch, transformers and the model stay unloaded: the default job pays ~nothing for this stage
        with atomic_dir(OUT) as tmp:
            write_json(tmp / MARKER, {"enabled": False, "base_model": name})
        write_json(REPORT, {"enabled": False, "base_model": name})
        log.info("pretrain.enabled is false: finetune starts from %s", name)
        return
    tracking.check_server()  # before torchrun, data and model: a tracking server that is down fails in seconds
    from transformers import AutoModelForMaskedLM, set_seed

    from stages.cli import without_log_lines
    from stages.launch import distributed_state, relaunch, tracked
    from stages.loading import Trust, load_tokenizer, load_with_new_head
    from stages.modeling import pick_device
    from stages.trackguard import stage_tags
    from stages.training import NoCallbacks
    from stages.trainrows import MaskedCollator

    if (status := relaunch("stages.pretrain", p.num_processes)) is not None:
        if status:
            raise PipelineError(f"pretrain.num_processes {p.num_processes}: a process exited with status {status}")
        return
    state = distributed_state(pick_device(p.device))
    if p.batch_size % state.num_processes:
        raise PipelineError(f"pretrain.batch_size {p.batch_size}: not divisible by the {state.num_processes} processes")
    source, main = Path(p.source) if p.source else TEXTS / "train.parquet", state.is_main_process
    if p.source and not source.resolve().is_relative_to(SOURCES.resolve()):
        log.warning("pretrain.source %s is outside %s/: dvc repro will not see it change", source, SOURCES)
    trust = Trust.of(params.model)
    tokenizer = load_tokenizer(name, trust)
    if tokenizer.mask_token is None:
        raise PipelineError(f"model.name '{name}': its tokenizer has no mask token; masked-LM pre-training needs one")
    texts = read_texts(source, p.text_column)
    windows = encode(texts, tokenizer, max_length, p.whole_word_mask)
    train_idx, held_idx = split_holdout(len(windows), p.holdout, p.seed)
    set_seed(p.seed)  # before the model: a new MLM head's initial weights come from this seed
    # a base checkpoint without an MLM head "seems corrupted" to transformers (the head's tied bias is absent): it is
    # the new head load_with_new_head names, initialised from the seed
    with without_log_lines("transformers.modeling_utils", "tied weights mapping"):
        model = load_with_new_head(AutoModelForMaskedLM, name, trust)
    log.info("%s: %d texts → %d windows of ≤%d tokens: %d train, %d held out", source, len(texts), len(windows),
             max_length, len(train_idx), len(held_idx))
    masked = MaskedCollator(tokenizer, p.mlm_probability, p.whole_word_mask, p.seed)
    checkpoints = stage_checkpoints("pretrain", source, {"model": name, "max_length": max_length}, p, main)
    logged = {"model": params.model.model_dump(), "tokenize": {"max_length": max_length},
              "pretrain": p.model_dump(mode="json")}  # the params this stage reads (dvc.yaml), no other section's
    run_id = tracking.start_run(params.tracking.experiment, logged, lineage.run_name(name, "pretrain"),
                                stage_tags("pretrain", checkpoints.folder.name)) if main else ""
    with tracked(state, main):  # a raise marks the run FAILED; the process group ends either way
        if main:
            tracking.set_tags({"stage": "pretrain"})
            replaced = tracking.close_dangling(run_id)  # runs a killed pretrain of these inputs left RUNNING
            if not p.source:
                tracking.log_datasets(TEXTS, {"train": "pretraining"}, params.ingest.source)
        # the MLM decoder is tied to the word embeddings: each checkpoint stores it once, and a resume ties it back
        with without_log_lines("accelerate.utils.other", "Removed shared tensor"):
            result = pretrain(model, windows.select(train_idx), windows.select(held_idx), masked, p,
                              tokenizer.pad_token_id, state.device, tracking.EpochLogger() if main else NoCallbacks(),
                              checkpoints)
        if not main:
            return
        summary = {"enabled": True, "base_model": name, "run_id": run_id, "source": str(source), "texts": len(texts),
                   "windows": {"train": len(train_idx), "heldout": len(held_idx)}, "max_length": max_length,
                   "epochs": result.history, **result.summary, "device": str(state.device)}  # val_*: held-out
        with atomic_dir(OUT) as tmp:
            adapted_encoder(model, name, trust).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / MARKER, summary)
        write_json(REPORT, summary)
        if result.summary["resumed_from_step"]:  # from the checkpoint of a killed run: the newest it replaced, if any
            tracking.set_tags({"pretrain.resumed_from_step": str(result.summary["resumed_from_step"])}
                              | ({"pretrain.resumed_from_run": replaced[-1]} if replaced else {}))
        tracking.log_metrics({"best_val_loss": float(result.best_value)})
        tracking.log_artifacts([str(REPORT)], "reports")
    tracking.end_run()
    log.info("epoch %d of %d kept: held-out MLM loss %.4f, perplexity %.2f; run %s", result.best_epoch,
             len(result.history), result.best_value, math.exp(result.best_value), run_id)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "pretrain")
