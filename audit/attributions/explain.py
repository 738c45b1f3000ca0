"""The attribution family: explain a model on a sample of a data set's test split.

:func:`explain` runs several attribution methods on the same seeded sample, names the
features after the original columns (or image patches), and adds global importance with
bootstrap intervals and the agreement between every pair of methods.

Each method runs chunk by chunk (:func:`attribute_in_chunks`): the explained rows are cut into
chunks of ``chunk_rows`` rows, each chunk's random draws are seeded by (seed, "attributions",
method, chunk index) (:meth:`~scrutiny.audit.run.executor.Chunk.seed`), what every row shares
(the baseline, the background sample) is drawn once from the run's seed, and the chunks' results
are joined in chunk order. So a row's attribution depends on the seed and its chunk only, and
the result is the same bytes whichever executor runs the chunks, in whatever order.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from scrutiny.audit.attributions.feature_space import FeatureSpace, patch_groups, tabular_space
from scrutiny.audit.attributions.importance import Agreement, Importance, agreement_matrix, global_importance
from scrutiny.audit.attributions.methods import (
    PER_ROW_BASELINES,
    Attribution,
    attribute,
    check_request,
    resolve_baseline,
)
from scrutiny.audit.attributions.quality import (
    DeletionCurves,
    RandomisationResult,
    deletion_insertion,
    infidelity_sensitivity,
    randomisation_check,
)
from scrutiny.audit.attributions.registry import ALIASES, METHOD_INFO, resolve_methods
from scrutiny.audit.run.executor import CHUNK_ROWS, Chunk, Executor, LocalExecutor, work_chunks
from scrutiny.errors import InputError
from scrutiny.limits import check_int
from scrutiny.models import Dataset

__all__ = ["ALIASES", "Explanations", "Quality", "attribute_in_chunks", "explain", "feature_space_for", "resolve_methods",
           "sample_test_rows"]


@dataclass
class Quality:
    """Quality checks of one method's attributions (see :mod:`.quality`)."""

    deletion: DeletionCurves
    infidelity: np.ndarray
    sensitivity: np.ndarray
    randomisation: RandomisationResult | None   # None: no weights to re-initialise (an ONNX model without a twin)


@dataclass
class Explanations:
    """Everything the attribution family found on one sample of the test split."""

    rows: np.ndarray                      # indices into the test split
    space: FeatureSpace
    attributions: dict[str, Attribution]
    per_feature: dict[str, np.ndarray]    # method -> (N, n_features)
    importance: dict[str, Importance]
    agreements: list[Agreement]
    quality: dict[str, Quality] | None = None


def feature_space_for(dataset: Dataset, preprocessor=None) -> FeatureSpace:
    """Original features of a table, 2×2 patches of an image."""
    if dataset.spec.task == "image":
        return patch_groups(tuple(dataset.spec.image_shape))
    return tabular_space(preprocessor or dataset.preprocessor)


