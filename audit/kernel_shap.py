"""Batched KernelSHAP: shap's KernelExplainer estimator, vectorised across samples.

shap's ``KernelExplainer`` explains one row at a time: it builds a coalition design (which
features are "present", with Shapley-kernel weights), evaluates the model on each coalition
with absent features taken from every background row, and solves a weighted least-squares
problem constrained so that the values add up to f(x) − E f(background). The design does not
depend on the row, so here one design serves every row: the model sees all rows' coalitions
in large batches and one linear solve answers every row at once.

The design follows shap's: with a budget of ``nsamples`` coalitions (shap's default
2M + 2048), subset sizes are enumerated completely, smallest and largest first, while the
budget allows; the rest are sampled by the Shapley kernel's size distribution, each with its
complement. When the budget covers all 2^M − 2 coalitions the result is the exact Shapley
value (interventional, over the background rows), as shap's is; ``tests/test_kernel_shap.py``
checks both against shap and against exact enumeration.
"""

from __future__ import annotations

from itertools import combinations
from math import comb
from typing import Callable

import numpy as np

__all__ = ["coalition_design", "kernel_shap"]


def coalition_design(n_features: int, nsamples: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions (S, M) as 0/1 rows and their kernel weights (S,), summing to 1.

    Args:
        n_features: M, the number of players.
        nsamples: coalition budget. Default: shap's ``2 * M + 2048``.
        seed: seeds the sampled part.
    """
    m = n_features
    budget = min(nsamples or 2 * m + 2048, 2**m - 2 if m <= 30 else 2**30)
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

    if full < sizes and left > 0:
        rng = np.random.default_rng(seed)
        draw_weight = size_weight.copy()
        draw_weight[:paired] /= 2  # each draw adds a coalition and its complement
        draw_weight = draw_weight[full:] / draw_weight[full:].sum()
        sampled: dict[bytes, int] = {}
        sampled_masks, sampled_counts = [], []
        while left > 0:
            k = full + 1 + rng.choice(len(draw_weight), p=draw_weight)
            mask = np.zeros(m)
            mask[rng.permutation(m)[:k]] = 1
            for candidate in (mask, 1 - mask) if k <= paired else (mask,):
                key = candidate.tobytes()
                if key in sampled:
                    sampled_counts[sampled[key]] += 1
                elif left > 0:
                    sampled[key] = len(sampled_masks)
                    sampled_masks.append(candidate)
                    sampled_counts.append(1.0)
                    left -= 1
        fixed_weight = float(np.sum(weights)) if weights else 0.0
        counts = np.asarray(sampled_counts)
        masks += sampled_masks
        weights += list(counts / counts.sum() * (1 - fixed_weight))
    return np.asarray(masks, dtype=np.float64), np.asarray(weights, dtype=np.float64)


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KernelSHAP values of every row at once.

    Args:
        predict: flat model inputs (R, D) → outputs (R, C).
        inputs: rows to explain, flat (N, D).
        background: rows absent features are taken from, flat (K, D); averaged uniformly.
        groups: input positions of each of the M features.
        target: output explained for each row.
        nsamples: coalition budget. Default: shap's ``2 * M + 2048``.
        seed: seeds the sampled coalitions.
        max_rows: model rows evaluated per batch (bounds memory).

    Returns:
        values (N, M), f(x) of each row's target (N,), E f(background) per target (N,).
    """
    n, d = inputs.shape
    m = len(groups)
    rows = np.arange(n)
    fx = predict(inputs)[rows, target]
    expected = predict(background).mean(axis=0)[target]
    if m == 1:
        return (fx - expected)[:, None], fx, expected
    masks, weights = coalition_design(m, nsamples, seed)
    present = np.zeros((len(masks), d), dtype=bool)  # coalition → input positions taken from x
    for g, positions in enumerate(groups):
        present[:, positions] = masks[:, [g]] > 0.5
    per_row = len(masks) * len(background)
    chunk = max(1, max_rows // per_row)
    value = np.empty((n, len(masks)))
    for start in range(0, n, chunk):
        x = inputs[start:start + chunk]
        synthetic = np.where(present[None, :, None, :], x[:, None, None, :], background[None, None, :, :])
        out = predict(synthetic.reshape(-1, d)).reshape(len(x), len(masks), len(background), -1)
        value[start:start + len(x)] = out[np.arange(len(x)), :, :, target[start:start + len(x)]].mean(axis=2)
    # weighted least squares with Σφ = f(x) − E f eliminated through the last feature
    delta = fx - expected
    y = value - expected[:, None] - masks[:, -1][None, :] * delta[:, None]       # (N, S)
    design = masks[:, :-1] - masks[:, -1:]                                          # (S, M−1)
    weighted = design * weights[:, None]
    phi_rest = np.linalg.solve(design.T @ weighted, weighted.T @ y.T).T            # (N, M−1)
    phi = np.concatenate([phi_rest, (delta - phi_rest.sum(axis=1))[:, None]], axis=1)
    return phi, fx, expected
