"""APGD (Croce & Hein 2020) and PGD's step schedule, on small models trained here: a CNN of the
project's architecture on scikit-learn's 8x8 digits and an MLP on a synthetic table with
immutable, whole-number and bounded columns. APGD stays inside its ball and constraints, is at
least as strong as PGD at the same steps, its targeted DLR loss breaks what the cross-entropy
cannot, it is seeded and per row, and it agrees with ART's AutoProjectedGradientDescent; PGD
with more steps breaks every row it broke with fewer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from scrutiny.audit.robustness.attacks import (
    AttackStats,
    Constraints,
    apgd,
    apgd_checkpoints,
    image_constraints,
    perturbation_norm,
    pgd,
    pgd_step_sizes,
    run_attack,
)
from scrutiny.audit.robustness.registry import ATTACK_INFO, DEFAULT_ATTACKS, parse_attacks
from scrutiny.errors import InputError

BOX = image_constraints((1, 8, 8), (0.0, 1.0))


def _train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(X), generator=order).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(X[batch]), y[batch]).backward()
            optimiser.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    """The project's CNN, narrow, trained 10 epochs on 1,300 digits; the other 497 to attack."""
    from sklearn.datasets import load_digits

    from scrutiny.models.architectures import CNN

    data = load_digits()
    X = torch.as_tensor(data.data.reshape(-1, 1, 8, 8) / 16.0, dtype=torch.float32)
    y = torch.as_tensor(data.target)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1300], perm[1300:]
    torch.manual_seed(0)
    model = _train(CNN(input_shape=(1, 8, 8), n_classes=10, channels=(8, 16)), X[train], y[train], epochs=10, lr=3e-3)
    return model, X[test], y[test]


class Table:
    """600 rows: ``age`` (immutable), ``visits`` and ``children`` (whole numbers), ``income`` and
    ``debt`` (free), ``member`` (immutable 0/1); 4 classes (or 2), standardised as a preprocessor would."""

    def __init__(self):
        rng = np.random.default_rng(0)
        n = 600
        raw = np.column_stack([rng.uniform(18, 80, n), rng.integers(0, 21, n), rng.integers(0, 6, n),
                               rng.normal(50, 15, n), rng.normal(10, 5, n), rng.integers(0, 2, n)]).astype(np.float64)
        self.mean, self.std = raw.mean(axis=0), raw.std(axis=0)
        self.X = torch.as_tensor((raw - self.mean) / self.std, dtype=torch.float32)
        z = self.X.numpy()
        score = np.column_stack([z[:, 1] + z[:, 3], z[:, 2] - z[:, 4], z[:, 3] * z[:, 4] + z[:, 0], z[:, 5] - z[:, 1]])
        self.y4 = torch.as_tensor(score.argmax(axis=1))
        self.y2 = torch.as_tensor((z[:, 1] + z[:, 3] - z[:, 4] > 0).astype(np.int64))
        self.mutable = np.array([False, True, True, True, True, False])
        self.integer = np.array([1, 2])
        lower, upper = z[:400].min(axis=0), z[:400].max(axis=0)  # the range seen in training
        self.constraints = Constraints(lower=lower.astype(np.float64), upper=upper.astype(np.float64),
                                       mutable=self.mutable, integer=self.integer, scale=self.std[self.integer],
                                       offset=self.mean[self.integer])

    def model(self, y: torch.Tensor) -> nn.Module:
        torch.manual_seed(0)
        mlp = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, int(y.max()) + 1))
        return _train(mlp, self.X[:400], y[:400], epochs=60, lr=1e-2)


@pytest.fixture(scope="module")
def table():
    table = Table()
    return table, table.model(table.y4), table.model(table.y2)


def accuracy(model, X, y) -> float:
    with torch.no_grad():
        return float((model(X).argmax(dim=1) == y).float().mean())


def broken(model, x_adv, y) -> np.ndarray:
    with torch.no_grad():
        return (model(x_adv).argmax(dim=1) != y).numpy()


# ---------------------------------------------------------------- the schedule pieces


