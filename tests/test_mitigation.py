"""Tests for sample weights in training and for scrutiny.audit.fairness.mitigation (reweighing,
equalized-odds post-processing) on synthetic data, German credit and Adult (CPU)."""

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from torch import nn

from scrutiny.audit.fairness.mitigation import (
    EqualizedOddsPostprocessor,
    privileged_mask,
    retrain_reweighed,
    reweighing_weights,
    split_for_postprocessing,
)
from scrutiny.errors import DataError, InputError
from scrutiny.models import build_model, predict_proba, train, train_on
from scrutiny.models.training import train_val_split

FAST = {"progress": False, "device": "cpu"}
ADULT = {"epochs": 4, **FAST}  # a few epochs reach ~85% test accuracy on Adult


def _blobs(n=600, n_features=10, seed=0):
    X, y = make_classification(n_samples=n, n_features=n_features, n_informative=5, n_redundant=0,
                               class_sep=1.0, random_state=seed)
    return X.astype(np.float32), y.astype(np.int64)


def _biased_groups(n=3000, seed=0):
    """Labels whose base rate depends on the group: 0.45 privileged, 0.15 unprivileged."""
    rng = np.random.default_rng(seed)
    privileged = rng.random(n) < 0.65
    y = (rng.random(n) < np.where(privileged, 0.45, 0.15)).astype(np.int64)
    return y, privileged


def _state_equal(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def _statistical_parity_difference(pred, privileged):
    return pred[~privileged].mean() - pred[privileged].mean()


def _equalized_odds_difference(pred, y, privileged):
    def rate(label):
        return pred[privileged & (y == label)].mean() - pred[~privileged & (y == label)].mean()

    return max(abs(rate(1)), abs(rate(0)))


# --- reweighing weights ---------------------------------------------------------------------


def test_reweighing_weights_match_the_closed_form():
    y, privileged = _biased_groups()
    weights = reweighing_weights(y, privileged)
    n = len(y)
    for group in (True, False):
        for label in (0, 1):
            cell = (privileged == group) & (y == label)
            p_g, p_y, p_gy = (privileged == group).sum() / n, (y == label).sum() / n, cell.sum() / n
            np.testing.assert_allclose(weights[cell], p_g * p_y / p_gy, rtol=0, atol=1e-9)
    # in the reweighed data the favourable rate no longer depends on the group
    rate = [np.average(y[privileged == g], weights=weights[privileged == g]) for g in (True, False)]
    assert rate[0] == pytest.approx(rate[1], abs=1e-12) == pytest.approx(y.mean(), abs=1e-12)


@pytest.mark.parametrize("y, privileged, message", [
    ([0, 1, 2, 1], [1, 0, 1, 0], "0/1 labels"),
    ([0, 1, 1], [True, False], "same length"),
    ([0, 1, 1, 0], [True, True, True, True], "both the privileged and the unprivileged"),
    ([0, 1, 1, 0], [0.5, 0, 1, 0], "boolean mask"),
])
def test_reweighing_rejects_bad_input(y, privileged, message):
    with pytest.raises(InputError, match=message):
        reweighing_weights(np.array(y), np.array(privileged))


# --- train(sample_weight=...) ---------------------------------------------------------------


def _no_batchnorm_net(n_features=10, seed=0):
    # BatchNorm's batch statistics see every row of a batch whatever its loss weight; dropout
    # masks depend only on the batch shape, so they stay the same
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_features, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))


@pytest.mark.parametrize("val_fraction, change_labels", [(0.15, False), (0.0, True)])
def test_zero_weight_rows_do_not_matter(val_fraction, change_labels):
    X, y = _blobs()
    weights = np.ones(len(y))
    zero = np.random.default_rng(1).random(len(y)) < 0.3
    weights[zero] = 0.0
    X_other, y_other = X.copy(), y.copy()
    X_other[zero] = np.random.default_rng(2).normal(0, 50, size=X[zero].shape)
    if change_labels:  # the stratified validation split depends on the labels, so only without one
        y_other[zero] = 1 - y[zero]
    model = _no_batchnorm_net()
    kwargs = dict(epochs=4, batch_size=64, val_fraction=val_fraction, patience=None, sample_weight=weights, **FAST)
    a = train(copy.deepcopy(model), X, y, **kwargs)
    b = train(copy.deepcopy(model), X_other, y_other, **kwargs)
    assert _state_equal(a.model, b.model)
    assert a.history == b.history
    assert all((h["val_loss"] is None) == (val_fraction == 0) for h in a.history)


