"""Where each stage's artifacts live under ``output/``, and clear errors when one is missing."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from .config import ROOT
from .errors import MissingArtifact


@dataclass(frozen=True)
class Outputs:
    """The artifact layout of one output folder (default ``<project>/output``).

    ``competition.yaml``, ``folds.csv``, ``test.csv``   stage 00
    ``features/<set>/``                                  stage 01
    ``models/<exp>/``, ``oof/<exp>.csv``                 stage 02
    ``preds/<exp>.csv``                                  stage 03
    ``submission.csv``, ``ensemble.json``                stage 04
    """

    root: Path = ROOT / "output"

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

    def require(self, path: Path, stage: str) -> Path:
        """Return ``path`` if it exists, else raise ``MissingArtifact`` saying to run ``stage``."""
        if not path.exists():
            raise MissingArtifact(f"{path} not found: run {stage} first")
        return path

    def load_competition(self) -> dict:
        """The resolved competition config written by stage 00."""
        return yaml.safe_load(self.require(self.competition, "00_prepare.py").read_text())

    def load_split(self, split: str) -> pd.DataFrame:
        """``folds.csv`` (split ``train``) or ``test.csv`` (split ``test``) as a DataFrame."""
        path = self.folds if split == "train" else self.test
        df = pd.read_csv(self.require(path, "00_prepare.py"), dtype={"id": str, "target": str, "group": str})
        if "target" in df:
            df["target"] = df["target"].fillna("")  # a multi-label row without labels
        return df
