"""Global importance and agreement between attribution methods.

Global importance of a feature is its mean absolute attribution over the audited samples,
with a seeded percentile-bootstrap interval over samples. Agreement between two methods is
the Spearman rank correlation of their absolute attributions and the overlap of their top-k
features, per sample and for the global ranking: explanations that disagree across methods
are a finding in themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.stats import rankdata, spearmanr

__all__ = ["Importance", "global_importance", "Agreement", "agreement", "agreement_matrix", "row_spearman"]


@dataclass
class Importance:
    """Mean |attribution| per feature with a bootstrap interval, features in input order."""

    names: list[str]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    confidence: float
    n_boot: int

    def ranked(self) -> list[int]:
        """Feature indices, most important first."""
        return list(np.argsort(-self.mean, kind="stable"))


def global_importance(
    per_feature: np.ndarray, names: list[str], *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Importance:
    """Mean |attribution| per feature over samples, with a percentile bootstrap interval.

    Args:
        per_feature: attributions per feature, (N, F).
        names: the F feature names.
        n_boot: bootstrap resamples of the N samples. Default: 1000
        confidence: interval coverage. Default: 0.95
        seed: bootstrap seed. Default: 0
    """
    magnitude = np.abs(np.asarray(per_feature, dtype=np.float64))
    rng = np.random.default_rng(seed)
    n = len(magnitude)
    boot = np.stack([magnitude[rng.integers(0, n, n)].mean(axis=0) for _ in range(n_boot)])
    alpha = (1 - confidence) / 2
    return Importance(
        names=list(names),
        mean=magnitude.mean(axis=0),
        low=np.quantile(boot, alpha, axis=0),
        high=np.quantile(boot, 1 - alpha, axis=0),
        confidence=confidence,
        n_boot=n_boot,
    )


@dataclass
class Agreement:
    """How far two methods agree: per-sample and global Spearman ρ and top-k overlap."""

    methods: tuple[str, str]
    spearman_per_sample: np.ndarray
    top_k_per_sample: np.ndarray
    spearman_global: float
    top_k_global: float
    k: int

    @property
    def spearman_median(self) -> float:
        return float(np.nanmedian(self.spearman_per_sample))


def row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / denominator, np.nan)


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-values, axis=-1, kind="stable")[..., :k]


def agreement(a: np.ndarray, b: np.ndarray, *, methods: tuple[str, str] = ("a", "b"), k: int = 5) -> Agreement:
    """Agreement of two methods' per-feature attributions, both (N, F), on |attribution|."""
    a, b = np.abs(np.asarray(a, dtype=np.float64)), np.abs(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"attributions of {methods[0]} {a.shape} and {methods[1]} {b.shape} differ in shape")
    k = min(k, a.shape[1])
    top_a, top_b = _top_k(a, k), _top_k(b, k)
    overlap = np.array([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b)])
    global_a, global_b = a.mean(axis=0), b.mean(axis=0)
    rho = spearmanr(global_a, global_b).statistic if a.shape[1] > 1 else np.nan
    return Agreement(
        methods=methods,
        spearman_per_sample=row_spearman(a, b),
        top_k_per_sample=overlap,
        spearman_global=float(rho),
        top_k_global=len(set(_top_k(global_a, k)) & set(_top_k(global_b, k))) / k,
        k=k,
    )


def agreement_matrix(per_feature: dict[str, np.ndarray], *, k: int = 5) -> list[Agreement]:
    """:func:`agreement` for every pair of methods in ``per_feature`` (name → (N, F))."""
    return [agreement(per_feature[m1], per_feature[m2], methods=(m1, m2), k=k) for m1, m2 in combinations(per_feature, 2)]
