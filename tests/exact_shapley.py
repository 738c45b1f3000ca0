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
