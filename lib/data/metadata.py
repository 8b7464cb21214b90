"""Metadata inputs (a patient's age, sex, ...): encoded per fold, fitted on its training rows only."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .prepare import META_PREFIX


class MetadataEncoder:
    """Metadata columns -> model inputs, fitted on training rows only.

    Numeric columns: median imputation then standardisation; categorical ones: one-hot
    (a missing cell is a category of its own; a category unseen in training encodes as all
    zeros). scikit-learn's ``ColumnTransformer`` with ``SimpleImputer``, ``StandardScaler`` and
    ``OneHotEncoder``. Input: a ``folds.csv``/``test.csv`` table with ``meta_<column>`` columns;
    output float32 ``(rows, n_features)``; ``names`` lists the output columns.
    """

    def __init__(self, numeric: list[str], categorical: list[str]):
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        self.numeric = [META_PREFIX + c for c in numeric]
        self.categorical = [META_PREFIX + c for c in categorical]
        self.transformer = ColumnTransformer([
            ("numeric", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()),
             self.numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), self.categorical),
        ])
        self.names: list[str] = []

    def _frame(self, table: pd.DataFrame) -> pd.DataFrame:
        df = table[self.numeric + self.categorical].copy()
        df[self.numeric] = df[self.numeric].apply(pd.to_numeric, errors="coerce").astype(float)
        df[self.categorical] = df[self.categorical].fillna("").astype(str)
        return df

    def fit(self, table: pd.DataFrame) -> MetadataEncoder:
        """Fit imputation, scaling and categories on ``table``'s rows (the training fold)."""
        self.transformer.fit(self._frame(table))
        self.names = [n.split("__", 1)[1] for n in self.transformer.get_feature_names_out()]
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """Encode ``table``'s rows -> float32 ``(rows, len(names))``."""
        return self.transformer.transform(self._frame(table)).astype(np.float32)


def metadata_columns(comp: dict) -> tuple[list[str], list[str]]:
    """The competition's ``(numeric, categorical)`` metadata columns (empty lists when it has none)."""
    meta = comp.get("metadata") or {}
    return list(meta.get("numeric") or []), list(meta.get("categorical") or [])


def metadata_encoder(comp: dict, table: pd.DataFrame, rows: np.ndarray) -> MetadataEncoder | None:
    """A :class:`MetadataEncoder` fitted on ``table.iloc[rows]``, or ``None`` when the competition
    declares no metadata."""
    numeric, categorical = metadata_columns(comp)
    return MetadataEncoder(numeric, categorical).fit(table.iloc[rows]) if numeric or categorical else None


