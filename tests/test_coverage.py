"""Vocabulary coverage (stages.coverage) on English, Chinese and mixed text, its thresholds, and the tokenize stage
stopping before it writes anything when the model's vocabulary cannot represent the data."""

from __future__ import annotations

import pandas as pd
import pytest

from stages.coverage import Coverage, check_coverage
from stages.io import PipelineError
from stages.params import TokenizeParams, load_params

ENGLISH = ["A superb, moving film.", "The plot was dull and the acting weak!"]
CHINESE = ["酒店的服务很好，房间也很干净。", "早餐太差了，不会再来。", "位置不错，交通方便，价格实惠。"]
MIXED = ["我们住在Hilton酒店，很好。", "The hotel 房间 was clean."]


def coverage_of(tokenizer, texts: list[str]) -> dict:
    cov = Coverage(tokenizer)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    cov.add(texts, ids)
    return cov.report()


def test_english_text_is_covered_by_the_english_model(packaged_tokenizer):
    c = coverage_of(packaged_tokenizer, ENGLISH)
    assert c["unk_tokens"] == 0 and c["unk_share"] == 0 and c["unknown_char_share"] == 0 and c["top_unknown_chars"] == []
    assert c["chars"] == sum(len(t.replace(" ", "")) for t in ENGLISH)  # spaces are not counted
    assert 0.1 < c["tokens_per_char"] < 0.5  # English words are one or two tokens of several characters


def test_chinese_text_through_the_english_model_is_mostly_unknown(packaged_tokenizer):
    c = coverage_of(packaged_tokenizer, CHINESE)
    assert c["unk_share"] > 0.3 and c["unknown_char_share"] > 0.3
    top = dict(c["top_unknown_chars"])
    assert top and all("\u4e00" <= ch <= "\u9fff" for ch in top)
    assert sorted(top.values(), reverse=True) == list(top.values())  # most frequent first
    # the reported counts are the characters' real counts in the texts
    assert all(n == sum(t.count(ch) for t in CHINESE) for ch, n in top.items())


def test_chinese_text_through_the_real_chinese_vocabulary(chinese_tokenizer):
    c = coverage_of(chinese_tokenizer, CHINESE)
    assert c["unk_share"] == 0 and c["unknown_char_share"] == 0
    assert c["tokens_per_char"] == pytest.approx(1.0)  # one token per Chinese character


def test_mixed_text_counts_only_what_is_missing(packaged_tokenizer, chinese_tokenizer):
    english, chinese = coverage_of(packaged_tokenizer, MIXED), coverage_of(chinese_tokenizer, MIXED)
    assert 0 < english["unknown_char_share"] < 1 and chinese["unk_share"] == 0
    assert {ch for ch, _ in english["top_unknown_chars"]} <= set("".join(MIXED))


def test_an_emoji_in_english_text_is_listed(packaged_tokenizer):
    c = coverage_of(packaged_tokenizer, ["great film 🤩 really 🤩"])
    assert c["top_unknown_chars"] == [["🤩", 2]] and c["unk_tokens"] == 2


def splits_with(shares: dict[str, float], chars: str = "店好") -> dict:
    return {name: {"coverage": {"unk_share": s, "unknown_char_share": s,
                                "top_unknown_chars": [[ch, 10] for ch in chars]}} for name, s in shares.items()}


def test_thresholds_warn_then_stop():
    p = TokenizeParams(warn_unk_share=0.01, max_unk_share=0.1)
    assert check_coverage(splits_with({"train": 0.0, "validation": 0.005, "test": 0.0}), p, "m") == []
    warned = check_coverage(splits_with({"train": 0.05, "validation": 0.0, "test": 0.02}), p, "m")
    assert len(warned) == 2 and warned[0].startswith("5.0% of the train split's tokens are [UNK]")
    with pytest.raises(PipelineError) as e:
        check_coverage(splits_with({"train": 0.05, "validation": 0.0, "test": 0.646}), p, "packaged:all-MiniLM-L6-v2")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("64.6% of the test split's tokens are [UNK]")
    assert "most frequent: 店 好" in msg and "model.name: bert-base-chinese" in msg and "max_unk_share (now 0.1)" in msg
    with pytest.raises(PipelineError, match="multilingual"):  # not Chinese: no Chinese model suggested
        check_coverage(splits_with({"train": 0.5}, chars="éü"), p, "m")
    # raised on purpose: the same data only warns
    assert check_coverage(splits_with({"train": 0.646}), TokenizeParams(max_unk_share=1.0), "m")


def test_warn_above_stop_is_a_params_error(tmp_path):
    (tmp_path / "params.yaml").write_text("tokenize:\n  warn_unk_share: 0.5\n  max_unk_share: 0.1\n")
    with pytest.raises(PipelineError, match="tokenize: .*warn_unk_share is above max_unk_share"):
        load_params(tmp_path / "params.yaml")


def test_the_stage_stops_on_chinese_with_the_english_model_and_writes_nothing(tmp_path, monkeypatch):
    import yaml

    from stages import tokenize as stage
    from stages.io import write_splits

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tokenize": {"max_length": 32}}))
    frame = pd.DataFrame({"text": CHINESE * 3, "label": ["pos", "neg", "pos"] * 3})
    write_splits({"train": frame.assign(augmented=False), "validation": frame, "test": frame}, tmp_path / "data/augmented",
                 ["neg", "pos"])
    with pytest.raises(PipelineError, match=r"^\d+\.\d% of the train split's tokens are \[UNK\]"):
        stage.main()
    assert not (tmp_path / "data/tokenized").exists() and not (tmp_path / "reports/tokenize.json").exists()
    # raised on purpose, it tokenizes, warns and says so in the report and the settings finetune reads
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tokenize": {"max_length": 32, "max_unk_share": 1.0}}))
    stage.main()
    import json

    report = json.loads((tmp_path / "reports/tokenize.json").read_text())
    settings = json.loads((tmp_path / "data/tokenized/settings.json").read_text())
    assert len(report["warnings"]) == 3 and settings["warnings"] == report["warnings"]
    assert settings["unk_share"]["train"] == report["splits"]["train"]["coverage"]["unk_share"] > 0.3
