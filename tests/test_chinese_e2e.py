"""Chinese end to end through `dvc repro`: real ChnSentiCorp reviews and real MSRA NER sentences (slices of
../shared/data/chinese), a tiny random BERT over bert-base-chinese's real vocabulary, every stage, the registry, and
the pyfunc in another process. The English model on Chinese text stops at tokenize with one line, writing nothing."""

from __future__ import annotations

import json
import re
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SHARED_CHINESE, make_project, run_in, store_client, update_params

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not SHARED_CHINESE.exists(),
                                                  reason=f"the Chinese data sets are not on this machine ({SHARED_CHINESE})")]
FAST = {"finetune": {"epochs": 3, "batch_size": 16, "learning_rate": 2e-3, "log_every_steps": 10},
        "evaluate": {"probe_max_train_rows": 300, "min_test_rows": 10, "min_test_per_class": 2}}


def read(root: Path, name: str):
    return json.loads((root / name).read_text())


def msra_slice(path: Path, sentences: int) -> None:
    """The first `sentences` sentences of the MSRA file: one character and its IOB2 tag per line."""
    lines, n = [], 0
    with open(SHARED_CHINESE / "msra_ner.txt", encoding="utf-8") as f:
        for line in f:
            lines.append(line.rstrip("\n"))
            n += not line.strip()
            if n == sentences:
                break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory, tiny_chinese_model_dir):
    root = make_project(tmp_path_factory.mktemp("chnsenticorp"), {
        "ingest": {"source": "data/source/hotel.csv", "text_column": "review", "label_names": ["negative", "positive"]},
        "tokenize": {"max_length": 64}, **FAST,
        "evaluate": FAST["evaluate"] | {"baselines": ["majority", "tfidf"]}, "register": {"model_name": "zh-sentiment"}})
    reviews = pd.read_csv(SHARED_CHINESE / "chnsenticorp_hotel.csv").dropna()
    reviews.sample(400, random_state=0).to_csv(root / "data/source/hotel.csv", index=False)
    # the packaged English model first: most characters are [UNK], tokenize stops and leaves nothing behind
    failed = run_in(root, "dvc", "repro", check=False)
    partial = [name for name in ("data/tokenized", "reports/tokenize.json") if (root / name).exists()]
    run_in(root, "git", "add", "-A")  # what the good run then changes is only the model
    update_params(root, {"model": {"name": str(tiny_chinese_model_dir)}})
    run_in(root, "dvc", "repro")
    return root, failed, partial


def test_the_english_model_stops_at_tokenize_with_one_line(sentiment):
    _, failed, partial = sentiment
    assert failed.returncode != 0
    said = [line for line in (failed.stdout + failed.stderr).splitlines() if "[UNK]" in line]
    assert said and re.match(r"error: tokenize: \d+\.\d% of the (train|validation|test) split's tokens are \[UNK\]",
                             said[0])
    assert "model.name: bert-base-chinese" in said[0] and partial == [], failed.stderr[-2000:]


def test_chinese_sentiment_through_every_stage(sentiment):
    root, *_ = sentiment
    tokenize = read(root, "reports/tokenize.json")
    for split in tokenize["splits"].values():
        c = split["coverage"]
        assert c["unk_share"] < 0.01 and 0.9 < c["tokens_per_char"] < 1.05, c  # one token per Chinese character
    assert tokenize["warnings"] == []
    clean = read(root, "reports/clean.json")
    assert clean["splits"]["train"]["changed"]["unicode_nfkc"] > 0  # full-width punctuation made half-width
    metrics = read(root, "reports/metrics.json")
    assert set(metrics["baselines"]) == {"majority", "tfidf"}
    assert metrics["baselines"]["tfidf"]["accuracy"] > metrics["baselines"]["majority"]["accuracy"]
    assert int(read(root, "reports/register.json")["version"]) >= 1
    assert run_in(root, "dvc", "status").stdout.strip() == "Data and pipelines are up to date."


