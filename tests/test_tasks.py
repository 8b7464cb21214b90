"""Task types, metrics, windows and their aggregation, losses with class weights."""
import numpy as np
import pytest
import torch

from lib import tasks
from lib.core.errors import ConfigError
from lib.data.audio import cut_windows, window_starts
from lib.inputs import WindowData, aggregate
from lib.evaluation.metrics import score_all
from lib.training.losses import balanced_class_weight, build_loss

MULTI = {"task": "multilabel", "classes": ["a", "b", "c"]}
MULTICLASS = {"task": "multiclass", "classes": ["x", "y", "z"]}
BINARY = {"task": "binary", "classes": ["E", "I"], "positive": "I"}


def test_encoding_per_task():
    assert tasks.class_index(["y", "x"], MULTICLASS).tolist() == [1, 0]
    y = tasks.class_index(["a;c", "", "b"], MULTI)
    assert y.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert tasks.encode_targets(y, MULTI).dtype == np.float32
    assert tasks.encode_targets(np.array([0, 1]), BINARY).tolist() == [[0.0], [1.0]]
    assert [tasks.n_outputs(c) for c in (BINARY, MULTICLASS, MULTI)] == [1, 3, 3]
    with pytest.raises(ValueError, match="unknown label 'd'"):
        tasks.class_index(["a;d"], MULTI)


def test_probabilities_and_labels_per_task():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]])
    p = tasks.logits_to_probs(logits, MULTICLASS)
    np.testing.assert_allclose(p.sum(1), 1)
    assert tasks.probs_to_labels(p, MULTICLASS).tolist() == ["x", "z"]
    p = tasks.logits_to_probs(logits, MULTI)
    np.testing.assert_allclose(p, torch.sigmoid(logits.double()).numpy())  # independent sigmoids
    assert tasks.probs_to_labels(p, MULTI, " ").tolist() == ["a c", "c"]
    assert tasks.predict_indicators(p, MULTI).tolist() == [[1, 0, 1], [0, 0, 1]]
    p = tasks.logits_to_probs(torch.tensor([[0.0], [2.0]]), BINARY)
    assert p[1, 1] == pytest.approx(1 / (1 + np.exp(-2))) and p[1, 0] == pytest.approx(1 - p[1, 1])


def test_multilabel_metrics():
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    perfect = y * 0.9 + 0.05
    s = score_all(["accuracy", "macro_f1", "auroc", "average_precision"], y, perfect)
    assert s == {"accuracy": 1.0, "macro_f1": 1.0, "auroc": 1.0, "average_precision": 1.0}
    wrong = perfect.copy()
    wrong[0, 2] = 0.1  # one label of one row missed
    s = score_all(["accuracy", "macro_f1"], y, wrong)
    assert s["accuracy"] == 0.75  # subset accuracy: that row is wrong
    assert s["macro_f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)  # class c: precision 1, recall 1/2


def test_single_label_metrics():
    y = np.array([0, 1, 2, 2])
    p = np.eye(3)[[0, 1, 2, 1]] * 0.8 + 0.2 / 3
    s = score_all(["accuracy", "macro_f1", "balanced_accuracy", "auroc"], y, p)
    assert s["accuracy"] == 0.75 and s["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert s["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert np.isnan(score_all(["auroc"], np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]]))["auroc"])  # one class


def test_window_starts_cover_the_recording():
    assert window_starts(0.8, 1.0, 0.5).tolist() == [0.0]       # short: one padded window
    assert window_starts(3.0, 1.0, None).tolist() == [0.0]      # no hop: the start only
    assert window_starts(3.0, 1.0, 1.0).tolist() == [0.0, 1.0, 2.0]
    assert window_starts(3.5, 2.0, 1.0).tolist() == [0.0, 1.0, 1.5]  # a last window ends at the end
    sr = 100
    y = np.arange(350, dtype=np.float32)
    w = cut_windows(y, sr, window_starts(3.5, 2.0, 1.0), 2.0, "zero")
    assert w.shape == (3, 200) and w[1, 0] == 100 and w[2, -1] == 349
    w = cut_windows(y[:50], sr, np.zeros(1), 1.0, "repeat")
    assert w.shape == (1, 100) and w[0, 50] == 0 and w[0, 99] == 49


