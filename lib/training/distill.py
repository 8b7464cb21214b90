"""Distillation of a blend into one model: train on a mix of the labels and the blend's soft targets.

Recent BirdCLEF winners distilled their ensembles into one fast student to fit the notebook's
time limit (Hinton et al. 2015, "Distilling the knowledge in a neural network"). Here the
teacher is stage 04's blend: its cross-fitted OOF probabilities (``ensemble/oof_blend.csv``)
give every training recording a soft target, and ``train.distill: {weight: w}`` trains the
student on ``(1 - w) * label + w * soft``. Validation and OOF scores use the labels only.

Caveat, stated wherever the student's scores are: a training recording's OOF probability comes
from models that were trained on the other folds, including the student's validation fold, so
the student's OOF score is slightly optimistic (the held-out test set is the honest judge).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..core.errors import ConfigError, MissingArtifact
from ..core.paths import Outputs
from ..data import tasks


def soft_targets(out: Outputs, comp: dict, ids) -> tuple[np.ndarray, str]:
    """The current blend's OOF probabilities as training targets ``(rows, n_outputs)`` (binary:
    p(positive)) in the order of ``ids``, and the blend's record id (what the student's models
    depend on). Raises ``MissingArtifact`` naming ``04_ensemble.py`` when there is no blend,
    an older one without ``ensemble/oof_blend.csv``, or one that lacks some of ``ids``."""
    record = out.ensembled.require()
    path = out.root / "ensemble" / "oof_blend.csv"
    if not path.is_file():
        raise MissingArtifact(f"{path} not found: run 04_ensemble.py (the teacher of train.distill) first")
    blend = pd.read_csv(path, dtype={"id": str}).set_index("id")
    missing = pd.Index(ids).difference(blend.index)
    if len(missing):
        raise MissingArtifact(f"{path} has no OOF probabilities for {len(missing)} recording(s), e.g. "
                              f"{list(missing[:3])}: run 04_ensemble.py on experiments trained on every fold")
    probs = blend.loc[list(ids), tasks.prob_columns(comp)].to_numpy(dtype=np.float32)
    if comp["task"] == "binary":
        probs = probs[:, [comp["classes"].index(comp["positive"])]]
    return probs, record["id"]


def mixed_targets(target: torch.Tensor, soft: np.ndarray, weight: float) -> torch.Tensor:
    """``(1 - weight) * target + weight * soft``, both ``(rows, n_outputs)``; raises
    ``ConfigError`` for a weight outside (0, 1]."""
    if not 0 < weight <= 1:
        raise ConfigError(f"train.distill.weight must be in (0, 1], got {weight}")
    return (1 - weight) * target + weight * torch.as_tensor(soft, device=target.device, dtype=target.dtype)
