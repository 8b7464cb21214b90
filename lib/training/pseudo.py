"""Pseudo-labelling: the blend's confident test predictions as extra training rows of a new output folder.

:func:`pseudo_labelled_folder` copies an output folder's stage-00 result into a new one whose
``folds.csv`` also holds the test recordings the blend (``ensemble/test_blend.csv``) is
confident about, with its label and **fold -1**: every fold trains on them, no fold validates on
them, and stage 02 merges OOF predictions over the labelled rows only (fold -1 is never a
fold), so OOF scores stay comparable with the original folder's. Run 01-04 there with any
experiment. Confident: binary and multiclass, the most probable class's probability at least
``min_confidence``; multi-label, every class's probability at least ``min_confidence`` or at most
``1 - min_confidence`` (the labels: the former).

Caveat: the blend's test predictions come from models trained on every labelled row, so when
test recordings share groups (sessions, patients) with training ones, the pseudo labels carry
their labels into the folds that validate them, and the OOF scores are somewhat optimistic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import MissingArtifact
from ..core.paths import Outputs
from ..core.utils import fingerprint, write_csv
from ..data import tasks


def pseudo_labelled_folder(out: Outputs, dest: str | Path, min_confidence: float = 0.9) -> dict:
    """Write the new output folder ``dest`` (``competition.yaml``, ``folds.csv`` with the pseudo
    rows at fold -1, ``test.csv``, the stage-00 record). Returns ``{"rows", "pseudo", "per_class"}``.
    Raises ``MissingArtifact`` naming ``04_ensemble.py`` when the blend or its test probabilities
    are missing, and ``ValueError`` for ``min_confidence`` outside (0.5, 1]."""
    if not 0.5 < min_confidence <= 1:
        raise ValueError(f"min_confidence must be in (0.5, 1], got {min_confidence}")
    out.ensembled.require()
    path = out.root / "ensemble" / "test_blend.csv"
    if not path.is_file():
        raise MissingArtifact(f"{path} not found: run 04_ensemble.py on a competition with a test set first")
    comp = out.load_competition()
    folds, test = out.load_split("train"), out.load_split("test")
    blend = pd.read_csv(path, dtype={"id": str}).set_index("id").loc[test["id"]]
    probs = blend[tasks.prob_columns(comp)].to_numpy()
    if comp["task"] == "multilabel":
        keep = ((probs >= min_confidence) | (probs <= 1 - min_confidence)).all(1)
        labels = tasks.probs_to_labels(probs, comp, decision={"thresholds": [0.5] * probs.shape[1]})
    else:
        keep = probs.max(1) >= min_confidence
        labels = np.asarray(comp["classes"], dtype=object)[probs.argmax(1)]
    pseudo = test[keep].assign(target=labels[keep], fold=-1)
    if "group" not in pseudo:
        pseudo["group"] = pseudo["id"]
    table = pd.concat([folds, pseudo[[c for c in folds.columns if c in pseudo.columns]]], ignore_index=True)
    new = Outputs(Path(dest).resolve())
    record = new.prepared()
    record.begin(new.root)
    write_csv(new.folds, table)
    write_csv(new.test, test)
    new.competition.write_text(out.competition.read_text())
    record.commit([new.folds, new.competition, new.test], fingerprint(comp, table.values.tolist()))
    per_class = pd.Series(pseudo["target"]).value_counts().to_dict()
    return {"rows": len(table), "pseudo": int(keep.sum()), "test": len(test), "per_class": per_class}
