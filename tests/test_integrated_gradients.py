"""The batched integrated gradients give captum's numbers."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients

from scrutiny.audit.attributions.integrated_gradients import gauss_legendre, integrated_gradients
from scrutiny.audit.attributions.methods import ExplainedOutput
from scrutiny.models import build_model


def test_nodes_integrate_polynomials_exactly():
    alphas, weights = gauss_legendre(8)
    assert weights.sum() == pytest.approx(1.0)
    for power in range(15):  # an n-point rule is exact up to degree 2n − 1
        assert (weights * alphas**power).sum() == pytest.approx(1 / (power + 1))


@pytest.mark.parametrize("arch, shape, classes", [("mlp", (12,), 2), ("cnn", (1, 8, 8), 10), ("transformer", (6,), 3)])
@pytest.mark.parametrize("steps", [16, 64])
def test_equals_captum(arch, shape, classes, steps):
    torch.manual_seed(0)
    model = ExplainedOutput(build_model(arch, input_shape=shape, n_classes=classes)).eval()
    x = torch.rand(7, *shape)
    baseline = torch.rand(1, *shape) * 0.1
    target = torch.randint(0, classes, (7,))
    ours = integrated_gradients(model, x, baseline, target, n_steps=steps, max_rows=50)  # several chunks
    reference = IntegratedGradients(model).attribute(x, baselines=baseline, target=target, n_steps=steps,
                                                     method="gausslegendre")
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)
    per_row = integrated_gradients(model, x, baseline.expand_as(x).clone(), target, n_steps=steps)
    torch.testing.assert_close(per_row, ours, rtol=1e-5, atol=1e-7)


def test_works_under_no_grad():
    torch.manual_seed(0)
    model = ExplainedOutput(build_model("mlp", input_shape=(5,), n_classes=2)).eval()
    x, baseline, target = torch.rand(3, 5), torch.zeros(1, 5), torch.tensor([0, 1, 1])
    expected = integrated_gradients(model, x, baseline, target, n_steps=16)
    with torch.no_grad():
        torch.testing.assert_close(integrated_gradients(model, x, baseline, target, n_steps=16), expected)
