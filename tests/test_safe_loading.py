"""Checkpoints load as tensors and plain values only (lib.core.utils.load_tensors_only): a
pretrained file or fold checkpoint whose pickle would run code is refused with one line naming
the file, and the code never runs; numpy arrays, as PANNs' released files hold, still load.
The same through the stages, as a user runs them: tests/test_safety.py."""
from __future__ import annotations

import os
import numpy as np
import pytest
import torch

from lib.core.errors import MissingArtifact
from lib.inference.infer import load_checkpoints


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_numpy_arrays_load_and_a_crafted_fold_checkpoint_is_refused(tmp_path):
    ok = tmp_path / "ok.pth"
    torch.save({"model": {"w": torch.ones(2)}, "iteration": 3, "stats": np.arange(3.0), "x": np.float32(1)}, ok)
    from lib.core.utils import load_tensors_only

    loaded = load_tensors_only(ok)
    assert loaded["iteration"] == 3 and np.array_equal(loaded["stats"], np.arange(3.0))
    marker = tmp_path / "ran"
    torch.save({"state_dict": {}, "model": Payload(marker)}, tmp_path / "fold0.pt")
    with pytest.raises(MissingArtifact, match=r"fold0.pt: refused: it pickles the global posix.system"):
        load_checkpoints(tmp_path, [0], torch.device("cpu"))
    assert not marker.exists()
    (tmp_path / "fold1.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MissingArtifact, match="fold1.pt: not a readable PyTorch checkpoint"):
        load_checkpoints(tmp_path, [1], torch.device("cpu"))


def _exec_blob(marker) -> bytes:
    """skops bytes whose loading would call ``builtins.exec`` on code that creates ``marker``
    (a ZoneInfo node of a real skops file, renamed: skops builds it by calling the named type)."""
    import io
    import json
    import zipfile
    from zoneinfo import ZoneInfo

    import skops.io

    original = zipfile.ZipFile(io.BytesIO(skops.io.dumps({"a": ZoneInfo("UTC")})))
    schema = json.loads(original.read("schema.json"))
    node = schema["content"]["a"]
    node["__class__"], node["__module__"] = "exec", "builtins"
    node["content"]["content"][0]["content"] = json.dumps(f"open({str(marker)!r}, 'w').write('ran')")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in original.namelist():
            z.writestr(name, json.dumps(schema) if name == "schema.json" else original.read(name))
    return out.getvalue()


def test_a_scikit_learn_member_whose_skops_bytes_call_a_builtin_is_refused(tmp_path):
    import skops.io

    from lib.models.classical import HistGradientBoosting, LogisticRegression

    marker = tmp_path / "ran"
    assert skops.io.get_untrusted_types(data=_exec_blob(marker)) == ["builtins.exec"]  # the payload is real
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)).astype(np.float32), (rng.random((60, 1)) > 0.5).astype(float)
    for cls in (HistGradientBoosting, LogisticRegression):
        member = cls(1, 0, 1)
        member.fit(X, y, np.arange(60), "binary", 0, log=lambda *_: None)
        state = member.state_dict()
        fresh = cls(1, 0, 1)
        fresh.load_state_dict(state)  # our own members load
        assert np.array_equal(fresh.logits(X), member.logits(X))
        state["_extra_state"] = dict(state["_extra_state"], estimator=_exec_blob(marker))
        with pytest.raises(ValueError, match=r"refusing to load a scikit-learn member holding types \['builtins.exec'\]"):
            cls(1, 0, 1).load_state_dict(state)
        assert not marker.exists()


def test_a_multilabel_member_with_a_class_constant_in_its_training_rows_reloads(monkeypatch):
    """A class without a positive (or without a negative) training row is a constant predictor in
    scikit-learn's one-vs-rest wrapper: the fold saved by 02 must load in 03 (found by a new-user
    probe: a valve class of one patient made every multi-label boosting run end without a submission)."""
    from lib.models.classical import HistGradientBoosting, LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4)).astype(np.float32)
    y = np.stack([X[:, 0] > 0, np.zeros(60, bool), np.ones(60, bool)], axis=1).astype(float)
    for cls in (HistGradientBoosting, LogisticRegression):
        member = cls(1, 0, 3)
        member.fit(X, y, np.arange(60), "multilabel", 0, log=lambda *_: None)
        fresh = cls(1, 0, 3)
        fresh.load_state_dict(member.state_dict())
        logits = fresh.logits(X)
        assert np.array_equal(logits, member.logits(X))
        assert (logits[:, 1] < 0).all() and (logits[:, 2] > 0).all()  # never / always: the constants kept
    # a type loading would refuse stops the save (stage 02's first fold), not stage 03 after every fold
    monkeypatch.setattr("lib.models.classical.TRUSTED_TYPES", frozenset())
    with pytest.raises(RuntimeError, match=r"holds types \['sklearn.multiclass._ConstantPredictor'\] that loading refuses"):
        member.state_dict()
