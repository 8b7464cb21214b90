"""Results made of several files, and when they are complete: one mechanism for every stage.

A stage's result is several files (stage 00's tables; a feature set's arrays; an experiment's
fold models, OOF file and scores; test predictions; the submission). Each result has a
*record*, a small JSON file beside it that lists every member file with its size and SHA-256,
the *key* of what the result was made from (a fingerprint of the inputs and settings), the ids
of the upstream records it read, and free-form ``info``. The protocol, the same in every stage:

1. :meth:`Record.begin`: the record is removed FIRST (so an interrupted rebuild leaves nothing
   marked complete) and temporary files left by killed writers are removed;
2. the member files are written, each atomically (:func:`lib.core.utils.atomic_path`);
3. :meth:`Record.commit`: the record is written LAST, atomically, with the members' hashes.

A result is *up to date* when its record exists, its key equals the key computed now, and every
member still has the recorded size and hash (:meth:`Record.check`). Its *id* is a hash of its
key and members' hashes: a feature set rebuilt identically keeps its id and leaves the models
trained on it up to date (a training run always gets a new id: its records hold times). A consumer never reads members without the record
(:meth:`Record.require`), and checks that the upstream ids it was made from are the current
ones (:func:`check_inputs`): predictions made by an older training run are refused, naming the
stage to run again. Every result made from stage 00's folds (training, test predictions, the
blend, a bundle) records the fold assignment it was made on under :data:`FOLDS`
(:func:`folds_id`), and its consumers refuse it once ``00_prepare.py`` has assigned other folds
(:func:`check_folds`). Hashing runs at about 1.7 GB/s on one core of the 2-core Xeon (the 1.4 GB
seed9 training cache: under 1 s).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, MissingArtifact
from .utils import fingerprint, json_default, write_json

FOLDS = "folds.csv"
"""The name under which a record's ``inputs`` hold the :func:`folds_id` it was made on."""
_NOT_BUILT = "not built yet, or its last build did not finish"
_TEMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp(\.\w+)?$")  # atomic_path's names: .<stem>.<pid>.<random>.tmp<suffix>


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes (read in chunks; about 1.7 GB/s here)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def audio_fingerprint(table, workers: int | None = None) -> str:
    """Fingerprint of a split's recordings: their ids and the SHA-256 of every audio file's bytes
    (threads; about 0.2-0.5 s for the 5000 breathing files, 160 MB, on 2 cores), so a file
    replaced by another, even of the same size and modification time, is noticed. Not their paths:
    the same files in a moved data folder are the same cache (and its models stay current).
    Raises ``MissingArtifact`` naming stage 00 when files that 00 listed are gone (a data folder
    moved or renamed since)."""
    from concurrent.futures import ThreadPoolExecutor

    from .device import n_cpus  # (torch: not for every reader of records)

    files = list(dict.fromkeys(table["path"]))  # a recording's segment rows share its file: hashed once
    gone = [p for p in files if not Path(p).is_file()]
    if gone:
        raise MissingArtifact(f"{len(gone)} audio file(s) that 00_prepare.py listed are not there, e.g. {gone[0]} (the "
                              f"data folder moved or changed since?): run 00_prepare.py again (--data-dir NEW_FOLDER)")
    with ThreadPoolExecutor(workers or n_cpus()) as pool:
        by_file = dict(zip(files, pool.map(file_hash, files)))
    return fingerprint(list(table["id"]), [by_file[p] for p in table["path"]])


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Remove the temporary files of :func:`lib.core.utils.atomic_path` in ``folder`` whose
    writing process no longer exists (killed before it could clean up). Returns how many."""
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        m = _TEMP.match(p.name)
        if m and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


@dataclass(frozen=True)
class Record:
    """The record of one result: ``path`` (the JSON file), ``root`` (member paths are stored
    relative to it: the output folder), ``what`` (for messages, e.g. ``"feature set log_mel64"``)
    and ``stage`` (the command that makes it, e.g. ``"01_features.py configs/cnn_small.yaml"``)."""

    path: Path
    root: Path
    what: str
    stage: str

    def read(self) -> dict | None:
        """The record as written, or ``None`` when there is none (or it is unreadable)."""
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def check(self, key: str | None = None, hashes: bool | frozenset[str] = True) -> tuple[dict | None, str]:
        """``(record, "")`` when the result is complete (and made with ``key``, when given),
        else ``(None, reason)``. ``hashes=False`` checks sizes only (for a quick look); a set of
        member paths (relative to the record's root) hashes those alone (the files a reader reads)."""
        rec = self.read()
        if rec is None:
            removed = self.path.with_suffix(".removed")  # why a stage removed it (:meth:`retire`)
            return None, removed.read_text().strip() if removed.is_file() else _NOT_BUILT
        if key is not None and rec.get("key") != key:
            return None, "built from other inputs or settings"
        for rel, m in rec["members"].items():
            p = self.root / rel
            if not p.is_file():
                here = self.path.parent / p.name  # (a renamed folder: its record names the old one)
                moved = here.is_file() and p.parent != self.path.parent and p.parent.parent == self.path.parent.parent
                return None, f"{rel} is missing" + (
                    f" ({self.path.parent.relative_to(self.root)} holds the files of {p.parent.name!r}: the folder was "
                    f"renamed; give it its name back)" if moved else "")
            if p.stat().st_size != m["size"]:
                return None, f"{rel} has changed size (truncated or rewritten)"
            if (hashes is True or (hashes and rel in hashes)) and file_hash(p) != m["sha256"]:
                return None, f"{rel} has changed since it was written"
        return rec, ""

    def require(self, key: str | None = None) -> dict:
        """The verified record; raises ``MissingArtifact`` saying why and which stage to run."""
        rec, why = self.check(key)
        if rec is None:
            when = "first" if why == _NOT_BUILT else "again"
            raise MissingArtifact(f"{self.what}: {why} ({self.path}): run {self.stage} {when}")
        return rec

    def begin(self, *folders: str | os.PathLike) -> None:
        """Start (re)building: remove the record, then stale temporaries in ``folders`` and in
        the record's own folder (and a note of why it was removed, :meth:`retire`)."""
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".removed").unlink(missing_ok=True)
        for folder in {self.path.parent, *map(Path, folders)}:
            remove_stale_temporaries(folder)

    def commit(self, members, key: str, inputs: dict | None = None, info: dict | None = None) -> dict:
        """Hash ``members`` (paths), write the record last and return it.

        ``inputs``: ``{name: upstream record id}`` this result was made from; ``info``: anything
        JSON-serialisable the consumers or a person may want (shapes, scores, partial folds).
        """
        files = {}
        for p in members:
            p = Path(p)
            files[str(p.resolve().relative_to(self.root.resolve()))] = {"size": p.stat().st_size, "sha256": file_hash(p)}
        rec = {"what": self.what, "key": key, "id": fingerprint(key, files), "members": files,
               "inputs": inputs or {}, "info": info or {},
               "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        write_json(self.path, rec)
        self.path.with_suffix(".removed").unlink(missing_ok=True)
        return rec

    def retire(self, why: str) -> None:
        """Remove the record (first: the result is then no longer current) and say ``why`` in a
        note beside it (``<record>.removed``) that :meth:`check` and :meth:`require` give as the
        reason until the result is committed again."""
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".removed").write_text(why + "\n")


