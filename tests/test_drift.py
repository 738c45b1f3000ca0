"""Drift statistics (scrutiny.reports.drift): PSI and two-sample KS against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scrutiny.reports import drift

EPS = 1e-4  # written out here, not imported from the code under test


def test_psi_on_deciles_by_hand():
    reference = np.arange(1, 11, dtype=float)  # deciles 1, 2, ..., 9: ten bins of one row each
    compared = np.array([1, 1, 1, 2, 3, 4, 5, 6, 7, 20], dtype=float)
    # bins (-inf,1] (1,2] ... (8,9] (9,inf): compared has 3,1,1,1,1,1,1,0,0,1 rows of 10
    expected = (0.3 - 0.1) * math.log(0.3 / 0.1) + 2 * (EPS - 0.1) * math.log(EPS / 0.1)
    psi, bins = drift.psi_numeric(reference, compared)
    assert psi == pytest.approx(expected, rel=1e-12)
    assert bins == 10
    assert list(drift.decile_edges(reference)) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert drift.psi_numeric(reference, reference)[0] == 0.0


def test_psi_bins_are_right_closed_and_repeated_deciles_merge():
    reference = np.array([0] * 8 + [5, 10], dtype=float)  # 80 % zeros: deciles 0 (x8), 5, 10... -> edges 0, 5
    assert list(drift.decile_edges(reference)) == [0, 5]
    compared = np.array([0, 0, 0, 0, 0, 5, 5, 5, 7, 11], dtype=float)
    # bins (-inf,0] (0,5] (5,inf): reference 0.8, 0.1, 0.1; compared 0.5, 0.3, 0.2
    expected = sum((a - e) * math.log(a / e) for e, a in ((0.8, 0.5), (0.1, 0.3), (0.1, 0.2)))
    psi, bins = drift.psi_numeric(reference, compared)
    assert psi == pytest.approx(expected, rel=1e-12) and bins == 3


def test_missing_values_are_a_bin_of_their_own_and_left_out_of_ks():
    reference = np.array([1, 2, 3, 4, np.nan], dtype=float)
    compared = np.array([1, 2, np.nan, np.nan, np.nan], dtype=float)
    # deciles of 1..4 (inverted CDF at 0.1..0.9 of 4 values): 1, 1, 1, 2, 2, 3, 3, 4, 4 -> edges 1..4;
    # bins (-inf,1] (1,2] (2,3] (3,4] (4,inf) missing: reference .2 .2 .2 .2 0 .2, compared .2 .2 0 0 0 .6
    expected = 2 * (EPS - 0.2) * math.log(EPS / 0.2) + (0.6 - 0.2) * math.log(0.6 / 0.2)
    psi, bins = drift.psi_numeric(reference, compared)
    assert psi == pytest.approx(expected, rel=1e-12) and bins == 5  # the empty (4,inf) bin of both is not counted
    statistic, p = drift.ks_2samp_weighted(reference, compared)
    reference_result = stats.ks_2samp([1, 2, 3, 4], [1, 2])
    assert (statistic, p) == (reference_result.statistic, reference_result.pvalue)


def test_categorical_psi_by_hand():
    reference = ["a", "a", "b", "c"]
    compared = ["a", "b", "b", "d"]
    shares = {"a": (0.5, 0.25), "b": (0.25, 0.5), "c": (0.25, 0.0), "d": (0.0, 0.25)}
    expected = sum((max(a, EPS) - max(e, EPS)) * math.log(max(a, EPS) / max(e, EPS)) for e, a in shares.values())
    psi, bins = drift.psi_categorical(reference, compared)
    assert psi == pytest.approx(expected, rel=1e-12) and bins == 4
    # None is a category of its own (missing)
    psi, bins = drift.psi_categorical(["a", None], ["a", "a"])
    assert bins == 2 and psi == pytest.approx((1 - 0.5) * math.log(2) + (EPS - 0.5) * math.log(EPS / 0.5), rel=1e-12)


def _psi_reference(reference: np.ndarray, compared: np.ndarray) -> float:
    """An independent PSI for samples without empty bins: the symmetrised Kullback–Leibler divergence
    (PSI = KL(a||e) + KL(e||a)), scipy.stats.entropy, over pandas' right-closed bins at numpy's
    inverted-CDF deciles."""
    edges = np.unique(np.percentile(reference, np.arange(10, 100, 10), method="inverted_cdf"))
    cut = [-np.inf, *edges, np.inf]
    e = pd.cut(pd.Series(reference), cut, right=True).value_counts(sort=False, normalize=True).to_numpy()
    a = pd.cut(pd.Series(compared), cut, right=True).value_counts(sort=False, normalize=True).to_numpy()
    assert (e > 0).all() and (a > 0).all()
    return float(stats.entropy(a, e) + stats.entropy(e, a))


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5])
def test_psi_equals_the_symmetrised_kl_divergence_from_scipy(shift):
    rng = np.random.default_rng(0)
    reference, compared = rng.normal(size=4000), rng.normal(loc=shift, size=3000)
    psi, _ = drift.psi_numeric(reference, compared)
    assert psi == pytest.approx(_psi_reference(reference, compared), rel=1e-10)
    if shift == 0.5:
        assert psi > drift.MODERATE_PSI  # a half-sd shift is a real one ...
    if shift == 0.0:
        assert psi < 0.02  # ... two draws of one distribution are not


def test_ks_by_hand_and_against_scipy():
    # ECDF gaps over 1..5: |1/3-0|, |2/3-1/4|, |1-2/4|, |1-3/4|, |1-1| -> 0.5 at 3
    statistic, p = drift.ks_2samp_weighted(np.array([1.0, 2, 3]), np.array([2.0, 3, 4, 5]))
    assert statistic == pytest.approx(0.5, abs=1e-15)
    assert p == pytest.approx(stats.ks_2samp([1, 2, 3], [2, 3, 4, 5]).pvalue, rel=1e-12)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=500), rng.normal(0.2, size=700)
    statistic, p = drift.ks_2samp_weighted(a, b)
    expected = stats.ks_2samp(a, b)
    assert (statistic, p) == (pytest.approx(expected.statistic, abs=0), pytest.approx(expected.pvalue, abs=0))
    assert drift.ks_2samp_weighted(np.array([np.nan]), b) is None


def test_weighted_rows_count_as_the_rows_written_out():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 30, size=200).astype(float), rng.integers(3, 33, size=150).astype(float)
    wa, wb = rng.integers(1, 5, size=200), rng.integers(1, 5, size=150)
    ea, eb = np.repeat(a, wa), np.repeat(b, wb)
    statistic, p = drift.ks_2samp_weighted(a, b, reference_weights=wa, compared_weights=wb)
    expanded = stats.ks_2samp(ea, eb, method="asymp")
    assert statistic == pytest.approx(expanded.statistic, abs=1e-12)
    assert p == pytest.approx(expanded.pvalue, rel=1e-9)
    assert drift.psi_numeric(a, b, reference_weights=wa, compared_weights=wb)[0] == \
        pytest.approx(drift.psi_numeric(ea, eb)[0], rel=1e-12)
    ca, cb = [str(int(v) % 4) for v in a], [str(int(v) % 5) for v in b]
    assert drift.psi_categorical(ca, cb, reference_weights=wa, compared_weights=wb)[0] == pytest.approx(
        drift.psi_categorical(list(np.repeat(ca, wa)), list(np.repeat(cb, wb)))[0], rel=1e-12)


def test_psi_levels_follow_the_conventional_thresholds():
    assert [drift.psi_level(v) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0, None, float("nan"))] == \
        ["none", "none", "moderate", "moderate", "major", "major", "none", "none"]
    assert (drift.MODERATE_PSI, drift.MAJOR_PSI, drift.KS_ALPHA, drift.KS_MIN_STATISTIC, drift.PSI_EPSILON) == \
        (0.1, 0.25, 0.01, 0.1, EPS)


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="weights"):
        drift.psi_numeric(np.ones(3), np.ones(3), reference_weights=np.array([1.0, -1.0, 1.0]))
