"""Drift between new rows and the train split: the report flows.retrain decides on (retrain, retrain and flag, skip).

Four measures, each a number with a threshold in params (retrain.drift.flag / .skip):
  - labels: chi-square test of the label counts, new vs train (scipy); its p-value (low: the mix changed);
  - length: the two-sample Kolmogorov-Smirnov statistic of text lengths in words (scipy);
  - [UNK]: the share of the champion tokenizer's tokens that are [UNK], new minus train (text its vocabulary lacks);
  - embeddings: a domain classifier (logistic regression, 5-fold cross-validated, scikit-learn) on the champion
    encoder's mean-pooled vectors, telling new rows from train rows apart; its ROC AUC (0.5: indistinguishable).
The texts and labels come from the task (`Task.drift_view`), so every task gets the same report.
"""

from __future__ import annotations

import numpy as np

MEASURES = {  # measure → (the number compared, True when drift means above the threshold)
    "label_p": ("labels", "p_value", False),
    "length_ks": ("length", "ks", True),
    "unk_increase": ("unk", "increase", True),
    "domain_auc": ("embeddings", "auc", True),
}


def label_drift(train: list[str], new: list[str]) -> dict:
    """Chi-square test of homogeneity on the label counts (labels that occur in neither side are left out)."""
    from scipy.stats import chi2_contingency

    classes = sorted(set(train) | set(new))
    table = np.array([[train.count(c) for c in classes], [new.count(c) for c in classes]])
    shares = {side: {c: round(int(n) / max(int(row.sum()), 1), 4) for c, n in zip(classes, row, strict=True)}
              for side, row in zip(("train", "new"), table, strict=True)}
    if len(classes) < 2 or not table[1].sum() or not table[0].sum():
        return {"chi2": 0.0, "p_value": 1.0, "shares": shares}
    chi2, p, _, _ = chi2_contingency(table)
    return {"chi2": round(float(chi2), 3), "p_value": float(p), "shares": shares}


def length_drift(train: list[str], new: list[str]) -> dict:
    from scipy.stats import ks_2samp

    a, b = (np.array([len(t.split()) for t in texts]) for texts in (train, new))
    ks = ks_2samp(a, b)
    return {"ks": round(float(ks.statistic), 4), "p_value": float(ks.pvalue),
            "train_median": float(np.median(a)), "new_median": float(np.median(b))}


def unk_drift(train_ids: list[list[int]], new_ids: list[list[int]], unk_id: int | None) -> dict:
    def share(seqs):
        total = sum(len(s) for s in seqs)
        return sum(s.count(unk_id) for s in seqs) / total if total and unk_id is not None else 0.0
    a, b = share(train_ids), share(new_ids)
    return {"train": round(a, 5), "new": round(b, 5), "increase": round(b - a, 5)}


def domain_auc(train_x: np.ndarray, new_x: np.ndarray, seed: int = 0) -> dict:
    """Cross-validated ROC AUC of a logistic regression telling new vectors (1) from train vectors (0)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = min(5, len(train_x), len(new_x))
    if folds < 2:
        return {"auc": None, "why": "fewer than 2 rows on a side"}
    x, y = np.vstack([train_x, new_x]), np.r_[np.zeros(len(train_x)), np.ones(len(new_x))]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    scores = cross_val_predict(model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                               method="predict_proba")[:, 1]
    return {"auc": round(float(roc_auc_score(y, scores)), 4), "folds": folds}


def sample(items: list, n: int, seed: int) -> list:
    """Up to `n` of `items`, a seeded choice, in their order."""
    if len(items) <= n:
        return list(items)
    idx = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
    return [items[i] for i in idx]


def value(report: dict, measure: str) -> float | None:
    section, key, _ = MEASURES[measure]
    return report.get(section, {}).get(key)


def exceeded(report: dict, thresholds) -> list[str]:
    """The measures past their threshold, as readable lines (a null threshold or a missing value never counts)."""
    out = []
    for measure, (_, _, above) in MEASURES.items():
        limit, got = getattr(thresholds, measure), value(report, measure)
        if limit is None or got is None:
            continue
        if (got > limit) if above else (got < limit):
            out.append(f"{measure} {got:.4g} {'>' if above else '<'} {limit:g}")
    return out


def decide(report: dict, drift_params) -> tuple[str, list[str]]:
    """skip when a `skip` threshold is passed; retrain_and_flag when a `flag` one is; else retrain. With reasons."""
    if skip := exceeded(report, drift_params.skip):
        return "skip", skip
    if flag := exceeded(report, drift_params.flag):
        return "retrain_and_flag", flag
    return "retrain", []


def markdown(report: dict, decision: str, reasons: list[str]) -> str:
    """The report as the markdown the Prefect artifact and the MLflow artifact show."""
    lab, length, unk, emb = (report.get(k, {}) for k in ("labels", "length", "unk", "embeddings"))
    lines = [f"# Drift report: **{decision}**", "",
             f"New rows: {report.get('new_rows', 0)} (sampled {report.get('sampled_new', 0)}) against "
             f"{report.get('train_rows', 0)} train rows (sampled {report.get('sampled_train', 0)}); "
             f"encoder and tokenizer: {report.get('encoder', '?')}.", ""]
    if reasons:
        lines += ["Past a threshold: " + "; ".join(reasons), ""]
    lines += ["| measure | train | new | statistic |", "|---|---|---|---|"]
    if "shares" in lab:
        classes = sorted(lab["shares"]["train"])
        shares = [", ".join(f"{c} {lab['shares'][s].get(c, 0):.1%}" for c in classes[:8]) for s in ("train", "new")]
        lines.append(f"| labels | {shares[0]} | {shares[1]} | chi-square {lab['chi2']}, p = {lab['p_value']:.3g} |")
    if "train_median" in length:
        lines.append(f"| length (words, median) | {length['train_median']:g} | {length['new_median']:g} | "
                     f"KS {length['ks']}, p = {length['p_value']:.3g} |")
    if "train" in unk:
        lines.append(f"| [UNK] share of tokens | {unk['train']:.3%} | {unk['new']:.3%} | {unk['increase']:+.3%} |")
    if emb:
        lines.append(f"| embeddings | | | domain-classifier AUC {emb.get('auc')} (0.5: indistinguishable) |")
    if report.get("register"):
        reg = report["register"]
        lines += ["", f"Registered version {reg.get('version')}: "
                  f"{'promoted to champion' if reg.get('promoted') else 'not promoted'} ({reg.get('reason')})"]
    files = report.get("files", {})
    if files:
        lines += ["", "| file | rows | outcome |", "|---|---|---|"]
        lines += [f"| {name} | {f.get('rows', '')} | {f['outcome']} |" for name, f in files.items()]
    return "\n".join(lines) + "\n"
