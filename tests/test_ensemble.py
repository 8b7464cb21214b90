import numpy as np
import pandas as pd
import pytest

from lib.evaluation.ensemble import blend, make_submission, score_weights


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
    with pytest.raises(ValueError):
        score_weights([0.5], "softmax", temperature=0)
    with pytest.raises(ValueError):
        score_weights([0.5], "best")


def test_blend_is_the_weighted_mean():
    a, b = np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([[0.4, 0.6], [1.0, 0.0]])
    np.testing.assert_allclose(blend([a, b], [0.25, 0.75]), 0.25 * a + 0.75 * b)


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