def test_aggregation_per_recording():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    owner = np.array([0, 0, 0, 1])
    multiclass = {"task": "multiclass"}
    np.testing.assert_allclose(aggregate(probs, owner, 2, "mean", multiclass), [[1.6 / 3, 1.4 / 3], [0.2, 0.8]])
    np.testing.assert_allclose(aggregate(probs, owner, 2, "max", multiclass), [[0.9 / 1.6, 0.7 / 1.6], [0.2, 0.8]])
    np.testing.assert_allclose(aggregate(probs, owner, 2, "vote", multiclass), [[1 / 3, 2 / 3], [0, 1]])
    np.testing.assert_allclose(aggregate(probs, owner, 2, "max", {"task": "multilabel"}), [[0.9, 0.7], [0.2, 0.8]])
    # binary: the positive class's largest window, not both maxima renormalised (windows 0.9 and
    # 0.1 of "abnormal" made a recording of 0.5, as the mean did; probe)
    binary = {"task": "binary", "classes": ["normal", "abnormal"], "positive": "abnormal"}
    np.testing.assert_allclose(aggregate(probs, owner, 2, "max", binary), [[0.3, 0.7], [0.2, 0.8]])
    np.testing.assert_allclose(aggregate(probs, owner, 2, "max", {**binary, "positive": "normal"}), [[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(probs, owner, 2, "median", multiclass)


def test_window_data_draws_one_fresh_window_per_recording():
    count = np.array([3, 1, 2])
    rec = np.repeat(np.arange(3), count)
    data = WindowData(torch.arange(6.0).view(6, 1, 1, 1), torch.zeros(6, 0), rec,
                      np.array([0, 3, 4]), count, {})
    rng = np.random.default_rng(0)
    draws = np.array([data.sample_windows(np.array([0, 1, 2]), rng) for _ in range(200)])
    assert set(draws[:, 0]) == {0, 1, 2} and set(draws[:, 1]) == {3} and set(draws[:, 2]) == {4, 5}
    windows, owner = data.windows_of(np.array([2, 0]))
    assert windows.tolist() == [4, 5, 0, 1, 2] and owner.tolist() == [0, 0, 1, 1, 1]


def test_losses_follow_the_task_and_class_weights():
    assert type(build_loss({"name": "auto"}, "multiclass")).__name__ == "SoftCrossEntropy"
    assert type(build_loss({"name": "auto"}, "multilabel")).__name__ == "BCEWithLogits"
    with pytest.raises(ConfigError, match="does not fit"):
        build_loss({"name": "bce"}, "multiclass")
    target = np.array([[1, 0, 0]] * 6 + [[0, 1, 0]] * 2 + [[0, 0, 1]] * 1, dtype=np.float32)
    w = balanced_class_weight(target, "multiclass")
    np.testing.assert_allclose(w, [9 / 18, 9 / 6, 9 / 3])
    np.testing.assert_allclose(balanced_class_weight(target, "multilabel"), [3 / 6, 7 / 2, 8 / 1])
    # a weighted cross-entropy equals torch's CrossEntropyLoss(weight=...)
    logits, labels = torch.randn(9, 3), torch.from_numpy(target.argmax(1))
    ours = build_loss({"name": "ce"}, "multiclass", w)(logits, torch.from_numpy(target))
    ref = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(w))(logits, labels)
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    focal = build_loss({"name": "focal", "params": {"gamma": 0.0}}, "multiclass")
    assert float(focal(logits, torch.from_numpy(target))) == pytest.approx(
        float(torch.nn.CrossEntropyLoss()(logits, labels)), rel=1e-5)  # gamma 0: plain cross-entropy


def test_balanced_sampler_evens_out_the_classes():
    from lib.training.loop import epoch_recordings

    y = np.array([0] * 90 + [1] * 10)
    rng = np.random.default_rng(0)
    recs = np.arange(100)
    assert sorted(epoch_recordings(recs, y, None, rng).tolist()) == recs.tolist()  # a permutation
    drawn = np.concatenate([epoch_recordings(recs, y, "balanced", rng) for _ in range(50)])
    assert abs((y[drawn] == 1).mean() - 0.5) < 0.03
    ym = np.zeros((100, 2), int)
    ym[:5, 1] = 1  # multi-label: a rare label, and rows without labels form their own class
    ym[5:50, 0] = 1
    drawn = np.concatenate([epoch_recordings(recs, ym, "balanced", rng) for _ in range(50)])
    assert abs(ym[drawn, 1].mean() - 1 / 3) < 0.03
    with pytest.raises(ConfigError, match="sampler"):
        epoch_recordings(recs, y, "oversample", rng)
    three = epoch_recordings(recs, y, None, rng, repeats=3)  # train.epoch_repeats: three passes, each a permutation
    assert [sorted(three[k * 100:(k + 1) * 100].tolist()) for k in range(3)] == [recs.tolist()] * 3
    assert len(epoch_recordings(recs, y, "balanced", rng, repeats=3)) == 300


def test_an_epoch_holds_a_crop_of_every_segment_whatever_the_sampler_draws():
    """Recordings of many segments (class 0: 10 each) and of one (class 1): the schedule counts a
    step per segment's crop; a balanced sampler's epoch drew 62% of them (the LR never annealed:
    review) or, the other way round, overran the schedule."""
    from lib.inputs.base import SplitInputs
    from lib.training.loop import epoch_items

    y, counts = np.array([0] * 90 + [1] * 10), [10] * 90 + [1] * 10
    data = SplitInputs()
    data.set_grid(np.arange(100), 100, np.array([[i, 0.0, 1.0] for i in range(100) for _ in range(counts[i])]))
    data.y, data.sample_windows = y, lambda recs, rng: data.regions_of(recs, rng)  # a crop: its region, here
    rng = np.random.default_rng(0)
    plain = epoch_items(data, np.arange(100), None, rng)
    assert sorted(plain.tolist()) == list(range(910))  # every segment once
    for repeats in (1, 2):
        for _ in range(5):
            drawn = epoch_items(data, np.arange(100), "balanced", rng, repeats)
            assert len(drawn) == repeats * 910 and (y[data.region_row[drawn]] == 1).any()
    few = np.array([0, 1, 95])  # more segments drawn than planned: cut to the plan
    y[:] = 0
    assert all(len(epoch_items(data, few, "balanced", rng)) == 21 for _ in range(5))


def test_slice_balanced_sampler_draws_every_slice_and_class_cell_equally_often():
    from lib.data.slices import SlicedLabels
    from lib.training.loop import epoch_recordings

    # two databases with opposite class ratios: a (80 rows, 10% positive) and b (20 rows, 70% positive)
    y = np.array([1] * 8 + [0] * 72 + [1] * 14 + [0] * 6)
    database = np.array(["a"] * 80 + ["b"] * 20)
    sliced, rng, recs = SlicedLabels(y, {"database": database}), np.random.default_rng(0), np.arange(100)
    drawn = np.concatenate([epoch_recordings(recs, sliced, "balanced_slices", rng) for _ in range(100)])
    cells = [np.mean((database[drawn] == d) & (y[drawn] == c)) for d in "ab" for c in (0, 1)]
    assert np.allclose(cells, 0.25, atol=0.02)  # each (database, class) a quarter of the draws
    pooled = np.concatenate([epoch_recordings(recs, sliced, "balanced", rng) for _ in range(100)])
    assert np.mean(y[pooled][database[pooled] == "b"]) > 0.85  # pooled balance leaves b mostly positive
    sub = recs[database == "a"]  # a recording subset (a fold's training rows) indexes its own slices
    assert set(epoch_recordings(sub, sliced, "balanced_slices", rng)) <= set(sub)
    with pytest.raises(ConfigError, match="slices"):
        epoch_recordings(recs, y, "balanced_slices", rng)  # labels without slices


def test_binary_ranking_metrics_score_the_positive_class_even_when_it_is_first():
    comp = {"task": "binary", "classes": ["abnormal", "normal"], "positive": "abnormal"}
    y = np.array([0, 1, 1, 0, 1, 1])  # 0 = abnormal, the positive class
    p_abnormal = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.05])
    probs = np.stack([p_abnormal, 1 - p_abnormal], 1)
    ap_abnormal, ap_normal = (1 + 2 / 4) / 2, (1 + 1 + 3 / 4 + 4 / 5) / 4  # by hand: precision at each true row
    s = score_all(["average_precision", "auroc", "accuracy"], y, probs, comp)
    assert s["average_precision"] == pytest.approx(ap_abnormal)
    assert score_all(["average_precision"], y, probs)["average_precision"] == pytest.approx(ap_normal)  # old form
    assert s["auroc"] == pytest.approx(6 / 8) and s["accuracy"] == pytest.approx(4 / 6)
