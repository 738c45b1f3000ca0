"""Tests for scrutiny.models.training on small synthetic data (CPU)."""

import copy
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_classification
from sklearn.metrics import roc_auc_score
from torch import nn

from scrutiny.errors import InputError
from scrutiny.models.architectures import ARCHITECTURES, build_model, reconstruction_error
from scrutiny.models.training import (
    DEFAULT_TRAINING,
    TrainResult,
    evaluate,
    expected_calibration_error,
    predict_proba,
    seed_everything,
    train,
    train_val_split,
    warmup_cosine,
)

FAST = {"progress": False, "device": "cpu"}


def _blobs(n=600, n_features=10, seed=0, **kwargs):
    X, y = make_classification(
        n_samples=n,
        n_features=n_features,
        n_informative=5,
        n_redundant=0,
        class_sep=2.0,
        random_state=seed,
        **kwargs,
    )
    return X.astype(np.float32), y.astype(np.int64)


def _mlp(n_features=10, n_classes=2, seed=0, **hparams):
    torch.manual_seed(seed)
    return build_model("mlp", input_shape=(n_features,), n_classes=n_classes, **hparams)


def _state_equal(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# --- schedule, split, seeding ---------------------------------------------------------------


def test_warmup_cosine_values():
    f = warmup_cosine(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1)
    assert f(4) == pytest.approx(0.5)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)  # half-way through the decay
    assert f(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    decay = [f(s) for s in range(10, 100)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert warmup_cosine(10, 0)(0) == 1.0


def test_train_follows_the_schedule_per_batch():
    X, y = _blobs(n=64)
    # val_fraction=0: 64 samples / batch 16 = 4 steps per epoch, 16 in all, 4 warm-up steps
    result = train(_mlp(), X, y, epochs=4, batch_size=16, lr=0.01, warmup_fraction=0.25, val_fraction=0.0, **FAST)
    f = warmup_cosine(16, 4)
    assert [h["lr"] for h in result.history] == pytest.approx([0.01 * f(s) for s in (3, 7, 11, 15)])
    assert result.history[0]["lr"] == pytest.approx(0.01)
    assert all(h["val_loss"] is None for h in result.history)
    assert result.best_epoch == 4


def test_train_val_split_is_stratified_disjoint_and_seeded():
    y = np.array([0] * 80 + [1] * 20 + [2] * 2)
    tr, va = train_val_split(len(y), y, 0.25, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
    assert np.bincount(y[va], minlength=3).tolist() == [20, 5, 0]  # round(0.5) == 0 for class 2
    assert np.bincount(y[tr], minlength=3).tolist() == [60, 15, 2]
    tr2, va2 = train_val_split(len(y), y, 0.25, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, train_val_split(len(y), y, 0.25, seed=4)[1])
    # every class keeps a training sample even at a large fraction
    assert np.bincount(y[train_val_split(len(y), y, 0.9, seed=0)[0]], minlength=3).min() >= 1


def test_seed_everything_seeds_all_generators():
    seed_everything(7)
    a = (np.random.rand(), torch.rand(1).item(), __import__("random").random())
    seed_everything(7)
    assert (np.random.rand(), torch.rand(1).item(), __import__("random").random()) == a


def test_same_seed_bit_identical_different_seed_differs():
    X, y = _blobs(n=300)
    base = _mlp(dropout=0.3)
    kwargs = dict(epochs=3, batch_size=32, **FAST)
    a = train(copy.deepcopy(base), X, y, seed=0, **kwargs)
    b = train(copy.deepcopy(base), X, y, seed=0, **kwargs)
    c = train(copy.deepcopy(base), X, y, seed=1, **kwargs)
    assert _state_equal(a.model, b.model)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert not _state_equal(a.model, c.model)


def test_mixed_precision_is_off_by_default_on_cpu():
    X, y = _blobs(n=200)
    base = _mlp()
    kwargs = dict(epochs=2, batch_size=32, **FAST)
    auto = train(copy.deepcopy(base), X, y, mixed_precision=None, **kwargs)
    off = train(copy.deepcopy(base), X, y, mixed_precision=False, **kwargs)
    on = train(copy.deepcopy(base), X, y, mixed_precision=True, **kwargs)  # bfloat16 autocast
    assert _state_equal(auto.model, off.model)
    assert not _state_equal(on.model, off.model)


# --- learning -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch, epochs", [("mlp", 30), ("transformer", 15)])
def test_learns_a_separable_problem(arch, epochs):
    X, y = _blobs(n=800, n_classes=3, n_clusters_per_class=1)
    Xtr, ytr, Xte, yte = X[:600], y[:600], X[600:], y[600:]
    torch.manual_seed(0)
    model = build_model(arch, input_shape=(10,), n_classes=3)
    before = evaluate(model, Xte, yte)["accuracy"]
    result = train(model, Xtr, ytr, epochs=epochs, batch_size=64, lr=3e-3, **FAST)
    assert isinstance(result, TrainResult) and result.model is model
    assert not model.training and result.device == "cpu"
    assert result.seconds > 0 and result.samples_per_second > 0
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    after = evaluate(model, Xte, yte)["accuracy"]
    assert after > 0.9 and after > before + 0.3


def test_cnn_on_digits():
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    tr, te = order[:1400], order[1400:]
    torch.manual_seed(0)
    model = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, channels=(16, 32))
    train(model, X[tr], y[tr], epochs=6, batch_size=64, lr=3e-3, **FAST)
    assert evaluate(model, X[te], y[te])["accuracy"] > 0.9


def test_early_stopping_restores_best_weights():
    # random labels: the validation loss bottoms out early, then rises as the model memorises
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)).astype(np.float32)
    y = rng.integers(0, 2, size=300)
    model = _mlp(20, hidden=(256, 256), dropout=0.0)
    epochs, patience = 100, 3
    result = train(model, X, y, epochs=epochs, batch_size=32, lr=1e-2, patience=patience, val_fraction=0.3, **FAST)
    history = result.history
    val = [h["val_loss"] for h in history]
    assert len(history) < epochs
    assert result.best_epoch == 1 + int(np.argmin(val))
    assert len(history) == result.best_epoch + patience
    assert min(val[result.best_epoch :]) > val[result.best_epoch - 1]
    # the returned weights are the best epoch's: recompute its validation loss
    _, val_idx = train_val_split(len(X), y, 0.3, seed=0)
    with torch.no_grad():
        logits = model(torch.from_numpy(X[val_idx]))
    loss = nn.functional.cross_entropy(logits, torch.from_numpy(y[val_idx])).item()
    assert loss == pytest.approx(val[result.best_epoch - 1], rel=1e-5)
    assert loss < val[-1]


