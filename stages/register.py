"""Register the fine-tuned model in the MLflow registry and decide the aliases.

The new version always becomes the `challenger`; it becomes the `champion` when there is none, or
when it beats the champion's test metric (strictly, and by at least `register.min_improvement`). The decision and
its numbers go to `reports/register.json` and the run.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path

from stages import tracking
from stages.io import read_json, write_json

MODEL, METRICS, REPORT = Path("models/finetuned"), Path("reports/metrics.json"), Path("reports/register.json")
REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "mlflow", "pydantic", "pyyaml")
INPUT_EXAMPLE = ["a gem of a film", "a dull, lifeless remake"]
log = logging.getLogger(__name__)


def decide(new: float, champion: float | None, min_improvement: float) -> tuple[bool, str]:
    """Pure core: does the new version take the champion alias?"""
    if champion is None:
        return True, "no champion yet"
    if new > champion and new >= champion + min_improvement:  # a tie never moves the champion
        return True, f"{new:.4f} beats champion {champion:.4f} by >= {min_improvement}"
    return False, f"{new:.4f} does not beat champion {champion:.4f} by > 0 and >= {min_improvement}"


def pip_requirements() -> list[str]:
    # Explicit pins: the inferred list would pull torchvision (transformers flavor) and miss tokenizers.
    return [f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS]


def main() -> None:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from stages.params import load_params
    from stages.serving import TextClassifier

    p = load_params().register
    value = read_json(METRICS)["test"][p.metric]
    client = MlflowClient(tracking.tracking_uri())
    with tracking.resume_run() as run:
        labels = read_json(MODEL / "pipeline.json")["labels"]
        example_out = pd.DataFrame({"label": labels[:1], "score": [0.5]} | {f"prob_{n}": [0.5] for n in labels})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=TextClassifier(), artifacts={"model": str(MODEL)},
            code_paths=[str(Path(__file__).parent)], pip_requirements=pip_requirements(), input_example=INPUT_EXAMPLE,
            signature=infer_signature(INPUT_EXAMPLE, example_out), registered_model_name=p.model_name)
        ver = str(info.registered_model_version)
        client.set_model_version_tag(p.model_name, ver, f"test_{p.metric}", str(value))
        try:
            champ = client.get_model_version_by_alias(p.model_name, p.champion_alias)
            champ_value = client.get_run(champ.run_id).data.metrics.get(f"test_{p.metric}")
        except mlflow.exceptions.MlflowException:  # no champion alias yet
            champ, champ_value = None, None
        promote, reason = decide(value, champ_value, p.min_improvement)
        client.set_registered_model_alias(p.model_name, p.challenger_alias, ver)
        if promote:
            client.set_registered_model_alias(p.model_name, p.champion_alias, ver)
        report = {"model_name": p.model_name, "version": ver, "run_id": run.info.run_id, "metric": f"test_{p.metric}",
                  "value": value, "previous_champion": {"version": str(champ.version) if champ else None, "value": champ_value},
                  "champion": ver if promote else str(champ.version), "promoted": promote, "reason": reason,
                  "model_uri": f"models:/{p.model_name}@{p.champion_alias}"}
        mlflow.set_tags({"registry.version": ver, "registry.promoted": str(promote).lower(), "registry.reason": reason})
        mlflow.log_dict(report, "reports/register.json")
    write_json(REPORT, report)
    log.info("%s version %s: %s (%s); champion is version %s", p.model_name, ver,
             "promoted to champion" if promote else "challenger only", reason, report["champion"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "register")