def test_checkpoints_follow_the_paper():
    """w_j = ⌈p_j N⌉ with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06):
    computed here in exact fractions."""
    from fractions import Fraction
    from math import ceil

    def reference(n: int) -> list[int]:
        p = [Fraction(0), Fraction(22, 100)]
        while (following := p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100))) <= 1:
            p.append(following)
        return sorted({ceil(q * n) for q in p})

    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    for n in (1, 5, 10, 20, 37, 40, 50, 100, 250, 1000):
        assert apgd_checkpoints(n) == reference(n), n


def test_dlr_targeted_loss_is_the_formula_and_scale_free():
    from scrutiny.audit.robustness.attacks import _apgd_loss, _apgd_targets

    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0, 2.0], [0.0, 4.0, 1.0, 2.0, -3.0]])
    y = torch.tensor([0, 1])
    targets = _apgd_targets(logits, y, 9)
    assert [t.tolist() for t in targets] == [[4, 3], [1, 2], [2, 0], [3, 4]]  # most likely wrong class first
    z = logits.numpy()
    for target in targets:
        got = _apgd_loss(logits, y, target).numpy()
        for i in range(2):
            top = np.sort(z[i])[::-1]
            want = -(z[i, y[i]] - z[i, target[i]]) / (top[0] - (top[2] + top[3]) / 2)
            assert got[i] == pytest.approx(want, rel=1e-6)
        assert np.allclose(_apgd_loss(100 * logits, y, target).numpy(), got, rtol=1e-5)
    # three classes: no z_π4, the targeted margin
    three = logits[:, :3]
    assert _apgd_loss(three, y, torch.tensor([2, 0])).tolist() == [-(3.0 - 0.5), -(4.0 - 0.0)]


def test_pgd_schedule_of_fewer_steps_is_the_start_of_more():
    long = pgd_step_sizes(100, 0.5)
    for steps in (1, 10, 25, 40):
        assert pgd_step_sizes(steps, 0.5) == long[:steps]
    assert long[0] == long[10] == long[30] == 0.5 and max(long) == 0.5 and min(long) > 0


# ---------------------------------------------------------------- (a) the ball and the constraints


@pytest.mark.parametrize("loss", ["ce", "dlr-targeted"])
@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.6)])
def test_image_apgd_stays_in_ball_and_pixel_range(digits, loss, norm, eps):
    model, X, y = digits
    X, y = X[:120], y[:120]
    radii = torch.full((len(X),), eps)
    radii[:10] = 0.0
    radii[10:20] = eps / 3
    x_adv = apgd(model, X, y, radii, norm=norm, constraints=BOX, steps=20, loss=loss, target_classes=3)
    assert x_adv.shape == X.shape and x_adv.dtype == X.dtype
    assert np.all(perturbation_norm(x_adv, X, norm) <= radii.numpy() * (1 + 1e-5) + 1e-6)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert torch.equal(x_adv[:10], X[:10])  # radius 0: untouched
    assert broken(model, x_adv, y).mean() > 1 - accuracy(model, X, y) + 0.2  # it does attack
    wrong = (model(X).argmax(dim=1) != y).nonzero().squeeze(1)
    assert torch.equal(x_adv[wrong], X[wrong])  # rows wrong already stay as they are
    assert all(p.grad is None for p in model.parameters()), "APGD left gradients on the weights"


@pytest.mark.parametrize("loss", ["ce", "dlr-targeted"])
@pytest.mark.parametrize("norm, eps", [("linf", 0.5), ("l2", 1.0)])
@pytest.mark.parametrize("classes", [4, 2])
def test_tabular_apgd_keeps_every_constraint(table, loss, norm, eps, classes):
    """Immutable columns unchanged, each column within the training range (or the row's own
    value), whole-number columns whole in original units; with two classes APGD-T's loss is
    the margin, and it still breaks rows."""
    data, four, two = table
    model, y = (four, data.y4) if classes == 4 else (two, data.y2)
    X, y = data.X[400:], y[400:]
    x_adv = apgd(model, X, y, eps, norm=norm, constraints=data.constraints, steps=30, loss=loss)
    x, adv = X.numpy(), x_adv.numpy()
    assert perturbation_norm(adv, x, norm).max() <= eps * (1 + 1e-5) + 1e-6
    np.testing.assert_array_equal(adv[:, ~data.mutable], x[:, ~data.mutable])
    lower = np.minimum(data.constraints.lower, x)
    upper = np.maximum(data.constraints.upper, x)
    assert np.all(adv >= lower - 1e-6) and np.all(adv <= upper + 1e-6)
    original = adv[:, data.integer].astype(np.float64) * data.std[data.integer] + data.mean[data.integer]
    np.testing.assert_allclose(original, np.round(original), atol=1e-4)
    # the rows counted broken are broken with their whole numbers rounded, and there are some
    assert broken(model, x_adv, y).mean() > 1 - accuracy(model, X, y) + 0.1
    assert (np.abs(adv - x)[:, data.mutable] > 1e-6).any(axis=1).mean() > 0.5