def test_class_weights_raise_minority_recall():
    X, y = make_classification(
        n_samples=1000, n_features=8, n_informative=3, weights=[0.9, 0.1], class_sep=0.5, flip_y=0.05, random_state=1
    )
    X, y = X.astype(np.float32), y.astype(np.int64)
    base = _mlp(8)
    kwargs = dict(epochs=15, batch_size=64, val_fraction=0.0, **FAST)
    plain = train(copy.deepcopy(base), X, y, **kwargs)
    weighted = train(copy.deepcopy(base), X, y, class_weights=True, **kwargs)
    assert plain.history[0]["train_loss"] != weighted.history[0]["train_loss"]

    def minority_recall(model):
        return (predict_proba(model, X)[y == 1].argmax(axis=1) == 1).mean()

    assert minority_recall(weighted.model) > minority_recall(plain.model) + 0.2


def test_autoencoder_learns_and_flags_out_of_distribution():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 20))
    X = (rng.normal(size=(800, 3)) @ basis + 0.05 * rng.normal(size=(800, 20))).astype(np.float32)
    torch.manual_seed(0)
    model = build_model("autoencoder", input_shape=(20,), n_classes=None, hidden=(64,), latent=4)
    held_out = torch.from_numpy(X[600:])
    before = reconstruction_error(model, held_out).mean().item()
    result = train(model, X[:600], None, epochs=40, batch_size=64, lr=3e-3, **FAST)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    in_dist = reconstruction_error(model, held_out)
    assert in_dist.mean().item() < 0.2 * before
    shifted = reconstruction_error(model, held_out + 5.0)
    assert shifted.mean() > 10 * in_dist.mean()
    assert (shifted > in_dist.quantile(0.99)).float().mean() > 0.95
    metrics = evaluate(model, X[600:])
    assert metrics["reconstruction_mse"] == pytest.approx(in_dist.mean().item(), rel=1e-5)
    assert metrics["n"] == 200


