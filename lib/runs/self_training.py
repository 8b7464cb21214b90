"""Self-training: what the blend of stage 04 teaches the next run.

**Distillation of a blend into one model: train on a mix of the labels and the blend's soft targets.**

Recent BirdCLEF winners distilled their ensembles into one fast student to fit the notebook's
time limit (Hinton et al. 2015, "Distilling the knowledge in a neural network"). Here the
teacher is stage 04's blend: its cross-fitted OOF probabilities (``ensemble/oof_blend.csv``)
give every training recording a soft target, and ``train.distill: {weight: w}`` trains the
student on ``(1 - w) * label + w * soft``. Validation and OOF scores use the labels only.

Caveat, stated wherever the student's scores are: a training recording's OOF probability comes
from models that were trained on the other folds, including the student's validation fold, so
the student's OOF score is slightly optimistic (the held-out test set is the honest judge).

**Pseudo-labelling: the blend's confident test predictions as extra training rows of a new output folder.**

:func:`pseudo_labelled_folder` copies an output folder's stage-00 result into a new one whose
``folds.csv`` also holds the test recordings the blend (``ensemble/test_blend.csv``) is
confident about, with its label and **fold -1**: every fold trains on them, no fold validates on
them, and stage 02 merges OOF predictions over the labelled rows only (fold -1 is never a
fold), so OOF scores stay comparable with the original folder's. Run 01-04 there with any
experiment. Confident: binary and multiclass, the most probable class's probability at least
``min_confidence``; multi-label, every class's probability at least ``min_confidence`` or at most
``1 - min_confidence`` (the labels: the former). A subdivided competition (``subdivide``) gives
each pseudo row its fine class from its label and metadata, leaving out the rows whose fine class
no training row has (the models have no output for it); distillation is refused there (the
blend's soft targets are in the competition's classes, not the fine ones).

Caveat: the blend's test predictions come from fold models that together learnt every labelled
row, so a test recording like a validation one carries that row's label into the fold that
validates it, whether or not they share a group: the OOF scores of a pseudo-labelled folder are
optimistic (measured: +0.17 to +0.22 accuracy where nothing generalises; docs/self-training.md).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.artifacts import check_apart, check_competition, check_folds, file_hash, folds_id
from ..core.errors import ConfigError, InputError, MissingArtifact
from ..core.paths import PSEUDO_LABEL_COMMAND, Outputs
from ..core.utils import fingerprint, read_artifact_csv, read_json, write_csv
from ..data import tasks
from ..data.prepare import drop_stale_blend, fine_targets, tables_audio


def teacher_id(record: dict) -> str:
    """What a student distilled from the blend of 04's ``record`` depends on: a fingerprint of its
    ``ensemble/oof_blend.csv`` (the OOF probabilities it learns from; the blend's test part, which
    a new test set changes, is not its concern); the record's id for a blend without that file."""
    oof = record["members"].get("ensemble/oof_blend.csv")
    return fingerprint("oof_blend", oof["sha256"]) if oof else record["id"]


def same_teacher(record: dict | None, teacher: str | None) -> bool:
    """Whether a student keyed by ``teacher`` (the id it was trained with) learnt from the OOF
    probabilities of the blend ``record`` (04's, ``None`` when there is none): ``teacher`` is
    :func:`teacher_id` of it, or an earlier version's key for the same ``oof_blend.csv`` bytes, the
    id of this record or of one it names as holding the same (``info["same_oof_as"]``: 04 run
    again after an upgrade writes a new record for an unchanged blend)."""
    if not record or not teacher:
        return False
    return teacher in (teacher_id(record), record["id"], *(record.get("info") or {}).get("same_oof_as", []))


def teacher_note(out: Outputs, exp: str) -> str | None:
    """A line for 03 when experiment ``exp`` was distilled (``train.distill``) from a blend that is
    no longer 04's current one: its models are that earlier blend's student, and 02 would train it
    again on the current one. ``None`` otherwise (no distillation, or the same blend)."""
    teacher = ((out.trained(exp).read() or {}).get("inputs") or {}).get("teacher")
    rec = out.ensembled.read()
    if not teacher or same_teacher(rec, teacher):
        return None
    return (f"NOTE: {exp} was distilled from an earlier blend ({'04_ensemble.py ran since' if rec else 'no blend now'}): "
            f"these are that student's predictions; 02_train.py {exp} trains it on the current blend")


def check_members(out: Outputs, record: dict, what: str) -> None:
    """Raise ``MissingArtifact`` when the blend ``record`` (04's) used another training run of a
    member than its current one (:meth:`Outputs.changed_members`), as 05 and the leaderboard do:
    its probabilities are no longer those of the models there (probe)."""
    if changed := out.changed_members(record):
        raise MissingArtifact(f"{what} used other training runs or test predictions of {', '.join(changed)} than the "
                              f"current ones (trained or predicted again, changed or removed since 04 ran, or a new "
                              f"test set): run 03_infer.py and 04_ensemble.py again")


