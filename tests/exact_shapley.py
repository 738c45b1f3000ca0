"""Exact interventional Shapley values by the Shapley formula, the reference of the KernelSHAP tests."""

from __future__ import annotations

from math import factorial

import numpy as np


def exact_shapley(predict, X, background, t: int) -> np.ndarray:
    """Shapley values by the Shapley formula over all 2^M coalitions, v(S) = mean_b f(x_S, b_rest)."""
    n, m = X.shape
    codes = np.arange(2**m)
    bits = (codes[:, None] >> np.arange(m)) & 1
    v = np.empty((n, 2**m))
    for i in range(n):
        rows = np.where(bits[:, None, :] > 0, X[i], background[None])
        v[i] = predict(rows.reshape(-1, m))[:, t].reshape(2**m, len(background)).mean(axis=1)
    size = bits.sum(axis=1)
    weight = np.array([factorial(k) * factorial(m - k - 1) / factorial(m) for k in range(m)])
    phi = np.zeros((n, m))
    for j in range(m):
        without = codes[bits[:, j] == 0]
        phi[:, j] = (v[:, without | (1 << j)] - v[:, without]) @ weight[size[without]]
    return phi


def exact_shapley_by_pairs(predict, Z, background, target: np.ndarray) -> np.ndarray:
    """The same values by the Shapley formula over each (row, background row) pair's game of the
    features where the two differ (the others are null players of v_b(S) = f(x_S, b_rest)), so
    that rows of 20 features are within reach: mean over background rows of each game's values."""
    n, m = Z.shape
    phi = np.zeros((n, m))
    for i in range(n):
        for b in background:
            differ = np.flatnonzero(Z[i] != b)
            k = len(differ)
            if not k:
                continue
            codes = np.arange(2**k)
            bits = (codes[:, None] >> np.arange(k)) & 1
            rows = np.repeat(b[None], 2**k, axis=0)
            rows[:, differ] = np.where(bits > 0, Z[i, differ], b[differ])
            v = predict(rows)[:, target[i]]
            size = bits.sum(axis=1)
            weight = np.array([factorial(s) * factorial(k - s - 1) / factorial(k) for s in range(k)])
            for q, j in enumerate(differ):
                without = codes[bits[:, q] == 0]
                phi[i, j] += (v[without | (1 << q)] - v[without]) @ weight[size[without]] / len(background)
    return phi
