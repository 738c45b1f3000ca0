"""Randomized smoothing (audit/robustness/smoothing.py) and noise-augmented training.

The references are computed here: for a linear classifier the smoothed classifier, its top-class
probability and its certified radius are known in closed form (Cohen et al. 2019, Theorem 1 and
their linear example); the Clopper–Pearson bound is checked against the root of the binomial tail
(and statsmodels when installed); the noise is checked by recording what the model is fed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import optimize, stats
from torch import nn

from scrutiny.audit.robustness.smoothing import (
    ABSTAIN,
    certified_accuracy,
    certified_curve,
    certify,
    clopper_pearson_lower,
    median_certified_radius,
    predict,
    summarize,
    table_noise,
)
from scrutiny.errors import InputError
from scrutiny.models.training import train

from .test_cli import cli


def linear(w, b: float) -> nn.Module:
    """Two logits (0, w·x + b): class 1 exactly where w·x + b > 0."""
    w = torch.as_tensor(w, dtype=torch.float32)
    model = nn.Linear(len(w), 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros_like(w), w]))
        model.bias.copy_(torch.tensor([0.0, b]))
    return model.eval()


class Recorder(nn.Module):
    """Records every input batch it is fed."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


class Constant(nn.Module):
    """Always class ``c`` of ``k``."""

    def __init__(self, c: int, k: int = 3):
        super().__init__()
        self.c, self.k = c, k

    def forward(self, x):
        logits = torch.zeros(len(x), self.k)
        logits[:, self.c] = 1.0
        return logits


def points_at(w, b, distances, seed: int = 0) -> np.ndarray:
    """Points at the given signed distances from the hyperplane w·x + b = 0, moved along it at random."""
    w = np.asarray(w, dtype=np.float64)
    unit = w / np.linalg.norm(w)
    rng = np.random.default_rng(seed)
    along = rng.normal(size=(len(distances), len(w)))
    along -= np.outer(along @ unit, unit)
    foot = -b * unit / np.linalg.norm(w)  # the hyperplane's point nearest the origin
    return (foot + along + np.outer(distances, unit)).astype(np.float32)


# ------------------------------------------------------------------ closed form on a linear classifier

CASES = {
    # noise on every position, radius in input units
    "plain": dict(w=[1.0, -2.0], b=0.3, scale=None, mask=None),
    # a table: noise on positions 0 and 1 only, scaled by (2, 0.5); the radius is ‖δ / s‖ over them
    "scaled": dict(w=[0.5, -1.5, 3.0], b=-0.2, scale=[2.0, 0.5, 1.0], mask=[True, True, False]),
}


def effective_norm(case) -> float:
    """‖w ⊙ s ⊙ mask‖: the smoothed classifier is Φ((w·x + b) / (σ ‖w ⊙ s ⊙ mask‖))."""
    w = np.asarray(case["w"])
    s = np.ones_like(w) if case["scale"] is None else np.asarray(case["scale"])
    mask = np.ones(len(w), dtype=bool) if case["mask"] is None else np.asarray(case["mask"])
    return float(np.linalg.norm(w * s * mask))


@pytest.fixture(scope="module", params=list(CASES))
def linear_case(request):
    """(case, rows, exact radius, exact p_A, σ): rows whose exact p_A lies in [0.7, 0.99]."""
    case, sigma = CASES[request.param], 0.5
    p_a = np.linspace(0.7, 0.99, 24)
    exact = sigma * stats.norm.ppf(p_a)  # in the rescaled metric
    sign = np.where(np.arange(len(p_a)) % 2 == 0, 1.0, -1.0)
    # a signed distance d in plain space moves w·x + b by d ‖w‖; the rescaled radius is that / ‖w ⊙ s‖
    distances = sign * exact * effective_norm(case) / np.linalg.norm(case["w"])
    x = points_at(case["w"], case["b"], distances, seed=len(request.param))
    margin = (x.astype(np.float64) @ np.asarray(case["w"]) + case["b"]) / effective_norm(case)
    return case, x, np.abs(margin), stats.norm.cdf(np.abs(margin) / sigma), sigma, (margin > 0).astype(int)


