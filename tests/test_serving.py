"""The served input contract, the same in Python (`mlflow.pyfunc.load_model(uri).predict`) and over REST: through the
scoring server's own app in-process (the code `mlflow models serve` runs) and once through a real `mlflow models serve`.
Tiny untrained models of each task, logged and registered as register does (`tracking.log_served_model`)."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import free_port, project_env

LONG = " ".join(["word"] * 5000)  # 5,000 tokens: far over max_length
FITS, OVER = " ".join(["word"] * 126), " ".join(["word"] * 127)  # 128 and 129 tokens with [CLS] and [SEP]
MAX_LENGTH = 128
TASKS = {"sequence_classification": (["negative", "positive"], {}),
         "multilabel_classification": (["comedy", "drama", "horror"], {"thresholds": [0.5] * 3}),
         "token_classification": (["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], {})}
CLASSIFIERS = ["sequence_classification", "multilabel_classification"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A throwaway SQLite MLflow store, in the environment as the stages read it."""
    home = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        yield home


@pytest.fixture(scope="module")
def registered(store, tiny_model_dir, packaged_tokenizer):
    """task name → registered model URI; each an untrained head on the tiny BERT, as finetune would save it."""
    import mlflow
    import torch

    from stages import tasks, tracking

    uris = {}
    for name, (labels, extras) in TASKS.items():
        task, out = tasks.get(name), store / name
        torch.manual_seed(0)  # the new head's weights: the same predictions every run
        task.load_model(str(tiny_model_dir), labels).save_pretrained(out)
        packaged_tokenizer.save_pretrained(out)
        meta = {"task": name, "max_length": MAX_LENGTH, "labels": labels} | extras
        (out / "pipeline.json").write_text(json.dumps(meta))
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        mlflow.set_experiment("serving")  # this store's own: never an experiment id another module left active
        with mlflow.start_run():
            version = tracking.log_served_model(str(out), name, [], task.examples, task.example_output(labels))
        uris[name] = f"models:/{name}/{version}"
    return uris


@pytest.fixture(scope="module")
def served(registered):
    """task name → (the pyfunc model, a test client of the scoring server's app for it)."""
    import mlflow
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "false")  # init() sets it: undone after this module
        models = {name: mlflow.pyfunc.load_model(uri) for name, uri in registered.items()}
        yield {name: (m, TestClient(scoring_server.init(m))) for name, m in models.items()}


def python_says(model, data):
    """('ok', predictions as JSON-able records) or ('error', the message)."""
    from mlflow.exceptions import MlflowException

    try:
        out = model.predict(data)
    except MlflowException as e:
        return "error", e.message
    return "ok", json.loads(out.to_json(orient="records")) if isinstance(out, pd.DataFrame) else out


def rest_says(client, body):
    """('ok', predictions) for a 200, ('error', the message) for a 400; anything else fails the test."""
    r = client.post("/invocations", json=body)
    assert r.status_code in (200, 400), (r.status_code, r.text[:500])
    return ("ok", r.json()["predictions"]) if r.status_code == 200 else ("error", r.json()["message"])


def bodies(texts: list) -> dict[str, dict]:
    """The same rows in each of the scoring server's JSON forms (tables with an id column after the text)."""
    rows = [[t, str(i)] for i, t in enumerate(texts)]
    return {"inputs": {"inputs": texts}, "instances": {"instances": texts},
            "dataframe_split": {"dataframe_split": {"columns": ["text", "id"], "data": rows}},
            "dataframe_records": {"dataframe_records": [{"text": t, "id": i} for t, i in rows]}}


def every_path(model, client, texts: list) -> dict[str, tuple]:
    """What Python (a list, a DataFrame) and every REST form answer for `texts`."""
    table = pd.DataFrame({"text": texts, "id": [str(i) for i in range(len(texts))]})
    out = {"python list": python_says(model, texts), "python DataFrame": python_says(model, table)}
    return out | {f"REST {form}": rest_says(client, body) for form, body in bodies(texts).items()}


