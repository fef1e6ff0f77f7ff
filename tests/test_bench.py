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


# ---------------------------------------------------------------- bench.predict_stream (issue 12, batch scoring)


def test_predict_stream_watchdog_stops_a_child_over_its_cap(tmp_path):
    import sys

    from bench.predict_stream import run_watched

    hold = "import time; b = b'x' * ({mb} << 20); time.sleep({s})"  # b'x' * n writes every page: resident
    m = run_watched([sys.executable, "-c", hold.format(mb=300, s=20)], tmp_path, {}, tmp_path / "log", cap_mb=150)
    assert m["stopped_over_cap"] and m["wall_s"] < 15
    m = run_watched([sys.executable, "-c", hold.format(mb=200, s=0.5)], tmp_path, {}, tmp_path / "log", cap_mb=1e9)
    assert not m["stopped_over_cap"] and m["rc"] == 0
    assert m["peak_rss_mb"] >= 200 and m["vm_hwm_sampled_mb"] >= 200 and m["other_cpu_s"] >= 0


def fake_score(variant: str, rows: int, rss: float, chunk_rows: int | None = 10_000, **kw) -> dict:
    return {
        "rows": rows,
        "format": "csv",
        "model": "bench-tiny-bert",
        "variant": variant,
        "chunk_rows": chunk_rows,
        "wall_s": rows / 1000,
        "rows_per_s": 1000.0,
        "peak_rss_mb": rss,
        "other_cpu_s": 0.0,
        "stopped_over_cap": False,
    } | kw


def test_predict_stream_targets_and_table():
    from bench.predict_stream import build_targets, markdown

    runs = [
        fake_score("ours", 10_000, 600.0),
        fake_score("ours", 1_000_000, 720.0, other_cpu_s=900.0),
        fake_score("reference_batched", 1_000_000, 1500.0),
        fake_score("reference_one_call", 1_000_000, 8200.0, chunk_rows=None, stopped_over_cap=True),
        fake_score("ours", 1_000_000, 650.0, chunk_rows=1000),
    ]
    checks = {"outputs": [{"ok": True}], "compare": {"rows": 10_000, "ok": True}}
    t = {x["name"].split(" from ")[0].split(" at ")[0]: x for x in build_targets(runs, checks, "bench-tiny-bert")}
    ratio, growth = t["flows.predict peak RSS"], t["flows.predict peak RSS growth"]
    assert ratio["value"] == pytest.approx(1.2) and not ratio["pass"]  # 720 / 600 > 1.15: not bounded enough
    assert growth["value"] == pytest.approx(120.0) and growth["pass"]  # the chunk sweep's run is not the 1M point
    files = [{"rows": 10_000, "format": "csv", "mb": 1.2}, {"rows": 1_000_000, "format": "csv", "mb": 125.0}]
    table = "\n".join(markdown(runs, files))
    assert "| 1,000,000 | csv, 125.0 MB | tiny BERT (2x32) | 1,000.0 s*, 1,000 rows/s, **720 MiB** |" in table
    assert "stopped at 8,200 MiB" in table and "| 1,000,000 | csv | tiny BERT | 1,000 |" in table


def test_predict_stream_quick_run(tmp_path):
    """The benchmark end to end on one 300-row CSV (~25 s): ours and the whole-file reference score it in their own
    processes, and agree. A subprocess: a child spawned from this (large) process would count its RSS as its own."""
    import json
    import subprocess
    import sys

    out = tmp_path / "predict_stream.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.predict_stream",
        "--quick",
        "--sizes",
        "300",
        "--workdir",
        str(tmp_path),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {r["variant"] for r in res["runs"]} == {"ours", "reference_batched"}
    for r in res["runs"]:
        assert r["rc"] == 0 and not r["stopped_over_cap"] and r["rows"] == 300
        assert 100 < r["peak_rss_mb"] < 8192 and r["vm_hwm_sampled_mb"] <= r["peak_rss_mb"] + 1
    assert res["checks"]["compare"]["ok"] and all(o["ok"] for o in res["checks"]["outputs"])
    assert all(t["pass"] for t in res["targets"]) and "| 300 | csv" in res["markdown"][2]
    assert list(tmp_path.glob("bench-predict-*")) == []  # the temp files are gone