def run_certify(case, x, sigma, n, alpha, **kwargs):
    return certify(linear(case["w"], case["b"]), x, sigma=sigma, n0=100, n=n, alpha=alpha, seed=3, device="cpu",
                   noise_scale=case["scale"], mutable=None if case["mask"] is None else np.asarray(case["mask"]),
                   batch_size=8192, **kwargs)


def test_certified_radius_is_below_the_exact_one_and_approaches_it(linear_case):
    case, x, exact, p_a, sigma, label = linear_case
    alpha = 1e-4
    gaps = {}
    for n in (1_000, 20_000):
        cert = run_certify(case, x, sigma, n, alpha)
        assert (cert.prediction == label).all()
        # never above the smoothed classifier's exact radius σ Φ⁻¹(p_A) (fails with probability ≤ α per row)
        assert (cert.radius <= exact + 1e-9).all(), (cert.radius - exact).max()
        # and no further below it than the Clopper–Pearson bound of the lowest plausible count
        # (the 1e-6 quantile of Binomial(n, p_A)) allows
        k_low = stats.binom.ppf(1e-6, n, p_a)
        floor = sigma * stats.norm.ppf(np.maximum(clopper_pearson_lower(k_low, n, alpha), 0.5))
        assert (cert.radius >= floor - 1e-9).all()
        # the counts are what a binomial of p_A gives: the top class's share within 5 standard errors
        share = cert.counts[np.arange(len(x)), label] / n
        assert (np.abs(share - p_a) <= 5 * np.sqrt(p_a * (1 - p_a) / n) + 1 / n).all()
        gaps[n] = exact - cert.radius
    assert gaps[20_000].mean() < 0.5 * gaps[1_000].mean()
    assert gaps[20_000].max() < 0.2 * sigma


def test_certified_rows_hold_for_the_exact_smoothed_classifier_within_their_radius(linear_case):
    """The smoothed classifier of a linear f is g(x) = f(x); moving x by δ in the worst direction
    (towards the hyperplane, in the rescaled metric) by just under the certified radius keeps
    its class, and by just over the exact radius flips it."""
    case, x, exact, _, sigma, label = linear_case
    cert = run_certify(case, x, sigma, 5_000, 1e-3)
    w = np.asarray(case["w"], dtype=np.float64)
    s = np.ones_like(w) if case["scale"] is None else np.asarray(case["scale"])
    mask = np.ones(len(w)) if case["mask"] is None else np.asarray(case["mask"], dtype=np.float64)
    direction = s * s * w * mask / effective_norm(case)  # ‖direction / s‖ = 1 over the mutable positions
    sign = np.where(label == 1, 1.0, -1.0)[:, None]
    assert (cert.prediction != ABSTAIN).all()

    def smoothed(z):  # the exact smoothed classifier's class and its p_A
        margin = (z @ w + case["b"]) / effective_norm(case)
        return (margin > 0).astype(int), stats.norm.cdf(np.abs(margin) / sigma)

    inside = x - sign * direction * (0.999 * cert.radius)[:, None]
    assert np.allclose(np.linalg.norm((inside - x) * mask / s, axis=1), 0.999 * cert.radius)
    kept, p_kept = smoothed(inside)
    assert (kept == cert.prediction).all() and (p_kept > 0.5).all()
    outside = x - sign * direction * (1.001 * exact)[:, None]
    assert (smoothed(outside)[0] != cert.prediction).all()


# ------------------------------------------------------------------ Clopper–Pearson


@pytest.mark.parametrize("n", [1, 10, 100, 1000, 100_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.3])
def test_clopper_pearson_lower_bound(n, alpha):
    ks = np.unique(np.linspace(0, n, 7).round().astype(int))
    got = clopper_pearson_lower(ks, n, alpha)
    for k, bound in zip(ks, got):
        if k == 0:
            assert bound == 0.0
            continue
        # the p at which P(Binomial(n, p) >= k) = alpha, by root finding on the tail
        expected = optimize.brentq(lambda p, k=k: stats.binom.sf(k - 1, n, p) - alpha, 1e-300, 1.0, xtol=1e-15,
                                   rtol=1e-13)
        assert bound == pytest.approx(expected, rel=1e-8, abs=1e-12)
    assert got[-1] == pytest.approx(alpha ** (1 / n), rel=1e-12)  # k = n
    try:
        from statsmodels.stats.proportion import proportion_confint
    except ImportError:
        return
    reference = [proportion_confint(int(k), n, alpha=2 * alpha, method="beta")[0] for k in ks]
    np.testing.assert_allclose(got, reference, rtol=1e-10, atol=1e-15)


