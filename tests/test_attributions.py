"""Attributions: exactness on models with known answers, and one contract for every method of the
registry (a method added to :mod:`scrutiny.audit.attributions.registry` is tested here as it is)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from scrutiny.audit.attributions import methods as methods_module
from scrutiny.audit.attributions.feature_space import FeatureSpace, patch_groups, tabular_space
from scrutiny.audit.attributions.methods import (
    METHODS,
    attribute,
    default_baseline,
)
from scrutiny.audit.attributions.registry import (
    ADDITIVITY,
    ALIASES,
    COMPLETENESS_METHODS,
    METHOD_INFO,
    REASON_METHODS,
    RELIANCE_METHODS,
    methods_for,
)
from scrutiny.errors import InputError
from scrutiny.modality import MODALITIES
from scrutiny.models import DatasetSpec, Feature, TabularPreprocessor, build_model, train_on

STOCHASTIC = [m for m in METHODS if METHOD_INFO[m].sampled]
# few samples for the sampling methods: the contract does not depend on how many
FEW = {"gradient_shap": 8, "kernel_shap": 200, "shap_gradient": 20, "lime": 300}
ADDS_UP = ("exact", "checked")  # additivity that holds row by row, not only in expectation

# every method on a tabular and an image model, where the registry says it explains that data
KIND = {"adult": "tabular", "digits": "image"}
CASES = [(m, d) for m in METHODS for d in KIND if KIND[d] in METHOD_INFO[m].modalities]


# ------------------------------------------------------------------ helpers


def _toy_table(n: int = 300, seed: int = 0):
    """A real spec + fitted preprocessor: 5 numeric features and one 3-category feature
    (6 original features, 8 encoded columns)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(loc=i, scale=i + 1, size=n) for i in range(5)})
    frame["colour"] = rng.choice(["blue", "green", "red"], size=n)
    spec = DatasetSpec(
        name="toy", task="tabular", label="y", classes=("no", "yes"), favourable_label="yes",
        features=tuple(Feature(f"x{i}", "numeric") for i in range(5)) + (Feature("colour", "categorical"),),
    )
    preprocessor = TabularPreprocessor(spec).fit(frame)
    return preprocessor, preprocessor.transform(frame)


@pytest.fixture(scope="module")
def toy():
    preprocessor, encoded = _toy_table()
    space = tabular_space(preprocessor)
    assert space.n_features == 6 and space.input_shape == (8,)
    return space, encoded


def _linear(w1, w0=None, b1=0.0, b0=0.0) -> nn.Module:
    """nn.Linear(d, 2) with logits z0 = w0·x + b0, z1 = w1·x + b1."""
    w1 = np.asarray(w1, dtype=np.float32)
    w0 = np.zeros_like(w1) if w0 is None else np.asarray(w0, dtype=np.float32)
    model = nn.Linear(len(w1), 2)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(np.stack([w0, w1])))
        model.bias.copy_(torch.tensor([b0, b1]))
    return model.eval()


