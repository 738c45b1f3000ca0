"""Batched KernelSHAP: shap's KernelExplainer estimator and a leverage-score estimator,
vectorised across samples, with an estimate of their sampling error.

shap's ``KernelExplainer`` explains one row at a time: it builds a coalition design (which
features are "present", with Shapley-kernel weights), evaluates the model on each coalition
with absent features taken from every background row, and solves a weighted least-squares
problem constrained so that the values add up to f(x) − E f(background). The design does not
depend on the row, so here one design serves every row: the model sees all rows' coalitions
in large batches and one linear solve answers every row at once. Three estimators
(``estimator``), sharing the solve and the bootstrap:

- ``"stock"``, shap's: with a budget of ``nsamples`` coalitions (shap's default 2M + 2048),
  subset sizes are enumerated completely, smallest and largest first, while the budget allows;
  the rest are sampled with replacement by the Shapley kernel's size distribution, each with
  its complement, a repeated coalition adding weight. Same coalitions and values as shap's for
  a seed (``tests/test_kernel_shap.py``).
- ``"leverage"``: paired leverage-score sampling without replacement (Musco & Witter,
  "Provably Accurate Shapley Value Estimation via Leverage Score Sampling", ICLR 2025). The
  leverage scores of the Shapley-kernel regression are 1/C(M, k), equal mass per size, so every
  size gets the same number of coalitions (water-filled: a size whose every coalition fits in
  its share is enumerated); within a size, distinct coalitions are drawn uniformly without
  replacement, each with its complement; a coalition's weight is its kernel weight divided by
  its inclusion probability, so every size keeps exactly its kernel mass. Measured against
  exact Shapley values at the same number of model evaluations, on seeded MLP-like models with
  M = 12 and 16 and budgets of 100 to 2M + 2048: mean absolute error 1.1–1.9 times lower than
  stock (1.6–1.9 at M = 12, 2M + 2048; 1.1–1.2 at M = 16), never higher. The gain is modest
  because shap's sampler already pairs coalitions and enumerates the smallest sizes (pairing
  alone makes KernelSHAP exact for games with interactions of order 2); the 5–10× reported in
  the literature is against unpaired sampling with replacement. ``bench/attributions.py --part
  estimators`` prints the curve against shap itself.

- ``"per_background"`` (``attribute``'s default): the Shapley values of
  v(S) = mean_b f(x_S, b_¬S) are the mean over the background rows b of those of the
  single-baseline games v_b(S) = f(x_S, b_¬S), and in v_b a feature on which x and b agree is a
  null player: adding it leaves the model input as it was, so every coalition that differs from
  another only in such features is the same model evaluation. Each (row, background row) pair
  is a game of its m_b differing features alone, evaluated on the leverage design over m_b
  players with up to ``nsamples`` coalitions, enumerated whole where 2^m_b − 2 fits (then the
  regression gives its exact values with fewer model evaluations); the design's players are
  mapped to the differing features in an order drawn per pair, so pairs sharing a design do not
  share its errors. The model evaluations are at most those of the others (``nsamples`` per
  background row), fewer wherever a pair is enumerated. Where a pair's game is sampled, its
  values are not the regression's but the posterior mean under a prior on the game's Walsh
  (Fourier) coefficients:

  * write v(S) = Σ_T b_T χ_T(S) with χ_T(S) = (−1)^|S ∩ T|. The Shapley value of χ_T is −2/|T|
    for each player of T when |T| is odd and 0 when it is even, so the values depend only on
    the odd part (v(S) − v(N∖S)) / 2, which each drawn pair of a coalition and its complement
    gives once (the empty coalition gives −Δ/2, Δ = f(x) − f(b));
  * the prior: the b_T independent, mean 0, variance θ · r^((k−1)/2) / C(m, k) for |T| = k
    odd, so each odd order's total variance is r times the previous one's. On the German MLP's
    games order 1 holds about 80 % of the variance, order 3 2–5 %, order 5 about 0.5 %; the
    paired regression is the limit r → 0, and its error comes from orders 3, 5, … which this
    prior lets the data speak for instead of ignoring;
  * the covariance of two coalitions depends only on how many players they differ in (a sum of
    Krawtchouk polynomials), so one kernel matrix, factored once, serves every pair sharing a
    design; θ is its maximum-likelihood value per pair and r, per pair, the candidate of
    ``PRIOR_DECAYS`` with the largest marginal likelihood (one fixed decay, 0.15, was as accurate
    on German but doubled the error of a 12-feature continuous MLP at 48 coalitions);
  * the posterior mean's Shapley values are a linear map of the pair's observations; they add
    up to Δ (the empty coalition is observed; the nugget's round-off is put back equally); the
    posterior covariance gives the sampling error (below). ``tests/test_kernel_shap_estimators.py``
    checks both against the posterior built from all 2^m Walsh characters as explicit
    regressors, with the Shapley values of its mean game by enumeration.

  Its cost is a Cholesky factorisation per design size and candidate decay and one (n × n)
  triangular solve per pair (n: the design's pairs), no model evaluation; designs of more than
  ``POSTERIOR_MAX_PAIRS`` pairs (budgets over 4,200 coalitions: the third doubling of the
  target-error budget and beyond) are solved by the regression with the bootstrap, and so are
  designs of fewer than ``POSTERIOR_MIN_PAIRS`` pairs per player: from so few observations the
  decay and the scale are poorly determined and the posterior understated the error (on a
  12-feature ReLU MLP with continuous features, at 28 coalitions the true error was a median
  1.4 times the estimate, against 1.07 at 48 and 1.04 at 100). Tables with categorical or discrete features gain most from the
  decomposition; where every feature differs (continuous data, image patches against a mean
  baseline) the prior still applies to each background row's game. Measured with
  ``bench/attributions.py --part estimators`` against exact Shapley values (20 test rows, 10
  background rows, 3 seeds, log-odds of the predicted class), on the German credit MLP
  (M = 20; a row and a background row differ in 7–19 features, median 12) at shap's default
  nsamples = 2M + 2048 = 2088: mean absolute error 6.04e-4 against 3.21e-3 for shap's
  ``KernelExplainer(l1_reg=False)`` (5.3× lower, with 17,531 model evaluations per row against
  its 20,881), 3.25e-3 for ``"stock"`` and 2.90e-3 for ``"leverage"``; the same pairs solved by
  the regression gave 1.16e-3. It reaches shap's error at about 3,700 evaluations per row (5.7×
  fewer; 0.6 s for the 20 rows against shap's 1.7 s on this machine's CPU); at 2088 it takes
  3.6 s, the posterior's factorisations included. Past the posterior's reach (below) the
  regression takes over: 3.70e-4 at nsamples 8192 against the posterior's 2.97e-4 at 4096. Two alternatives measured on the same games did no better: a
  prior with its own decay after order 3 (5.8e-4 against 5.7e-4 on 2 seeds) and designs with
  more coalitions of middle sizes than the leverage design (5.7e-4 to 9.9e-4); third-order
  terms in each pair's regression (PolySHAP, Fumagalli et al. 2025) lowered the regression's
  error only 1.28×.

As shap's ``KernelExplainer`` does, ``"stock"`` and ``"leverage"`` leave out, row by row, the
features on which the row equals every background row (null players, value 0: Adult's capital
gain is 0 in most rows and most background samples) and solve the game of the others, with the
design for that many players; rows with the same number share one design and one solve.

With any of them, when the budget covers all 2^M − 2 coalitions the result is the exact Shapley
value (interventional, over the background rows), as shap's is; the tests check both against
exact enumeration to 1e-8.

Sampling error. The constraint makes the values add up to f(x) − E f whatever the draws, so
additivity says nothing about accuracy; what can be wrong is how far the sampled coalitions
leave each value from the exact Shapley value. That is estimated without a single extra model
evaluation, by a bootstrap over the draws: each replicate resamples the sampler's draws (a
coalition with its complement, as drawn) with replacement, reweights the coalitions already
evaluated by how often the replicate took them, and solves the same constrained regression;
the enumerated sizes are not random and keep their weights. For the leverage design the
resampling is stratified as the draws were: each size class's pairs are resampled within the
class, so each class keeps its weight (a pooled bootstrap would move weight between sizes,
which the design fixes). The error of a row is the mean
over replicates of the largest distance, over features, between the replicate's values and
the estimate: a bootstrap estimate of E max_j |φ̂_j − φ_j|. When no coalition was sampled
(every size enumerated, e.g. 2^M − 2 ≤ budget, or a single feature) the values are the exact
Shapley values and the error is 0 by definition, not by computation.

Why this estimator. Measured against exact Shapley values (enumeration): on small models with
interactions (M = 8–11, 60 rows, 3 seeds) the median true largest error was 0.87–1.18 times
this estimate from 40–80 coalitions up, and on the Adult MLP (M = 13, 40 rows) 0.91–1.09 times
it from 100 coalitions to shap's default 2074; row by row the two follow each other (Spearman
0.71–0.86). At budgets near 2M–3M it overstates the error 1.5–2.6×, the safe side. Two
alternatives did worse on the same models: the per-feature bootstrap standard error, largest
over features, understates the largest error 1.3–1.7× (the largest of M errors exceeds the
largest standard deviation); the spread of two independent halves of the draws,
|φ_A − φ_B| / 2, is calibrated in the median but is one difference per row, so it follows the
row's true error less closely (Spearman 0.52–0.73 where the bootstrap had 0.71–0.85). The 64
replicates cost a matrix product and 64 eigendecompositions of (M − 1)-square matrices, no
model evaluation: 0.04–0.15 s for 200 Adult rows at the default budget, next to 54 s of model
evaluations (0.1–0.3 %). For the leverage estimator (``tests/test_kernel_shap_estimators.py``,
M = 14, 60 rows, 2 seeds, budgets 100 to 2M + 2048) the median true/estimated largest error was
0.77–1.01, and the true error lay within a factor 2 of the estimate, either way, for 93–98 % of
rows. For ``"per_background"`` the error comes from the posterior instead: a row's values
are the mean of its pairs', so their posterior covariance is the sum over its sampled pairs of
θ times the pair's posterior covariance, over K², and the row's error is E max_j |e_j| under
that normal, averaged over 64 draws (the same standard normals for every row; pairs solved by
the regression add their bootstrap deviations). It can fail: it trusts the prior's shape. On the
German MLP's games at the default budget the true largest error lay within a factor 2 of it for
98 % of rows (``bench/attributions.py``, 3 seeds); on seeded models with half the features discrete
(``tests/test_kernel_shap_estimators.py``, M = 14, 40 rows, budgets 100 and 1000) for at least
90 % of rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from itertools import combinations
from math import comb

import numpy as np
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dpotrf

__all__ = ["ESTIMATORS", "MAX_DOUBLINGS", "TARGET_ERROR", "KernelShap", "coalition_design", "kernel_shap",
           "refinable"]

N_BOOT = 64
TARGET_ERROR = 0.02   # attribute()'s default budget: a row estimated above this share of its largest value ...
MAX_DOUBLINGS = 3     # ... is explained again with twice the coalitions, up to this many times (8x)
ESTIMATORS = ("leverage", "per_background", "stock")
PRIOR_DECAYS = (0.01, 0.05, 0.15, 0.5)  # per_background: the Walsh prior's candidate decays
POSTERIOR_MIN_PAIRS = 2     # per_background: designs under this many pairs per player ...
POSTERIOR_MAX_PAIRS = 2100  # ... or over this many (4,200 coalitions) are solved by the regression


@dataclass(frozen=True)
class KernelShap:
    """KernelSHAP values of N rows over M features.

    Attributes:
        values: (N, M), adding up to ``fx − expected`` per row.
        fx: f(x) of each row's target, (N,).
        expected: E f(background) of each row's target, (N,).
        sampling_error: (N,), the bootstrap estimate of the largest error over features
            (module docstring), in the units of ``values``; 0 where every coalition was
            enumerated.
        coalitions: how many coalitions the model was evaluated on, per row (``"per_background"``:
            at most, per background row; a pair enumerated whole takes fewer).
        exact: whether every coalition of the M features was enumerated (the values are exact
            Shapley values). ``"per_background"`` also gives exact values, with sampling error 0,
            for rows whose every pair was enumerated; this flag does not depend on the rows.
    """

    values: np.ndarray
    fx: np.ndarray
    expected: np.ndarray
    sampling_error: np.ndarray
    coalitions: int
    exact: bool


@dataclass(frozen=True)
class _Design:
    masks: np.ndarray      # (S, M) coalitions as 0/1 rows: first the enumerated sizes, then the sampled ones
    weights: np.ndarray    # (S,) kernel weights, summing to 1
    n_enumerated: int      # rows of ``masks`` from enumerated sizes
    draws: np.ndarray      # (n_draws, 2) rows of ``masks`` each sampler draw added weight to; -1: none
    strata: np.ndarray | None = None  # leverage: (n_draws,) size class of each draw; stock: None (one pool)


def coalition_design(n_features: int, nsamples: int | None = None, seed: int = 0, *,
                     estimator: str = "stock") -> tuple[np.ndarray, np.ndarray]:
    """Coalitions (S, M) as 0/1 rows and their regression weights (S,), summing to 1.

    Args:
        n_features: M, the number of players.
        nsamples: coalition budget. Default: shap's ``2 * M + 2048``.
        seed: seeds the sampled part.
        estimator: ``"stock"`` (shap's design) or ``"leverage"`` (module docstring).
            Default: "stock"
    """
    design = _design(n_features, nsamples, seed, estimator)
    return design.masks, design.weights


def _design(m: int, nsamples: int | None, seed: int, estimator: str = "stock") -> _Design:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
    if estimator in ("leverage", "per_background"):  # per_background: this design over each pair's differing features
        return _leverage_design(m, nsamples, seed)
    return _stock_design(m, nsamples, seed)


def _budget(m: int, nsamples: int | None) -> int:
    return min(nsamples or 2 * m + 2048, 2**m - 2 if m <= 30 else 2**30)


def _stock_design(m: int, nsamples: int | None, seed: int) -> _Design:
    budget = _budget(m, nsamples)
    sizes = int(np.ceil((m - 1) / 2))
    paired = int(np.floor((m - 1) / 2))
    size_weight = np.array([(m - 1) / (k * (m - k)) for k in range(1, sizes + 1)])
    size_weight[:paired] *= 2  # size k and its complement size m − k
    size_weight /= size_weight.sum()

    masks, weights = [], []
    left, remaining = budget, size_weight.copy()
    full = 0
    for k in range(1, sizes + 1):
        count = comb(m, k) * (2 if k <= paired else 1)
        if left * remaining[k - 1] / count < 1 - 1e-8:
            break
        full += 1
        left -= count
        if remaining[k - 1] < 1:
            remaining /= 1 - remaining[k - 1]
        w = size_weight[k - 1] / comb(m, k) / (2 if k <= paired else 1)
        for players in combinations(range(m), k):
            mask = np.zeros(m)
            mask[list(players)] = 1
            masks.append(mask)
            weights.append(w)
            if k <= paired:
                masks.append(1 - mask)
                weights.append(w)

    enumerated = len(masks)
    draws: list[list[int]] = []
    if full < sizes and left > 0:
        rng = np.random.default_rng(seed)
        draw_weight = size_weight.copy()
        draw_weight[:paired] /= 2  # each draw adds a coalition and its complement
        draw_weight = draw_weight[full:] / draw_weight[full:].sum()
        sampled: dict[bytes, int] = {}
        sampled_masks: list[np.ndarray] = []
        sampled_counts: list[float] = []
        while left > 0:
            k = full + 1 + rng.choice(len(draw_weight), p=draw_weight)
            mask = np.zeros(m)
            mask[rng.permutation(m)[:k]] = 1
            took = [-1, -1]
            for slot, candidate in enumerate((mask, 1 - mask) if k <= paired else (mask,)):
                key = candidate.tobytes()
                if key in sampled:
                    sampled_counts[sampled[key]] += 1
                elif left > 0:
                    sampled[key] = len(sampled_masks)
                    sampled_masks.append(candidate)
                    sampled_counts.append(1.0)
                    left -= 1
                else:
                    continue
                took[slot] = enumerated + sampled[key]
            draws.append(took)
        fixed_weight = float(np.sum(weights)) if weights else 0.0
        counts = np.asarray(sampled_counts)
        masks += sampled_masks
        weights += list(counts / counts.sum() * (1 - fixed_weight))
    return _Design(masks=np.asarray(masks, dtype=np.float64), weights=np.asarray(weights, dtype=np.float64),
                   n_enumerated=enumerated, draws=np.asarray(draws, dtype=np.int64).reshape(-1, 2))


def _leverage_design(m: int, nsamples: int | None, seed: int) -> _Design:
    """Paired leverage-score sampling without replacement (Musco & Witter 2025), stratified by size.

    A draw ("unit") is a coalition with its complement. Size class k < M/2 holds the C(M, k)
    pairs of sizes k and M − k, class M/2 (M even) the C(M, M/2)/2 pairs of that size. The
    leverage scores of the Shapley-kernel regression are 1/C(M, k): equal mass per size, so the
    budget gives every size the same number of coalitions, water-filled: a class whose every
    pair fits within its share is enumerated and the rest shared again. The units of a sampled
    class are distinct pairs drawn uniformly without replacement; each coalition's weight is its
    kernel weight divided by its inclusion probability (count of its size drawn / C(M, k)), so
    the sampled normal equations are unbiased for the full ones and, class by class, exact where
    enumerated. An odd budget spends one coalition less (coalitions come in pairs)."""
    budget = _budget(m, nsamples)
    classes = list(range(1, m // 2 + 1))
    capacity = {k: comb(m, k) // (2 if 2 * k == m else 1) for k in classes}   # units (pairs) in the class
    share = {k: 0.5 if 2 * k == m else 1.0 for k in classes}                   # units per coalition of one size
    units_left = max(1, budget // 2)
    enumerated_classes: list[int] = []
    active = list(classes)
    while active:
        per_size = units_left / sum(share[k] for k in active)
        full = [k for k in active if capacity[k] <= per_size * share[k] * (1 + 1e-12)]
        if not full:
            break
        for k in full:
            enumerated_classes.append(k)
            units_left -= capacity[k]
            active.remove(k)
    rng = np.random.default_rng(seed)
    allocation = dict.fromkeys(active, 0)
    if active and units_left > 0:
        ideal = np.array([units_left * share[k] for k in active]) / sum(share[k] for k in active)
        counts = np.floor(ideal).astype(int)
        if counts.sum() < units_left:  # largest remainders first; ties and shortfalls broken at random
            order = np.lexsort((rng.random(len(active)), -(ideal - counts)))
            counts[order[:units_left - counts.sum()]] += 1
        allocation = {k: int(c) for k, c in zip(active, counts)}

    masks: list[np.ndarray] = []
    weights: list[float] = []
    for k in sorted(enumerated_classes):
        w = (m - 1) / (comb(m, k) * k * (m - k))
        for players in combinations(range(m), k):
            if 2 * k == m and 0 not in players:
                continue  # the other member of a pair already added
            mask = np.zeros(m)
            mask[list(players)] = 1
            masks += [mask, 1 - mask]
            weights += [w, w]
    enumerated = len(masks)
    draws: list[list[int]] = []
    strata: list[int] = []
    for k in sorted(active):  # contiguous classes, in order (the bootstrap relies on it)
        n_units = allocation[k]
        if not n_units:
            continue
        per_coalition = (m - 1) / (k * (m - k)) / (n_units * (2 if 2 * k == m else 1))  # w(z) / P(z drawn)
        for chosen in _distinct_subsets(m, k, n_units, rng):
            draws.append([len(masks), len(masks) + 1])
            strata.append(k)
            masks += [chosen, 1 - chosen]
            weights += [per_coalition, per_coalition]
    weight_array = np.asarray(weights, dtype=np.float64)
    return _Design(masks=np.asarray(masks, dtype=np.float64).reshape(-1, m), weights=weight_array / weight_array.sum(),
                   n_enumerated=enumerated, draws=np.asarray(draws, dtype=np.int64).reshape(-1, 2),
                   strata=np.asarray(strata, dtype=np.int64))


def _distinct_subsets(m: int, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct pairs {S, complement} with |S| = k drawn uniformly without replacement, as
    (n, M) 0/1 rows of S (for k = M/2, the member holding player 0)."""
    pair_class = 2 * k == m
    total = comb(m, k) // (2 if pair_class else 1)
    if 2 * n > total:  # a large share of a small class: choose among all of them
        pool = [p for p in combinations(range(m), k) if not pair_class or 0 in p]
        out = np.zeros((n, m))
        for row, index in enumerate(rng.choice(len(pool), n, replace=False)):
            out[row, list(pool[index])] = 1
        return out
    seen: dict[bytes, np.ndarray] = {}
    while len(seen) < n:
        batch = 2 * (n - len(seen)) + 8
        if pair_class:  # player 0 and k − 1 of the others
            order = np.argsort(rng.random((batch, m - 1)), axis=1)[:, :k - 1] + 1
            order = np.concatenate([np.zeros((batch, 1), dtype=order.dtype), order], axis=1)
        else:
            order = np.argsort(rng.random((batch, m)), axis=1)[:, :k]
        rows = np.zeros((batch, m))
        np.put_along_axis(rows, order, 1.0, axis=1)
        for drawn in rows:
            key = drawn.tobytes()
            if key not in seen and len(seen) < n:
                seen[key] = drawn
    return np.asarray(list(seen.values()))


def refinable(estimator: str, nsamples: int) -> bool:
    """Whether explaining a row again with ``nsamples`` coalitions can be expected to lower its
    error: always, but for ``"per_background"`` past ``POSTERIOR_MAX_PAIRS`` pairs, where the
    regression takes over from the posterior and is less accurate per coalition (on the German
    MLP the regression at 8,192 coalitions is further from the exact values than the posterior
    at 4,096)."""
    return estimator != "per_background" or nsamples // 2 <= POSTERIOR_MAX_PAIRS


def kernel_shap(
    predict: Callable[[np.ndarray], np.ndarray],
    inputs: np.ndarray,
    background: np.ndarray,
    groups: list[list[int]],
    target: np.ndarray,
    *,
    nsamples: int | None = None,
    seed: int = 0,
    max_rows: int = 262_144,
    n_boot: int = N_BOOT,
    estimator: str = "stock",
) -> KernelShap:
    """KernelSHAP values of every row at once, with their estimated sampling error.

    Args:
        predict: flat model inputs (R, D) → outputs (R, C).
        inputs: rows to explain, flat (N, D).
        background: rows absent features are taken from, flat (K, D); averaged uniformly.
        groups: input positions of each of the M features.
        target: output explained for each row.
        nsamples: coalition budget. Default: shap's ``2 * M + 2048``.
        seed: seeds the sampled coalitions and the bootstrap of the sampling error.
        max_rows: model rows evaluated per batch (bounds memory).
        n_boot: bootstrap replicates of the sampling error.
            Default: 64
        estimator: ``"leverage"`` (paired leverage-score sampling without replacement) or
            ``"stock"`` (shap's design, the same coalitions and values as shap's for a seed).
            Default: "stock"
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
    n, d = inputs.shape
    m = len(groups)
    rows = np.arange(n)
    fx = predict(inputs)[rows, target]
    background_outputs = predict(background)
    expected = background_outputs.mean(axis=0)[target]
    if m == 1:
        return KernelShap((fx - expected)[:, None], fx, expected, np.zeros(n), coalitions=0, exact=True)
    if estimator == "per_background":
        return _per_background(predict, inputs, background, groups, target, fx, background_outputs[:, target].T,
                               nsamples=nsamples or 2 * m + 2048,
                               seed=seed, max_rows=max_rows, n_boot=n_boot)
    full = _design(m, nsamples, seed, estimator)
    # shap's KernelExplainer leaves out, row by row, the features on which the row equals every
    # background row (null players: their value is 0) and solves the game of the others
    varying = np.zeros((n, m), dtype=bool)
    for g, positions in enumerate(groups):
        same = np.isclose(inputs[:, None, positions], background[None, :, positions], rtol=1e-5, atol=1e-8,
                          equal_nan=True).all(axis=2)                                # (N, K)
        varying[:, g] = ~same.all(axis=1)
    delta = fx - expected
    phi, error = np.zeros((n, m)), np.zeros(n)
    counts = varying.sum(axis=1)
    for size in np.unique(counts):
        chosen = np.flatnonzero(counts == size)
        features = np.stack([np.flatnonzero(varying[i]) for i in chosen]) if size else np.zeros((len(chosen), 0), int)
        if size <= 1:  # nothing to share (size 0: f(x) = E f), or one player takes it all
            if size == 1:
                phi[chosen, features[:, 0]] = delta[chosen]
            continue
        design = full if size == m else _design(int(size), nsamples, seed, estimator)
        values, part_error = _solve_rows(predict, inputs[chosen], background, groups, features, target[chosen],
                                         expected[chosen], delta[chosen], design, max_rows=max_rows, n_boot=n_boot,
                                         seed=seed)
        phi[chosen[:, None], features] = values
        error[chosen] = part_error
    return KernelShap(phi, fx, expected, error, coalitions=len(full.masks), exact=not len(full.draws))


def _solve_rows(predict, inputs: np.ndarray, background: np.ndarray, groups: list[list[int]], features: np.ndarray,
                target: np.ndarray, expected: np.ndarray, delta: np.ndarray, design: _Design, *, max_rows: int,
                n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The values (R, s) of rows whose players are their ``features`` (R, s) (the others
    equal every background row), by ``design`` over s players, and their sampling error (R,)."""
    n, d = inputs.shape
    masks = design.masks
    m, size = len(groups), features.shape[1]
    group_of = np.full(d, m)  # input position → its feature (m: in none)
    for g, positions in enumerate(groups):
        group_of[positions] = g
    player = np.full((n, m + 1), size)  # feature → the row's player (size: not one: the background's value)
    player[np.arange(n)[:, None], features] = np.arange(size)
    player_of = player[:, group_of]                                                  # (R, D)
    extended = np.concatenate([masks > 0.5, np.zeros((len(masks), 1), dtype=bool)], axis=1)
    per_row = len(masks) * len(background)
    chunk = max(1, max_rows // per_row)
    value = np.empty((n, len(masks)))
    for start in range(0, n, chunk):
        x = inputs[start:start + chunk]
        present = np.swapaxes(extended[:, player_of[start:start + chunk]], 0, 1)   # (r, S, D): taken from x
        synthetic = np.where(present[:, :, None, :], x[:, None, None, :], background[None, None, :, :])
        out = predict(synthetic.reshape(-1, d)).reshape(len(x), len(masks), len(background), -1)
        value[start:start + len(x)] = out[np.arange(len(x)), :, :, target[start:start + len(x)]].mean(axis=2)
    # weighted least squares with Σφ = f(x) − E f eliminated through the last player
    y = value - expected[:, None] - masks[:, -1][None, :] * delta[:, None]       # (R, S)
    x_design = masks[:, :-1] - masks[:, -1:]                                        # (S, s−1)
    phi = _solve(x_design, design.weights, y, delta)
    if not len(design.draws):
        return phi, np.zeros(n)
    return phi, _bootstrap_error(design, x_design, y, delta, phi, n_boot=n_boot, seed=seed)


def _solve(x_design: np.ndarray, weights: np.ndarray, y: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The constrained weighted least squares of every row, (N, M): shap's normal equations, and
    its least-squares fallback where they are singular."""
    weighted = x_design * weights[:, None]
    try:
        phi_rest = np.linalg.solve(x_design.T @ weighted, weighted.T @ y.T).T     # (N, M−1)
    except np.linalg.LinAlgError:
        root = np.sqrt(weights)[:, None]
        phi_rest = np.linalg.lstsq(root * x_design, root * y.T, rcond=None)[0].T
    return _complete(phi_rest, delta)


def _complete(phi_rest: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """(…, N, M−1) → (…, N, M): the last feature takes what the constraint leaves."""
    return np.concatenate([phi_rest, (delta - phi_rest.sum(axis=-1))[..., None]], axis=-1)


def _bootstrap_error(design: _Design, x_design, y, delta, phi, *, n_boot: int, seed: int,
                     max_elements: int = 4_000_000) -> np.ndarray:
    """Mean over bootstrap replicates of the draws of max_j |φ_b,j − φ̂_j|, per row.

    Replicates are solved in batches (one matrix product per batch, bounded by
    ``max_elements``) by the pseudo-inverse of their normal matrices, leaving out directions
    with eigenvalues under 1e-10 of the largest: a replicate that drops coalitions can leave
    the equations nearly singular, where solving them gives values of 1e15, not a spread."""
    rng = np.random.default_rng([seed, 1])  # a stream of its own: the design's draws stay shap's
    taken = design.draws >= 0
    draw_of = np.nonzero(taken)[0]
    coalition = design.draws[taken]
    n_draws, (n, m) = len(design.draws), phi.shape
    fixed = design.weights[:design.n_enumerated].sum()
    batch = max(1, min(n_boot, max_elements // max(len(x_design) * (m - 1), n * m)))
    total = np.zeros(n)
    for start in range(0, n_boot, batch):
        size = min(batch, n_boot - start)
        if design.strata is None:  # stock: the draws of one pool, reweighted to the sampled share
            picks = rng.integers(0, n_draws, (size, n_draws))
            taken_times = np.zeros((size, n_draws))
            np.add.at(taken_times, (np.arange(size)[:, None], picks), 1.0)
            counts = np.zeros((size, len(x_design)))
            np.add.at(counts, (np.arange(size)[:, None], coalition[None, :]), taken_times[:, draw_of])  # integer counts: exact
            weights = np.broadcast_to(design.weights, counts.shape).copy()
            sampled = counts[:, design.n_enumerated:]
            weights[:, design.n_enumerated:] = sampled / sampled.sum(axis=1, keepdims=True) * (1 - fixed)
        else:  # leverage: each size class's pairs resampled within the class, as they were drawn
            weights = _stratified_weights(design, rng, size)
        weighted = weights[:, :, None] * x_design[None]                               # (b, S, M−1)
        normal = np.swapaxes(weighted, 1, 2) @ x_design                               # (b, M−1, M−1)
        rhs = (np.swapaxes(weighted, 1, 2).reshape(-1, len(x_design)) @ y.T).reshape(size, m - 1, n)
        eigenvalues, vectors = np.linalg.eigh(normal)
        kept = eigenvalues > 1e-10 * eigenvalues.max(axis=1, keepdims=True)
        inverse = np.where(kept, 1 / np.where(kept, eigenvalues, 1.0), 0.0)
        phi_rest = vectors @ (inverse[:, :, None] * (np.swapaxes(vectors, 1, 2) @ rhs))  # (b, M−1, N)
        total += np.abs(_complete(np.swapaxes(phi_rest, 1, 2), delta) - phi).max(axis=2).sum(axis=0)
    return total / n_boot


def _stratified_weights(design: _Design, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, S) replicate weights of a leverage design: in each size class, its n pairs
    resampled n times with replacement; a coalition's weight is its design weight times how
    often its pair was taken (so every class keeps its total weight)."""
    assert design.strata is not None
    # one uniform per draw and replicate (row by row: the same stream however replicates are
    # batched), turned into a draw of the same class: the classes' draws are contiguous
    _, first, members = np.unique(design.strata, return_index=True, return_counts=True)
    start, count = np.repeat(first, members), np.repeat(members, members)
    picks = start + np.minimum((rng.random((size, len(design.draws))) * count).astype(np.int64), count - 1)
    taken_times = np.zeros((size, len(design.draws)))
    np.add.at(taken_times, (np.arange(size)[:, None], picks), 1.0)
    weights = np.broadcast_to(design.weights, (size, len(design.weights))).copy()
    for column in range(design.draws.shape[1]):
        weights[:, design.draws[:, column]] *= taken_times
    return weights


def _per_background(predict, inputs: np.ndarray, background: np.ndarray, groups: list[list[int]], target: np.ndarray,
                    fx: np.ndarray, f_background: np.ndarray, *, nsamples: int, seed: int, max_rows: int,
                    n_boot: int) -> KernelShap:
    """``estimator="per_background"``: the Shapley values of v(S) = mean_b f(x_S, b_¬S) are the
    mean over background rows b of those of the single-baseline games v_b(S) = f(x_S, b_¬S), and
    in v_b a feature where x and b agree is a null player (adding it leaves the model input as it
    was). Each (row, background row) pair is a game of only its m_b differing features, solved by
    a leverage design over m_b players with up to ``nsamples`` coalitions (enumerated whole when
    2^m_b − 2 fits), its players mapped to the differing features in an order drawn per pair (so
    that pairs sharing a design do not share its errors). One design per m_b serves every pair of
    that size: one solve, and one bootstrap, per size."""
    n, d = inputs.shape
    k, m = len(background), len(groups)
    delta = fx[:, None] - f_background                                                 # (N, K)
    differ = np.zeros((n, k, m), dtype=bool)
    for g, positions in enumerate(groups):
        differ[:, :, g] = (inputs[:, None, positions] != background[None, :, positions]).any(axis=2)
    players = differ.sum(axis=2)                                                       # (N, K)
    rng = np.random.default_rng([seed, 2])
    order = np.argsort(np.where(differ, rng.random((n, k, m)), 2.0), axis=2)          # differing features first, shuffled
    group_of = np.full(d, m)  # input position → feature (m: in no feature, always the background's)
    for g, positions in enumerate(groups):
        group_of[positions] = g
    phi = np.zeros((n, m))
    deviation = np.zeros((n_boot, n, m))  # bootstrap replicates' values − the estimate, summed over pairs / K
    covariance = np.zeros((n, m, m))      # posterior covariance of the rows' values, summed over pairs / K²
    sampled = False
    for size in np.unique(players[players > 0]):
        pair_rows, pair_bg = np.nonzero(players == size)
        where = order[pair_rows, pair_bg, :size]                                       # (P, size) design player → feature
        if size == 1:
            np.add.at(phi, (pair_rows, where[:, 0]), delta[pair_rows, pair_bg] / k)
            continue
        design = _design(int(size), nsamples, seed, "per_background")
        masks = design.masks
        x_design = masks[:, :-1] - masks[:, -1:]
        chunk = max(1, max_rows // len(masks))
        values = np.empty((len(pair_rows), len(masks)))
        for start in range(0, len(pair_rows), chunk):
            part = slice(start, start + chunk)
            present = np.zeros((len(where[part]), len(masks), m + 1), dtype=bool)      # (p, S, features + 1)
            np.put_along_axis(present, np.broadcast_to(where[part][:, None, :], (len(where[part]), len(masks), size)),
                              np.broadcast_to(masks[None] > 0.5, (len(where[part]), len(masks), size)), axis=2)
            synthetic = np.where(present[:, :, group_of], inputs[pair_rows[part]][:, None, :],
                                 background[pair_bg[part]][:, None, :])
            out = predict(synthetic.reshape(-1, d)).reshape(len(where[part]), len(masks), -1)
            values[part] = np.take_along_axis(out, target[pair_rows[part]][:, None, None], axis=2)[:, :, 0]
        pair_delta = delta[pair_rows, pair_bg]
        # the regression's targets, with Σφ = Δ eliminated through the last player
        y = values - f_background[pair_rows, pair_bg][:, None] - masks[:, -1][None, :] * pair_delta[:, None]
        if not len(design.draws):  # every coalition enumerated: the regression gives the exact values
            np.add.at(phi, (pair_rows[:, None], where), _solve(x_design, design.weights, y, pair_delta) / k)
            continue
        sampled = True
        if POSTERIOR_MIN_PAIRS * size <= len(masks) // 2 <= POSTERIOR_MAX_PAIRS:
            estimate, pair_covariance = _walsh_posterior(design, values, pair_delta)
            np.add.at(phi, (pair_rows[:, None], where), estimate / k)
            np.add.at(covariance, (pair_rows[:, None, None], where[:, :, None], where[:, None, :]), pair_covariance / k**2)
            continue
        estimate = _solve(x_design, design.weights, y, pair_delta)                    # (P, size)
        np.add.at(phi, (pair_rows[:, None], where), estimate / k)
        replicates = _replicate_values(design, x_design, y, pair_delta, n_boot=n_boot, seed=seed)  # (b, P, size)
        for r in range(n_boot):
            np.add.at(deviation[r], (pair_rows[:, None], where), (replicates[r] - estimate) / k)
    if sampled and covariance.any():  # posterior draws, the same standard normals for every row
        eigenvalues, vectors = np.linalg.eigh(covariance)
        root = vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))[:, None, :]         # (N, M, M)
        normal = np.random.default_rng([seed, 3]).standard_normal((n_boot, m))
        deviation += np.einsum("bj,nij->bni", normal, root)
    error = np.abs(deviation).max(axis=2).mean(axis=0) if sampled else np.zeros(n)
    assert np.allclose(phi.sum(axis=1), delta.mean(axis=1), atol=1e-6 * (1 + np.abs(delta).max())), "efficiency"
    # the settings of a chunk of rows may not depend on its rows: the per-pair cap, and whether it
    # covers every coalition of all M features (rows whose pairs were all enumerated have error 0)
    cap = _budget(m, nsamples)
    return KernelShap(phi, fx, f_background.mean(axis=1), error, coalitions=cap, exact=cap >= 2**m - 2)


def _replicate_values(design: _Design, x_design: np.ndarray, y: np.ndarray, delta: np.ndarray, *, n_boot: int,
                      seed: int, max_elements: int = 8_000_000) -> np.ndarray:
    """(n_boot, N, M) values of each bootstrap replicate of a leverage design (its size classes'
    draws resampled within each class, as :func:`_bootstrap_error`), solved by the
    pseudo-inverse of each replicate's normal matrix."""
    rng = np.random.default_rng([seed, 1, x_design.shape[1]])
    weights = _stratified_weights(design, rng, n_boot)                                # (b, S)
    weighted = weights[:, :, None] * x_design[None]                                   # (b, S, M−1)
    normal = np.swapaxes(weighted, 1, 2) @ x_design                                   # (b, M−1, M−1)
    eigenvalues, vectors = np.linalg.eigh(normal)
    kept = eigenvalues > 1e-10 * eigenvalues.max(axis=1, keepdims=True)
    inverse = np.where(kept, 1 / np.where(kept, eigenvalues, 1.0), 0.0)
    solver = vectors @ (inverse[:, :, None] * np.swapaxes(vectors, 1, 2)) @ np.swapaxes(weighted, 1, 2)  # (b, M−1, S)
    n, m = y.shape[0], x_design.shape[1] + 1
    out = np.empty((n_boot, n, m))
    step = max(1, max_elements // max(1, n_boot * (m - 1)))
    flat = solver.reshape(-1, len(x_design))
    for start in range(0, n, step):
        part = slice(start, start + step)
        rest = (flat @ y[part].T).reshape(n_boot, m - 1, -1)                          # (b, M−1, p)
        out[:, part] = _complete(np.swapaxes(rest, 1, 2), delta[part])
    return out


@cache
def _krawtchouk(m: int) -> np.ndarray:
    """(M + 1, M + 1) Krawtchouk polynomials K_k(h) = Σ_j (−1)^j C(h, j) C(M − h, k − j): the sum of
    the Walsh characters of order k at a coalition of h players (in integers, then float)."""
    return np.array([[float(sum((-1) ** j * comb(h, j) * comb(m - h, k - j) for j in range(min(h, k) + 1)))
                      for h in range(m + 1)] for k in range(m + 1)])


def _walsh_posterior(design: _Design, values: np.ndarray, delta: np.ndarray,
                     decays: tuple[float, ...] = PRIOR_DECAYS) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means (P, m) of P pairs' Shapley values and their covariances (P, m, m), from the
    odd parts of their games on a paired ``design`` under the Walsh prior (module docstring)."""
    m = design.masks.shape[1]
    representatives = np.concatenate([np.zeros((1, m)), design.masks[0::2]])  # ∅, then one of each pair
    odd_part = np.concatenate([-delta[:, None] / 2, (values[:, 0::2] - values[:, 1::2]) / 2], axis=1)  # (P, n)
    n = len(representatives)
    hamming = (representatives @ (1 - representatives).T + (1 - representatives) @ representatives.T).astype(np.int64)
    sizes = representatives.sum(axis=1).astype(np.int64)
    others = (sizes[None, :] - representatives.T).astype(np.int64)                  # (m, n): |S \ {i}|
    sign = np.where(representatives.T > 0.5, -1.0, 1.0)                              # (m, n): χ_i(S)
    orders = np.arange(1, m + 1, 2)
    table, table_less = _krawtchouk(m), _krawtchouk(m - 1)
    best_ll = np.full(len(values), -np.inf)
    estimate = np.zeros((len(values), m))
    pair_covariance = np.zeros((len(values), m, m))
    for decay in decays:
        variance = np.zeros(m + 1)  # prior variance of one coefficient of each order (odd orders only)
        variance[orders] = decay ** ((orders - 1) // 2) / np.array([comb(m, k) for k in orders], dtype=np.float64)
        kernel = (variance @ table)[hamming]                                          # (n, n)
        # Cov(φ_i, odd part at S) = χ_i(S) Σ_k odd (−2/k) λ_k K_{k−1}(|S \ {i}|; m − 1)
        cross = sign * ((-2.0 / orders * variance[orders]) @ table_less[orders - 1])[others]  # (m, n)
        prior = np.full((m, m), np.sum(4.0 / orders[1:]**2 * variance[orders[1:]]
                                       * np.array([comb(m - 2, k - 2) for k in orders[1:]], dtype=np.float64)))
        np.fill_diagonal(prior, np.sum(4.0 / orders**2 * variance[orders]
                                       * np.array([comb(m - 1, k - 1) for k in orders], dtype=np.float64)))
        kernel[np.diag_indices(n)] += 1e-10 * np.trace(kernel) / n  # the data are exact: a nugget for round-off
        lower, info = dpotrf(kernel, lower=1, clean=1, overwrite_a=1)
        if info:
            continue
        whitened = solve_triangular(lower, odd_part.T, lower=True, check_finite=False)  # (n, P)
        scale = np.maximum((whitened**2).sum(axis=0) / n, np.finfo(float).tiny)      # per pair, profiled
        log_likelihood = -0.5 * n * np.log(scale) - np.log(np.diag(lower)).sum()
        better = log_likelihood > best_ll
        if not better.any():
            continue
        gain = solve_triangular(lower, cross.T, lower=True, check_finite=False)      # (n, m)
        best_ll[better] = log_likelihood[better]
        estimate[better] = whitened[:, better].T @ gain
        pair_covariance[better] = scale[better, None, None] * (prior - gain.T @ gain)[None]
    if not np.isfinite(best_ll).all():
        raise np.linalg.LinAlgError("the Walsh prior's kernel matrix is not positive definite for any decay")
    estimate += ((delta - estimate.sum(axis=1)) / m)[:, None]  # the nugget's round-off, so that Σφ = Δ exactly
    return estimate, pair_covariance