def test_a_constant_model_gets_the_bound_of_n_out_of_n():
    """Every copy votes class 2: p_A = α^(1/n) exactly and R = σ Φ⁻¹(α^(1/n)); PREDICT's
    two-sided p-value is 2 · 2⁻ⁿ."""
    x = np.zeros((3, 4), dtype=np.float32)
    cert = certify(Constant(2), x, sigma=0.4, n0=10, n=300, alpha=0.01, device="cpu")
    assert (cert.prediction == 2).all() and (cert.counts[:, 2] == 300).all()
    np.testing.assert_allclose(cert.radius, 0.4 * stats.norm.ppf(0.01 ** (1 / 300)), rtol=1e-12)
    found = predict(Constant(2), x, sigma=0.4, n=20, alpha=0.01, device="cpu")
    assert (found.prediction == 2).all()
    np.testing.assert_allclose(found.p_value, 2 * 0.5**20, rtol=1e-9)


# ------------------------------------------------------------------ abstention


def test_a_point_on_the_decision_boundary_abstains():
    w, b = [1.0, -2.0], 0.3
    x = points_at(w, b, [0.0, 0.0, 0.0, 2.0], seed=1)
    cert = certify(linear(w, b), x, sigma=0.5, n0=100, n=4_000, alpha=0.001, device="cpu")
    assert (cert.prediction[:3] == ABSTAIN).all() and (cert.radius[:3] == 0).all()
    assert (cert.p_lower[:3] < 0.5).all()
    assert cert.prediction[3] == 1 and cert.radius[3] > 0
    found = predict(linear(w, b), x, sigma=0.5, n=4_000, alpha=0.001, device="cpu")
    assert (found.prediction[:3] == ABSTAIN).all() and found.prediction[3] == 1
    # PREDICT's p-value is scipy's two-sided binomial test of the top two counts
    for counts, p in zip(found.counts, found.p_value):
        top = np.sort(counts)[::-1]
        assert p == pytest.approx(stats.binomtest(int(top[0]), int(top[0] + top[1]), 0.5).pvalue, rel=1e-12)


# ------------------------------------------------------------------ the noise


