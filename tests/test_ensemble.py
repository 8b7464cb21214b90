import json
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from lib.evaluation.blending import (
    Blender,
    best_method,
    compare_methods,
    cross_fitted,
    offered_methods,
    score_weights,
)
from lib.evaluation.ensemble import make_submission


def test_softmax_weights_need_a_temperature():
    plain = score_weights([0.778, 0.792], "softmax", temperature=1.0)
    np.testing.assert_allclose(plain, [0.4965, 0.5035], atol=1e-4)  # the seed's pitfall: a plain mean
    sharp = score_weights([0.778, 0.792], "softmax", temperature=0.01)
    np.testing.assert_allclose(sharp, np.exp([0, 1.4]) / np.exp([0, 1.4]).sum())
    assert sharp[1] > 0.75


def test_other_weightings_and_errors():
    np.testing.assert_allclose(score_weights([0.6, 0.9], "normalised"), [0.4, 0.6])
    np.testing.assert_allclose(score_weights([0.6, 0.9, 0.1], "equal"), [1 / 3] * 3)
    for s in ([0.5, 0.7, 0.9], [0.1]):
        assert score_weights(s).sum() == pytest.approx(1.0)
    # a temperature so small that the scores' ratio overflows still gives the best all the weight
    np.testing.assert_array_equal(score_weights([0.79, 0.8, 0.8], "softmax", temperature=1e-320), [0, 0.5, 0.5])
    with pytest.raises(ValueError):
        score_weights([0.5], "softmax", temperature=0)
    with pytest.raises(ValueError):
        score_weights([0.5], "best")


def test_submission_follows_sample_order_and_labels(tmp_path):
    pd.DataFrame({"ID": ["c.wav", "a.wav", "b.wav"], "Target": ["I", "I", "I"]}).to_csv(tmp_path / "s.csv", index=False)
    comp = {"data_dir": str(tmp_path), "task": "binary", "classes": ["E", "I"], "positive": "I",
            "submission": {"sample": "s.csv", "id_column": "ID", "target_column": "Target", "format": "label"}}
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])  # rows for a, b, c
    sub = make_submission(comp, ["a.wav", "b.wav", "c.wav"], probs)
    assert list(sub.columns) == ["ID", "Target"]
    assert sub.ID.tolist() == ["c.wav", "a.wav", "b.wav"]
    assert sub.Target.tolist() == ["E", "E", "I"]
    comp["submission"]["format"] = "probability"
    np.testing.assert_allclose(make_submission(comp, ["a.wav", "b.wav", "c.wav"], probs).Target, [0.4, 0.1, 0.7])
    with pytest.raises(ValueError, match="different ids"):
        make_submission(comp, ["a.wav", "b.wav", "x.wav"], probs)
    from lib.core.utils import write_csv

    (tmp_path / "s.csv").write_bytes(b"ID,Target\r\nc.wav,I\r\na.wav,I\r\nb.wav,I\r\n")  # a Windows sample: CRLF kept
    comp["submission"]["format"] = "label"
    write_csv(tmp_path / "sub.csv", make_submission(comp, ["a.wav", "b.wav", "c.wav"], probs))
    assert (tmp_path / "sub.csv").read_bytes() == b"ID,Target\r\nc.wav,E\r\na.wav,E\r\nb.wav,I\r\n"
    (tmp_path / "s.csv").write_bytes(b"\xef\xbb\xbfID,Target\nc.wav,I\na.wav,I\nb.wav,I\n")  # its BOM kept (probe)
    write_csv(tmp_path / "sub.csv", make_submission(comp, ["a.wav", "b.wav", "c.wav"], probs))
    assert (tmp_path / "sub.csv").read_bytes() == b"\xef\xbb\xbfID,Target\nc.wav,E\na.wav,E\nb.wav,I\n"


def test_submission_probability_and_indicator_columns(tmp_path):
    pd.DataFrame({"id": ["b", "a"], "cat": 0, "dog": 0, "owl": 0}).to_csv(tmp_path / "s.csv", index=False)
    probs = np.array([[0.7, 0.6, 0.1], [0.2, 0.3, 0.9]])  # rows for a, b
    comp = {"data_dir": str(tmp_path), "task": "multilabel", "classes": ["cat", "dog", "owl"],
            "submission": {"sample": "s.csv", "id_column": "id", "format": "probabilities"}}
    sub = make_submission(comp, ["a", "b"], probs)
    assert list(sub.columns) == ["id", "cat", "dog", "owl"]
    np.testing.assert_allclose(sub[["cat", "dog", "owl"]], probs[[1, 0]])
    comp["submission"]["format"] = "indicators"
    assert make_submission(comp, ["a", "b"], probs)[["cat", "dog", "owl"]].values.tolist() == [[0, 0, 1], [1, 1, 0]]
    comp["task"] = "multiclass"  # one 1 per row: the most probable class
    assert make_submission(comp, ["a", "b"], probs)[["cat", "dog", "owl"]].values.tolist() == [[0, 0, 1], [1, 0, 0]]
    comp["task"] = "multilabel"
    comp["submission"] = {"sample": "s.csv", "id_column": "id", "target_column": "cat", "format": "label",
                          "label_separator": " "}
    assert make_submission(comp, ["a", "b"], probs)["cat"].tolist() == ["owl", "cat dog"]