def split_id(rec: dict, split: str) -> str:
    """The id of one split of a feature set's cache, from the cache's record ``rec``: what a result
    made from that split remembers. The train split's is its own (``info["train_id"]``: its
    settings, recordings and files), kept when 01 rebuilds the test split alone, so that models
    trained on it stay current when only the test set changed; another split's, and the train
    split's in a record of an older version, is the record's id (any change of the cache)."""
    return (split == "train" and (rec.get("info") or {}).get("train_id")) or rec["id"]


def check_inputs(rec: dict, current: dict[str, str], what: str, stage: str) -> None:
    """Check that a record was made from the ``current`` upstream ids (``{name: id}``).

    Raises ``MissingArtifact`` naming the stale result, the upstream that changed and ``stage``
    (the command that rebuilds it) when one differs.
    """
    for name, rid in current.items():
        if rec.get("inputs", {}).get(name) != rid:
            raise MissingArtifact(f"{what} was made from an older {name} result than the current one "
                                  f"(stale): run {stage}")


def folds_id(table) -> str:
    """The fingerprint of stage 00's fold assignment: ``folds.csv`` as a DataFrame
    (:meth:`lib.core.paths.Outputs.load_split`) without its ``path`` column, i.e. every id, target,
    group, fold, audio property and metadata cell, as the training key holds it
    (:func:`lib.runs.experiment.experiment_key`); moving the data folder keeps it. 16 hex digits."""
    return fingerprint(table.drop(columns=["path"], errors="ignore").values.tolist())


