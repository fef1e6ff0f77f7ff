"""A markdown model card per registered version: what it is, what it was made from, how good it is against what,
why it was (not) promoted, and what it is not for. register logs it as `model_card.md` and writes it into the
version's description, where the MLflow registry UI shows it.
"""

from __future__ import annotations

import json


def _table(rows: list[tuple], header: tuple) -> list[str]:
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}",
            *(f"| {' | '.join(str(c) for c in r)} |" for r in rows)]


def card(report: dict, metrics: dict, params: dict, lineage: dict[str, str], task: str, unit: str) -> str:
    """Pure core: the card from register's report, evaluate's metrics.json, the params that made the model (the
    sections that decide it) and the run's lineage tags."""
    metric, primary = report["metric"], report["metric"].removeprefix("test_")
    gate = report.get("gate") or {}
    out = [f"# {report['model_name']} version {report['version']}", "",
           (f"A {task.replace('_', ' ')} model fine-tuned from `{params.get('model', {}).get('name')}` by the "
            "transfer pipeline (`dvc repro`)."), "", "## Decision", "",
           f"**{'promoted to champion' if report['promoted'] else 'challenger only'}**: {report['reason']}", ""]
    if gate:
        out += _table([("metric", metric), ("challenger", gate["challenger"]), ("champion (same test split)",
                                                                                 gate["champion"]),
                       ("difference", gate["difference"]),
                       (f"{gate['confidence']:.0%} paired bootstrap interval ({gate['resamples']} resamples)",
                        f"[{gate['interval'][0]}, {gate['interval'][1]}]"),
                       ("McNemar p", gate["mcnemar"]["p_value"] if gate.get("mcnemar") else "n/a (not accuracy-type)"),
                       ("champion scored by", gate.get("champion_scored", ""))], ("", "")) + [""]
        out += ["Per class (F1):", ""] + _table(
            [(c, d["champion_f1"], d["challenger_f1"], f"{d['delta']:+.4f}", d["support"])
             for c, d in gate["per_class"].items()], ("class", "champion", "challenger", "delta", "support")) + [""]
    test, ci = metrics.get("test", {}), metrics.get("reliability", {}).get("ci95", {}).get(primary)
    out += ["## Test metrics", "", f"On {metrics.get('reliability', {}).get(f'test_{unit}', '?')} test {unit}"
            + (f"; {primary} 95% interval [{ci[0]}, {ci[1]}]" if ci else "") + ".", ""]
    out += _table([(k, round(v, 4)) for k, v in test.items() if isinstance(v, float)], ("metric", "value")) + [""]
    if metrics.get("baselines"):
        out += ["Baselines on the same split:", ""] + _table(
            [(name, round(b.get(primary, float("nan")), 4)) for name, b in metrics["baselines"].items()],
            ("baseline", primary)) + [""]
    out += ["## Lineage", ""] + _table(sorted(lineage.items()), ("what", "version")) + [""]
    out += ["## Params", "", "```json", json.dumps(params, indent=1, sort_keys=True, default=str), "```", ""]
    out += ["## Intended use", "",
            (f"Predicting {task.replace('_', ' ')} labels for texts like those of its training data "
             f"(`{params.get('ingest', {}).get('source')}`), through `mlflow.pyfunc.load_model(\"models:/"
             f"{report['model_name']}@champion\")` or `mlflow models serve`."), "",
            "## Limits", "",
            (f"- Texts longer than {params.get('tokenize', {}).get('max_length')} tokens are read only up to that "
             "length (classifiers say so per prediction)."),
            ("- Scores hold for the test split's distribution; other domains, languages or label definitions need "
             "their own evaluation."),
            "- The metrics are point estimates on a finite test split: read them with the interval above."]
    reasons = metrics.get("reliability", {}).get("reasons") or []
    out += [f"- Not comparable: {r}" for r in reasons]
    return "\n".join(out) + "\n"
