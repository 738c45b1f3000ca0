"""What the performance family records beside its findings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scrutiny.audit.run.details import Details, Estimate, optional

__all__ = ["PerformanceDetails", "DETAILS", "PREDICTIONS", "DATA_PROFILE", "ProfiledFeature", "read_profile"]

PREDICTIONS = "arrays/predictions.npz"  # y_true, y_pred, (where known) proba of every test row; weight: rows per entry (counted rows)
# tables only: each feature of every audited row, in the data set's original units and in the order of
# PREDICTIONS' rows (so its ``weight`` applies to them too), for the drift between runs (scrutiny trend):
#   feature: the feature names, in the data set's order; kind: "numeric", "categorical" or "binary" each;
#   f<i>: feature i's values: float64 for a numeric feature (NaN: missing), else int32 codes (-1: missing)
#   f<i>_categories: the text of each code of a categorical or binary feature (code j is categories[j])
# Arrays are numbered, not named after the features, so that any column name can be stored.
DATA_PROFILE = "arrays/data_profile.npz"


@dataclass(frozen=True)
class ProfiledFeature:
    """One feature of :data:`DATA_PROFILE`: its name, kind, and values (numeric: floats with NaN
    for missing; otherwise the category texts, None for missing), and the array they come from."""

    name: str
    kind: str
    values: np.ndarray | list[str | None]
    array: str

    @property
    def numeric(self) -> bool:
        return self.kind == "numeric"


def read_profile(arrays: dict[str, np.ndarray]) -> list[ProfiledFeature]:
    """The features of a loaded :data:`DATA_PROFILE` (``run.arrays(DATA_PROFILE)``), in stored order.

    Raises:
        ValueError: the arrays do not have the layout above (names the missing or wrong array).
    """
    for key in ("feature", "kind"):
        if key not in arrays:
            raise ValueError(f"no array '{key}'")
    out = []
    for i, (name, kind) in enumerate(zip(arrays["feature"].tolist(), arrays["kind"].tolist())):
        key = f"f{i}"
        if key not in arrays:
            raise ValueError(f"no array '{key}' for feature {name!r}")
        if kind == "numeric":
            out.append(ProfiledFeature(str(name), "numeric", np.asarray(arrays[key], dtype=np.float64), key))
            continue
        if f"{key}_categories" not in arrays:
            raise ValueError(f"no array '{key}_categories' for the {kind} feature {name!r}")
        categories = [str(c) for c in arrays[f"{key}_categories"].tolist()]
        codes = np.asarray(arrays[key])
        if codes.size and (codes.min() < -1 or codes.max() >= len(categories)):
            raise ValueError(f"array '{key}' holds codes outside its {len(categories)} categories")
        out.append(ProfiledFeature(str(name), str(kind), [None if c < 0 else categories[c] for c in codes.tolist()],
                                   key))
    return out


@dataclass
class PerformanceDetails(Details):
    """Performance on the test split.

    Args:
        n: test rows.
        accuracy, balanced_accuracy, calibration_error: estimates with bootstrap intervals (the
            calibration error NaN, written null, for logged predictions without probabilities).
        confidence: the intervals' confidence level.
        classes: the class names, in label order.
        recall: recall of each class.
        confusion: counts, true class (rows) by predicted class (columns).
        majority_rate: share of the most frequent true class.
        roc_auc: two classes only (``None`` when the test split holds one class, or logged
            decisions come without a score).
    """

    n: int
    accuracy: Estimate
    balanced_accuracy: Estimate
    calibration_error: Estimate
    confidence: float
    classes: list[str]
    recall: list[float]
    confusion: list[list[int]]
    majority_rate: float
    roc_auc: float | None = optional()


DETAILS = PerformanceDetails
