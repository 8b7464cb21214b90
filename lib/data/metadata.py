"""Metadata inputs (a patient's age, sex, ...): encoded per fold, fitted on its training rows only."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .prepare import META_PREFIX
from .slices import category_text


class MetadataEncoder:
    """Metadata columns -> model inputs, fitted on training rows only.

    Numeric columns: median imputation then standardisation; categorical ones: one-hot
    (a missing cell is a category of its own; a category unseen in training encodes as all
    zeros; cells compared as :func:`lib.data.slices.category_text`, so ``1.0`` is ``1``).
    Fitted with scikit-learn's ``ColumnTransformer`` (``SimpleImputer``,
    ``StandardScaler``, ``OneHotEncoder``), whose fitted parameters are then kept as plain lists
    (:meth:`state`), so a checkpoint loads with ``torch.load(weights_only=True)`` and
    :meth:`transform` needs no pickled object. Input: a ``folds.csv``/``test.csv`` table with
    ``meta_<column>`` columns; output float32 ``(rows, n_features)``; ``names`` lists the output
    columns.
    """

    def __init__(self, numeric: list[str], categorical: list[str]):
        self.numeric = [META_PREFIX + c for c in numeric]
        self.categorical = [META_PREFIX + c for c in categorical]
        self.median: list[float] = []           # per numeric column, imputes a missing cell
        self.mean: list[float] = []             # per numeric column, after imputation
        self.scale: list[float] = []            # per numeric column (1 where the variance is 0)
        self.categories: list[list[str]] = []   # per categorical column, in output order
        self.names: list[str] = []
        self.transformer = None                 # the fitted scikit-learn object (not saved)

    def _frame(self, table: pd.DataFrame) -> pd.DataFrame:
        df = table[self.numeric + self.categorical].copy()
        df[self.numeric] = df[self.numeric].apply(pd.to_numeric, errors="coerce").astype(float)
        for col in self.categorical:  # "1.0" read back from a column with an empty cell is "1"
            df[col] = category_text(df[col])
        return df

    def fit(self, table: pd.DataFrame) -> MetadataEncoder:
        """Fit imputation, scaling and categories on ``table``'s rows (the training fold) with
        scikit-learn and keep the fitted parameters as plain lists. Returns ``self``."""
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        self.transformer = ColumnTransformer([
            ("numeric", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()),
             self.numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), self.categorical),
        ]).fit(self._frame(table))
        fitted = self.transformer.named_transformers_
        if self.numeric:
            imputer, scaler = fitted["numeric"]
            self.median = imputer.statistics_.tolist()
            self.mean, self.scale = scaler.mean_.tolist(), scaler.scale_.tolist()
        if self.categorical:
            self.categories = [[str(c) for c in cats] for cats in fitted["categorical"].categories_]
        self.names = [n.split("__", 1)[1] for n in self.transformer.get_feature_names_out()]
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """Encode ``table``'s rows -> float32 ``(rows, len(names))``: the numeric columns
        (missing -> median, then ``(x - mean) / scale``), then the one-hot columns of each
        categorical column (an unseen category -> all zeros). Raises ``KeyError`` when a column
        is missing from ``table``."""
        df = self._frame(table)
        numeric = (df[self.numeric].to_numpy(np.float64) if self.numeric else np.zeros((len(df), 0)))
        numeric = np.where(np.isnan(numeric), np.asarray(self.median), numeric)
        parts = [(numeric - np.asarray(self.mean)) / np.asarray(self.scale)]
        for col, cats in zip(self.categorical, self.categories):
            parts.append(df[col].to_numpy(str)[:, None] == category_text(cats)[None, :])
        return np.hstack([p.astype(np.float64) for p in parts]).reshape(len(df), len(self.names)).astype(np.float32)

    def state(self) -> dict:
        """The fitted parameters as plain lists and strings (no pickled object): ``numeric``,
        ``categorical`` (the ``meta_`` column names), ``median``, ``mean``, ``scale`` (per numeric
        column), ``categories`` (per categorical column, in order), ``names``."""
        return {"numeric": list(self.numeric), "categorical": list(self.categorical), "median": list(self.median),
                "mean": list(self.mean), "scale": list(self.scale),
                "categories": [list(c) for c in self.categories], "names": list(self.names)}

    @classmethod
    def from_state(cls, state: dict) -> MetadataEncoder:
        """A fitted encoder from :meth:`state`'s dict; its :meth:`transform` equals the original's.
        Raises ``KeyError`` when an entry is missing."""
        enc = cls([], [])
        for key in ("numeric", "categorical", "median", "mean", "scale", "categories", "names"):
            setattr(enc, key, [list(v) if isinstance(v, (list, tuple)) else v for v in state[key]])
        return enc


def metadata_columns(comp: dict) -> tuple[list[str], list[str]]:
    """The competition's ``(numeric, categorical)`` metadata columns (empty lists when it has none)."""
    meta = comp.get("metadata") or {}
    return list(meta.get("numeric") or []), list(meta.get("categorical") or [])


def metadata_encoder(comp: dict, table: pd.DataFrame, rows: np.ndarray) -> MetadataEncoder | None:
    """A :class:`MetadataEncoder` fitted on ``table.iloc[rows]``, or ``None`` when the competition
    declares no metadata."""
    numeric, categorical = metadata_columns(comp)
    return MetadataEncoder(numeric, categorical).fit(table.iloc[rows]) if numeric or categorical else None


