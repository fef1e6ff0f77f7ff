"""The champion/challenger gate: is the challenger better than the champion with confidence, on the same test units?

Both models' test results arrive as per-unit counts (`Counts`: for each test unit, a row or a sentence, and each class,
its true positives, false positives and false negatives). Every metric the gate tests is a function of their sums,
so a paired bootstrap reweights the units (one multinomial draw per resample, the same for both models) and rescores
both without calling sklearn or seqeval again. Three checks, all must pass to promote:

- the paired bootstrap interval of (challenger - champion) on the metric lies above `min_improvement`;
- McNemar's exact test on the units one model gets right and the other wrong, for accuracy-type metrics (the metric
  is the share of units with no error): p below `mcnemar_alpha`, the challenger winning more of them;
- no class (label, entity type) loses more than `max_class_regression` of its F1.

Pure: numbers in, a decision dict out. register feeds it; tests feed it hand-built prediction sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

# What the gate can compute from summed counts: micro over classes, macro over classes, support-weighted, and the
# share of units without an error ('exact': accuracy for one label per row, subset accuracy for label sets).
KINDS = ("exact", "f1_micro", "precision_micro", "recall_micro", "f1_macro", "f1_weighted")


@dataclass(frozen=True)
class Counts:
    """Per test unit and class: tp, fp, fn (shape units x 3 x classes). `classes` names the last axis."""

    counts: np.ndarray
    classes: tuple[str, ...]

    @cached_property
    def exact(self) -> np.ndarray:
        """1 where the unit has no false positive and no false negative."""
        return (self.counts[:, 1:].sum(axis=(1, 2)) == 0).astype(np.float64)

    @cached_property
    def _flat(self) -> np.ndarray:
        return self.counts.reshape(len(self.counts), -1).astype(np.float64)

    def metric(self, w: np.ndarray, kind: str, macro_all: bool) -> np.ndarray:
        """The metric on the units weighted by each row of `w` (resamples x units: how often each unit is drawn)."""
        return score((w @ self._flat).reshape(len(w), *self.counts.shape[1:]), w @ self.exact, w.sum(1), kind,
                     macro_all)

    def value(self, kind: str, macro_all: bool) -> float:
        """The metric on all units, each once."""
        return float(self.metric(np.ones((1, len(self.counts))), kind, macro_all)[0])

    def rescorer(self, kind: str, macro_all: bool):
        """rescore(idx): the metric on the units `idx` (with repeats: a bootstrap resample), as evaluate's interval
        takes it (stages.tasks.base.Evaluation)."""
        n = len(self.counts)
        return lambda idx: float(self.metric(np.bincount(idx, minlength=n)[None].astype(np.float64), kind,
                                             macro_all)[0])

    def aligned(self, classes: tuple[str, ...]) -> Counts:
        """The same counts with the class axis in `classes`' order (a model may number its labels differently)."""
        order = [self.classes.index(c) for c in classes]
        return Counts(self.counts[:, :, order], tuple(classes))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


def score(tot: np.ndarray, exact: np.ndarray, n: np.ndarray, kind: str, macro_all: bool) -> np.ndarray:
    """The metric `kind` from summed counts `tot` (... x 3 x classes), summed exact units and unit counts (...).
    `macro_all`: macro-F1 averages over every class (sklearn on label sets) rather than the classes that occur in truth
    or prediction (sklearn on one label per row, seqeval)."""
    tp, fp, fn = tot[..., 0, :], tot[..., 1, :], tot[..., 2, :]
    if kind == "exact":
        return _ratio(exact, n)
    if kind.endswith("_micro"):
        tp_, fp_, fn_ = tp.sum(-1), fp.sum(-1), fn.sum(-1)
        return {"f1_micro": _ratio(2 * tp_, 2 * tp_ + fp_ + fn_), "precision_micro": _ratio(tp_, tp_ + fp_),
                "recall_micro": _ratio(tp_, tp_ + fn_)}[kind]
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    if kind == "f1_weighted":
        support = tp + fn
        return _ratio((f1 * support).sum(-1), support.sum(-1))
    if kind == "f1_macro":
        present = np.ones_like(f1, bool) if macro_all else (tp + fp + fn) > 0
        return _ratio((f1 * present).sum(-1), present.sum(-1).astype(np.float64))
    raise ValueError(f"unknown metric kind {kind!r} (known: {', '.join(KINDS)})")


def class_f1(c: Counts) -> dict[str, tuple[float, int]]:
    """Per class: (F1, support) on all test units."""
    tp, fp, fn = c.counts.sum(0)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {name: (float(f1[i]), int(tp[i] + fn[i])) for i, name in enumerate(c.classes)}