def test_noise_is_fresh_for_every_copy_and_only_where_asked():
    x = np.array([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    recorder = Recorder(linear([1.0, 1.0, 1.0], 0.0))
    scale, mask = np.array([2.0, 0.5, 1.0]), np.array([True, True, False])
    certify(recorder, x, sigma=0.3, n0=50, n=4_000, alpha=0.01, device="cpu", batch_size=512,
            noise_scale=scale, mutable=mask)
    seen = torch.cat(recorder.seen).double().numpy()
    assert len(seen) == 2 * (50 + 4_000)
    noise = seen[:4_050] - x[0]  # row 0: its 50 selection copies, then its 4,000 estimation copies
    assert (noise[:, 2] == 0).all()  # the held position gets none
    assert len(np.unique(noise[:, :2], axis=0)) == len(noise)  # every copy its own draw (ART PR#1678)
    # N(0, (σ s)²) on the others: standard deviation within 5% (4,050 draws: about 1% standard error)
    np.testing.assert_allclose(noise[:, :2].std(axis=0), 0.3 * scale[:2], rtol=0.05)
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.1
    assert not np.array_equal(seen[:4_050] - x[0], seen[4_050:] - x[1])  # rows do not share noise


def test_results_do_not_depend_on_batch_size_or_on_the_other_rows():
    w, b = [1.0, -2.0], 0.3
    x = points_at(w, b, np.linspace(-0.6, 0.6, 9), seed=2)

    def run(rows_x, batch_size, rows=None, seed=5):
        recorder = Recorder(linear(w, b))
        cert = certify(recorder, rows_x, sigma=0.5, n0=64, n=1_500, alpha=0.001, device="cpu",
                       batch_size=batch_size, seed=seed, rows=rows)
        return cert, torch.cat(recorder.seen).numpy()

    whole, fed = run(x, 1_000)
    for size in (1, 37):
        other, other_fed = run(x, size)
        assert other_fed.tobytes() == fed.tobytes()
        for name in ("prediction", "radius", "p_lower", "counts", "selection_counts"):
            assert getattr(other, name).tobytes() == getattr(whole, name).tobytes()
    part, _ = run(x[[2, 7]], 100, rows=[2, 7])
    for name in ("prediction", "radius", "counts", "selection_counts"):
        assert getattr(part, name).tobytes() == getattr(whole, name)[[2, 7]].tobytes()
    reseeded, _ = run(x, 1_000, seed=6)
    assert not np.array_equal(reseeded.counts, whole.counts)


# ------------------------------------------------------------------ summaries


def test_summaries_follow_the_papers_convention():
    from scrutiny.audit.robustness.smoothing import Certification

    prediction = np.array([0, 1, ABSTAIN, 2, 1, 0])
    radius = np.array([0.1, 0.6, 0.0, 0.3, 0.9, 0.2])
    y = np.array([0, 1, 1, 2, 0, 0])  # row 2 abstains, row 4 is wrong
    cert = Certification(prediction=prediction, radius=radius, p_lower=np.zeros(6), guess=np.zeros(6, dtype=int),
                         selection_counts=np.zeros((6, 3)), counts=np.zeros((6, 3)), rows=np.arange(6), sigma=0.25,
                         n0=1, n=1, alpha=0.1, seed=0, batch_size=1, device="cpu", seconds=1.0)
    np.testing.assert_allclose(certified_accuracy(cert, y, [0.0, 0.1, 0.25, 0.6, 0.7]), [4 / 6, 4 / 6, 2 / 6, 1 / 6, 0])
    radii, curve = certified_curve(cert, y)
    np.testing.assert_allclose(radii, [0.0, 0.1, 0.2, 0.3, 0.6])
    np.testing.assert_allclose(curve, [4 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert median_certified_radius(cert, y) == pytest.approx(np.median([0.1, 0.6, 0, 0.3, 0, 0.2]))
    assert median_certified_radius(cert, y, correct_only=True) == pytest.approx(np.median([0.1, 0.6, 0.3, 0.2]))
    summary = summarize(cert, y, [0.0, 0.5])
    assert summary.smoothed_accuracy == pytest.approx(4 / 6)  # abstentions count as errors
    assert summary.abstention_rate == pytest.approx(1 / 6)
    with pytest.raises(InputError, match="radii"):
        summarize(cert, y, [-1.0])


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(sigma=0.0), "sigma"), (dict(sigma=float("nan")), "sigma"), (dict(alpha=0.0), "alpha"),
    (dict(alpha=1.0), "alpha"), (dict(n0=200, n=100), "n0"), (dict(n=0), "'n'"), (dict(batch_size=0), "batch_size"),
    (dict(mutable=np.zeros(2, dtype=bool)), "mutable"), (dict(noise_scale=[1.0, 0.0]), "noise_scale"),
    (dict(rows=[0]), "rows"),
])
def test_bad_settings_are_one_line_errors(kwargs, fragment):
    settings = dict(sigma=0.25, n0=10, n=100, alpha=0.01, device="cpu") | kwargs
    with pytest.raises(InputError, match=fragment) as caught:
        certify(linear([1.0, 1.0], 0.0), np.zeros((2, 2), dtype=np.float32), **settings)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------ training with noise


class TrainRecorder(nn.Module):
    """A linear classifier that records its inputs, in training and in eval mode apart."""

    def __init__(self, d: int):
        super().__init__()
        self.linear = nn.Linear(d, 2)
        self.train_seen, self.eval_seen = [], []

    def forward(self, x):
        (self.train_seen if self.training else self.eval_seen).append(x.detach().clone())
        return self.linear(x)


def test_training_noise_goes_on_the_given_columns_fresh_each_batch():
    n = 400
    X = np.zeros((n, 3), dtype=np.float32)
    X[:, 1] = np.arange(n)  # identifies the row; gets no noise
    y = (np.arange(n) % 2).astype(np.int64)
    model = TrainRecorder(3)
    train(model, X, y, epochs=2, batch_size=50, val_fraction=0.25, noise_sigma=0.5, noise_columns=[0, 2],
          device="cpu", progress=False)
    seen = torch.cat(model.train_seen).numpy()
    assert len(seen) == 2 * 300
    assert np.isin(seen[:, 1], np.arange(n)).all()  # untouched
    np.testing.assert_allclose(seen[:, [0, 2]].std(axis=0), 0.5, rtol=0.1)
    first, second = seen[:300], seen[300:]  # the same rows in two epochs get new noise
    order = np.argsort(first[:, 1]), np.argsort(second[:, 1])
    assert not np.isclose(first[order[0], 0], second[order[1], 0]).any()
    # the validation rows: noisy, and the same noisy copies every epoch
    validation = [v for v in model.eval_seen if len(v) == 100]
    assert len(validation) == 2 and torch.equal(validation[0], validation[1])
    assert validation[0][:, 0].std() > 0.3 and (validation[0][:, 1] == validation[0][:, 1].round()).all()


def test_training_without_noise_is_unchanged():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 4)).astype(np.float32), (np.arange(200) % 2).astype(np.int64)
    weights = []
    for extra in ({}, {"noise_sigma": 0.0}, {"noise_sigma": 0.3}):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        train(model, X, y, epochs=2, batch_size=32, device="cpu", progress=False, seed=1, **extra)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    with pytest.raises(InputError, match="noise_columns"):
        train(nn.Linear(4, 2), X, y, epochs=1, noise_sigma=0.1, noise_columns=[4], device="cpu", progress=False)
    with pytest.raises(InputError, match="noise_sigma"):
        train(nn.Linear(4, 2), X, y, epochs=1, noise_sigma=-0.1, device="cpu", progress=False)


