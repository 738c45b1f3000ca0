"""Drift between two samples of one quantity: population stability index and two-sample Kolmogorov–Smirnov.

The trend report (:mod:`scrutiny.reports.trend`) compares each run's audited rows with an
earlier run's: every feature of a table (from the runs' ``arrays/data_profile.npz``) and the
model's score (from ``arrays/predictions.npz``). The earlier run is the *reference*.

**PSI** (population stability index) ``= Σ_b (a_b − e_b) · ln(a_b / e_b)`` over bins ``b``,
``e_b`` the reference's share of rows in the bin and ``a_b`` the compared sample's.

- Numeric values: ten bins cut at the reference's deciles (:func:`decile_edges`: the
  inverted-CDF quantiles at 0.1, …, 0.9, so every edge is a reference value; bins are right-closed,
  ``(edge_{i−1}, edge_i]``, the first open below and the last open above). Repeated edges (a
  value held by more than a tenth of the rows, such as Adult's capital-gain 0) merge, so such a
  feature has fewer bins. Missing values (NaN) are a bin of their own.
- Categories: one bin per category of either sample; missing values (None) are a category of
  their own.
- A share of 0 (a bin one sample leaves empty) would make the logarithm infinite: each share
  is floored at :data:`PSI_EPSILON` (1e-4, one row in ten thousand) before the sum, and the
  shares are not renormalised. A category present in one sample only thus adds
  ``≈ a · ln(a / 1e-4)``.

Conventional reading (credit-scoring practice, e.g. Siddiqi, *Credit Risk Scorecards*, 2006):
below :data:`MODERATE_PSI` (0.1) no significant shift; from 0.1 a moderate shift, worth a
look; from :data:`MAJOR_PSI` (0.25) a major shift.

**KS**: the largest gap between the two samples' empirical distribution functions, and its
p-value, as :func:`scipy.stats.ks_2samp` gives them (two-sided; its default method: exact for
small samples, else asymptotic; scipy falls back to the asymptotic p-value, quietly here, where the
exact one cannot be computed). Numeric values only (an order of unordered categories
means nothing); missing values are left out. At the sizes of a test split even a negligible
shift is significant, so the trend report's alert needs both ``p <`` :data:`KS_ALPHA` (0.01)
and a statistic of at least :data:`KS_MIN_STATISTIC` (0.1: ten points of the distribution
function). On ties (integer features) the KS test is conservative.

**Weights.** A run of logged decisions read from Parquet keeps its distinct rows with counts
(``weight`` in ``predictions.npz``). Each row then counts ``weight`` times everywhere: in the
shares and deciles of the PSI, and in the distribution functions of the KS statistic, which
equals that of the rows written out one by one. Its p-value is then scipy's asymptotic one
(``scipy.stats.kstwo`` at the rounded effective size ``m·n/(m+n)``, as ``ks_2samp(...,
method="asymp")`` computes it for the rows written out).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["PSI_EPSILON", "MODERATE_PSI", "MAJOR_PSI", "KS_ALPHA", "KS_MIN_STATISTIC", "DECILES", "Drift",
           "decile_edges", "psi_from_shares", "psi_numeric", "psi_categorical", "ks_2samp_weighted", "numeric_drift",
           "categorical_drift", "psi_level"]

PSI_EPSILON = 1e-4
MODERATE_PSI = 0.1
MAJOR_PSI = 0.25
KS_ALPHA = 0.01
KS_MIN_STATISTIC = 0.1
DECILES = np.arange(1, 10) / 10


@dataclass(frozen=True)
class Drift:
    """Drift of one quantity from a reference sample to a compared one.

    Args:
        psi: the population stability index.
        bins: bins (numeric) or categories the PSI summed over.
        ks, ks_p: the KS statistic and its p-value; None for categories, or where a sample has
            no values.
    """

    psi: float
    bins: int
    ks: float | None = None
    ks_p: float | None = None


def _weights(values: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return np.ones(len(values))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(values),) or (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError(f"weights: expected {len(values)} finite counts >= 0, got shape {weights.shape}")
    return weights


def decile_edges(reference: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The reference's deciles (inverted-CDF: each is the smallest value whose share of rows at or
    below it reaches 0.1, …, 0.9), repeats merged; NaN left out. Empty for no values."""
    values = np.asarray(reference, dtype=np.float64)
    w = _weights(values, weights)
    keep = ~np.isnan(values) & (w > 0)
    if not keep.any():
        return np.empty(0)
    return np.unique(np.quantile(values[keep], DECILES, method="inverted_cdf", weights=w[keep]))