def paired_bootstrap(new: Counts, old: Counts, kind: str, macro_all: bool, samples: int, confidence: float,
                     seed: int, chunk: int = 100) -> tuple[float, float, float]:
    """(observed difference, interval low, high) of new - old on the metric, over `samples` resamples of the units
    with replacement; both models see the same resample (paired). Chunked: memory stays ~chunk x units floats."""
    n = len(new.counts)
    observed = new.value(kind, macro_all) - old.value(kind, macro_all)
    rng, diffs = np.random.default_rng(seed), []
    for start in range(0, samples, chunk):
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, samples - start)).astype(np.float64)
        diffs.append(new.metric(w, kind, macro_all) - old.metric(w, kind, macro_all))
    d = np.concatenate(diffs)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(d, [tail, 100 - tail])
    return observed, float(low), float(high)


def mcnemar(new: Counts, old: Counts) -> dict:
    """Exact McNemar test: units only the challenger gets right (b) against units only the champion gets right (c);
    two-sided binomial p-value of b among b + c at 1/2."""
    from scipy.stats import binomtest

    a, b = new.exact.astype(bool), old.exact.astype(bool)
    only_new, only_old = int((a & ~b).sum()), int((~a & b).sum())
    p = binomtest(only_new, only_new + only_old, 0.5).pvalue if only_new + only_old else 1.0
    return {"only_challenger_right": only_new, "only_champion_right": only_old, "p_value": float(p)}


def gate(new: Counts, old: Counts, kind: str, macro_all: bool, p) -> dict:
    """Pure core: the decision and its numbers. `p`: register's params (bootstrap_samples, confidence, seed,
    min_improvement, mcnemar_alpha, max_class_regression)."""
    if new.counts.shape[0] != old.counts.shape[0]:
        raise ValueError(f"the two models were scored on different test splits ({new.counts.shape[0]} and "
                         f"{old.counts.shape[0]} units)")
    old = old.aligned(new.classes)
    values = [c.value(kind, macro_all) for c in (new, old)]
    diff, low, high = paired_bootstrap(new, old, kind, macro_all, p.bootstrap_samples, p.confidence, p.seed)
    checks, reasons = {}, []
    checks["interval"] = low > p.min_improvement
    if not checks["interval"]:
        reasons.append(f"the {p.confidence:.0%} interval of the difference [{low:+.4f}, {high:+.4f}] does not lie "
                       f"above {p.min_improvement}")
    test = mcnemar(new, old) if kind == "exact" else None
    if test is not None:
        won = test["only_challenger_right"] > test["only_champion_right"]
        checks["mcnemar"] = won and test["p_value"] < p.mcnemar_alpha
        if not checks["mcnemar"]:
            reasons.append(f"McNemar: {test['only_challenger_right']} units only the challenger gets right, "
                           f"{test['only_champion_right']} only the champion, p = {test['p_value']:.3g} "
                           f"(needs < {p.mcnemar_alpha})")
    f_new, f_old = class_f1(new), class_f1(old)
    per_class = {c: {"challenger_f1": round(f_new[c][0], 4), "champion_f1": round(f_old[c][0], 4),
                     "delta": round(f_new[c][0] - f_old[c][0], 4), "support": f_new[c][1]} for c in new.classes}
    losers = {c: d for c, d in per_class.items() if d["support"] > 0 and -d["delta"] > p.max_class_regression}
    checks["classes"] = not losers
    if losers:
        shown = ", ".join(f"'{c}' {d['champion_f1']:.3f} -> {d['challenger_f1']:.3f}" for c, d in
                          sorted(losers.items(), key=lambda x: x[1]["delta"])[:5])
        reasons.append(f"{len(losers)} class(es) lose more than {p.max_class_regression} F1: {shown}")
    promote = all(checks.values())
    verdict = (f"better with confidence: {values[0]:.4f} vs {values[1]:.4f}, difference {diff:+.4f}, "
               f"{p.confidence:.0%} interval [{low:+.4f}, {high:+.4f}]" if promote else "; ".join(reasons))
    return {"promote": promote, "verdict": verdict, "challenger": round(values[0], 6), "champion": round(values[1], 6),
            "difference": round(diff, 6), "interval": [round(low, 6), round(high, 6)], "confidence": p.confidence,
            "resamples": p.bootstrap_samples, "seed": p.seed, "mcnemar": test, "checks": checks,
            "per_class": per_class, "units": int(new.counts.shape[0])}