# ---------------------------------------------------------------- (b) strength


def test_apgd_ce_is_at_least_as_strong_as_pgd_and_apgd_t_breaks_more(digits):
    """L∞, ε = 0.1, 50 steps, all 497 rows: APGD-CE leaves no more rows standing than PGD;
    APGD-T (targeted DLR, 9 classes) leaves no more than APGD-CE, and breaks at least 5% of the
    rows APGD-CE leaves (here about 10%; with the loss's sign flipped, 3%)."""
    model, X, y = digits
    eps, steps = 0.1, 50
    pgd_broken = broken(model, pgd(model, X, y, eps, constraints=BOX, steps=steps, seed=0), y)
    ce_broken = broken(model, apgd(model, X, y, eps, constraints=BOX, steps=steps, seed=0), y)
    clean_wrong = 1 - accuracy(model, X, y)
    assert 1 - pgd_broken.mean() > 0.1  # PGD leaves rows standing: there is something to gain
    assert ce_broken.mean() >= pgd_broken.mean(), (ce_broken.mean(), pgd_broken.mean())
    assert ce_broken.mean() > clean_wrong + 0.5
    t_alone = broken(model, apgd(model, X, y, eps, constraints=BOX, steps=steps, loss="dlr-targeted", seed=0), y)
    assert t_alone.mean() >= ce_broken.mean(), (t_alone.mean(), ce_broken.mean())
    left = ~ce_broken
    t_broken = broken(model, apgd(model, X[left], y[left], eps, constraints=BOX, steps=steps, loss="dlr-targeted",
                                  seed=0), y[left])
    assert t_broken.mean() >= 0.05, (t_broken.sum(), left.sum())


