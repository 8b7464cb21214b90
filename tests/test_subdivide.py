"""Subdivided classes (``subdivide``, MAIC 2021's winner): trained on class x metadata values, the
fine probabilities merged back to the competition's classes (generated competitions)."""
import contextlib

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from threadpoolctl import threadpool_limits

from lib.components import load_competition, load_experiment
from lib.core.errors import ConfigError
from lib.core.paths import Outputs
from lib.data import tasks
from lib.data.prepare import prepare
from lib.training.losses import SoftCrossEntropy, balanced_class_weight, build_loss

SUBDIVIDE = {"by": ["sex", "age"], "bands": {"age": [40, 60]}}
AGES = [30, 50, 70]


def _write_competition(tmp_path, task="binary", n=48, **extra) -> tuple[dict, object]:
    """Noise clips of 0.5 s at 8 kHz with a sex and an age each (age 30/50/70 in turn, one empty
    age, one empty sex), a test set of 6 clips; returns ``(config as written, its path)``."""
    rng = np.random.default_rng(3)
    root = tmp_path / "data"
    (root / "audio").mkdir(parents=True, exist_ok=True)
    classes = ["no", "yes"] if task == "binary" else ["a", "b", "c"]
    rows, test = [], []
    for i in range(n):
        sf.write(root / "audio" / f"r{i}.wav", 0.1 * rng.standard_normal(4000).astype(np.float32), 8000)
        rows.append({"id": f"r{i}", "label": classes[i % len(classes)], "sex": "" if i == 12 else "FM"[(i // 3) % 2],
                     "age": "" if i == 7 else AGES[(i // 6) % 3]})
    for i in range(6):
        sf.write(root / "audio" / f"t{i}.wav", 0.1 * rng.standard_normal(4000).astype(np.float32), 8000)
        test.append({"id": f"t{i}", "sex": "FM"[i % 2], "age": AGES[i % 3]})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    pd.DataFrame(test).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": [t["id"] for t in test], "label": classes[0]}).to_csv(root / "sample.csv", index=False)
    cfg = {"data_dir": str(root), "task": task, "classes": classes, "audio": {"clip_seconds": 0.5},
           "train": {"csv": "train.csv", "id_column": "id", "target_column": "label", "audio": {"template": "audio/{id}.wav"}},
           "test": {"csv": "test.csv", "id_column": "id", "audio": {"template": "audio/{id}.wav"}},
           "submission": {"sample": "sample.csv", "id_column": "id", "target_column": "label", "format": "label"},
           "metadata": {"numeric": ["age"], "categorical": ["sex"]}, "folds": {"n_folds": 2, "seed": 0},
           "subdivide": SUBDIVIDE, **extra}
    path = tmp_path / "sub.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return cfg, path


def _expected_fine(row) -> str:
    sex = row["sex"] if row["sex"] != "" else "?"
    age = "age=?" if row["age"] == "" else "age<40" if row["age"] < 40 else "40<=age<60" if row["age"] < 60 else "age>=60"
    return f"{row['label']}|sex={sex}|{age}"


# --- the merge ------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,classes", [("multiclass", ["a", "b", "c"]), ("binary", ["no", "yes"])])
def test_class_probabilities_are_the_sums_of_their_fine_ones(task, classes):
    fine = sorted(f"{c}|sex={s}" for c in classes for s in "FM?")
    comp = {"task": task, "classes": classes, "positive": classes[-1], "fine_classes": fine}
    logits = np.random.default_rng(0).normal(scale=3, size=(50, len(fine)))
    probs = tasks.logits_to_probs(logits, comp)
    soft = torch.softmax(torch.as_tensor(logits), 1).numpy()
    assert probs.shape == (50, len(classes)) and tasks.n_outputs(comp) == len(fine)
    for k, c in enumerate(classes):
        np.testing.assert_allclose(probs[:, k], soft[:, [f.startswith(c + "|") for f in fine]].sum(1), atol=1e-12)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-12)
    assert tasks.output_task(comp) == "multiclass"
    onehot = tasks.encode_targets(np.zeros(2, int), comp, [fine[4], fine[0]])  # y unused: the fine targets
    assert onehot.shape == (2, len(fine)) and onehot[0, 4] == 1 and onehot[1, 0] == 1 and onehot.sum() == 2
    with pytest.raises(ValueError, match="fine_target"):
        tasks.encode_targets(np.zeros(2, int), comp)
    with pytest.raises(ValueError, match="subdivided"):
        tasks.logits_to_probs(logits[:, :1], comp)  # a model trained before subdivide


def test_a_row_is_predicted_over_the_fine_classes_of_its_own_values():
    from lib.data.prepare import fine_mask

    fine = ["a|sex=F|age<40", "a|sex=M|age<40", "a|sex=M|age>=40", "b|sex=F|age<40", "b|sex=F|age>=40"]
    comp = {"task": "multiclass", "classes": ["a", "b"], "fine_classes": fine, "metadata": {"numeric": ["age"]},
            "subdivide": {"by": ["sex", "age"], "bands": {"age": [40]}, "mask": True}}
    table = pd.DataFrame({"meta_sex": ["F", "M", "F", "M", None], "meta_age": [20, 50, 50, 20, 20]})
    allowed = fine_mask(table, comp)
    assert allowed.tolist() == [[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 1, 0, 0, 0],
                                [1, 1, 1, 1, 1]]  # the last: sex=? was never seen in training, nothing masked
    logits = np.random.default_rng(1).normal(size=(5, 5))
    probs = tasks.logits_to_probs(logits, comp, allowed)
    soft = np.where(allowed, np.exp(logits), 0)
    np.testing.assert_allclose(probs[:, 0], soft[:, :3].sum(1) / soft.sum(1), atol=1e-12)
    assert probs[1].tolist() == [1.0, 0.0] and probs[2].tolist() == [0.0, 1.0]  # one possible fine class
    assert fine_mask(table, dict(comp, subdivide={"by": ["sex"], "mask": False})) is None
    # folds.csv rows: a row of fold k is predicted over the fine classes of the other folds' rows
    # (its own fine class, in no other fold, was given away to its OOF prediction: p = 1; probe)
    folds = table.assign(fold=[0, 0, 1, 1, -1], fine_target=["a|sex=F|age<40", "a|sex=M|age>=40", "b|sex=F|age>=40",
                                                            "a|sex=M|age<40", "b|sex=F|age<40"])
    allowed = fine_mask(folds, comp)
    assert allowed.tolist() == [[0, 0, 0, 1, 0],  # F<40 of fold 0: a|F<40 is fold 0's alone, b|F<40 the pseudo row's
                                [0, 1, 0, 1, 1],  # M>=40, in no other fold: the fine classes folds 1 and -1 have
                                [1, 0, 1, 1, 0],  # F>=40 of fold 1: b|F>=40 is fold 1's alone, so those of 0 and -1
                                [1, 0, 1, 1, 0],  # M<40 likewise
                                [1, 1, 1, 1, 1]]  # a pseudo-labelled row (fold -1) is never validated: as a test row


def test_losses_and_class_weights_follow_the_fine_outputs():
    comp = {"task": "binary", "classes": ["no", "yes"], "positive": "yes", "fine_classes": ["no|s=F", "no|s=M", "yes|s=F"]}
    z, target = torch.randn(8, 3), torch.eye(3)[torch.arange(8) % 3]
    assert isinstance(build_loss({"name": "auto"}, comp), SoftCrossEntropy)  # the competition config: softmax
    ce = float(SoftCrossEntropy()(z, target))
    assert float(build_loss({"name": "auto"}, "binary")(z, target)) == pytest.approx(ce)  # the task name: by outputs
    one = torch.randn(8, 1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(one, target[:, :1])
    assert float(build_loss({"name": "auto"}, "binary")(one, target[:, :1])) == pytest.approx(float(bce))
    with pytest.raises(ConfigError, match="subdivided"):
        build_loss({"name": "bce"}, "binary")(z, target)
    with pytest.raises(ConfigError, match="does not fit"):
        build_loss({"name": "bce"}, comp)
    focal = build_loss({"name": "focal", "params": {"gamma": 0.0}}, "binary")
    assert float(focal(z, target)) == pytest.approx(ce, rel=1e-6)  # gamma 0: the cross-entropy
    np.testing.assert_allclose(balanced_class_weight(target.numpy(), "binary"), balanced_class_weight(target.numpy(), "multiclass"))
    with pytest.raises(ConfigError, match="alpha has 2 class weights for 3 outputs"):  # per competition class
        build_loss({"name": "focal", "params": {"alpha": [0.3, 0.7]}}, "multiclass")(z, target)


# --- stage 00 and the config ----------------------------------------------------------------------

def test_stage_00_writes_fine_targets_and_fine_classes(tmp_path):
    cfg, path = _write_competition(tmp_path, task="multiclass")
    comp = load_competition(path)
    s = prepare(comp, tmp_path / "out")
    folds = pd.read_csv(tmp_path / "out/folds.csv", dtype=str, keep_default_na=False)
    raw = pd.read_csv(tmp_path / "data/train.csv", dtype={"sex": str}, keep_default_na=False)
    raw["age"] = [int(a) if a != "" else "" for a in raw["age"]]
    expected = [_expected_fine(r) for r in raw.to_dict("records")]
    assert folds.fine_target.tolist() == expected
    assert folds.fine_target[7] == "b|sex=F|age=?" and folds.fine_target[12] == "a|sex=?|age>=60"
    written = yaml.safe_load((tmp_path / "out/competition.yaml").read_text())
    assert written["fine_classes"] == sorted(set(expected)) and written["classes"] == ["a", "b", "c"]
    counts = pd.Series(expected).value_counts()
    assert s["fine_classes"] == len(counts) and s["smallest_fine_class"][1] == counts.min()
    assert any("fewer training rows than folds" in w for w in s["warnings"])  # the one-row fine classes
    assert not any("subdivide.mask" in w for w in s["warnings"])  # no mask: no class is decided by the values
    masked = prepare(dict(comp, subdivide=dict(comp["subdivide"], mask=True)), tmp_path / "out_mask")["warnings"]
    # r7 (F, age unknown) and r12 (sex unknown, 70) are the only rows of their values: with the
    # mask every test row of those values would be predicted their class, whatever it sounds like
    assert any("subdivide.mask: the training rows of 2 value combination(s) hold one class" in w
               and "sex=?|age>=60 (a, 1 rows), sex=F|age=? (b, 1 rows)" in w for w in masked), masked


@pytest.mark.parametrize("change,needle", [
    ({"subdivide": {"by": ["sexx"]}}, "by: 'sexx' is not a metadata column; did you mean 'sex'?"),
    ({"subdivide": {"by": ["sex", "age"]}}, "by: 'age' is a numeric metadata column: give its band edges in bands"),
    ({"subdivide": {"by": ["sex"], "bands": {"sex": [1]}}}, "bands.sex: 'sex' is a categorical metadata column"),
    ({"subdivide": {"by": ["sex"], "bands": {"age": [40]}}}, "bands.age: 'age' is not in by ['sex']"),
    ({"subdivide": {"by": ["age"], "bands": {"age": [60, 40]}}}, "bands.age must be finite, strictly increasing"),
    ({"subdivide": {"by": ["sex"], "band": {"age": [40]}}}, "band"),  # a typo of the key itself: the schema
    ({"task": "multilabel", "train": {"csv": "train.csv", "id_column": "id", "target_column": "label",
                                      "audio": {"template": "audio/{id}.wav"}}}, "this task is multilabel"),
])
def test_config_mistakes_are_clear_errors(tmp_path, change, needle):
    cfg, path = _write_competition(tmp_path, n=6)
    path.write_text(yaml.safe_dump({**cfg, **change}))
    with pytest.raises(ConfigError) as err:
        load_competition(path)
    assert str(path) in str(err.value) and needle in str(err.value), str(err.value)


def test_distillation_is_refused(tmp_path):
    from lib.runs.self_training import soft_targets

    comp = {"task": "binary", "classes": ["no", "yes"], "fine_classes": ["no|sex=F", "yes|sex=F"]}
    with pytest.raises(ConfigError, match="train.distill.*subdivides"):
        soft_targets(Outputs(tmp_path / "out"), comp, pd.DataFrame({"id": ["r0"], "fold": [0]}))


# --- end to end -----------------------------------------------------------------------------------

def _experiment(tmp_path, name, cfg):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_experiment(path)


def test_end_to_end_trains_fine_classes_and_writes_competition_classes(tmp_path):
    from lib.evaluation.ensemble import run_ensemble
    from lib.features.cache import build_feature_set
    from lib.inference.infer import infer_experiment, load_fold_models
    from lib.runs.experiment import train_experiment
    from lib.runs.self_training import pseudo_labelled_folder
    from lib.shipping.bundle import make_bundle, predict_bundle

    cfg, path = _write_competition(tmp_path, task="binary", subdivide=dict(SUBDIVIDE, mask=True))
    comp = load_competition(path)
    out = Outputs(tmp_path / "out")
    prepare(comp, out.root)
    comp = out.load_competition()
    n_fine = len(comp["fine_classes"])
    assert n_fine > 2
    features = {"name": "log_mel", "set": "lm", "params": {"n_mels": 16, "n_fft": 256, "hop_length": 128}}
    cnn = _experiment(tmp_path, "cnn_sub", {
        "features": features, "model": {"name": "cnn", "params": {"channels": [8, 16], "convs_per_block": 1, "head_hidden": 16}},
        "loss": {"name": "auto", "params": {"label_smoothing": 0.05}}, "augment": {"mixup": {"p": 0.5}},
        "train": {"epochs": 2, "batch_size": 16, "class_weights": "balanced", "sampler": "balanced"}})
    hgb = _experiment(tmp_path, "hgb_sub", {
        "features": features, "model": {"name": "hgb", "params": {"max_iter": 3, "min_samples_leaf": 2}},
        "train": {"class_weights": "balanced"}})
    build_feature_set(out, cnn["features"], workers=1)
    for exp in (cnn, hgb):
        with threadpool_limits(1, "openmp") if exp is hgb else contextlib.nullcontext():  # a tree per fine class
            scores = train_experiment(exp, out, log=lambda *_: None)  # and round: OpenMP on a busy CPU crawls
        assert 0 <= scores["oof"]["accuracy"] <= 1
        oof = pd.read_csv(out.oof(exp["name"]))
        assert [c for c in oof.columns if c.startswith("p_")] == ["p_no", "p_yes"] and len(oof) == 48
        np.testing.assert_allclose(oof[["p_no", "p_yes"]].sum(axis=1), 1, atol=1e-6)
        # subdivide.mask: r12 (sex unknown, 70) and r7 (F, age unknown) are the only rows of their
        # values, so their fine classes (no|sex=?|age>=60, yes|sex=F|age=?) are in no other fold: their
        # OOF rows are predicted over the other fold's fine classes, by the model (they were given
        # their own fine class, the only one of their values: p = 1, a leak of their labels)
        assert 0 < oof.p_no[12] < 1 - 1e-6 and 0 < oof.p_yes[7] < 1 - 1e-6
        models = load_fold_models(out, exp["name"], torch.device("cpu"))
        assert [m.n_outputs for _, m in models] == [n_fine, n_fine]
        assert all(ckpt["comp"]["fine_classes"] == comp["fine_classes"] for ckpt, _ in models)
        infer_experiment(exp["name"], out, device="cpu")
        preds = pd.read_csv(out.preds(exp["name"]))
        np.testing.assert_allclose(preds[["p_no", "p_yes"]].sum(axis=1), 1, atol=1e-6)
    head = torch.load(out.model_dir("cnn_sub") / "fold0.pt", weights_only=True)["state_dict"]
    assert any(v.shape[:1] == (n_fine,) for k, v in head.items() if k.startswith("head.") and k.endswith("weight"))
    (out.root / "ensemble").mkdir(exist_ok=True)  # a killed 04's temporary there (dead writer): removed by 04
    (out.root / "ensemble" / ".members.999999999.abc.tmp.csv").write_text("half")
    ens = run_ensemble(out, ["cnn_sub", "hgb_sub"])
    assert not (out.root / "ensemble" / ".members.999999999.abc.tmp.csv").exists()
    blend = pd.read_csv(out.root / "ensemble/oof_blend.csv")
    np.testing.assert_allclose(blend[["p_no", "p_yes"]].sum(axis=1), 1, atol=1e-6)
    sub = pd.read_csv(out.root / "submission.csv")
    assert set(sub["label"]) <= {"no", "yes"} and len(sub) == 6 and ens["submission"] is not None
    # a bundle predicts through the same merge (its competition.yaml has the fine classes)
    make_bundle(out, tmp_path / "bundle", log=lambda *_: None)
    assert yaml.safe_load((tmp_path / "bundle/competition.yaml").read_text())["fine_classes"] == comp["fine_classes"]
    predict_bundle(tmp_path / "bundle", tmp_path / "data", tmp_path / "work", device="cpu", engine="torch",
                   log=lambda *_: None)
    ours = pd.read_csv(out.root / "ensemble/test_blend.csv")
    theirs = pd.read_csv(tmp_path / "work/test_blend.csv")
    np.testing.assert_allclose(theirs[["p_no", "p_yes"]], ours[["p_no", "p_yes"]], atol=1e-5)
    # pseudo-labelled rows get their fine class from their label and metadata
    pl = pseudo_labelled_folder(out, tmp_path / "pl", min_confidence=0.5 + 1e-9)
    table = pd.read_csv(tmp_path / "pl/folds.csv", dtype=str, keep_default_na=False)
    pseudo = table[table.fold == "-1"]
    assert len(pseudo) == pl["pseudo"] and pseudo.fine_target.isin(comp["fine_classes"]).all()
    assert all(f.startswith(t + "|sex=") for f, t in zip(pseudo.fine_target, pseudo.target))


def test_a_code_read_back_as_a_float_names_the_same_fine_class():
    """A categorical code that test.csv reads back as a float (an empty cell in the column) names
    the fine class the training rows' integers named, so its mask and merge still apply."""
    from lib.data.prepare import fine_targets

    comp = {"subdivide": {"by": ["sex"]}, "metadata": {"numeric": [], "categorical": ["sex"]}}
    assert fine_targets(["x", "x"], pd.DataFrame({"meta_sex": [1, 0]}), comp) == ["x|sex=1", "x|sex=0"]
    assert fine_targets(["x", "x"], pd.DataFrame({"meta_sex": [1.0, np.nan]}), comp) == ["x|sex=1", "x|sex=?"]


def test_the_subdivide_section_is_part_of_what_a_model_was_trained_under():
    """Turning subdivide.mask on or off left the OOF and test files of the other setting
    current (review); competitions without subdivide keep their keys."""
    from lib.core.artifacts import model_settings

    comp = {"task": "binary", "classes": ["no", "yes"], "metric": "accuracy", "metrics": ["accuracy"]}
    assert "subdivide" not in model_settings(comp)
    plain, masked = (model_settings(dict(comp, subdivide=dict(SUBDIVIDE, mask=m))) for m in (False, True))
    assert plain["subdivide"]["by"] == ["sex", "age"] and plain != masked
    assert masked["subdivide"]["oof_mask"] == "the fine classes of the other folds"
