"""Register the fine-tuned model in the MLflow registry and decide the aliases.

The new version always becomes the `challenger`. It becomes the `champion` when it is comparable with the champion and
beats it (strictly, and by at least `register.min_improvement`), or when there is none. Comparable means: its test
split was large enough to mean something (evaluate's `reliability`), and it has the champion's task and label set; a
version that is not stays a challenger, with the reason. The read-compare-set runs under the registry lock, so two
pipelines registering into one store at once cannot both win. The decision and its numbers go to
`reports/register.json`, the run and the version's tags.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path

from stages import registry, tasks, tracking
from stages.io import read_json, write_json
from stages.registry import Facts

MODEL, METRICS, REPORT = Path("models/finetuned"), Path("reports/metrics.json"), Path("reports/register.json")
REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "mlflow", "pydantic", "pyyaml",
                "seqeval", "scikit-learn", "datasets")  # the served code imports stages.tasks, which imports these
log = logging.getLogger(__name__)


def decide(new: Facts, champion: Facts | None, min_improvement: float) -> tuple[bool, str]:
    """Pure core: does the new version take the champion alias, and why (not)?"""
    if not new.reliable:
        return False, f"not comparable: {new.why}"
    if champion is None:
        return True, "no champion yet"
    if champion.made_for != new.made_for:
        return False, f"not comparable: task {new.made_for}, the champion's is {champion.made_for}"
    if champion.labels != new.labels:
        added, missing = sorted(new.labels - champion.labels), sorted(champion.labels - new.labels)
        return False, (f"not comparable: the label set differs from the champion's (new: {added or 'none'}; "
                       f"missing: {missing or 'none'})")
    if not champion.reliable or champion.value is None:
        return True, f"the champion (version {champion.version}) has no comparable test score: {champion.why or 'none'}"
    new_v, old = new.value, champion.value
    if new_v > old and new_v >= old + min_improvement:  # a tie never moves the champion
        return True, f"{new_v:.4f} beats champion {old:.4f} by >= {min_improvement}"
    return False, f"{new_v:.4f} does not beat champion {old:.4f} by > 0 and >= {min_improvement}"


def workspace_note(name: str, ver: str, promoted: bool, champion: str | None, aliases: tuple[str, str]) -> str:
    """Pure core: what the workspace's model is in the registry. After `dvc exp run` it is often worse than what
    serves; this says so plainly."""
    champion_alias, challenger_alias = aliases
    uri = f"models:/{name}@{champion_alias}"
    if promoted:
        return f"models/finetuned is version {ver}, now the {champion_alias}: {uri} serves it"
    serves = f"{uri} still serves version {champion}" if champion else f"no version serves ({name} has no {champion_alias})"
    return f"models/finetuned is version {ver}, only the {challenger_alias}; {serves}"


def pip_requirements() -> list[str]:
    # Explicit pins: the inferred list would pull torchvision (transformers flavor) and miss tokenizers.
    return [f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS]


def main() -> None:
    params, task = tasks.load()
    tracking.check_server()  # a tracking server that is down fails in seconds
    p, metric = params.register, task.metric(params.register.metric)
    metrics = read_json(METRICS)
    rel = metrics["reliability"]
    labels = read_json(MODEL / "pipeline.json")["labels"]
    new = Facts(None, task.name, frozenset(labels), metrics["test"][metric], rel["comparable"], "; ".join(rel["reasons"]))
    with tracking.resume_run() as run:
        ver = tracking.log_served_model(str(MODEL), p.model_name, pip_requirements(), task.examples,
                                        task.example_output(labels))
        registry.tag_version(p.model_name, ver, registry.facts_tags(new, metric))
        with registry.lock(p.model_name):  # read champion, compare, move aliases: one step for concurrent pipelines
            champ = registry.alias_version(p.model_name, p.champion_alias)
            old = registry.facts(champ, metric) if champ else None
            promote, reason = decide(new, old, p.min_improvement)
            registry.set_alias(p.model_name, p.challenger_alias, ver)
            if promote:
                registry.set_alias(p.model_name, p.champion_alias, ver)
        registry.tag_version(p.model_name, ver, {"decision": reason})
        serving = ver if promote else (old.version if old else None)
        note = workspace_note(p.model_name, ver, promote, serving, (p.champion_alias, p.challenger_alias))
        report = {"model_name": p.model_name, "version": ver, "run_id": run.info.run_id, "metric": f"test_{metric}",
                  "value": new.value, "comparable": new.reliable,
                  "previous_champion": {"version": old.version if old else None, "value": old.value if old else None},
                  "champion": serving, "promoted": promote, "reason": reason,
                  "model_uri": f"models:/{p.model_name}@{p.champion_alias}", "workspace_model": note}
        tracking.set_tags({"registry.version": ver, "registry.promoted": str(promote).lower(), "registry.reason": reason})
        tracking.log_dict(report, "reports/register.json")
    write_json(REPORT, report)
    log.info("%s version %s: %s (%s)", p.model_name, ver, "promoted to champion" if promote else "challenger only", reason)
    log.info(note)


if __name__ == "__main__":
    from stages.cli import run

    run(main, "register")
