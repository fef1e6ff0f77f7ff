"""Shared fixtures: a tiny random BERT built from a config, and throwaway copies of the project."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.cli import set_env_defaults

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["stages", "flows", "dvc.yaml", "params.yaml", "prefect.yaml", ".dvc/config", ".dvc/plots", ".dvcignore",
                 ".gitignore", "data/source"]

set_env_defaults()  # offline: tests never reach a hub


@pytest.fixture(scope="session")
def packaged_tokenizer():
    from stages.loading import load_tokenizer
    from stages.params import PACKAGED_MODEL

    return load_tokenizer(PACKAGED_MODEL)


def tiny_bert(out: Path, tokenizer, vocab_size: int) -> Path:
    """A randomly initialised (seed 0) 2-layer, 32-wide BERT saved with `tokenizer` into `out` (seconds, no download)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, packaged_tokenizer) -> Path:
    """A tiny random BERT with the packaged WordPiece tokenizer."""
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"), packaged_tokenizer, packaged_tokenizer.vocab_size)


CHINESE_VOCAB = ROOT / "tests" / "data" / "bert-base-chinese-vocab.txt"
SHARED_CHINESE = ROOT.parent / "shared" / "data" / "chinese"  # ChnSentiCorp and MSRA, when this machine has them


@pytest.fixture(scope="session")
def chinese_tokenizer():
    """bert-base-chinese's WordPiece tokenizer, built from its real vocabulary (no download)."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab=str(CHINESE_VOCAB))  # transformers 5: `vocab` takes the file (vocab_file is ignored)


@pytest.fixture(scope="session")
def tiny_chinese_model_dir(tmp_path_factory, chinese_tokenizer) -> Path:
    """A tiny random BERT over bert-base-chinese's real vocabulary: what an offline test can build of the model an
    online user names with `model.name: bert-base-chinese`."""
    vocab_size = max(chinese_tokenizer.get_vocab().values()) + 1  # 21,128: the file repeats a few entries
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert-chinese"), chinese_tokenizer, vocab_size)


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """A learnable toy task: positive texts use positive words, negative ones negative words."""
    import random

    rng = random.Random(seed)
    pos, neg = ["great", "wonderful", "superb", "moving", "brilliant"], ["awful", "dull", "boring", "terrible", "weak"]
    filler = ["the", "film", "plot", "acting", "was", "really", "quite", "and", "story"]
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(filler, 4) + rng.sample(pos if label else neg, 2) + [f"w{i}"]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "positive" if label else "negative"})
    return rows


def update_params(root: Path, params: dict) -> None:
    """Merge `params` into root/params.yaml: a section given as a dict updates that section's keys, anything else
    replaces the value."""
    base = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in params.items():
        base[section] = {**base[section], **values} if isinstance(values, dict) else values
    (root / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False, allow_unicode=True))


def make_project(dest: Path, params: dict | None = None) -> Path:
    """Copy the project (code, dvc.yaml, params.yaml) into `dest`, git-init it, and merge `params`."""
    for name in PROJECT_FILES:
        src = ROOT / name
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    update_params(dest, params or {})
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "project copy"], cwd=dest, check=True)  # dvc exp needs a commit
    return dest


def write_reviews(path: Path, n: int) -> None:
    """`n` toy reviews as CSV, plus rows that clean must drop and count (a duplicate, an empty text)."""
    import pandas as pd

    rows = sentiment_rows(n)
    rows += [rows[0], {"text": "<br />", "label": "positive"}]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def project_env() -> dict[str, str]:
    """The environment a stage sees: this interpreter's bin first (dvc's `python`), no outside MLflow URI."""
    # mlflow.set_tracking_uri/set_registry_uri export MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI: a test that logged
    # in-process (test_serving) would otherwise send every later project's stages to its store
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = ""
    return env


def store_client(root: Path):
    """An MlflowClient on a project's own SQLite store, for runs and registry alike (the registry URI is named: an
    in-process test may have exported another one in MLFLOW_REGISTRY_URI)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(uri, registry_uri=uri)


def run_in(cwd: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=cwd, env=project_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server_on(home: Path, backend_uri: str, env: dict, *args: str):
    """`mlflow server` on 127.0.0.1 (a free port) with `backend_uri` as its store and artifacts under `home`, until the
    block ends; yields its URI."""
    import time
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(["mlflow", "server", *args, "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", backend_uri, "--artifacts-destination", str(home / "artifacts"),
                             "--workers", "1"], cwd=home, env=env,
                            stdout=open(home / "server.log", "w"), stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        up = False
        for _ in range(240):
            if proc.poll() is not None:
                break
            try:
                up = urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200
            except OSError:
                time.sleep(0.5)
            if up:
                break
        if not up:
            raise RuntimeError(f"mlflow server did not start: {(home / 'server.log').read_text()[-2000:]}")
        yield uri
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` with basic auth (user admin) on 127.0.0.1: (URI without credentials, user, password)."""
    pytest.importorskip("flask_wtf", reason="mlflow's basic-auth app needs Flask-WTF (pip install -e '.[test]')")
    home, password = tmp_path_factory.mktemp("mlflow-server"), "s3cret-Passw0rd-4-tests"
    env = project_env() | {"MLFLOW_AUTH_ADMIN_PASSWORD": password, "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-key"}
    with mlflow_server_on(home, f"sqlite:///{home / 'mlflow.db'}", env, "--app-name", "basic-auth") as uri:
        yield uri, "admin", password
