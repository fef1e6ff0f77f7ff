"""Bad input through the real entry points: one line, non-zero exit, no partial output."""

import pytest

from tests.conftest import make_project, run_in, write_reviews

pytestmark = pytest.mark.e2e


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_undecodable_file_through_dvc_repro(tmp_path):
    root = make_project(tmp_path, {"ingest": {"source": "data/source/bad.csv"}})
    (root / "data/source/bad.csv").write_bytes(b"text,label\ngood film,1\ncaf\xe9 noir,0\n")
    proc = run_in(root, "dvc", "repro", check=False)
    assert proc.returncode != 0
    assert ("error: ingest: data/source/bad.csv: line 3, byte column 4: cannot decode byte 0xe9 as utf-8; "
            "set ingest.encoding") in proc.stderr + proc.stdout
    assert not (root / "data/raw").exists() and not list((root / "data").glob(".raw.tmp-*"))


@pytest.mark.parametrize("params, message", [
    ({"finetune": {"learning_rat": 1e-5}}, "error: ingest: params.yaml: finetune.learning_rat: unknown key (misspelt?)"),
    ({"finetune": {"epochs": "three"}}, "error: ingest: params.yaml: finetune.epochs: Input should be a valid integer"),
    ({"ingest": {"source": "data/source/missing.csv"}}, "error: ingest: data/source/missing.csv: file not found"),
    ({"ingest": {"source": "data/source/reviews.csv", "text_column": "review"}},
     "error: ingest: data/source/reviews.csv: no column 'review' (ingest.text_column); columns present: text, label"),
    ({"task": "multilabel_classification", "ingest": {"source": "data/source/reviews.csv", "label_names": ["negative"]}},
     "error: ingest: data/source/reviews.csv: row 2, column 'label': label 'positive' is not in ingest.label_names"),
    ({"task": "multilabel_classification", "ingest": {"source": "data/source/reviews.csv", "label_names": ["neg"],
                                                       "label_separator": "|"}},
     "error: ingest: data/source/reviews.csv: row 1, column 'label': label 'negative' is not in ingest.label_names"),
    ({"task": "ner"}, "error: ingest: params.yaml: task: unknown task 'ner' (choose from sequence_classification, "
                      "token_classification, multilabel_classification)"),
])
def test_one_line_errors(tmp_path, params, message):
    root = make_project(tmp_path, params)
    write_reviews(root / "data/source/reviews.csv", 20)
    proc = run_in(root, "python", "-m", "stages.ingest", check=False)
    assert proc.returncode == 1
    assert error_lines(proc) == [message] or error_lines(proc)[0].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr and not (root / "data/raw").exists()


def test_missing_model_folder_stops_tokenize(tmp_path):
    root = make_project(tmp_path, {"ingest": {"source": "data/source/reviews.csv"}, "model": {"name": str(tmp_path / "no-model")}})
    write_reviews(root / "data/source/reviews.csv", 40)
    proc = run_in(root, "dvc", "repro", check=False)
    assert proc.returncode != 0
    assert f"error: tokenize: model.name: '{tmp_path / 'no-model'}' is not a model folder" in proc.stderr + proc.stdout
    assert (root / "data/augmented").exists() and not (root / "data/tokenized").exists()
