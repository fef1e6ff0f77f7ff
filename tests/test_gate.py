"""register's gate on hand-built prediction sets where the answer is known, for every task's counts; and the counts
give exactly the metrics evaluate reports (sklearn, seqeval), so the gate tests what the UI shows."""

from types import SimpleNamespace

import numpy as np
import pytest

from stages.entities import entity_scores, type_counts
from stages.gate import Counts, class_f1, gate, mcnemar, paired_bootstrap, score
from stages.tasks import get
from stages.tasks.multilabel import multilabel_metrics, set_counts
from stages.tasks.sequence import classification_metrics, label_counts

P = SimpleNamespace(bootstrap_samples=1000, confidence=0.95, seed=0, min_improvement=0.0, mcnemar_alpha=0.05,
                    max_class_regression=0.05)
SEQ = get("sequence_classification")


def labelled(correct: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Predictions: y where `correct`, else the next class."""
    return np.where(correct, y, (y + 1) % n_classes)


def seq_counts(y: np.ndarray, pred: np.ndarray, labels=("neg", "pos")) -> Counts:
    return label_counts(y, pred, list(labels))


def decide(new: Counts, old: Counts, task=SEQ, metric: str = "auto", **over) -> dict:
    return gate(new, old, task.gate_metrics[task.metric(metric)], task.macro_over_all, SimpleNamespace(**vars(P) | over))


def test_clearly_better_is_promoted_with_its_numbers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    old_right = rng.random(1000) < 0.70
    new_right = old_right | (rng.random(1000) < 0.5)  # right wherever the champion was, and on half of the rest
    d = decide(seq_counts(y, labelled(new_right, y, 2)), seq_counts(y, labelled(old_right, y, 2)))
    assert d["promote"] and d["checks"] == {"interval": True, "mcnemar": True, "classes": True}
    assert d["challenger"] == pytest.approx(new_right.mean()) and d["champion"] == pytest.approx(old_right.mean())
    assert d["interval"][0] > 0.1 and d["mcnemar"]["only_champion_right"] == 0 and d["mcnemar"]["p_value"] < 1e-20
    assert d["verdict"].startswith("better with confidence")


def test_clearly_worse_is_refused():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 800)
    old_right = rng.random(800) < 0.85
    new_right = old_right & (rng.random(800) < 0.8)
    d = decide(seq_counts(y, labelled(new_right, y, 2)), seq_counts(y, labelled(old_right, y, 2)))
    assert not d["promote"] and d["interval"][1] < 0 and not d["checks"]["interval"] and not d["checks"]["mcnemar"]


def test_a_tie_within_noise_is_refused_though_the_point_estimate_is_higher():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    old_right = rng.random(400) < 0.80
    new_right = old_right.copy()  # 21 units won, 19 lost: +2 units, +0.5 point
    new_right[rng.choice(np.flatnonzero(~old_right), 21, replace=False)] = True
    new_right[rng.choice(np.flatnonzero(old_right), 19, replace=False)] = False
    d = decide(seq_counts(y, labelled(new_right, y, 2)), seq_counts(y, labelled(old_right, y, 2)))
    assert d["difference"] > 0 and not d["promote"]
    assert d["interval"][0] < 0 < d["interval"][1] and d["mcnemar"]["p_value"] > 0.05
    assert "interval" in d["verdict"] and "McNemar" in d["verdict"]


def test_one_class_collapsing_while_accuracy_rises_is_refused():
    """3 classes, 'rare' 10% of rows: the challenger gets the two big classes right more often (accuracy up, with
    confidence) but loses most of 'rare'."""
    labels = ("neg", "pos", "rare")
    rng = np.random.default_rng(3)
    y = rng.choice(3, 2000, p=[0.45, 0.45, 0.10])
    old_right = rng.random(2000) < 0.75
    new_right = np.where(y == 2, old_right & (rng.random(2000) < 0.3), old_right | (rng.random(2000) < 0.6))
    new, old = seq_counts(y, labelled(new_right, y, 3), labels), seq_counts(y, labelled(old_right, y, 3), labels)
    d = decide(new, old)
    assert d["challenger"] > d["champion"] + 0.05 and d["checks"]["interval"] and d["checks"]["mcnemar"]
    assert not d["promote"] and d["checks"]["classes"] is False
    assert d["per_class"]["rare"]["delta"] < -0.2 and "'rare'" in d["verdict"]
    assert decide(new, old, max_class_regression=1.0)["promote"]  # the class rule alone refused it


def test_min_improvement_is_the_bar_for_the_interval_not_the_point():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 3000)
    old_right = rng.random(3000) < 0.80
    new_right = old_right | (rng.random(3000) < 0.15)  # +3 points
    new, old = seq_counts(y, labelled(new_right, y, 2)), seq_counts(y, labelled(old_right, y, 2))
    d = decide(new, old)
    assert d["promote"] and 0.02 < d["interval"][0] < 0.03
    assert not decide(new, old, min_improvement=0.03)["promote"]


def test_the_bootstrap_is_paired_seeded_and_class_order_does_not_matter():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 500)
    a, b = seq_counts(y, labelled(rng.random(500) < 0.8, y, 2)), seq_counts(y, labelled(rng.random(500) < 0.75, y, 2))
    first = paired_bootstrap(a, b, "exact", False, 500, 0.95, seed=7)
    assert paired_bootstrap(a, b, "exact", False, 500, 0.95, seed=7) == first
    assert paired_bootstrap(a, b, "exact", False, 500, 0.95, seed=8) != first
    # paired: the same model against itself has an interval of exactly 0
    assert paired_bootstrap(a, a, "exact", False, 200, 0.95, seed=0) == (0.0, 0.0, 0.0)
    swapped = Counts(b.counts[:, :, ::-1], b.classes[::-1])
    assert decide(a, swapped) == decide(a, b)
    with pytest.raises(ValueError, match="different test splits"):
        decide(a, Counts(b.counts[:100], b.classes))


def test_mcnemar_counts_the_discordant_units():
    y = np.zeros(10, int)
    new = seq_counts(y, np.array([0] * 8 + [1] * 2))
    old = seq_counts(y, np.array([1] * 3 + [0] * 7))
    t = mcnemar(new, old)
    assert (t["only_challenger_right"], t["only_champion_right"]) == (3, 2) and t["p_value"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_counts_give_sklearns_metrics_for_labels(seed):
    rng = np.random.default_rng(seed)
    y, pred = rng.integers(0, 4, 300), rng.integers(0, 3, 300)  # class 3 never predicted
    c = label_counts(y, pred, ["a", "b", "c", "d"])
    ref = classification_metrics(y, pred)
    for metric, kind in SEQ.gate_metrics.items():
        got = score(c.counts.sum(0), c.exact.sum(), np.float64(len(y)), kind, SEQ.macro_over_all)
        assert got == pytest.approx(ref[metric]), metric
    # a class absent from truth and prediction is not averaged (sklearn: labels present)
    c5 = label_counts(y, pred, ["a", "b", "c", "d", "e"])
    assert score(c5.counts.sum(0), c5.exact.sum(), np.float64(300), "f1_macro", False) == pytest.approx(ref["f1_macro"])


def test_counts_give_sklearns_metrics_for_label_sets():
    task = get("multilabel_classification")
    rng = np.random.default_rng(0)
    y, pred = rng.random((200, 5)) < 0.3, rng.random((200, 5)) < 0.25
    y[:, 4], pred[:, 4] = False, False  # a label nobody has: sklearn's macro still counts it (as 0)
    c, ref = set_counts(y, pred, list("abcde")), multilabel_metrics(y.astype(float), pred)
    for metric, kind in task.gate_metrics.items():
        got = score(c.counts.sum(0), c.exact.sum(), np.float64(200), kind, task.macro_over_all)
        assert got == pytest.approx(ref[metric]), metric


def test_counts_give_seqevals_metrics_for_entities():
    task = get("token_classification")
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    rng = np.random.default_rng(0)
    y_true = [list(rng.choice(tags, rng.integers(3, 12))) for _ in range(150)]
    y_pred = [[t if rng.random() < 0.7 else str(rng.choice(tags)) for t in s] for s in y_true]
    c, ref = type_counts(y_true, y_pred, tags), entity_scores(y_true, y_pred)
    assert c.classes == ("LOC", "ORG", "PER")
    for metric, kind in task.gate_metrics.items():
        got = score(c.counts.sum(0), c.exact.sum(), np.float64(150), kind, task.macro_over_all)
        assert got == pytest.approx(ref[metric]), metric
    assert class_f1(c)["PER"][1] == sum(1 for s in y_true for i, t in enumerate(s) if t == "B-PER"
                                        or (t == "I-PER" and (i == 0 or s[i - 1] not in ("B-PER", "I-PER"))))


def test_the_gate_decides_entities_and_label_sets_too():
    """Clearly better NER and multi-label challengers are promoted, one losing a whole entity type is not."""
    ner = get("token_classification")
    gold = [["B-PER", "I-PER", "O", "B-LOC"]] * 300 + [["O", "B-ORG", "O", "O"]] * 100
    tags = ["O", "B-PER", "I-PER", "B-LOC", "B-ORG"]
    per_org = [["B-PER", "I-PER", "O", "O"]] * 300 + [["O", "B-ORG", "O", "O"]] * 100  # misses every LOC
    per_loc = [["B-PER", "I-PER", "O", "B-LOC"]] * 300 + [["O", "O", "O", "O"]] * 100  # misses every ORG
    assert decide(type_counts(gold, gold, tags), type_counts(gold, per_org, tags), ner)["promote"]
    d = decide(type_counts(gold, per_loc, tags), type_counts(gold, per_org, tags), ner)
    assert d["challenger"] > d["champion"] and d["checks"]["interval"] and d["mcnemar"] is None
    assert not d["promote"] and d["per_class"]["ORG"]["delta"] == -1.0
    ml = get("multilabel_classification")
    rng = np.random.default_rng(0)
    y = rng.random((600, 4)) < 0.3
    worse = y & (rng.random((600, 4)) < 0.6)
    assert decide(set_counts(y, y, list("abcd")), set_counts(y, worse, list("abcd")), ml)["promote"]
    assert not decide(set_counts(y, worse, list("abcd")), set_counts(y, y, list("abcd")), ml)["promote"]