def psi_from_shares(expected: np.ndarray, actual: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """``Σ (a − e) ln(a / e)`` with each share floored at ``epsilon``."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def _numeric_shares(values: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of the rows in each of ``len(edges) + 1`` right-closed bins, then the missing bin."""
    missing = np.isnan(values)
    bins = np.where(missing, len(edges) + 1, np.searchsorted(edges, np.where(missing, 0.0, values), side="left"))
    counts = np.bincount(bins, weights=weights, minlength=len(edges) + 2)
    total = weights.sum()
    return counts / total if total > 0 else counts


def psi_numeric(reference: np.ndarray, compared: np.ndarray, *, reference_weights: np.ndarray | None = None,
                compared_weights: np.ndarray | None = None) -> tuple[float, int]:
    """PSI over the reference's decile bins (and a bin of missing values); (psi, bins used)."""
    ref = np.asarray(reference, dtype=np.float64)
    cmp = np.asarray(compared, dtype=np.float64)
    w_ref, w_cmp = _weights(ref, reference_weights), _weights(cmp, compared_weights)
    edges = decile_edges(ref, w_ref)
    e, a = _numeric_shares(ref, w_ref, edges), _numeric_shares(cmp, w_cmp, edges)
    used = (e > 0) | (a > 0)
    return psi_from_shares(e[used], a[used]), int(used.sum())


def psi_categorical(reference, compared, *, reference_weights: np.ndarray | None = None,
                    compared_weights: np.ndarray | None = None) -> tuple[float, int]:
    """PSI over the categories of either sample (values compared as text; None is missing)."""
    ref = ["\0missing" if v is None else str(v) for v in reference]
    cmp = ["\0missing" if v is None else str(v) for v in compared]
    w_ref, w_cmp = _weights(np.asarray(ref), reference_weights), _weights(np.asarray(cmp), compared_weights)
    categories = sorted(set(ref) | set(cmp))
    index = {c: i for i, c in enumerate(categories)}

    def shares(values: list[str], w: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.array([index[v] for v in values], dtype=np.int64), weights=w,
                             minlength=len(categories))
        return counts / w.sum() if w.sum() > 0 else counts

    return psi_from_shares(shares(ref, w_ref), shares(cmp, w_cmp)), len(categories)


def ks_2samp_weighted(reference: np.ndarray, compared: np.ndarray, *, reference_weights: np.ndarray | None = None,
                      compared_weights: np.ndarray | None = None) -> tuple[float, float] | None:
    """The two-sided two-sample KS statistic and p-value, NaN left out; None when a sample is empty.

    Without weights: :func:`scipy.stats.ks_2samp` itself. With counts: the statistic of the rows
    written out (weighted distribution functions), the p-value scipy's asymptotic one."""
    from scipy import stats

    ref = np.asarray(reference, dtype=np.float64)
    cmp = np.asarray(compared, dtype=np.float64)
    w_ref, w_cmp = _weights(ref, reference_weights), _weights(cmp, compared_weights)
    keep_ref, keep_cmp = ~np.isnan(ref), ~np.isnan(cmp)
    ref, w_ref, cmp, w_cmp = ref[keep_ref], w_ref[keep_ref], cmp[keep_cmp], w_cmp[keep_cmp]
    m, n = w_ref.sum(), w_cmp.sum()
    if m <= 0 or n <= 0:
        return None
    if reference_weights is None and compared_weights is None:
        with warnings.catch_warnings():  # with ties, scipy's exact method may fall back to the asymptotic one
            warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful", category=RuntimeWarning)
            result = stats.ks_2samp(ref, cmp)
        return float(result.statistic), float(result.pvalue)
    pooled = np.unique(np.concatenate([ref, cmp]))

    def cdf(values: np.ndarray, w: np.ndarray) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        cumulative = np.concatenate([[0.0], np.cumsum(w[order])])
        return cumulative[np.searchsorted(values[order], pooled, side="right")] / w.sum()

    statistic = float(np.max(np.abs(cdf(ref, w_ref) - cdf(cmp, w_cmp))))
    big, small = max(m, n), min(m, n)
    p = float(stats.kstwo.sf(statistic, np.round(big * small / (big + small))))
    return statistic, min(max(p, 0.0), 1.0)


def numeric_drift(reference: np.ndarray, compared: np.ndarray, *, reference_weights: np.ndarray | None = None,
                  compared_weights: np.ndarray | None = None) -> Drift:
    """PSI over decile bins and the KS test, for numeric values (NaN: missing)."""
    psi, bins = psi_numeric(reference, compared, reference_weights=reference_weights,
                            compared_weights=compared_weights)
    ks = ks_2samp_weighted(reference, compared, reference_weights=reference_weights, compared_weights=compared_weights)
    return Drift(psi=psi, bins=bins, ks=None if ks is None else ks[0], ks_p=None if ks is None else ks[1])


def categorical_drift(reference, compared, *, reference_weights: np.ndarray | None = None,
                      compared_weights: np.ndarray | None = None) -> Drift:
    """PSI over categories (no KS: categories have no order)."""
    psi, bins = psi_categorical(reference, compared, reference_weights=reference_weights,
                                compared_weights=compared_weights)
    return Drift(psi=psi, bins=bins)


def psi_level(psi: float | None) -> str:
    """``major`` (≥ 0.25), ``moderate`` (≥ 0.1) or ``none``; ``none`` for a missing value."""
    if psi is None or not math.isfinite(psi):
        return "none"
    return "major" if psi >= MAJOR_PSI else ("moderate" if psi >= MODERATE_PSI else "none")
