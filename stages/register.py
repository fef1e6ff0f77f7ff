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
from stages.io import PipelineError, read_json, write_json

MODEL, METRICS, REPORT = Path("models/finetuned"), Path("reports/metrics.json"), Path("reports/register.json")
REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "mlflow", "pydantic", "pyyaml",
                "seqeval", "scikit-learn")  # seqeval/sklearn: stages.entities, which NER serving imports
INPUT_EXAMPLES = {"sequence_classification": ["a gem of a film", "a dull, lifeless remake"],
                  "token_classification": ["Angela Merkel visited Paris.", "Shares of Apple rose in New York."]}
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

    from stages.params import SEQUENCE_TASK, TOKEN_TASK, load_params
    from stages.serving import EntityTagger, TextClassifier

    params = load_params()
    p, task, metric = params.register, params.task, params.metric(params.register.metric)
    value = read_json(METRICS)["test"][metric]
    client = MlflowClient(tracking.tracking_uri())
    try:  # before logging anything: one registered model name serves one task
        champ = client.get_model_version_by_alias(p.model_name, p.champion_alias)
    except mlflow.exceptions.MlflowException:  # no champion alias (or no such model) yet
        champ = None
    if champ is not None and champ.tags.get("task", SEQUENCE_TASK) != task:
        raise PipelineError(f"register.model_name '{p.model_name}': its champion is a {champ.tags['task']} model; "
                            f"set register.model_name to a name for {task} models")
    champ_value = client.get_run(champ.run_id).data.metrics.get(f"test_{metric}") if champ else None
    labels = read_json(MODEL / "pipeline.json")["labels"]
    example = INPUT_EXAMPLES[task]
    if task == TOKEN_TASK:
        model = EntityTagger()
        example_out = [[{"type": "PER", "start": 0, "end": 13, "text": "Angela Merkel", "score": 0.99}]]
    else:
        model = TextClassifier()
        example_out = pd.DataFrame({"label": labels[:1], "score": [0.5]} | {f"prob_{n}": [0.5] for n in labels})
    with tracking.resume_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=model, artifacts={"model": str(MODEL)},
            code_paths=[str(Path(__file__).parent)], pip_requirements=pip_requirements(), input_example=example,
            signature=infer_signature(example, example_out), registered_model_name=p.model_name)
        ver = str(info.registered_model_version)
        client.set_model_version_tag(p.model_name, ver, f"test_{metric}", str(value))
        client.set_model_version_tag(p.model_name, ver, "task", task)
        promote, reason = decide(value, champ_value, p.min_improvement)
        client.set_registered_model_alias(p.model_name, p.challenger_alias, ver)
        if promote:
            client.set_registered_model_alias(p.model_name, p.champion_alias, ver)
        report = {"model_name": p.model_name, "version": ver, "run_id": run.info.run_id, "metric": f"test_{metric}",
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