def refusal(answers: dict[str, tuple], says: str) -> None:
    for path, (kind, message) in answers.items():
        assert kind == "error" and says in message, (path, kind, str(message)[:300])
        assert "expected a string, a list of strings, or a DataFrame with a 'text' column" in message, path


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("texts, says", [
    ([1, None], "input row 0: got float '1.0', not a string"),  # pandas holds [1, None] as [1.0, NaN]
    (["a fine film", 1], "input row 1: got int '1', not a string"),
    (["a fine film", None], "input row 1: got a missing value (null/None/NaN), not a string"),
    (["a fine film", True], "input row 1: got bool 'True', not a string"),
])
def test_non_strings_are_refused_with_the_same_message_everywhere(served, task, texts, says):
    """Not "1" and "None" predicted with a 200 over REST while Python refuses: a 400 naming the row, in every form."""
    refusal(every_path(*served[task], texts), says)


@pytest.mark.parametrize("task", list(TASKS))
def test_what_is_not_a_list_of_texts_is_refused(served, task):
    model, client = served[task]
    refusal({"python": python_says(model, pd.DataFrame({"id": ["17"], "review": ["fine"]})),
             "REST": rest_says(client, {"dataframe_split": {"columns": ["id", "review"], "data": [["17", "fine"]]}})},
            "no 'text' column (served models read the first column: put 'text' first)")
    # a dict: MLflow's schema check answers over REST before the model runs; an error in both, never a guess
    assert python_says(model, {"text": ["a", "b"]})[0] == "error"
    assert rest_says(client, {"inputs": {"text": ["a", "b"]}})[0] == "error"


@pytest.mark.parametrize("text", ["", "   ", "\u200b\n"])
def test_empty_texts_are_refused_by_classifiers_and_have_no_entities(served, text):
    for task in CLASSIFIERS:
        refusal(every_path(*served[task], ["a fine film", text]), "input row 1: empty text")
    model, client = served["token_classification"]
    for path, (kind, spans) in every_path(model, client, [text]).items():
        assert (kind, spans) == ("ok", [[]]), path


@pytest.mark.parametrize("task", CLASSIFIERS)
def test_classifiers_flag_truncated_texts(served, task):
    """Every prediction says whether its text was cut to max_length: 128 tokens are not, 129 and 5,000 are."""
    model, client = served[task]
    texts = ["a fine film", FITS, OVER, LONG]
    answers = every_path(model, client, texts)
    for path, (kind, rows) in answers.items():
        assert kind == "ok" and [r["truncated"] for r in rows] == [False, False, True, True], path
    python = answers["python list"][1]
    for path, (_, rows) in answers.items():  # the same predictions, whichever way the texts came
        assert [r[k] for r in rows for k in r if k.startswith("prob_")] == pytest.approx(
            [r[k] for r in python for k in r if k.startswith("prob_")], abs=1e-5), path


def test_ner_cuts_nothing_and_has_no_truncated_flag(served):
    model, client = served["token_classification"]
    text = "Angela Merkel visited Paris . " * 1000  # 5,000 words: many windows
    kind, spans = python_says(model, [text])
    assert kind == "ok" and rest_says(client, {"inputs": [text]}) == ("ok", spans)
    assert all(text[s["start"]:s["end"]] == s["text"] for s in spans[0])
    assert max(s["end"] for s in spans[0]) > len(text) - 30  # the last sentence is read too (this seed tags it)


@pytest.mark.parametrize("task", list(TASKS))
def test_an_empty_batch(served, task):
    """No rows in, no rows out, with the columns a prediction has. A bare `[]` has no column at all: MLflow's schema
    check refuses it before the model runs, in Python and over REST alike."""
    model, client = served[task]
    for empty in (pd.DataFrame({"text": []}), pd.DataFrame({"text": pd.Series([], dtype=str)})):
        assert python_says(model, empty) == ("ok", [])
        if task in CLASSIFIERS:
            assert "truncated" in model.predict(empty).columns
    assert rest_says(client, {"dataframe_split": {"columns": ["text"], "data": []}}) == ("ok", [])
    for kind, message in (python_says(model, []), rest_says(client, {"inputs": []})):
        assert kind == "error" and "missing inputs" in message