# --- blending methods, against independent computations ----------------------------------------------

BIN = {"task": "binary", "classes": ["E", "I"], "positive": "I", "metric": "accuracy", "metrics": ["accuracy", "auroc"]}
MC = {"task": "multiclass", "classes": ["a", "b", "c"], "metric": "macro_f1", "metrics": ["macro_f1", "accuracy"]}
ML = {"task": "multilabel", "classes": ["a", "b", "c"], "metric": "macro_f1", "metrics": ["macro_f1"]}


def _members(rng, y, n_members, n_classes, noise):
    """Noisy probabilities that lean to the true class: ``n_members`` arrays ``(rows, n_classes)``."""
    out = []
    for s in noise:
        z = rng.normal(0, s, (len(y), n_classes)) + 1.5 * np.eye(n_classes)[y]
        out.append(np.exp(z) / np.exp(z).sum(1, keepdims=True))
    return out


def test_lower_is_better_scores_get_the_larger_weights():
    np.testing.assert_allclose(score_weights([0.3, 0.5], "softmax", 0.1, higher_is_better=False),
                               np.exp([-3, -5]) / np.exp([-3, -5]).sum())
    np.testing.assert_allclose(score_weights([0.2, 0.6], "normalised", higher_is_better=False), [0.75, 0.25])


def test_geometric_and_rank_means():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    a, b = _members(rng, y, 2, 3, [1.0, 2.0])
    g = Blender("geometric", MC).fit([a, b], y).apply([a, b])
    ref = np.sqrt(a * b)
    np.testing.assert_allclose(g, ref / ref.sum(1, keepdims=True))
    pa, pb = a[:, :2] / a[:, :2].sum(1, keepdims=True), b[:, :2] / b[:, :2].sum(1, keepdims=True)
    g2 = Blender("geometric", BIN).fit([pa, pb], y % 2).apply([pa, pb])
    gp, gn = np.sqrt(pa[:, 1] * pb[:, 1]), np.sqrt(pa[:, 0] * pb[:, 0])  # geometric mean of p and of 1 - p
    np.testing.assert_allclose(g2[:, 1], gp / (gp + gn))
    r = Blender("rank", MC).fit([a, b], y).apply([a, b])
    ranks = (pd.DataFrame(a).rank(pct=True) + pd.DataFrame(b).rank(pct=True)).to_numpy() / 2
    np.testing.assert_allclose(r, ranks / ranks.sum(1, keepdims=True))  # rows renormalised: they sum to 1
    ym = (rng.random((50, 3)) < 0.4).astype(int)
    rm = Blender("rank", ML).fit([a, b], ym).apply([a, b])  # multi-label: each class's mean rank, in (0, 1]
    np.testing.assert_allclose(rm, ranks)
    assert "rank" not in offered_methods(dict(MC, metrics=["accuracy", "log_loss"]))
    assert "rank" not in offered_methods(dict(MC, submission={"format": "probabilities"}))
    assert "rank" in offered_methods(MC)
    from lib.evaluation.ensemble import _choose_method  # a rank blend chosen for its decisions says how it cuts them

    results = {"equal": {"scores": {"accuracy": 0.7}}, "rank": {"scores": {"accuracy": 0.8}}}
    yb = np.array([0, 1] * 25)
    chosen, note = _choose_method("best", results, BIN, None, [pa, pb], yb)
    assert chosen == "rank" and "decides by each row's rank within the set it predicts" in note, note
    results["rank"]["scores"]["accuracy"] = 0.6
    assert "rank within" not in _choose_method("best", results, BIN, None, [pa, pb], yb)[1]