class Saturated(nn.Module):
    """The model's logits times 1,000: the softmax saturates, so the cross-entropy's gradient is
    exactly zero on confident rows; the DLR loss does not change with the scale."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return 1000 * self.model(x)


def test_the_targeted_dlr_loss_sees_through_a_saturated_softmax(digits):
    """On the saturated model APGD-CE breaks almost nothing, APGD-T as much as on the model itself
    and about as much as APGD-CE there."""
    model, X, y = digits
    X, y = X[:200], y[:200]
    eps, steps = 0.1, 30
    saturated = Saturated(model)
    stats = AttackStats()
    ce = broken(model, apgd(saturated, X, y, eps, constraints=BOX, steps=steps, stats=stats), y).mean()
    t_plain = broken(model, apgd(model, X, y, eps, constraints=BOX, steps=steps, loss="dlr-targeted",
                                 target_classes=3), y).mean()
    t_saturated = broken(model, apgd(saturated, X, y, eps, constraints=BOX, steps=steps, loss="dlr-targeted",
                                     target_classes=3), y).mean()
    ce_plain = broken(model, apgd(model, X, y, eps, constraints=BOX, steps=steps), y).mean()
    assert stats.zero_gradient > 0.5
    assert t_saturated > ce + 0.3, (t_saturated, ce)
    assert abs(t_saturated - t_plain) <= 0.02, (t_saturated, t_plain)
    assert t_saturated >= ce_plain - 0.03, (t_saturated, ce_plain)


class Bowl(nn.Module):
    """Two classes, logits (0, −|x − c|²): the cross-entropy of class 0 is highest at ``c`` (a
    tie, which the argmax gives class 0), so no point misclassifies and the best point is ``c``."""

    def __init__(self, centre: torch.Tensor):
        super().__init__()
        self.register_buffer("centre", centre)

    def forward(self, x):
        distance = ((x - self.centre) ** 2).flatten(1).sum(dim=1)
        return torch.stack([torch.zeros_like(distance), -distance], dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_step_size_halves_until_the_best_point_is_found(norm):
    """With the maximum inside the ball, a fixed step of 2ε only bounces around it; the halving
    at checkpoints where the loss stalls homes in on it, and returns it for rows left standing."""
    centre = torch.tensor([0.3, -0.2, 0.5, 0.1])
    x = torch.zeros(3, 4)
    y = torch.zeros(3, dtype=torch.long)
    free = Constraints(lower=np.full(4, -10.0), upper=np.full(4, 10.0), mutable=np.ones(4, dtype=bool))
    stats = AttackStats()
    x_adv = apgd(Bowl(centre), x, y, 1.0, norm=norm, constraints=free, steps=100, seed=0, stats=stats)
    assert (x_adv - centre).abs().max() < 0.02, x_adv
    assert stats.checkpoint_rows == 3 and stats.improving_rows == 0  # converged: the best loss no longer rises


# ---------------------------------------------------------------- (c) seeds and rows


def test_seeded_and_per_row(digits, table):
    model, X, y = digits
    X, y = X[:20], y[:20]
    once = apgd(model, X, y, 0.1, constraints=BOX, steps=20, seed=3)
    assert torch.equal(once, apgd(model, X, y, 0.1, constraints=BOX, steps=20, seed=3))
    assert not torch.equal(once, apgd(model, X, y, 0.1, constraints=BOX, steps=20, seed=4))
    # each row has its own step size and checkpoints: from the rows themselves (no random
    # start), attacking rows 0-9 and 10-19 apart, or each alone, gives the same as together; with random starts
    # a row's start is drawn from the batch's generator, as PGD's, and the chunked audit seeds
    # each chunk
    data, four, _ = table
    for loss in ("ce", "dlr-targeted"):
        for model_, x, y_, constraints in ((model, X, y, BOX), (four, data.X[400:420], data.y4[400:420],
                                                                  data.constraints)):
            def run(rows, model_=model_, x=x, y_=y_, constraints=constraints, loss=loss):
                return apgd(model_, x[rows], y_[rows], 0.3, constraints=constraints, steps=20, loss=loss,
                            target_classes=3, random_start=False)

            together = run(slice(0, 20))
            torch.testing.assert_close(torch.cat([run(slice(0, 10)), run(slice(10, 20))]), together, rtol=0, atol=1e-6)
            torch.testing.assert_close(torch.cat([run(slice(i, i + 1)) for i in range(20)]), together, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- (d) against ART


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.4)])
def test_apgd_ce_agrees_with_art(digits, norm, eps):
    """Same model, 300 rows, ε, 50 steps, first step 2ε, ρ = 0.75, one random start, the
    cross-entropy: robust accuracy within 2 points of ART's, each averaged over three seeds
    (the random starts differ, and ART counts only its last iterate)."""
    art_attacks = pytest.importorskip("art.attacks.evasion")
    from art.estimators.classification import PyTorchClassifier

    model, X, y = digits
    X, y = X[:300], y[:300]
    steps = 50
    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                                   clip_values=(0.0, 1.0), device_type="cpu")
    ours, theirs = [], []
    for seed in range(3):
        ours.append(accuracy(model, apgd(model, X, y, eps, norm=norm, constraints=BOX, steps=steps, seed=seed), y))
        np.random.seed(seed)
        attack = art_attacks.AutoProjectedGradientDescent(
            classifier, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=2 * eps, max_iter=steps,
            nb_random_init=1, batch_size=len(X), loss_type="cross_entropy", verbose=False)
        theirs.append(accuracy(model, torch.as_tensor(attack.generate(X.numpy(), y=y.numpy())), y))
    model.zero_grad(set_to_none=True)  # ART's loss_gradient calls backward(), which fills the weights' .grad
    assert np.mean(theirs) < accuracy(model, X, y) - 0.2  # an ε where both have work to do
    assert abs(np.mean(ours) - np.mean(theirs)) <= 0.02, (ours, theirs)


# ---------------------------------------------------------------- (e) PGD: more steps never weaker


@pytest.mark.parametrize("norm, eps, restarts", [("linf", 0.1, 1), ("linf", 0.05, 2), ("l2", 0.5, 1)])
def test_pgd_with_more_steps_breaks_every_row_it_broke_with_fewer(digits, norm, eps, restarts):
    model, X, y = digits
    X, y = X[:250], y[:250]
    flags = [broken(model, pgd(model, X, y, eps, norm=norm, constraints=BOX, steps=steps, restarts=restarts, seed=0), y)
             for steps in (10, 40, 100)]
    for fewer, more in zip(flags, flags[1:]):
        assert np.all(more >= fewer)
    assert 0 < flags[-1].mean() < 1


# ---------------------------------------------------------------- registry, settings, statistics


def test_registered_by_name_and_part_of_the_default_ensemble(digits):
    model, X, y = digits
    X, y = X[:40], y[:40]
    assert DEFAULT_ATTACKS == ("apgd-ce", "apgd-t", "square", "gaussian")  # AutoAttack's chain and the noise baseline
    assert "pgd" not in DEFAULT_ATTACKS and "fgsm" not in DEFAULT_ATTACKS and {"pgd", "fgsm"} <= set(ATTACK_INFO)
    for name, loss in (("apgd-ce", "ce"), ("apgd-t", "dlr-targeted")):
        info = ATTACK_INFO[name]
        assert info.kind == "white-box" and info.needs_gradients and set(info.norms) == {"linf", "l2"}
        assert name in DEFAULT_ATTACKS
        direct = apgd(model, X, y, 0.1, constraints=BOX, steps=12, restarts=2, loss=loss, seed=5)
        assert torch.equal(run_attack(name, model, X, y, 0.1, constraints=BOX, steps=12, restarts=2, seed=5), direct)
    assert parse_attacks(["APGD-CE", "apgd-t", "square"]) == ("apgd-ce", "apgd-t", "square")
    from scrutiny.audit.run.config import load_config

    config = load_config({"robustness": {"attacks": ["apgd-ce", "apgd-t"]}}, task="image", fairness=False)
    assert config.robustness.attacks == ["apgd-ce", "apgd-t"]


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "^APGD needs at least one step"),
    ({"restarts": 0}, "^APGD needs at least one step and one restart"),
    ({"loss": "dlr"}, "^APGD loss 'dlr' is not supported; expected one of ce, dlr-targeted"),
    ({"target_classes": 0}, "^APGD-T needs at least one target class"),
    ({"norm": "l1"}, "^norm 'l1' is not supported"),
])
def test_bad_settings_are_one_line_errors(digits, kwargs, message):
    model, X, y = digits
    with pytest.raises(InputError, match=message):
        apgd(model, X[:4], y[:4], 0.1, constraints=BOX, **kwargs)


def test_statistics_count_rows_and_the_still_improving_share(digits):
    """Rows left unbroken at the last checkpoint are at least the rows left standing; with few
    steps the best loss is still rising on more of them than after many."""
    model, X, y = digits
    X, y = X[:200], y[:200]
    shares = {}
    for steps in (5, 100):
        stats = AttackStats()
        x_adv = apgd(model, X, y, 0.05, constraints=BOX, steps=steps, stats=stats)
        standing = int((~broken(model, x_adv, y)).sum())
        assert stats.checkpoint_rows >= standing > 0 and 0 <= stats.improving_rows <= stats.checkpoint_rows
        assert stats.gradient_rows == int((model(X).argmax(dim=1) == y).sum())  # the first gradient: rows attacked
        assert stats.model_rows >= len(X) + (steps + 1) * standing
        shares[steps] = stats.still_improving
    assert shares[5] > shares[100] + 0.2, shares
    assert AttackStats(checkpoint_rows=4, improving_rows=1).still_improving == 0.25
    assert (AttackStats(checkpoint_rows=2) + AttackStats(checkpoint_rows=2, improving_rows=1)).still_improving == 0.25
    assert np.isnan(AttackStats().still_improving)
