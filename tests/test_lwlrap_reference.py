"""lwlrap (lib/evaluation/metrics.py) against the Freesound Audio Tagging 2019 reference, ties
included.

``_one_sample_positive_class_precisions`` and ``calculate_per_class_lwlrap`` below follow, line
for line, Dan Ellis' reference implementation in the competition's lwlrap colab
(https://colab.research.google.com/drive/1AgPdhSp7ttY18O3fEoHOQKlt_3HJDLi8, linked from
https://www.kaggle.com/c/freesound-audio-tagging-2019/overview/evaluation; all credit to its
author). Two changes only, so that it runs on numpy 2: ``np.int`` and ``np.bool`` (removed in
numpy 1.24) are written ``int`` and ``bool``; the comments are ours.
"""
import numpy as np
import pytest

from lib.evaluation.metrics import score_all


def _one_sample_positive_class_precisions(scores, truth):
    num_classes = scores.shape[0]
    pos_class_indices = np.flatnonzero(truth > 0)
    if not len(pos_class_indices):  # no true class: nothing to score
        return pos_class_indices, np.zeros(0)
    retrieved_classes = np.argsort(scores)[::-1]  # highest score first; ties in reverse argsort order
    class_rankings = np.zeros(num_classes, dtype=int)
    class_rankings[retrieved_classes] = range(num_classes)
    retrieved_class_true = np.zeros(num_classes, dtype=bool)
    retrieved_class_true[class_rankings[pos_class_indices]] = True
    retrieved_cumulative_hits = np.cumsum(retrieved_class_true)
    precision_at_hits = (
        retrieved_cumulative_hits[class_rankings[pos_class_indices]] /
        (1 + class_rankings[pos_class_indices].astype(float)))
    return pos_class_indices, precision_at_hits


def calculate_per_class_lwlrap(truth, scores):
    assert truth.shape == scores.shape
    num_samples, num_classes = scores.shape
    precisions_for_samples_by_classes = np.zeros((num_samples, num_classes))
    for sample_num in range(num_samples):
        pos_class_indices, precision_at_hits = (
            _one_sample_positive_class_precisions(scores[sample_num, :], truth[sample_num, :]))
        precisions_for_samples_by_classes[sample_num, pos_class_indices] = precision_at_hits
    labels_per_class = np.sum(truth > 0, axis=0)
    weight_per_class = labels_per_class / float(np.sum(labels_per_class))
    per_class_lwlrap = (np.sum(precisions_for_samples_by_classes, axis=0) /
                        np.maximum(1, labels_per_class))
    return per_class_lwlrap, weight_per_class


def _reference(truth, scores) -> float:
    """The overall lwlrap as the reference defines it: the class-weighted mean of per-class lwlrap."""
    per_class, weight = calculate_per_class_lwlrap(truth, scores)
    return float(np.sum(per_class * weight))


def _comp(n_classes: int) -> dict:
    return {"task": "multilabel", "classes": [f"c{k}" for k in range(n_classes)]}


@pytest.mark.parametrize("n_classes", [5, 12, 80])  # 80 (FSDKaggle2019's count): numpy's argsort beyond its small-array path
def test_lwlrap_equals_the_reference_on_random_data_with_ties(n_classes):
    rng = np.random.default_rng(n_classes)
    for levels in (None, 2, 4, 10):  # continuous scores, then 2, 4, 10 score levels: many ties
        truth = (rng.random((120, n_classes)) < 3 / n_classes).astype(int)
        truth[:5] = 0  # rows without a label do not count
        scores = rng.random((120, n_classes))
        if levels:
            scores = np.round(scores * (levels - 1)) / (levels - 1)
        scores[5:10] = 0.5  # rows where every class ties
        ours = score_all(["lwlrap"], truth, scores, _comp(n_classes))["lwlrap"]
        assert ours == pytest.approx(_reference(truth, scores), abs=1e-12), levels


def test_ties_are_broken_as_the_reference_breaks_them_not_as_sklearn():
    """Three tied classes: the reference retrieves them last class first, so a true last class
    scores precision 1 and a true first class 1/3 (sklearn's label ranking AP gives 1/3 to both)."""
    flat = np.full((1, 3), 0.5)
    for truth, expected in (([[0, 0, 1]], 1.0), ([[1, 0, 0]], 1 / 3), ([[1, 0, 1]], (1 + 2 / 3) / 2)):
        truth = np.array(truth)
        assert score_all(["lwlrap"], truth, flat, _comp(3))["lwlrap"] == pytest.approx(expected)
        assert _reference(truth, flat) == pytest.approx(expected)
    assert np.isnan(score_all(["lwlrap"], np.zeros((2, 3), int), np.full((2, 3), 0.5), _comp(3))["lwlrap"])
