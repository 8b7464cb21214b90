"""Competition metrics against hand computations and independent reference implementations
(PhysioNet/CinC 2022 evaluate_model.py, D. Ellis' lwlrap, the BirdCLEF 2023 padded cmAP), the
direction of lower-is-better metrics, and custom metrics from a competition YAML."""
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import average_precision_score, f1_score

from lib.components import load_competition
from lib.core.errors import ConfigError
from lib.evaluation.metrics import get_metric, is_better, per_class_report, score_all, sign

BINARY_FIRST = {"task": "binary", "classes": ["abnormal", "normal"], "positive": "abnormal"}
ICBHI = {"task": "multiclass", "classes": ["both", "crackle", "normal", "wheeze"], "normal_class": "normal"}
MURMUR = {"task": "multiclass", "classes": ["absent", "present", "unknown"]}  # sorted, as found in data
OUTCOME = {"task": "binary", "classes": ["Abnormal", "Normal"], "positive": "Abnormal"}
MULTI = {"task": "multilabel", "classes": ["a", "b", "c"]}


def _scores(names, y, pred, comp):
    """score_all on probabilities whose decisions are ``pred`` (class indices)."""
    return score_all(names, np.asarray(y), np.eye(len(comp["classes"]))[pred], comp)


def _competition(tmp_path, **keys):
    cfg = {"task": "binary", "classes": ["a", "b"], "audio": {"clip_seconds": 1.0},
           "train": {"csv": "train.csv", "id_column": "id", "target_column": "label"}, **keys}
    path = tmp_path / "comp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _load_error(path) -> str:
    with pytest.raises(ConfigError) as err:
        load_competition(path)
    return str(err.value)


# --- precision, recall, F1 ---------------------------------------------------------------------------

def test_binary_precision_recall_f1_are_of_the_positive_class_even_when_first():
    y = [0, 0, 0, 1, 1, 1, 1, 1]     # 0 = abnormal, the positive class
    pred = [0, 0, 1, 0, 0, 1, 1, 1]  # TP 2 (rows 0, 1), FN 1 (row 2), FP 2 (rows 3, 4)
    s = _scores(["precision", "recall", "f1"], y, pred, BINARY_FIRST)
    assert s["precision"] == pytest.approx(2 / 4) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))  # 2TP / (2TP + FP + FN) = 4/7
    # of the class "normal" instead they would be 3/4 and 3/5


def test_precision_recall_f1_of_one_class_are_refused_for_other_tasks(tmp_path):
    msg = _load_error(_competition(tmp_path, task="multiclass", classes=["x", "y", "z"], metric="precision"))
    assert str(tmp_path / "comp.yaml") in msg and "'precision' is for binary tasks, not multiclass" in msg
    assert "use macro_precision or micro_precision" in msg
    with pytest.raises(ConfigError, match="use macro_f1 or micro_f1"):
        get_metric("f1", MULTI)


