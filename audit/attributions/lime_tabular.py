"""Batched tabular LIME: lime's ``LimeTabularExplainer.explain_instance``, many rows at once.

Per row, lime draws a neighbourhood of perturbations, asks the model for their class
probabilities, weighs each perturbation by its distance to the row and fits a weighted ridge
regression (``Ridge(alpha=1)`` with an intercept) of the explained class's probability on the
scaled perturbations; the coefficients are the explanation and the fit's weighted R² its
score. Here the draws are still lime's own (its private sampler, on the explainer's random
state, row after row, so row i gets the draws of the i-th ``explain_instance`` call), but the
model sees a whole chunk of rows' perturbations in one call, and distances, kernel weights,
ridge fits and scores are computed for the whole chunk in closed form.

With ``num_features`` at least the number of features every one of lime's feature selections
(``"auto"``, ``"forward_selection"``, ``"highest_weights"``, ``"none"``) keeps every feature,
so the fit is the same; ``tests/test_lime_tabular.py`` checks the result against
``explain_instance`` row by row.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LimeFit", "explain_rows", "weighted_ridge"]

# perturbation values (rows × samples × features) held at once; bounds the memory of a chunk
CHUNK_VALUES = 1 << 22
ALL_FEATURE_SELECTIONS = ("auto", "forward_selection", "highest_weights", "none")


@dataclass
class LimeFit:
    """LIME's local linear fits of many rows.

    Attributes:
        weights: coefficients per row and feature, (N, M): ``explanation.local_exp[label]``.
        intercepts: (N,), ``explanation.intercept[label]``.
        scores: weighted R² of each fit, (N,): ``explanation.score``.
        instances: (N, M), each explained row as the local model reads it (lime's scaling; 1 for a
            categorical feature: "the row's own category"), so that ``intercepts + (weights *
            instances).sum(axis=1)`` is ``explanation.local_pred``.
    """

    weights: np.ndarray
    intercepts: np.ndarray
    scores: np.ndarray
    instances: np.ndarray


def explain_rows(
    explainer,
    rows: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    labels: np.ndarray,
    *,
    num_samples: int = 5000,
    num_features: int | None = None,
    progress: bool = False,
) -> LimeFit:
    """``explainer.explain_instance(rows[i], predict, labels=(labels[i],), ...)`` for every row.

    Args:
        explainer: a ``lime.lime_tabular.LimeTabularExplainer`` in classification mode; its
            random state is consumed as the same calls one by one would.
        rows: (N, M) rows as the explainer reads them.
        predict: (n, M) perturbations → (n, n_classes) probabilities; called once per chunk
            of rows, with all their perturbations.
        labels: the class explained per row, (N,).
        num_samples: perturbations per row (lime's default 5000).
        num_features: lime's ``num_features``; must be at least M, so that every feature
            is fitted. Default: M.
        progress: show a progress bar over rows.
    """
    from tqdm.auto import tqdm

    rows = np.asarray(rows, dtype=np.float64)
    n, m = rows.shape
    labels = np.broadcast_to(np.asarray(labels, dtype=np.int64), (n,))
    if explainer.mode != "classification":
        raise ValueError("explain_rows explains classifiers; the explainer is in regression mode")
    if (num_features or m) < m or explainer.feature_selection not in ALL_FEATURE_SELECTIONS:
        raise ValueError(f"explain_rows fits every feature: it needs num_features >= {m} and a feature selection "
                         f"among {', '.join(ALL_FEATURE_SELECTIONS)}")
    sample = _sampler(explainer)
    mean, scale = explainer.scaler.mean_, explainer.scaler.scale_
    weights, intercepts, scores, instances = np.zeros((n, m)), np.zeros(n), np.zeros(n), np.zeros((n, m))
    step = max(1, CHUNK_VALUES // (num_samples * m))
    with tqdm(total=n, desc="LIME", unit="row", disable=not progress) as bar:
        for start in range(0, n, step):
            stop = min(start + step, n)
            # row after row: each draw continues the explainer's random stream where the last left it
            data, inverse = zip(*(sample(row, num_samples) for row in rows[start:stop]))
            probabilities = np.asarray(predict(np.concatenate(inverse)), dtype=np.float64)
            y = probabilities.reshape(stop - start, num_samples, -1)[np.arange(stop - start), :, labels[start:stop]]
            scaled = (np.stack(data) - mean) / scale
            distances = np.sqrt(((scaled - scaled[:, :1]) ** 2).sum(axis=2))  # to the row itself, sample 0
            kernel = explainer.base.kernel_fn(distances)
            weights[start:stop], intercepts[start:stop], scores[start:stop] = weighted_ridge(scaled, y, kernel)
            instances[start:stop] = scaled[:, 0]
            bar.update(stop - start)
    return LimeFit(weights=weights, intercepts=intercepts, scores=scores, instances=instances)


def weighted_ridge(X: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float = 1.0):
    """sklearn's ``Ridge(alpha, fit_intercept=True).fit(X[b], y[b], sample_weight=w[b])`` and
    its ``score`` for every b at once: centring by the weighted means fits the intercept, the
    penalty falls on the coefficients only.

    Args:
        X: (B, S, M) regressors.
        y: (B, S) targets.
        w: (B, S) sample weights.
        alpha: the ridge penalty.

    Returns:
        coefficients (B, M), intercepts (B,), weighted R² (B,) as sklearn's ``r2_score``
        (1 for a perfect fit of a constant target, 0 for an imperfect one).
    """
    total = w.sum(axis=1)
    x_mean = np.einsum("bs,bsm->bm", w, X) / total[:, None]
    y_mean = (w * y).sum(axis=1) / total
    Xc = X - x_mean[:, None, :]
    yc = y - y_mean[:, None]
    Xw = Xc * w[:, :, None]
    gram = Xw.transpose(0, 2, 1) @ Xc + alpha * np.eye(X.shape[2])
    coef = np.linalg.solve(gram, (Xw.transpose(0, 2, 1) @ yc[:, :, None]))[:, :, 0]
    intercept = y_mean - (x_mean * coef).sum(axis=1)
    residual = yc - (Xc @ coef[:, :, None])[:, :, 0]
    ss_res = (w * residual**2).sum(axis=1)
    ss_tot = (w * yc**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(ss_tot != 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return coef, intercept, score


def _sampler(explainer):
    """lime's own neighbourhood sampler, ``(row, num_samples) → (data, inverse)``."""
    sample = explainer._LimeTabularExplainer__data_inverse
    if "sampling_method" in inspect.signature(sample).parameters:  # lime after 0.2.0.1
        sample = functools.partial(sample, sampling_method="gaussian")
    return sample
