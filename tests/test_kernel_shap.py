"""The batched KernelSHAP path gives shap's values (exact case) and shap's accuracy (sampled)."""

from __future__ import annotations

from itertools import combinations
from math import comb, factorial

import numpy as np
import pytest
import shap

from scrutiny.audit.attributions.kernel_shap import coalition_design, kernel_shap


def _model(m, seed=0):
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(m, 16)), rng.normal(size=(16, 3))

    def predict(X):
        return np.tanh(X @ w1) @ w2 + 0.3 * (X[:, :1] * X[:, 1:2])
    return predict


def _exact(predict, x, background, t):
    """Shapley values by enumeration: v(S) = mean_b f(x_S, b_rest)[t]."""
    m = len(x)
    def v(players):
        rows = background.copy()
        rows[:, list(players)] = x[list(players)]
        return predict(rows)[:, t].mean()
    cache = {s: v(s) for k in range(m + 1) for s in combinations(range(m), k)}
    phi = np.zeros(m)
    for j in range(m):
        for k in range(m):
            for s in combinations([p for p in range(m) if p != j], k):
                weight = factorial(k) * factorial(m - k - 1) / factorial(m)
                phi[j] += weight * (cache[tuple(sorted(s + (j,)))] - cache[s])
    return phi


def test_design_weights_and_complements():
    masks, weights = coalition_design(6)
    assert len(masks) == 2**6 - 2 and weights.sum() == pytest.approx(1.0)
    sizes = masks.sum(axis=1)
    kernel = np.array([(6 - 1) / (comb(6, int(k)) * k * (6 - k)) for k in sizes])
    np.testing.assert_allclose(weights / weights.sum(), kernel / kernel.sum())
    sampled, sampled_weights = coalition_design(12, seed=1)
    assert len(sampled) == 2 * 12 + 2048 and sampled_weights.sum() == pytest.approx(1.0)
    assert len({m.tobytes() for m in sampled}) == len(sampled)  # duplicates add weight, not rows
    keys = {m.tobytes() for m in sampled}
    unpaired = sampled.sum(axis=1) == 6  # size M/2 is its own complement size: drawn singly
    assert np.mean([(1 - m).tobytes() in keys for m in sampled[~unpaired]]) > 0.99  # drawn with complements
    again, _ = coalition_design(12, seed=1)
    np.testing.assert_array_equal(again, sampled)


def test_exact_case_equals_shap_and_enumeration():
    m = 6
    predict = _model(m)
    rng = np.random.default_rng(0)
    background = rng.normal(size=(5, m))
    background[:, 4] = 0.7
    X = rng.normal(size=(4, m))
    X[0, 4] = 0.7  # a feature equal to every background row: shap drops it, its value is 0
    target = np.array([0, 1, 2, 1])
    result = kernel_shap(predict, X, background, [[j] for j in range(m)], target)
    ours, fx, expected = result.values, result.fx, result.expected
    for i in range(len(X)):
        explainer = shap.KernelExplainer(lambda z, t=target[i]: predict(z)[:, t], background)
        reference = explainer.shap_values(X[i:i + 1], nsamples=2**m, silent=True, l1_reg=False)[0]
        np.testing.assert_allclose(ours[i], reference, atol=1e-8)
        np.testing.assert_allclose(ours[i], _exact(predict, X[i], background, target[i]), atol=1e-8)
        assert explainer.expected_value == pytest.approx(expected[i])
    assert ours[0, 4] == pytest.approx(0.0, abs=1e-10)
    np.testing.assert_allclose(ours.sum(axis=1), fx - expected, atol=1e-10)


def test_groups_move_together():
    predict = _model(5, seed=2)
    rng = np.random.default_rng(3)
    background, X = rng.normal(size=(4, 5)), rng.normal(size=(2, 5))
    groups = [[0, 1], [2], [3, 4]]
    ours = kernel_shap(predict, X, background, groups, np.array([0, 2])).values

    def grouped(z, t):  # the same game over 3 players, written out
        rows = np.repeat(background[None], len(z), axis=0)
        out = np.empty(len(z))
        for r, players in enumerate(z):
            cols = [c for g, on in zip(groups, players) if on for c in g]
            rows[r][:, cols] = X[i, cols]
            out[r] = predict(rows[r])[:, t].mean()
        return out

    for i, t in enumerate([0, 2]):
        explainer = shap.KernelExplainer(lambda z, t=t: grouped(z, t), np.zeros((1, 3)))
        reference = explainer.shap_values(np.ones((1, 3)), nsamples=8, silent=True, l1_reg=False)[0]
        np.testing.assert_allclose(ours[i], reference, atol=1e-8)


def test_sampled_case_is_as_accurate_as_shap():
    m = 12  # 4094 coalitions, budget 2M + 2048 = 2072: both estimators sample
    predict = _model(m, seed=4)
    rng = np.random.default_rng(5)
    background, X = rng.normal(size=(6, m)), rng.normal(size=(3, m))
    target = np.zeros(3, dtype=int)
    ours = kernel_shap(predict, X, background, [[j] for j in range(m)], target, seed=0).values
    ours_error, shap_error = [], []
    for i in range(len(X)):
        exact = _exact(predict, X[i], background, 0)
        explainer = shap.KernelExplainer(lambda z: predict(z)[:, 0], background)
        np.random.seed(0)
        reference = explainer.shap_values(X[i:i + 1], silent=True, l1_reg=False)[0]
        ours_error.append(np.abs(ours[i] - exact).mean())
        shap_error.append(np.abs(reference - exact).mean())
    # same estimator, different random draws: errors of the same size (and both small)
    assert np.mean(ours_error) <= 1.5 * np.mean(shap_error) + 1e-3
    assert np.mean(ours_error) < 0.05 * np.abs(ours).mean()


@pytest.mark.parametrize("estimator", ["stock", "leverage"])
def test_features_equal_to_every_background_row_are_left_out_as_shap_does(estimator):
    """shap leaves out, row by row, the features on which the row equals every background row
    (Adult's capital gain is 0 in most rows): 12 features of which 4 never vary leave 8 players,
    254 coalitions, enumerated within the default budget, so the values are shap's and exact."""
    m = 12
    predict = _model(m, seed=6)
    rng = np.random.default_rng(7)
    background, X = rng.normal(size=(6, m)), rng.normal(size=(3, m))
    background[:, :4] = X[:, :4] = 0.0
    X[2, 5] = background[0, 5]  # equal to one background row only: it still varies
    target = np.array([0, 1, 2])
    result = kernel_shap(predict, X, background, [[j] for j in range(m)], target, estimator=estimator)
    for i in range(len(X)):
        explainer = shap.KernelExplainer(lambda z, t=target[i]: predict(z)[:, t], background)
        np.random.seed(0)
        reference = explainer.shap_values(X[i:i + 1], silent=True, l1_reg=False)[0]
        np.testing.assert_allclose(result.values[i], reference, atol=1e-8)
    np.testing.assert_array_equal(result.values[:, :4], 0.0)
    np.testing.assert_array_equal(result.sampling_error, 0.0)  # every row's game enumerated
    # the settings describe all 12 features, whatever the rows: sampled, at shap's default budget
    assert not result.exact and result.coalitions in (2 * m + 2048, 2 * m + 2048 - 1)
