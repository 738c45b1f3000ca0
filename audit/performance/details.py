"""What the performance family records beside its findings."""

from __future__ import annotations

from dataclasses import dataclass

from scrutiny.audit.run.details import Details, Estimate, optional

__all__ = ["PerformanceDetails", "DETAILS", "PREDICTIONS"]

PREDICTIONS = "arrays/predictions.npz"  # y_true, y_pred, (where known) proba of every test row; weight: rows per entry (counted rows)


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