TEST = "test.csv"
"""The key under which stage 04's record holds :meth:`lib.core.paths.Outputs.test_id`, the test set
its submission was made for (what 00 compares: another test set removes the blend)."""

COMPETITION = "competition.yaml"
"""The key under which a record's ``inputs`` hold :func:`competition_id` (stage 04's: what 05 checks)."""


def competition_id(comp: dict) -> str:
    """The fingerprint of a loaded competition config (``competition.yaml``: decision, ensemble,
    metrics, submission ...) without ``data_dir``, so moving the data folder keeps it, nor
    ``groups.test`` when false (a key added later: blends of before stay current). 16 hex digits."""
    what = {k: v for k, v in comp.items() if k != "data_dir"}
    if isinstance(what.get("groups"), dict) and not what["groups"].get("test"):
        what["groups"] = {k: v for k, v in what["groups"].items() if k != "test"}
    return fingerprint(what)


def competition_problem(rec: dict, comp: dict) -> str | None:
    """Why a record (stage 04's) is not of the current competition config ``comp`` (its
    :func:`competition_id`, held in the record's ``inputs`` under :data:`COMPETITION`), or ``None``."""
    have = rec.get("inputs", {}).get(COMPETITION)
    if have is None:
        return "was written by an older version"
    if have != competition_id(comp):
        return ("was made under another competition.yaml than the current one (00_prepare.py was run again "
                "since, e.g. with another decision or ensemble section)")
    return None


def blend_problem(rec: dict, table, comp: dict) -> str | None:
    """Why stage 04's record ``rec`` is not of the current fold assignment ``table`` (``folds.csv``
    as a DataFrame: :func:`folds_id`) and competition config ``comp`` (:func:`competition_problem`),
    or ``None``: what stage 00 (which removes such a blend) and the leaderboard (which marks it) ask."""
    if rec.get("inputs", {}).get(FOLDS) != folds_id(table):
        return "was made on other folds or labels than the current folds.csv's (00_prepare.py ran since)"
    return competition_problem(rec, comp)


def check_competition(rec: dict, comp: dict, what: str, stage: str) -> None:
    """Raise ``MissingArtifact`` naming the result ``what`` and the ``stage`` to run when record
    ``rec`` is not of the current competition config (:func:`competition_problem`)."""
    why = competition_problem(rec, comp)
    if why:
        raise MissingArtifact(f"{what} {why}: run {stage}")


AUDIO = "audio"
"""The key under which a training record's ``inputs`` hold :func:`audio_id`, what 03, 04, 05 and the
leaderboard compare with the current ``competition.yaml`` (stage 00 run again with another
``audio`` section leaves models of the old windows)."""


def audio_settings(comp: dict) -> list:
    """What of competition ``comp`` a feature cache, and a model trained on it, depends on besides
    its recordings: the ``audio`` section (all but ``aggregate``, which acts on predictions, and
    ``bad_test_files``, which acts on which test files stage 00 lists), the native rate and, for
    a competition of precomputed matrices, its ``matrix`` section (bins, axes, frame rate, format:
    how its files are read)."""
    return [{k: v for k, v in (comp.get("audio") or {}).items() if k not in ("aggregate", "bad_test_files")},
            comp.get("native_sample_rate"), *([comp["matrix"]] if comp.get("matrix") else [])]


def audio_id(comp: dict) -> str:
    """The fingerprint of :func:`audio_settings`. 16 hex digits."""
    return fingerprint(audio_settings(comp))


SETTINGS = "competition settings"
"""The key under which a training record's ``inputs`` hold :func:`model_settings`, the values (not a
hash, so that a refusal can say what changed)."""
MODEL_KEYS = ("task", "classes", "positive", "metric", "metrics", "metadata")


def model_settings(comp: dict) -> dict:
    """What of competition ``comp`` a trained model depends on besides its folds, feature set and
    :func:`audio_settings` (all in stage 02's key, :func:`lib.runs.experiment.experiment_key`):
    :data:`MODEL_KEYS` (the classes in their order: the model's outputs; the metric that chose its
    epochs) and ``aggregate`` (``audio.aggregate``, how its windows make a recording's prediction;
    a binary task's ``max`` is named ``"max of the positive class"``, its meaning since 4e2b2bc, so
    that models and OOF files of the renormalised maximum before it are trained again) and, with
    ``subdivide``, that section (marked with the OOF mask rule of 29fef9e's successor, so that
    OOF files made when a row's own fine class was given away are made again)."""
    aggregate = (comp.get("audio") or {}).get("aggregate")
    if aggregate == "max" and comp.get("task") == "binary":
        aggregate = "max of the positive class"
    settings = {**{k: comp.get(k) for k in MODEL_KEYS}, "aggregate": aggregate}
    if comp.get("subdivide"):  # the fine classes are the outputs; the mask decides the OOF rows
        settings["subdivide"] = dict(comp["subdivide"], **(
            {"oof_mask": "the fine classes of the other folds"} if comp["subdivide"].get("mask") else {}))
    return settings


