"""Ingest: every format, column and label handling, stable stratified splits, one-line errors."""

import json

import pandas as pd
import pytest

from stages.io import PipelineError
from stages.params import IngestParams
from stages.readers import read_demo, read_table
from stages.splits import stratified_split
from stages.tasks.sequence_ingest import ingest, read_source, select_columns


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
    assert sum(sizes.values()) == 1000
    # each row by its own hash: the shares are binomial around 80/10/10 (3 standard deviations: +-28, +-28, +-38)
    assert abs(sizes["test"] - 100) < 28 and abs(sizes["validation"] - 100) < 28 and abs(sizes["train"] - 800) < 38
    for df in splits.values():
        shares = df["label"].value_counts(normalize=True)
        assert shares.min() > 0.35  # both labels in every split, near their 50/50 share
    texts = [set(df["text"]) for df in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_test_split_is_stable_under_reorder_and_new_rows():
    p = IngestParams()
    base = frame(1000)
    test_a = set(stratified_split(base, p)["test"]["text"])
    shuffled = base.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert set(stratified_split(shuffled, p)["test"]["text"]) == test_a
    grown = pd.concat([base, pd.DataFrame({"text": [f"new {i}" for i in range(50)], "label": ["neg", "pos"] * 25})])
    grown_splits = stratified_split(grown.reset_index(drop=True), p)
    assert test_a <= set(grown_splits["test"]["text"])  # every old test row stays in test ...
    for part in ("train", "validation"):  # ... and every old row stays in its split
        assert set(stratified_split(base, p)[part]["text"]) <= set(grown_splits[part]["text"])
    assert len(set(grown_splits["test"]["text"]) - test_a) > 0  # new rows get their share of test


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
    assert len(splits["test"]) == 10 and 0 < len(splits["validation"]) < 15  # ~10% of train, by hash
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


# --- bad inputs: each one a single line naming the file, the line/row and column, and what to do ------------------

def rows_csv(n=40, sep=","):
    return "".join(f"text {i}{sep}{'ab'[i % 2]}\n" for i in range(n))


def write(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def read_task(path, task="sequence_classification", **params):
    """The task's read + ingest, as the stage runs them."""
    from stages.tasks import get

    t, p = get(task), IngestParams(source=str(path), **params)
    return t.ingest(t.read(p), p)


def test_header_only_csv_says_there_are_no_rows(tmp_path):
    path = write(tmp_path / "data.csv", "text,label\n")
    with pytest.raises(PipelineError, match=rf"^{path}: no data rows \(only a header: text, label\)$"):
        read_task(path)


@pytest.mark.parametrize("name, text", [("data.csv", "text,text,label\n" + rows_csv(3, ",x,")),
                                        ("data.tsv", "text\ttext\tlabel\n" + rows_csv(3, "\tx\t"))])
def test_duplicate_column_names_are_an_error(tmp_path, name, text):
    path = write(tmp_path / name, text)
    with pytest.raises(PipelineError, match=rf"^{path}: column 'text' occurs more than once in the header \(text, text, "
                                            r"label\); give each column its own name$"):
        read_table(path, "auto", "utf-8")


def test_duplicate_keys_and_columns_in_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = write(tmp_path / "dup.jsonl", '{"text": "a", "label": "x"}\n{"text": "a", "label": "x", "text": "b"}\n')
    with pytest.raises(PipelineError, match=rf"^{path}: line 2: key 'text' occurs more than once in the object \(JSON "
                                            r"keeps only the last\)"):
        read_table(path, "auto", "utf-8")
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([pa.array(["a"]), pa.array(["b"]), pa.array(["x"])], names=["text", "text", "label"]), path)
    with pytest.raises(PipelineError, match=rf"^{path}: column 'text' occurs more than once \(text, text, label\)"):
        read_table(path, "auto", "utf-8")
    nested = write(tmp_path / "nested.jsonl", '{"text": "a", "label": "x", "meta": {"k": 1, "k": 2}}\n')
    assert read_table(nested, "auto", "utf-8")["text"].tolist() == ["a"]  # only the row's own keys matter


@pytest.mark.parametrize("text, line, fields", [
    ("text,label\nx,a,b,c\n" + rows_csv(), 2, 4),  # pandas would make the first fields an index, silently
    ("text,label\n" + rows_csv(5) + "x,a,b,c\n" + rows_csv(), 7, 4),  # pandas' own error
    ('text,label\n"a, quoted",a\n"two\nlines",b\nq,a,e\n' + rows_csv(), 5, 3),  # lines, not records
])
def test_a_row_with_too_many_fields_names_its_line(tmp_path, text, line, fields):
    path = write(tmp_path / "data.csv", text)
    with pytest.raises(PipelineError, match=rf"^{path}: line {line}: {fields} fields, the header has 2; a field holding "
                                            r"',' must be in double quotes$"):
        read_table(path, "auto", "utf-8")


def test_extra_empty_fields_are_a_trailing_separator(tmp_path):
    df = read_table(write(tmp_path / "data.csv", "text,label\nx,a,,\n" + rows_csv(3).replace("\n", ",\n")), "auto", "utf-8")
    assert df.columns.tolist() == ["text", "label"] and df["text"].tolist() == ["x", "text 0", "text 1", "text 2"]


def test_semicolon_file_hints_at_the_separator_param_which_reads_it(tmp_path):
    path = write(tmp_path / "data.csv", "text;label\n" + rows_csv(40, ";"))
    with pytest.raises(PipelineError, match=rf"^{path}: no column 'text' \(ingest.text_column\); columns present: "
                                            r"text;label; the header looks ';'-separated: set ingest.separator: ';'$"):
        read_task(path)
    assert sum(map(len, read_task(path, separator=";").splits.values())) == 40
    tabs = write(tmp_path / "tabs.csv", "text\tlabel\n" + rows_csv(40, "\t"))
    with pytest.raises(PipelineError, match=r"the header looks tab-separated: set ingest.format: tsv$"):
        read_task(tabs)


def test_compressed_zip_parquet_utf16_and_binary_files_are_named_for_what_they_are(tmp_path):
    import gzip
    import zipfile

    text = "text,label\n" + rows_csv()
    buf = tmp_path / "x.zip"
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data.csv", text)
    frame(3).to_parquet(tmp_path / "x.parquet")
    cases = {"gzip": (gzip.compress(text.encode()), "is gzip-compressed, not csv text; decompress it first"),
             "zip": (buf.read_bytes(), r"is a zip archive \(an .xlsx workbook is one\), not csv text"),
             "parquet": ((tmp_path / "x.parquet").read_bytes(),
                         "is a Parquet file, not csv; name it .parquet or set ingest.format: parquet"),
             "utf16": (text.encode("utf-16"), "starts with a UTF-16 byte-order mark; set ingest.encoding: utf-16"),
             "binary": (bytes(range(256)) * 4, r"is a binary file \(NUL bytes in its first 1024 bytes\), not csv text")}
    for kind, (data, message) in cases.items():
        path = write(tmp_path / f"{kind}.csv", data)
        with pytest.raises(PipelineError, match=rf"^{path}: {message}"):
            read_table(path, "auto", "utf-8")
    assert len(read_table(tmp_path / "utf16.csv", "auto", "utf-16")) == 40  # told the encoding: read


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    csv = read_table(write(tmp_path / "bom.csv", "\ufefftext,label\n" + rows_csv(3)), "auto", "utf-8")
    assert csv.columns.tolist() == ["text", "label"]
    jsonl = read_table(write(tmp_path / "bom.jsonl", '\ufeff{"text": "a", "label": "x"}\n'), "auto", "utf-8")
    assert jsonl.columns.tolist() == ["text", "label"]
    assert read_task(tmp_path / "bom.csv", max_rows=None).splits["train"].columns.tolist() == ["text", "label"]


@pytest.mark.parametrize("cell", ["nan", "null", "None", "NaN", "NULL", "", "  "])
def test_missing_label_strings_are_never_a_class(tmp_path, cell):
    path = write(tmp_path / "data.csv", "text,label\n" + rows_csv(5) + f"odd one,{cell}\n" + rows_csv())
    shown = f" '{cell}'" if cell.strip() else ""
    with pytest.raises(PipelineError, match=rf"^{path}: row 6, column 'label': missing label{shown} \(1 rows without a "
                                            r"label\); set ingest.missing_labels: drop to drop them \(counted\)$"):
        read_task(path)


def test_missing_labels_drop_counts_them(tmp_path):
    path = write(tmp_path / "data.csv", "text,label\n" + rows_csv() + "x,nan\ny,\nz,NULL\n")
    result = read_task(path, missing_labels="drop")
    assert result.labels == ["a", "b"] and sum(len(df) for df in result.splits.values()) == 40
    assert result.report == {"dropped": {"missing_label": 3}, "converted": {"non_string_text": 0}}
    everything = write(tmp_path / "none.csv", "text,label\nx,nan\ny,\n")
    with pytest.raises(PipelineError, match=rf"^{everything}: no rows left after dropping 2 rows without a label"):
        read_task(everything, missing_labels="drop")


def test_missing_labels_of_multilabel_rows(tmp_path):
    """An empty cell is "none of these" (allow_no_label); 'nan' or a null inside a list is a missing value."""
    import json

    path = write(tmp_path / "data.csv", "text,label\n" + rows_csv().replace(",b", ",a|b") + "x,nan\ny,a|null\nz,\n")
    with pytest.raises(PipelineError, match=rf"^{path}: row 41, column 'label': missing label 'nan' \(2 rows without a "
                                            r"label\); set ingest.missing_labels: drop"):
        read_task(path, "multilabel_classification", label_separator="|")
    result = read_task(path, "multilabel_classification", label_separator="|", missing_labels="drop")
    assert result.report["dropped"] == {"missing_label": 2} and sum(len(d) for d in result.splits.values()) == 41
    lists = write(tmp_path / "data.jsonl", "".join(json.dumps({"text": f"t{i}", "label": ["a", None] if i == 4 else
                                                              ["a", "b"][: 1 + i % 2]}) + "\n" for i in range(40)))
    with pytest.raises(PipelineError, match=r"row 5, column 'label': missing label \['a', None\] \(1 rows"):
        read_task(lists, "multilabel_classification")


def jsonl(path, texts, labels=None):
    import json

    labels = labels or ["ab"[i % 2] for i in range(len(texts))]
    return write(path, "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))


def test_numbers_as_texts_fail_or_are_converted_and_counted(tmp_path):
    mixed = jsonl(tmp_path / "mixed.jsonl", [i if i % 5 == 0 else f"text {i}" for i in range(40)])
    with pytest.raises(PipelineError, match=rf"^{mixed}: row 1, column 'text': int '0' is not a text \(column dtype "
                                            r"object; 8 such rows\); set ingest.non_string_text: convert to read them "
                                            r"as text \(counted\)$"):
        read_task(mixed)
    result = read_task(mixed, non_string_text="convert")
    assert result.report["converted"] == {"non_string_text": 8}
    assert "5" in set().union(*(set(df["text"]) for df in result.splits.values()))
    ints = tmp_path / "ints.parquet"  # an int column with a null reads as floats: 7.0 was 7
    pd.DataFrame({"text": [*range(39), None], "label": ["ab"[i % 2] for i in range(40)]}).to_parquet(ints)
    with pytest.raises(PipelineError, match=r"row 1, column 'text': float '0.0' is not a text \(column dtype float64"):
        read_task(ints)
    texts = {t for df in read_task(ints, non_string_text="convert").splits.values() for t in df["text"]}
    assert "7" in texts and "7.0" not in texts and "" in texts  # the null is an empty text: clean's to drop
    listed = jsonl(tmp_path / "lists.jsonl", [[1] if i == 3 else f"t{i}" for i in range(40)])
    with pytest.raises(PipelineError, match=r"row 4, column 'text': list '\[1\]' is not a text .* a text column holds "
                                            r"strings$"):
        read_task(listed, non_string_text="convert")


def test_a_csv_of_digits_is_text(tmp_path):
    """CSV cells are read as strings: a text of digits is a text (only JSONL/Parquet have numbers)."""
    path = write(tmp_path / "digits.csv", "text,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(40)))
    result = read_task(path)
    assert result.report["converted"] == {"non_string_text": 0} and "10" in set(result.splits["train"]["text"])


def test_parquet_labels_of_the_wrong_type_name_column_and_dtype(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"text {i}" for i in range(40)]
    pd.DataFrame({"text": texts, "label": [0.5 * (i % 3) for i in range(40)]}).to_parquet(tmp_path / "f.parquet")
    with pytest.raises(PipelineError, match=r"f.parquet: row 2, column 'label': label '0.5' is a float \(column dtype "
                                            r"float64\); a number with a fraction is a regression target, not a class$"):
        read_task(tmp_path / "f.parquet")
    pq.write_table(pa.table({"text": texts, "label": [{"x": i} for i in range(40)]}), tmp_path / "s.parquet")
    with pytest.raises(PipelineError, match=r"s.parquet: row 1, column 'label': label \"\{'x': 0\}\" is a dict \(column "
                                            r"dtype object\); a label is a class name or an integer id$"):
        read_task(tmp_path / "s.parquet")
    ints = tmp_path / "ints.parquet"  # integer ids with a null read as floats: 1.0 is id 1
    pd.DataFrame({"text": [*texts, "x"], "label": [i % 2 for i in range(40)] + [None]}).to_parquet(ints)
    result = read_task(ints, missing_labels="drop", label_names=["neg", "pos"])
    assert result.labels == ["neg", "pos"] and result.report["dropped"] == {"missing_label": 1}


def test_one_class_names_the_file_column_and_class(tmp_path):
    path = write(tmp_path / "data.csv", "text,label\n" + "".join(f"text {i},positive\n" for i in range(40)))
    with pytest.raises(PipelineError, match=rf"^{path}: column 'label' has one class \('positive'\) in the train split; "
                                            r"need at least 2$"):
        read_task(path)


def test_a_5_mb_text_is_read_cleaned_and_its_truncation_counted(tmp_path, packaged_tokenizer):
    from stages.params import CleanParams, TokenizeParams
    from stages.textclean import clean
    from stages.texttok import tokenize

    big = ("great film and a dull plot " * 200_000)[:5_200_000]
    df = pd.concat([pd.DataFrame({"text": [big], "label": ["a"]}), frame(40, ("a", "b"))], ignore_index=True)
    df.to_csv(tmp_path / "big.csv", index=False)
    result = read_task(tmp_path / "big.csv")
    out, report = clean(result.splits, CleanParams())
    assert report["total"]["rows_out"] == 41 and max(df["text"].str.len().max() for df in out.values()) == len(big)
    _, tok = tokenize(out, packaged_tokenizer, result.labels, TokenizeParams(max_length=32))
    assert sum(s["truncated"] for s in tok["splits"].values()) == 1  # frame()'s texts are 3 words


@pytest.mark.parametrize("text, message", [
    ("EU B-ORG\nrejects\n", r"line 2, column 2: missing; a token line needs 2 whitespace-separated columns"),
    ("EU B-ORG\nrejects X-PER\n", r"line 2, column 2: tag 'X-PER' is not IOB/IOB2"),
    ("EU B-\n", r"line 1, column 2: tag 'B-' is not IOB/IOB2"),
])
def test_conll_missing_tag_column_and_invalid_tags(tmp_path, text, message):
    from stages.sentences import read_conll

    path = write(tmp_path / "ner.conll", text)
    with pytest.raises(PipelineError, match=rf"^{path}: {message}"):
        read_conll(path)


def test_the_stages_report_what_reading_dropped_and_converted(tmp_path, monkeypatch):
    """ingest writes data/raw/ingest.json; clean copies it into reports/clean.json beside its own drops."""
    import json

    import yaml

    from stages import clean, ingest

    texts = [i if i == 7 else f"text {i}" for i in range(40)] + ["x", "y"]
    jsonl(tmp_path / "data.jsonl", texts, ["ab"[i % 2] for i in range(40)] + ["nan", None])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {
        "source": "data.jsonl", "missing_labels": "drop", "non_string_text": "convert"}}))
    monkeypatch.chdir(tmp_path)
    ingest.main()
    want = {"dropped": {"missing_label": 2}, "converted": {"non_string_text": 1}}
    assert json.loads((tmp_path / "data/raw/ingest.json").read_text()) == want
    clean.main()
    report = json.loads((tmp_path / "reports/clean.json").read_text())
    assert report["ingest"] == want and report["total"]["rows_in"] == 40
