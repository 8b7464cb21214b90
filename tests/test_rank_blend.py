"""The rank blend (lib/evaluation/blending.py): its output is in [0, 1] and single-label rows sum
to 1, and it is neither offered nor accepted when a metric or the submission needs calibrated
probabilities."""
import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import f1_score

from lib.core.errors import ConfigError
from lib.evaluation.blending import (
    Blender,
    compare_methods,
    offered_methods,
    rank_refusal,
)
from lib.evaluation.ensemble import _choose_method

BIN = {"task": "binary", "classes": ["E", "I"], "positive": "I", "metric": "accuracy", "metrics": ["accuracy", "auroc"]}
MC = {"task": "multiclass", "classes": ["a", "b", "c", "d"], "metric": "macro_f1", "metrics": ["macro_f1", "auroc"]}
ML = {"task": "multilabel", "classes": ["a", "b", "c"], "metric": "lwlrap", "metrics": ["lwlrap", "average_precision"]}


def _members(rng, rows: int, n_classes: int, n: int = 3, softmax: bool = True) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        z = rng.normal(0, 1.5, (rows, n_classes))
        z[: rows // 4] = np.round(z[: rows // 4])  # ties within a column
        out.append(np.exp(z) / np.exp(z).sum(1, keepdims=True) if softmax else 1 / (1 + np.exp(-z)))
    return out


def test_rank_blend_rows_are_probabilities_for_single_label_tasks():
    rng = np.random.default_rng(0)
    members = _members(rng, 80, 4)
    out = Blender("rank", MC).fit(members, rng.integers(0, 4, 80)).apply(members)
    assert out.shape == (80, 4) and (out >= 0).all() and (out <= 1).all()
    np.testing.assert_allclose(out.sum(1), 1.0)
    mean_rank = np.mean([rankdata(m, axis=0) / 80 for m in members], axis=0)
    np.testing.assert_allclose(out, mean_rank / mean_rank.sum(1, keepdims=True))
    for comp in (BIN, dict(BIN, classes=["I", "E"])):  # positive second, then first
        pos = comp["classes"].index("I")
        members = _members(rng, 80, 2)
        out = Blender("rank", comp).fit(members, rng.integers(0, 2, 80)).apply(members)
        assert (out > 0).all() and (out < 1).all()
        np.testing.assert_allclose(out.sum(1), 1.0)
        np.testing.assert_allclose(out[:, pos], np.mean([rankdata(m[:, pos]) / 81 for m in members], axis=0))


def test_rank_blend_of_multilabel_members_is_each_class_mean_rank_in_0_1():
    rng = np.random.default_rng(1)
    members = _members(rng, 50, 3, softmax=False)
    out = Blender("rank", ML).fit(members, rng.integers(0, 2, (50, 3))).apply(members)
    assert (out > 0).all() and (out <= 1).all()
    np.testing.assert_allclose(out, np.mean([rankdata(m, axis=0) / 50 for m in members], axis=0))


def test_rank_is_offered_for_ranking_and_decision_metrics_only(tmp_path):
    assert "rank" in offered_methods(BIN) and "rank" in offered_methods(MC) and "rank" in offered_methods(ML)
    assert rank_refusal(BIN) is None
    (tmp_path / "brier.py").write_text("import numpy as np\n"
                                       "def brier(y, probs, comp):\n"
                                       "    return float(np.mean((np.eye(probs.shape[1])[y] - probs) ** 2))\n")
    custom = {"brier": {"function": f"{tmp_path}/brier.py:brier", "higher_is_better": False, "uses": "probs"}}
    refused = {
        "log_loss among the metrics": (dict(MC, metrics=["macro_f1", "log_loss"]), "log_loss"),
        "log_loss as the metric": (dict(BIN, metric="log_loss", metrics=["log_loss"]), "log_loss"),
        "log_loss per slice": (dict(BIN, metrics=["accuracy", "worst_log_loss"], slices=["site"]), "worst_log_loss"),
        "a custom metric of probabilities": (dict(MC, metrics=["macro_f1", "brier"], custom_metrics=custom), "brier"),
        "a probabilities submission": (dict(MC, submission={"format": "probabilities"}), "format: probabilities"),
        "a probability submission": (dict(BIN, submission={"format": "probability"}), "format: probability"),
        "a fixed binary threshold": (dict(BIN, decision={"threshold": 0.3}), "decision.threshold 0.3 cuts"),
        "fixed multi-label thresholds": (dict(ML, decision={"threshold": [0.5, 0.2, 0.5]}), "[0.5, 0.2, 0.5] cuts"),
    }
    for case, (comp, named) in refused.items():
        assert "rank" not in offered_methods(comp), case
        assert named in rank_refusal(comp) and "not a calibrated probability" in rank_refusal(comp), case
    assert "rank" in offered_methods(dict(BIN, submission={"format": "label"}))
    assert "rank" in offered_methods(dict(BIN, decision={"threshold": 0.5}))  # the default cut, as auto not adopted


def test_a_threshold_list_of_another_length_than_the_classes_found_is_a_config_error():
    """Classes found in the data by 00: the loader could not check the list's length, and 04 failed
    with a numpy broadcasting traceback (review)."""
    from lib.data.tasks import fixed_decision

    with pytest.raises(ConfigError, match=r"decision.threshold lists 2 values for the 3 classes \['a', 'b', 'c'\]"):
        fixed_decision(dict(ML, decision={"threshold": [0.3, 0.4]}))


def test_methods_are_compared_at_the_fixed_decision():
    """``best`` compared the methods at p > 0.5 and then cut the chosen blend at a fixed 0.3
    (probe: it chose ``rank``, a quantile there)."""
    rng = np.random.default_rng(3)
    y = (rng.random(120) < 0.25).astype(int)
    members = [np.column_stack([1 - p, p]) for p in (np.clip(0.25 + 0.3 * (y - 0.25) + rng.normal(0, s, 120), 0.01, 0.99)
                                                      for s in (0.15, 0.2))]
    comp = dict(BIN, classes=["E", "I"], positive="I", metrics=["f1"], metric="f1", decision={"threshold": 0.3})
    results = compare_methods(members, y, np.arange(120) % 4, comp, methods=["equal", "single"])
    for r in results.values():
        assert r["scores"]["f1"] == pytest.approx(f1_score(y, r["oof"][:, 1] > 0.3))
        assert r["scores"]["f1"] != pytest.approx(f1_score(y, r["oof"][:, 1] > 0.5))


def test_naming_rank_where_probabilities_are_needed_is_refused_with_the_reason():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 60)
    comp = dict(MC, metrics=["macro_f1", "log_loss"])
    members = _members(rng, 60, 4)
    results = compare_methods(members, y, np.arange(60) % 3, comp, methods=["equal", "geometric"])
    with pytest.raises(ConfigError, match=r"'rank' is not offered here.*log_loss score probabilities.*--method"):
        _choose_method("rank", results, comp, None, members, y)
    with pytest.raises(ConfigError, match="is not one of best, equal, geometric"):
        _choose_method("nonsense", results, comp, None, members, y)
    # chosen as the best, the note says why rank was not among the methods (it was left out unsaid)
    assert _choose_method("best", results, comp, None, members, y)[1] == (
        "best cross-fitted OOF macro_f1 of 2 methods ('rank' left out: the metric(s) log_loss score probabilities)")
    assert "left out" not in _choose_method("best", results, dict(MC, metrics=["macro_f1"]), None, members, y)[1]
