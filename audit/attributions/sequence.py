"""Time × feature attributions of sequence models, and the first-time-step check.

A sequence model reads its input as ``T`` time steps of ``F`` features each. scrutiny's
:class:`~scrutiny.models.architectures.RowGRU` (arch ``"gru"``) reads a ``(C, H, W)`` image row
by row: time step ``t`` is row ``t``, its ``F = C·W`` features are the row's pixels of every
channel, feature ``c·W + w`` the pixel in column ``w`` of channel ``c`` (the order the GRU reads
them in). An attribution of such an input, (C, H, W) like the input, is therefore already an
attribution per time step and feature; :func:`time_feature` lays it out as (T, F).

Aggregated over time (:func:`time_feature_summary`), over the explained rows whose total
|attribution| is at least ``ATTRIBUTION_FLOOR`` (the others have nothing to share out):

- the heat map: mean over rows of |attribution| per time step and feature, (T, F), in the
  explained output's units;
- the time profile: per row, the share of its total |attribution| on each time step; mean over
  rows (a (T,) vector summing to 1: every row weighs the same, whatever its output change);
- the feature profile: the same share per feature, summed over time steps, mean over rows.

Shares of |attribution| rather than signed sums: a step whose features push both ways still
carries weight in the explanation a reader sees. The signed sums per step (:func:`step_totals`)
add up, for an additive method, to the output change each row's attributions explain.

The first-time-step check (:func:`first_step`). captum's integrated gradients on LSTMs and GRUs
gives the first time step a large share of the attribution (captum#594, #1306); part of that can
be an artefact of the baseline rather than something the model relies on: a blank baseline drives
a recurrent state through values that no real sequence produces (a gate saturated on every real
input opens along the path from the baseline), and the path integral credits the first step with
it. The check explains the same rows again with a baseline that has realistic content at every
step and differs only in order: each row's own time steps in a seeded permutation with no fixed
point (every step of the baseline comes from another step of the row, so every step, the first
included, changes along the path). The value is the mean over rows of

    s0 − s0',   s0 = the first step's share of the row's |attribution| with the audit's baseline,
                s0' = the same share with the shuffled-time baseline.

A difference, not a ratio: both shares lie in [0, 1], their difference is the part of the
explanation that the audit's baseline puts on the first step and a realistic baseline does not,
in the unit a reader of the time profile sees; a ratio is unbounded and undefined when the
first step carries nothing under the shuffled baseline (digits' first row is usually blank).
A model that really relies on its first step keeps a share under both baselines (value near
0); a negative value means the audit's baseline gives the first step less than a realistic one.

Which methods: those that integrate gradients along a path from one baseline per row
(:data:`FIRST_STEP_METHODS`: integrated gradients and DeepLIFT); saliency and gradient × input
take no baseline, and the sampled methods average over many baselines. The rerun is explained
chunk by chunk like the audit's own attributions (:func:`~.explain.attribute_in_chunks`), as the
piece of work ``("attributions", "first_step", method)`` on the audit's executor; the time orders
are drawn once, with ``chunk_rng(seed, "attributions", "first_step", "orders")``, the same for
every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from scrutiny.audit.attributions.feature_space import FeatureSpace
from scrutiny.audit.attributions.methods import ATTRIBUTION_FLOOR, PER_ROW_BASELINES
from scrutiny.audit.attributions.registry import METHOD_INFO
from scrutiny.audit.run.executor import CHUNK_ROWS, Executor, LocalExecutor, chunk_rng, chunk_seed
from scrutiny.errors import InputError
from scrutiny.limits import check_int

__all__ = ["SEQUENCE_ARCHS", "FIRST_STEP_ROWS", "FIRST_STEP_METHODS", "TimeFeature", "FirstStep", "is_sequence_model",
           "time_feature", "time_feature_summary", "step_totals", "time_names", "feature_names", "time_orders",
           "shuffled_time_baseline", "first_step_shares", "first_step_rows", "first_step"]

SEQUENCE_ARCHS = ("gru",)    # the architectures that read their input as a sequence of time steps
FIRST_STEP_ROWS = 50         # explained rows re-explained per method (all when fewer were explained)
# gradient methods that integrate along a path from one baseline per row: the artefact's home
FIRST_STEP_METHODS: tuple[str, ...] = tuple(m for m in PER_ROW_BASELINES if METHOD_INFO[m].needs_gradients)


def is_sequence_model(model: Any) -> bool:
    """Whether ``model`` reads its (C, H, W) input row by row as a sequence of H time steps:
    a :class:`~scrutiny.models.architectures.RowGRU`, or a module whose ``arch`` says so."""
    from scrutiny.models.architectures import RowGRU

    return isinstance(model, RowGRU) or getattr(model, "arch", None) in SEQUENCE_ARCHS


def time_feature(values: np.ndarray) -> np.ndarray:
    """(N, C, H, W) attributions → (N, T, F), T = H time steps of F = C·W features, feature
    ``c·W + w`` the pixel of column ``w`` in channel ``c`` (as :class:`RowGRU` reads a row)."""
    values = np.asarray(values)
    if values.ndim != 4:
        raise InputError(f"time × feature attributions need (N, C, H, W) values; got shape {values.shape}")
    n, c, h, w = values.shape
    return values.transpose(0, 2, 1, 3).reshape(n, h, c * w)


def time_names(input_shape: tuple[int, ...]) -> list[str]:
    """The time steps' names: ``"t0"`` … (row ``t`` of the image)."""
    return [f"t{t}" for t in range(int(input_shape[1]))]