def soft_targets(out: Outputs, comp: dict, table: pd.DataFrame, student: str | None = None) -> tuple[np.ndarray, str]:
    """The current blend's OOF probabilities as training targets ``(rows, n_outputs)`` (binary:
    p(positive)) for the rows of ``table`` (``folds.csv``'s: ``id``, ``fold``), in its order; a
    pseudo-labelled row (fold -1, :func:`pseudo_labelled_folder`), which no OOF blend holds, gets
    NaN: it keeps its (pseudo) label (:func:`mixed_targets`). Also the teacher's id, what the
    student's models depend on: a fingerprint of ``oof_blend.csv``'s bytes (the blend's test part,
    which a new test set changes, is not the student's concern). Raises ``MissingArtifact`` naming ``04_ensemble.py`` when there
    is no blend, an older one without ``ensemble/oof_blend.csv``, one made on other folds than the
    current ``folds.csv`` or for other classes, or one that lacks some of the labelled rows;
    ``ConfigError`` for a subdivided competition (``subdivide``: the blend's probabilities are in
    the competition's classes, the student's outputs in the fine ones, and a soft target cannot be
    split between them) and for a blend that has the ``student`` experiment itself among its
    members (04 run on every experiment after the student trained: it would learn from its own
    OOF, and each 02 -> 04 round would train it again)."""
    if comp.get("fine_classes"):
        raise ConfigError(f"train.distill: the competition ({out.competition}) subdivides its classes (subdivide: "
                          f"{len(comp['fine_classes'])} fine classes), but the blend's soft targets are in its "
                          f"{len(comp['classes'])} classes; distillation does not apply: train without "
                          f"train.distill, or without subdivide")
    record = out.ensembled.require()
    members = [e["experiment"] for e in read_json(out.root / "ensemble.json")["experiments"]]
    if student in members:
        raise ConfigError(f"train.distill: the blend (ensemble.json) has {student!r} itself among its members "
                          f"{members}: the student would learn from its own OOF predictions. Blend the teacher's "
                          f"experiments alone first (04_ensemble.py {' '.join(m for m in members if m != student)})")
    check_folds(record, folds_id(out.load_split("train")), "the blend (the teacher of train.distill)",
                "04_ensemble.py again")  # OOF probabilities of other folds would leak the labels
    check_members(out, record, "the blend (the teacher of train.distill)")
    path = out.root / "ensemble" / "oof_blend.csv"
    if not path.is_file():
        raise MissingArtifact(f"{path} not found: run 04_ensemble.py (the teacher of train.distill) first")
    blend = read_artifact_csv(path).set_index("id")
    cols = tasks.prob_columns(comp)
    have = [c for c in blend.columns if c.startswith("p_")]
    if sorted(have) != sorted(cols):
        raise MissingArtifact(f"{path} has the columns {have}, not {cols}: the blend was made for other classes than those of "
                              f"{out.competition} (00_prepare.py ran since): train the teacher's experiments and "
                              f"run 04_ensemble.py again")
    labelled = table["fold"].to_numpy() >= 0
    missing = pd.Index(table["id"][labelled]).difference(blend.index)
    if len(missing):
        raise MissingArtifact(f"{path} has no OOF probabilities for {len(missing)} recording(s), e.g. "
                              f"{list(missing[:3])}: run 04_ensemble.py on experiments trained on every fold")
    probs = np.full((len(table), len(cols)), np.nan, np.float32)
    probs[labelled] = blend.loc[list(table["id"][labelled]), cols].to_numpy(dtype=np.float32)
    if comp["task"] == "binary":
        probs = probs[:, [comp["classes"].index(comp["positive"])]]
    return probs, teacher_id(record)


def mixed_targets(target: torch.Tensor, soft: np.ndarray, weight: float) -> torch.Tensor:
    """``(1 - weight) * target + weight * soft``, both ``(rows, n_outputs)``; a row whose ``soft``
    is NaN (a pseudo-labelled row, :func:`soft_targets`) keeps ``target``. Raises
    ``ConfigError`` for a weight outside (0, 1]."""
    if not 0 < weight <= 1:
        raise ConfigError(f"train.distill.weight must be in (0, 1], got {weight}")
    soft = torch.as_tensor(soft, device=target.device, dtype=target.dtype)
    return (1 - weight) * target + weight * torch.where(torch.isnan(soft), target, soft)