def test_chinese_sentiment_pyfunc_in_another_process(sentiment):
    root, *_ = sentiment
    code = """
import json, mlflow
mlflow.set_tracking_uri('sqlite:///mlflow.db')
m = mlflow.pyfunc.load_model('models:/zh-sentiment@champion')
print(m.predict(['房间很干净，服务也很好。', '早餐太差，Wi-Fi很慢！']).to_json(orient='records', force_ascii=False))
"""
    rows = json.loads(run_in(root, "python", "-c", code).stdout.strip().splitlines()[-1])
    assert [set(r) for r in rows] == [{"label", "score", "truncated", "prob_negative", "prob_positive"}] * 2
    assert all(r["label"] in ("negative", "positive") and not r["truncated"] for r in rows)
    assert all(abs(r["prob_negative"] + r["prob_positive"] - 1) < 1e-5 for r in rows)


@pytest.fixture(scope="module")
def ner(tmp_path_factory, tiny_chinese_model_dir):
    root = make_project(tmp_path_factory.mktemp("msra"), {
        "task": "token_classification", "model": {"name": str(tiny_chinese_model_dir)},
        "ingest": {"source": "data/source/msra.txt"}, "tokenize": {"max_length": 64}, **FAST,
        "finetune": FAST["finetune"] | {"epochs": 8, "learning_rate": 5e-3}, "register": {"model_name": "zh-ner"}})
    msra_slice(root / "data/source/msra.txt", 2000)  # ~150 test entities; 500 sentences teach a tiny model nothing
    run_in(root, "dvc", "repro")
    return root


def test_msra_through_every_stage_splits_serving_by_characters(ner):
    tokenize = read(ner, "reports/tokenize.json")
    assert tokenize["word_split"]["rule"] == "chars" and tokenize["word_split"]["chosen_by"] == "inferred from train"
    assert all(s["coverage"]["unk_share"] < 0.01 for s in tokenize["splits"].values())
    assert sum(s["windowed_sentences"] for s in tokenize["splits"].values()) >= 1  # sentences over 64 characters
    assert read(ner, "models/finetuned/pipeline.json")["word_split"] == "chars"
    metrics = read(ner, "reports/metrics.json")
    assert set(metrics["per_class"]) == {"LOC", "ORG", "PER"} and metrics["test"]["f1"] > 0.05  # majority: 0
    run = store_client(ner).get_run(read(ner, "reports/mlflow_run.json")["run_id"])
    assert run.data.tags["serving.word_split"] == "chars" and float(run.data.tags["tokenize.unk_share.train"]) < 0.01


def test_msra_pyfunc_spans_on_mixed_text(ner):
    texts = ["中国和美国的代表在北京举行会谈。", "新华社北京电，Google公司在上海的2008年报告。", ""]
    code = f"""
import json, mlflow
mlflow.set_tracking_uri('sqlite:///mlflow.db')
m = mlflow.pyfunc.load_model('models:/zh-ner@champion')
print(json.dumps(m.predict({texts!r}), ensure_ascii=False))
"""
    out = json.loads(run_in(ner, "python", "-c", code).stdout.strip().splitlines()[-1])
    assert len(out) == 3 and out[2] == []
    spans = [(i, e) for i, found in enumerate(out) for e in found]
    # MSRA's most frequent places are learnt even by a tiny model, whole (two characters, offsets as in the text)
    assert {e["text"] for _, e in spans if e["type"] == "LOC"} & {"中国", "北京", "美国", "上海"}, out
    for i, e in spans:  # character offsets into the original string, on character boundaries (rule: chars)
        assert e["text"] == texts[i][e["start"]:e["end"]] and e["type"] in {"LOC", "ORG", "PER"} and 0 < e["score"] <= 1
    for found in out:
        ends = [(e["start"], e["end"]) for e in found]
        assert all(a[1] <= b[0] for a, b in pairwise(ends))  # in order, never overlapping
