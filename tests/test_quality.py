"""Explanation quality checks: randomisation sanity check, deletion/insertion, infidelity, sensitivity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from torch import nn

from scrutiny.audit.attributions.explain import feature_space_for
from scrutiny.audit.attributions.feature_space import FeatureSpace
from scrutiny.audit.attributions.methods import ExplainedOutput, attribute
from scrutiny.audit.attributions.quality import (
    deletion_insertion,
    infidelity_sensitivity,
    randomisation_check,
    randomise_weights,
)


def _linear(weights):
    model = nn.Linear(len(weights), 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0] * len(weights), weights]))
        model.bias.zero_()
    return model.eval()


def _flat_space(d):
    return FeatureSpace(names=tuple(f"x{i}" for i in range(d)), groups=tuple((i,) for i in range(d)),
                        categorical=(False,) * d, input_shape=(d,), kind="tabular")


@pytest.fixture(scope="module")
def adult_sample(trained):
    dataset, result, _ = trained("adult", "mlp")
    rows = np.random.default_rng(0).choice(len(dataset.test), 40, replace=False)
    return dataset, result.model, dataset.encode(dataset.test.X.iloc[np.sort(rows)]), dataset.encode(dataset.train.X)


def test_randomisation_passes_for_ig_and_fails_for_an_explainer_that_ignores_the_model(adult_sample):
    dataset, model, X, background = adult_sample
    space = feature_space_for(dataset)

    def ig(m, x):
        return attribute(m, x, method="integrated_gradients", space=space, background=background).by_feature(space)

    passed = randomisation_check(model, X, ig)
    assert passed.passed and passed.spearman_median < 0.5
    ignores_model = randomisation_check(model, X, lambda m, x: space.sum_by_feature(x))
    assert not ignores_model.passed and ignores_model.spearman_median == pytest.approx(1.0)


def test_randomise_weights_changes_every_parameter_and_leaves_the_original(adult_sample):
    _, model, X, _ = adult_sample
    before = {k: v.clone() for k, v in model.state_dict().items()}
    randomised = randomise_weights(model, seed=3)
    for name, parameter in randomised.named_parameters():
        assert not torch.equal(parameter, dict(model.named_parameters())[name]), name
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again = randomise_weights(model, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(randomised.parameters(), again.parameters()))


def test_deletion_and_insertion_beat_random_orders_for_exact_attributions():
    rng = np.random.default_rng(0)
    weights = [3.0, -2.0, 1.0, 0.5, -0.25, 0.1]
    model, space = _linear(weights), _flat_space(6)
    X = rng.normal(size=(30, 6)).astype(np.float32)
    baseline = np.zeros(6, dtype=np.float32)
    target = np.ones(30, dtype=np.int64)
    exact = X * np.array(weights)  # each feature's exact contribution to the log-odds w·x
    curves = deletion_insertion(model, X, exact, target, baseline, space, n_random=5)
    with torch.no_grad():
        p_x = torch.softmax(model(torch.from_numpy(X)), 1)[:, 1].numpy()
    np.testing.assert_allclose(curves.deletion[0], p_x.mean(), rtol=1e-6)
    np.testing.assert_allclose(curves.deletion[-1], 0.5, rtol=1e-6)  # all deleted: the baseline, p = 0.5
    np.testing.assert_allclose(curves.insertion[-1], p_x.mean(), rtol=1e-6)
    assert curves.deletion_auc.mean() < curves.random_deletion_auc.mean() - 0.05
    assert curves.insertion_auc.mean() > curves.random_insertion_auc.mean() + 0.05
    worst = deletion_insertion(model, X, -exact, target, baseline, space, n_random=1)
    assert worst.deletion_auc.mean() > curves.random_deletion_auc.mean()


def test_infidelity_zero_for_gradients_of_a_linear_model_and_sensitivity():
    rng = np.random.default_rng(1)
    model = _linear([1.0, -2.0, 0.5, 3.0])
    X = rng.normal(size=(16, 4)).astype(np.float32)
    target = np.ones(16, dtype=np.int64)
    saliency = Saliency(ExplainedOutput(model))

    def explain_fn(x, target):
        return saliency.attribute(x, target=target, abs=False)

    gradients = explain_fn(torch.from_numpy(X), torch.from_numpy(target)).numpy()
    infid, sens = infidelity_sensitivity(model, X, gradients, target, explain_fn=explain_fn)
    assert np.all(np.abs(infid) < 1e-6)  # float32 round-off only: f(x) − f(x − I) = I·∇f exactly for a linear model
    assert np.all(sens < 1e-6)  # a linear model's gradient does not move
    noise, _ = infidelity_sensitivity(model, X, rng.normal(size=X.shape).astype(np.float32), target)
    assert np.median(noise) > 1e-2
