"""NER sentences: CoNLL/JSONL/Parquet/HF reading, IOB2 checks and repair, stable splits, token-preserving clean."""

import json
import sys
import unicodedata

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.io import PipelineError
from stages.params import CleanParams, IngestParams
from stages.sentence_clean import clean_sentences, clean_tokens
from stages.sentences import ingest_sentences, read_conll, read_sentences
from tests.conftest import make_project, run_in

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-ORG
rejects VBZ O
German JJ B-MISC
call NN O

Peter NNP B-PER
Blackburn NNP I-PER

BRUSSELS NNP B-LOC
1996-08-22 CD O"""  # no blank line at the end: the last sentence still counts


def sentences(n: int, start: int = 0) -> list[dict]:
    """`n` distinct sentences with PER and LOC entities."""
    out = []
    for i in range(start, start + n):
        out.append({"tokens": [f"Name{i}", "Surname", "visited", f"Town{i}", "."],
                    "tags": ["B-PER", "I-PER", "O", "B-LOC", "O"]})
    return out


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"tokens": [r["tokens"] for r in rows], "tags": [r["tags"] for r in rows]})


def write_conll(path, rows: list[dict]) -> None:
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in zip(r["tokens"], r["tags"])) for r in rows) + "\n")


def write_jsonl(path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# --- reading ---------------------------------------------------------------------------------------------

def test_conll_docstart_trailing_sentence_and_line_numbers(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL)
    df = read_conll(path)
    assert df["tokens"].tolist() == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["BRUSSELS", "1996-08-22"]]
    assert df["tags"].tolist() == [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"], ["B-LOC", "O"]]
    assert [at[2] for at in df["_at"]] == [3, 8, 11]  # each sentence's first line


def test_conll_tag_column_choice(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("Paris B-LOC x\nis O x\n\nBob B-PER x\n")
    assert read_conll(path, tag_column=1)["tags"].tolist() == [["B-LOC", "O"], ["B-PER"]]
    with pytest.raises(PipelineError, match=r"data.txt: line 1, column 3: tag 'x' is not IOB"):
        read_conll(path)  # -1: the last column
    with pytest.raises(PipelineError, match="0 is the word's column"):
        read_conll(path, tag_column=0)


def test_conll_short_line_names_line_and_column(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("Paris B-LOC\nis O\n\nlonely\n")
    with pytest.raises(PipelineError, match=r"bad.conll: line 4, column 2: missing; a token line needs 2"):
        read_conll(path)
    path.write_text("Paris X B-LOC\nis O\n")
    with pytest.raises(PipelineError, match=r"bad.conll: line 2, column 3: missing"):
        read_conll(path, tag_column=2)


def test_conll_bad_tag_and_bad_bytes(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("Paris B-LOC\n\nBob S-PER\n")
    with pytest.raises(PipelineError, match=r"bad.conll: line 3, column 2: tag 'S-PER' is not IOB/IOB2"):
        read_conll(path)
    path.write_bytes(b"Paris B-LOC\ncaf\xe9 O\n")
    with pytest.raises(PipelineError, match=r"bad.conll: line 2, byte column 4: cannot decode byte 0xe9"):
        read_conll(path)
    path.write_text("\n\n")
    with pytest.raises(PipelineError, match="no sentences"):
        read_conll(path)


@pytest.mark.parametrize("suffix", [".conll", ".txt", ".iob", ".bio", ""])
def test_auto_format_reads_conll_for_other_suffixes(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    write_conll(path, sentences(3))
    frames = read_sentences(IngestParams(source=str(path)))
    assert list(frames) == ["all"] and len(frames["all"]) == 3


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_with_custom_columns(tmp_path, fmt):
    rows = [{"words": r["tokens"], "ner": r["tags"]} for r in sentences(4)]
    path = tmp_path / f"data.{fmt}"
    write_jsonl(path, rows) if fmt == "jsonl" else pd.DataFrame(rows).to_parquet(path)
    frames = read_sentences(IngestParams(source=str(path), tokens_column="words", tags_column="ner"))
    assert frames["all"]["tokens"].tolist() == [r["words"] for r in rows]
    assert frames["all"]["tags"].tolist() == [r["ner"] for r in rows]


def test_table_errors_name_row_and_column(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [*sentences(2), {"tokens": ["a", "b"], "tags": ["O"]}])
    with pytest.raises(PipelineError, match=r"data.jsonl: row 3: 2 tokens \(column 'tokens'\) but 1 tags \(column 'tags'\)"):
        read_sentences(IngestParams(source=str(path)))
    write_jsonl(path, [{"tokens": "a b", "tags": ["O", "O"]}])
    with pytest.raises(PipelineError, match=r"data.jsonl: row 1, column 'tokens': expected a list of strings, got str"):
        read_sentences(IngestParams(source=str(path)))
    write_jsonl(path, [{"tokens": ["a"], "tags": ["S-PER"]}])
    frames = read_sentences(IngestParams(source=str(path)))
    with pytest.raises(PipelineError, match=r"data.jsonl: row 1, column 'tags', item 1: tag 'S-PER' is not IOB"):
        ingest_sentences(frames, IngestParams())
    with pytest.raises(PipelineError, match=r"no column 'words' \(ingest.tokens_column\); columns present: tokens, tags"):
        read_sentences(IngestParams(source=str(path), tokens_column="words"))


def test_integer_tags_need_names(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [{"tokens": ["Bob", "ran"], "tags": [1, 0]}, {"tokens": ["Ann", "Lee"], "tags": [1, 2]}])
    names = ["O", "B-PER", "I-PER"]
    frames = read_sentences(IngestParams(source=str(path), label_names=names))
    assert frames["all"]["tags"].tolist() == [["B-PER", "O"], ["B-PER", "I-PER"]]
    with pytest.raises(PipelineError, match=r"row 1, column 'tags', item 1: expected a string, got int 1; "
                                            r"integer tags need ingest.label_names"):
        read_sentences(IngestParams(source=str(path)))
    with pytest.raises(PipelineError, match=r"row 2, column 'tags', item 2: tag 2 outside 0..1"):
        read_sentences(IngestParams(source=str(path), label_names=["O", "B-PER"]))


def test_hf_folder_with_sequence_classlabel_tags(tmp_path):
    import datasets

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    for split, (start, n) in (("train", (0, 40)), ("test", (40, 10))):
        rows = sentences(n, start)
        data = {"tokens": [r["tokens"] for r in rows], "ner_tags": [[names.index(t) for t in r["tags"]] for r in rows]}
        datasets.Dataset.from_dict(data, features=features).to_parquet(str(tmp_path / f"{split}.parquet"))
    p = IngestParams(source=f"hf:{tmp_path}", tags_column="ner_tags")
    frames = read_sentences(p)
    assert set(frames) == {"train", "test"} and frames["train"]["tags"].iloc[0] == sentences(1)[0]["tags"]
    splits, labels, summary = ingest_sentences(frames, p)
    assert labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert len(splits["test"]) == 10 and len(splits["validation"]) + len(splits["train"]) == 40  # validation: carved
    assert 0 < len(splits["validation"]) < 12  # out of train by each sentence's seeded hash, ~10%
    assert summary["test"]["entities"] == {"LOC": 10, "PER": 10}


def test_demo_source_is_for_texts():
    with pytest.raises(PipelineError, match="token_classification reads a CoNLL, JSONL or Parquet file"):
        read_sentences(IngestParams())
    with pytest.raises(PipelineError, match="ingest.format 'csv' is for texts"):
        read_sentences(IngestParams(source="x.csv", format="csv"))


# --- IOB, types and splits --------------------------------------------------------------------------------

def test_iob_repair_counts_and_reject_names_the_line(tmp_path):
    path = tmp_path / "iob1.conll"
    rows = sentences(30)
    rows[3] = {"tokens": ["Bob", "met", "Ann", "Lee", "in", "Rome"], "tags": ["I-PER", "O", "I-PER", "I-PER", "O", "I-LOC"]}
    rows[7] = {"tokens": ["New", "York", "Bob"], "tags": ["B-LOC", "I-LOC", "I-PER"]}  # I-PER after I-LOC
    write_conll(path, rows)
    p = IngestParams(source=str(path))
    splits, _, summary = ingest_sentences(read_sentences(p), p)
    every = [t for s in splits.values() for t in s["tags"]]
    assert ["B-PER", "O", "B-PER", "I-PER", "O", "B-LOC"] in every and ["B-LOC", "I-LOC", "B-PER"] in every
    repairs = [v["iob_repairs"] for v in summary.values()]
    assert sum(r["tags"] for r in repairs) == 4 and sum(r["sentences"] for r in repairs) == 2
    line = 3 * 6 + 1  # sentences 0-2 take 5 lines and a blank each: sentence 3 starts on line 19
    with pytest.raises(PipelineError, match=rf"iob1.conll: line {line}: tag 'I-PER' after 'the sentence start' is not IOB2"):
        ingest_sentences(read_sentences(p), p.model_copy(update={"iob_repair": "reject"}))


def test_type_in_test_not_in_train_is_an_error(tmp_path):
    write_conll(tmp_path / "train.conll", sentences(20))
    write_conll(tmp_path / "test.conll", [*sentences(3, 100), {"tokens": ["Acme", "Inc"], "tags": ["B-ORG", "I-ORG"]}])
    p = IngestParams(source=str(tmp_path / "train.conll"), test_file=str(tmp_path / "test.conll"))
    with pytest.raises(PipelineError, match=r"test split \(.*test.conll: line 19\): entity type 'ORG' never occurs in train"):
        ingest_sentences(read_sentences(p), p)


def test_train_without_entities_is_an_error():
    rows = [{"tokens": [f"w{i}", "x"], "tags": ["O", "O"]} for i in range(30)]
    with pytest.raises(PipelineError, match="train split has no entities"):
        ingest_sentences({"all": frame(rows)}, IngestParams())


def test_split_sizes_disjoint_and_stable_when_sentences_are_added():
    p = IngestParams()
    splits, labels, summary = ingest_sentences({"all": frame(sentences(1000))}, p)
    sizes = {k: len(v) for k, v in splits.items()}  # each sentence's own seeded hash: ~80/10/10, not exact
    assert sum(sizes.values()) == 1000 and abs(sizes["train"] - 800) < 40 and abs(sizes["test"] - 100) < 30
    keys = [{" ".join(t) for t in df["tokens"]} for df in splits.values()]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert list(splits["train"].columns) == ["tokens", "tags"] and isinstance(splits["train"]["tokens"][0], list)
    n = sizes["train"]
    assert summary["train"] == {"sentences": n, "tokens": 5 * n, "entities": {"LOC": n, "PER": n},
                                "iob_repairs": {"tags": 0, "sentences": 0}}
    grown, _, _ = ingest_sentences({"all": frame(sentences(50, 5000) + sentences(1000))}, p)
    a, b = ({" ".join(t) for t in s["test"]["tokens"]} for s in (splits, grown))
    assert a <= b  # added sentences move no old test sentence out of test
    other, _, _ = ingest_sentences({"all": frame(sentences(1000))}, IngestParams(split_seed=7))
    assert {" ".join(t) for t in other["test"]["tokens"]} != a


def test_given_files_and_max_rows(tmp_path):
    for name, (start, n) in {"train": (0, 50), "val": (100, 10), "test": (200, 10)}.items():
        write_conll(tmp_path / f"{name}.conll", sentences(n, start))
    p = IngestParams(source=str(tmp_path / "train.conll"), validation_file=str(tmp_path / "val.conll"),
                     test_file=str(tmp_path / "test.conll"))
    splits, _, _ = ingest_sentences(read_sentences(p), p)
    assert {k: len(v) for k, v in splits.items()} == {"train": 50, "validation": 10, "test": 10}
    p2 = p.model_copy(update={"validation_file": None})  # validation carved out of train
    splits, _, _ = ingest_sentences(read_sentences(p2), p2)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes["train"] + sizes["validation"] == 50 and 0 < sizes["validation"] < 12 and sizes["test"] == 10
    p3 = p2.model_copy(update={"max_rows": 20})  # only train is subsampled
    splits, _, _ = ingest_sentences(read_sentences(p3), p3)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes["train"] + sizes["validation"] == 20 and sizes["test"] == 10


# --- clean ------------------------------------------------------------------------------------------------

def raw(train, validation=None, test=None):
    return {"train": frame(train), "validation": frame(validation or sentences(1, 900)),
            "test": frame(test or sentences(1, 901))}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=8))
def test_clean_tokens_never_changes_the_token_count(tokens):
    out = clean_tokens(tokens)
    assert len(out) == len(tokens)
    for before, after in zip(tokens, out):
        assert after == before or (after and not any(c.isspace() for c in after))
        assert after == before or after == "".join(unicodedata.normalize("NFKC", before).split())


def test_clean_normalises_tokens_and_counts_changes():
    data = raw([{"tokens": ["ﬁne", "\u00a0", "Ｔｏｋｙｏ"], "tags": ["O", "O", "B-LOC"]}, *sentences(3)])
    out, report = clean_sentences(data, CleanParams())
    assert out["train"]["tokens"][0] == ["fine", "\u00a0", "Tokyo"]  # NBSP would vanish: kept
    assert report["splits"]["train"]["changed"] == {"unicode_nfkc": 1, "unicode_nfkc_tokens": 2}
    out, report = clean_sentences(data, CleanParams(normalize_unicode=False))
    assert out["train"]["tokens"][0] == ["ﬁne", "\u00a0", "Ｔｏｋｙｏ"] and report["splits"]["train"]["changed"] == {}


def test_every_drop_is_counted():
    s = sentences(10)
    odd = {"tokens": s[4]["tokens"], "tags": ["O"] * 5}  # same tokens as s[4], other tags
    data = raw(train=[s[0], s[0], s[1], {"tokens": [], "tags": []}, s[4], odd, s[5]],
               validation=[s[1], s[6], s[7]], test=[s[0], s[7], s[8]])
    out, report = clean_sentences(data, CleanParams())
    d = report["splits"]
    assert d["train"]["dropped"] == {"empty": 1, "conflicting_tags": 2, "duplicate": 1}
    assert d["test"]["dropped"]["leakage"] == 1 and d["test"]["leakage"] == 1  # s[0] is in train
    assert d["validation"]["dropped"]["leakage"] == 2  # s[1] in train, s[7] in test
    assert out["train"]["tokens"].tolist() == [s[0]["tokens"], s[1]["tokens"], s[5]["tokens"]]
    for r in d.values():
        assert r["rows_in"] == r["rows_out"] + sum(r["dropped"].values())
    t = report["total"]
    assert t["dropped"] == {"empty": 1, "conflicting_tags": 2, "duplicate": 1, "leakage": 3} and t["leakage"] == 3
    assert t["rows_in"] == 13 == t["rows_out"] + sum(t["dropped"].values())
    assert report["examples"]["leakage"][0] == " ".join(s[0]["tokens"])


def test_leakage_counted_but_kept_without_drop_leakage():
    s = sentences(5)
    out, report = clean_sentences(raw(train=s[:3], validation=[s[1], s[4]], test=[s[0], s[3]]), CleanParams(drop_leakage=False))
    d = report["splits"]
    assert d["test"]["leakage"] == 1 and d["validation"]["leakage"] == 1 and report["total"]["leakage"] == 2
    assert "leakage" not in d["test"]["dropped"] and len(out["test"]) == 2


def test_clean_errors_empty_split_and_types():
    with pytest.raises(PipelineError, match=r"test.parquet: empty after cleaning \(1 sentences in"):
        clean_sentences(raw(sentences(3), test=[{"tokens": [], "tags": []}]), CleanParams())
    loc = [{"tokens": ["in", city], "tags": ["O", "B-LOC"]} for city in ("Rome", "Oslo")]
    bob = [{"tokens": ["Bob"], "tags": ["B-PER"]}, {"tokens": ["Bob"], "tags": ["O"]}]  # conflicting: both go
    with pytest.raises(PipelineError, match="test split, row 1: entity type 'PER' never occurs in train after cleaning"):
        clean_sentences(raw([loc[0], *bob], validation=loc[1:], test=sentences(1)), CleanParams())


# --- the stage mains --------------------------------------------------------------------------------------

def test_ingest_and_clean_mains_on_conll(tmp_path):
    rows = sentences(60)
    rows[5] = {"tokens": ["Bob", "Lee", "\uff21"], "tags": ["I-PER", "I-PER", "O"]}  # IOB1, and a full-width A
    project = make_project(tmp_path, {"task": "token_classification",
                                      "ingest": {"source": "data/source/ner.conll"}})
    (project / "data/source").mkdir(parents=True, exist_ok=True)
    write_conll(project / "data/source/ner.conll", rows + rows[:2])  # two duplicates for clean
    run_in(project, sys.executable, "-m", "stages.ingest")
    run_in(project, sys.executable, "-m", "stages.clean")
    summary = json.loads((project / "data/raw/summary.json").read_text())
    assert sum(v["sentences"] for v in summary.values()) == 62
    assert sum(v["iob_repairs"]["tags"] for v in summary.values()) == 1
    for folder in ("data/raw", "data/clean"):
        assert json.loads((project / folder / "labels.json").read_text())["names"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    train = pd.read_parquet(project / "data/clean/train.parquet")
    assert list(train.columns) == ["tokens", "tags"]
    assert all(len(a) == len(b) for a, b in zip(train["tokens"], train["tags"]))
    report = json.loads((project / "reports/clean.json").read_text())
    assert report["total"]["rows_in"] == 62 and report["total"]["dropped"]["duplicate"] == 2
    bad = yaml.safe_load((project / "params.yaml").read_text())
    bad["ingest"]["iob_repair"] = "reject"
    (project / "params.yaml").write_text(yaml.safe_dump(bad))
    proc = run_in(project, sys.executable, "-m", "stages.ingest", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ingest: data/source/ner.conll: line 31: tag 'I-PER'")
