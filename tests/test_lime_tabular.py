"""Batched tabular LIME: lime's own numbers, many rows at once."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from lime.lime_tabular import LimeTabularExplainer
from sklearn.linear_model import Ridge

from scrutiny.audit.attributions.feature_space import tabular_space
from scrutiny.audit.attributions.lime_tabular import LimeFit, explain_rows, weighted_ridge
from scrutiny.audit.attributions.methods import attribute, batched_outputs
from scrutiny.models import DatasetSpec, Feature, TabularPreprocessor, build_model

ROWS, SAMPLES = 20, 600
# lime's "auto" feature selection: forward selection up to 6 features, highest weights above
FEATURE_COUNTS = pytest.mark.parametrize("n_numeric", [3, 6], ids=["5 features", "8 features"])


def _case(n_numeric: int):
    """A table of ``n_numeric`` numeric features, a 3-category feature with uneven frequencies
    and a binary one (n_numeric + 2 original features), and a small random 3-class MLP."""
    rng = np.random.default_rng(n_numeric)
    n = 300
    frame = pd.DataFrame({f"x{i}": rng.normal(loc=i, scale=i + 1, size=n) for i in range(n_numeric)})
    frame["colour"] = rng.choice(["blue", "green", "red"], size=n, p=[0.6, 0.3, 0.1])
    frame["flag"] = rng.choice(["no", "yes"], size=n)
    spec = DatasetSpec(
        name="mixed", task="tabular", label="y", classes=("a", "b", "c"), favourable_label="a",
        features=tuple(Feature(f"x{i}", "numeric") for i in range(n_numeric))
        + (Feature("colour", "categorical"), Feature("flag", "binary")),
    )
    preprocessor = TabularPreprocessor(spec).fit(frame)
    space = tabular_space(preprocessor)
    assert space.n_features == n_numeric + 2 and any(space.categorical) and any(space.binary)
    torch.manual_seed(n_numeric)
    model = build_model("mlp", input_shape=space.input_shape, n_classes=3, hidden=(16,), dropout=0.0).eval()
    return space, preprocessor.transform(frame), model


def _explainer(space, encoded: np.ndarray, seed: int) -> LimeTabularExplainer:
    """The explainer ``attribute(method="lime")`` builds."""
    categorical = [g for g in range(space.n_features) if space.categorical[g] or space.binary[g]]
    return LimeTabularExplainer(space.to_codes(encoded), mode="classification", feature_names=list(space.names),
                                categorical_features=categorical, discretize_continuous=False, random_state=seed)


def _stock(explainer: LimeTabularExplainer, Z: np.ndarray, predict, labels, num_samples: int) -> LimeFit:
    """lime itself: ``explain_instance`` row after row; ``instances`` holds what lime's local model
    predicts at each row, ``explanation.local_pred``, in its first column."""
    n, m = Z.shape
    fit = LimeFit(weights=np.zeros((n, m)), intercepts=np.zeros(n), scores=np.zeros(n), instances=np.zeros((n, 1)))
    for i, label in enumerate(int(t) for t in labels):
        explanation = explainer.explain_instance(Z[i], predict, labels=(label,), num_features=m,
                                                 num_samples=num_samples)
        chosen = [g for g, _ in explanation.local_exp[label]]
        assert sorted(chosen) == list(range(m))  # every feature is selected, and fitted
        for g, weight in explanation.local_exp[label]:
            fit.weights[i, g] = weight
        fit.intercepts[i], fit.scores[i] = explanation.intercept[label], explanation.score
        fit.instances[i, 0] = explanation.local_pred[0]
    return fit


def _assert_same(ours: np.ndarray, stock: np.ndarray) -> None:
    np.testing.assert_allclose(ours, stock, rtol=1e-8, atol=1e-12 * np.abs(stock).max())


@FEATURE_COUNTS
def test_explain_rows_equals_explain_instance_row_by_row(n_numeric):
    space, encoded, model = _case(n_numeric)
    double = copy.deepcopy(model).double()

    def predict(z):  # float64 throughout: the batch a row is evaluated in cannot matter
        with torch.no_grad():
            logits = double(torch.from_numpy(space.from_codes(z).astype(np.float64)))
        return torch.softmax(logits, dim=1).numpy()

    Z = space.to_codes(encoded[:ROWS])
    labels = np.arange(ROWS) % 3
    stock_explainer, ours_explainer = _explainer(space, encoded, seed=7), _explainer(space, encoded, seed=7)
    stock = _stock(stock_explainer, Z, predict, labels, SAMPLES)
    fit = explain_rows(ours_explainer, Z, predict, labels, num_samples=SAMPLES)
    assert np.abs(stock.weights).min() > 0 and np.ptp(stock.scores) > 0
    _assert_same(fit.weights, stock.weights)
    _assert_same(fit.intercepts, stock.intercepts)
    _assert_same(fit.scores, stock.scores)
    # the local model read at the row itself is lime's own prediction there
    _assert_same(fit.intercepts + (fit.weights * fit.instances).sum(axis=1), stock.instances[:, 0])
    # the random stream is left where lime leaves it: a next call continues it alike
    assert ours_explainer.random_state.normal() == stock_explainer.random_state.normal()


@FEATURE_COUNTS
def test_attribute_lime_equals_stock_lime(n_numeric):
    space, encoded, model = _case(n_numeric)
    X, target = encoded[:ROWS], (np.arange(ROWS) + 1) % 3
    a = attribute(model, X, method="lime", space=space, background=encoded, target=target, n_samples=SAMPLES, seed=5)
    stock = _stock(_explainer(space, encoded, seed=5), space.to_codes(X),
                   lambda z: batched_outputs(model, space.from_codes(z), 4096, probabilities=True), target, SAMPLES)
    _assert_same(a.by_feature(space), stock.weights)
    _assert_same(a.error, 1.0 - stock.scores)
    # the waterfall's ends: lime's intercept, and its terms adding up to lime's local_pred
    assert a.local_intercept is not None and a.local_terms is not None
    _assert_same(a.local_intercept, stock.intercepts)
    _assert_same(a.local_intercept + a.local_terms.sum(axis=1), stock.instances[:, 0])
    assert a.error_name == "lime_misfit" and a.output == "probability"
    assert a.settings == {"seed": 5, "num_samples": SAMPLES, "target": "probability"}


def test_weighted_ridge_is_sklearns_ridge():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 50, 3)) * [1.0, 5.0, 0.1]
    X[1, :, 2] = 1.0  # a constant column: the penalty decides its (zero) coefficient
    y = X @ np.array([0.5, -0.2, 3.0]) + rng.normal(scale=0.3, size=(4, 50))
    y[2] = 1.0  # a constant target, as from a saturated model: R² = 1
    w = rng.uniform(0.01, 1.0, size=(4, 50))
    coef, intercept, score = weighted_ridge(X, y, w)
    for b in range(4):
        ridge = Ridge(alpha=1.0, fit_intercept=True).fit(X[b], y[b], sample_weight=w[b])
        np.testing.assert_allclose(coef[b], ridge.coef_, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(intercept[b], ridge.intercept_, rtol=1e-10)
        assert score[b] == pytest.approx(ridge.score(X[b], y[b], sample_weight=w[b]), rel=1e-10)
    assert score[2] == 1.0


def test_explain_rows_needs_every_feature():
    space, encoded, model = _case(3)
    Z = space.to_codes(encoded[:2])
    with pytest.raises(ValueError, match="num_features"):
        explain_rows(_explainer(space, encoded, seed=0), Z, lambda z: np.full((len(z), 3), 1 / 3), [0, 1],
                     num_samples=50, num_features=2)


@pytest.mark.parametrize("n_classes, output", [(2, "log_odds"), (3, "logit")])
def test_lime_on_the_log_odds_equals_stock_lime_fitting_them(n_classes, output):
    """lime_target="log_odds": lime's own fit of the score the other methods explain, computed
    here from the logits by hand (binary: z1 - z0 for class 1 and its negative for class 0)."""
    space, encoded, _ = _case(3)
    torch.manual_seed(11)
    model = build_model("mlp", input_shape=space.input_shape, n_classes=n_classes, hidden=(16,), dropout=0.0).eval()
    X, target = encoded[:ROWS], np.arange(ROWS) % n_classes

    def score(z):
        with torch.no_grad():
            logits = model(torch.from_numpy(space.from_codes(z).astype(np.float32))).double().numpy()
        if n_classes == 2:
            margin = logits[:, 1] - logits[:, 0]
            return np.stack([-margin, margin], axis=1)
        return logits

    a = attribute(model, X, method="lime", space=space, background=encoded, target=target, n_samples=SAMPLES,
                  seed=5, lime_target="log_odds")
    stock = _stock(_explainer(space, encoded, seed=5), space.to_codes(X), score, target, SAMPLES)
    np.testing.assert_allclose(a.by_feature(space), stock.weights, rtol=1e-5, atol=1e-6 * np.abs(stock.weights).max())
    assert a.output == output and a.settings["target"] == "log_odds"
    probability = attribute(model, X, method="lime", space=space, background=encoded, target=target,
                            n_samples=SAMPLES, seed=5)
    assert probability.output == "probability"
    assert not np.allclose(probability.by_feature(space), a.by_feature(space))


def test_an_unknown_lime_target_is_refused():
    from scrutiny.errors import InputError

    space, encoded, model = _case(3)
    with pytest.raises(InputError, match="lime_target must be one of 'probability', 'log_odds'; got 'logit'"):
        attribute(model, encoded[:2], method="lime", space=space, background=encoded, lime_target="logit")


def test_the_audit_config_takes_lime_target_and_refuses_others():
    from scrutiny.audit.run.config import load_config
    from scrutiny.errors import InputError

    assert load_config(None, task="tabular", fairness=False).attributions.lime_target == "probability"
    config = load_config({"attributions": {"lime_target": "log_odds"}}, task="tabular", fairness=False)
    assert config.attributions.lime_target == "log_odds"
    with pytest.raises(InputError, match=r"^config: 'attributions.lime_target' must be 'probability' or 'log_odds', "
                                         r"got 'logits'$"):
        load_config({"attributions": {"lime_target": "logits"}}, task="tabular", fairness=False)