def test_zero_weights_equal_training_on_the_other_rows():
    X, y = _blobs()
    keep = np.random.default_rng(3).random(len(y)) < 0.6
    torch.manual_seed(0)
    model = nn.Linear(X.shape[1], 2)
    # full-batch steps, so that both runs take the same steps over the same rows
    kwargs = dict(epochs=25, batch_size=1024, lr=0.05, val_fraction=0.0, **FAST)
    weighted = train(copy.deepcopy(model), X, y, sample_weight=keep.astype(float), **kwargs).model
    subset = train(copy.deepcopy(model), X[keep], y[keep], **kwargs).model
    unweighted = train(copy.deepcopy(model), X, y, **kwargs).model
    for name, value in weighted.state_dict().items():
        torch.testing.assert_close(value, subset.state_dict()[name], rtol=0, atol=1e-5)
    assert not torch.allclose(weighted.weight, unweighted.weight, atol=1e-3)


def test_uniform_weights_change_nothing_and_combine_with_class_weights():
    X, y = _blobs(n=400)
    y[:150] = 0  # imbalance, so that class weights matter
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(10,), n_classes=2)
    kwargs = dict(epochs=3, batch_size=64, class_weights=True, **FAST)
    plain = train(copy.deepcopy(model), X, y, **kwargs)
    uniform = train(copy.deepcopy(model), X, y, sample_weight=np.full(len(y), 7.5), **kwargs)
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(uniform.model.state_dict()[name], value, rtol=1e-4, atol=1e-4)
    assert [h["val_loss"] for h in uniform.history] == pytest.approx([h["val_loss"] for h in plain.history], rel=1e-5)


@pytest.mark.parametrize("weights, message", [
    (np.ones(599), r"one weight per row of X; got shape \(599,\) for 600 rows"),
    (np.ones((600, 1)), "1-D array"),
    (np.array(["1"] * 600), "must hold numbers"),
    (np.r_[np.ones(599), np.nan], "NaN or infinite"),
    (np.r_[np.ones(599), np.inf], "NaN or infinite"),
    (np.r_[np.ones(599), -0.5], "must be >= 0 everywhere; got a minimum of -0.5"),
    (np.zeros(600), "0 for every training row"),
])
def test_bad_sample_weight_raises_input_error(weights, message):
    X, y = _blobs()
    with pytest.raises(InputError, match=message):
        train(_no_batchnorm_net(), X, y, epochs=1, sample_weight=weights, **FAST)


def test_zero_weight_validation_split_raises_input_error():
    X, y = _blobs()
    weights = np.ones(len(y))
    weights[train_val_split(len(y), y, 0.15, seed=0)[1]] = 0.0
    with pytest.raises(InputError, match="0 for every validation row"):
        train(_no_batchnorm_net(), X, y, epochs=1, val_fraction=0.15, sample_weight=weights, seed=0, **FAST)


def test_autoencoder_takes_no_sample_weight():
    model = build_model("autoencoder", input_shape=(10,))
    with pytest.raises(InputError, match="autoencoder takes none"):
        train(model, *_blobs(), sample_weight=np.ones(600), **FAST)


# --- retrain_reweighed on German credit -----------------------------------------------------


def test_retrain_reweighed_is_train_on_with_the_weights(load):
    german = load("german")
    weights = reweighing_weights(german.train.y, privileged_mask(german, "age", "train"))
    assert weights.shape == (len(german.train),) and len(np.unique(weights)) == 4
    a = retrain_reweighed(german, "age", seed=1, epochs=3, device="cpu")
    b = train_on(german, seed=1, epochs=3, sample_weight=weights, **FAST)
    unweighted = train_on(german, seed=1, epochs=3, **FAST)
    assert _state_equal(a.model, b.model) and not _state_equal(a.model, unweighted.model)
    assert a.settings["reweighing"] == "age" and "reweighing" not in b.settings
    with pytest.raises(InputError, match="one weight per row"):
        train_on(german, epochs=1, sample_weight=weights[:-1], **FAST)
    with pytest.raises(DataError, match="no protected attribute 'race'"):
        retrain_reweighed(german, "race", epochs=1)


# --- Adult: reweighing and post-processing, before and after --------------------------------


@pytest.fixture(scope="module")
def adult_sex(load):
    """Adult, the test split's privileged mask for sex, and P(>50K) of an MLP trained without
    and with reweighing (same architecture, seed and settings)."""
    adult = load("adult")
    X = adult.encode(adult.test.X)
    baseline = train_on(adult, "mlp", seed=0, **ADULT)
    reweighed = retrain_reweighed(adult, "sex", "mlp", seed=0, **ADULT)
    scores = {name: predict_proba(m.model, X)[:, 1] for name, m in (("baseline", baseline), ("reweighed", reweighed))}
    accuracy = {"baseline": baseline.metrics["accuracy"], "reweighed": reweighed.metrics["accuracy"]}
    return adult, privileged_mask(adult, "sex"), scores, accuracy