# ------------------------------------------------------------------ the command line

SPEC = """
label = "approved"
favourable = "yes"

[protected]
sex = ["male"]
age = { min = 25 }
"""


def one_line_error(code, out, err, *fragments) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def loans(tmp_path_factory) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    n = 300
    score, income = rng.normal(size=n).round(3), rng.normal(50, 10, size=n).round(1)
    frame = pd.DataFrame({
        "score": score, "income": income, "region": rng.choice(["north", "south"], size=n),
        "sex": rng.choice(["female", "male"], size=n), "age": rng.integers(18, 70, size=n),
        "approved": np.where(score + (income - 50) / 10 > 0, "yes", "no"),
    })
    folder = tmp_path_factory.mktemp("loans")
    frame.to_csv(folder / "loans.csv", index=False)
    (folder / "loans.toml").write_text(SPEC)
    return folder / "loans.csv", folder / "loans.toml"


def test_train_with_noise_records_it_and_certify_runs_end_to_end(capsys, tmp_path, loans):
    from scrutiny.audit.attributions.explain import sample_test_rows
    from scrutiny.models import load_model, load_table

    data, spec = loans
    out = tmp_path / "ckpt"
    code, _, err = cli(capsys, "train", "--data", data, "--spec", spec, "--out", out, "--epochs", "3", "--device", "cpu",
                       "--noise-sigma", "0.5")
    assert code == 0, err
    training = json.loads((out / "manifest.json").read_text())["training"]
    dataset = load_table(data, spec)
    groups = dataset.preprocessor.feature_groups
    assert training["noise_sigma"] == 0.5
    assert training["noise_columns"] == sorted(groups["score"] + groups["income"])  # not age: protected

    code, stdout, err = cli(capsys, "certify", out, "--data", data, "--spec", spec, "--n0", "20", "--n", "400",
                            "--samples", "15", "--alpha", "0.01", "--radii", "0,0.5,1", "--device", "cpu")
    assert code == 0, err
    assert "σ=0.5 (training standard deviations)" in stdout  # the checkpoint's σ by default
    assert "trained with Gaussian noise σ=0.5" in stdout
    assert "2 mutable numeric columns (score, income)" in stdout
    # the printed curve is the library's on the same rows, seed and settings
    loaded = load_model(str(out), dataset=dataset)
    rows, test_X = sample_test_rows(dataset, 15, 0)
    mask, scale = table_noise(dataset, loaded.preprocessor())
    cert = certify(loaded.model, loaded.preprocessor().transform(test_X), sigma=0.5, n0=20, n=400, alpha=0.01,
                   seed=0, device="cpu", noise_scale=scale, mutable=mask, rows=rows)
    summary = summarize(cert, np.asarray(dataset.test.y)[rows], [0.0, 0.5, 1.0])
    for r, share in zip(["0", "0.5", "1"], summary.certified_accuracy):
        assert f"│ {r:<9} │ {share:.1%}" in stdout, stdout
    assert f"abstained: {summary.abstention_rate:.1%}" in stdout

    code, stdout, err = cli(capsys, "certify", out, "--data", data, "--spec", spec, "--n0", "10", "--n", "50",
                            "--samples", "3", "--mutable", "age", "--sigma", "0.25", "--device", "cpu")
    assert code == 0, err
    assert "σ=0.25" in stdout and "3 mutable numeric columns (score, income, age)" in stdout


