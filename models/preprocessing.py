"""Fitted preprocessing between raw columns and the float matrix a model reads.

The tabular preprocessor one-hot encodes categorical features, maps binary ones to 0/1 and
standardises numeric ones. With ``missing="impute"`` it also fills missing values from the
training rows it was fitted on: the median of a numeric feature, the category ``"missing"`` for
a categorical one. Its fitted state is plain JSON (saved in each checkpoint), and it
knows which encoded columns came from which original feature, so attributions computed on
the encoded matrix can be summed back to the columns people think in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scrutiny.errors import DataError
from scrutiny.models.spec import DatasetSpec, short_repr

__all__ = ["TabularPreprocessor", "ImagePreprocessor", "preprocessor_from_dict", "MISSING_MODES", "MISSING_CATEGORY"]

MISSING_MODES = ("error", "drop", "impute")
MISSING_CATEGORY = "missing"


@dataclass
class TabularPreprocessor:
    """Scikit-learn style ``fit`` / ``transform`` over the spec's features.

    Categorical values are compared as strings; a category unseen in training encodes as all
    zeros. ``missing`` is how the data set handled missing values (``"error"``, ``"drop"`` or
    ``"impute"``); only ``"impute"`` fills them here, with ``fills_`` learned in ``fit``.
    Learned state ends in ``_``.
    """

    spec: DatasetSpec
    missing: str = "error"
    means_: dict[str, float] = field(default_factory=dict)
    scales_: dict[str, float] = field(default_factory=dict)
    categories_: dict[str, list[str]] = field(default_factory=dict)
    fills_: dict[str, float | str] = field(default_factory=dict)

    def __post_init__(self):
        if self.missing not in MISSING_MODES:
            raise DataError(f"missing must be one of {', '.join(map(repr, MISSING_MODES))}, got {self.missing!r}")

    def fit(self, X: pd.DataFrame) -> TabularPreprocessor:
        _require_columns(X, self.spec.feature_names, self.spec.name)
        if self.missing == "impute":
            self.fills_ = self._fitted_fills(X)
        X = self._filled(X)
        for feature in self.spec.features:
            column = X[feature.name]
            if feature.kind == "numeric":
                values = _numeric(column, feature.name, self.spec.name)
                std = float(values.std(ddof=0))
                self.means_[feature.name] = float(values.mean())
                self.scales_[feature.name] = std if std > 0 else 1.0
            else:
                categories = sorted(column.astype(str).unique())
                if feature.kind == "binary" and len(categories) != 2:
                    raise DataError(
                        f"{self.spec.name}: binary column '{feature.name}' has "
                        f"{len(categories)} distinct values in training, expected 2"
                    )
                self.categories_[feature.name] = categories
        return self

    def _fitted_fills(self, X: pd.DataFrame) -> dict[str, float | str]:
        """Median of each numeric feature over ``X`` (the training rows), "missing" for categorical ones."""
        fills: dict[str, float | str] = {}
        for feature in self.spec.features:
            if feature.kind == "categorical":
                fills[feature.name] = MISSING_CATEGORY
            elif feature.kind == "numeric":
                median = float(pd.to_numeric(X[feature.name], errors="coerce").median())
                if not math.isfinite(median):
                    raise DataError(f"{self.spec.name}: numeric column '{feature.name}' has no value in the training "
                                    "split to impute its missing values from")
                fills[feature.name] = median
        return fills

    def _filled(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X`` with missing values replaced by ``fills_`` (unchanged unless ``missing="impute"``)."""
        gaps = {name: value for name, value in self.fills_.items() if X[name].isna().any()}
        if not gaps:
            return X
        X = X.copy()
        for name, value in gaps.items():
            X[name] = X[name].astype(object).where(X[name].notna(), value) if isinstance(value, str) \
                else X[name].fillna(value)
        return X

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        _require_columns(X, self.spec.feature_names, self.spec.name)
        X = self._filled(X)
        blocks = []
        for feature in self.spec.features:
            column = X[feature.name]
            if feature.kind == "numeric":
                values = _numeric(column, feature.name, self.spec.name)
                blocks.append(((values - self.means_[feature.name]) / self.scales_[feature.name])[:, None])
                continue
            categories = self.categories_[feature.name]
            codes = pd.Index(categories).get_indexer(column.astype(str))
            if feature.kind == "binary":
                if (codes < 0).any():
                    unknown = column[codes < 0].iloc[0]
                    raise DataError(
                        f"{self.spec.name}: binary column '{feature.name}' has value '{unknown}', "
                        f"expected one of {categories}"
                    )
                blocks.append(codes.astype(np.float64)[:, None])
            else:
                one_hot = np.zeros((len(column), len(categories)))
                known = codes >= 0
                one_hot[np.flatnonzero(known), codes[known]] = 1.0
                blocks.append(one_hot)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def fit_transform(self, X: pd.DataFrame) -> np.ndarray:
        return self.fit(X).transform(X)

    @property
    def encoded_feature_names(self) -> list[str]:
        """Names of the encoded columns: ``age``, ``sex=Male``, ``workclass=Private``, …"""
        names = []
        for feature in self.spec.features:
            if feature.kind == "categorical":
                names += [f"{feature.name}={c}" for c in self.categories_[feature.name]]
            elif feature.kind == "binary":
                names.append(f"{feature.name}={self.categories_[feature.name][1]}")
            else:
                names.append(feature.name)
        return names

    @property
    def feature_groups(self) -> dict[str, list[int]]:
        """Original feature name → indices of its encoded columns (in order)."""
        groups, start = {}, 0
        for feature in self.spec.features:
            width = len(self.categories_[feature.name]) if feature.kind == "categorical" else 1
            groups[feature.name] = list(range(start, start + width))
            start += width
        return groups

    @property
    def n_encoded(self) -> int:
        return sum(len(v) for v in self.feature_groups.values())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.n_encoded,)

    def to_dict(self) -> dict:
        state = {
            "kind": "tabular",
            "means": self.means_,
            "scales": self.scales_,
            "categories": self.categories_,
            "encoded_feature_names": self.encoded_feature_names,
        }
        if self.missing != "error":  # absent means "error": checkpoints written before the key stay as they were
            state["missing"] = self.missing
        if self.missing == "impute":
            state["fills"] = self.fills_
        return state

    @classmethod
    def from_dict(cls, data: dict, spec: DatasetSpec) -> TabularPreprocessor:
        """The state ``to_dict`` wrote for ``spec``; DataError naming the key if it is not one."""
        if not isinstance(data, dict):
            raise DataError(f"expected a table of preprocessing keys, got {type(data).__name__}")
        numeric = [f.name for f in spec.features if f.kind == "numeric"]
        coded = [f.name for f in spec.features if f.kind != "numeric"]
        for key, names, ok, expected in (
            ("means", numeric, _is_number, "a finite number"),
            ("scales", numeric, lambda v: _is_number(v) and v > 0, "a finite number > 0"),
            ("categories", coded, lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
             "a list of category names"),
        ):
            table = data.get(key)
            if not isinstance(table, dict):
                raise DataError(f"'{key}' must map each feature name to {expected}, got {short_repr(table)}")
            missing = [n for n in names if n not in table]
            if missing:
                raise DataError(f"'{key}' has no entry for feature(s) {', '.join(map(repr, missing[:5]))}"
                                f"{' …' if len(missing) > 5 else ''} of the data-set spec")
            for name, value in table.items():
                if not ok(value):
                    raise DataError(f"'{key}' of '{name}' must be {expected}, got {short_repr(value)}")
        categories = data["categories"]
        for feature in spec.features:
            if feature.kind == "binary" and len(categories[feature.name]) != 2:
                raise DataError(f"'categories' of binary feature '{feature.name}' must hold two values, "
                                f"got {categories[feature.name]!r}")
        missing = data.get("missing", "error")
        if missing not in MISSING_MODES:
            raise DataError(f"'missing' must be one of {', '.join(map(repr, MISSING_MODES))}, got {short_repr(missing)}")
        return cls(
            spec=spec,
            missing=missing,
            means_={n: float(v) for n, v in data["means"].items()},
            scales_={n: float(v) for n, v in data["scales"].items()},
            categories_={k: list(v) for k, v in categories.items()},
            fills_=_fills_from_dict(data.get("fills"), spec) if missing == "impute" else {},
        )