def sample_test_rows(dataset: Dataset, samples: int, seed: int = 0):
    """A seeded sample of ``samples`` test rows (all if fewer): sorted indices and raw features."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(dataset.test), size=min(samples, len(dataset.test)), replace=False))
    return rows, (dataset.test.X.iloc[rows] if hasattr(dataset.test.X, "iloc") else dataset.test.X[rows])


def explain(
    model: nn.Module,
    dataset: Dataset,
    *,
    methods: list[str],
    samples: int = 200,
    preprocessor: Any = None,
    seed: int = 0,
    top_k: int = 5,
    n_boot: int = 1000,
    quality: bool = False,
    quality_samples: int | None = None,
    progress: bool = False,
    gradient_model: nn.Module | None = None,
    executor: Executor | None = None,
    chunk_rows: int = CHUNK_ROWS,
    **options: Any,
) -> Explanations:
    """Attributions of several methods on ``samples`` seeded test rows, with global
    importance and agreement.

    Args:
        model: classifier returning logits.
        dataset: the data set; its test split is explained, its training split is the
            background.
        methods: names from :data:`~scrutiny.audit.attributions.methods.METHODS` (or aliases).
        samples: test rows to explain (all if fewer). Default: 200
        preprocessor: the model's own preprocessing (a checkpoint's). Default: the data set's.
        seed: seeds the sample choice and every method. Default: 0
        top_k: k of the top-k overlap. Default: 5
        n_boot: bootstrap resamples of the importance intervals. Default: 1000
        quality: also run the quality checks per method: deletion/insertion curves against
            random orders, captum's infidelity and sensitivity_max (5 perturbations of each
            row, explained again), and the parameter-randomisation check (which explains the
            sample a second time, on a re-initialised model). Default: False
        quality_samples: run the quality checks on the first this many explained rows (they
            re-explain every row several times). Default: all
        progress: show a progress bar per method over its chunks, as they finish wherever they run.
        gradient_model: for a ``model`` without gradients (an ONNX file), a PyTorch twin that gives
            its outputs: the methods that need gradients, and the parameter-randomisation check
            (which needs weights), run on it; the others on ``model``. Default: ``model``.
        executor: where the chunks of rows are explained (:mod:`scrutiny.audit.run.executor`).
            The result does not depend on it. Default: a ``LocalExecutor``
        chunk_rows: rows per chunk; with ``seed`` it fixes every random draw (module docstring).
            Default: ``CHUNK_ROWS`` (64)
        **options: passed to :func:`~scrutiny.audit.attributions.methods.attribute`
            (``n_steps``, ``n_samples``, ``batch_size``, ``baselines``).

    Example:
        >>> data = load_dataset("breast_cancer")  # doctest: +SKIP
        >>> found = explain(train_on(data).model, data, methods=["ig", "shap"], samples=20)  # doctest: +SKIP
        >>> found.agreements[0].spearman_median > 0.5  # doctest: +SKIP
        True
    """
    methods = resolve_methods(methods)
    for name, value in (("samples", samples), ("seed", seed), ("top_k", top_k), ("chunk_rows", chunk_rows)):
        check_int(name, value)
    check_int("n_boot", n_boot, limit="importance_boot")
    if quality_samples is not None:
        check_int("quality_samples", quality_samples)
    encode = (preprocessor or dataset.preprocessor).transform
    rows, test_X = sample_test_rows(dataset, samples, seed)
    inputs, background = encode(test_X), encode(dataset.train.X)
    space = feature_space_for(dataset, preprocessor)
    attributions, per_feature, importance, checks = {}, {}, {}, {}
    weights = gradient_model if gradient_model is not None else model
    for method in methods:
        explained = weights if METHOD_INFO[method].needs_gradients else model
        result = attribute_in_chunks(explained, inputs, method=method, space=space, background=background, seed=seed,
                                     executor=executor, chunk_rows=chunk_rows, progress=progress, **options)
        attributions[method] = result
        per_feature[method] = result.by_feature(space)
        importance[method] = global_importance(per_feature[method], list(space.names), n_boot=n_boot, seed=seed)
        if quality:
            k = len(rows) if quality_samples is None else max(1, min(quality_samples, len(rows)))
            checks[method] = _quality(explained, inputs[:k], _first(result, k), per_feature[method][:k], space,
                                      background, seed, options, weights=None if _weightless(weights) else weights)
    return Explanations(
        rows=rows, space=space, attributions=attributions, per_feature=per_feature, importance=importance,
        agreements=agreement_matrix(per_feature, k=top_k), quality=checks if quality else None,
    )


def attribute_in_chunks(
    model: nn.Module,
    inputs: np.ndarray,
    *,
    method: str,
    space: FeatureSpace,
    background: np.ndarray,
    seed: int = 0,
    executor: Executor | None = None,
    chunk_rows: int = CHUNK_ROWS,
    target: np.ndarray | int | None = None,
    baselines: str | np.ndarray | None = None,
    n_background: int | None = None,
    progress: bool = False,
    work: tuple[str | int, ...] | None = None,
    **options: Any,
) -> Attribution:
    """:func:`~scrutiny.audit.attributions.methods.attribute` of ``inputs``, chunk by chunk.

    The rows are cut into chunks of ``chunk_rows``; chunk ``i`` is explained with the seed
    ``chunk_seed(seed, "attributions", method, i)``, by ``executor``; the baseline (a sample of
    ``background`` rows for the SHAP methods) is drawn once with ``seed`` and is every chunk's.
    The chunks' results are joined in chunk order; the settings record ``seed`` (the run's) and
    ``chunk_rows``. Row ``r``'s values depend on ``seed``, ``chunk_rows`` and the rows of its chunk
    only: never on the executor, the order the chunks run in, or ``batch_size`` (up to float32
    rounding in the model's batched arithmetic, for the methods without random draws).

    Args:
        model, inputs, method, space, background, target, baselines, n_background: as for
            :func:`~scrutiny.audit.attributions.methods.attribute`.
        seed: the run's seed. Default: 0
        executor: runs the chunks. Default: a ``LocalExecutor``
        chunk_rows: rows per chunk. Default: ``CHUNK_ROWS`` (64)
        progress: show a bar over the chunks, each counted when it finishes, wherever it ran (the
            chunks themselves show none: many would interleave).
        work: the piece of work the chunks belong to, which their seeds and the manifest name.
            Default: ``("attributions", method)``
        **options: the other settings of ``attribute`` (``n_steps``, ``n_samples``, ``batch_size``, …).

    Example:
        >>> a = attribute_in_chunks(model, x, method="kernel_shap", space=space, background=bg,
        ...                         executor=RayExecutor(num_cpus=2))  # doctest: +SKIP
        >>> a.settings["chunk_rows"], a.values.shape  # doctest: +SKIP
        (64, (200, 102))
    """
    from tqdm.auto import tqdm

    check_int("seed", seed)
    check_int("chunk_rows", chunk_rows)
    check_request(model, inputs, method=method, space=space)  # here, not as a failed task
    inputs = np.asarray(inputs, dtype=np.float32)
    background = np.asarray(background, dtype=np.float32)
    n = len(inputs)
    baseline_name, base = resolve_baseline(method, space, background, baselines, n_background=n_background, seed=seed)
    per_row = method in PER_ROW_BASELINES and len(base) == n and n > 1
    if method in PER_ROW_BASELINES and len(base) not in (1, n):
        raise InputError(f"{method} takes one baseline or one per input row; got {len(base)} for {n} rows")
    if target is not None:
        target = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))
    job = _Job(method=method, space=space, base=base, per_row_base=per_row, target=target, seed=seed,
               options=options, compute=_Compute.here())
    start = time.perf_counter()
    chunks = work_chunks(work or ("attributions", method), n, chunk_rows)
    with tqdm(total=len(chunks), desc=method, unit="chunk", disable=not progress) as bar:
        parts = (executor or LocalExecutor()).map(_attribute_chunk, chunks, model, inputs, background, job,
                                                  progress=lambda done, _: bar.update(done - bar.n))
    return _joined(parts, baseline_name=baseline_name, base=base, seed=seed, chunk_rows=chunk_rows,
                   seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class _Job:
    """What every chunk of one method's attributions shares, but the model and the arrays."""

    method: str
    space: FeatureSpace
    base: np.ndarray                # the baseline, drawn once with the run's seed
    per_row_base: bool              # ``base`` holds one baseline per input row
    target: np.ndarray | None       # per input row
    seed: int                       # the run's
    options: dict[str, Any]
    compute: _Compute               # the driver's


@dataclass(frozen=True)
class _Compute:
    """The thread counts and torch's deterministic-algorithms setting a chunk runs under: a Ray
    worker has its own (Ray gives a task one thread), and the number of threads a float sum is
    split over changes its last bits (torch's float32 reductions; NumPy's BLAS in KernelSHAP's
    and LIME's float64 solves)."""

    torch_threads: int
    blas_threads: int | None        # None: no BLAS library loaded
    deterministic: bool
    warn_only: bool

    @classmethod
    def here(cls) -> _Compute:
        from threadpoolctl import threadpool_info

        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        return cls(torch_threads=torch.get_num_threads(), blas_threads=max(blas) if blas else None,
                   deterministic=torch.are_deterministic_algorithms_enabled(),
                   warn_only=torch.is_deterministic_algorithms_warn_only_enabled())

    @contextmanager
    def applied(self):
        """These settings for the block, the process's own restored after (a local executor runs
        chunks in the caller's process)."""
        from threadpoolctl import threadpool_limits

        own = _Compute.here()
        torch.set_num_threads(self.torch_threads)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.warn_only)
        try:
            with threadpool_limits(limits=self.blas_threads, user_api="blas"):
                yield
        finally:
            torch.set_num_threads(own.torch_threads)
            torch.use_deterministic_algorithms(own.deterministic, warn_only=own.warn_only)


