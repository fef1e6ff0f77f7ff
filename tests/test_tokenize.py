"""Tokenize: truncation keeps the closing special token, lengths are measured before truncation."""

import numpy as np
import pandas as pd

from stages.params import TokenizeParams
from stages.tokenize import length_stats, special_layout, tokenize


def test_special_layout_of_bert(packaged_tokenizer):
    assert special_layout(packaged_tokenizer) == (1, 1)  # [CLS] text [SEP]


def test_tokenize_truncates_and_reports(packaged_tokenizer):
    long = " ".join(["word"] * 50)
    df = pd.DataFrame({"text": ["short text", long], "label": ["b", "a"]})
    dd, report = tokenize({"train": df, "validation": df, "test": df}, packaged_tokenizer, ["a", "b"], TokenizeParams(max_length=16))
    ids = dd["train"]["input_ids"]
    assert len(ids[0]) == 4 and len(ids[1]) == 16
    assert ids[1][0] == packaged_tokenizer.cls_token_id and ids[1][-1] == packaged_tokenizer.sep_token_id
    assert dd["train"]["label"] == [1, 0] and dd["train"]["n_tokens"] == [4, 52]
    s = report["splits"]["train"]
    assert s["max"] == 52 and s["truncated_share"] == 0.5 and report["max_length"] == 16


def test_length_stats():
    s = length_stats(np.array([10, 20, 30, 200]), 128)
    assert s["p50"] == 25 and s["max"] == 200 and s["truncated_share"] == 0.25 and s["rows"] == 4


def test_saved_bytes_do_not_depend_on_where_the_tokenizer_lives(tmp_path, packaged_tokenizer):
    """dvc.lock must hash the same tokens identically in every checkout (fresh clones, CI, the flow)."""
    import filecmp

    from transformers import AutoTokenizer

    df = pd.DataFrame({"text": ["a gem of a film", "dull"], "label": ["pos", "neg"]})
    saved = []
    for copy in ("a", "b"):
        packaged_tokenizer.save_pretrained(tmp_path / copy)
        tok = AutoTokenizer.from_pretrained(tmp_path / copy)
        dd, _ = tokenize({"train": df, "validation": df, "test": df}, tok, ["neg", "pos"], TokenizeParams())
        dd.save_to_disk(str(tmp_path / f"out-{copy}"))
        saved.append(tmp_path / f"out-{copy}")
    for split in ("train", "validation", "test"):
        for name in ("state.json", "dataset_info.json", "data-00000-of-00001.arrow"):
            assert filecmp.cmp(saved[0] / split / name, saved[1] / split / name, shallow=False), (split, name)