def feature_names(input_shape: tuple[int, ...]) -> list[str]:
    """The features' names in :func:`time_feature`'s order: ``"col0"`` … for one channel,
    ``"c0 col0"`` … for several."""
    c, _, w = (int(s) for s in input_shape)
    return [f"col{j}" if c == 1 else f"c{i} col{j}" for i in range(c) for j in range(w)]


def step_totals(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed attributions summed per time step, (N, T), and per feature over time, (N, F);
    each adds up over its axis to the row's total attribution."""
    layout = time_feature(np.asarray(values, dtype=np.float64))
    return layout.sum(axis=2), layout.sum(axis=1)


@dataclass
class TimeFeature:
    """One method's attributions over time steps and features (module docstring).

    Attributes:
        mean_abs: (T, F) mean over rows of |attribution|.
        time_share: (T,) mean over rows of each step's share of the row's total |attribution|.
        feature_share: (F,) the same per feature, summed over time steps.
        n: rows counted (total |attribution| at least ``ATTRIBUTION_FLOOR``).
    """

    mean_abs: np.ndarray
    time_share: np.ndarray
    feature_share: np.ndarray
    n: int


def time_feature_summary(values: np.ndarray) -> TimeFeature:
    """The heat map and the time and feature profiles of (N, C, H, W) attributions."""
    magnitude = np.abs(time_feature(np.asarray(values, dtype=np.float64)))
    total = magnitude.sum(axis=(1, 2))
    kept = magnitude[total >= ATTRIBUTION_FLOOR]
    t, f = magnitude.shape[1:]
    if not len(kept):
        return TimeFeature(mean_abs=np.zeros((t, f)), time_share=np.full(t, np.nan), feature_share=np.full(f, np.nan),
                           n=0)
    shares = kept / kept.sum(axis=(1, 2), keepdims=True)
    return TimeFeature(mean_abs=kept.mean(axis=0), time_share=shares.sum(axis=2).mean(axis=0),
                       feature_share=shares.sum(axis=1).mean(axis=0), n=len(kept))


def time_orders(n: int, steps: int, seed: int) -> np.ndarray:
    """(n, steps) one seeded permutation of the time steps per row, none with a fixed point
    (every step of the shuffled baseline comes from another step)."""
    check_int("time steps", steps, limit="steps")
    if steps < 2:
        raise InputError(f"a shuffled time order needs at least 2 time steps; the input has {steps}")
    rng = chunk_rng(seed, "attributions", "first_step", "orders")
    orders = np.empty((n, steps), dtype=np.int64)
    for i in range(n):
        while True:  # a random permutation has no fixed point with probability about 1/e
            order = rng.permutation(steps)
            if not np.any(order == np.arange(steps)):
                break
        orders[i] = order
    return orders


def shuffled_time_baseline(inputs: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Each (C, H, W) row with its time steps (image rows) in the row's order: ``base[i][:, t]
    = inputs[i][:, orders[i, t]]``."""
    inputs = np.asarray(inputs, dtype=np.float32)
    return np.stack([x[:, order, :] for x, order in zip(inputs, orders)]) if len(inputs) else inputs.copy()


def first_step_shares(values: np.ndarray) -> np.ndarray:
    """(N,) the first time step's share of each row's total |attribution|; NaN for a row whose
    total is below ``ATTRIBUTION_FLOOR`` (nothing to share out)."""
    magnitude = np.abs(time_feature(np.asarray(values, dtype=np.float64))).sum(axis=2)
    total = magnitude.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total >= ATTRIBUTION_FLOOR, magnitude[:, 0] / total, np.nan)


def first_step_rows(n_explained: int, rows: int, seed: int) -> np.ndarray:
    """The positions among ``n_explained`` explained rows the check re-explains: a seeded choice
    of ``rows`` (all when fewer), sorted, the same for every method."""
    check_int("first_step_rows", rows, limit="samples")
    if rows >= n_explained:
        return np.arange(n_explained)
    rng = chunk_rng(seed, "attributions", "first_step", "rows")
    return np.sort(rng.choice(n_explained, size=rows, replace=False))


@dataclass
class FirstStep:
    """The first-time-step check of one method (module docstring).

    Attributes:
        method: the method checked.
        baseline: the audit's baseline, in words (``Attribution.baseline``).
        positions: (K,) the re-explained rows' positions among the explained rows.
        orders: (K, T) each row's time order in the shuffled baseline.
        audit_share: (K,) s0, the first step's share of |attribution| with the audit's baseline.
        shuffled_share: (K,) s0', the same with the shuffled-time baseline.
        shuffled_values: (K, C, H, W) the attributions with the shuffled-time baseline.
    """

    method: str
    baseline: str
    positions: np.ndarray
    orders: np.ndarray
    audit_share: np.ndarray
    shuffled_share: np.ndarray
    shuffled_values: np.ndarray

    @property
    def compared(self) -> np.ndarray:
        """(K,) the rows with a share under both baselines."""
        return np.isfinite(self.audit_share) & np.isfinite(self.shuffled_share)

    @property
    def n(self) -> int:
        return int(self.compared.sum())

    @property
    def audit_mean(self) -> float:
        """Mean s0 over the compared rows (NaN when none)."""
        return float(self.audit_share[self.compared].mean()) if self.n else float("nan")

    @property
    def shuffled_mean(self) -> float:
        """Mean s0' over the compared rows (NaN when none)."""
        return float(self.shuffled_share[self.compared].mean()) if self.n else float("nan")

    @property
    def value(self) -> float:
        """The check's value: mean over the compared rows of s0 − s0' (NaN when none)."""
        return self.audit_mean - self.shuffled_mean if self.n else float("nan")


def first_step(
    model: nn.Module,
    inputs: np.ndarray,
    values: np.ndarray,
    target: np.ndarray,
    *,
    method: str,
    space: FeatureSpace,
    background: np.ndarray,
    baseline: str = "",
    seed: int = 0,
    rows: int = FIRST_STEP_ROWS,
    chunk_rows: int = CHUNK_ROWS,
    executor: Executor | None = None,
    **options: Any,
) -> FirstStep:
    """Explain a seeded subset of the explained rows again from a shuffled-time baseline and
    compare the first time step's share of |attribution| with the audit's.

    Args:
        model: the sequence model ``method`` explained (its twin for an ONNX model).
        inputs: the explained rows, encoded, (N, C, H, W).
        values: the audit's attributions of those rows, (N, C, H, W).
        target: the class each row's attributions explain, (N,).
        method: one of :data:`FIRST_STEP_METHODS`.
        space, background: as for :func:`~.methods.attribute`.
        baseline: the audit's baseline in words, recorded. Default: ""
        seed: the run's seed. Default: 0
        rows: rows re-explained (a seeded choice; all when fewer). Default: :data:`FIRST_STEP_ROWS`
        chunk_rows: rows per chunk, as in the audit. Default: ``CHUNK_ROWS``
        executor: runs the chunks; the result does not depend on it. Default: a ``LocalExecutor``
        **options: the audit's other settings of ``method`` (``n_steps``, ``batch_size``, …).

    Example:
        >>> found = first_step(gru, X, result.attributions["integrated_gradients"].values, target,
        ...                    method="integrated_gradients", space=space, background=bg)  # doctest: +SKIP
        >>> found.audit_mean, found.shuffled_mean, found.value  # doctest: +SKIP
        (0.02, 0.09, -0.07)
    """
    from scrutiny.audit.attributions.explain import attribute_in_chunks

    if method not in FIRST_STEP_METHODS:
        raise InputError(f"the first-time-step check takes one of {', '.join(FIRST_STEP_METHODS)}; got {method!r}")
    inputs = np.asarray(inputs, dtype=np.float32)
    values = np.asarray(values, dtype=np.float64)
    target = np.asarray(target, dtype=np.int64)
    if values.shape != inputs.shape or len(target) != len(inputs):
        raise InputError(f"first_step: inputs of shape {inputs.shape}, attributions of shape {values.shape} and "
                         f"{len(target)} targets")
    positions = first_step_rows(len(inputs), rows, seed)
    orders = time_orders(len(positions), inputs.shape[2], seed)
    chosen = inputs[positions]
    again = attribute_in_chunks(model, chosen, method=method, space=space, background=background,
                                seed=chunk_seed(seed, "attributions", "first_step", method),
                                executor=executor or LocalExecutor(), chunk_rows=chunk_rows, target=target[positions],
                                baselines=shuffled_time_baseline(chosen, orders),
                                work=("attributions", "first_step", method), **options)
    return FirstStep(method=method, baseline=baseline, positions=positions, orders=orders,
                     audit_share=first_step_shares(values[positions]), shuffled_share=first_step_shares(again.values),
                     shuffled_values=again.values)