def _attribute_chunk(chunk: Chunk, model: nn.Module, inputs: np.ndarray, background: np.ndarray,
                     job: _Job) -> Attribution:
    """One chunk's attributions, under the driver's thread counts and torch settings.
    Module-level: Ray ships it by reference."""
    rows = chunk.rows
    with job.compute.applied():
        return attribute(
            model, inputs[rows], method=job.method, space=job.space, background=background,
            target=None if job.target is None else job.target[rows],
            baselines=job.base[rows] if job.per_row_base else job.base,
            seed=chunk.seed(job.seed), **job.options,
        )


def _joined(parts: list[Attribution], *, baseline_name: str, base: np.ndarray, seed: int, chunk_rows: int,
            seconds: float) -> Attribution:
    """The chunks' attributions as one, in chunk order."""
    def rows(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays)

    first = parts[0]
    return Attribution(
        method=first.method, values=rows("values"), target=rows("target"), output=first.output,
        baseline=baseline_name, baseline_values=base, error=rows("error"), error_name=first.error_name,
        output_change=rows("output_change"), seconds=seconds,
        settings={**_joined_settings([p.settings for p in parts]), "seed": seed, "chunk_rows": chunk_rows},
        local_intercept=rows("local_intercept"), local_terms=rows("local_terms"),
    )


