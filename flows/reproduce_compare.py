"""flows.reproduce's comparison side: the recorded and the rebuilt scores, data hashes and weights, side by side."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

SCORE_PREFIXES = ("test_", "baseline_")  # what evaluate logs about the test split: the model's and the baselines'
log = logging.getLogger("flows.reproduce")


def recorded_scores(mv, metrics: dict[str, float], metric_tag: str | None) -> dict[str, float]:
    """The version's numbers: its register metric (the version tag) first, then what evaluate logged to its run."""
    out = {}
    if metric_tag and mv.tags.get(metric_tag) not in (None, "None"):
        out[metric_tag] = float(mv.tags[metric_tag])
    return out | {k: v for k, v in sorted(metrics.items()) if k.startswith(SCORE_PREFIXES) and k not in out}


def count_names() -> set[str]:
    """The metrics that count test units (`test_rows`, NER's `test_sentences`): equal or not, no tolerance."""
    from stages.tasks import TASKS

    return {f"test_{t.unit}" for t in TASKS.values()}


def compare(
    recorded: dict[str, float], rebuilt: dict[str, float], tolerance: float, counts: set[str] | None = None
) -> list[dict]:
    """Pure core: one row per recorded number. Scores (0-1) may differ by `tolerance` points (hundredths: 0.5
    points = 0.005); counts (`counts`, default `count_names()`) must be equal."""
    counts = count_names() if counts is None else counts
    rows = []
    for name, old in recorded.items():
        new = rebuilt.get(name)
        count = name in counts
        if new is None:
            ok, diff = False, None
        elif math.isnan(old) or math.isnan(new):
            ok, diff = math.isnan(old) and math.isnan(new), None
        else:
            diff = new - old if count else (new - old) * 100
            ok = diff == 0 if count else abs(diff) <= tolerance + 1e-9
        rows.append(
            {
                "name": name,
                "recorded": old,
                "rebuilt": new,
                "kind": "count" if count else "score",
                "diff": diff,
                "ok": ok,
            }
        )
    return rows


def compare_data(recorded: dict[str, str], rebuilt: dict[str, str]) -> list[dict]:
    """Pure core: the recorded data hashes (and test split) against the rebuilt ones."""
    return [
        {"path": path, "recorded": md5, "rebuilt": rebuilt.get(path), "ok": rebuilt.get(path) == md5}
        for path, md5 in recorded.items()
    ]


def table(rows: list[dict], data: list[dict], tolerance: float, weights: dict | None = None) -> str:
    def num(v, count: bool) -> str:
        return "missing" if v is None else f"{v:.0f}" if count else f"{v:.6f}"

    width = max([len(r["name"]) for r in rows] + [len(d["path"]) for d in data] + [6])
    lines = [
        f"{'metric':<{width}}  {'recorded':>12}  {'rebuilt':>12}  {'diff':>10}",
    ]
    for r in rows:
        count = r["kind"] == "count"
        diff = "" if r["diff"] is None else f"{r['diff']:+.0f}" if count else f"{r['diff']:+.2f} pt"
        verdict = "" if r["ok"] else "  DIFFERS" + ("" if count or r["rebuilt"] is None else f" (> {tolerance} pt)")
        lines.append(
            f"{r['name']:<{width}}  {num(r['recorded'], count):>12}  {num(r['rebuilt'], count):>12}  "
            f"{diff:>10}{verdict}"
        )
    if data:
        lines += ["", f"{'data':<{width}}  {'recorded':<36}  {'rebuilt':<36}"]
        lines += [
            f"{d['path']:<{width}}  {d['recorded']:<36}  {d['rebuilt'] or 'missing':<36}"
            f"{'' if d['ok'] else '  DIFFERS'}"
            for d in data
        ]
    if weights:
        lines += [
            "",
            f"weights ({', '.join(weights['files'])}): "
            + (
                "byte-identical to the registered ones"
                if weights["identical"]
                else "not byte-identical to the registered ones (expected on another machine or a GPU: "
                "the metrics decide)"
            ),
        ]
    return "\n".join(lines)


def rebuilt_numbers(project: Path, store: str) -> tuple[str, dict[str, float], str | None]:
    """The rebuilt run's id and metrics (from the throwaway store), and the test split's hash evaluate wrote."""
    import numpy as np
    from mlflow import MlflowClient

    run_id = json.loads((project / "reports/mlflow_run.json").read_text())["run_id"]
    metrics = MlflowClient(store, registry_uri=store).get_run(run_id).data.metrics
    split = None
    if (project / "reports/test_counts.npz").exists():
        with np.load(project / "reports/test_counts.npz", allow_pickle=False) as z:
            split = str(z["split"]) if "split" in z else None
    return run_id, metrics, split


def model_files(client, mv, dest: Path) -> dict[str, str]:
    """md5 of each file of the version's registered fine-tuned folder (the pyfunc's one artifact folder)."""
    import mlflow

    from stages.lineage import file_md5

    base = f"{client.get_model_version_download_uri(mv.name, mv.version).rstrip('/')}/artifacts"
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=base, dst_path=str(dest), tracking_uri=client.tracking_uri)
    )
    folder = next(p for p in sorted(local.iterdir()) if p.is_dir())
    return {f.relative_to(folder).as_posix(): file_md5(f) for f in sorted(folder.rglob("*")) if f.is_file()}


def compare_weights(client, mv, project: Path, dest: Path) -> dict | None:
    """Whether the rebuilt weights (models/finetuned/*.safetensors) are byte-identical to the registered ones: told,
    not judged (another machine or a GPU gives other bits, and the metrics decide); None when they cannot be read."""
    from mlflow.exceptions import MlflowException

    from stages.lineage import file_md5

    try:
        recorded = {k: v for k, v in model_files(client, mv, dest).items() if k.endswith(".safetensors")}
    except (MlflowException, OSError, StopIteration) as e:
        log.warning("could not read version %s's registered weights, so they are not compared: %s", mv.version, e)
        return None
    folder = project / "models/finetuned"
    rebuilt = {f.relative_to(folder).as_posix(): file_md5(f) for f in sorted(folder.rglob("*.safetensors"))}
    return {"files": sorted(recorded), "identical": bool(recorded) and recorded == rebuilt}