def _random_mlp(d: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", input_shape=(d,), n_classes=2, hidden=(16,), dropout=0.0).eval()


def _explained(model: nn.Module, X: np.ndarray, target: np.ndarray) -> np.ndarray:
    """What is explained, computed here from the logits: the target's log-odds (binary) or
    logit, in float64."""
    with torch.no_grad():
        z = model(torch.from_numpy(np.asarray(X, dtype=np.float32))).double().numpy()
    target = np.broadcast_to(target, (len(X),))
    if z.shape[1] == 2:
        return z[np.arange(len(X)), target] - z[np.arange(len(X)), 1 - target]
    return z[np.arange(len(X)), target]


def _numeric_space(d: int) -> FeatureSpace:
    return FeatureSpace(names=tuple(f"x{i}" for i in range(d)), groups=tuple((i,) for i in range(d)),
                        categorical=(False,) * d, input_shape=(d,), kind="tabular")


@pytest.fixture(scope="module")
def adult_case(trained):
    dataset, result, _ = trained("adult", "mlp")
    return result.model, tabular_space(dataset.preprocessor), dataset.encode(dataset.test.X.iloc[:200]), \
        dataset.encode(dataset.train.X)


@pytest.fixture(scope="module")
def digits_case(load):
    dataset = load("digits")
    result = train_on(dataset, "cnn", epochs=2, seed=0, progress=False)
    for parameter in result.model.parameters():
        parameter.grad = None  # training leaves gradients behind
    return result.model.eval(), patch_groups(tuple(dataset.spec.image_shape)), \
        np.asarray(dataset.test.X[:200], dtype=np.float32), np.asarray(dataset.train.X, dtype=np.float32)


# ------------------------------------------------------------------ exactness


@pytest.mark.parametrize("target", [0, 1])
@pytest.mark.parametrize("baseline", ["zeros", "train_mean", "array"])
def test_integrated_gradients_exact_on_linear_model(target, baseline):
    rng = np.random.default_rng(0)
    w1 = np.array([0.5, -1.25, 2.0, 0.0, -0.75])
    w0 = np.array([-0.25, 0.5, 1.0, 1.5, 0.25])
    model = _linear(w1, w0, b1=0.3, b0=-0.2)
    X = rng.normal(size=(20, 5)).astype(np.float32)
    background = rng.normal(loc=1.0, size=(100, 5)).astype(np.float32)
    given = rng.normal(size=(1, 5)).astype(np.float32)
    a = attribute(model, X, method="integrated_gradients", space=_numeric_space(5), background=background,
                  target=target, baselines=given if baseline == "array" else baseline)
    base = {"zeros": np.zeros((1, 5)), "train_mean": background.mean(axis=0, keepdims=True), "array": given}[baseline]
    np.testing.assert_allclose(a.baseline_values, base, rtol=0, atol=1e-6)
    effective = (w1 - w0) if target == 1 else (w0 - w1)  # log-odds of the target
    expected = (X.astype(np.float64) - a.baseline_values.astype(np.float64)) * effective
    np.testing.assert_allclose(a.values, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(a.error, 0.0, atol=1e-5)
    assert a.baseline == ("given(k=1)" if baseline == "array" else baseline)


@pytest.fixture(scope="module")
def adult_ig(adult_case):
    model, space, X, background = adult_case
    return attribute(model, X, method="integrated_gradients", space=space, background=background)  # default steps


def _ig_gap(adult_case, a):
    model, _, X, _ = adult_case
    change = _explained(model, X, a.target) - _explained(model, np.repeat(a.baseline_values, len(X), axis=0), a.target)
    return a.values.reshape(len(X), -1).sum(axis=1) - change, change


def test_integrated_gradients_error_is_completeness_gap(adult_case, adult_ig):
    _, _, _, background = adult_case
    assert adult_ig.baseline == "train_mean"
    np.testing.assert_allclose(adult_ig.baseline_values[0], background.mean(axis=0), atol=1e-6)
    gap, change = _ig_gap(adult_case, adult_ig)
    assert np.abs(change).min() > 0
    np.testing.assert_allclose(adult_ig.error, gap, rtol=0, atol=1e-4)


def test_integrated_gradients_complete_with_default_steps(adult_case, adult_ig):
    gap, change = _ig_gap(adult_case, adult_ig)
    within = np.abs(gap) <= 0.01 * np.abs(change)
    assert within.mean() >= 0.95, f"only {within.mean():.1%} of samples within 1% of f(x) - f(baseline)"
    np.testing.assert_allclose(adult_ig.output_change, change, rtol=0, atol=1e-5)
    np.testing.assert_allclose(adult_ig.relative_error, np.abs(gap) / np.abs(change), rtol=1e-3, atol=1e-6)
    assert sum(adult_ig.settings["steps_used"].values()) == len(change)


def _exact_shapley(model, space: FeatureSpace, x: np.ndarray, background: np.ndarray, target: int) -> np.ndarray:
    """Shapley values by full enumeration over the ORIGINAL features, with the interventional
    value function v(S) = mean_b f(x_S, b_notS) (a categorical feature moves its whole block)."""
    M = space.n_features
    v = {}
    for size in range(M + 1):
        for S in itertools.combinations(range(M), size):
            rows = background.copy()
            for j in S:
                rows[:, list(space.groups[j])] = x[list(space.groups[j])]
            v[S] = _explained(model, rows, np.full(len(rows), target)).mean()
    phi = np.zeros(M)
    for j in range(M):
        others = [k for k in range(M) if k != j]
        for size in range(M):
            weight = math.factorial(size) * math.factorial(M - size - 1) / math.factorial(M)
            for S in itertools.combinations(others, size):
                phi[j] += weight * (v[tuple(sorted(S + (j,)))] - v[S])
    return phi


def test_kernel_shap_matches_exact_shapley_values(toy):
    space, encoded = toy
    model = _random_mlp()
    X, background = encoded[:4], encoded[100:110]
    target = np.array([0, 1, 1, 0])
    a = attribute(model, X, method="kernel_shap", space=space, background=encoded, baselines=background,
                  target=target, n_samples=200)  # 200 >= 2**6: shap enumerates every coalition
    assert a.baseline == "given(k=10)"
    phi = a.by_feature(space)
    for i in range(len(X)):
        # Tolerance 1e-4: with every coalition enumerated KernelSHAP solves for the exact
        # Shapley values; what is left is float32 model evaluations.
        np.testing.assert_allclose(phi[i], _exact_shapley(model, space, X[i], background, target[i]), rtol=0, atol=1e-4)
    # additivity: Σ values + E_background f = f(x)
    fx = _explained(model, X, target)
    expected = np.array([_explained(model, background, np.full(10, t)).mean() for t in target])
    np.testing.assert_allclose(a.values.sum(axis=1) + expected, fx, rtol=0, atol=1e-4)
    # every coalition enumerated: exact values, so no sampling error by definition
    assert a.settings["exact"] and a.settings["coalitions"] == 2**6 - 2
    np.testing.assert_array_equal(a.error, 0.0)


def test_kernel_shap_additive_on_adult_with_default_settings(adult_case):
    model, space, X, background = adult_case
    a = attribute(model, X[:3], method="kernel_shap", space=space, background=background, n_samples=300)
    base = a.baseline_values
    assert a.baseline == "train_sample(k=50)" and base.shape == (50, space.input_shape[0])
    expected = np.array([_explained(model, base, np.full(len(base), t)).mean() for t in a.target])
    np.testing.assert_allclose(a.values.sum(axis=1) + expected, _explained(model, X[:3], a.target), rtol=0, atol=1e-4)
    # 300 of 2^M - 2 coalitions: sampled, so the error figure is a positive share of the largest value
    assert not a.settings["exact"] and a.settings["coalitions"] == 300
    assert ((a.error > 0) & (a.error < 1)).all()


def test_lime_recovers_signs_of_linear_weights():
    rng = np.random.default_rng(0)
    w = np.array([2.0, -1.5, 0.05, 1.0, -2.0])
    model = _linear(w)
    background = rng.normal(size=(500, 5)).astype(np.float32)
    X = rng.normal(scale=0.7, size=(6, 5)).astype(np.float32)
    a = attribute(model, X, method="lime", space=_numeric_space(5), background=background, n_samples=2000)
    assert a.output == "probability"
    assert set(a.target.tolist()) == {0, 1}  # both directions are checked
    big = np.abs(w) > 0.5
    for i in range(len(X)):
        direction = 1.0 if a.target[i] == 1 else -1.0  # LIME explains P(target)
        np.testing.assert_array_equal(np.sign(a.values[i][big]), np.sign(direction * w[big]),
                                      err_msg=f"sample {i}: LIME weights {a.values[i]}")
        # the weak feature weighs less than every strong one
        assert np.abs(a.values[i][2]) < np.abs(a.values[i][big]).min()


@pytest.mark.parametrize("model_kind", ["linear", "mlp"])
def test_feature_ablation_is_change_when_feature_set_to_baseline(toy, model_kind):
    space, encoded = toy
    w = np.array([1.0, -0.5, 0.25, 2.0, -1.0, 0.75, -1.5, 0.5])
    model = _linear(w, b1=0.1) if model_kind == "linear" else _random_mlp(seed=3)
    X, background = encoded[:6], encoded
    a = attribute(model, X, method="feature_ablation", space=space, background=background)
    assert a.baseline == "train_mean"
    mean = background.mean(axis=0)
    fx = _explained(model, X, a.target)
    expected = np.zeros((len(X), space.n_features))
    for g, idx in enumerate(space.groups):
        ablated = X.copy()
        ablated[:, list(idx)] = mean[list(idx)]
        expected[:, g] = fx - _explained(model, ablated, a.target)
    np.testing.assert_allclose(a.by_feature(space), expected, rtol=0, atol=1e-5)
    if model_kind == "linear":
        sign = np.where(a.target == 1, 1.0, -1.0)[:, None]
        closed = np.stack([((X[:, list(idx)] - mean[list(idx)]) * w[list(idx)]).sum(axis=1) for idx in space.groups], 1)
        np.testing.assert_allclose(a.by_feature(space), sign * closed, rtol=0, atol=1e-5)
    # the colour feature's attribution sits on the active one-hot column
    colour = list(space.groups[5])
    np.testing.assert_array_equal(a.values[:, colour] * (X[:, colour] == 0), 0.0)


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift", "gradient_shap", "shap_gradient",
                                    "kernel_shap", "feature_ablation"])
