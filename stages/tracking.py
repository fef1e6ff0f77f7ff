"""MLflow plumbing: one run per pipeline execution, its id passed on in a small file.

finetune opens the run (params from params.yaml, lineage tags); evaluate and register add to it.
Cores never import this: finetune injects `EpochLogger` into the training loop as callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages import credentials, lineage, trackguard
from stages.io import PipelineError, read_json, write_json

# the store's handles, used through this module by the stages and flows
from stages.store import (  # noqa: F401
    check_server,
    client,
    download,
    list_artifacts,
    load_model,
    mlflow_api,
    store_uri,
    tracking_uri,
)

RUN_FILE = Path("reports/mlflow_run.json")
# Set by flows.sweep for its trials' stages: each trial's finetune run becomes a child of the sweep's run in the UI.
PARENT_RUN_ENV, SWEEP_NAME_ENV, SWEEP_TRIAL_ENV = "NLP_PARENT_RUN_ID", "NLP_SWEEP_NAME", "NLP_SWEEP_TRIAL"
SWEEP_TAGS = {PARENT_RUN_ENV: "mlflow.parentRunId", SWEEP_NAME_ENV: "sweep.name", SWEEP_TRIAL_ENV: "sweep.trial"}
log = logging.getLogger(__name__)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out |= flatten(v, f"{key}.") if isinstance(v, dict) else {key: v}
    return out


def start_run(experiment: str, params: dict[str, Any], run_name: str, tags: dict[str, str] | None = None) -> str:
    """Open the pipeline's run with `tags`; log every param once and the lineage tags (and, for a sweep's trial, its
    parent run and trial number). Returns the run id."""
    mlflow = mlflow_api()
    mlflow.set_experiment(experiment)
    sweep = {tag: os.environ[env] for env, tag in SWEEP_TAGS.items() if os.environ.get(env)}
    run = mlflow.start_run(run_name=run_name, tags=(tags or {}) | sweep or None)
    mlflow.log_params({k: str(v) if isinstance(v, list) else v for k, v in flatten(params).items()})
    mlflow.set_tags(lineage.lineage_tags())
    return run.info.run_id


def log_datasets(folder: Path, contexts: dict[str, str], source: str) -> None:
    """Each split file `folder/<split>.parquet` as an MLflow dataset input of the active run (the UI's Dataset column),
    named `<source>/<split>`, with DVC's hash of the file as its digest and of the folder (dvc.lock) as a tag. Only
    the file's metadata and first rows are read: its schema from those, its row count from the footer (a whole
    800k-row split read into pandas added 3 GB to finetune's peak RSS, bench/results/memory.json)."""
    import pyarrow.parquet as pq
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    mlflow = mlflow_api()
    folder_md5 = lineage.data_hashes().get(str(folder), "")
    for split, context in contexts.items():
        path = folder / f"{split}.parquet"
        file = pq.ParquetFile(path)
        head = next(file.iter_batches(batch_size=100), None)
        with warnings.catch_warnings():  # MLflow registers its local-file source twice, then warns it is ambiguous
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple")
            dataset = MetaDataset(resolve_dataset_source(str(path)), name=f"{source}/{split}",
                                  digest=lineage.file_md5(path),
                                  schema=infer_signature(head.to_pandas()).inputs if head is not None else None)
        mlflow.log_input(dataset, context=context, tags={"dvc.path": str(path), "dvc.folder_md5": folder_md5,
                                                         "rows": str(file.metadata.num_rows)})


def log_table(df, path: str) -> None:
    """A table artifact the MLflow UI shows as a table (per-class scores), instead of one chart per number."""
    mlflow_api().log_table(df, artifact_file=path)


def end_run(status: str = "FINISHED") -> None:
    mlflow_api().end_run(status=status)


def fail_run() -> None:
    """Mark the active run FAILED, on the way out of a stage that raised. When the store is gone too, that fails
    (after MLflow's retries, stages.cli.MLFLOW_HTTP_DEFAULTS): a line says so and the stage's own error goes on; the
    run stays RUNNING until the next start of the stage closes it (close_dangling)."""
    import mlflow

    run = mlflow.active_run()
    try:
        end_run("FAILED")  # pops the run first: MLflow's exit hook does not try (and wait) again
    except Exception as e:  # noqa: BLE001 - whatever ending it raised, the stage's own error is the one to report
        why = trackguard.connection_problem(e) or (str(e).splitlines() or [type(e).__name__])[0][:200]
        log.warning("could not mark MLflow run %s FAILED (%s)", run.info.run_id if run else "?", why)


def close_dangling(run_id: str) -> list[str]:
    """Runs of this stage and inputs that a killed process left RUNNING, closed KILLED (stages.trackguard)."""
    return trackguard.close_dangling(client(), run_id)


def save_run_file(run_id: str) -> None:
    write_json(RUN_FILE, {"run_id": run_id, "tracking_uri": credentials.strip_userinfo(tracking_uri())})


@contextlib.contextmanager
def resume_run() -> Iterator[Any]:
    """Re-open the run finetune started (its id is in RUN_FILE)."""
    run_id = read_json(RUN_FILE)["run_id"]
    mlflow = mlflow_api()
    try:
        mlflow.get_run(run_id)
    except Exception as e:
        if trackguard.connection_problem(e):
            raise  # the store stopped answering: stages.cli says so in one line
        raise PipelineError(f"{RUN_FILE}: MLflow run {run_id} not found at {credentials.strip_userinfo(tracking_uri())} "
                            f"(tracking store moved? re-run finetune: dvc repro -f finetune)") from None
    run = mlflow.start_run(run_id=run_id)
    try:
        yield run
    except BaseException:  # FAILED, as finetune's run is (stages.launch.tracked), without hanging on a store gone too
        fail_run()
        raise
    end_run()


def log_params(params: dict[str, Any]) -> None:
    mlflow_api().log_params(params)


def log_metrics(metrics: dict[str, float]) -> None:
    mlflow_api().log_metrics(metrics)


def log_artifacts(paths: list[str], folder: str) -> None:
    """Files, or the files of folders, into `folder` of the active run."""
    mlflow = mlflow_api()
    for path in paths:
        (mlflow.log_artifacts if Path(path).is_dir() else mlflow.log_artifact)(path, artifact_path=folder)


def set_tags(tags: dict[str, str]) -> None:
    mlflow_api().set_tags(tags)


def log_dict(obj: dict, path: str) -> None:
    mlflow_api().log_dict(obj, path)


def log_text(text: str, path: str) -> None:
    mlflow_api().log_text(text, path)


def log_served_model(model_dir: str, model_name: str, requirements: list[str], example, example_output) -> str:
    """Log the fine-tuned folder as the pyfunc model (stages.serving.Served, declared from code, with the stages
    package as code) to the active run and register it under `model_name`; returns the new version."""
    from mlflow.models import infer_signature

    from stages import served_model  # imported, not only named: the register stage's dvc.yaml deps include it
    from stages.serving import Served

    # models-from-code (stages/served_model.py declares Served()): the registry stores code, no pickled object
    info = mlflow_api().pyfunc.log_model(
        name="model", python_model=served_model.__file__, artifacts={"model": model_dir},
        code_paths=[str(Path(__file__).parent)], pip_requirements=requirements, input_example=example,
        signature=Served.signature(infer_signature(example, example_output)), registered_model_name=model_name)
    return str(info.registered_model_version)


class EpochLogger:
    """Training callbacks that log step and epoch metrics to the active MLflow run."""

    def __init__(self) -> None:
        self.mlflow = mlflow_api()

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics({f"step_{k}": v for k, v in metrics.items()}, step=step)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics(metrics, step=epoch)
