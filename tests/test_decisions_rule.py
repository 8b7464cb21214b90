"""The adoption rule of fitted decisions (lib/evaluation/decisions.py): a fitted threshold, per-class
thresholds or class biases replace the default decision only when their held-out gain per fold is
larger than the folds' noise (one-sided paired t-test), the binary search includes "every row
positive" and "every row negative", and the report says the gain, its s.e. and the verdict."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from lib.data import tasks
from lib.evaluation.decisions import adoption_test, choose_decision, fit_decision
from lib.evaluation.metrics import score_all

BIN = {"task": "binary", "classes": ["n", "a"], "positive": "a", "metric": "accuracy", "metrics": ["accuracy"]}
MC = {"task": "multiclass", "classes": ["a", "b", "c"], "metric": "accuracy", "metrics": ["accuracy"],
      "decision": {"class_bias": True}}
ML = {"task": "multilabel", "classes": ["a", "b", "c"], "metric": "accuracy", "metrics": ["accuracy"]}
FOLDS = np.arange(300) % 5


def _noise(task: str, seed: int):
    """Labels independent of the scores, where no decision is better than another in expectation:
    balanced labels (every class / label value equally likely), uniform random scores and a metric
    that no threshold or bias moves in expectation (MAcc = (Se + Sp) / 2, per label for
    multi-label: whatever share of rows a decision calls abnormal, it is 1/2)."""
    rng = np.random.default_rng(1000 + seed)
    if task == "binary":
        p = np.round(rng.random(300), 2)
        return rng.integers(0, 2, 300), np.stack([1 - p, p], 1)
    if task == "multiclass":
        return rng.integers(0, 3, 300), rng.dirichlet(np.ones(3), 300)
    return rng.integers(0, 2, (300, 3)), np.round(rng.random((300, 3)), 2)


MEAN_MACC = """import numpy as np
def mean_macc(y, pred, comp):
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    se = (y & pred).sum(0) / np.maximum(y.sum(0), 1)
    sp = (~y & ~pred).sum(0) / np.maximum((~y).sum(0), 1)
    return float(np.mean((se + sp) / 2))
"""


def _noise_comp(task: str, tmp_path) -> dict:
    """The competition of :func:`_noise`'s data: MAcc (binary, multiclass with a normal class), a
    custom per-label MAcc for multi-label (fast, unlike scikit-learn's validated metrics)."""
    if task == "binary":
        return dict(BIN, metric="macc", metrics=["macc"], normal_class="n")
    if task == "multiclass":
        return dict(MC, metric="macc", metrics=["macc"], normal_class="c")
    (tmp_path / "mean_macc.py").write_text(MEAN_MACC)
    return dict(ML, metric="mean_macc", metrics=["mean_macc"],
                custom_metrics={"mean_macc": {"function": f"{tmp_path}/mean_macc.py:mean_macc", "uses": "labels"}})


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"],
                         ids=["threshold", "class_bias", "per_class_thresholds"])
def test_on_pure_noise_a_fitted_decision_is_adopted_at_most_once_in_20(task, tmp_path):
    """At most 1 in 20 as a rate: at most 5 of 100 seeded sets (a block of 20 sets alone is a
    coarse check: a rule adopting 2 % of the time has two adoptions in 6 % of such blocks).
    Measured over 300 sets: 1-3 % for each kind; the plain paired t-test at 5 % adopts 9-11 %,
    the one-SE rule 25-27 %."""
    comp = _noise_comp(task, tmp_path)
    verdicts = [choose_decision(*_noise(task, seed), FOLDS, comp) for seed in range(100)]
    assert all(r["how"] == "auto" and "gain" in r for r in verdicts)
    adopted = sum(r["decision"] is not None for r in verdicts)
    assert adopted == sum(r["gain"]["adopted"] for r in verdicts) <= 5, [r["note"] for r in verdicts if r["decision"]]
    seed = next(i for i, r in enumerate(verdicts) if r["decision"] is None)  # not adopted, still recorded: it
    y, probs = _noise(task, seed)                                            # scores as the in-sample fit said
    r, metric = verdicts[seed], verdicts[seed]["metric"]
    assert r["fitted"] is not None and score_all([metric], y, probs, comp, r["fitted"])[metric] == r["scores"]["fitted_in_sample"]


