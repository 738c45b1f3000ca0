"""What a data set is: its features, its label and the groups an audit compares.

A :class:`DatasetSpec` is plain data. It is written into every checkpoint manifest and run
folder, so that attributions can be named after the original columns and fairness checks
know which groups are privileged, without the raw data at hand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypeGuard, TypeVar

import numpy as np
import pandas as pd

from scrutiny.errors import DataError

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

    Either a privileged group set against everyone else, or a reference category set against
    each other category in turn (as Aequitas does):

    - ``privileged_values``: a row is privileged when its value is one of them;
    - ``privileged_min``: for a numeric column, when it is at least this (German credit: age >= 25);
    - ``reference``: every other category of the column is compared with this one (COMPAS race:
      ``Caucasian``). The reference category doubles as the privileged group where one
      group is needed (mitigation: the reference against the rest).
    """

    name: str
    privileged_values: tuple[Any, ...] = ()
    privileged_min: float | None = None
    reference: Any = None

    def __post_init__(self):
        given = sum((bool(self.privileged_values), self.privileged_min is not None, self.reference is not None))
        if given != 1:
            raise DataError(
                f"protected attribute '{self.name}': give one of privileged values, a numeric minimum or a "
                f"reference category, got {'none' if not given else 'more than one'}"
            )

    def is_privileged(self, values: pd.Series | np.ndarray) -> np.ndarray:
        """Boolean array: which rows belong to the privileged group (for a reference attribute, the reference category)."""
        values = pd.Series(values)
        if self.privileged_min is not None:
            return (pd.to_numeric(values) >= self.privileged_min).to_numpy()
        if self.reference is not None:
            return (values.astype(str) == str(self.reference)).to_numpy()
        return values.isin(list(self.privileged_values)).to_numpy()

    def describe(self) -> str:
        """The privileged group (or the reference category) in words: ``sex: Male``,
        ``race: White or Asian-Pac-Islander``, ``age ≥ 25``, ``race: Caucasian``."""
        if self.privileged_min is not None:
            return f"{self.name} ≥ {self.privileged_min:g}"
        if self.reference is not None:
            return f"{self.name}: {self.reference}"
        return f"{self.name}: {_either(self.privileged_values)}"

    def describe_rest(self) -> str:
        """Every row outside the privileged group, in words: ``sex: not Male``, ``race: neither
        White nor Asian-Pac-Islander``, ``age < 25``; for a reference attribute, the other categories."""
        if self.privileged_min is not None:
            return f"{self.name} < {self.privileged_min:g}"
        values = [str(v) for v in (self.privileged_values or (self.reference,))]
        if len(values) == 1:
            return f"{self.name}: not {values[0]}"
        if len(values) == 2:
            return f"{self.name}: neither {values[0]} nor {values[1]}"
        return f"{self.name}: none of {_either(values)}"


