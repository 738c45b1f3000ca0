"""The attribution family: explain a model on a sample of a data set's test split.

:func:`explain` runs several attribution methods on the same seeded sample, names the
features after the original columns (or image patches), and adds global importance with
bootstrap intervals and the agreement between every pair of methods.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch import nn

from scrutiny.audit.attributions.feature_space import FeatureSpace, patch_groups, tabular_space
from scrutiny.audit.attributions.importance import Agreement, Importance, agreement_matrix, global_importance
from scrutiny.audit.attributions.methods import Attribution, attribute
from scrutiny.audit.attributions.quality import (
    DeletionCurves,
    RandomisationResult,
    deletion_insertion,
    infidelity_sensitivity,
    randomisation_check,
)
from scrutiny.audit.attributions.registry import ALIASES, METHOD_INFO, resolve_methods
from scrutiny.limits import check_int
from scrutiny.models import Dataset

__all__ = ["ALIASES", "Explanations", "Quality", "explain", "feature_space_for", "resolve_methods", "sample_test_rows"]


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
        progress: show progress bars.
        gradient_model: for a ``model`` without gradients (an ONNX file), a PyTorch twin that gives
            its outputs: the methods that need gradients, and the parameter-randomisation check
            (which needs weights), run on it; the others on ``model``. Default: ``model``.
        **options: passed to :func:`~scrutiny.audit.attributions.methods.attribute`
            (``n_steps``, ``n_samples``, ``batch_size``, ``baselines``).

    Example:
        >>> data = load_dataset("breast_cancer")  # doctest: +SKIP
        >>> found = explain(train_on(data).model, data, methods=["ig", "shap"], samples=20)  # doctest: +SKIP
        >>> found.agreements[0].spearman_median > 0.5  # doctest: +SKIP
        True
    """
    methods = resolve_methods(methods)
    for name, value in (("samples", samples), ("seed", seed), ("top_k", top_k), ("n_boot", n_boot)):
        check_int(name, value)
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
        result = attribute(explained, inputs, method=method, space=space, background=background, seed=seed,
                           progress=progress, **options)
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


def _first(result: Attribution, k: int) -> Attribution:
    """The attribution of the first ``k`` rows."""
    def head(a):
        return None if a is None else a[:k]

    return replace(result, values=result.values[:k], target=result.target[:k], error=head(result.error),
                   output_change=head(result.output_change))


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
