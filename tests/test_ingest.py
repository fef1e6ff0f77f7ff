"""Ingest: every format, column and label handling, stable stratified splits, one-line errors."""

import json

import pandas as pd
import pytest

from stages.splits import stratified_split
from stages.tasks.sequence import ingest, read_source, select_columns
from stages.io import PipelineError
from stages.params import IngestParams
from stages.readers import read_demo, read_table


def frame(n=100, labels=("neg", "pos")):
    return pd.DataFrame({"text": [f"text number {i}" for i in range(n)], "label": [labels[i % len(labels)] for i in range(n)]})


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_reads_each_format(tmp_path, fmt):
    df = frame(10)
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")) + "\n")
    else:
        df.to_parquet(path)
    out = read_table(path, "auto", "utf-8")
    assert out["text"].tolist() == df["text"].tolist()
    assert out["label"].astype(str).tolist() == df["label"].tolist()


def test_custom_columns_and_encoding(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes("review,stars\ncafé crème,good\nnaïve plot,bad\n".encode("latin-1"))
    p = IngestParams(source=str(path), text_column="review", label_column="stars", encoding="latin-1")
    frames, _ = read_source(p)
    assert frames["all"]["text"].tolist() == ["café crème", "naïve plot"]


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match=r"nope.csv: file not found"):
        read_table(tmp_path / "nope.csv", "auto", "utf-8")


def test_unknown_column_lists_those_present(tmp_path):
    with pytest.raises(PipelineError, match=r"data.csv: no column 'review' \(ingest.text_column\); columns present: text, label"):
        select_columns(frame(3), IngestParams(text_column="review"), "data.csv")