def test_mlflow_models_serve(registered, store):
    """The real server (`mlflow models serve --env-manager local`): a 400 with our message, truncation flagged."""
    import httpx

    port, env = free_port(), project_env() | {"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}
    url = f"http://127.0.0.1:{port}"
    cmd = ["mlflow", "models", "serve", "-m", registered["sequence_classification"], "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    with open(store / "serve.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=store, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(240):  # ~6 s on a 2-core machine
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        else:
            raise AssertionError(f"mlflow models serve did not start: {(store / 'serve.log').read_text()[-2000:]}")
        r = httpx.post(f"{url}/invocations", json={"inputs": [1, None]}, timeout=60)
        assert r.status_code == 400 and "input row 0: got float '1.0', not a string" in r.json()["message"]
        for body in ({"inputs": []}, {"inputs": [{"text": 3}]}, {"wrong_key": ["x"]}, {"inputs": {"text": 1}}):
            r = httpx.post(f"{url}/invocations", json=body, timeout=60)  # a 4xx with a message, never a 500 trace
            assert 400 <= r.status_code < 500 and r.json()["message"] and "Traceback" not in r.text, (body, r.text)
        r = httpx.post(f"{url}/invocations", json={"inputs": ["a fine film", LONG]}, timeout=60)
        assert r.status_code == 200 and [p["truncated"] for p in r.json()["predictions"]] == [False, True]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        proc.wait(30)


# --- batch scoring: python -m flows.predict -------------------------------------------------------------------------
def predict(store, *args) -> subprocess.CompletedProcess:
    env = project_env() | {"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}
    return subprocess.run([sys.executable, "-m", "flows.predict", *map(str, args)], cwd=store, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_batch_scoring_streams_a_file_and_keeps_its_rows(store, served, registered):
    texts = [f"review {i}, with a comma" + " good" * (i % 9) for i in range(25)]
    src = store / "batch.csv"
    pd.DataFrame({"id": range(25), "text": texts, "label": ["positive"] * 25}).to_csv(src, index=False)
    proc = predict(store, registered["sequence_classification"], src, "--chunk-rows", "7")  # 4 chunks
    assert proc.returncode == 0, proc.stderr
    out = pd.read_parquet(store / "batch.predictions.parquet")
    # CSV cells stay the text they were (no per-chunk type guessing, which could differ between chunks)
    assert list(out["id"]) == [str(i) for i in range(25)] and list(out["text"]) == texts and set(out["label"]) == {"positive"}
    expected = served["sequence_classification"][0].predict(texts)
    assert list(out["pred_label"]) == list(expected["label"])
    assert out["pred_prob_positive"].to_numpy() == pytest.approx(expected["prob_positive"].to_numpy(), abs=1e-5)
    # a folder of CSV and JSONL, NER spans as JSON strings, written as CSV
    folder = store / "incoming"
    folder.mkdir()
    pd.DataFrame({"text": ["Angela Merkel visited Paris."]}).to_csv(folder / "a.csv", index=False)
    (folder / "b.jsonl").write_text(json.dumps({"text": "Shares of Apple rose."}) + "\n")
    proc = predict(store, registered["token_classification"], folder, "--out", store / "ner.csv")
    assert proc.returncode == 0, proc.stderr
    ner = pd.read_csv(store / "ner.csv")
    assert list(ner["text"]) == ["Angela Merkel visited Paris.", "Shares of Apple rose."]
    assert all(isinstance(json.loads(v), list) for v in ner["pred_value"])


def test_batch_scoring_stops_at_a_bad_row_and_writes_nothing(store, registered):
    src = store / "bad.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["fine", "also fine", "ok", 42, "fine"]))
    proc = predict(store, registered["sequence_classification"], src, "--chunk-rows", "2")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (f"error: predict: {src}: row 4, column 'text': got int '42', "
                                                    "not a string")
    assert not list(store.glob("bad.predictions*")) and not list(store.glob(".bad.predictions*"))
    proc = predict(store, registered["sequence_classification"], src, "--text-column", "review")
    assert proc.returncode == 1 and f"{src}: no 'review' column" in proc.stderr