def trained_problem(rec: dict, comp: dict) -> str | None:
    """Why training record ``rec`` no longer fits the current ``competition.yaml`` (``comp``), in
    words that follow "was" or stand alone ("trained under other settings ..."): it was made
    under other audio settings (:func:`audio_id` under :data:`AUDIO`) or other
    :func:`model_settings` (under :data:`SETTINGS`; e.g. ``classes`` reordered or another
    ``positive``, which would label every prediction with the wrong class), or ``None``. Records of
    older versions, without these inputs (or a key added since), pass."""
    inputs = rec.get("inputs", {})
    if _audio_changed(rec, comp):
        return ("trained with other audio settings than competition.yaml's now (00_prepare.py was run again "
                "since, e.g. with another audio.clip_seconds)")
    have = inputs.get(SETTINGS) or {}
    now = json.loads(json.dumps(model_settings(comp), default=json_default))  # as the record holds them
    changed = [f"{k} {have[k]!r} -> {now[k]!r}" for k in now if k in have and have[k] != now[k]]  # (keys added
    if changed:  # by a later version are not in older records)
        return (f"trained under other settings than competition.yaml's now ({'; '.join(changed)}; "
                f"00_prepare.py was run again since)")
    return None


def _audio_changed(rec: dict, comp: dict) -> bool:
    """Whether training record ``rec`` was made under other audio settings than ``comp``'s
    (records of older versions, without them, pass)."""
    return rec.get("inputs", {}).get(AUDIO) not in (None, audio_id(comp))


def retrain_stages(rec: dict, comp: dict) -> list[str]:
    """The stages that bring a training record that :func:`trained_problem` finds stale up to
    date: the feature cache only when the audio settings changed (not for another ``metric``)."""
    return ["01_features.py", "02_train.py"] if _audio_changed(rec, comp) else ["02_train.py"]


def check_trained(rec: dict, comp: dict, what: str, stage: str) -> None:
    """Raise ``MissingArtifact`` naming the result ``what`` and the stages to run when training
    record ``rec`` no longer fits ``comp`` (:func:`trained_problem`): ``stage`` with ``{stages}``
    replaced by :func:`retrain_stages` (01 only when the audio settings changed)."""
    why = trained_problem(rec, comp)
    if why:
        raise MissingArtifact(f"{what} was {why}: run {stage.replace('{stages}', ', '.join(retrain_stages(rec, comp)))}")


def check_folds(rec: dict, current: str, what: str, stage: str) -> None:
    """Check that a record was made on the ``current`` fold assignment (:func:`folds_id`, held in
    its ``inputs`` under :data:`FOLDS`). Raises ``MissingArtifact`` naming the stale result and
    ``stage`` (the command that rebuilds it) when it was made on other folds, or by a version that
    did not record them."""
    if rec.get("inputs", {}).get(FOLDS) != current:
        raise MissingArtifact(f"{what} was made on other folds or labels than the current folds.csv's (stale: "
                              f"00_prepare.py or pseudo_label.py rewrote it since, or an older version made it): "
                              f"run {stage}")


def check_apart(writes: str | os.PathLike, reads: str | os.PathLike, writes_what: str, reads_what: str) -> None:
    """Refuse a folder a command writes into that is, contains or lies inside a folder it must
    only read (paths compared resolved: symbolic links and ``..`` followed), so that no input is
    overwritten or deleted. Raises ``ConfigError`` naming both folders (``writes_what``,
    ``reads_what``: the options or things they are, e.g. ``"--work-dir"``, ``"the data folder"``)."""
    w, r = Path(writes).resolve(), Path(reads).resolve()
    how = "is" if w == r else "lies inside" if w.is_relative_to(r) else "contains" if r.is_relative_to(w) else None
    if how:
        raise ConfigError(f"{writes_what} {w} {how} {reads_what} {r}, which must only be read: choose a folder "
                          f"apart from it")
