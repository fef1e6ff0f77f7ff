"""Which MLflow store the project talks to ($MLFLOW_TRACKING_URI, else SQLite in the project root), and handles to it
that never trust MLflow's process-global URIs: each call sets them from the environment first, since a long-lived
process (a Prefect worker, a test session) may have pointed them at another store."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from stages import credentials, trackguard


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else SQLite in the project root (`mlflow ui --backend-store-uri sqlite:///mlflow.db`).
    Credentials in the URI move to the environment first: the URI returned (and logged, and written) has none."""
    credentials.move_to_env()
    return os.environ.get(credentials.URI_ENV) or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_server() -> None:
    """Fail in seconds, with one line, when the tracking server or database is not there (stages.trackguard): called
    first by every stage that talks to MLflow, before it loads a model or data."""
    trackguard.check_server(tracking_uri())


@functools.cache
def ensure_store(uri: str) -> None:
    """Create a SQLite store's tables once, under a file lock beside it: two first runs creating them at once crash
    (both run the migrations: "duplicate column name"). Other stores are created by their server."""
    if not uri.startswith("sqlite:///"):
        return
    from filelock import FileLock
    from mlflow import MlflowClient

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock", timeout=300):
        client = MlflowClient(uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # tracking tables (and migrations)
        client.search_registered_models(max_results=1)  # registry tables


def store_uri() -> str:
    """The tracking URI, its store created if need be."""
    uri = tracking_uri()
    ensure_store(uri)
    return uri


def mlflow_api():
    """The mlflow module, its global URIs set to this project's store."""
    import mlflow

    uri = store_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow


def load_model(uri: str):
    """A pyfunc model: `models:/<name>@<alias>` from this project's registry (the store set up as the stages use it),
    or a local model folder (no store touched)."""
    import mlflow

    return (mlflow_api() if uri.startswith("models:/") else mlflow).pyfunc.load_model(uri)


def download(**where) -> str:
    """`mlflow.artifacts.download_artifacts(**where)` from this project's store: MLflow's global URIs are set from the
    environment first, since a long-lived process (a Prefect worker, a test session) may have pointed them elsewhere."""
    return mlflow_api().artifacts.download_artifacts(**where)


def list_artifacts(artifact_uri: str) -> list:
    """`mlflow.artifacts.list_artifacts` from this project's store (see `download`)."""
    return mlflow_api().artifacts.list_artifacts(artifact_uri=artifact_uri)


def client():
    from mlflow import MlflowClient

    uri = store_uri()
    return MlflowClient(uri, registry_uri=uri)