def test_single_is_the_best_member_chosen_on_other_folds():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    bad, good = _members(rng, y, 2, 2, [3.0, 0.2])
    folds = np.arange(200) % 4
    np.testing.assert_allclose(cross_fitted("single", [bad, good], y, folds, BIN), good)
    res = compare_methods([bad, good], y, folds, BIN)
    assert res["single"]["weights"] == [0.0, 1.0]
    same = compare_methods([good, good], y, folds, BIN)  # nothing can beat the member itself: ties go to single
    assert best_method(same, BIN) == "single"
    # single, cross-fitted, below every member (each fold took the member best on the others): a blend
    # between the two is not taken unless it beats the best member's own OOF score too (probe)
    res = {"single": {"scores": {"accuracy": 0.45}}, "stacking": {"scores": {"accuracy": 0.55}}}
    assert best_method(res, BIN) == "stacking" and best_method(res, BIN, best_member=0.54) == "stacking"
    assert best_method(res, BIN, best_member=0.56) == best_method(res, BIN, best_member=0.55) == "single"
    from lib.evaluation.ensemble import _choose_method

    y = np.zeros(100, int)  # members right on 56 and 50 rows: 04 says why it keeps the better one alone
    members = [np.stack([(np.arange(100) < k) * 0.8 + 0.1, (np.arange(100) >= k) * 0.8 + 0.1], 1) for k in (56, 50)]
    chosen, note = _choose_method("best", res, BIN, None, members, y)
    assert chosen == "single" and note == (
        "the best blend, stacking (0.5500 cross-fitted OOF accuracy), does not beat the best member's own OOF score "
        "(0.5600): that member is submitted and scored by its own OOF (cross-fitted, taking on each fold the member "
        "best on the other folds scores 0.4500)")


def test_fitted_weights_minimise_the_log_loss():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    a, b = _members(rng, y, 2, 3, [1.0, 3.0])
    w = Blender("fitted", MC).fit([a, b], y).weights
    grid = np.linspace(0, 1, 1001)
    losses = [log_loss(y, g * a + (1 - g) * b, labels=[0, 1, 2]) for g in grid]
    assert w.sum() == pytest.approx(1) and (w >= 0).all()
    assert w[0] == pytest.approx(grid[int(np.argmin(losses))], abs=2e-3)
    # members near chance, a nearly flat loss: SLSQP with its default tolerance stopped at equal
    # weights, 0.0005 above the minimum at [0, 1] (probe); and multi-label, three members
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    a, b = (1 / (1 + np.exp(-(0.05 * (2 * y - 1) * k + rng.normal(0, 1, 60)) * 0.05)) for k in (1, 0))
    w = Blender("fitted", BIN).fit([np.c_[1 - a, a], np.c_[1 - b, b]], y).weights
    losses = [log_loss(y, g * a + (1 - g) * b) for g in grid]
    assert log_loss(y, w[0] * a + w[1] * b) <= min(losses) + 1e-9 and w[1] > 0.99
    y = rng.integers(0, 2, (200, 3))
    members = [np.clip(y * q + rng.uniform(0, 1, y.shape) * (1 - q), 0.01, 0.99) for q in (0.1, 0.3, 0.2)]
    w = Blender("fitted", ML).fit(members, y).weights
    loss = lambda v: log_loss(y.ravel(), sum(k * m for k, m in zip(v, members)).ravel())  # noqa: E731
    simplex = [np.array([i, j, 100 - i - j]) / 100 for i in range(101) for j in range(101 - i)]
    assert loss(w) <= min(map(loss, simplex)) + 1e-9


def test_hill_climbing_adds_a_complementary_member():
    y = np.array([1, 1, 0, 0])
    pa, pb, pc = [0.9, 0.4, 0.1, 0.45], [0.45, 0.9, 0.3, 0.1], [0.1, 0.1, 0.9, 0.9]  # accuracy 0.75, 0.75, 0
    probs = [np.stack([1 - np.array(p), p], 1) for p in (pa, pb, pc)]
    b = Blender("hill_climb", BIN).fit(probs, y)
    # a and b tie on accuracy: the lower log loss starts (b), then a: (a + b) / 2 gets every row
    # right; one more b keeps every row right at a lower log loss (ties go to the log loss)
    np.testing.assert_allclose(b.weights, [0.25, 0.75, 0])
    assert score_all(["accuracy"], y, b.apply(probs), BIN)["accuracy"] == 1.0