def test_reweighing_reduces_statistical_parity_difference(adult_sex):
    _, privileged, scores, accuracy = adult_sex
    before = _statistical_parity_difference(scores["baseline"] > 0.5, privileged)
    after = _statistical_parity_difference(scores["reweighed"] > 0.5, privileged)
    # measured: -0.18 -> -0.08 (seeds 0-2: -0.18..-0.20 -> -0.08..-0.09)
    assert before < -0.1
    assert abs(after) < 0.7 * abs(before)
    assert accuracy["reweighed"] > accuracy["baseline"] - 0.03 and accuracy["reweighed"] > 0.8


def test_split_for_postprocessing_halves_every_group_and_label():
    y, privileged = _biased_groups(n=1001)
    tune, evaluate = split_for_postprocessing(len(y), y, privileged, seed=4)
    assert np.array_equal(np.sort(np.r_[tune, evaluate]), np.arange(len(y)))
    for group in (True, False):
        for label in (0, 1):
            cell = np.flatnonzero((privileged == group) & (y == label))
            assert np.isin(cell, tune).sum() == len(cell) // 2
    again = split_for_postprocessing(len(y), y, privileged, seed=4)
    assert np.array_equal(again[0], tune) and np.array_equal(again[1], evaluate)
    assert not np.array_equal(split_for_postprocessing(len(y), y, privileged, seed=5)[0], tune)
    with pytest.raises(InputError, match="n = 1000"):
        split_for_postprocessing(1000, y, privileged)


def test_equalized_odds_postprocessing_reduces_the_gap_on_the_held_out_half(adult_sex):
    adult, privileged, scores, _ = adult_sex
    s, y = scores["baseline"], adult.test.y
    gaps = []
    for seed in range(5):
        tune, evaluate = split_for_postprocessing(len(y), y, privileged, seed)
        post = EqualizedOddsPostprocessor().fit(s[tune], y[tune], privileged[tune], seed=seed)
        raw = (s[evaluate] > 0.5).astype(np.int64)
        fair = post.predict(s[evaluate], privileged[evaluate])
        gaps.append([_equalized_odds_difference(p, y[evaluate], privileged[evaluate]) for p in (raw, fair)])
        if seed == 0:
            assert set(np.unique(fair)) <= {0, 1} and (fair != raw).mean() < 0.1
    before, after = np.array(gaps).T
    # measured with split seed 0: 0.096 -> 0.011. A quarter of the test split's ~560 women
    # earning >50K fall in each half, so one split can go the other way (seed 1: 0.075 ->
    # 0.087): the mean over five splits is asserted too.
    assert after[0] < 0.5 * before[0]
    assert after.mean() < 0.5 * before.mean()


def test_equalized_odds_postprocessing_is_reproducible(adult_sex):
    adult, privileged, scores, _ = adult_sex
    s, y = scores["baseline"], adult.test.y
    tune, evaluate = split_for_postprocessing(len(y), y, privileged, seed=0)

    def run(seed):
        post = EqualizedOddsPostprocessor().fit(s[tune], y[tune], privileged[tune], seed=seed)
        return post, post.predict(s[evaluate], privileged[evaluate])

    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    (post, first), (_, second), (_, other) = run(7), run(7), run(8)
    assert np.array_equal(first, second) and not np.array_equal(first, other)
    assert np.array_equal(post.predict(s[evaluate], privileged[evaluate]), first)
    assert np.array_equal(np.random.get_state()[1], state)  # the global generator is left alone
    for rates in post.mixing_rates.values():
        assert all(0.0 <= r <= 1.0 for r in rates)


def test_equalized_odds_postprocessor_rejects_bad_input():
    y, privileged = _biased_groups(n=200)
    scores = np.random.default_rng(0).random(200)
    with pytest.raises(InputError, match="call fit before predict"):
        EqualizedOddsPostprocessor().predict(scores, privileged)
    with pytest.raises(InputError, match=r"same length; got shapes \(199,\) and \(200,\)"):
        EqualizedOddsPostprocessor().fit(scores[:-1], y, privileged)
    with pytest.raises(InputError, match="finite probabilities"):
        EqualizedOddsPostprocessor().fit(np.r_[scores[:-1], np.nan], y, privileged)
    y_one = np.where(privileged, y, 0)
    with pytest.raises(InputError, match="unprivileged group needs rows of both labels"):
        EqualizedOddsPostprocessor().fit(scores, y_one, privileged)
