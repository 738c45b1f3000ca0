"""Certification as part of the robustness family (audit/robustness/certification.py): the attack
on the smoothed classifier, both bounds, the config, the policy check and the run folder.

The attack is checked against the closed form of a linear classifier, whose smoothed classifier
is itself (Gaussian noise is symmetric): the best L2 perturbation of radius r moves the
(rescaled) margin by exactly r."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from scrutiny.audit.robustness.certification import assess_certification
from scrutiny.audit.robustness.smoothing import ABSTAIN, certify, predict, smoothed_attack
from scrutiny.audit.run.config import load_config
from scrutiny.audit.run.policy import load_policy
from scrutiny.audit.run.runner import run_audit
from scrutiny.cli import main
from scrutiny.errors import InputError

from .test_smoothing import CASES, effective_norm, linear, points_at

SIGMA = 0.5


def signed_margin(case, x: np.ndarray) -> np.ndarray:
    """(w·x + b) / ‖w ⊙ s ⊙ mask‖: the distance to the boundary in the certificate's metric."""
    return (x.astype(np.float64) @ np.asarray(case["w"]) + case["b"]) / effective_norm(case)


@pytest.mark.parametrize("name", list(CASES))
def test_the_attack_on_a_linear_smoothed_classifier_is_the_optimal_one(name):
    """The gradient of the mean softmax's cross-entropy points along w ⊙ s ⊙ mask whatever the
    noise, so the attack's end point lies at the radius, straight toward the boundary: the margin
    falls by exactly r; rows whose margin is below r cross it, and PREDICT then returns the other
    class (or abstains), the others keep theirs."""
    case = CASES[name]
    model = linear(case["w"], case["b"])
    mask = None if case["mask"] is None else np.asarray(case["mask"])
    distances = np.array([0.3, -0.5, 0.8, -1.2, 1.6, -2.0])
    x = points_at(case["w"], case["b"], distances)
    margin = signed_margin(case, x)
    y = (margin > 0).astype(int)
    radius = 1.0
    x_adv = smoothed_attack(model, x, y, radius, sigma=SIGMA, steps=10, copies=8, seed=1, device="cpu",
                            noise_scale=case["scale"], mutable=mask)
    np.testing.assert_allclose(np.abs(margin) - radius, signed_margin(case, x_adv) * np.where(y == 1, 1, -1),
                               atol=2e-5)
    if mask is not None:  # held positions do not move
        np.testing.assert_array_equal(x_adv[:, ~mask], x[:, ~mask])
    judged = predict(model, x_adv, sigma=SIGMA, n=20_000, alpha=0.001, seed=2, device="cpu",
                     noise_scale=case["scale"], mutable=mask).prediction
    crossed = np.abs(margin) - radius < -0.2   # well past the boundary: PREDICT decides against y
    kept = np.abs(margin) - radius > 0.2
    assert np.all(judged[crossed] == 1 - y[crossed]) and np.all(judged[kept] == y[kept])


def test_bad_attack_settings_are_one_line_errors():
    model = linear([1.0, 0.0], 0.0)
    x = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(InputError, match="radius must be a finite number > 0"):
        smoothed_attack(model, x, [0, 1], 0.0, sigma=0.5)
    with pytest.raises(InputError, match="y must hold one label per row"):
        smoothed_attack(model, x, [0], 0.5, sigma=0.5)


@pytest.fixture(scope="module")
def mlp(load):
    """A small MLP on breast cancer trained with Gaussian noise (a table: noise on the mutable
    numeric columns, in training standard deviations), and the seeded rows the family attacks."""
    from scrutiny.audit.robustness.assess import _sample
    from scrutiny.audit.robustness.smoothing import table_noise
    from scrutiny.models import train_on

    dataset = load("breast_cancer")
    model = train_on(dataset, "mlp", epochs=8, progress=False, noise_sigma=SIGMA).model.eval()
    rows, x, y = _sample(dataset, dataset.preprocessor, 60, 0)
    mask, scale = table_noise(dataset)
    return dataset, model, rows, x, y, mask, scale


def test_both_bounds_hold_in_order_and_do_not_depend_on_the_chunks(mlp):
    dataset, model, rows, x, y, mask, scale = mlp
    settings = dict(sigma=SIGMA, radii=[0.25, 0.5, 1.0], n0=50, n=400, alpha=0.01, samples=24, seed=4, device="cpu",
                    noise_scale=scale, mutable=mask)
    found = assess_certification(model, x, y, rows, chunk_rows=5, **settings)
    again = assess_certification(model, x, y, rows, chunk_rows=64, **settings)
    assert len(found.rows) == 24 and set(found.rows) <= set(rows)
    np.testing.assert_array_equal(found.radii, [0.0, 0.25, 0.5, 1.0])
    for name in ("rows", "robust_upper", "certified_accuracy", "attacked_accuracy", "curve_radius"):
        np.testing.assert_array_equal(getattr(found, name), getattr(again, name))
    np.testing.assert_array_equal(found.certification.counts, again.certification.counts)
    # the lower bound is CERTIFY's on the same rows, keyed by their test-split index
    pick = np.searchsorted(rows, found.rows)
    alone = certify(model, x[pick], sigma=SIGMA, n0=50, n=400, alpha=0.01, seed=4, device="cpu", noise_scale=scale,
                    mutable=mask, rows=found.rows)
    np.testing.assert_array_equal(alone.radius, found.certification.radius)
    correct = (alone.prediction == y[pick].numpy()) & (alone.prediction != ABSTAIN)
    np.testing.assert_array_equal(found.certified_accuracy, [np.mean(correct & (alone.radius >= r)) for r in found.radii])
    # a row certified at r counts as robust in the upper bound; the attack broke something somewhere
    certified = correct[:, None] & (alone.radius[:, None] >= found.radii[None, :])
    assert np.all(found.robust_upper[certified])
    assert np.all(found.attacked_accuracy >= found.certified_accuracy)
    assert found.attacked_accuracy[-1] < found.attacked_accuracy[0]
    without = assess_certification(model, x, y, rows, attack=False, **settings)
    assert np.isnan(without.attacked_accuracy).all() and without.robust_upper is None
    np.testing.assert_array_equal(without.certified_accuracy, found.certified_accuracy)


