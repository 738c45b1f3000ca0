"""Explanation quality: are the attributions faithful to the model, stable, and about the model?

- :func:`infidelity_sensitivity`: captum.metrics ``infidelity`` (how well attributions predict
  the output change under Gaussian perturbations) and ``sensitivity_max`` (how much the
  explanation moves within a small ball around the input).
- :func:`deletion_insertion`: remove (or insert) interpretable features in attribution order,
  replacing them by the baseline, and follow the target-class probability; the area under
  the curve is compared with random orders. Faithful attributions delete faster (lower
  deletion AUC) and insert faster (higher insertion AUC) than chance.
- :func:`randomisation_check`: the model-parameter randomisation test (Adebayo et al., 2018,
  "Sanity Checks for Saliency Maps"): re-initialise the weights, explain again and measure
  the rank correlation with the original attributions. An explanation that barely changes
  does not depend on what the model learned, and fails.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from scrutiny.audit.attributions.feature_space import FeatureSpace
from scrutiny.audit.attributions.importance import row_spearman
from scrutiny.audit.attributions.methods import ExplainedOutput, batched_outputs, to_device

__all__ = [
    "infidelity_sensitivity", "DeletionCurves", "deletion_insertion", "RandomisationResult", "randomisation_check",
]


def infidelity_sensitivity(
    model: nn.Module,
    inputs: np.ndarray,
    values: np.ndarray,
    target: np.ndarray,
    *,
    explain_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    noise: float = 0.1,
    radius: float = 0.02,
    n_perturb: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """captum's infidelity of ``values`` and, with ``explain_fn``, sensitivity_max.

    Args:
        model: the classifier (its explained output, as in :mod:`.attributions`, is used).
        inputs: (N, *input_shape).
        values: attributions of ``inputs``, same shape.
        target: explained class per sample.
        explain_fn: ``explain_fn(inputs, target) -> attributions`` for sensitivity_max; the
            attribution method itself. Default: None (sensitivity not computed).
        noise: standard deviation of infidelity's Gaussian perturbations. Default: 0.1
        radius: L∞ radius of sensitivity_max's uniform perturbations. Default: 0.02
        n_perturb: perturbations per sample. Default: 10
        seed: seeds the perturbations. Default: 0

    Returns:
        Per-sample infidelity, and per-sample sensitivity (or None).
    """
    from captum.metrics import infidelity, sensitivity_max

    wrapped = ExplainedOutput(model).eval()
    x = to_device(np.asarray(inputs, dtype=np.float32), wrapped)
    t = to_device(np.asarray(target, dtype=np.int64), wrapped)
    attributions = to_device(np.asarray(values, dtype=np.float32), wrapped)

    def perturb(batch):
        perturbation = torch.randn_like(batch) * noise
        return perturbation, batch - perturbation

    torch.manual_seed(seed)
    # normalize: attributions are rescaled by the best-fitting factor first, so methods whose
    # attributions live on different scales (gradients vs contributions) compare fairly
    infid = infidelity(wrapped, perturb, x, attributions, target=t, n_perturb_samples=n_perturb,
                       normalize=True).detach().cpu().numpy()
    sens = None
    if explain_fn is not None:
        torch.manual_seed(seed)
        def explanation(batch, target):  # captum passes (and then expects) a tuple on some calls
            if isinstance(batch, tuple):
                return (explain_fn(batch[0], target),)
            return explain_fn(batch, target)

        sens = sensitivity_max(explanation, x, target=t, perturb_radius=radius,
                               n_perturb_samples=n_perturb).detach().cpu().numpy()
    return infid.astype(np.float64), None if sens is None else sens.astype(np.float64)


@dataclass
class DeletionCurves:
    """Target-class probability as features are deleted / inserted, averaged over samples.

    ``fractions[k]`` is the share of features removed (inserted) at step k. AUCs are per
    sample (trapezoid over fractions); ``random_*`` use random feature orders.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion: np.ndarray
    random_insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    random_deletion_auc: np.ndarray
    random_insertion_auc: np.ndarray


def _probabilities(model: nn.Module, X: np.ndarray, target: np.ndarray, batch: int = 8192) -> np.ndarray:
    return batched_outputs(model, X, batch, probabilities=True)[np.arange(len(X)), target]


def _curve(model, inputs, baseline, space: FeatureSpace, orders: np.ndarray, target, insert: bool) -> np.ndarray:
    """Probability of the target after 0..F features of each sample's order are changed."""
    n, f = orders.shape
    flat_inputs = inputs.reshape(n, -1)
    flat_base = np.broadcast_to(baseline.reshape(1, -1), flat_inputs.shape)
    start, other = (flat_base, flat_inputs) if insert else (flat_inputs, flat_base)
    steps = np.repeat(start[:, None, :], f + 1, axis=1).copy()  # (n, f+1, d)
    for k in range(1, f + 1):
        steps[:, k:, :] = steps[:, k - 1:k, :]
        for i in range(n):
            idx = list(space.groups[orders[i, k - 1]])
            steps[i, k, idx] = other[i, idx]
    X = steps.reshape((n * (f + 1), *inputs.shape[1:])).astype(np.float32)
    return _probabilities(model, X, np.repeat(target, f + 1)).reshape(n, f + 1)


