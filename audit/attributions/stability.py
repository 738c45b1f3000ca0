"""Stability of explanations: the same method, the same rows, other seeds.

A sampled explainer (KernelSHAP's coalitions, LIME's perturbations, GradientSHAP's baseline
draws) gives other attributions with another seed; when its feature ranking or an adverse-action
notice's reasons move with the seed, they describe the draw, not the model. :func:`stability`
re-explains a seeded subset of the explained rows with other seeds, and LIME once more with
twice the sample count (lime#550: its weights move with the count), and compares each rerun
with the audit's own attributions of those rows. Only the method's own draws change (KernelSHAP's
coalitions, LIME's perturbations, GradientSHAP's choice of baseline rows and noise): every rerun
takes the audit's baseline, the same background rows. Which background rows stand for the data
is a choice the report states (the baseline); redrawing it would measure that choice, not
whether the explainer repeats itself on the question it was asked.

- per row, the Spearman correlation of |attribution| (the feature ranking a reader sees), and
  the overlap of the top-k features (k = 4, the number of reasons a notice states);
- for rows decided unfavourably (binary tabular data with a favourable class), whether the
  principal reasons, the up-to-four features pushing furthest toward the unfavourable outcome
  (:mod:`.adverse_action`), form the same set.

A row's figure is its mean over the reruns (its reasons: unchanged in every rerun); the method's
figures are the median (Spearman), the mean (top-k overlap) and the share (reasons) over rows.

Each rerun is explained chunk by chunk like the audit's own attributions
(:func:`~.explain.attribute_in_chunks`), on the audit's executor, as the piece of work
``("attributions", "stability", method, r)`` under the seed ``chunk_seed(seed, "attributions",
"stability", method, r)``; every chunk's draws follow from it and the chunk's index. So the
figures depend on the run's seed and ``chunk_rows`` only, never on ``batch_size``, the executor
or the order the chunks run in. A method that draws nothing at random is rerun once: the check
then says that it is deterministic (Spearman 1 up to float32 rounding of its batched arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from scrutiny.audit.attributions.feature_space import FeatureSpace
from scrutiny.audit.attributions.importance import row_spearman
from scrutiny.audit.attributions.methods import PER_ROW_BASELINES, resolve_baseline
from scrutiny.audit.attributions.registry import METHOD_INFO
from scrutiny.audit.run.executor import CHUNK_ROWS, Executor, LocalExecutor, chunk_rng, chunk_seed
from scrutiny.errors import InputError
from scrutiny.limits import check_int

__all__ = ["STABILITY_ROWS", "REPEATS", "TOP_K", "LIME_SAMPLES_FACTOR", "Rerun", "Stability", "stability",
           "stability_rows", "principal_reasons"]

STABILITY_ROWS = 50      # explained rows re-explained per method (all when fewer were explained)
REPEATS = 2              # reruns with other seeds, for a method that draws at random
TOP_K = 4                # k of the top-k overlap: the reasons an adverse-action notice states
LIME_SAMPLES_FACTOR = 2  # LIME's extra rerun: this many times the audit's sample count
UNFAVOURABLE = 0         # scrutiny's class index of the unfavourable outcome (binary tasks)


@dataclass
class Rerun:
    """One re-explanation of the subset: its seed, and its sample count where it differs from the audit's."""

    seed: int
    n_samples: int | None
    per_feature: np.ndarray       # (K, F) attributions per feature of the re-explained rows


