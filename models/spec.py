"""What a data set is: its features, its label and the groups an audit compares.

A :class:`DatasetSpec` is plain data. It is written into every checkpoint manifest and run
folder, so that attributions can be named after the original columns and fairness checks
know which groups are privileged, without the raw data at hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from .errors import DataError

__all__ = ["Feature", "ProtectedAttribute", "DatasetSpec", "FEATURE_KINDS"]

FEATURE_KINDS = ("numeric", "categorical", "binary")


@dataclass(frozen=True)
class Feature:
    """One original column the model reads.

    Args:
        name: column name in the raw data.
        kind: ``"numeric"`` (scaled), ``"categorical"`` (one-hot) or ``"binary"`` (two values,
            mapped to 0/1 in sorted order).
        integer: for numeric features, whether every value is a whole number (attacks keep it so).
    """

    name: str
    kind: Literal["numeric", "categorical", "binary"]
    integer: bool = False


@dataclass(frozen=True)
class ProtectedAttribute:
    """A column that defines the groups a fairness audit compares.

    A row is privileged when its value is one of ``privileged_values`` or, for a numeric
    column, when it is at least ``privileged_min`` (German credit: age >= 25).
    """

    name: str
    privileged_values: tuple[Any, ...] = ()
    privileged_min: float | None = None

    def __post_init__(self):
        if bool(self.privileged_values) == (self.privileged_min is not None):
            raise DataError(
                f"protected attribute '{self.name}': give either privileged values or a "
                "numeric minimum, not both or neither"
            )

    def is_privileged(self, values: pd.Series | np.ndarray) -> np.ndarray:
        """Boolean array: which rows belong to the privileged group."""
        values = pd.Series(values)
        if self.privileged_min is not None:
            return (pd.to_numeric(values) >= self.privileged_min).to_numpy()
        return values.isin(list(self.privileged_values)).to_numpy()

    def describe(self) -> str:
        if self.privileged_min is not None:
            return f"{self.name} >= {self.privileged_min:g}"
        return f"{self.name} in {{{', '.join(map(str, self.privileged_values))}}}"


@dataclass(frozen=True)
class DatasetSpec:
    """Description of a data set, shared by every audit module.

    Args:
        name: data-set id (``"adult"``, ``"digits"``, or the file stem of a user's CSV).
        task: ``"tabular"`` or ``"image"``.
        label: name of the label column.
        classes: class names in label-index order. For binary tabular tasks index 1 is the
            favourable outcome, so ``y == 1`` means "favourable" everywhere in scrutiny.
        favourable_label: the raw label value that counts as favourable (binary tasks only).
        features: the original columns the model reads, in order (tabular only).
        protected: protected attributes; each names a raw column.
        image_shape: (channels, height, width) for image tasks.
        pixel_range: valid (min, max) of image inputs after preprocessing.
        description: one line shown in reports.
    """

    name: str
    task: Literal["tabular", "image"]
    label: str
    classes: tuple[str, ...]
    favourable_label: Any = None
    features: tuple[Feature, ...] = ()
    protected: tuple[ProtectedAttribute, ...] = ()
    image_shape: tuple[int, ...] | None = None
    pixel_range: tuple[float, float] | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        return self.n_classes == 2

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def protected_attribute(self, name: str) -> ProtectedAttribute:
        for attribute in self.protected:
            if attribute.name == name:
                return attribute
        known = ", ".join(a.name for a in self.protected) or "none"
        raise DataError(f"data set '{self.name}' has no protected attribute '{name}' (known: {known})")

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSpec:
        data = dict(data)
        data["classes"] = tuple(data["classes"])
        data["features"] = tuple(Feature(**f) for f in data.get("features", ()))
        data["protected"] = tuple(
            ProtectedAttribute(
                name=p["name"],
                privileged_values=tuple(p.get("privileged_values", ())),
                privileged_min=p.get("privileged_min"),
            )
            for p in data.get("protected", ())
        )
        for key in ("image_shape", "pixel_range"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