def test_the_bar_is_a_corrected_paired_t_test_not_one_standard_error():
    """Per-fold gains whose mean is 2.4 plain standard errors pass the one-SE rule and the plain
    paired t-test at 5 % (2.13 s.e. for 5 folds), not the corrected test: the s.e. is widened by
    sqrt(1/5 + 1/4) / sqrt(1/5) = 1.5 for the folds' shared fitting rows (Nadeau & Bengio 2003)
    and the bar is t(0.975, 4) = 2.78 of those."""
    gains = np.array([0.01, 0.008, 0.003, 0.012, -0.002])
    mean, se, bar = adoption_test(gains)
    plain = gains.std(ddof=1) / np.sqrt(5)
    assert 2.13 * plain < mean < 2.5 * plain  # the one-SE rule and the plain t-test would adopt
    assert se == pytest.approx(gains.std(ddof=1) * np.sqrt(1 / 5 + 1 / 4)) == pytest.approx(1.5 * plain)
    assert bar == pytest.approx(scipy.stats.t.ppf(0.975, 4) * se) and mean < bar
    assert adoption_test(gains, test_to_train=0.1)[1] == pytest.approx(gains.std(ddof=1) * np.sqrt(0.3))
    assert adoption_test(np.array([0.02]))[2] == np.inf  # one fold: never adopted


def test_a_shifted_threshold_is_adopted():
    """Well-ranked scores calibrated low (every p below 0.5, positives higher): a threshold near
    0.25 is right on every fold, far above the noise."""
    rng = np.random.default_rng(7)
    y = (rng.random(300) < 0.4).astype(int)
    p = np.clip(0.15 + 0.2 * y + rng.normal(0, 0.05, 300), 0.001, 0.999)
    r = choose_decision(y, np.stack([1 - p, p], 1), FOLDS, BIN)
    assert r["decision"] is not None and r["gain"]["adopted"] and 0.15 < r["decision"]["threshold"] < 0.35
    assert r["gain"]["mean"] > r["gain"]["bar"] > 0 and r["scores"]["cross_fitted"] > r["scores"]["default"] + 0.2
    from lib.evaluation.decisions import in_sample_note

    # 04's blend line says its decision scores are in-sample, and gives the cross-fitted one
    assert f"in-sample; cross-fitted accuracy {r['scores']['cross_fitted']:.4f}" in in_sample_note(r)
    assert in_sample_note(dict(r, decision=None)) == ""


def test_a_fold_where_the_metric_is_undefined_is_left_out_of_the_test():
    """MAcc on a fold of negatives only is undefined: that fold's gain was NaN, which made the
    mean, the bar and the verdict NaN, so no fitted decision could ever be adopted (a leave-one-
    database-out fold of one class), and ensemble.json got NaN tokens."""
    import json

    macc = dict(BIN, normal_class="n", metric="macc", metrics=["macc"])
    rng = np.random.default_rng(3)
    folds = np.repeat(np.arange(5), 60)
    y = np.where(folds == 4, 0, (rng.random(300) < 0.4).astype(int))
    p = np.clip(0.15 + 0.2 * y + rng.normal(0, 0.03, 300), 0.001, 0.999)
    r = choose_decision(y, np.stack([1 - p, p], 1), folds, macc)
    assert r["gain"]["adopted"] and r["decision"] is not None and r["gain"]["per_fold"][4] is None
    assert "1 of 5 folds left out of the test: macc is undefined" in r["note"]
    json.dumps(r["gain"], allow_nan=False)  # valid JSON
    one = choose_decision(y, np.stack([1 - p, p], 1), np.where(folds < 4, 0, 1), macc)  # one fold can judge
    assert not one["gain"]["adopted"] and "fewer than 2 folds' held-out rows can judge it" in one["note"]
    json.dumps(one["gain"], allow_nan=False)


def test_class_bias_and_per_class_thresholds_with_a_clear_gain_are_adopted():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 300)
    z = 2.0 * np.eye(3)[y] + rng.normal(0, 0.5, (300, 3)) + [3.0, 0, 0]  # well ranked, biased to class a
    r = choose_decision(y, np.exp(z) / np.exp(z).sum(1, keepdims=True), FOLDS, MC)
    assert r["decision"] is not None and r["gain"]["adopted"] and r["decision"]["bias"][0] == 0
    assert r["decision"]["bias"][1] > 0 and r["decision"]["bias"][2] > 0
    ym = rng.integers(0, 2, (300, 3))
    pm = np.clip(0.1 + 0.2 * ym + rng.normal(0, 0.04, (300, 3)), 0.001, 0.999)  # every p below 0.5
    r = choose_decision(ym, pm, FOLDS, ML)
    assert r["decision"] is not None and r["gain"]["adopted"]
    assert all(0.1 < t < 0.3 for t in r["decision"]["thresholds"])


