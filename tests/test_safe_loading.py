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
