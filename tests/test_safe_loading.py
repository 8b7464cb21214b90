"""Checkpoints load as tensors and plain values only (lib.core.utils.load_tensors_only): a
pretrained file or fold checkpoint whose pickle would run code is refused with one line naming
the file, and the code never runs; numpy arrays, as PANNs' released files hold, still load."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, make_toy_competition

from lib.core.errors import MissingArtifact
from lib.inference.infer import load_checkpoints


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pretrained_panns_file_with_a_payload_is_refused_in_a_user_run(tmp_path):
    """02_train.py with zoo/cnn14.yaml pointed at a PANNs-format file whose pickle holds a payload:
    one line naming the file and the refused global; the payload never runs."""
    marker, evil = tmp_path / "ran", tmp_path / "Cnn14_16k_mAP=0.438.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "sampler": Payload(marker)}, evil)
    make_toy_competition(tmp_path / "data")
    out = tmp_path / "out"
    sets = ["--set", "features.params.sample_rate=16000", "--set", "features.set=waveform16k",
            "--set", f"model.params.pretrained={evil}"]
    for args in (["00_prepare.py", tmp_path / "data/toy.yaml"], ["01_features.py", "configs/zoo/cnn14.yaml", *sets]):
        r = subprocess.run([sys.executable, *map(str, args), "--output-dir", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "02_train.py", "configs/zoo/cnn14.yaml", *sets, "--output-dir", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and not marker.exists(), r.stdout + r.stderr
    assert "Traceback" not in r.stderr and str(evil) in r.stderr and "posix.system" in r.stderr, r.stderr


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
