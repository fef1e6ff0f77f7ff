"""Tokenize: truncation keeps the closing special token, lengths are measured before truncation."""

import numpy as np
import pandas as pd

from stages.params import TokenizeParams
from stages.texttok import length_stats, special_layout, tokenize


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


def test_fingerprint_depends_on_the_rows_not_on_their_chunks(packaged_tokenizer):
    from stages.texttok import Fingerprint

    df = pd.DataFrame({"text": [f"text {i}" for i in range(10)], "label": ["a", "b"] * 5})
    whole = Fingerprint(packaged_tokenizer, "s").add(df).value()
    assert Fingerprint(packaged_tokenizer, "s").add(df[:3]).add(df[3:3]).add(df[3:]).value() == whole
    assert Fingerprint(packaged_tokenizer, "t").add(df).value() != whole
    assert Fingerprint(packaged_tokenizer, "s").add(df[::-1]).value() != whole


# --- the stage: streams chunks into memory-mapped Arrow files, and must save what the in-memory core saves --------

def reviews(n: int, seed: int) -> pd.DataFrame:
    import random

    rng = random.Random(seed)
    words = "a gem of a film dull plot superb acting the story moves slowly".split()
    return pd.DataFrame({"text": [" ".join(rng.choices(words, k=rng.randint(1, 30))) for _ in range(n)],
                         "label": [rng.choice(["neg", "pos"]) for _ in range(n)]})


def stage_project(root, monkeypatch, **tokenize):
    import yaml

    from stages.io import write_splits

    monkeypatch.chdir(root)
    (root / "params.yaml").write_text(yaml.safe_dump({"tokenize": tokenize}))
    splits = {"train": reviews(40, 0), "validation": reviews(9, 1), "test": reviews(3, 2)}
    write_splits({k: v.assign(augmented=False) if k == "train" else v for k, v in splits.items()},
                 root / "data/augmented", ["neg", "pos"])
    return splits


def saved_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_stage_streams_to_what_the_core_saves(tmp_path, monkeypatch, packaged_tokenizer):
    import json

    import datasets

    from stages import io
    from stages import tokenize as stage

    splits = stage_project(tmp_path, monkeypatch, max_length=16, batch_size=5)
    p = TokenizeParams(max_length=16, batch_size=5)
    want, want_report = tokenize(splits, packaged_tokenizer, ["neg", "pos"], p)
    want.save_to_disk(str(tmp_path / "core"))
    for rows in (7, 3):  # chunks that cut across tokenizer batches of 5, two ways: the same bytes
        monkeypatch.setattr(io, "CHUNK_ROWS", rows)
        stage.main()
        files = saved_files(tmp_path / "data/tokenized")
        assert set(files) - set(saved_files(tmp_path / "core")) == {"labels.json", "settings.json"}  # no scratch left
        assert all(files[name] == data for name, data in saved_files(tmp_path / "core").items())
        assert json.loads((tmp_path / "reports/tokenize.json").read_text()) == want_report | {"warnings": []}
    dd = datasets.load_from_disk(str(tmp_path / "data/tokenized"))
    assert dd["train"].features == want["train"].features and dd["train"]["n_tokens"] == want["train"]["n_tokens"]
    assert want_report["splits"]["train"]["truncated_share"] > 0 and dd["test"]["label"] == want["test"]["label"]


def test_a_failing_stage_leaves_no_output(tmp_path, monkeypatch):
    from stages import io, texttok
    from stages import tokenize as stage

    stage_project(tmp_path, monkeypatch)
    monkeypatch.setattr(io, "CHUNK_ROWS", 7)
    calls = []

    def fail_on_validation(lengths, max_length):  # train is tokenized and written to its scratch file by then
        calls.append(len(lengths))
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return length_stats(lengths, max_length)

    monkeypatch.setattr(texttok, "length_stats", fail_on_validation)
    try:
        stage.main()
    except RuntimeError:
        pass
    assert calls == [40, 9] and sorted(p.name for p in (tmp_path / "data").iterdir()) == ["augmented"]
    assert not (tmp_path / "reports").exists()
