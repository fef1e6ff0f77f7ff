"""Register the fine-tuned model in the MLflow registry and decide the aliases.

The new version always becomes the `challenger`. It becomes the `champion` when there is none, or when it is comparable
with the champion and better with confidence (stages.gate): both scored on the same current test split (the champion
re-scored when the split changed since it was registered), the paired bootstrap interval of the difference above
`register.min_improvement`, McNemar's test for accuracy-type metrics, and no class losing more than
`register.max_class_regression`. Comparable means: the new test split was large enough to mean something (evaluate's
`reliability`), and the model has the champion's task and label set; a version that is not stays a challenger, with
the reason. The champion it replaces becomes `previous` (flows.rollback moves it back). The alias decision runs
under the registry lock, so two pipelines registering into one store at once cannot both win. The decision and its
numbers go to `reports/register.json`, the run, the version's tags and its model card (its description).
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path

from stages import registry, tasks, tracking
from stages.champion import ARTIFACT_DIR, COUNTS, champion_counts, load_counts
from stages.gate import gate
from stages.io import read_json, write_json
from stages.modelcard import card
from stages.registry import Facts

MODEL, METRICS, REPORT = Path("models/finetuned"), Path("reports/metrics.json"), Path("reports/register.json")
CLEAN = Path("data/clean")
CARD_SECTIONS = ("task", "model", "ingest", "clean", "augment", "tokenize", "pretrain", "finetune")
REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "mlflow", "pydantic", "pyyaml",
                "seqeval", "scikit-learn", "datasets")  # the served code imports stages.tasks, which imports these
log = logging.getLogger(__name__)


def precheck(new: Facts, champion: Facts | None) -> tuple[bool, str] | None:
    """Pure core: the decisions made before any statistics (no champion; not comparable); None: the gate decides."""
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
    return None


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


def decide(task, params, ver: str, new: Facts, counts, split: str) -> tuple[bool, str, Facts | None, dict | None]:
    """Read the champion, gate version `ver` against it, and move the aliases: (promoted, reason, the champion's Facts
    before, the gate's numbers). The champion is scored outside the registry lock (re-scoring can take minutes); under
    the lock, if another pipeline moved the champion meanwhile, it is read and scored again, and the aliases move
    before the lock is let go."""
    p, metric = params.register, task.metric(params.register.metric)
    while True:
        champ = registry.alias_version(p.model_name, p.champion_alias)
        old = registry.facts(champ, metric) if champ else None
        verdict, gated = precheck(new, old), None
        if verdict is None:
            champ_counts, how = champion_counts(task, champ, split, CLEAN, params)
            gated = gate(counts, champ_counts, task.gate_metrics[metric], task.macro_over_all, p) | {
                "champion_scored": how}
            verdict = gated["promote"], gated["verdict"]
        with registry.lock(p.model_name):  # re-read, compare, move aliases: one step for concurrent pipelines
            now = registry.alias_version(p.model_name, p.champion_alias)
            if (now and now.version) != (champ and champ.version):
                continue  # the champion moved while we scored: decide against the new one
            promote, reason = verdict
            registry.set_alias(p.model_name, p.challenger_alias, ver)
            if promote:
                if champ is not None:
                    registry.set_alias(p.model_name, p.previous_alias, str(champ.version))
                registry.set_alias(p.model_name, p.champion_alias, ver)
            return promote, reason, old, gated


def main() -> None:
    params, task = tasks.load()
    tracking.check_server()  # a tracking server that is down fails in seconds
    p, metric = params.register, task.metric(params.register.metric)
    metrics = read_json(METRICS)
    rel = metrics["reliability"]
    labels = read_json(MODEL / "pipeline.json")["labels"]
    counts, split = load_counts(COUNTS)
    new = Facts(None, task.name, frozenset(labels), metrics["test"][metric], rel["comparable"], "; ".join(rel["reasons"]))
    with tracking.resume_run() as run:
        ver = tracking.log_served_model(str(MODEL), p.model_name, pip_requirements(), task.examples,
                                        task.example_output(labels))
        tracking.log_artifacts([str(COUNTS)], ARTIFACT_DIR)
        registry.tag_version(p.model_name, ver, registry.facts_tags(new, metric) | {"test_split": split})
        promote, reason, old, gated = decide(task, params, ver, new, counts, split)
        serving = ver if promote else (old.version if old else None)
        note = workspace_note(p.model_name, ver, promote, serving, (p.champion_alias, p.challenger_alias))
        report = {"model_name": p.model_name, "version": ver, "run_id": run.info.run_id, "metric": f"test_{metric}",
                  "value": new.value, "comparable": new.reliable, "test_split": split,
                  "previous_champion": {"version": old.version if old else None, "value": old.value if old else None},
                  "champion": serving, "promoted": promote, "reason": reason, "gate": gated,
                  "model_uri": f"models:/{p.model_name}@{p.champion_alias}", "workspace_model": note}
        lineage = {k: v for k, v in tracking.client().get_run(run.info.run_id).data.tags.items()
                   if k.startswith(("dvc.", "git.", "mlflow.source.git", "prefect."))}
        dumped = params.model_dump(mode="json")
        text = card(report, metrics, {k: dumped[k] for k in CARD_SECTIONS if k in dumped}, lineage, task.name, task.unit)
        registry.describe_version(p.model_name, ver, text)
        registry.tag_version(p.model_name, ver, gate_tags(promote, reason, gated))
        tracking.set_tags({"registry.version": ver, "registry.promoted": str(promote).lower(), "registry.reason": reason})
        tracking.log_dict(report, "reports/register.json")
        tracking.log_text(text, "model_card.md")
    write_json(REPORT, report)
    log.info("%s version %s: %s (%s)", p.model_name, ver, "promoted to champion" if promote else "challenger only", reason)
    log.info(note)


def gate_tags(promote: bool, reason: str, gated: dict | None) -> dict[str, str]:
    """The decision on the version: verdict and, when the gate ran, its numbers."""
    tags = {"decision": reason, "promoted": str(promote).lower()}
    if gated:
        tags |= {"gate.difference": str(gated["difference"]), "gate.interval": str(gated["interval"]),
                 "gate.champion_value": str(gated["champion"]), "gate.checks": str(gated["checks"])}
        if gated.get("mcnemar"):
            tags["gate.mcnemar_p"] = str(gated["mcnemar"]["p_value"])
    return tags


if __name__ == "__main__":
    from stages.cli import run

    run(main, "register")
