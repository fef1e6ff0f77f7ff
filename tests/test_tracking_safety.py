"""A tracking store that is down fails a stage in seconds with one line; runs a killed stage left RUNNING are closed
KILLED by the next start; a model loads from safetensors only, and runs no code of its own, unless params say so."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stages import trackguard
from stages.cli import MLFLOW_HTTP_DEFAULTS, run
from stages.io import PipelineError
from stages.trackguard import store_down
from tests.conftest import free_port


# --- check_server ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def http_server(answers: dict[str, int]):
    """A server on 127.0.0.1 answering each path (query left out) with its status, 404 otherwise; yields (URI, the
    requests it got as (path, Authorization header))."""
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?")[0]
            seen.append((path, self.headers.get("Authorization")))
            body = b"OK" if path == "/health" else b'{"experiments": []}'
            self.send_response(answers.get(path, 404))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def failure(uri: str, **kw) -> tuple[str, float]:
    t0 = time.monotonic()
    with pytest.raises(PipelineError) as e:
        trackguard.check_server(uri, **kw)
    return str(e.value), time.monotonic() - t0


def test_a_closed_port_fails_in_seconds_naming_the_uri_without_credentials():
    port = free_port()
    message, seconds = failure(f"http://admin:s3cret@127.0.0.1:{port}")
    assert seconds < 3
    assert message.startswith(f"MLflow tracking server http://127.0.0.1:{port} is not answering (connection refused")
    assert "unset MLFLOW_TRACKING_URI" in message and "s3cret" not in message and "\n" not in message


def test_a_server_that_accepts_but_never_answers_times_out():
    with socket.socket() as s:  # listening: the kernel completes the connect; nobody ever answers
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        message, seconds = failure(f"http://127.0.0.1:{s.getsockname()[1]}", timeout=1)
    assert seconds < 4
    assert "no answer within 1 s" in message


def test_a_healthy_server_passes_with_the_credentials_sent(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    with http_server({"/health": 200}) as (uri, seen):
        trackguard.check_server(uri)
    assert [path for path, _ in seen] == ["/health"]
    assert seen[0][1].startswith("Basic ")


def test_no_health_endpoint_falls_back_to_the_api():
    with http_server({"/api/2.0/mlflow/experiments/search": 200}) as (uri, seen):
        trackguard.check_server(uri)
    assert [path for path, _ in seen] == ["/health", "/api/2.0/mlflow/experiments/search"]


@pytest.mark.parametrize(("answers", "says"), [
    ({"/health": 500}, "answers HTTP 500 at /health (a server error"),
    ({}, "answers HTTP 404 at /api/2.0/mlflow/experiments/search (is MLFLOW_TRACKING_URI an MLflow server"),
    ({"/api/2.0/mlflow/experiments/search": 401}, "refuses the credentials (HTTP 401"),
])
def test_a_server_that_answers_wrong_fails_clearly(answers, says):
    with http_server(answers) as (uri, _):
        message, _ = failure(uri)
    assert says in message and uri in message


def test_a_database_that_is_down_fails_in_seconds():
    pytest.importorskip("psycopg2")
    message, seconds = failure(f"postgresql://u:secret@127.0.0.1:{free_port()}/mlflow")
    assert seconds < 4
    assert message.startswith("MLflow tracking database postgresql://127.0.0.1:") and "secret" not in message


def test_local_stores_are_not_checked(tmp_path):
    trackguard.check_server(f"sqlite:///{tmp_path / 'mlflow.db'}")
    trackguard.check_server(str(tmp_path / "mlruns"))


def test_a_server_gone_mid_stage_is_one_line_within_seconds(monkeypatch, capsys):
    """MLflow's retries (stages.cli.MLFLOW_HTTP_DEFAULTS) give up in seconds, and the stage's error is one line."""
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")

    def main():
        from mlflow import MlflowClient

        MlflowClient(f"http://127.0.0.1:{port}").search_experiments(max_results=1)

    t0 = time.monotonic()
    with pytest.raises(SystemExit) as e:
        run(main, "evaluate")
    assert e.value.code == 1 and time.monotonic() - t0 < 20
    err = capsys.readouterr().err.strip()
    assert err == (f"error: evaluate: MLflow tracking store http://127.0.0.1:{port} stopped answering (connection "
                   "refused); start it and re-run the stage")


def test_other_errors_are_not_taken_for_a_store_down(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert store_down(ValueError("Connection refused")) is None  # not from MLflow: a hub download, say


# --- runs a killed stage left RUNNING ----------------------------------------------------------------------------
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_left_running_by_a_dead_process_are_closed_killed(tmp_path, caplog):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e")
    host, now = socket.gethostname(), int(time.time() * 1000)

    def running(key="k1", pid=None, host=host, start=None):
        tags = {trackguard.STAGE: "finetune", trackguard.INPUTS: key, trackguard.HOST: host,
                trackguard.PID: str(pid or dead_pid())}
        return client.create_run(exp, start_time=start or now - 60_000, tags=tags).info.run_id

    killed = running()
    reused = running(pid=os.getpid(), start=now - 10 * 86_400_000)  # this pid, but the run is older than this process
    alive = running(pid=os.getpid(), start=now)  # this very process, started before the run: alive
    other_inputs = running(key="k2")
    elsewhere = running(host="other-machine")
    elsewhere_old = running(host="other-machine", start=now - 8 * 86_400_000)
    new = client.create_run(exp, tags=trackguard.stage_tags("finetune", "k1")).info.run_id

    with caplog.at_level("INFO", logger="stages.trackguard"):
        closed = trackguard.close_dangling(client, new)

    assert closed == [reused, elsewhere_old, killed]  # oldest first
    status = {r: client.get_run(r).info.status for r in (killed, reused, alive, other_inputs, elsewhere, elsewhere_old)}
    assert status == {killed: "KILLED", reused: "KILLED", elsewhere_old: "KILLED",
                      alive: "RUNNING", other_inputs: "RUNNING", elsewhere: "RUNNING"}
    tags = client.get_run(killed).data.tags
    assert tags["pipeline.closed_by_run"] == new
    assert "is gone, killed" in tags["pipeline.closed_because"] and new in tags["pipeline.closed_because"]
    assert client.get_run(new).data.tags["pipeline.replaces_run"] == ",".join(closed)
    pid = client.get_run(killed).data.tags[trackguard.PID]
    assert f"closed MLflow run {killed} left RUNNING by a killed finetune (pid {pid})" in caplog.messages
    assert trackguard.close_dangling(client, new) == []  # nothing left to close


def test_a_run_without_stage_tags_closes_nothing(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e")
    client.create_run(exp, tags={trackguard.STAGE: "finetune", trackguard.PID: str(dead_pid())})
    assert trackguard.close_dangling(client, client.create_run(exp).info.run_id) == []


# --- safe model loading ------------------------------------------------------------------------------------------
def tiny_config(folder: Path):
    from transformers import BertConfig

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    config.save_pretrained(folder)
    return config


@pytest.fixture(scope="module")
def pickled_model_dir(tmp_path_factory) -> Path:
    """A tiny BERT whose weights are only a pickled pytorch_model.bin (transformers 5 saves safetensors only)."""
    import torch
    from transformers import BertModel

    folder = tmp_path_factory.mktemp("pickled")
    torch.save(BertModel(tiny_config(folder)).state_dict(), folder / "pytorch_model.bin")
    return folder


def test_pickled_weights_are_refused_unless_allowed(pickled_model_dir):
    from stages.loading import Trust, load_encoder

    name = str(pickled_model_dir)
    with pytest.raises(PipelineError) as e:
        load_encoder(name)
    assert str(e.value) == (f"model.name '{name}': weights are a pickled pytorch_model.bin; loading it can run code: "
                            "convert to safetensors, or set model.allow_pickle_weights: true if you trust it")
    assert type(load_encoder(name, Trust(pickle_weights=True))).__name__ == "BertModel"


def test_a_folder_without_weights_is_one_line(tmp_path):
    from stages.loading import load_encoder

    tiny_config(tmp_path)
    with pytest.raises(PipelineError) as e:
        load_encoder(str(tmp_path))
    assert str(e.value) == f"model.name '{tmp_path}': no weights in {tmp_path} (model.safetensors or pytorch_model.bin)"


def test_custom_code_is_refused_unless_trusted(tmp_path, tiny_model_dir):
    from stages.loading import load_encoder

    for f in tiny_model_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config |= {"model_type": "own-bert", "auto_map": {"AutoConfig": "own.OwnConfig", "AutoModel": "own.OwnModel"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "own.py").write_text("raise SystemExit('the model's own code ran')\n")
    with pytest.raises(PipelineError, match="comes with its own Python code.*model.trust_remote_code: true"):
        load_encoder(str(tmp_path))


def test_trusting_remote_code_warns_and_the_packaged_model_loads_safely(tiny_model_dir, caplog):
    from stages.loading import Trust, load_encoder, resolve_model
    from stages.params import PACKAGED_MODEL, ModelParams

    assert Trust.of(ModelParams()) == Trust(False, False)
    assert list(Path(resolve_model(PACKAGED_MODEL)).glob("*.safetensors"))
    assert type(load_encoder(PACKAGED_MODEL)).__name__ == "BertModel"
    with caplog.at_level("WARNING", logger="stages.loading"):
        load_encoder(str(tiny_model_dir), Trust(remote_code=True))
    assert any("trust_remote_code is true" in m for m in caplog.messages)


def test_a_real_mlflow_server_passes_and_its_api_wants_the_credentials(mlflow_server):
    """What mlflow's own server (basic-auth app) answers: /health without credentials, the API only with them."""
    import requests

    uri, user, password = mlflow_server
    trackguard.check_server(uri)
    search = f"{uri}{trackguard.SEARCH}?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=(user, password), timeout=10).status_code == 200
