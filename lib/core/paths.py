"""Where each stage's artifacts live under ``output/``, and clear errors when one is missing."""
from __future__ import annotations

import contextlib
import glob
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from .artifacts import Record, folds_id, split_id
from .config import ROOT
from .errors import ConfigError, MissingArtifact
from .registry import did_you_mean
from .utils import fingerprint, read_artifact_csv, read_json

PSEUDO_LABEL_COMMAND = "pseudo_label.txt"
"""The file in a pseudo-labelled output folder holding the ``pseudo_label.py`` command that
makes its ``folds.csv`` (named by :meth:`Outputs.prepared` when that record is missing or stale;
stage 00 removes it when it writes the folder's tables itself)."""


def pretrained_record(checkpoint: str | os.PathLike, exp: str | None = None) -> Record:
    """The record beside a ``pretrain.py`` checkpoint ``<folder>/<exp>.pt``: ``<folder>/<exp>.record.json``,
    members relative to ``<folder>``."""
    checkpoint = Path(checkpoint)
    exp = exp or checkpoint.stem
    return Record(checkpoint.with_name(f"{exp}.record.json"), checkpoint.parent,
                  f"pretrained weights {checkpoint.name!r}", f"pretrain.py for {exp}")


@dataclass(frozen=True)
class Outputs:
    """The artifact layout of one output folder (default ``<project>/output``).

    ``competition.yaml``, ``folds.csv``, ``test.csv``   stage 00   record ``prepare.record.json``
    ``features/<set>/``                                  stage 01   record ``features/<set>/record.json``
    ``models/<exp>/``, ``oof/<exp>.csv``                 stage 02   records ``models/<exp>/fold<k>.record.json``
                                                                    and ``models/<exp>/record.json``
    ``preds/<exp>.csv``                                  stage 03   record ``preds/<exp>.record.json``
    ``submission.csv``, ``ensemble.json``                stage 04   record ``ensemble.record.json``
    ``pretrained/<exp>.pt`` (``<exp>_log.csv`` beside)     pretrain.py  record ``pretrained/<exp>.record.json``

    The records (:mod:`lib.core.artifacts`) say which files make up each result and what it was
    made from; a result without a complete record is never read.
    """

    root: Path = ROOT / "output"

    def __post_init__(self):
        """Take ``root`` as a ``Path`` (a notebook may give a ``str``); raise ``ConfigError`` when
        it is an existing file: the folder is given as ``--output-dir`` (the stages) or
        ``--work-dir`` (``predict_bundle.py``)."""
        object.__setattr__(self, "root", Path(self.root))  # frozen: set once, here
        if self.root.is_file():
            raise ConfigError(f"output folder {self.root} is an existing file, not a folder; give a folder "
                              f"(--output-dir / --work-dir)")

    def check_writable(self) -> None:
        """Raise ``ConfigError`` naming the folder when ``root`` cannot be written: it, or the
        nearest existing folder above it (where it would be created), is read-only for this
        process. Called before a stage's work, so that it does not fail at its first write."""
        folder = Path(self.root)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            made = "" if folder == Path(self.root) else f" (to create {self.root} in)"
            raise ConfigError(f"output folder {folder}{made} is not writable; give a writable folder (--output-dir / "
                              f"--work-dir) or change its permissions")

    def prepared_competition(self) -> dict | None:
        """The competition config written by stage 00 (:meth:`load_competition`), or ``None`` when
        it is missing or stale (the stage that needs it says so then)."""
        try:
            return self.load_competition()
        except MissingArtifact:
            return None

    @property
    def competition(self) -> Path:
        return self.root / "competition.yaml"

    @property
    def folds(self) -> Path:
        return self.root / "folds.csv"

    @property
    def test(self) -> Path:
        return self.root / "test.csv"

    def features(self, feature_set: str) -> Path:
        return self.root / "features" / feature_set

    def model_dir(self, exp: str) -> Path:
        return self.root / "models" / exp

    def oof(self, exp: str) -> Path:
        return self.root / "oof" / f"{exp}.csv"

    def preds(self, exp: str) -> Path:
        return self.root / "preds" / f"{exp}.csv"

    @property
    def submission(self) -> Path:
        return self.root / "submission.csv"

    def prepared(self) -> Record:
        """The record of stage 00's tables (in a folder that ``pseudo_label.py`` makes, named by
        its ``pseudo_label.txt``, that command makes them: 00 would leave out the pseudo rows)."""
        made_by = self.root / PSEUDO_LABEL_COMMAND
        stage = (f"{made_by.read_text().strip()} (the command that makes this pseudo-labelled folder; 00_prepare.py "
                 f"would leave its pseudo-labelled rows out)" if made_by.is_file() else "00_prepare.py")
        return Record(self.root / "prepare.record.json", self.root, "prepared competition (folds.csv, test.csv)", stage)

    def features_record(self, feature_set: str) -> Record:
        """The record of a feature set's cache."""
        return Record(self.features(feature_set) / "record.json", self.root, f"feature set {feature_set!r}",
                      "01_features.py")

    def features_since(self, feature_set: str, made: dict, split: str = "train") -> str | None:
        """What became of ``feature_set``'s ``split`` since the record ``made`` was made from it (a
        training record from the train split, 03's predictions from the test split): ``None`` (it
        is the build they were made from, :func:`lib.core.artifacts.split_id`: 01 rebuilding the
        test split alone keeps the train split's; also for records of older versions, which do
        not name it), ``"rebuilt"`` (01 built that split again), ``"unfinished"`` (its folder is
        there without its record: a build killed or still running; what it will keep is not
        known yet), ``"removed"`` (its folder or files are gone, e.g. to free disk space after 03)
        or ``"built from other <split> recordings than 00_prepare.py read"`` (:meth:`audio_changed`;
        with the cache removed, the recordings ``made`` remembers, ``inputs["recordings"]``)."""
        built = made.get("inputs", {}).get("features")
        if built is None:
            return None
        record = self.features_record(feature_set)
        rec, _ = record.check(hashes=False)
        other = f"built from other {split} recordings than 00_prepare.py read"
        if rec is None:  # 01 removes the record first when it rebuilds; files deleted to free disk leave it
            if self.features(feature_set).exists() and not record.path.exists():
                return "unfinished"
            read, then = self.audio_read().get(split), made.get("inputs", {}).get("recordings")
            return other if read and then and read != then else "removed"
        if split_id(rec, split) != built:
            return "rebuilt"
        return other if self.audio_changed(feature_set, [split]) else None

    def feature_set_of(self, exp: str) -> str:
        """The feature set a trained experiment reads (its ``models/<exp>/config.yaml``)."""
        return yaml.safe_load((self.model_dir(exp) / "config.yaml").read_text())["features"]["set"]

    def audio_changed(self, feature_set: str, splits=None) -> list[str]:
        """The splits (of ``splits``, default all) whose recordings ``feature_set``'s cache was
        built from (ids and audio bytes, :func:`lib.core.artifacts.audio_fingerprint`) are not
        those stage 00 read last: a recording replaced and 00 run again, another experiment's
        feature set rebuilt, this one not. ``[]`` when either side does not say (a cache or a
        stage-00 result of an older version, a removed cache, a pseudo-labelled folder of an older version)."""
        read = self.audio_read()
        try:
            built = read_json(self.features(feature_set) / "manifest.json")["splits"]
        except (OSError, ValueError, KeyError):
            return []
        return [s for s, v in built.items() if (splits is None or s in splits) and isinstance(v, dict)
                and v.get("audio") and read.get(s) and v["audio"] != read[s]]

    def trained(self, exp: str) -> Record:
        """The record of an experiment's training (every fold model, the OOF file, the scores); its
        messages name the variants of ``exp`` trained under other names (``EXP+<hash>`` of ``--set``)."""
        variants = [] if self.model_dir(exp).exists() else sorted(  # looked for only when it was never trained
            p.name for p in (self.root / "models").glob(f"{glob.escape(exp)}+*") if p.is_dir())
        other = (f" (it was trained as {', '.join(variants[:3])}: the same --set, or --name, reaches "
                 f"{'it' if len(variants) == 1 else 'them'})" if variants else "")
        if not variants and not self.model_dir(exp).exists() and (self.root / "models").is_dir():  # a typo of a name
            hint = did_you_mean(exp, [p.name for p in (self.root / "models").iterdir() if p.is_dir()])
            other += f" ({hint[2:]})" if hint else ""
        return Record(self.model_dir(exp) / "record.json", self.root, f"trained experiment {exp!r}",
                      f"02_train.py for {exp}{other}")

    def fold_record(self, exp: str, fold: int) -> Record:
        """The record of one finished fold of an experiment."""
        return Record(self.model_dir(exp) / f"fold{fold}.record.json", self.root, f"fold {fold} of {exp!r}",
                      f"02_train.py for {exp}")

    def predicted(self, exp: str) -> Record:
        """The record of an experiment's test predictions."""
        return Record(self.preds(exp).with_suffix(".record.json"), self.root, f"test predictions of {exp!r}",
                      f"03_infer.py for {exp}")

    def pretrained(self, exp: str) -> Path:
        """The self-supervised checkpoint of an experiment's network (``pretrain.py``)."""
        return self.root / "pretrained" / f"{exp}.pt"

    def pretrained_record(self, exp: str) -> Record:
        """The record of :meth:`pretrained` (members relative to its own folder, so that the
        folder can be copied elsewhere, e.g. into a notebook dataset, and still be checked)."""
        return pretrained_record(self.pretrained(exp), exp)

    @property
    def ensembled(self) -> Record:
        """The record of the blend and submission."""
        return Record(self.root / "ensemble.record.json", self.root, "ensemble", "04_ensemble.py")

    def trained_on(self, feature_set: str) -> list[str]:
        """The experiments of ``models/`` trained on ``feature_set`` (their resolved ``config.yaml``'s
        ``features.set``), sorted."""
        names = []
        for cfg in sorted((self.root / "models").glob("*/config.yaml")):
            with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
                if (yaml.safe_load(cfg.read_text()).get("features") or {}).get("set") == feature_set:
                    names.append(cfg.parent.name)
        return names

    def changed_members(self, blend: dict) -> list[str]:
        """The members of ``ensemble.json`` whose current complete training record is not the one
        the blend's record ``blend`` used (trained again, changed or removed since 04 ran), or whose
        test predictions are not (03 run again since, or its test split rebuilt or built from
        other recordings than 00 read: a new test set; blends of older versions do not name them)."""
        members = [e["experiment"] for e in (read_json(self.root / "ensemble.json") or {}).get("experiments") or []]
        return [m for m in members if (self.trained(m).check(hashes=False)[0] or {}).get("id") != blend["inputs"].get(m)
                or f"preds/{m}" in blend["inputs"] and self._predictions_changed(m, blend["inputs"][f"preds/{m}"])]

    def _predictions_changed(self, exp: str, used: str) -> bool:
        """Whether ``exp``'s test predictions are not the record ``used`` any more, or are stale
        through their feature set's test split (:meth:`features_since`)."""
        pred = self.predicted(exp).check(hashes=False)[0]
        return pred is None or pred["id"] != used or self.features_since(
            self.feature_set_of(exp), pred, "test") not in (None, "removed")

    def require(self, path: Path, stage: str) -> Path:
        """Return ``path`` if it exists, else raise ``MissingArtifact`` saying to run ``stage``."""
        if not path.exists():
            raise MissingArtifact(f"{path} not found: run {stage} first")
        return path

    def load_competition(self) -> dict:
        """The resolved competition config written by stage 00 (its record checked first)."""
        self.prepared().require()
        return yaml.safe_load(self.competition.read_text())

    def test_id(self) -> str | None:
        """The fingerprint of the test set stage 00 wrote last: ``test.csv`` without its ``path``
        column (:func:`lib.core.artifacts.folds_id`: a moved data folder is no change) and the
        audio of its recordings as 00 read it (its record), so that a file replaced under the same
        name is another test set; ``None`` without one."""
        if not self.test.is_file():
            return None
        return fingerprint(folds_id(pd.read_csv(self.test, dtype=str, keep_default_na=False)),
                           self.audio_read().get("test"))

    def audio_read(self) -> dict:
        """``{split: audio fingerprint}`` of the recordings stage 00 read last (its record's
        ``info["audio"]``: :func:`lib.core.artifacts.audio_fingerprint`); ``{}`` when it does not
        say (no stage-00 result, or one of an older version)."""
        return ((self.prepared().read() or {}).get("info") or {}).get("audio") or {}

    def has_test(self) -> bool:
        """Whether stage 00 found a test set (its record lists ``test.csv``)."""
        return "test.csv" in self.prepared().require()["members"]

    def load_split(self, split: str) -> pd.DataFrame:
        """``folds.csv`` (split ``train``) or ``test.csv`` (split ``test``) as a DataFrame; ids,
        targets, groups and slice columns (``slice_<column>``, :mod:`lib.data.slices`) as written,
        strings (a test column with "1.0" in it must not turn its "3" into 3.0)."""
        self.prepared().require()
        path = self.require(self.folds if split == "train" else self.test, "00_prepare.py")
        return read_artifact_csv(path)


def as_outputs(out) -> Outputs:
    """``out`` as an :class:`Outputs`: itself, or the output folder a ``str`` or ``Path`` names (a
    notebook's call of a stage function). Raises ``ConfigError`` as :class:`Outputs` does."""
    return out if isinstance(out, Outputs) else Outputs(Path(out))