def test_hill_climbing_does_not_depend_on_the_members_order():
    """Accuracy ties between the members and between the trials (a thresholded metric on few
    rows) are broken by the log loss, not by the order the members were named in."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    members = []
    for sharp in (0.6, 1.5, 3.0):  # the same decisions at three confidences: every accuracy ties
        z = np.where(rng.random(40) < 0.75, 2 * y - 1, 1 - 2 * y) * sharp * rng.uniform(0.5, 1.5, 40)
        members.append(np.stack([1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))], 1))
    weights = {order: Blender("hill_climb", BIN).fit([members[i] for i in order], y).weights
               for order in ((0, 1, 2), (2, 1, 0), (1, 2, 0))}
    by_member = {order: dict(zip(order, w)) for order, w in weights.items()}
    first = by_member[(0, 1, 2)]
    assert all(by_member[o] == pytest.approx(first) for o in by_member)


def test_single_breaks_a_tie_on_the_metric_by_log_loss_not_by_the_members_order():
    """Three members with the same decisions at three confidences tie on accuracy exactly; the
    one with the lowest log loss is chosen whichever order they are named in."""
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    base = np.where(rng.random(60) < 0.75, 2 * y - 1, 1 - 2 * y) * rng.uniform(0.5, 1.5, 60)
    members = [np.stack([1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))], 1) for z in (base * 0.3, base * 1.2, base * 5.0)]
    best = int(np.argmin([log_loss(y, p) for p in members]))
    for order in ((0, 1, 2), (2, 1, 0), (1, 2, 0)):
        w = Blender("single", BIN).fit([members[i] for i in order], y).weights
        assert order[int(np.argmax(w))] == best


def test_stacking_is_a_logistic_regression_on_log_probabilities():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    a, b = _members(rng, y, 2, 3, [1.0, 2.0])
    ref = LogisticRegression(max_iter=1000).fit(np.log(np.hstack([a, b])), y).predict_proba(np.log(np.hstack([a, b])))
    np.testing.assert_allclose(Blender("stacking", MC).fit([a, b], y).apply([a, b]), ref, atol=1e-6)
    ym = (rng.random((200, 3)) < 0.4).astype(int)
    pm = [np.clip(ym * 0.6 + rng.random((200, 3)) * 0.4, 0.01, 0.99) for _ in range(2)]
    out = Blender("stacking", ML).fit(pm, ym).apply(pm)
    feats = np.log(np.stack([pm[0][:, 1], pm[1][:, 1]], 1))
    np.testing.assert_allclose(out[:, 1], LogisticRegression(max_iter=1000).fit(feats, ym[:, 1]).predict_proba(feats)[:, 1],
                               atol=1e-6)
    # a class without training rows: the members' mean, the rest of each row as the regression shares it (it was 0)
    two = y % 2  # class 2 never trained
    out = Blender("stacking", MC).fit([a, b], two).apply([a, b])
    mean = (a + b) / 2
    np.testing.assert_allclose(out[:, 2], mean[:, 2])
    np.testing.assert_allclose(out.sum(1), 1.0)
    ref = LogisticRegression(max_iter=1000).fit(np.log(np.hstack([a, b])), two).predict_proba(np.log(np.hstack([a, b])))
    np.testing.assert_allclose(out[:, :2], ref * mean[:, :2].sum(1, keepdims=True), atol=1e-6)
    ym[:, 2] = 0  # a multi-label label never on in the fit: the members' mean, not exactly 0 (review)
    out = Blender("stacking", ML).fit(pm, ym).apply(pm)
    np.testing.assert_allclose(out[:, 2], (pm[0][:, 2] + pm[1][:, 2]) / 2)


def test_cross_fitted_weights_come_from_the_other_folds():
    from lib.evaluation.blending import compare_methods, cross_fitted

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    folds = np.arange(200) % 2
    a, b = (p[:, [0, 1]] / p[:, [0, 1]].sum(1, keepdims=True) for p in _members(rng, y, 2, 3, [1.0, 2.5]))
    out = cross_fitted("softmax", [a, b], y, folds, BIN, temperature=0.05)
    for k in (0, 1):
        other = folds != k
        s = [((p[other, 1] > 0.5) == y[other]).mean() for p in (a, b)]  # accuracy on the other fold
        w = np.exp(np.array(s) / 0.05) / np.exp(np.array(s) / 0.05).sum()
        np.testing.assert_allclose(out[folds == k], w[0] * a[folds == k] + w[1] * b[folds == k])
    res = compare_methods([a, b], y, folds, BIN)
    assert set(res) == {"single", "softmax", "normalised", "equal", "rank", "geometric", "fitted", "hill_climb", "stacking"}
    for m, r in res.items():  # every score is the score of the stored cross-fitted blend
        assert r["scores"] == score_all(BIN["metrics"], y, r["oof"], BIN), m


# --- decisions ----------------------------------------------------------------------------------------

from lib.evaluation.decisions import (
    aggregate_groups,
    apply_masks,
    choose_decision,
    fit_decision,
    mask_blend,
    mask_matches,
    postprocess,
)
from lib.evaluation.metrics import score_all


def test_binary_threshold_is_the_best_of_every_cut():
    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.3).astype(int)  # imbalanced, probabilities biased low: 0.5 is not the best cut
    p = np.clip(0.25 * y + rng.random(300) * 0.6, 0, 1)
    probs = np.stack([1 - p, p], 1)
    comp = dict(BIN, metric="macro_f1", metrics=["macro_f1"])
    t = fit_decision(y, probs, comp, "macro_f1")["threshold"]
    from sklearn.metrics import f1_score

    cuts = np.unique(p)
    best = max(f1_score(y, (p > c).astype(int), average="macro") for c in np.concatenate([[0.5], (cuts[1:] + cuts[:-1]) / 2]))
    assert f1_score(y, (p > t).astype(int), average="macro") == pytest.approx(best)
    assert best > f1_score(y, (p > 0.5).astype(int), average="macro")


def test_decisions_are_scored_on_held_out_folds():
    rng = np.random.default_rng(5)
    y = (rng.random(400) < 0.3).astype(int)
    p = np.clip(0.25 * y + rng.random(400) * 0.6, 0, 1)
    probs, folds = np.stack([1 - p, p], 1), np.arange(400) % 4
    comp = dict(BIN, metric="accuracy", metrics=["accuracy"])
    r = choose_decision(y, probs, folds, comp)
    pred = np.zeros(400, int)
    for k in range(4):  # independently: each fold cut at the threshold fitted on the other three
        t = fit_decision(y[folds != k], probs[folds != k], comp, "accuracy")["threshold"]
        assert r["per_fold"][k]["threshold"] == t
        pred[folds == k] = p[folds == k] > t
    assert r["scores"]["cross_fitted"] == pytest.approx((pred == y).mean())
    assert r["scores"]["default"] == pytest.approx(((p > 0.5) == y).mean())
    assert r["scores"]["fitted_in_sample"] >= r["scores"]["cross_fitted"] - 1e-12
    g = r["gain"]
    assert g["per_fold"] == pytest.approx([((pred == y)[folds == k].mean() - ((p > 0.5) == y)[folds == k].mean())
                                           for k in range(4)])
    # Nadeau-Bengio corrected s.e. of 4 folds (1/4 + 100/300 held out per fitting row), bar t(0.975, 3) of them
    assert g["mean"] == pytest.approx(np.mean(g["per_fold"]))
    assert g["se"] == pytest.approx(np.std(g["per_fold"], ddof=1) * np.sqrt(1 / 4 + 1 / 3))
    assert g["bar"] == pytest.approx(scipy.stats.t.ppf(0.975, 3) * g["se"])
    adopted = r["scores"]["cross_fitted"] > r["scores"]["default"] and g["mean"] > g["bar"]
    assert (r["decision"] is not None) == adopted == g["adopted"] and f"{g['mean']:+.4f}" in r["note"]
    fixed = choose_decision(y, probs, folds, dict(comp, decision={"threshold": 0.3}))
    assert fixed["decision"] == {"threshold": 0.3} and fixed["scores"]["fixed"] == pytest.approx(((p > 0.3) == y).mean())
    auc_only = choose_decision(y, probs, folds, dict(comp, metric="auroc", metrics=["auroc"]))
    assert auc_only["decision"] is None and auc_only["how"] == "none"


def test_a_threshold_on_pure_noise_is_adopted_at_most_once_in_20():
    """Scores independent of the labels: any gain of a fitted threshold is noise. Over 20
    generated sets (5 folds, 300 rows, 30 % positive, scores on a 0.01 grid; MAcc, whose every
    threshold is worth 0.5 on such data, unlike accuracy, which all-negative really raises) the
    paired test adopts a threshold at most once."""
    adopted = {"macc": 0}
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        y = (rng.random(300) < 0.3).astype(int)
        p = np.round(rng.random(300), 2)
        for metric in adopted:
            comp = dict(BIN, metric=metric, metrics=[metric], classes=["n", "a"], positive="a", normal_class="n")
            r = choose_decision(y, np.stack([1 - p, p], 1), np.arange(300) % 5, comp)
            adopted[metric] += r["decision"] is not None
    assert adopted["macc"] <= 1, adopted


def test_threshold_search_includes_all_positive_and_all_negative():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    probs = np.stack([1 - p, p], 1)
    comp = dict(BIN, metric="accuracy", metrics=["accuracy"])
    t = fit_decision(np.ones(4, int), probs, comp, "accuracy")["threshold"]  # every row positive: all positive wins
    assert (p > t).all()
    t = fit_decision(np.zeros(4, int), 1 - probs, comp, "accuracy")["threshold"]  # p 0.6..0.9, all negative wins
    assert not (1 - p > t).any()


def test_a_clear_threshold_gain_is_adopted():
    """Well-ranked scores whose calibration is shifted (every p below 0.5): the fitted threshold
    gains far more than its standard error and is adopted."""
    rng = np.random.default_rng(7)
    y = (rng.random(500) < 0.4).astype(int)
    p = np.clip(0.15 + 0.2 * y + rng.normal(0, 0.05, 500), 0, 1)
    r = choose_decision(y, np.stack([1 - p, p], 1), np.arange(500) % 5, dict(BIN, metric="accuracy", metrics=["accuracy"]))
    assert r["decision"] is not None and r["gain"]["mean"] > r["gain"]["bar"] > 0 and "and adopted" in r["note"]


def test_class_bias_and_multilabel_thresholds_improve_in_sample():
    rng = np.random.default_rng(6)
    y = rng.choice(3, 300, p=[0.7, 0.2, 0.1])
    z = rng.normal(0, 1.0, (300, 3)) + 1.0 * np.eye(3)[y] + np.array([1.0, 0, 0])  # biased to class a
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    d = fit_decision(y, probs, MC, "macro_f1")
    assert d["bias"][0] == 0 and score_all(["macro_f1"], y, probs, MC, d)["macro_f1"] > score_all(["macro_f1"], y, probs, MC)["macro_f1"]
    ym = (rng.random((300, 3)) < [0.5, 0.2, 0.05]).astype(int)
    pm = np.clip(0.3 * ym + rng.random((300, 3)) * 0.5, 0, 1)
    d = fit_decision(ym, pm, ML, "macro_f1")
    assert len(d["thresholds"]) == 3
    assert score_all(["macro_f1"], ym, pm, ML, d)["macro_f1"] > score_all(["macro_f1"], ym, pm, ML)["macro_f1"]


def test_a_blend_of_masked_members_is_masked_again():
    """``stacking`` refits on the members' log-probabilities and gave a masked class 0.13-0.67 in
    OOF rows and about 0.3 in the test rows, so 04 could submit a class the rules forbid;
    ``geometric`` left about 1e-7 (probe)."""
    from lib.evaluation.ensemble import blend_test

    rng = np.random.default_rng(7)
    n = 90
    table = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "meta_sex": np.where(np.arange(n) % 3 == 0, "M", "F")})
    comp = dict(MC, decision={"mask": [{"where": "sex == 'M'", "classes": ["c"]}]})  # (no submission: the blend)
    y = rng.integers(0, 3, n)
    members = [apply_masks(m, table, comp)[0] for m in _members(rng, y, 2, 3, [1.0, 1.5])]
    folds = np.arange(n) % 3
    masked = (table["meta_sex"] == "M").to_numpy()
    plain = compare_methods(members, y, folds, comp, methods=["stacking"])
    assert (plain["stacking"]["oof"][masked, 2] > 0).all()  # what the blend gives back without the second mask
    res = compare_methods(members, y, folds, comp, methods=["stacking", "geometric"],
                          post=lambda p: mask_blend(p, table["id"], table, comp, "folds"))
    for m, r in res.items():
        assert (r["oof"][masked, 2] == 0).all() and r["oof"][~masked, 2].min() > 0, m
        np.testing.assert_allclose(r["oof"].sum(1), 1)
        assert r["scores"] == score_all(MC["metrics"], y, r["oof"], comp), m
    # with group_aggregate a group's rows share its probabilities again, whatever their order (review); a class
    # masked for one row of a group is masked for the group (a group mixing M and F rows gave the M row c back
    # through the group's mean: probe), so masking and aggregating again changes nothing (review)
    grouped = dict(comp, decision=dict(comp["decision"], group_aggregate="mean"))
    g = table.assign(group=[f"g{i // 2}" for i in range(n)])
    again = mask_blend(members[0], g["id"], g, grouped, "folds")
    assert np.allclose(again[0::2], again[1::2])  # pairs r0/r1 ... (one masked, one not)
    in_masked_group = g["group"].isin(g["group"][masked]).to_numpy()
    assert (again[in_masked_group, 2] == 0).all() and again[~in_masked_group, 2].min() > 0
    np.testing.assert_allclose(again.sum(1), 1)
    np.testing.assert_allclose(mask_blend(again, g["id"], g, grouped, "folds"), again)  # what 04 does to a blend
    frame = pd.DataFrame(members[0], columns=["p_a", "p_b", "p_c"]).assign(id=g["id"])  # the members as 04 reads them
    np.testing.assert_allclose(postprocess([frame], g, grouped, "folds")[0][0], again)
    order = np.r_[1:n, 0]  # the same rows in another order: the same probabilities per row
    np.testing.assert_allclose(mask_blend(members[0][order], g["id"][order], g.iloc[order], grouped, "folds"), again[order])
    preds = [pd.DataFrame(m, columns=["p_a", "p_b", "p_c"]).assign(id=table["id"]) for m in members]
    blend, _ = blend_test(comp, res["stacking"]["blender"], None, preds, table)
    assert (blend[masked, 2] == 0).all() and blend[~masked, 2].min() > 0


def test_masks_and_group_aggregation():
    table = pd.DataFrame({"id": ["r0", "r1", "r2"], "meta_sex": ["M", "F", "M"], "meta_age": [5.0, 40.0, 60.0]})
    comp = dict(MC, decision={"mask": [{"where": "sex == 'M'", "classes": ["c"]}, {"where": "age < 18", "classes": ["b"]}]})
    probs = np.array([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    out, n = apply_masks(probs, table, comp)
    np.testing.assert_allclose(out, [[1, 0, 0], [0.2, 0.3, 0.5], [0.1 / 0.7, 0.6 / 0.7, 0]])
    assert n.tolist() == [True, False, True]
    already = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.1, 0.9, 0.0]])  # the masked classes at 0 already
    assert apply_masks(already, table, comp)[1].tolist() == [True, False, False]  # r0's b moved (a rule selects 2)
    typo = dict(MC, decision={"mask": comp["decision"]["mask"] + [{"where": "sex == 'female'", "classes": ["a"]}]})
    assert mask_matches(table, typo) == [  # 00 and 04 print these
        "label mask \"sex == 'M'\": 2 training rows", "label mask 'age < 18': 1 training rows",
        "label mask \"sex == 'female'\": 0 training rows: WARNING: it selects none (the expression against the "
        "metadata's values as folds.csv has them?)"]
    # a rule contradicted by the training labels: their probability of the class is set to 0, said (probe)
    assert mask_matches(table.assign(target=["c", "a", "a"]), comp)[0] == (
        "label mask \"sex == 'M'\": 2 training rows: WARNING: 1 of them are labelled a class it makes impossible "
        "(c: 1): their probability of it is set to 0")
    with pytest.raises(ValueError, match=r"cannot be evaluated over the competition's metadata columns \['sex', 'age'\]"):
        apply_masks(probs, table, dict(MC, decision={"mask": [{"where": "weight > 3", "classes": ["a"]}]}))
    with pytest.raises(ValueError, match="every class is masked"):
        apply_masks(probs, table, dict(MC, decision={"mask": [{"where": "sex == 'F'", "classes": ["a", "b", "c"]}]}))
    groups = ["p1", "p2", "p1"]
    mean = aggregate_groups(probs, groups, MC, "mean")
    ref = pd.DataFrame(probs).groupby(groups).transform("mean").to_numpy()
    np.testing.assert_allclose(mean, ref)
    vote = aggregate_groups(probs, groups, MC, "vote")  # p1: one row votes c, one votes b: the tie goes by
    np.testing.assert_allclose(vote[[0, 2]], [[0, 0.5, 0.5]] * 2, atol=1e-6)  # its mean, b 0.45 > c 0.4 (probe:
    assert (vote.argmax(1) == [1, 2, 1]).all() and np.allclose(vote.sum(1), 1)  # a tie went to the first class)
    binary = {"task": "binary", "classes": ["n", "y"], "positive": "y"}
    for p_y, decided in (([0.45, 0.8], True), ([0.2, 0.55], False)):  # one vote each: the mean decides
        tie = aggregate_groups(np.stack([1 - np.array(p_y), p_y], 1), ["g", "g"], binary, "vote")
        assert ((tie[:, 1] > 0.5) == decided).all() and np.allclose(tie.sum(1), 1)
    multi = {"task": "multilabel", "classes": ["a", "b"]}
    tie = aggregate_groups(np.array([[0.9, 0.45], [0.2, 0.7]]), ["g", "g"], multi, "vote")  # a: mean 0.55, b 0.575
    assert (tie > 0.5).all() and (tie <= 1).all()
    clear = aggregate_groups(np.array([[0.9, 0.1], [0.8, 0.2]]), ["g", "g"], multi, "vote")  # no tie: the shares
    np.testing.assert_allclose(clear, [[1, 0]] * 2, atol=1e-6)
    np.testing.assert_allclose(aggregate_groups(probs, groups, MC, None), probs)


def test_methods_that_cannot_blend_are_reported_not_fatal(tmp_path):
    from lib.evaluation.blending import best_method, compare_methods

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 60)
    a, b = (p[:, :2] / p[:, :2].sum(1, keepdims=True) for p in _members(rng, y, 2, 3, [1.0, 2.0]))
    (tmp_path / "m.py").write_text("from sklearn.metrics import matthews_corrcoef\n"
                                   "def shifted_mcc(y, pred, comp):\n    return matthews_corrcoef(y, pred) - 1\n")
    comp = dict(BIN, metric="shifted_mcc", metrics=["shifted_mcc"],
                custom_metrics={"shifted_mcc": {"function": f"{tmp_path / 'm.py'}:shifted_mcc", "uses": "labels"}})
    res = compare_methods([a, b], y, np.arange(60) % 3, comp)  # scores <= 0: no normalised weights
    assert "positive finite scores" in res["normalised"]["error"] and res["normalised"]["oof"] is None
    assert best_method(res, comp) != "normalised" and np.isfinite(res["softmax"]["scores"]["shifted_mcc"])
    np.testing.assert_allclose(score_weights([0.8, -np.inf]), [1, 0])  # an undefined member score weighs nothing


@pytest.mark.parametrize("comp", [BIN, MC, ML], ids=["binary", "multiclass", "multilabel"])
def test_a_fitted_blender_travels_as_plain_values(comp):
    import json

    rng = np.random.default_rng(8)
    if comp["task"] == "multilabel":
        y = (rng.random((80, 3)) < 0.4).astype(int)
        y[:, 2] = 0  # a class without positive rows: its stacker is a constant
        probs = [np.clip(y * 0.5 + rng.random((80, 3)) * 0.5, 0.01, 0.99) for _ in range(2)]
    else:
        n = len(comp["classes"])
        y = rng.integers(0, n, 80)
        probs = _members(rng, y, 2, n, [1.0, 2.0])
    for method in ("softmax", "fitted", "hill_climb", "stacking", "geometric", "rank"):
        b = Blender(method, dict(comp, metric="auroc" if comp["task"] == "multilabel" else comp["metric"])).fit(probs, y)
        again = Blender.from_state(json.loads(json.dumps(b.state())), comp)
        np.testing.assert_allclose(again.apply(probs), b.apply(probs), atol=1e-12, err_msg=method)


def test_single_submits_one_member_and_scores_it_by_its_own_oof(tmp_path):
    """Cross-fitted, ``single`` takes on each fold the member best on the other folds, which on
    members near chance scores below both; the submission is the member best on every row, and 04
    scores, decides and reports that member's own OOF (probe: 'blend (single)' printed a figure
    below the member it submitted)."""
    import yaml
    from conftest import ROOT, make_toy_competition, stage
    from sklearn.metrics import accuracy_score

    make_toy_competition(tmp_path / "data", n=40)
    out = tmp_path / "out"
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    for name, n_mels in (("a", 16), ("b", 24)):  # two members near chance (noise clips)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({
            "base": str(ROOT / "configs/zoo/hgb.yaml"), "model": {"params": {"max_iter": 15, "min_samples_leaf": 3}},
            "features": {"name": "log_mel", "set": f"lm{n_mels}",
                         "params": {"n_mels": n_mels, "n_fft": 512, "hop_length": 256}}}))
        for script in ("01_features.py", "02_train.py", "03_infer.py"):
            stage(script, tmp_path / f"{name}.yaml", "--output-dir", out)
    oofs = [pd.read_csv(out / f"oof/{e}.csv") for e in "ab"]
    y = (oofs[0]["target"] == "b").to_numpy()
    own = [accuracy_score(y, o["p_b"] > 0.5) for o in oofs]
    held_out = cross_fitted("single", [o[["p_a", "p_b"]].to_numpy() for o in oofs], y.astype(int), oofs[0]["fold"],
                            {**BIN, "classes": ["a", "b"], "positive": "b"})
    assert accuracy_score(y, held_out[:, 1] > 0.5) < max(own)  # the case this test is about
    log = stage("04_ensemble.py", "a", "b", "--method", "single", "--output-dir", out).stdout
    summary = json.loads((out / "ensemble.json").read_text())
    best = int(np.argmax(own))
    assert summary["blend"]["accuracy"] == pytest.approx(own[best]) and f"OOF accuracy {own[best]:.4f}" in log
    preds = pd.read_csv(out / f"preds/{'ab'[best]}.csv")
    blend = pd.read_csv(out / "ensemble/test_blend.csv")
    np.testing.assert_allclose(blend["p_b"], preds["p_b"])
    assert summary["methods"]["single"]["scores"]["accuracy"] == pytest.approx(accuracy_score(y, held_out[:, 1] > 0.5))


def test_members_are_weighed_and_picked_at_a_fixed_threshold():
    """With decision.threshold 0.3, `single` picks the member best at 0.3, the one 04's member
    table names best and the one submitted (it picked by p > 0.5: review)."""
    from lib.data import tasks
    from lib.evaluation.metrics import score_all

    comp = dict(BIN, decision={"threshold": 0.3})
    y = np.array([0, 1] * 50)
    a = np.where(y == 1, 0.7, 0.2)  # right at 0.5 and at 0.3
    b = np.where(y == 1, 0.4, 0.1)  # wrong on every positive at 0.5, right at 0.3
    a[:10] = np.where(y[:10] == 1, 0.1, 0.9)  # ten mistakes for a, at either cut
    members = [np.stack([1 - p, p], 1) for p in (a, b)]
    at = [score_all(["accuracy"], y, m, comp, tasks.fixed_decision(comp))["accuracy"] for m in members]
    assert at == [0.9, 1.0] and score_all(["accuracy"], y, members[1], comp)["accuracy"] == 0.5
    assert list(Blender("single", comp).fit(members, y).weights) == [0, 1]
    assert Blender("softmax", comp).fit(members, y).weights[1] > 0.99
