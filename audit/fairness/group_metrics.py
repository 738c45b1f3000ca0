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
and lives in :func:`consistency` (aif360's neighbours, exactly, without its quadratic cost in
many dimensions: see :func:`consistency_deviations`). ``tests/test_fairness.py`` checks every value against
aif360 on Adult, German credit and COMPAS.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DATA_METRICS", "MODEL_METRICS", "RATE_ROWS", "NO_DIFFERENCE", "confusion_counts", "metrics_from_counts",
           "bootstrap_counts", "support", "weakest", "consistency", "consistency_deviations", "theil_index"]

UNPRIV, PRIV = 0, 1

DATA_METRICS = ("base_rate_unprivileged", "base_rate_privileged", "statistical_parity_difference", "disparate_impact")
MODEL_METRICS = (
    "selection_rate_unprivileged", "selection_rate_privileged",
    "statistical_parity_difference", "disparate_impact",
    "equal_opportunity_difference", "average_odds_difference", "equalized_odds_difference",
    "predictive_parity_difference", "false_negative_rate_ratio", "false_positive_rate_ratio",
    "accuracy_difference", "theil_index", "accuracy",
)

# the rows each comparison's rates are taken over: None for all a group's rows, else the true label's
RATE_ROWS = {
    "statistical_parity_difference": (None,), "disparate_impact": (None,), "accuracy_difference": (None,),
    "equal_opportunity_difference": (1,), "false_negative_rate_ratio": (1,),
    "false_positive_rate_ratio": (0,),
    "average_odds_difference": (0, 1), "equalized_odds_difference": (0, 1),
}
# the value of each comparison that means equal treatment
NO_DIFFERENCE = {name: (1.0 if name.endswith(("impact", "ratio")) else 0.0) for name in RATE_ROWS}
_AMONG = {None: "", 1: "with the favourable label", 0: "with the unfavourable label"}


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


def support(counts: np.ndarray, metric: str) -> list[tuple[str, str, int, float]]:
    """What ``metric``'s comparison rests on: per group and set of rows its rates are taken over,
    (group, those rows in words, how many, favourable outcomes expected there at the pooled rate).

    The pooled rate is over both groups (favourable predictions; for a data set's counts,
    whose prediction axis repeats the label, favourable labels), so a group the model never
    favours still expects its share."""
    out = []
    for label in RATE_ROWS[metric]:
        cells = counts if label is None else counts[:, label:label + 1, :]   # (group, label, prediction)
        rows = cells.sum(axis=(1, 2))
        rate = cells[:, :, 1].sum() / rows.sum() if rows.sum() else 0.0
        for g, group in ((PRIV, "privileged group"), (UNPRIV, "unprivileged group")):
            out.append((group, _AMONG[label], int(round(rows[g])), float(rows[g] * rate)))
    return out


def weakest(counts: np.ndarray, metric: str, min_rows: int, min_expected_positives: int) -> tuple[str, str, int, float]:
    """The entry of :func:`support` furthest under (or least over) the minimums (a 0 minimum: none)."""
    def margin(entry):
        _, _, rows, expected = entry
        return min(rows / min_rows if min_rows else np.inf,
                   expected / min_expected_positives if min_expected_positives else np.inf)

    return min(support(counts, metric), key=margin)


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


def consistency(features: np.ndarray, y_pred: np.ndarray, n_neighbors: int = 5, *, rows=None) -> float:
    """aif360's ``consistency``: 1 − mean over rows of |ŷ_i − mean ŷ of its k nearest rows| (itself
    included), with aif360's own summation, so that over every row the value is aif360's to the bit.
    ``rows``: the rows to average over (default all; each row's neighbours come from every row)."""
    deviations = consistency_deviations(features, y_pred, n_neighbors, rows=rows)
    return float(1.0 - np.cumsum(deviations)[-1] / len(deviations))  # cumsum adds in order, as aif360's loop