def test_certify_an_image_model(capsys, tmp_path):
    out = tmp_path / "digits"
    code, _, err = cli(capsys, "train", "--data", "digits", "--arch", "mlp", "--out", out, "--epochs", "1",
                       "--device", "cpu")
    assert code == 0, err
    code, stdout, err = cli(capsys, "certify", out, "--data", "digits", "--n0", "10", "--n", "100", "--samples", "4",
                            "--device", "cpu")
    assert code == 0, err
    assert "σ=0.25 (pixel units)" in stdout and "trained without noise augmentation" in stdout
    assert "noise on every pixel" in stdout and "certified accuracy" in stdout
    one_line_error(*cli(capsys, "certify", out, "--data", "digits", "--immutable", "x", "--n0", "5", "--n", "10"),
                   "--immutable")


@pytest.mark.parametrize("args,fragment", [
    (["--sigma", "0"], "--sigma"), (["--sigma", "-1"], "--sigma"), (["--sigma", "inf"], "--sigma"),
    (["--n0", "200", "--n", "100"], "--n0 200"), (["--alpha", "0"], "--alpha"), (["--alpha", "1"], "--alpha"),
    (["--alpha", "1.5"], "--alpha"), (["--norm", "linf"], "L2 radii only"), (["--radii", "0,-1"], "--radii"),
    (["--n", "0"], "--n 0"), (["--n0", "0"], "--n0"),
])
def test_certify_bad_input(capsys, tmp_path, args, fragment):
    one_line_error(*cli(capsys, "certify", tmp_path / "absent", "--data", "digits", *args), fragment)


def test_train_bad_noise_sigma(capsys, tmp_path):
    out = tmp_path / "ckpt"
    for value in ("-0.5", "nan"):
        one_line_error(*cli(capsys, "train", "--data", "digits", "--out", out, "--noise-sigma", value), "--noise-sigma")
    assert not out.exists()


def test_mutable_numeric_columns_of_a_table(loans):
    from scrutiny.models import load_table

    dataset = load_table(*loans)
    mask, scale = table_noise(dataset)
    names = np.asarray(dataset.preprocessor.encoded_feature_names)
    assert list(names[mask]) == ["score", "income"]
    encoded = dataset.preprocessor.transform(dataset.train.X)
    np.testing.assert_allclose(scale[mask], encoded[:, mask].std(axis=0))
    np.testing.assert_allclose(scale[mask], 1.0, rtol=1e-6)  # standardised with training statistics
    with pytest.raises(InputError, match="nosuch"):
        table_noise(dataset, immutable=["nosuch"])
    with pytest.raises(InputError, match="no numeric feature is left mutable.*nothing to (perturb or )?put noise on"):
        table_noise(dataset, immutable=["score", "income"])
    assert math.isclose(float(scale[~mask].min()), 1.0)