@dataclass
class Stability:
    """How far one method's attributions of ``positions`` move between the audit's run and its reruns.

    ``spearman`` and ``top_k_overlap`` are (K, R): per re-explained row and rerun, against the
    audit's attributions of that row. ``unfavourable`` (K,) marks the rows decided unfavourably and
    ``reasons_kept`` (M,) says, for each of those, whether its principal-reason set is the audit's in
    every rerun; both None where no notices apply.
    """

    method: str
    positions: np.ndarray         # (K,) positions among the explained rows
    reruns: list[Rerun]
    k: int
    spearman: np.ndarray
    top_k_overlap: np.ndarray
    unfavourable: np.ndarray | None = None
    reasons_kept: np.ndarray | None = None

    @property
    def row_spearman(self) -> np.ndarray:
        """(K,) each row's mean Spearman over the reruns (NaN for a row whose |attributions| are all equal)."""
        with np.errstate(invalid="ignore"):
            return self.spearman.mean(axis=1)

    @property
    def spearman_median(self) -> float:
        """Median over rows of the row's mean Spearman correlation; NaN when no row has one."""
        finite = self.row_spearman[np.isfinite(self.row_spearman)]
        return float(np.median(finite)) if len(finite) else float("nan")

    @property
    def top_k_mean(self) -> float:
        """Mean over rows and reruns of the top-k overlap (a share of k)."""
        return float(self.top_k_overlap.mean())

    @property
    def reasons_unchanged(self) -> float | None:
        """Share of the unfavourable rows whose reason set no rerun changed; None without notices,
        NaN when no re-explained row was decided unfavourably."""
        if self.reasons_kept is None:
            return None
        return float(self.reasons_kept.mean()) if len(self.reasons_kept) else float("nan")


def stability_rows(n_explained: int, rows: int, seed: int) -> np.ndarray:
    """The positions among ``n_explained`` explained rows that the check re-explains: a seeded
    choice of ``rows`` (all when fewer), sorted, the same for every method of the run."""
    check_int("stability_rows", rows, limit="samples")
    if rows >= n_explained:
        return np.arange(n_explained)
    return np.sort(chunk_rng(seed, "attributions", "stability", "rows").choice(n_explained, size=rows, replace=False))


def principal_reasons(per_feature: np.ndarray, target: np.ndarray, k: int = TOP_K) -> list[frozenset[int]]:
    """Each row's principal reasons as a set of feature indices: the up-to-``k`` features whose
    attributions push furthest toward the unfavourable outcome (positive pushes only), as
    :func:`~.adverse_action.adverse_action_notices` states them. Attributions explain the target
    class: toward the unfavourable class they push with their sign, toward the favourable one
    against it."""
    values = np.asarray(per_feature, dtype=np.float64)
    push = np.where((np.asarray(target) == UNFAVOURABLE)[:, None], values, -values)
    reasons = []
    for row in push:
        order = np.argsort(-row, kind="stable")
        reasons.append(frozenset(int(j) for j in order[:k] if row[j] > 0))
    return reasons


def _top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    top_a = np.argsort(-a, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-b, axis=1, kind="stable")[:, :k]
    return np.array([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(top_a, top_b)])


