"""Test accuracy each standard model reaches from the fixed seed (the issue's floors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scrutiny.models import load_model, predict_proba, train_on

FLOORS = [
    ("adult", "mlp", 0.84),
    ("german", "mlp", 0.70),
    ("compas", "mlp", 0.64),
    ("breast_cancer", "mlp", 0.95),
    ("digits", "cnn", 0.95),
    ("digits", "resnet", 0.95),
]


@pytest.mark.parametrize("data, arch, floor", FLOORS, ids=[f"{d}-{a}" for d, a, _ in FLOORS])
def test_accuracy_floor(trained, data, arch, floor):
    dataset, result, path = trained(data, arch)
    assert result.metrics["accuracy"] >= floor
    # the recorded metric is the real one: recompute from the saved checkpoint
    loaded = load_model(path, dataset=dataset)
    probs = predict_proba(loaded.model, loaded.preprocessor().transform(dataset.test.X))
    assert np.mean(probs.argmax(axis=1) == dataset.test.y) == pytest.approx(result.metrics["accuracy"])
    if dataset.spec.is_binary:
        assert 0.5 < result.metrics["roc_auc"] <= 1.0
    assert 0.0 <= result.metrics["ece"] < 0.2


@pytest.mark.parametrize("data, arch", [("breast_cancer", "mlp"), ("digits", "cnn")])
def test_same_seed_gives_identical_weights(load, data, arch):
    dataset = load(data)
    runs = [train_on(dataset, arch, seed=seed, epochs=3, progress=False) for seed in (7, 7, 8)]
    first, again, other = (r.model.state_dict() for r in runs)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_the_gpu_with_mixed_precision(load):
    dataset = load("digits")
    result = train_on(dataset, "cnn", seed=0, device="cuda", progress=False)
    assert result.settings["device"].startswith("cuda")
    assert result.metrics["accuracy"] >= 0.95
    assert next(result.model.parameters()).device.type == "cpu"  # handed back ready to save