def test_undecodable_bytes_name_line_encoding_and_param(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\nfine,1\ncaf\xe9,0\n")
    with pytest.raises(PipelineError, match=r"bad.csv: line 3, byte column 4: cannot decode byte 0xe9 as utf-8; set ingest.encoding"):
        read_table(path, "auto", "utf-8")


def test_invalid_jsonl_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": oops}\n')
    with pytest.raises(PipelineError, match=r"bad.jsonl: line 2, column \d+: invalid JSON"):
        read_table(path, "auto", "utf-8")


def test_unknown_suffix_asks_for_format(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_text("x")
    with pytest.raises(PipelineError, match="set ingest.format"):
        read_table(path, "auto", "utf-8")


def test_missing_label_names_row_and_column():
    df = frame(5)
    df.loc[3, "label"] = None
    with pytest.raises(PipelineError, match=r"x.csv: row 4, column 'label': missing label"):
        select_columns(df, IngestParams(), "x.csv")


def test_integer_labels_get_names_and_string_labels_sort():
    df = frame(40).assign(label=[i % 2 for i in range(40)])
    splits, names = ingest({"all": df}, IngestParams(label_names=["negative", "positive"]))
    assert names == ["negative", "positive"]
    assert set(splits["train"]["label"]) == {"negative", "positive"}
    splits, names = ingest({"all": frame(40, ("pos", "neg"))}, IngestParams())
    assert names == ["neg", "pos"]


def test_integer_label_outside_names_is_an_error():
    df = frame(10).assign(label=[i % 3 for i in range(10)])
    with pytest.raises(PipelineError, match=r"label 2 outside 0..1"):
        ingest({"all": df}, IngestParams(label_names=["a", "b"]))


def test_split_is_stratified_sized_and_disjoint():
    splits, _ = ingest({"all": frame(1000)}, IngestParams())
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 800, "validation": 100, "test": 100}
    for df in splits.values():
        assert df["label"].value_counts().nunique() == 1  # balanced in every split
    texts = [set(df["text"]) for df in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_test_split_is_stable_under_reorder_and_new_rows():
    p = IngestParams()
    base = frame(1000)
    test_a = set(stratified_split(base, p)["test"]["text"])
    shuffled = base.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert set(stratified_split(shuffled, p)["test"]["text"]) == test_a
    grown = pd.concat([base, pd.DataFrame({"text": [f"new {i}" for i in range(50)], "label": ["neg", "pos"] * 25})])
    test_b = set(stratified_split(grown.reset_index(drop=True), p)["test"]["text"])
    assert len(test_a & test_b) >= 0.9 * len(test_a)  # adding 5% more data keeps >=90% of the test split


def test_split_seed_moves_the_split():
    a = set(stratified_split(frame(200), IngestParams(split_seed=1))["test"]["text"])
    b = set(stratified_split(frame(200), IngestParams(split_seed=2))["test"]["text"])
    assert a != b


def test_given_files_are_used_as_splits(tmp_path):
    for name, n in (("train", 50), ("val", 10), ("test", 10)):
        frame(n).assign(text=lambda d, name=name: name + " " + d["text"]).to_csv(tmp_path / f"{name}.csv", index=False)
    p = IngestParams(source=str(tmp_path / "train.csv"), validation_file=str(tmp_path / "val.csv"), test_file=str(tmp_path / "test.csv"))
    splits, _ = ingest(*read_source(p)[:1], p)
    assert {k: len(v) for k, v in splits.items()} == {"train": 50, "validation": 10, "test": 10}
    p2 = p.model_copy(update={"validation_file": None})  # test given, validation carved out of train
    splits, _ = ingest(*read_source(p2)[:1], p2)
    assert len(splits["test"]) == 10 and len(splits["validation"]) in (4, 6)  # 10% of each label, rounded
    assert len(splits["train"]) + len(splits["validation"]) == 50


def test_test_label_unseen_in_train_is_an_error():
    frames = {"train": frame(20), "validation": frame(4), "test": frame(4, ("neg", "neutral"))}
    with pytest.raises(PipelineError, match=r"test split, row 2, column 'label': label 'neutral' never occurs in train"):
        ingest(frames, IngestParams())


def test_single_class_is_an_error():
    with pytest.raises(PipelineError, match="need at least 2"):
        ingest({"all": frame(50, ("only",))}, IngestParams())


def test_max_rows_subsamples_stratified():
    splits, _ = ingest({"all": frame(1000)}, IngestParams(max_rows=200))
    assert sum(len(v) for v in splits.values()) == 200


def test_validation_file_without_test_file_is_rejected():
    with pytest.raises(ValueError, match="needs test_file"):
        IngestParams(validation_file="v.csv")


def test_demo_sources():
    rt = read_demo("rotten_tomatoes")
    assert len(rt) == 8530 and set(rt["label"]) == {0, 1}
    imdb = read_demo("imdb")
    assert len(imdb) == 25000 and imdb["text"].str.contains("<br />", regex=False).any()  # clean's job
    with pytest.raises(PipelineError, match="unknown demo"):
        read_demo("nope")


def test_hf_source_loads_a_local_dataset_folder(tmp_path):
    """`hf:` goes through datasets.load_dataset; a local folder of split files works offline."""
    for split, n in (("train", 40), ("test", 10)):
        frame(n).assign(text=lambda d, s=split: s + " " + d["text"]).to_csv(tmp_path / f"{split}.csv", index=False)
    p = IngestParams(source=f"hf:{tmp_path}")
    frames, names = read_source(p)
    assert set(frames) == {"train", "test"} and len(frames["train"]) == 40
    splits, labels = ingest(frames, p, names)
    assert len(splits["test"]) == 10 and len(splits["validation"]) > 0 and labels == ["neg", "pos"]


def test_hf_source_unreachable_is_one_line():
    with pytest.raises(PipelineError, match=r"ingest.source 'hf:nobody/no-such-dataset-xyz': could not load"):
        read_source(IngestParams(source="hf:nobody/no-such-dataset-xyz"))


def test_hf_label_names_come_from_the_label_column(tmp_path):
    """With two ClassLabel columns, the names are those of ingest.label_column, not of another one."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"]),
                                  "topic": datasets.ClassLabel(names=["film", "book", "game"])})
    for split, n in (("train", 40), ("test", 10)):
        rows = {"text": [f"{split} review {i}" for i in range(n)], "label": [i % 2 for i in range(n)],
                "topic": [i % 3 for i in range(n)]}  # label before topic: a last-ClassLabel-wins reader fails
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / f"{split}.parquet"))
    p = IngestParams(source=f"hf:{tmp_path}")
    frames, names = read_source(p)
    assert names == ["negative", "positive"]
    splits, labels = ingest(frames, p, names)
    assert labels == ["negative", "positive"] and set(splits["train"]["label"]) == {"negative", "positive"}