def deletion_insertion(
    model: nn.Module,
    inputs: np.ndarray,
    per_feature: np.ndarray,
    target: np.ndarray,
    baseline: np.ndarray,
    space: FeatureSpace,
    *,
    n_random: int = 5,
    seed: int = 0,
) -> DeletionCurves:
    """Deletion and insertion curves of attributions against random feature orders.

    Args:
        model: classifier returning logits.
        inputs: (N, *input_shape).
        per_feature: attributions per interpretable feature toward the target, (N, F).
        target: class per sample.
        baseline: what a deleted feature becomes, one input (e.g. the attribution baseline).
        space: the interpretable features.
        n_random: random orders averaged for the reference curves. Default: 5
        seed: seeds the random orders. Default: 0
    """
    model = model.eval()
    inputs = np.asarray(inputs, dtype=np.float32)
    baseline = np.asarray(baseline, dtype=np.float32).reshape(inputs.shape[1:])
    order = np.argsort(-np.asarray(per_feature), axis=1, kind="stable")
    rng = np.random.default_rng(seed)
    f = order.shape[1]
    fractions = np.arange(f + 1) / f
    deletion = _curve(model, inputs, baseline, space, order, target, insert=False)
    insertion = _curve(model, inputs, baseline, space, order, target, insert=True)
    rand_del, rand_ins = [], []
    for _ in range(n_random):
        random_order = np.argsort(rng.random(order.shape), axis=1)
        rand_del.append(_curve(model, inputs, baseline, space, random_order, target, insert=False))
        rand_ins.append(_curve(model, inputs, baseline, space, random_order, target, insert=True))
    rand_del, rand_ins = np.mean(rand_del, axis=0), np.mean(rand_ins, axis=0)

    def auc(curves):
        return np.trapezoid(curves, fractions, axis=1)

    return DeletionCurves(
        fractions=fractions,
        deletion=deletion.mean(axis=0), insertion=insertion.mean(axis=0),
        random_deletion=rand_del.mean(axis=0), random_insertion=rand_ins.mean(axis=0),
        deletion_auc=auc(deletion), insertion_auc=auc(insertion),
        random_deletion_auc=auc(rand_del), random_insertion_auc=auc(rand_ins),
    )


@dataclass
class RandomisationResult:
    """Rank correlation between attributions of the trained and the re-initialised model."""

    spearman_per_sample: np.ndarray
    threshold: float

    @property
    def spearman_median(self) -> float:
        return float(np.nanmedian(self.spearman_per_sample))

    @property
    def passed(self) -> bool:
        """The explanation changed: median rank correlation below the threshold."""
        return self.spearman_median < self.threshold


def randomise_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every parameter re-initialised (its modules' own
    ``reset_parameters``; buffers such as batch-norm statistics reset too)."""
    randomised = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in randomised.modules():
        for reset in ("reset_parameters", "reset_running_stats"):
            if callable(getattr(module, reset, None)):
                getattr(module, reset)()
    for name, parameter in randomised.named_parameters():  # parameters no module resets
        original = dict(model.named_parameters())[name]
        if torch.equal(parameter, original):
            with torch.no_grad():
                parameter.normal_(0.0, float(original.std()) if original.numel() > 1 else 1.0)
    return randomised.eval()


def randomisation_check(
    model: nn.Module,
    inputs: np.ndarray,
    explainer: Callable[[nn.Module, np.ndarray], np.ndarray],
    *,
    threshold: float = 0.5,
    seed: int = 0,
) -> RandomisationResult:
    """Model-parameter randomisation test (Adebayo et al., 2018).

    Args:
        model: the trained classifier.
        inputs: inputs to explain, (N, *input_shape).
        explainer: ``explainer(model, inputs) -> (N, F)`` per-feature attributions; called
            on the trained and on the randomised model.
        threshold: the check passes when the median per-sample Spearman ρ of |attribution|
            falls below this. Default: 0.5
        seed: seeds the re-initialisation. Default: 0
    """
    original = np.abs(np.asarray(explainer(model, inputs), dtype=np.float64)).reshape(len(inputs), -1)
    randomised = np.abs(np.asarray(explainer(randomise_weights(model, seed), inputs), dtype=np.float64))
    return RandomisationResult(
        spearman_per_sample=row_spearman(original, randomised.reshape(len(inputs), -1)), threshold=threshold,
    )