def consistency_deviations(features: np.ndarray, y_pred: np.ndarray, n_neighbors: int = 5, *, rows=None,
                           candidates: tuple[int, ...] = (8, 64)) -> np.ndarray:
    """|ŷ_i − mean ŷ over the k nearest rows of i| for each of ``rows`` (default all), with the
    neighbours aif360 finds: those of scikit-learn's ball tree (itself included), ties between
    equidistant rows broken as it breaks them.

    aif360's ball tree is exact, but over one-hot and standardised columns (20 dimensions and
    more) its search visits most of the table for every row: 150 s for 100,000 rows of 23
    columns, against 29 s by brute force. So the k + ``candidates[0]`` nearest rows of each
    row are found by brute force (one BLAS product per block of rows: O(rows × n)), their
    distances recomputed exactly, and a row is settled when its neighbours are certain:

    - no row outside the candidates can be as close as the k-th (the last candidate's
      distance, less the error bound of brute-force distances, lies beyond it); and
    - the rows at the k-th distance (give or take a margin far above rounding) are all
      chosen (no tie at the edge), or share one prediction (a tie that cannot change the mean).

    The other rows are tried with more candidates; what remains (ties between rows of
    different predictions) is asked of aif360's ball tree itself: the same answer by construction.
    """
    from sklearn.neighbors import NearestNeighbors

    X = np.ascontiguousarray(features, dtype=np.float64)
    y = np.asarray(y_pred, dtype=np.float64).ravel()
    n, k = len(X), int(n_neighbors)
    if not 1 <= k <= n:
        raise ValueError(f"n_neighbors must be between 1 and the number of rows ({n}), got {n_neighbors}")
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    norms = np.einsum("ij,ij->i", X, X)
    scale = norms + norms.max()                      # bounds |x|² + |z|² over the pairs of a query row
    slack = 64 * np.finfo(np.float64).eps * (X.shape[1] + 2) * scale   # |x|² − 2x·z + |z|² vs the exact square
    margin = 1e-9 * np.sqrt(scale)                   # distances this close to the k-th count as tied with it
    deviations = np.full(len(rows), np.nan)
    pending = np.arange(len(rows))
    for extra in candidates:
        width = min(n, k + extra)
        search = NearestNeighbors(n_neighbors=width, algorithm="brute").fit(X)
        block = max(1, 2**22 // (width * max(1, X.shape[1])))
        for start in range(0, len(pending), block):
            chunk = pending[start:start + block]
            query = rows[chunk]
            rough, found = search.kneighbors(X[query])
            exact = np.sqrt(((X[found] - X[query][:, None, :]) ** 2).sum(axis=2))
            order = np.argsort(exact, axis=1, kind="stable")
            exact, found = np.take_along_axis(exact, order, 1), np.take_along_axis(found, order, 1)
            edge = exact[:, k - 1]
            low, high = edge - margin[query], edge + margin[query]
            inside = exact < low[:, None]
            at_edge = ~inside & (exact <= high[:, None])
            labels = y[found]
            edge_ones, edge_rows = (labels * at_edge).sum(axis=1), at_edge.sum(axis=1)
            all_chosen = inside.sum(axis=1) + edge_rows == k
            one_label = (edge_ones == 0) | (edge_ones == edge_rows)
            seen_all = np.ones(len(query), bool) if width == n else rough[:, -1] ** 2 - slack[query] > high ** 2
            settled = seen_all & (all_chosen | one_label)
            total = np.where(all_chosen, (labels * (inside | at_edge)).sum(axis=1),
                             (labels * inside).sum(axis=1) + (k - inside.sum(axis=1)) * (edge_ones > 0))
            deviations[chunk[settled]] = np.abs(y[query[settled]] - total[settled] / k)
        pending = pending[np.isnan(deviations[pending])]
        if not len(pending):
            return deviations
    tree = NearestNeighbors(n_neighbors=k, algorithm="ball_tree").fit(X)
    _, neighbours = tree.kneighbors(X[rows[pending]])
    deviations[pending] = np.abs(y[rows[pending]] - y[neighbours].mean(axis=1))
    return deviations