def test_macro_and_micro_precision_recall_f1_single_label():
    comp = {"task": "multiclass", "classes": ["x", "y", "z", "w"]}  # w: no rows, never predicted
    y = [0, 0, 1, 2, 2, 2]
    pred = [0, 1, 1, 2, 2, 0]
    # x: P 1/2 R 1/2 F 1/2; y: P 1/2 R 1 F 2/3; z: P 2/2 R 2/3 F 4/5; w has no rows: left out of
    # the macro means (a slice holding some classes only was capped at 1/n_classes with every row right)
    s = _scores(["macro_precision", "macro_recall", "macro_f1", "micro_precision", "micro_recall", "micro_f1"],
                y, pred, comp)
    assert s["macro_precision"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert s["macro_recall"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert s["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    assert s["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    for name in ("micro_precision", "micro_recall", "micro_f1"):  # single-label: the accuracy
        assert s[name] == pytest.approx(4 / 6)
    # a z row predicted w, a class without rows: it costs z's recall, and w is no class of the mean
    with_w = pred[:-1] + [3]  # x: F 2/3, y: 2/3, z: 4/5
    assert _scores(["macro_f1"], y, with_w, comp)["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 4 / 5) / 3)
    multi = {"task": "multilabel", "classes": ["a", "b", "c"]}  # label c: no rows
    truth = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    assert score_all(["macro_f1", "macro_recall"], truth, truth.astype(float), multi) == {"macro_f1": 1.0,
                                                                                         "macro_recall": 1.0}
    report = per_class_report(np.array(y), np.array(pred), comp).set_index("class")
    assert list(report.index) == ["x", "y", "z", "w", "micro", "macro"]
    np.testing.assert_allclose(report["precision"], [1 / 2, 1 / 2, 1, 0, 4 / 6, 2 / 3])
    np.testing.assert_allclose(report["recall"], [1 / 2, 1, 2 / 3, 0, 4 / 6, 13 / 18])
    np.testing.assert_allclose(report["f1"], [1 / 2, 2 / 3, 4 / 5, 0, 4 / 6, 59 / 90])
    assert report["support"].tolist() == [2, 1, 3, 0, 6, 6]


def test_micro_and_macro_multilabel():
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    probs = np.array([[0.9, 0.1, 0.2], [0.1, 0.8, 0.7], [0.6, 0.3, 0.1]])  # pred [[1,0,0],[0,1,1],[1,0,0]]
    s = score_all(["micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall"], y, probs, MULTI)
    # 4 labels predicted, 5 true, 3 right
    assert s["micro_precision"] == pytest.approx(3 / 4) and s["micro_recall"] == pytest.approx(3 / 5)
    assert s["micro_f1"] == pytest.approx(2 * 3 / (4 + 5))
    # a: P 1 R 1; b: P 1 R 1/2; c: P 0 R 0
    assert s["macro_precision"] == pytest.approx(2 / 3) and s["macro_recall"] == pytest.approx(1.5 / 3)
    report = per_class_report(y, (probs > 0.5).astype(int), MULTI)
    assert report["class"].tolist() == ["a", "b", "c", "micro", "macro"] and report["support"].tolist() == [2, 2, 1, 5, 5]


# --- log loss, and the direction of a metric ---------------------------------------------------------

def test_log_loss_by_hand_and_lower_is_better():
    binary = {"task": "binary", "classes": ["E", "I"], "positive": "I"}
    s = score_all(["log_loss"], np.array([1, 0]), np.array([[0.2, 0.8], [0.6, 0.4]]), binary)
    assert s["log_loss"] == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    # class 1 has no row: every class must be given to sklearn
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    multiclass = {"task": "multiclass", "classes": ["x", "y", "z"]}
    assert score_all(["log_loss"], np.array([0, 2]), probs, multiclass)["log_loss"] == pytest.approx(
        -(np.log(0.7) + np.log(0.6)) / 2)
    # a certain, wrong prediction is clipped to eps, not infinite
    assert score_all(["log_loss"], np.array([0]), np.array([[0.0, 1.0]]), binary)["log_loss"] == pytest.approx(
        -np.log(np.finfo(float).eps))
    # multi-label: the mean over classes of each class's binary log loss
    y, probs = np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.2], [0.4, 0.7]])
    multi = {"task": "multilabel", "classes": ["a", "b"]}
    expected = (-(np.log(0.9) + np.log(0.6)) / 2 - (np.log(0.8) + np.log(0.7)) / 2) / 2
    assert score_all(["log_loss"], y, probs, multi)["log_loss"] == pytest.approx(expected)
    assert sign("log_loss") == -1.0 and sign("accuracy") == 1.0
    assert is_better("log_loss", 0.3, 0.5) and not is_better("log_loss", 0.5, 0.3) and is_better("log_loss", 9.0, None)
    assert is_better("accuracy", 0.5, 0.3) and not is_better("accuracy", 0.3, 0.5)


def test_a_decision_changes_label_metrics_but_not_probability_metrics():
    comp = {"task": "binary", "classes": ["E", "I"], "positive": "I"}
    y = np.array([1, 1, 0])
    p = np.array([0.6, 0.4, 0.3])
    probs = np.stack([1 - p, p], 1)
    names = ["accuracy", "f1", "log_loss", "auroc"]
    default = score_all(names, y, probs, comp)               # threshold 0.5: predictions 1, 0, 0
    tuned = score_all(names, y, probs, comp, {"threshold": 0.35})  # 1, 1, 0
    assert default["accuracy"] == pytest.approx(2 / 3) and tuned["accuracy"] == 1.0
    assert default["f1"] == pytest.approx(2 / 3) and tuned["f1"] == 1.0  # P 1 R 1/2 -> 2/3
    assert tuned["log_loss"] == default["log_loss"] and tuned["auroc"] == default["auroc"] == 1.0


# --- ICBHI and PhysioNet 2016 ----------------------------------------------------------------------

def test_icbhi_and_macc_by_hand():
    b, c, n, w = range(4)  # both, crackle, normal, wheeze
    y = [n, n, n, c, c, w, b, b]
    pred = [n, c, n, c, w, w, b, n]
    s = _scores(["icbhi_sensitivity", "icbhi_specificity", "icbhi_score", "macc"], y, pred, ICBHI)
    # Sp: normal rows predicted normal 2/3; ICBHI Se: abnormal rows predicted as their own class
    # (rows 3, 5, 6 of 3..7) 3/5; MAcc Se: predicted as any abnormal class (rows 3..6) 4/5
    assert s["icbhi_specificity"] == pytest.approx(2 / 3) and s["icbhi_sensitivity"] == pytest.approx(3 / 5)
    assert s["icbhi_score"] == pytest.approx((3 / 5 + 2 / 3) / 2)
    assert s["macc"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    # binary: the normal class defaults to the one that is not positive (here the second)
    s = _scores(["icbhi_sensitivity", "icbhi_specificity", "icbhi_score", "macc", "balanced_accuracy"],
                [0, 0, 1, 1, 1], [0, 1, 1, 1, 0], BINARY_FIRST)
    assert s["icbhi_sensitivity"] == pytest.approx(1 / 2) and s["icbhi_specificity"] == pytest.approx(2 / 3)
    assert s["icbhi_score"] == s["macc"] == pytest.approx((1 / 2 + 2 / 3) / 2) == s["balanced_accuracy"]


def test_icbhi_needs_normal_class_for_multiclass(tmp_path):
    msg = _load_error(_competition(tmp_path, task="multiclass", classes=["crackle", "normal", "wheeze"],
                                   metric="icbhi_score"))
    assert str(tmp_path / "comp.yaml") in msg and "set normal_class" in msg
    load_competition(_competition(tmp_path, task="multiclass", classes=["crackle", "normal", "wheeze"],
                                  metric="macc", normal_class="normal"))
    msg = _load_error(_competition(tmp_path, task="multiclass", classes=["crackle", "normal", "wheeze"],
                                   metric="macc", normal_class="healthy"))
    assert "normal_class 'healthy' is not in classes" in msg
    with pytest.raises(ConfigError, match="set normal_class"):
        score_all(["icbhi_score"], np.array([0, 1]), np.eye(3)[[0, 1]], {"task": "multiclass", "classes": ["x", "y", "z"]})


# --- PhysioNet/CinC 2022 -----------------------------------------------------------------------------
# The challenge's own functions (physionetchallenges/evaluation-2022, evaluate_model.py), rewritten
# here over one-hot arrays in the challenge's class order, as an independent check.

def _ref_confusion_matrix(labels, outputs):
    """A[i, j]: patients with output class i and label class j."""
    A = np.zeros((outputs.shape[1], labels.shape[1]))
    for k in range(labels.shape[0]):
        for i in range(outputs.shape[1]):
            for j in range(labels.shape[1]):
                if outputs[k, i] == 1 and labels[k, j] == 1:
                    A[i, j] += 1
    return A


def _ref_weighted_accuracy(labels, outputs, classes):
    if classes == ["Present", "Unknown", "Absent"]:
        weights = np.array([[5, 3, 1], [5, 3, 1], [5, 3, 1]])
    elif classes == ["Abnormal", "Normal"]:
        weights = np.array([[5, 1], [5, 1]])
    B = weights * _ref_confusion_matrix(labels, outputs)
    return np.trace(B) / np.sum(B)


def _ref_cost(labels, outputs, classes):
    A = _ref_confusion_matrix(labels, outputs)
    positive = [i for i, c in enumerate(classes) if c in ("Present", "Unknown", "Abnormal")]
    negative = [i for i, c in enumerate(classes) if c in ("Absent", "Normal")]
    tp, fp = A[np.ix_(positive, positive)].sum(), A[np.ix_(positive, negative)].sum()
    fn, tn = A[np.ix_(negative, positive)].sum(), A[np.ix_(negative, negative)].sum()
    n = tp + fp + fn + tn
    cost_algorithm = 10 * n
    cost_expert = (25 + 397 * ((tp + fp) / n) - 1718 * ((tp + fp) / n) ** 2 + 11296 * ((tp + fp) / n) ** 4) * n
    cost_treatment, cost_error = 10000 * tp, 50000 * fn
    return (cost_algorithm + cost_expert + cost_treatment + cost_error) / n


def test_physionet_2022_by_hand():
    a, p, u = range(3)  # MURMUR classes: absent, present, unknown
    y = [p, p, u, a, a, a]
    pred = [p, a, u, a, a, p]
    # right: one Present (weight 5), one Unknown (3), two Absent (1 each); all: 2 x 5 + 3 + 3 x 1
    s = _scores(["murmur_weighted_accuracy"], y, pred, MURMUR)
    assert s["murmur_weighted_accuracy"] == pytest.approx((5 + 3 + 2) / 16)
    ab, no = range(2)
    s = _scores(["outcome_weighted_accuracy", "outcome_cost"], [ab, ab, no, no], [ab, no, ab, no], OUTCOME)
    assert s["outcome_weighted_accuracy"] == pytest.approx((5 + 1) / (2 * 5 + 2 * 1))
    # TP 1, FP 1, FN 1, TN 1; referred share 2/4: expert 4 (25 + 397/2 - 1718/4 + 11296/16) = 4 x 500
    assert s["outcome_cost"] == pytest.approx((10 * 4 + 2000 + 10000 * 1 + 50000 * 1) / 4)
    assert sign("outcome_cost", OUTCOME) == -1.0


def test_physionet_2022_against_the_challenge_code():
    rng = np.random.default_rng(0)
    murmur_ref = ["Present", "Unknown", "Absent"]
    to_ref = [murmur_ref.index(c.capitalize()) for c in MURMUR["classes"]]  # our index -> the challenge's
    for _ in range(20):
        y, pred = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
        onehot = np.eye(3, dtype=int)
        expected = _ref_weighted_accuracy(onehot[np.take(to_ref, y)], onehot[np.take(to_ref, pred)], murmur_ref)
        assert _scores(["murmur_weighted_accuracy"], y, pred, MURMUR)["murmur_weighted_accuracy"] == pytest.approx(expected)
        outcome = {"task": "binary", "classes": ["normal", "ABNORMAL"], "positive": "normal"}  # any case, any order
        y, pred = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
        labels, outputs = np.eye(2, dtype=int)[1 - y], np.eye(2, dtype=int)[1 - pred]  # challenge: Abnormal first
        s = _scores(["outcome_weighted_accuracy", "outcome_cost"], y, pred, outcome)
        assert s["outcome_weighted_accuracy"] == pytest.approx(_ref_weighted_accuracy(labels, outputs, ["Abnormal", "Normal"]))
        assert s["outcome_cost"] == pytest.approx(_ref_cost(labels, outputs, ["Abnormal", "Normal"]))


def test_physionet_2022_class_names_are_checked_at_config_load(tmp_path):
    msg = _load_error(_competition(tmp_path, task="multiclass", classes=["x", "y", "z"], metric="murmur_weighted_accuracy"))
    assert str(tmp_path / "comp.yaml") in msg and "Present/Unknown/Absent" in msg
    load_competition(_competition(tmp_path, task="multiclass", classes=["Absent", "Present", "Unknown"],
                                  metric="murmur_weighted_accuracy"))
    msg = _load_error(_competition(tmp_path, classes=["abnormal", "healthy"], metric="outcome_cost"))
    assert "Abnormal/Normal" in msg
    msg = _load_error(_competition(tmp_path, task="multiclass", classes=["Abnormal", "Normal", "Unsure"], metric="outcome_cost"))
    assert "'outcome_cost' is for binary tasks" in msg


# --- multi-label ranking: lwlrap, padded cmAP --------------------------------------------------------

def _ellis_lwlrap(truth, scores):
    """D. Ellis' reference (Freesound Audio Tagging 2019 colab): per-class precisions, class-weighted."""
    n, c = scores.shape
    precisions = np.zeros((n, c))
    for i in range(n):
        pos = np.flatnonzero(truth[i] > 0)
        if not len(pos):
            continue
        ranking = np.argsort(scores[i])[::-1]
        rank_of = np.zeros(c, dtype=int)
        rank_of[ranking] = range(c)
        hit_at_rank = np.zeros(c, dtype=bool)
        hit_at_rank[rank_of[pos]] = True
        precisions[i, pos] = np.cumsum(hit_at_rank)[rank_of[pos]] / (1 + rank_of[pos])
    labels_per_class = np.sum(truth > 0, axis=0)
    weight_per_class = labels_per_class / labels_per_class.sum()
    per_class = precisions.sum(0) / np.maximum(1, labels_per_class)
    return np.sum(per_class * weight_per_class)


def test_lwlrap_by_hand_and_against_the_reference():
    y = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]])  # the last row has no label: it does not count
    probs = np.array([[0.9, 0.8, 0.1], [0.3, 0.2, 0.1], [0.5, 0.5, 0.5]])
    # row 0: a ranked 1st (precision 1/1), c 3rd (2/3); row 1: b ranked 2nd (1/2)
    assert score_all(["lwlrap"], y, probs, MULTI)["lwlrap"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    rng = np.random.default_rng(0)
    comp = {"task": "multilabel", "classes": [str(k) for k in range(12)]}
    for _ in range(5):
        truth = (rng.random((60, 12)) > 0.7).astype(int)
        truth[:3] = 0
        scores = rng.random((60, 12))  # continuous: no ties
        assert score_all(["lwlrap"], truth, scores, comp)["lwlrap"] == pytest.approx(_ellis_lwlrap(truth, scores))
        tied = np.round(scores * 3) / 3  # 4 score levels: many ties, scored as the reference scores them
        assert score_all(["lwlrap"], truth, tied, comp)["lwlrap"] == pytest.approx(_ellis_lwlrap(truth, tied))
    y1, flat = np.array([[0, 0, 1]]), np.full((1, 3), 0.5)  # all tied: the reference ranks the last class first
    assert score_all(["lwlrap"], y1, flat, MULTI)["lwlrap"] == pytest.approx(_ellis_lwlrap(y1, flat)) == 1.0
    with pytest.raises(ConfigError, match="'lwlrap' is for multilabel tasks"):
        get_metric("lwlrap", {"task": "multiclass", "classes": ["x", "y"]})


def _kaggle_padded_cmap(solution: pd.DataFrame, submission: pd.DataFrame, padding_factor=5):
    """The BirdCLEF 2023 metric notebook's padded_cmap, over DataFrames."""
    new_rows = pd.DataFrame([[1] * len(solution.columns)] * padding_factor, columns=solution.columns)
    padded_solution = pd.concat([solution, new_rows]).reset_index(drop=True)
    padded_submission = pd.concat([submission, new_rows]).reset_index(drop=True)
    return average_precision_score(padded_solution.values, padded_submission.values, average="macro")


def test_padded_cmap_by_hand_and_against_the_notebook():
    comp = {"task": "multilabel", "classes": ["a", "b"]}
    y = np.array([[1, 0], [0, 0]])  # class b has no positive row: only the padding makes it defined
    probs = np.array([[0.2, 0.9], [0.6, 0.1]])
    # a, padded: 5 positives at 1.0 (P 1, R 5/6), then 0.6 negative, then 0.2 positive (P 6/7, R 1):
    # AP = 5/6 x 1 + 1/6 x 6/7 = 41/42; b: the 5 padded positives rank first, AP 1
    assert score_all(["padded_cmap"], y, probs, comp)["padded_cmap"] == pytest.approx((41 / 42 + 1) / 2)
    rng = np.random.default_rng(1)
    comp = {"task": "multilabel", "classes": [f"bird{k}" for k in range(8)]}
    truth = (rng.random((30, 8)) > 0.8).astype(int)
    scores = rng.random((30, 8))
    expected = _kaggle_padded_cmap(pd.DataFrame(truth, columns=comp["classes"]), pd.DataFrame(scores, columns=comp["classes"]))
    assert score_all(["padded_cmap"], truth, scores, comp)["padded_cmap"] == pytest.approx(expected)


# --- a competition's own metric ----------------------------------------------------------------------

CUSTOM = '''
from sklearn.metrics import cohen_kappa_score
import numpy as np

def kappa(y, pred, comp):
    return cohen_kappa_score(y, pred)

def brier(y, probs, comp):
    return float(np.mean(np.sum((probs - np.eye(probs.shape[1])[y]) ** 2, axis=1)))
'''


def test_custom_metric_from_the_competition_yaml(tmp_path):
    (tmp_path / "my_metrics.py").write_text(CUSTOM)
    custom = {"kappa": {"function": "my_metrics.py:kappa", "uses": "labels"},
              "brier": {"function": "my_metrics.py:brier", "higher_is_better": False}}
    comp = load_competition(_competition(tmp_path, task="multiclass", classes=["x", "y", "z"], metric="kappa",
                                         metrics=["accuracy", "brier"], custom_metrics=custom))
    assert comp["metric"] == "kappa" and comp["metrics"] == ["kappa", "accuracy", "brier"]
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])  # predictions 0, 1, 1, 1
    s = score_all(comp["metrics"], y, probs, comp)
    # kappa: observed agreement 3/4, chance 1/2 x 1/4 + 1/2 x 3/4 = 1/2 -> (3/4 - 1/2) / (1 - 1/2)
    assert s["kappa"] == pytest.approx(0.5) and s["accuracy"] == 0.75
    assert s["brier"] == pytest.approx((0.06 + 0.86 + 0.14 + 0.06) / 4)  # sum of squares per row
    assert sign("kappa", comp) == 1.0 and sign("brier", comp) == -1.0 and is_better("brier", 0.1, 0.2, comp)