def _joined_settings(settings: list[dict]) -> dict:
    """One method's settings over its chunks: the row counts added up (integrated gradients'
    ``steps_used``, rows per step count; KernelSHAP's ``coalitions_used``, rows per budget, and
    ``rows_refined``); every other setting describes the method and is the same in every chunk
    (the chunk's own ``seed`` aside)."""
    joined: dict[str, Any] = {}
    for key in settings[0]:
        values = [s[key] for s in settings]
        if key == "seed":
            continue
        if key in ("steps_used", "coalitions_used"):
            total: Counter[int] = Counter()
            for counts in values:
                total.update(counts)
            joined[key] = dict(sorted(total.items()))
        elif key == "rows_refined":
            joined[key] = sum(values)
        elif all(v == values[0] for v in values):
            joined[key] = values[0]
        else:  # the method's settings cannot depend on the rows: a mistake here, not the user's
            raise RuntimeError(f"the chunks of {key!r} disagree: {sorted(set(map(str, values)))}")
    return joined


def _first(result: Attribution, k: int) -> Attribution:
    """The attribution of the first ``k`` rows."""
    def head(a):
        return None if a is None else a[:k]

    return replace(result, values=result.values[:k], target=result.target[:k], error=head(result.error),
                   output_change=head(result.output_change), local_intercept=head(result.local_intercept),
                   local_terms=head(result.local_terms))


def _weightless(model: nn.Module) -> bool:
    """A model without parameters to re-initialise (an ONNX file run by onnxruntime)."""
    return next(model.parameters(), None) is None


def _quality(model, inputs, result: Attribution, per_feature, space, background, seed, options, *,
             weights: nn.Module | None) -> Quality:
    """The quality checks; the randomisation check re-initialises ``weights`` (the model, or its
    PyTorch twin), and is left out (None) without one."""
    import torch

    baseline = result.baseline_values.mean(axis=0)

    def again(m: nn.Module, x: np.ndarray, target: np.ndarray) -> Attribution:
        """The same method and settings on other inputs or another model."""
        return attribute(m, x, method=result.method, space=space, background=background, target=target, seed=seed,
                         **options)

    def explain_batch(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # sensitivity_max's explanation_func: perturbed copies of the inputs
        values = again(model, x.detach().cpu().numpy(), target.detach().cpu().numpy()).values
        return torch.from_numpy(values.astype(np.float32)).to(x.device)

    infid, sens = infidelity_sensitivity(model, inputs, result.values, result.target, explain_fn=explain_batch,
                                         n_perturb=5, seed=seed)

    def same_method(m, x):
        return again(m, x, result.target).by_feature(space)

    return Quality(
        deletion=deletion_insertion(model, inputs, per_feature, result.target, baseline, space, seed=seed),
        infidelity=infid,
        sensitivity=sens,
        randomisation=randomisation_check(weights, inputs, same_method, seed=seed) if weights is not None else None,
    )
