"""Deterministic sharding of the robustness family (issue 16, step 1): the attacked rows are cut
into chunks of ``chunk_rows``, each attack at each radius and the smallest-eps search run per
chunk with the chunk's own seed, and the result does not depend on where or in which order the
chunks ran (forward, reversed, on Ray workers). The seed layout is checked against attacks run
here by hand, chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from scrutiny.audit.robustness.assess import assess_robustness, constraints_for
from scrutiny.audit.robustness.attacks import perturbation_norm, run_attack
from scrutiny.audit.run.executor import LocalExecutor, RayExecutor, chunk_seed, row_chunks

from .test_robustness import NoGradients

SEED = 3
# every attack of the ensemble kinds (white-box, black-box, noise) with small settings; 40 rows in
# chunks of 16 leave a last chunk of 8, so a merge that assumed equal chunks would show
SETTINGS = dict(attacks=("pgd", "fgsm", "square", "gaussian"), eps=(0.1, 0.2), samples=40, steps=8, queries=60,
                search_steps=3, max_examples=6, seed=SEED, device="cpu", chunk_rows=16)


@pytest.fixture(scope="module")
def digits(trained):
    dataset, result, _ = trained("digits", "cnn")
    return dataset, result.model.eval()


def assert_same(a, b):
    """Every figure of two results, bit for bit."""
    assert np.array_equal(a.rows, b.rows)
    assert a.robust.keys() == b.robust.keys()
    for name in a.robust:
        assert np.array_equal(a.robust[name], b.robust[name]), name
    assert np.array_equal(a.min_eps, b.min_eps)  # inf and 0 included
    assert a.curve == b.curve
    assert a.large_eps_accuracy == b.large_eps_accuracy
    assert a.gradient == b.gradient and a.warnings == b.warnings
    assert a.settings == b.settings
    assert len(a.examples) == len(b.examples)
    for x, y in zip(a.examples, b.examples):
        assert (x.row, x.attack, x.eps, x.label, x.before, x.after) == (y.row, y.attack, y.eps, y.label, y.before, y.after)
        assert x.x_adv.tobytes() == y.x_adv.tobytes()


def test_the_order_of_execution_cannot_change_the_result(digits):
    dataset, model = digits
    forward = assess_robustness(model, dataset, executor=LocalExecutor(), **SETTINGS)
    reversed_ = assess_robustness(model, dataset, executor=LocalExecutor(order="reversed"), **SETTINGS)
    default = assess_robustness(model, dataset, **SETTINGS)
    assert_same(forward, reversed_)
    assert_same(forward, default)
    assert forward.settings["chunk_rows"] == 16 and forward.examples


def test_each_chunk_is_attacked_with_its_own_seed(digits):
    """The square attack's flags and PGD's examples, recomputed here chunk by chunk with the seeds
    the layout names (run seed, family, attack, radius index, chunk index); the search's accuracy at
    its top radius from PGD runs seeded (run seed, family, "smallest_eps", chunk index)."""
    dataset, model = digits
    result = assess_robustness(model, dataset, **SETTINGS)
    x = torch.as_tensor(dataset.encode(dataset.test.X[result.rows]))
    y = torch.as_tensor(dataset.test.y[result.rows])
    constraints = constraints_for(dataset)
    chunks = row_chunks(len(x), SETTINGS["chunk_rows"])
    assert len(chunks) == 3 and len(x) == 40
    with torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).numpy()

    def attacked(name, k, c, radius=None, steps=SETTINGS["steps"], seed=None):
        rows = chunks[c]
        seed = chunk_seed(SEED, "robustness", name, k, c) if seed is None else seed
        return run_attack(name, model, x[rows], y[rows], SETTINGS["eps"][k] if radius is None else radius,
                          constraints=constraints, steps=steps, queries=SETTINGS["queries"], seed=seed)

    for k in range(2):
        x_adv = torch.cat([attacked("square", k, c) for c in range(len(chunks))])
        with torch.no_grad():
            flags = (model(x_adv).argmax(dim=1) == y).numpy() & correct
        assert np.array_equal(flags, result.robust["square"][k]), k
    for example in result.examples:
        assert example.attack == "pgd"
        i = int(np.searchsorted(result.rows, example.row))
        c, k = i // SETTINGS["chunk_rows"], SETTINGS["eps"].index(example.eps)
        again = attacked("pgd", k, c)[i - chunks[c].start]
        assert again.numpy().tobytes() == example.x_adv.tobytes()
    top_flipped = []
    for c in range(len(chunks)):
        x_top = attacked("pgd", 0, c, radius=result.search_eps, steps=10,
                         seed=chunk_seed(SEED, "robustness", "smallest_eps", c))
        with torch.no_grad():
            top_flipped.append((model(x_top).argmax(dim=1) != y[chunks[c]]).numpy())
    assert result.large_eps_accuracy == np.mean(~np.concatenate(top_flipped) & correct)


def test_another_chunk_size_gives_a_valid_result(digits):
    """Another ``chunk_rows`` draws other random numbers, so its figures may differ: they are
    still a sound evaluation (same rows and clean accuracy, PGD hurts, radii in range)."""
    dataset, model = digits
    base = assess_robustness(model, dataset, **SETTINGS)
    other = assess_robustness(model, dataset, **{**SETTINGS, "chunk_rows": 7})
    assert np.array_equal(base.rows, other.rows)
    assert other.curve[0].clean_accuracy == base.curve[0].clean_accuracy > 0.9
    x = torch.as_tensor(dataset.encode(dataset.test.X[other.rows]))
    with torch.no_grad():
        correct = (model(x).argmax(dim=1) == torch.as_tensor(dataset.test.y[other.rows])).numpy()
    assert np.array_equal(other.min_eps == 0, ~correct)  # 0 exactly on the rows wrong already
    for name, flags in other.robust.items():
        assert flags.shape == (2, 40) and not (flags & ~correct).any(), name  # robust rows are right ones
    assert other.point("pgd", 0.2).robust_accuracy < other.curve[0].clean_accuracy - 0.3
    finite = other.min_eps[np.isfinite(other.min_eps) & correct]
    assert np.all((finite > 0) & (finite <= other.search_eps))
    for example in other.examples:
        assert example.after != example.before == example.label
        assert perturbation_norm(example.x_adv[None], example.x[None], "linf")[0] <= example.eps + 1e-6


def test_a_gradient_twin_gives_the_models_own_result(digits):
    """A model without gradients attacked through its exact twin: the same figures as the twin
    itself, in either order of execution."""
    dataset, model = digits
    own = assess_robustness(model, dataset, **SETTINGS)
    twinned = assess_robustness(NoGradients(model), dataset, gradient_model=model,
                                executor=LocalExecutor(order="reversed"), **SETTINGS)
    assert_same(own, twinned)


class Gated(nn.Module):
    """``model`` on rows whose pixel sum exceeds ``threshold``, zero logits (and so a zero input
    gradient) on the others."""

    def __init__(self, model: nn.Module, threshold: float):
        super().__init__()
        self.model, self.threshold = model, threshold

    def forward(self, x):
        return self.model(x) * (x.flatten(1).sum(dim=1, keepdim=True) > self.threshold).to(x.dtype)


def test_attack_statistics_add_up_over_unequal_chunks(digits):
    """FGSM takes one gradient per row at the clean input, the Gaussian noise ten forward passes:
    the counts summed over chunks of 16, 16 and 8 rows give the shares of all rows."""
    dataset, model = digits
    x = torch.as_tensor(dataset.encode(dataset.test.X))
    gated = Gated(model, float(x.flatten(1).sum(dim=1).median()))
    for chunk_rows in (16, 7):
        result = assess_robustness(gated, dataset, **{**SETTINGS, "attacks": ("fgsm", "gaussian"), "search_steps": 0,
                                                      "chunk_rows": chunk_rows})
        rows = torch.as_tensor(dataset.encode(dataset.test.X[result.rows]))
        closed = float((rows.flatten(1).sum(dim=1) <= gated.threshold).double().mean())
        assert 0.1 < closed < 0.9
        assert result.gradient == {"zero": closed, "nonfinite": 0.0}
        assert result.settings["model_rows"] == 40 * 2 * (1 + 10)


def test_ray_workers_give_the_local_result(digits):
    """Two Ray workers on this machine: the same figures as the local run."""
    import ray

    dataset, model = digits
    local = assess_robustness(model, dataset, **SETTINGS)
    started = not ray.is_initialized()
    try:
        remote = assess_robustness(model, dataset, executor=RayExecutor(num_cpus=2, task_cpus=1), **SETTINGS)
    finally:
        if started:
            ray.shutdown()
    assert_same(local, remote)