@pytest.mark.parametrize("metric, name, function, expected", [
    ("accuracy", "kappa", "missing.py:kappa", "'FILE.py:FUNCTION' with an existing file"),  # checked though unused
    ("kappa", "kappa", "my_metrics.py:kapa", "has no function 'kapa'"),
    ("accuracy", "accuracy", "my_metrics.py:kappa", "has the name of a built-in metric"),
    ("kapa", "kappa", "my_metrics.py:kappa", "unknown metric 'kapa'"),
])
def test_custom_metric_errors(tmp_path, metric, name, function, expected):
    (tmp_path / "my_metrics.py").write_text(CUSTOM)
    msg = _load_error(_competition(tmp_path, metric=metric, custom_metrics={name: {"function": function, "uses": "labels"}}))
    assert str(tmp_path / "comp.yaml") in msg and expected in msg
    assert "did you mean 'kappa'?" in msg if metric == "kapa" else f"custom metric {name!r}" in msg


def test_a_mistyped_slice_metric_is_suggested_among_the_slice_metrics():
    with pytest.raises(ConfigError, match=r"unknown metric 'worst_acuracy': worst_<metric>.*did you mean "
                                          r"'worst_accuracy'\?"):
        get_metric("worst_acuracy")
    with pytest.raises(ConfigError, match=r"unknown metric 'macro_auroc'.*did you mean 'auroc'\?"):  # not macro_recall
        get_metric("macro_auroc")


def test_a_class_or_slice_value_absent_from_the_labels_warns_nothing():
    """A class predicted but absent from the rows scored (a class without training rows, a slice of
    one row) gave scikit-learn's UserWarnings amid 04's tables (probe): the metric says it by its
    value, the stages by their notes."""
    import warnings

    comp = {"task": "multiclass", "classes": ["a", "b", "c"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = _scores(["balanced_accuracy", "macro_f1", "accuracy"], [0, 1, 1], np.array([0, 2, 1]), comp)
        one = _scores(["balanced_accuracy"], [1], np.array([1]), comp)
    assert s["accuracy"] == pytest.approx(2 / 3) and one["balanced_accuracy"] == 1.0