def pseudo_labelled_folder(out: Outputs, dest: str | Path, min_confidence: float = 0.9,
                           source: str | Path | None = None, force: bool = False) -> dict:
    """Write the new output folder ``dest`` (``competition.yaml``, ``folds.csv`` with the pseudo
    rows at fold -1, ``test.csv``, the stage-00 record). ``source``: where the recordings and the
    blend's probabilities come from: ``None``, ``out``'s test set (``ensemble/test_blend.csv``);
    or the work folder of :func:`lib.shipping.bundle.predict_bundle` run on unlabelled audio
    (its ``test.csv`` and ``test_blend.csv``). ``out`` may be a pseudo-labelled folder itself (a
    further round): its fold -1 rows of the recordings labelled now are replaced, the others kept.
    An existing output folder ``dest`` (one with a stage-00 record) is replaced only with ``force``;
    its blend, made from the folds it had, is removed then (as stage 00 removes it).
    Returns ``{"rows", "pseudo", "test", "per_class", "replaced", "kept", "silenced", "most_confident",
    "removed_blend"}`` (replaced/kept: earlier pseudo rows dropped/kept; most_confident: the surest;
    silenced: rows predicted from silence, left out; removed_blend: ``dest``'s blend files removed).
    Raises ``MissingArtifact`` naming the step to run when the blend or its probabilities are
    missing; ``ConfigError`` for ``min_confidence`` outside (0.5, 1], a ``dest`` that is, holds
    or lies inside ``out`` or ``source`` (:func:`lib.core.artifacts.check_apart`), a ``source``
    that is not a work folder; ``InputError`` for recordings that are training recordings too
    (the same id, or the same audio file under another id)."""
    if not 0.5 < min_confidence <= 1:
        raise ConfigError(f"--min-confidence {min_confidence}: must be in (0.5, 1], e.g. 0.9")
    check_apart(dest, out.root, "--to", "the output folder (--output-dir)")
    comp, folds = out.load_competition(), out.load_split("train")
    if source is None:
        record = out.ensembled.require()
        check_folds(record, folds_id(folds), "the blend (the teacher of pseudo_label.py)", "04_ensemble.py again")
        check_competition(record, comp, "the blend (the teacher of pseudo_label.py)", "04_ensemble.py again")
        check_members(out, record, "the blend (the teacher of pseudo_label.py)")
        path, test, where = out.root / "ensemble" / "test_blend.csv", out.load_split("test"), out.root
        decision = (read_json(out.root / "ensemble.json").get("decision") or {}).get("decision")  # the submission's
    else:
        src = Outputs(Path(source).resolve())
        check_apart(dest, src.root, "--to", "the --source folder")
        if not src.prepared().path.is_file():
            raise ConfigError(f"--source {src.root} is not a predict_bundle.py work folder (no {src.prepared().path.name}): "
                              f"run predict_bundle.py BUNDLE --test-files ... --work-dir {src.root} first")
        path, test, where, decision = (src.root / "test_blend.csv", src.load_split("test"), src.root,
                                       read_json(src.root / "decision.json"))  # the bundle's (older folders: none)
    silenced = test["path"].astype(str).str.startswith(str(where / "silence") + os.sep)
    test = test[~silenced]  # predicted from silence (audio.bad_test_files): no label to learn from
    if not path.is_file():
        raise MissingArtifact(f"{path} not found: run 04_ensemble.py (test set) or predict_bundle.py (other audio) first")
    new = Outputs(Path(dest).resolve())
    if new.prepared().path.is_file() and not force:
        raise ConfigError(f"--to {new.root} is an existing output folder: its folds.csv and competition.yaml would be "
                          f"replaced (and its blend removed); give a new folder, or --force")
    _refuse_training_recordings(test, folds[folds["fold"] >= 0])  # earlier rounds' rows (fold -1) may be relabelled
    blend = read_artifact_csv(path).set_index("id").loc[test["id"]]
    have, cols = [c for c in blend.columns if c.startswith("p_")], tasks.prob_columns(comp)
    if sorted(have) != sorted(cols):
        raise MissingArtifact(f"{path} has the columns {have}, not {cols}: the blend was made for other classes than "
                              f"those of {out.competition}: predict with a blend of this competition's classes")
    keep, sure, labels = _sure_labels(blend[cols].to_numpy(), comp, min_confidence, decision)
    pseudo = test[keep].assign(target=labels[keep], fold=-1)
    dropped = 0
    if comp.get("fine_classes"):  # subdivided: the pseudo label's fine class from the row's metadata
        pseudo, dropped = _with_fine_targets(pseudo, comp)
    if "group" not in pseudo:
        pseudo["group"] = pseudo["id"]
    again = (folds["fold"] < 0) & (folds["id"].isin(pseudo["id"]) | folds["path"].isin(pseudo["path"]))
    folds = folds[~again]  # a further round: a recording labelled again gets its new label (not two), the others stay
    table = pd.concat([folds, pseudo[[c for c in folds.columns if c in pseudo.columns]]], ignore_index=True)
    new.root.mkdir(parents=True, exist_ok=True)  # first: a killed run's folder says how it is made again
    (new.root / PSEUDO_LABEL_COMMAND).write_text(
        f"pseudo_label.py --output-dir {out.root} --to {new.root} --min-confidence {min_confidence} --force"
        + (f" --source {Path(source).resolve()}" if source else "") + "\n")
    record = new.prepared()
    record.begin(new.root)
    write_csv(new.folds, table)
    new.competition.write_text(out.competition.read_text())
    members = [new.folds, new.competition]
    if out.has_test():  # the competition's own test set, to predict as usual
        write_csv(new.test, out.load_split("test"))
        members.append(new.test)
    record.commit(members, fingerprint(comp, table.values.tolist()), info={"audio": tables_audio(new, out.has_test())})
    per_class = pd.Series(pseudo["target"]).value_counts().to_dict()
    return {"rows": len(table), "pseudo": len(pseudo), "test": len(test), "per_class": per_class,
            "replaced": int(again.sum()), "kept": int((folds["fold"] < 0).sum()), "silenced": int(silenced.sum()),
            "most_confident": float(sure.max()) if len(sure) else None,
            "removed_blend": drop_stale_blend(new, test_changed=False, stage="pseudo_label.py"),
            **({"unknown_fine_class": dropped} if comp.get("fine_classes") else {})}