def stability(
    model: nn.Module,
    inputs: np.ndarray,
    per_feature: np.ndarray,
    target: np.ndarray,
    *,
    method: str,
    space: FeatureSpace,
    background: np.ndarray,
    seed: int = 0,
    rows: int = STABILITY_ROWS,
    repeats: int = REPEATS,
    k: int = TOP_K,
    n_samples: int | None = None,
    unfavourable: np.ndarray | None = None,
    baselines: str | np.ndarray | None = None,
    chunk_rows: int = CHUNK_ROWS,
    executor: Executor | None = None,
    **options: Any,
) -> Stability:
    """Re-explain a seeded subset of the explained rows with other seeds and compare with the audit's attributions.

    Args:
        model: the model ``method`` explained (its twin for a gradient method of an ONNX model).
        inputs: the explained rows, encoded, (N, *input_shape).
        per_feature: the audit's attributions of those rows per feature, (N, F).
        target: the class each row's attributions explain, (N,).
        method, space, background: as for :func:`~.methods.attribute`.
        seed: the run's seed. Default: 0
        rows: rows re-explained (a seeded choice; all when fewer). Default: :data:`STABILITY_ROWS`
        repeats: reruns with other seeds of a method that draws at random (one for the others).
            Default: :data:`REPEATS`
        k: k of the top-k overlap. Default: :data:`TOP_K`
        n_samples: the sample count the audit ran ``method`` with (LIME: its extra rerun takes
            :data:`LIME_SAMPLES_FACTOR` times as many; passed on to every rerun). Default: the method's.
        unfavourable: (N,) the rows decided unfavourably, for the reason sets; None: no notices apply.
        baselines: the baseline the audit's attributions took (``Attribution.baseline_values``);
            every rerun takes it. Default: the one :func:`~.methods.attribute` draws with ``seed``,
            as the audit's own run of ``method`` does.
        chunk_rows: rows per chunk, as in the audit. Default: ``CHUNK_ROWS``
        executor: runs the chunks; the result does not depend on it. Default: a ``LocalExecutor``
        **options: the audit's other settings of ``method`` (``n_steps``, ``batch_size``, …).

    Example:
        >>> s = stability(model, X, result.per_feature["lime"], target, method="lime", space=space,
        ...               background=bg, n_samples=5000)  # doctest: +SKIP
        >>> s.spearman_median, s.top_k_mean, s.reasons_unchanged  # doctest: +SKIP
        (0.93, 0.88, 0.8)
    """
    from scrutiny.audit.attributions.explain import attribute_in_chunks

    check_int("repeats", repeats, limit="restarts")
    check_int("k", k, limit="top_k")
    per_feature = np.asarray(per_feature, dtype=np.float64)
    inputs = np.asarray(inputs, dtype=np.float32)
    if len(per_feature) != len(inputs) or len(target) != len(inputs):
        raise InputError(f"stability: {len(inputs)} rows, {len(per_feature)} attributions and {len(target)} targets")
    positions = stability_rows(len(inputs), rows, seed)
    sampled = METHOD_INFO[method].sampled
    plan: list[tuple[int, int | None]] = [(chunk_seed(seed, "attributions", "stability", method, r), n_samples)
                                          for r in range(1, (repeats if sampled else 1) + 1)]
    if method == "lime":
        more = (n_samples or _LIME_DEFAULT_SAMPLES) * LIME_SAMPLES_FACTOR
        plan.append((chunk_seed(seed, "attributions", "stability", method, "samples"), more))
    own = per_feature[positions]
    explained_target = np.asarray(target, dtype=np.int64)[positions]
    if baselines is None:
        baselines = resolve_baseline(method, space, np.asarray(background, dtype=np.float32), seed=seed)[1]
    base = np.asarray(baselines, dtype=np.float32) if not isinstance(baselines, str) else baselines
    if method in PER_ROW_BASELINES and not isinstance(base, str) and len(base) == len(inputs) > 1:
        base = base[positions]  # one baseline per explained row: those of the re-explained rows
    executor = executor or LocalExecutor()
    reruns = []
    for number, (rerun_seed, count) in enumerate(plan, start=1):
        result = attribute_in_chunks(model, inputs[positions], method=method, space=space, background=background,
                                     seed=rerun_seed, executor=executor, chunk_rows=chunk_rows,
                                     target=explained_target, n_samples=count, baselines=base,
                                     work=("attributions", "stability", method, number), **options)
        reruns.append(Rerun(seed=rerun_seed, n_samples=count if count != n_samples else None,
                            per_feature=result.by_feature(space).astype(np.float64)))
    k = min(k, own.shape[1])
    magnitude = np.abs(own)
    spearman = np.stack([row_spearman(magnitude, np.abs(r.per_feature)) for r in reruns], axis=1)
    overlap = np.stack([_top_k_overlap(magnitude, np.abs(r.per_feature), k) for r in reruns], axis=1)
    found = Stability(method=method, positions=positions, reruns=reruns, k=k, spearman=spearman, top_k_overlap=overlap)
    if unfavourable is not None:
        chosen = np.asarray(unfavourable, dtype=bool)[positions]
        found.unfavourable = chosen
        reasons = principal_reasons(own[chosen], explained_target[chosen])
        kept = np.ones(int(chosen.sum()), dtype=bool)
        for r in reruns:
            kept &= np.array([a == b for a, b in zip(reasons, principal_reasons(r.per_feature[chosen],
                                                                                explained_target[chosen]))], dtype=bool)
        found.reasons_kept = kept
    return found


_LIME_DEFAULT_SAMPLES = 5000  # lime's (``attribute``'s) count when none is given