def _either(values) -> str:
    """``A``, ``A or B``, ``A, B or C``."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


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
        favourable_classes: of a multiclass task, the classes (names in ``classes``) that are the
            favourable outcome, so that fairness can compare groups one-vs-rest: favourable
            means "in this set" (penguin species ``("Adelie", "Gentoo")``). Empty for a binary
            task, whose favourable class is index 1, and for a task without a favourable outcome.
        features: the original columns the model reads, in order (tabular only).
        protected: protected attributes; each names a raw column.
        image_shape: (channels, height, width) for image tasks.
        pixel_range: valid (min, max) of image inputs after preprocessing.
        description: one line shown in reports.
        prohibited: columns that are prohibited bases of a decision (ECOA / Regulation B,
            12 CFR 1002.2(z): race, sex, marital status, age, national origin, …, and their
            proxies); an adverse-action notice may not state one as a reason. Every protected
            attribute is one too (:attr:`prohibited_bases`).
        immutable: feature columns an attacker or applicant cannot change (age). Robustness
            attacks hold them, as they hold the protected attributes.
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
    prohibited: tuple[str, ...] = ()
    immutable: tuple[str, ...] = ()
    favourable_classes: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = [name for name in self.immutable if name not in self.feature_names]
        if unknown:
            raise DataError(f"data set '{self.name}': 'immutable' names {', '.join(map(repr, unknown))}, which is not "
                            f"a feature (features: {', '.join(self.feature_names) or 'none'})")
        _check_favourable_classes(self.name, self.classes, self.favourable_classes)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        return self.n_classes == 2

    @property
    def favourable_indices(self) -> tuple[int, ...]:
        """The class indices that count as the favourable outcome: ``(1,)`` for a binary task,
        the positions of :attr:`favourable_classes` in ``classes`` for a multiclass one (empty
        where it names none, as for digits).

        Example:
            >>> DatasetSpec("penguins", "tabular", "species", ("Adelie", "Chinstrap", "Gentoo"),
            ...             features=(Feature("mass", "numeric"),),
            ...             favourable_classes=("Adelie", "Gentoo")).favourable_indices
            (0, 2)
        """
        if self.is_binary:
            return (1,)
        return tuple(self.classes.index(name) for name in self.favourable_classes)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def prohibited_bases(self) -> list[str]:
        """The declared prohibited bases, then the protected attributes not among them."""
        return list(dict.fromkeys([*self.prohibited, *(p.name for p in self.protected)]))

    def protected_attribute(self, name: str) -> ProtectedAttribute:
        for attribute in self.protected:
            if attribute.name == name:
                return attribute
        known = ", ".join(a.name for a in self.protected) or "none"
        raise DataError(f"data set '{self.name}' has no protected attribute '{name}' (known: {known})")

    def to_dict(self) -> dict:
        data = _jsonable(asdict(self))
        for attribute in data["protected"]:  # written only where set: manifests before it stay as they were
            if attribute["reference"] is None:
                del attribute["reference"]
        if not data["favourable_classes"]:  # likewise: binary and image specs write what they always wrote
            del data["favourable_classes"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSpec:
        """The spec ``to_dict`` wrote; DataError naming the key if ``data`` is not one."""
        _check_spec_dict(data, {f.name for f in fields(cls)})
        data = dict(data)
        data["classes"] = tuple(data["classes"])
        data["features"] = tuple(Feature(**f) for f in data.get("features", ()))
        data["protected"] = tuple(
            ProtectedAttribute(
                name=p["name"],
                privileged_values=tuple(p.get("privileged_values", ())),
                privileged_min=p.get("privileged_min"),
                reference=p.get("reference"),
            )
            for p in data.get("protected", ())
        )
        for key in ("prohibited", "immutable", "favourable_classes"):
            names = data.get(key, [])  # absent from manifests written before it existed
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise DataError(f"data set '{data.get('name')}': '{key}' must be a list of column names, got {names!r}")
            data[key] = tuple(names)
        for key in ("image_shape", "pixel_range"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def _check_spec_dict(data, known: set[str]) -> None:
    """Types and values of a spec read from JSON (a checkpoint manifest, a run folder)."""
    if not isinstance(data, dict):
        raise DataError(f"expected a table of spec keys, got {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(f"unknown key(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(sorted(known))}")
    for key in ("name", "task", "label", "classes"):
        if key not in data:
            raise DataError(f"missing key '{key}'")
    for key in ("name", "label", "description"):
        if not isinstance(data.get(key, ""), str):
            raise DataError(f"'{key}' must be a string, got {data[key]!r}")
    if data["task"] not in ("tabular", "image"):
        raise DataError(f"'task' must be 'tabular' or 'image', got {data['task']!r}")
    classes = data["classes"]
    if not _is_list(classes, str) or len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"'classes' must be a list of two or more distinct class names, got {short_repr(classes)}")
    favourable = data.get("favourable_label")
    if favourable is not None and not isinstance(favourable, (str, int, float, bool)):
        raise DataError(f"'favourable_label' must be a label value, got {favourable!r}")
    chosen = data.get("favourable_classes", [])
    if not _is_list(chosen, str):
        raise DataError(f"'favourable_classes' must be a list of class names, got {short_repr(chosen)}")
    _check_favourable_classes(data["name"], tuple(classes), tuple(chosen))
    if not isinstance(data.get("extra", {}), dict):
        raise DataError(f"'extra' must be a table, got {short_repr(data['extra'])}")
    features = data.get("features", [])
    if not _is_list(features, dict):
        raise DataError(f"'features' must be a list of {{name, kind, integer}} tables, got {short_repr(features)}")
    for i, feature in enumerate(features):
        where = f"'features[{i}]'"
        extra = sorted(set(feature) - {"name", "kind", "integer"})
        if extra or not isinstance(feature.get("name"), str) or feature.get("kind") not in FEATURE_KINDS \
                or not isinstance(feature.get("integer", False), bool):
            raise DataError(f"{where} must be {{name: text, kind: {' / '.join(FEATURE_KINDS)}, integer: true/false}}, "
                            f"got {feature!r}")
    names = [f["name"] for f in features]
    if len(set(names)) != len(names):
        raise DataError(f"'features' names a column twice: {sorted({n for n in names if names.count(n) > 1})}")
    if data["task"] == "tabular" and not features:
        raise DataError("'features' is empty; a tabular data set needs at least one feature")
    protected = data.get("protected", [])
    if not _is_list(protected, dict):
        raise DataError(f"'protected' must be a list of {{name, privileged_values, privileged_min}} tables, "
                        f"got {short_repr(protected)}")
    for i, attribute in enumerate(protected):
        extra = sorted(set(attribute) - {"name", "privileged_values", "privileged_min", "reference"})
        minimum = attribute.get("privileged_min")
        values = attribute.get("privileged_values", [])
        reference = attribute.get("reference")
        if extra or not isinstance(attribute.get("name"), str) or not isinstance(values, list) \
                or not all(isinstance(v, (str, int, float, bool)) for v in values) \
                or not (minimum is None or _is_finite(minimum)) \
                or not (reference is None or isinstance(reference, (str, int, float, bool))):
            raise DataError(f"'protected[{i}]' must be {{name: text, privileged_values: [values] or "
                            f"privileged_min: number or reference: value}}, got {attribute!r}")
    shape = data.get("image_shape")
    if data["task"] == "image" or shape is not None:
        if not _is_list(shape, int) or len(shape) != 3 or any(isinstance(s, bool) or s < 1 for s in shape):
            raise DataError(f"'image_shape' must be [channels, height, width] of positive whole numbers, got {shape!r}")
    pixels = data.get("pixel_range")
    if pixels is not None and (not isinstance(pixels, list) or len(pixels) != 2 or not all(map(_is_finite, pixels))
                               or not pixels[0] < pixels[1]):
        raise DataError(f"'pixel_range' must be [low, high] with low < high, got {pixels!r}")


def _check_favourable_classes(name: str, classes: tuple[str, ...], chosen: tuple[str, ...]) -> None:
    """A multiclass task's favourable set: distinct classes of ``classes``, at least one class
    left out (else every outcome is favourable and no group can be treated worse)."""
    if not chosen:
        return
    where = f"data set '{name}': 'favourable_classes'"
    if len(classes) == 2:
        raise DataError(f"{where} is for a multiclass task; a binary task's favourable class is classes[1] "
                        f"({classes[1]!r})")
    unknown = [c for c in chosen if c not in classes]
    if unknown:
        raise DataError(f"{where} names {', '.join(map(repr, unknown))}, not a class (classes: {', '.join(classes)})")
    if len(set(chosen)) != len(chosen):
        raise DataError(f"{where} names a class twice: {list(chosen)}")
    if len(chosen) == len(classes):
        raise DataError(f"{where} names every class ({', '.join(classes)}); leave at least one unfavourable")


def short_repr(value, width: int = 80) -> str:
    """``repr(value)``, cut to ``width`` characters for an error message."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


_Item = TypeVar("_Item")


def _is_list(value, kind: type[_Item]) -> TypeGuard[list[_Item]]:
    return isinstance(value, list) and all(isinstance(v, kind) for v in value)


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