# --- evaluation ---------------------------------------------------------------------------


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.08, 0.92], [0.58, 0.42], [0.3, 0.7]])
    y = np.array([0, 0, 0, 1])
    # bins of width 1/15: 0.9 and 0.92 share (0.867, 0.933] with accuracy 1/2; 0.58 and 0.7
    # sit alone and are right: 2/4 * |0.5 - 0.91| + 1/4 * |1 - 0.58| + 1/4 * |1 - 0.7|
    assert expected_calibration_error(probs, y) == pytest.approx(0.385)
    # one bin: |mean accuracy 0.75 - mean confidence 0.775|
    assert expected_calibration_error(probs, y, n_bins=1) == pytest.approx(0.025)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_evaluate_binary_matches_sklearn():
    X, y = _blobs(n=400, flip_y=0.1)
    model = _mlp()
    train(model, X[:300], y[:300], epochs=5, batch_size=32, **FAST)
    probs = predict_proba(model, X[300:])
    metrics = evaluate(model, X[300:], y[300:], batch_size=7)
    assert set(metrics) == {"accuracy", "roc_auc", "ece", "n"}
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y[300:], probs[:, 1]))
    assert metrics["accuracy"] == pytest.approx((probs.argmax(1) == y[300:]).mean())
    assert metrics["ece"] == pytest.approx(expected_calibration_error(probs, y[300:]))
    assert metrics["n"] == 100
    assert all(type(metrics[k]) is float for k in ("accuracy", "roc_auc", "ece"))
    assert 0.5 < metrics["roc_auc"] <= 1.0


def test_evaluate_multiclass_has_no_roc_auc():
    X, y = _blobs(n=120, n_classes=3)
    assert "roc_auc" not in evaluate(_mlp(n_classes=3), X, y)


def test_predict_proba_batches_and_restores_mode():
    X, _ = _blobs(n=50)
    model = _mlp(n_classes=2).train()
    probs = predict_proba(model, X, batch_size=16)
    assert model.training
    assert probs.shape == (50, 2) and probs.dtype == np.float64
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.allclose(probs, predict_proba(model, X, batch_size=1000))  # eval mode: batch-independent
    with pytest.raises(InputError, match="classifier"):
        predict_proba(build_model("autoencoder", input_shape=(10,)), X)


# --- input validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda X, y: (X, y[:-1]), "one label per row"),
        (lambda X, y: (X, np.where(y == 1, 2, y)), r"0\.\.1 for a model with n_classes=2; got 0\.\.2"),
        (lambda X, y: (X, y - 1), r"got -1\.\.0"),
        (lambda X, y: (np.where(np.arange(len(X))[:, None] == 3, np.nan, X), y), "NaN"),
        (lambda X, y: (X[:, :5], y), r"shape \(N, 10\).*got \(100, 5\)"),
        (lambda X, y: (X, y.astype(np.float32)), "integer class labels"),
        (lambda X, y: (X, None), "y is required"),
        (lambda X, y: (X.astype(str), y), "numeric"),
    ],
)
def test_bad_data_raises_input_error(change, message):
    X, y = _blobs(n=100)
    X, y = change(X, y)
    with pytest.raises(InputError, match=message):
        train(_mlp(), X, y, epochs=1, **FAST)


@pytest.mark.parametrize(
    "option, value",
    [
        ("epochs", 0),
        ("batch_size", 2.5),
        ("lr", 0.0),
        ("weight_decay", -1e-4),
        ("val_fraction", 1.0),
        ("warmup_fraction", -0.1),
        ("patience", 0),
    ],
)
def test_bad_options_name_the_option(option, value):
    X, y = _blobs(n=50)
    with pytest.raises(InputError, match=f"^'?{option}'? must be"):
        train(_mlp(), X, y, **{"progress": False, option: value})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_request_without_cuda():
    X, y = _blobs(n=50)
    with pytest.raises(InputError, match="CUDA is not available"):
        train(_mlp(), X, y, device="cuda", progress=False)
    with pytest.raises(InputError, match="device must be"):
        train(_mlp(), X, y, device="tpu", progress=False)


def test_default_training_covers_every_architecture():
    assert set(DEFAULT_TRAINING) == set(ARCHITECTURES)
    for settings in DEFAULT_TRAINING.values():
        assert set(settings) <= set(train.__kwdefaults__)
