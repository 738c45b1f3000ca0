"""Group fairness metrics from confusion counts: aif360's definitions, vectorised.

Every group metric of aif360's ``BinaryLabelDatasetMetric`` and ``ClassificationMetric``
that scrutiny reports depends on the data only through eight counts: rows of each group
(unprivileged, privileged) × true label × predicted label. :func:`confusion_counts` gets
them with one ``bincount``; :func:`metrics_from_counts` turns counts, or a whole stack of
bootstrap resamples of them, into metrics in one pass. A bootstrap of N rows is a
multinomial draw of N over the eight cells, so intervals cost no row resampling at all.

Conventions are aif360's: differences are unprivileged − privileged, ratios unprivileged /
privileged, division by zero gives ``inf``/``nan`` as NumPy does. The Theil index depends on
the counts too (benefit ``b = ŷ − y + 1`` takes three values); consistency (k-NN) does not
and lives in :func:`consistency`. ``tests/test_fairness.py`` checks every value against
aif360 on Adult, German credit and COMPAS.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DATA_METRICS", "MODEL_METRICS", "confusion_counts", "metrics_from_counts", "bootstrap_counts",
           "consistency", "theil_index"]

UNPRIV, PRIV = 0, 1

DATA_METRICS = ("base_rate_unprivileged", "base_rate_privileged", "statistical_parity_difference", "disparate_impact")
MODEL_METRICS = (
    "selection_rate_unprivileged", "selection_rate_privileged",
    "statistical_parity_difference", "disparate_impact",
    "equal_opportunity_difference", "average_odds_difference", "equalized_odds_difference",
    "predictive_parity_difference", "false_negative_rate_ratio", "false_positive_rate_ratio",
    "accuracy_difference", "theil_index", "accuracy",
)


def confusion_counts(y: np.ndarray, y_pred: np.ndarray | None, privileged: np.ndarray,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """Counts (or summed weights) shaped (2 groups, 2 labels, 2 predictions), group 1 = privileged.

    Without predictions (a data set, before any model) the prediction axis repeats the label.
    """
    y = np.asarray(y).astype(np.int64)
    y_pred = y if y_pred is None else np.asarray(y_pred).astype(np.int64)
    cell = np.asarray(privileged).astype(np.int64) * 4 + y * 2 + y_pred
    return np.bincount(cell, weights=weights, minlength=8).reshape(2, 2, 2).astype(np.float64)


def bootstrap_counts(counts: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` resamples of the rows behind ``counts`` (unweighted), as (n_boot, 2, 2, 2) counts."""
    n = int(round(counts.sum()))
    return rng.multinomial(n, counts.ravel() / counts.sum(), size=n_boot).reshape(n_boot, 2, 2, 2).astype(np.float64)


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.true_divide(a, b)


def theil_index(counts: np.ndarray) -> np.ndarray:
    """aif360's ``theil_index``: generalised entropy (α = 1) of the benefit b = ŷ − y + 1 over all rows."""
    cells = counts.sum(axis=-3)                                    # (..., y, ŷ)
    n_b = np.stack([cells[..., 1, 0], cells[..., 0, 0] + cells[..., 1, 1], cells[..., 0, 1]], axis=-1)  # b = 0, 1, 2
    n = n_b.sum(axis=-1)
    mu = _div(n_b[..., 1] + 2 * n_b[..., 2], n)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = n_b[..., 1] * (1 / mu) * np.log(1 / mu) + n_b[..., 2] * (2 / mu) * np.log(2 / mu)
    return _div(terms, n)


def metrics_from_counts(counts: np.ndarray, *, model: bool = True) -> dict[str, np.ndarray]:
    """Metrics of (…, 2, 2, 2) counts; leading axes (bootstrap resamples) are kept.

    ``model=False`` gives the data-set metrics (base rates of the true label).
    """
    n = counts.sum(axis=(-2, -1))                     # (..., group)
    positives = counts[..., 1, :].sum(axis=-1)        # true label favourable
    if not model:
        base = _div(positives, n)
        return {
            "base_rate_unprivileged": base[..., UNPRIV], "base_rate_privileged": base[..., PRIV],
            "statistical_parity_difference": base[..., UNPRIV] - base[..., PRIV],
            "disparate_impact": _div(base[..., UNPRIV], base[..., PRIV]),
        }
    tp, fn = counts[..., 1, 1], counts[..., 1, 0]
    fp, tn = counts[..., 0, 1], counts[..., 0, 0]
    selection = _div(tp + fp, n)
    tpr, fpr = _div(tp, tp + fn), _div(fp, fp + tn)
    fnr, ppv = _div(fn, tp + fn), _div(tp, tp + fp)
    accuracy = _div(tp + tn, n)

    def diff(rate):
        return rate[..., UNPRIV] - rate[..., PRIV]

    def ratio(rate):
        return _div(rate[..., UNPRIV], rate[..., PRIV])

    return {
        "selection_rate_unprivileged": selection[..., UNPRIV], "selection_rate_privileged": selection[..., PRIV],
        "statistical_parity_difference": diff(selection),
        "disparate_impact": ratio(selection),
        "equal_opportunity_difference": diff(tpr),
        "average_odds_difference": 0.5 * (diff(fpr) + diff(tpr)),
        "equalized_odds_difference": np.maximum(np.abs(diff(fpr)), np.abs(diff(tpr))),
        "predictive_parity_difference": diff(ppv),
        "false_negative_rate_ratio": ratio(fnr),
        "false_positive_rate_ratio": ratio(fpr),
        "accuracy_difference": diff(accuracy),
        "theil_index": theil_index(counts),
        "accuracy": _div((tp + tn).sum(axis=-1), n.sum(axis=-1)),
    }


def consistency(features: np.ndarray, y_pred: np.ndarray, n_neighbors: int = 5, *, search: str = "ball_tree") -> np.ndarray:
    """Per-row terms of aif360's ``consistency``: 1 − |ŷ_i − mean ŷ over its k nearest rows
    (itself included)|. With aif360's ball-tree search their mean is aif360's value;
    ``search="brute"`` is some 35 times faster on Adult's test split but breaks ties between
    equidistant rows (common in one-hot tables) differently, so it can differ from aif360 in
    the third decimal."""
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=n_neighbors, algorithm=search).fit(features)
    _, neighbours = search.kneighbors(features)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return 1.0 - np.abs(y_pred - y_pred[neighbours].mean(axis=1))