CONFIG = {"families": ["robustness"],
          "robustness": {"attacks": ["apgd-ce", "gaussian"], "samples": 30, "steps": 5, "detector": False, "norm": "l2",
                         "eps": [0.25, 0.5],
                         "certification": {"sigma": SIGMA, "samples": 12, "n0": 50, "n": 300, "alpha": 0.01}}}


@pytest.fixture(scope="module")
def noisy_checkpoint(tmp_path_factory, data_dir):
    path = tmp_path_factory.mktemp("certified") / "model"
    assert main(["train", "--data", "breast_cancer", "--out", str(path), "--epochs", "8", "--noise-sigma", str(SIGMA),
                 "--data-dir", str(data_dir)]) == 0
    return path


def test_an_audit_with_certification_gates_the_lower_bound_and_writes_both(noisy_checkpoint, load, tmp_path):
    dataset = load("breast_cancer")
    policy = tmp_path / "policy.toml"
    policy.write_text('[checks."robustness.certified_accuracy"]\nat_radius = 0.4\nfail_below = 0.99\n')
    result = run_audit(str(noisy_checkpoint), dataset, config=CONFIG, policy=policy, out=tmp_path / "run",
                       progress=False)
    (finding,) = [f for f in result.findings if f.check == "robustness.certified_accuracy"]
    details = result.details["robustness"].certification
    assert details is not None and details.trained_sigma == SIGMA and details.gated_radius == 0.4
    at = next(e for e in details.table if e.radius == 0.4)
    assert finding.subject == "radius=0.4" and finding.value == at.certified_accuracy
    assert finding.status == ("fail" if at.certified_accuracy < 0.99 else "pass")
    assert not finding.caveats  # certified with the σ the model was trained with
    assert [e.radius for e in details.table] == [0.0, 0.25, 0.4, 0.5, 1.0]
    assert details.noised and details.units.startswith("training standard deviations")
    assert all(e.attacked_accuracy >= e.certified_accuracy for e in details.table)
    # the run folder: details round-trip, the arrays and the figure of both bounds
    written = json.loads((tmp_path / "run" / "findings.json").read_text())
    assert written["details"]["robustness"]["certification"]["gated_radius"] == 0.4
    arrays = np.load(tmp_path / "run" / "arrays" / "robustness.npz")
    assert arrays["robust_upper"].shape == (12, 5) and len(arrays["certified_rows"]) == 12
    assert (tmp_path / "run" / "figures" / "certified.png").stat().st_size > 0


def test_without_certification_no_certified_finding_is_listed(load):
    config = {**CONFIG, "robustness": {**CONFIG["robustness"], "certification": {}, "samples": 10}}
    model = torch.nn.Sequential(torch.nn.Linear(30, 2))
    result = run_audit(model, load("breast_cancer"), config=config, progress=False)
    assert "robustness.certified_accuracy" not in {f.check for f in result.findings}
    assert result.details["robustness"].certification is None


@pytest.mark.parametrize("table, message", [
    ({"sigma": -0.1}, "'robustness.certification.sigma' must be a number > 0"),
    ({"sigma": 0.25, "alpha": 1.0}, "'robustness.certification.alpha' must lie between 0 and 1"),
    ({"sigma": 0.25, "n0": 500, "n": 100}, "'robustness.certification.n0' (500) is more than"),
    ({"sigma": 0.25, "radii": [-1.0]}, "'robustness.certification.radii' must be L2 radii >= 0"),
    ({"sigma": 0.25, "n": 0}, "'robustness.certification.n' must be from 1"),
    ({"sigmas": 0.25}, "unknown key 'robustness.certification.sigmas'"),
])
def test_bad_certification_config_is_one_line_error(table, message):
    with pytest.raises(InputError, match=None) as raised:
        load_config({"robustness": {"certification": table}}, task="tabular", fairness=False)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_policy_gates_at_a_radius_per_data_type(tmp_path):
    assert load_policy().certified_radius("image") == 0.25
    path = tmp_path / "p.toml"
    path.write_text('[checks."robustness.certified_accuracy"]\nat_radius = { image = 0.5 }\nfail_below = 0.1\n')
    assert load_policy(path).certified_radius("image") == 0.5
    with pytest.raises(InputError, match="gives no radius for tabular data"):
        load_policy(path).certified_radius("tabular")
    for bad, message in (("at_radius = -0.5", "at_radius must be a number >= 0"), ("fail_below = 0.1", "needs at_radius")):
        path.write_text(f'[checks."robustness.certified_accuracy"]\n{bad}\n')
        with pytest.raises(InputError, match=message):
            load_policy(path)
    assert math.isclose(load_policy().threshold("robustness.certified_accuracy")["fail_below"], 0.5)
