"""Register the fine-tuned model in the MLflow registry and decide the aliases.

The new version always becomes the `challenger`; it becomes the `champion` when there is none, or
when it beats the champion's test metric (strictly, and by at least `register.min_improvement`). The decision and
its numbers go to `reports/register.json` and the run.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path

from stages import tasks, tracking
from stages.io import read_json, write_json

MODEL, METRICS, REPORT = Path("models/finetuned"), Path("reports/metrics.json"), Path("reports/register.json")
REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "mlflow", "pydantic", "pyyaml",
                "seqeval", "scikit-learn", "datasets")  # the served code imports stages.tasks, which imports these
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
    params, task = tasks.load()
    p, metric = params.register, task.metric(params.register.metric)
    value = read_json(METRICS)["test"][metric]
    champ = tracking.alias_version(p.model_name, p.champion_alias)  # before logging: one name serves one task
    task.require_same(champ.tags.get("task", "sequence_classification") if champ else None,
                      f"register.model_name '{p.model_name}': its champion", f"set register.model_name to a name for "
                      f"{task.name} models")
    champ_value = tracking.run_metric(champ.run_id, f"test_{metric}") if champ else None
    labels = read_json(MODEL / "pipeline.json")["labels"]
    with tracking.resume_run() as run:
        ver = tracking.log_served_model(str(MODEL), p.model_name, pip_requirements(), task.examples,
                                        task.example_output(labels))
        tracking.tag_version(p.model_name, ver, {f"test_{metric}": str(value), "task": task.name})
        promote, reason = decide(value, champ_value, p.min_improvement)
        tracking.set_alias(p.model_name, p.challenger_alias, ver)
        if promote:
            tracking.set_alias(p.model_name, p.champion_alias, ver)
        report = {"model_name": p.model_name, "version": ver, "run_id": run.info.run_id, "metric": f"test_{metric}",
                  "value": value, "previous_champion": {"version": str(champ.version) if champ else None,
                                                        "value": champ_value},
                  "champion": ver if promote else str(champ.version), "promoted": promote, "reason": reason,
                  "model_uri": f"models:/{p.model_name}@{p.champion_alias}"}
        tracking.set_tags({"registry.version": ver, "registry.promoted": str(promote).lower(), "registry.reason": reason})
        tracking.log_dict(report, "reports/register.json")
    write_json(REPORT, report)
    log.info("%s version %s: %s (%s); champion is version %s", p.model_name, ver,
             "promoted to champion" if promote else "challenger only", reason, report["champion"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "register")
