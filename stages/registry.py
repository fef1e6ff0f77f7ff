"""The MLflow model registry as register uses it: versions, their tags, aliases, and a lock around the alias decision.

The champion decision reads the champion, compares and moves the alias; two pipelines registering into one store at
once must not interleave those steps (both would read the same champion, and the last writer would win whatever its
score). `lock` makes them one critical section with a mutex the store itself enforces: creating a registered model
whose name exists fails, atomically, in every backend (a unique key in SQLite, PostgreSQL, MySQL, behind
`mlflow server` or not). The lock is that model, deleted on release; one left by a killed process expires.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stages.io import PipelineError, read_json
from stages.tracking import client, download, list_artifacts

log = logging.getLogger(__name__)
LOCK_SUFFIX = ".register-lock"


@dataclass(frozen=True)
class Facts:
    """What the champion decision compares: a version's task, label set, test score and whether its test split was
    large enough for the score to mean anything (and if not, why)."""

    version: str | None
    made_for: str  # the task
    labels: frozenset[str]
    value: float | None
    reliable: bool = True
    why: str = ""


def alias_version(model_name: str, alias: str):
    """The model version an alias points at, or None (no such alias, or no such model yet)."""
    import mlflow

    try:
        return client().get_model_version_by_alias(model_name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def tag_version(model_name: str, version: str, tags: dict[str, str]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(model_name, version, key, value)


def set_alias(model_name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(model_name, alias, version)


def describe_version(model_name: str, version: str, text: str) -> None:
    """The version's description: what the registry UI shows on its page (register writes the model card there)."""
    client().update_model_version(model_name, version, description=text)


def facts_tags(f: Facts, metric: str) -> dict[str, str]:
    """How a version carries its Facts (read back by `facts`)."""
    return {"task": f.made_for, "labels": json.dumps(sorted(f.labels)), f"test_{metric}": str(f.value),
            "comparable": str(f.reliable).lower(), **({"not_comparable_because": f.why} if f.why else {})}


def _folder_uri(mv) -> str:
    """Where a version's fine-tuned folder is: the pyfunc's one artifact folder, named after the fine-tuned one."""
    base = f"models:/{mv.name}/{mv.version}"
    return f"{base}/{list_artifacts(f'{base}/artifacts')[0].path}"


def model_folder(mv, dest: Path) -> Path:
    """Download a registered version's fine-tuned folder (weights, tokenizer, pipeline.json) into `dest`."""
    import mlflow

    try:
        return Path(download(artifact_uri=_folder_uri(mv), dst_path=str(dest)))
    except (mlflow.exceptions.MlflowException, OSError, IndexError) as e:
        raise PipelineError(f"model {mv.name} version {mv.version}: cannot download its model folder ({e})") from None


def _labels_of(mv) -> frozenset[str] | None:
    """A version registered before versions carried a `labels` tag: its pipeline.json, from the model's artifacts."""
    import mlflow

    try:
        path = download(artifact_uri=f"{_folder_uri(mv)}/pipeline.json")
        return frozenset(read_json(Path(path))["labels"])
    except (mlflow.exceptions.MlflowException, OSError, IndexError, KeyError, ValueError):
        return None


def facts(mv, metric: str) -> Facts:
    """A registered version's Facts, from its tags (older versions: defaults, their run's metric, pipeline.json)."""
    tags = mv.tags or {}
    labels = frozenset(json.loads(tags["labels"])) if "labels" in tags else _labels_of(mv)
    value = tags.get(f"test_{metric}")
    if value is None or value == "None":
        value = client().get_run(mv.run_id).data.metrics.get(f"test_{metric}") if mv.run_id else None
    return Facts(str(mv.version), tags.get("task", "sequence_classification"), labels or frozenset(),
                 None if value is None else float(value), tags.get("comparable", "true") == "true",
                 tags.get("not_comparable_because", "" if labels is not None else "its label set is unknown"))


@contextlib.contextmanager
def lock(model_name: str, timeout_s: float = 300, stale_after_s: float = 600) -> Iterator[None]:
    """Hold the registry lock of `model_name` (see the module doc). Waits up to `timeout_s`; a lock older than
    `stale_after_s` (its holder was killed: the critical section takes seconds) is broken, with a warning."""
    import mlflow

    c, name = client(), f"{model_name}{LOCK_SUFFIX}"
    owner = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            c.create_registered_model(name, tags={"owner": owner}, description=f"register's lock on {model_name}: "
                                      f"held by {owner} while it decides the aliases; deleted when it is done")
            break
        except mlflow.exceptions.MlflowException as e:
            # sqlite store: the insert collides, then its own lookup of the holder finds it gone (released between
            # the two): "not found" from a create means "free again", so try at once (CI saw this race)
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = c.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            continue  # released between our two calls: try again at once
        age = time.time() - held.creation_timestamp / 1000
        if age > stale_after_s:
            log.warning("breaking the registry lock %s held by %s for %.0f s (its holder is gone)", name,
                        held.tags.get("owner"), age)
            with contextlib.suppress(mlflow.exceptions.MlflowException):
                c.delete_registered_model(name)
            continue
        if time.monotonic() > deadline:
            raise PipelineError(f"registry lock '{name}' held by {held.tags.get('owner')} for {age:.0f} s; if that "
                                f"process is gone, delete the registered model '{name}' and re-run register")
        time.sleep(random.uniform(0.1, 0.4))
    try:
        yield
    finally:
        c.delete_registered_model(name)