@pytest.mark.parametrize("target", [0, 1])
def test_single_baseline_methods_agree_on_linear_model(toy, method, target):
    """On a linear model with one baseline every path / perturbation method gives (x − b)·w of
    the target's log-odds per original feature."""
    space, encoded = toy
    w = np.array([1.0, -0.5, 0.25, 2.0, -1.0, 0.75, -1.5, 0.5])
    model = _linear(w)
    X, base = encoded[:5], encoded[200:201]
    a = attribute(model, X, method=method, space=space, background=encoded, baselines=base, target=target,
                  n_samples={"kernel_shap": 200}.get(method, 16))
    sign = 1.0 if target == 1 else -1.0
    expected = np.stack([((X[:, list(idx)] - base[0, list(idx)]) * w[list(idx)]).sum(axis=1) for idx in space.groups], 1)
    np.testing.assert_allclose(a.by_feature(space), sign * expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(a.target, target)


def test_saliency_and_input_x_gradient_on_linear_model():
    rng = np.random.default_rng(0)
    w = np.array([0.5, -1.25, 2.0, 0.0, -0.75])
    model = _linear(w)
    X = rng.normal(size=(6, 5)).astype(np.float32)
    common = {"space": _numeric_space(5), "background": X, "target": np.array([0, 1, 0, 1, 1, 0])}
    sign = np.where(common["target"] == 1, 1.0, -1.0)[:, None]
    saliency = attribute(model, X, method="saliency", **common)
    np.testing.assert_allclose(saliency.values, sign * w, atol=1e-6)  # signed, not |gradient|
    ixg = attribute(model, X, method="input_x_gradient", **common)
    np.testing.assert_allclose(ixg.values, sign * w * X, atol=1e-6)


# KernelSHAP adds up by construction; its error figure is the sampling error (tests/test_sampling_error.py)
@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift", "gradient_shap", "shap_gradient"])
def test_error_is_independent_gap_on_nonlinear_model(toy, method):
    space, encoded = toy
    model = _random_mlp(seed=1)
    X = encoded[:6]
    base = encoded[50:51] if method != "shap_gradient" else encoded[50:60]
    a = attribute(model, X, method=method, space=space, background=encoded, baselines=base, n_samples=16)
    fx = _explained(model, X, a.target)
    fb = np.array([_explained(model, base, np.full(len(base), t)).mean() for t in a.target])
    np.testing.assert_allclose(a.error, a.values.sum(axis=1) - (fx - fb), rtol=0, atol=1e-4)
    if method == "deeplift":
        np.testing.assert_allclose(a.error, 0.0, atol=1e-4)  # exactly additive by construction


@pytest.mark.parametrize("method", methods_for("tabular"))
def test_binary_target_zero_is_negated_target_one(toy, method):
    """For a binary model the explained output of class 0 is minus that of class 1."""
    space, encoded = toy
    model = _random_mlp(seed=2)
    X = encoded[:3]
    kwargs = {"space": space, "background": encoded, "n_samples": FEW.get(method), "seed": 5}
    one = attribute(model, X, method=method, target=1, **kwargs)
    zero = attribute(model, X, method=method, target=0, **kwargs)
    assert np.abs(one.values).max() > 1e-3
    np.testing.assert_allclose(zero.values, -one.values, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ the contract


def _case(request, name):
    model, space, X, background = request.getfixturevalue(f"{name}_case")
    return model, space, X[:4], background


@pytest.mark.parametrize(("method", "data"), CASES)
def test_contract(request, method, data):
    model, space, X, background = _case(request, data)
    n_classes = 2 if data == "adult" else 10
    model.eval()
    kwargs = {"method": method, "space": space, "background": background, "n_samples": FEW.get(method), "seed": 3}
    a = attribute(model, X, **kwargs)

    assert a.method == method
    assert a.values.shape == X.shape and np.isfinite(a.values).all()
    assert np.abs(a.values).max() > 0
    with torch.no_grad():
        predicted = model(torch.from_numpy(X)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(a.target, predicted)
    assert a.target.shape == (len(X),)

    per_feature = a.by_feature(space)
    assert per_feature.shape == (len(X), space.n_features)
    np.testing.assert_allclose(per_feature.sum(axis=1), a.values.reshape(len(X), -1).sum(axis=1), rtol=1e-9, atol=1e-9)
    if space.kind == "tabular" and method in ("kernel_shap", "lime", "feature_ablation"):
        for g, idx in enumerate(space.groups):  # original-feature values sit on the active column
            if space.categorical[g]:
                np.testing.assert_array_equal(a.values[:, list(idx)] * (X[:, list(idx)] == 0), 0.0)

    info = METHOD_INFO[method]
    assert a.output == ("probability" if info.explains == "probability" else "log_odds" if n_classes == 2 else "logit")

    name = default_baseline(method, space.kind)
    shape = tuple(space.input_shape)
    if name == "train_sample":
        k = min(info.n_background, len(background))
        assert a.baseline == f"train_sample(k={k})"
        assert a.baseline_values.shape == (k, *shape)
        rows = {row.tobytes() for row in background.reshape(len(background), -1)}
        assert all(row.tobytes() in rows for row in a.baseline_values.reshape(k, -1))
        assert len({row.tobytes() for row in a.baseline_values.reshape(k, -1)}) > 1
    else:
        assert a.baseline == name
        assert a.baseline_values.shape == (1, *shape)
        expected = np.zeros(shape) if name == "zeros" else background.mean(axis=0)
        np.testing.assert_allclose(a.baseline_values[0], expected, atol=1e-6)

    assert a.error_name == info.error_name
    if info.error_name is not None:
        assert a.error.shape == (len(X),) and np.isfinite(a.error).all()
    else:
        assert a.error is None
    if a.error_name == "lime_misfit":
        assert ((a.error >= 0) & (a.error <= 1)).all()
    # f(x) − mean_b f(b), computed here: what additive attributions share out
    fb = np.array([_explained(model, a.baseline_values, np.full(len(a.baseline_values), t)).mean() for t in a.target])
    change = _explained(model, X, a.target) - fb
    if info.additivity in ("checked", "expected"):
        np.testing.assert_allclose(a.output_change, change, rtol=1e-5, atol=1e-4)
    else:
        assert a.output_change is None
    gap = a.values.reshape(len(X), -1).sum(axis=1) - change
    if info.additivity == "exact":  # by construction, whatever the sampling
        np.testing.assert_allclose(gap, 0.0, atol=1e-4)
    if info.additivity == "checked":  # up to its error figure, which is that gap (the completeness finding)
        np.testing.assert_allclose(a.error, gap, rtol=0, atol=1e-4)
    assert a.seconds >= 0 and a.settings["seed"] == 3

    assert not model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("method", "data"), CASES)
def test_same_seed_same_values(request, method, data):
    model, space, X, background = _case(request, data)
    kwargs = {"method": method, "space": space, "background": background, "n_samples": FEW.get(method), "seed": 3}
    # what other code leaves in the global generators must not matter
    np.random.seed(7)
    torch.manual_seed(7)
    a = attribute(model, X, **kwargs)
    np.random.seed(123)
    torch.manual_seed(123)
    again = attribute(model, X, **kwargs)
    np.testing.assert_array_equal(again.values, a.values)
    if a.error is not None:
        np.testing.assert_array_equal(again.error, a.error)
    if method in STOCHASTIC:
        other = attribute(model, X, **{**kwargs, "seed": 4})
        assert not np.array_equal(other.values, a.values)  # the seed is used


def test_model_in_training_mode_stays_in_training_mode(toy):
    space, encoded = toy
    model = _random_mlp()
    model.train()
    attribute(model, encoded[:3], method="saliency", space=space, background=encoded)
    assert model.training


def test_attribute_evaluates_in_eval_mode_even_for_training_model(toy):
    space, encoded = toy
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(8,), n_classes=2, hidden=(16,), dropout=0.5).eval()
    reference = attribute(model, encoded[:5], method="integrated_gradients", space=space, background=encoded)
    model.train()
    again = attribute(model, encoded[:5], method="integrated_gradients", space=space, background=encoded)
    np.testing.assert_array_equal(again.values, reference.values)  # no dropout, batch-norm running stats


def test_lime_feeds_binary_features_only_zero_or_one():
    frame = pd.DataFrame({"x": np.random.default_rng(0).normal(size=200),
                          "flag": np.random.default_rng(1).choice(["no", "yes"], size=200)})
    spec = DatasetSpec(name="flags", task="tabular", label="y", classes=("no", "yes"), favourable_label="yes",
                       features=(Feature("x", "numeric"), Feature("flag", "binary")))
    preprocessor = TabularPreprocessor(spec).fit(frame)
    encoded = preprocessor.transform(frame)
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _linear([1.0, 2.0])

        def forward(self, x):
            seen.append(x.detach().numpy().copy())
            return self.inner(x)

    attribute(Recorder(), encoded[:2], method="lime", space=tabular_space(preprocessor), background=encoded,
              n_samples=200)
    flags = np.concatenate(seen)[:, 1]
    assert set(np.unique(flags).tolist()) <= {0.0, 1.0}


def test_no_progress_output_when_progress_is_false(digits_case, capsys):
    model, space, X, background = digits_case
    attribute(model, X[:1], method="lime", space=space, background=background, n_samples=50, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


# ------------------------------------------------------------------ chunking


@pytest.mark.parametrize("data", ["adult", "digits"])
@pytest.mark.parametrize("method", ["integrated_gradients", "saliency"])
def test_chunking_changes_nothing(request, method, data):
    model, space, X, background = request.getfixturevalue(f"{data}_case")
    X = X[:10]
    whole = attribute(model, X, method=method, space=space, background=background, n_steps=16)
    chunked = attribute(model, X, method=method, space=space, background=background, n_steps=16, batch_size=3)
    np.testing.assert_allclose(chunked.values, whole.values, rtol=0, atol=1e-6)
    if whole.error is not None:
        np.testing.assert_allclose(chunked.error, whole.error, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(chunked.target, whole.target)


# ------------------------------------------------------------------ user errors


def test_unknown_method(toy):
    space, encoded = toy
    with pytest.raises(InputError, match="unknown attribution method 'shapley'.*integrated_gradients"):
        attribute(_random_mlp(), encoded[:2], method="shapley", space=space, background=encoded)


def test_unknown_baseline(toy):
    space, encoded = toy
    with pytest.raises(InputError, match="unknown baseline 'median'.*train_mean"):
        attribute(_random_mlp(), encoded[:2], method="integrated_gradients", space=space, background=encoded,
                  baselines="median")


@pytest.mark.parametrize("shape", [(2, 7), (8,), (2, 8, 1)])
def test_wrong_input_shape(toy, shape):
    space, encoded = toy
    with pytest.raises(InputError, match=r"inputs have shape .*reads \(8,\)"):
        attribute(_random_mlp(), np.zeros(shape, dtype=np.float32), method="saliency", space=space, background=encoded)


def test_occlusion_on_tabular_data(toy):
    space, encoded = toy
    model = _random_mlp()
    with pytest.raises(InputError, match="occlusion.*feature_ablation"):
        attribute(model, encoded[:2], method="occlusion", space=space, background=encoded)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("shape", [(1, 7), (16,)])
def test_baseline_array_of_wrong_shape(toy, shape):
    space, encoded = toy
    with pytest.raises(InputError, match="baseline"):
        attribute(_random_mlp(), encoded[:2], method="integrated_gradients", space=space, background=encoded,
                  baselines=np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift", "feature_ablation"])
def test_one_baseline_per_row_is_chunked_with_its_row(method):
    rng = np.random.default_rng(7)
    model, space = _random_mlp(6, seed=3), _numeric_space(6)
    X = rng.normal(size=(10, 6)).astype(np.float32)
    per_row = rng.normal(size=(10, 6)).astype(np.float32)
    chunked = attribute(model, X, method=method, space=space, background=X, baselines=per_row, batch_size=3)
    whole = attribute(model, X, method=method, space=space, background=X, baselines=per_row, batch_size=64)
    np.testing.assert_allclose(chunked.values, whole.values, rtol=1e-5, atol=1e-6)
    single = attribute(model, X[4:5], method=method, space=space, background=X, baselines=per_row[4:5])
    np.testing.assert_allclose(chunked.values[4], single.values[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="one baseline or one per input row; got 3 for 10 rows"):
        attribute(model, X, method=method, space=space, background=X, baselines=per_row[:3])


# ------------------------------------------------------------------ the registry


def test_registry_is_complete_and_the_derived_lists_follow_it():
    assert set(methods_module._RUNNERS) == set(METHODS) == set(METHOD_INFO)  # every method has an implementation
    for name, info in METHOD_INFO.items():
        assert info.name == name and info.additivity in ADDITIVITY
        assert info.modalities and set(info.modalities) <= set(MODALITIES)
        assert set(info.sample_baseline) <= set(info.modalities)
        assert info.explains in ("score", "probability")
        if info.additivity in ("checked", "expected"):  # the gap to f(x) - f(b) is the method's error figure
            assert info.error_name is not None
    assert sorted(i.reason_rank for i in METHOD_INFO.values()) == list(range(1, len(METHOD_INFO) + 1))
    assert set(ALIASES).isdisjoint(METHODS) and all(ALIASES[a] == m for m, i in METHOD_INFO.items() for a in i.aliases)
    assert COMPLETENESS_METHODS == tuple(m for m in METHODS if METHOD_INFO[m].additivity == "checked")
    assert sorted(REASON_METHODS) == sorted(METHODS)
    assert RELIANCE_METHODS == tuple(m for m in REASON_METHODS if METHOD_INFO[m].additivity in ADDS_UP)
    for kind, modality in MODALITIES.items():
        assert set(modality.default_methods) <= set(methods_for(kind))


class _NoGradients(nn.Module):
    """The same outputs as ``inner``, computed under ``torch.no_grad``: they carry no gradient."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        with torch.no_grad():
            return self.inner(x)


def _gradient_case(request, method):
    """A model, space, rows and background of the first data type ``method`` explains."""
    if "tabular" in METHOD_INFO[method].modalities:
        space, encoded = request.getfixturevalue("toy")
        return _random_mlp(seed=4), space, encoded[:3], encoded
    model, space, X, background = request.getfixturevalue("digits_case")
    return model, space, X[:2], background


@pytest.mark.parametrize("method", METHODS)
def test_needs_gradients_is_honest(request, monkeypatch, method):
    """On a model whose outputs carry no gradient, exactly the methods declared to need gradients
    fail, by autograd itself once scrutiny's early check is out of the way; the others give the
    attributions they give on the model itself."""
    model, space, X, background = _gradient_case(request, method)
    kwargs = {"method": method, "space": space, "background": background, "n_samples": FEW.get(method), "seed": 1}
    cut = _NoGradients(model)
    if METHOD_INFO[method].needs_gradients:
        with pytest.raises(InputError, match=f"^{method} needs the gradient .*no gradients: .*kernel_shap"):
            attribute(cut, X, **kwargs)
        monkeypatch.setattr(methods_module, "_check_input_gradients", lambda *args: None)
        with pytest.raises(RuntimeError):
            attribute(cut, X, **kwargs)
    else:
        np.testing.assert_array_equal(attribute(cut, X, **kwargs).values, attribute(model, X, **kwargs).values)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("method", "kind"), [(m, k) for m in METHODS for k in MODALITIES
                                              if k not in METHOD_INFO[m].modalities])
def test_a_method_refuses_data_it_does_not_explain(toy, digits_case, method, kind):
    space, X, background = (toy[0], toy[1][:2], toy[1]) if kind == "tabular" else (digits_case[1], digits_case[2][:2],
                                                                                    digits_case[3])
    with pytest.raises(InputError, match=f"^{method} explains .* only; for {kind} data use one of: "
                                         f"{', '.join(methods_for(kind))}$"):
        attribute(_random_mlp() if kind == "tabular" else digits_case[0], X, method=method, space=space,
                  background=background)