@dataclass
class ImagePreprocessor:
    """Images arrive already scaled to ``spec.pixel_range``; this checks their shape."""

    spec: DatasetSpec

    def fit(self, X: np.ndarray) -> ImagePreprocessor:
        self.transform(X)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.shape[1:] != tuple(self.spec.image_shape):
            raise DataError(
                f"{self.spec.name}: images have shape {X.shape[1:]}, expected {tuple(self.spec.image_shape)}"
            )
        return X

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.spec.image_shape)

    def to_dict(self) -> dict:
        return {"kind": "image", "image_shape": list(self.spec.image_shape), "pixel_range": list(self.spec.pixel_range)}


def preprocessor_from_dict(data: dict, spec: DatasetSpec) -> TabularPreprocessor | ImagePreprocessor:
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in (None, spec.task):
        raise DataError(f"'kind' is {kind!r}, but the data set is {spec.task}")
    if spec.task == "image":
        return ImagePreprocessor(spec)
    return TabularPreprocessor.from_dict(data, spec)


def _fills_from_dict(fills, spec: DatasetSpec) -> dict[str, float | str]:
    """The ``fills`` entry of an imputing preprocessor: a number per numeric feature, a text per categorical one."""
    expected = {f.name: f.kind for f in spec.features if f.kind != "binary"}
    if not isinstance(fills, dict) or set(fills) != set(expected):
        raise DataError(f"'fills' must map each numeric and categorical feature ({', '.join(expected)}) to its fill "
                        f"value, got {short_repr(fills)}")
    for name, value in fills.items():
        ok = _is_number(value) if expected[name] == "numeric" else isinstance(value, str)
        if not ok:
            kind = "a finite number" if expected[name] == "numeric" else "a category name"
            raise DataError(f"'fills' of '{name}' must be {kind}, got {short_repr(value)}")
    return {name: float(v) if expected[name] == "numeric" else v for name, v in fills.items()}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require_columns(X: pd.DataFrame, names: list[str], dataset: str) -> None:
    missing = [n for n in names if n not in X.columns]
    if missing:
        raise DataError(f"{dataset}: missing feature column(s) {', '.join(repr(m) for m in missing)}")


def _numeric(column: pd.Series, name: str, dataset: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{dataset}: numeric column '{name}' has {int(bad.sum())} missing or non-numeric value(s) "
            f"(first at row {row}: {column.iloc[row]!r})"
        )
    return values
