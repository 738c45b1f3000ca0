"""A decision-threshold what-if from a run's stored probabilities: what the report's remediation
(:mod:`scrutiny.reports.remediation`) and the app's Fairness page both compute, in one place.

The audited binary model decides favourable where P(favourable) (``proba[:, 1]``) is above 0.5
(the argmax). A what-if moves that threshold, for everyone or for the compared group only, and
recounts the rows of each group of one comparison (``arrays/fairness_groups.npz``'s ``model_<i>``:
1 the reference group, 0 the compared group, -1 neither). At 0.5 for both groups the decisions are
the audited ones, so every figure equals the audited figure. Vectorised: one comparison of a million
rows takes a few milliseconds.
"""

from __future__ import annotations

import numpy as np

from scrutiny.audit.fairness.group_metrics import confusion_counts

__all__ = ["decide", "whatif_counts", "whatif_values"]


def decide(score: np.ndarray, code: np.ndarray, reference: float, compared: float) -> np.ndarray:
    """Favourable (True) where ``score`` is above the threshold of the row's group: ``compared`` for
    the compared group (code 0), ``reference`` for the reference group and rows in neither."""
    return score > np.where(code == 0, compared, reference)


def whatif_counts(score: np.ndarray, y: np.ndarray, w: np.ndarray | None, code: np.ndarray, reference: float,
                  compared: float) -> np.ndarray:
    """Counts (summed ``w``, rows per entry; None: one each) of the two groups' rows at these thresholds,
    shaped (group, true label, decision) with group 1 the reference, as
    :func:`scrutiny.audit.fairness.group_metrics.confusion_counts` shapes the audit's."""
    decided = decide(score, code, reference, compared)
    rows = (code == 0) | (code == 1)
    return confusion_counts(y[rows], decided[rows], code[rows], None if w is None else w[rows])


def whatif_values(score, y, w, code, reference: float, compared: float) -> dict[str, float]:
    """The two groups' selection rates, disparate impact (compared / reference), equal opportunity
    difference (compared − reference true-positive rate) and accuracy over every row, at these thresholds."""
    decided = decide(score, code, reference, compared)
    out = {}
    sel = {}
    tpr = {}
    for g, side in ((1, "reference"), (0, "compared")):
        rows = code == g
        sel[side] = float(w[rows] @ decided[rows] / w[rows].sum())
        positive = rows & (y == 1)
        tpr[side] = float(w[positive] @ decided[positive] / w[positive].sum()) if w[positive].sum() else float("nan")
        out[f"selection_rate_{side}"] = sel[side]
    out["disparate_impact"] = sel["compared"] / sel["reference"] if sel["reference"] > 0 else float("nan")
    out["equal_opportunity_difference"] = tpr["compared"] - tpr["reference"]
    out["accuracy"] = float(w @ (decided.astype(np.int64) == y) / w.sum())
    return out