@pytest.mark.parametrize("share, extreme", [(0.1, "negative"), (0.9, "positive")])
def test_all_negative_or_all_positive_is_found_adopted_and_kept_on_new_data(share, extreme):
    """Scores that say nothing and a class that dominates: deciding every row that class is best
    (accuracy 0.9 against 0.5), and the extreme threshold still decides so on rows scored outside
    the OOF range."""
    rng = np.random.default_rng(9)
    y = (rng.random(300) < share).astype(int)
    p = np.round(0.2 + 0.6 * rng.random(300), 2)  # OOF scores within [0.2, 0.8]
    probs = np.stack([1 - p, p], 1)
    t = fit_decision(y, probs, BIN, "accuracy")["threshold"]
    assert t == (1.0 if extreme == "negative" else 0.0)
    r = choose_decision(y, probs, FOLDS, BIN)
    assert r["decision"] == {"threshold": t} and r["gain"]["adopted"]
    new = np.array([0.001, 0.1, 0.5, 0.9, 0.999])
    pred = tasks.decide(np.stack([1 - new, new], 1), BIN, r["decision"])
    assert (pred == (0 if extreme == "negative" else 1)).all()
    assert score_all(["accuracy"], y, probs, BIN, r["decision"])["accuracy"] == pytest.approx(max(y.mean(), 1 - y.mean()))


def test_the_decision_report_says_the_gain_its_se_and_the_verdict(tmp_path):
    """The note that 04_ensemble.py prints and the ensemble report writes, and ensemble.json's
    ``decision.gain``: the mean held-out gain, its standard error, the bar and adopted or not."""
    from lib.evaluation.ensemble_report import write_ensemble_report

    y, probs = _noise("binary", 0)
    kept = choose_decision(y, probs, FOLDS, BIN)
    g = kept["gain"]
    assert kept["decision"] is None and not g["adopted"]
    assert set(g) == {"mean", "se", "bar", "per_fold", "adopted"} and len(g["per_fold"]) == 5
    for text in (f"{g['mean']:+.4f}", f"s.e. {g['se']:.4f}", f"bar {g['bar']:.4f}", "not adopted",
                 "the default decision is kept"):
        assert text in kept["note"], (text, kept["note"])
    oof = pd.DataFrame({"id": [f"r{i}" for i in range(300)], "fold": FOLDS, "target": np.where(y == 1, "a", "n")})
    summary = {"metric": "accuracy", "method": "equal", "note": "named", "experiments": [{"experiment": "m", "accuracy": 0.5}],
               "methods": {"equal": {"scores": {"accuracy": 0.5}}}, "rows_masked": 0,
               "decision": kept}
    write_ensemble_report(tmp_path, BIN, summary, oof, probs, [probs], ["m"])
    report = (tmp_path / "report.md").read_text()
    assert "## Decision" in report and kept["note"] in report
    assert "the default decision, the most probable class (p > 0.5); OOF accuracy: default " in report, report
    assert ("is no gain (bar" in kept["note"]) == (g["mean"] <= 0) and "; ." not in report  # (a loss read "within
    # the noise", and the line read "default: default": probe)


def test_the_ensemble_report_of_a_constant_member_warns_nothing(tmp_path):
    """A member predicting its class prior everywhere correlates with nothing (NaN): the report's
    correlation picture printed numpy's 'All-NaN slice encountered' (probe)."""
    import warnings

    from lib.evaluation.ensemble_report import write_ensemble_report

    y, probs = _noise("binary", 0)
    constant = np.full_like(probs, 0.5)
    oof = pd.DataFrame({"id": [f"r{i}" for i in range(300)], "fold": FOLDS, "target": np.where(y == 1, "a", "n")})
    summary = {"metric": "accuracy", "method": "single", "note": "one member", "rows_masked": 0,
               "experiments": [{"experiment": "prior", "accuracy": 0.5}],
               "methods": {"single": {"scores": {"accuracy": 0.5}}}, "decision": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_ensemble_report(tmp_path, BIN, summary, oof, constant, [constant], ["prior"])
    assert (tmp_path / "correlation.png").is_file()


def test_a_decision_is_said_with_each_value_beside_its_class():
    """04 and the ensemble report name the class of every per-class threshold or bias (a list
    read in another class order would put one class's threshold on another: probe)."""
    from lib.evaluation.decisions import decision_words

    comp = {"task": "multilabel", "classes": ["inhale", "wheeze", "stridor"]}
    assert decision_words({"thresholds": [0.01, 0.99, 0.5]}, comp) == "thresholds: inhale 0.01, wheeze 0.99, stridor 0.5"
    assert decision_words({"bias": [0.0, -0.25, 1.5]}, dict(comp, task="multiclass")) == \
        "bias: inhale 0, wheeze -0.25, stridor 1.5"
    assert decision_words({"threshold": 0.3125}, BIN) == "threshold 0.3125" and decision_words(None, BIN) == "default"