def _sure_labels(probs: np.ndarray, comp: dict, min_confidence: float,
                 decision: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which rows of ``probs`` ``(rows, n_classes)`` the blend is sure of, how sure, and the label
    it gives: ``(keep (rows,) bool, sure (rows,), labels (rows,) object)``; single-label the
    largest probability (at least ``min_confidence``) and its class, multi-label every class at
    least that sure either way (``sure``: the least sure class's ``max(p, 1 - p)``) and the
    classes at p >= 0.5. A row whose label under the submission's ``decision`` (a threshold or
    class bias of 04, :func:`lib.data.tasks.decide`) is another is not kept: not sure."""
    if comp["task"] == "multilabel":
        keep = ((probs >= min_confidence) | (probs <= 1 - min_confidence)).all(1)
        sure, labels = (np.maximum(probs, 1 - probs).min(1),
                        tasks.probs_to_labels(probs, comp, decision={"thresholds": [0.5] * probs.shape[1]}))
    else:
        keep, sure, labels = probs.max(1) >= min_confidence, probs.max(1), np.asarray(comp["classes"], dtype=object)[
            probs.argmax(1)]
    return keep & (tasks.probs_to_labels(probs, comp, decision=decision) == labels), sure, labels


def _refuse_training_recordings(test: pd.DataFrame, folds: pd.DataFrame) -> None:
    """Raise ``InputError`` when recordings to pseudo-label are training recordings: the same id,
    or the same audio under another id and path (files of equal size compared by their bytes'
    SHA-256; ``predict_bundle.py --test-files`` names rows by file name, which need not be the
    competition's id, and a copy of the training folder has other paths); they would come back
    as fold -1 rows of audio the folds already hold, with the model's labels."""
    same_id = sorted(set(test["id"]) & set(folds["id"]))
    size = {p: os.path.getsize(p) for p in (*folds["path"], *test["path"])}
    train_sizes = {size[p] for p in folds["path"]}
    candidates = [(i, p) for i, p in zip(test["id"], test["path"]) if size[p] in train_sizes]
    sizes = {size[p] for _, p in candidates}  # only files that may be equal are read
    train_hashes = {file_hash(p): i for p, i in zip(folds["path"], folds["id"]) if size[p] in sizes}
    same_audio = [(i, train_hashes[h]) for i, p in candidates if (h := file_hash(p)) in train_hashes]
    problems = [f"{len(same_id)} recording(s) to pseudo-label have training ids, e.g. {same_id[:3]}"] if same_id else []
    if same_audio:
        problems.append(f"{len(same_audio)} recording(s) to pseudo-label are training audio (the same bytes), e.g. "
                        + ", ".join(f"{a!r} is training row {b!r}" for a, b in same_audio[:3]))
    if problems:
        raise InputError(problems)


def _with_fine_targets(pseudo: pd.DataFrame, comp: dict) -> tuple[pd.DataFrame, int]:
    """The pseudo-labelled rows of a subdivided competition with their ``fine_target``
    (:func:`lib.data.prepare.fine_targets` of their pseudo label and metadata), less the rows whose
    fine class the training rows never had (the models have no output for it). Returns
    ``(rows, number left out)``."""
    fine = pd.Series(fine_targets(pseudo["target"], pseudo, comp), index=pseudo.index)
    known = fine.isin(comp["fine_classes"])
    return pseudo[known].assign(fine_target=fine[known]), int((~known).sum())
