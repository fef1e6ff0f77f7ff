"""The benchmark runner's arithmetic and report: ratios, the peak that applies, pass/fail, the generated block."""

from __future__ import annotations

import pytest

from bench.common import target
from bench.run import BEGIN, END, summarize, write_report


def test_target_direction():
    assert target("x", 4.0, ">=", 4.0)["pass"] and not target("x", 3.99, ">=", 4.0)["pass"]
    assert target("y", 2.0, "<=", 2.0)["pass"] and not target("y", 2.01, "<=", 2.0)["pass"]


def fake_run(precision: str, ours_sps: float = 150.0, ours_acc: float = 0.85) -> dict:
    ref = lambda sps, acc: {"train": {"seconds": 1.0, "samples_per_s": sps, "real_tokens_per_s": sps * 27.5,  # noqa: E731
                                      "padding_share": 0.5}, "test": {"accuracy": acc}}
    return dict(
        peak={"fp32_peak_gflops": 200.0, "bf16_peak_gflops": 800.0},
        me={"train": {"train_seconds": 1.0, "train_samples_per_s": ours_sps, "train_real_tokens_per_s": ours_sps * 27.5,
                      "padding_share": 0.03, "precision": precision},
            "test": {"accuracy": ours_acc}, "noop_repro_s": [0.7, 2.5, 0.8], "flow_overhead": 0.08},
        ref_a=ref(15.0, 0.848), ref_b=ref(40.0, 0.852), ref_c=ref(120.0, 0.851) | {"precision": precision},
        inference={"targets": [target("inference", 2.2, ">=", 2.0)]}, tok={"targets": []}, flops=65e6)


def by_name(summary: dict) -> dict:
    return {t["name"]: t for t in summary["targets"]}


def test_summary_ratios_and_the_peak_that_applies():
    s = summarize(**fake_run("bf16"))
    t = by_name(s)
    assert t["fine-tuning samples/s vs reference (a)"]["value"] == pytest.approx(10.0)
    assert t["fine-tuning samples/s vs reference (b)"]["value"] == pytest.approx(3.75)
    assert t["test accuracy minus reference (b), points"]["value"] == pytest.approx(-0.2)  # within 0.5: pass
    assert t["test accuracy minus reference (b), points"]["pass"]
    # the headline: against the tuned Trainer (c), 150 / 120 samples/s = 1.25x (the target, met), 0.1 point below
    assert t["fine-tuning samples/s vs reference (c), tuned Trainer"]["value"] == pytest.approx(1.25)
    assert t["fine-tuning samples/s vs reference (c), tuned Trainer"]["pass"]
    assert t["test accuracy minus reference (c), points"]["value"] == pytest.approx(-0.1)
    # 150 x 27.5 tokens/s x 65 MFLOP = 268 GFLOP/s: 34% of the bf16 peak (fails 45%), 134% of fp32
    eff = t["real-token training FLOP/s of the bf16 matmul peak"]
    assert eff["value"] == pytest.approx(0.335, abs=1e-3) and not eff["pass"]
    assert t["no-op dvc repro, median of 3, s"]["value"] == 0.8 and t["inference"]["pass"]
    assert s["finetune"]["this pipeline (default params)"]["of_fp32_peak"] == pytest.approx(1.341, abs=1e-3)


def test_fp32_runs_are_held_to_the_fp32_peak_and_accuracy_can_fail():
    t = by_name(summarize(**fake_run("fp32", ours_sps=70.0, ours_acc=0.84)))
    eff = t["real-token training FLOP/s of the fp32 matmul peak"]
    assert eff["threshold"] == 0.60 and eff["value"] == pytest.approx(0.626, abs=2e-3) and eff["pass"]
    assert not t["test accuracy minus reference (b), points"]["pass"]  # 1.2 points below
    assert t["fine-tuning samples/s vs reference (a)"]["value"] == pytest.approx(4.667, abs=1e-3)
    assert t["fine-tuning samples/s vs reference (b)"]["value"] == pytest.approx(1.75)
    assert not t["fine-tuning samples/s vs reference (c), tuned Trainer"]["pass"]  # 70 / 120


def test_report_block_is_replaced_in_place(tmp_path, monkeypatch):
    import bench.run as run

    monkeypatch.setattr(run, "render", lambda summary: f"{BEGIN}\n{summary['text']}\n{END}")
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    write_report({"text": "first"}, doc)
    assert doc.read_text().count(BEGIN) == 1 and "first" in doc.read_text()
    doc.write_text(doc.read_text() + "\n## NER\nkept\n")
    write_report({"text": "second"}, doc)
    text = doc.read_text()
    assert "second" in text and "first" not in text and text.endswith("## NER\nkept\n") and text.startswith("# Benchmarks")
