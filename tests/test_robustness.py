"""Attacks stay inside their ε-ball and constraints, actually hurt, agree with ART's PGD, and a
model with masked gradients is caught. The contract tests run every attack of the registry
(:mod:`scrutiny.audit.robustness.registry`) in every norm it declares."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from scrutiny.audit.robustness import attacks as attacks_module
from scrutiny.audit.robustness.assess import assess_robustness, fit_detector
from scrutiny.audit.robustness.attacks import (
    image_constraints,
    perturbation_norm,
    pgd,
    random_noise,
    run_attack,
    square,
    tabular_constraints,
)
from scrutiny.audit.robustness.registry import (
    ATTACK_INFO,
    ATTACKS,
    DEFAULT_ATTACKS,
    KINDS,
    NORMS,
    REAL_ATTACKS,
    WHITE_BOX,
    primary_attack,
)
from scrutiny.errors import InputError


@pytest.fixture(scope="module")
def digits_cnn(trained):
    dataset, result, _ = trained("digits", "cnn")
    model = result.model.eval()
    X = torch.as_tensor(dataset.encode(dataset.test.X[:200]))
    y = torch.as_tensor(dataset.test.y[:200])
    return dataset, model, X, y


def accuracy(model, X, y) -> float:
    with torch.no_grad():
        return float((model(X).argmax(dim=1) == y).float().mean())


def check_image_ball(x_adv, x, eps, norm):
    assert x_adv.shape == x.shape
    assert perturbation_norm(x_adv, x, norm).max() <= eps * (1 + 1e-5) + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def attack(name, model, x, y, eps, norm, constraints):
    """The registered attack ``name`` with small settings: the contract does not depend on them."""
    return run_attack(name, model, x, y, eps, norm=norm, constraints=constraints, steps=10, restarts=2, queries=50)


EPS = {"linf": 0.1, "l2": 0.5}  # image radii per norm
CASES = [(name, norm) for name, info in ATTACK_INFO.items() for norm in info.norms]


@pytest.mark.parametrize("name, norm", CASES)
def test_image_attacks_stay_in_ball_and_pixel_range(digits_cnn, name, norm):
    _, model, X, y = digits_cnn
    constraints = image_constraints((1, 8, 8), (0.0, 1.0))
    x_adv = attack(name, model, X[:64], y[:64], EPS[norm], norm, constraints)
    check_image_ball(x_adv, X[:64], EPS[norm], norm)
    assert all(p.grad is None for p in model.parameters()), "an attack left gradients on the weights"


def test_registry_is_complete_and_the_derived_lists_follow_it():
    assert set(attacks_module._RUNNERS) == set(ATTACKS) == set(ATTACK_INFO)  # every attack has an implementation
    for name, info in ATTACK_INFO.items():
        assert info.name == name and info.kind in KINDS and info.norms and set(info.norms) <= set(NORMS)
        assert info.needs_gradients == (info.kind == "white-box")
    assert WHITE_BOX == tuple(a for a in ATTACKS if ATTACK_INFO[a].needs_gradients)
    assert REAL_ATTACKS == tuple(a for a in ATTACKS if ATTACK_INFO[a].kind != "noise")
    assert DEFAULT_ATTACKS == tuple(a for a in ATTACKS if ATTACK_INFO[a].default) and DEFAULT_ATTACKS
    noise = [a for a in ATTACKS if ATTACK_INFO[a].kind == "noise"]
    assert primary_attack(noise + [REAL_ATTACKS[-1], REAL_ATTACKS[0]]) == REAL_ATTACKS[0]
    assert primary_attack(noise) == noise[0]


class NoGradients(nn.Module):
    """The same outputs as ``model``, computed under ``torch.no_grad``: they carry no gradient."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.no_grad():
            return self.model(x)


@pytest.mark.parametrize("name", ATTACKS)
def test_needs_gradients_is_honest(digits_cnn, name):
    """On a model whose outputs carry no gradient, exactly the attacks declared to need gradients
    fail; the others attack it as they attack the model itself."""
    _, model, X, y = digits_cnn
    constraints = image_constraints((1, 8, 8), (0.0, 1.0))
    cut = NoGradients(model)
    if ATTACK_INFO[name].needs_gradients:
        with pytest.raises(RuntimeError):
            attack(name, cut, X[:16], y[:16], 0.1, "linf", constraints)
    else:
        x_adv = attack(name, cut, X[:16], y[:16], 0.1, "linf", constraints)
        assert torch.equal(x_adv, attack(name, model, X[:16], y[:16], 0.1, "linf", constraints))


def test_per_row_radii_are_respected(digits_cnn):
    _, model, X, y = digits_cnn
    radii = torch.linspace(0.0, 0.3, 32)
    x_adv = pgd(model, X[:32], y[:32], radii, constraints=image_constraints((1, 8, 8), (0.0, 1.0)), steps=5)
    assert np.all(perturbation_norm(x_adv, X[:32], "linf") <= radii.numpy() + 1e-6)
    assert torch.equal(x_adv[0], X[0])  # radius 0: untouched


def test_pgd_hurts_the_digits_cnn_far_more_than_noise(digits_cnn):
    _, model, X, y = digits_cnn
    constraints = image_constraints((1, 8, 8), (0.0, 1.0))
    eps = 0.15
    clean = accuracy(model, X, y)
    attacked = accuracy(model, pgd(model, X, y, eps, constraints=constraints), y)
    noisy = accuracy(model, random_noise(model, X, y, eps, constraints=constraints), y)
    assert clean > 0.95
    assert clean - attacked >= 0.30, (clean, attacked)
    assert noisy - attacked >= 0.30, (noisy, attacked)
    # the gradient-free attack also gets somewhere: gradients are not the only way in
    assert accuracy(model, square(model, X, y, eps, constraints=constraints, queries=300), y) < clean - 0.2


@pytest.mark.parametrize("norm, eps, random_start", [("linf", 0.1, False), ("linf", 0.15, True), ("l2", 0.6, False)])
def test_pgd_agrees_with_art(digits_cnn, norm, eps, random_start):
    """Same model, rows, ε, steps and step size: our robust accuracy is ART's within 2 points.
    From the clean input the two runs are the same algorithm; from random starts they draw
    differently (ART from NumPy's global generator, seeded here), which at an ε where
    accuracy is mid-way moves a few rows either way, so the random-start case sits at an ε
    where most rows fall. All 450 test rows."""
    art_attacks = pytest.importorskip("art.attacks.evasion")
    from art.estimators.classification import PyTorchClassifier

    dataset, model, _, _ = digits_cnn
    X, y = torch.as_tensor(dataset.encode(dataset.test.X)), torch.as_tensor(dataset.test.y)
    np.random.seed(0)
    steps = 20
    ours = pgd(model, X, y, eps, norm=norm, constraints=image_constraints((1, 8, 8), (0.0, 1.0)), steps=steps,
               schedule="constant", random_start=random_start, seed=0)
    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                                   clip_values=(0.0, 1.0), device_type="cpu")
    attack = art_attacks.ProjectedGradientDescent(classifier, norm=np.inf if norm == "linf" else 2, eps=eps,
                                                  eps_step=2.5 * eps / steps, max_iter=steps,
                                                  num_random_init=int(random_start), batch_size=len(X), verbose=False)
    theirs = torch.as_tensor(attack.generate(X.numpy(), y=y.numpy()))
    model.zero_grad(set_to_none=True)  # ART's loss_gradient calls backward(), which fills the weights' .grad
    ours_acc, art_acc = accuracy(model, ours, y), accuracy(model, theirs, y)
    assert art_acc < accuracy(model, X, y) - 0.2  # the comparison is at an ε where both have work to do
    assert abs(ours_acc - art_acc) <= 0.02, (ours_acc, art_acc)


class Rounded(nn.Module):
    """Quantises its input before the model: the gradient w.r.t. the input is zero everywhere."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


def test_masked_gradients_trigger_the_weak_evaluation_warning(digits_cnn):
    dataset, model, _, _ = digits_cnn
    masked = assess_robustness(Rounded(model), dataset, attacks=("pgd", "square"), eps=(0.1, 0.2), samples=60,
                               steps=10, queries=200, search_steps=2, device="cpu")
    text = " ".join(masked.warnings)
    assert "gradients are all zero" in text
    assert "square (no gradients) beats" in text
    honest = assess_robustness(model, dataset, attacks=("pgd", "square"), eps=(0.1, 0.2), samples=60,
                               steps=10, queries=200, search_steps=2, device="cpu")
    assert not any("gradients are all zero" in w or "beats" in w for w in honest.warnings), honest.warnings


def test_assess_robustness_on_digits(digits_cnn):
    dataset, model, _, _ = digits_cnn
    detector = fit_detector(dataset, epochs=5)
    result = assess_robustness(model, dataset, attacks=("pgd", "fgsm", "gaussian"), eps=(0.05, 0.1, 0.2),
                               samples=80, steps=10, search_steps=6, detector=detector, max_examples=6, device="cpu")
    pgd_acc = [result.point("pgd", e).robust_accuracy for e in result.eps]
    worst = [result.point("worst case", e).robust_accuracy for e in result.eps]
    assert pgd_acc[0] >= pgd_acc[-1] and pgd_acc[-1] < result.curve[0].clean_accuracy - 0.3
    # the worst case counts a row robust only if every attack failed on it
    for k, e in enumerate(result.eps):
        assert worst[k] <= min(result.point(a, e).robust_accuracy for a in result.attacks) + 1e-9
        assert np.array_equal(result.robust["worst case"][k], np.logical_and.reduce([result.robust[a][k] for a in result.attacks]))
    # smallest flipping eps: rows PGD broke at eps (per the grid) mostly need no more than about eps
    finite = np.isfinite(result.min_eps)
    assert finite.mean() > 0.9 and result.large_eps_accuracy <= 0.05
    assert 0 < result.median_min_eps < result.search_eps
    for k, e in enumerate(result.eps):
        share_flipped_by_search = np.mean(result.min_eps <= e)
        assert abs(share_flipped_by_search - (1 - result.robust["pgd"][k].mean())) <= 0.15
    assert 0 < len(result.examples) <= 6
    for example in result.examples:
        assert example.after != example.before == example.label
        assert perturbation_norm(example.x_adv[None], example.x[None], "linf")[0] <= example.eps + 1e-6
    assert len(result.ood) == 3 and all(0.0 <= o["auroc"] <= 1.0 for o in result.ood if o["n_adversarial"])
    assert "pixels stay in the valid range [0, 1]" in result.constraints[0]


def test_tabular_attacks_keep_every_constraint(load):
    """German credit has every kind of feature: numeric, whole-number, categorical, binary, protected."""
    from scrutiny.models import train_on

    german = load("german")
    model = train_on(german, "mlp", seed=0, progress=False, epochs=5).model.eval()
    pre = german.preprocessor
    X_train = pre.transform(german.train.X)
    constraints = tabular_constraints(pre, X_train, immutable=("duration",))
    X = torch.as_tensor(pre.transform(german.test.X))
    y = torch.as_tensor(german.test.y)
    groups = pre.feature_groups
    held = {"sex", "age", "duration"} | {f.name for f in german.spec.features if f.kind != "numeric"}
    for name, norm in CASES:  # every registered attack in every norm it declares
        eps = {"linf": 0.5, "l2": 1.0}[norm]
        x_adv = attack(name, model, X, y, eps, norm, constraints).numpy()
        x = X.numpy()
        assert perturbation_norm(x_adv, x, norm).max() <= eps * (1 + 1e-5) + 1e-6, name
        for feature in german.spec.features:
            cols = groups[feature.name]
            if feature.name in held:
                np.testing.assert_array_equal(x_adv[:, cols], x[:, cols], err_msg=f"{name} moved {feature.name}")
                continue
            (c,) = cols
            lo, hi = min(X_train[:, c].min(), x[:, c].min()), max(X_train[:, c].max(), x[:, c].max())
            assert x_adv[:, c].min() >= lo - 1e-6 and x_adv[:, c].max() <= hi + 1e-6, (name, feature.name)
            if feature.integer:
                original = x_adv[:, c].astype(np.float64) * pre.scales_[feature.name] + pre.means_[feature.name]
                np.testing.assert_allclose(original, np.round(original), atol=1e-3, err_msg=f"{name} {feature.name}")
        for feature in german.spec.features:
            if feature.kind == "categorical":
                block = x_adv[:, groups[feature.name]]
                assert set(np.unique(block)) <= {0.0, 1.0} and np.all(block.sum(axis=1) <= 1)
    moved = pgd(model, X, y, 1.0, constraints=constraints)
    assert (perturbation_norm(moved.numpy(), X.numpy(), "linf") > 0).mean() > 0.5  # it does change rows
    (rule,) = [r for r in constraints.applied if r.startswith("immutable: ")]
    assert set(rule.removeprefix("immutable: ").split(", ")) == {"sex", "age", "duration"}


def test_tabular_constraint_options_name_bad_features(load):
    german = load("german")
    X_train = german.preprocessor.transform(german.train.X)
    with pytest.raises(InputError, match="^immutable: no feature named 'salary'"):
        tabular_constraints(german.preprocessor, X_train, immutable=("salary",))
    freed = tabular_constraints(german.preprocessor, X_train, mutable=("age",))
    (age,) = german.preprocessor.feature_groups["age"]
    assert freed.mutable[age]


def _user_table(tmp_path, spec_line: str):
    """A user's table whose label is ``income + years > 0``, with ``spec_line`` in its TOML spec."""
    import pandas as pd

    from scrutiny.models import load_table

    rng = np.random.default_rng(0)
    income, years = rng.normal(size=300).round(3), rng.integers(-5, 6, size=300)
    frame = pd.DataFrame({"income": income, "years": years,
                          "approved": np.where(income + years / 3 > 0, "yes", "no")})
    tmp_path.mkdir()
    frame.to_csv(tmp_path / "loans.csv", index=False)
    (tmp_path / "loans.toml").write_text(f'label = "approved"\nfavourable = "yes"\n{spec_line}\n')
    return load_table(tmp_path / "loans.csv", tmp_path / "loans.toml")


def test_a_user_spec_immutable_column_is_never_changed_by_an_attack(tmp_path):
    from scrutiny.audit.robustness.assess import constraints_for
    from scrutiny.models import train_on

    held = _user_table(tmp_path / "held", 'immutable = ["years"]')
    free = _user_table(tmp_path / "free", "")
    assert held.spec.immutable == ("years",) and free.spec.immutable == ()
    model = train_on(held, "mlp", seed=0, progress=False, epochs=5).model.eval()
    X = torch.as_tensor(held.encode(held.test.X))
    y = torch.as_tensor(held.test.y)
    (years,) = held.preprocessor.feature_groups["years"]
    (income,) = held.preprocessor.feature_groups["income"]

    def moved(dataset, **options) -> np.ndarray:
        """Per encoded column, the share of rows PGD at 2 standard deviations changed."""
        constraints = constraints_for(dataset, **options)
        x_adv = pgd(model, X, y, 2.0, constraints=constraints, steps=10).numpy()
        return (np.abs(x_adv - X.numpy()) > 1e-6).mean(axis=0)

    kept = moved(held)
    assert kept[years] == 0.0 and kept[income] > 0.5
    assert "immutable: years" in constraints_for(held).applied
    # the same table without the declaration, or with the config's robustness.mutable: years moves
    assert moved(free)[years] > 0.1
    assert moved(held, mutable=("years",))[years] > 0.1


def test_spec_immutable_comes_from_the_data_set_not_an_older_checkpoint_spec(load):
    """A checkpoint written before ``immutable`` existed carries a spec without it; the audited
    data set's declaration still holds the column."""
    import dataclasses

    from scrutiny.audit.robustness.assess import constraints_for
    from scrutiny.models.preprocessing import preprocessor_from_dict

    adult = load("adult")
    old_spec = dataclasses.replace(adult.spec, immutable=())
    checkpoint_preprocessor = preprocessor_from_dict(adult.preprocessor.to_dict(), old_spec)
    constraints = constraints_for(adult, checkpoint_preprocessor)
    (age,) = adult.preprocessor.feature_groups["age"]
    assert not constraints.mutable[age]
    assert "immutable: age, race, sex" in constraints.applied


def test_assess_robustness_on_a_table_reports_changes(load):
    from scrutiny.models import train_on

    german = load("german")
    model = train_on(german, "mlp", seed=0, progress=False, epochs=5).model
    result = assess_robustness(model, german, attacks=("pgd", "square"), eps=(0.5, 1.0), samples=100, steps=10,
                               queries=100, search_steps=3, device="cpu")
    assert result.examples, "no adversarial example on German credit at 1 standard deviation"
    numeric = {f.name for f in german.spec.features if f.kind == "numeric"} - {"age"}
    for example in result.examples:
        assert example.changes and {name for name, _, _ in example.changes} <= numeric
        assert all(before != after for _, before, after in example.changes)
    assert any(rule.startswith("categorical and binary features are held") for rule in result.constraints)


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": (0.1, -1.0)}, "^eps: expected finite positive numbers"),
    ({"eps": (1e308,)}, r"^eps: expected finite positive numbers .*float32.*got 1e\+308"),
    ({"norm": "l3"}, "^norm 'l3': expected one of linf, l2"),
    ({"attacks": ("pgd", "carlini")}, "unknown attack 'carlini'"),
    ({"immutable": ("age",)}, "^immutable and mutable name table features"),
])
def test_bad_options_are_clear_errors(digits_cnn, kwargs, message):
    dataset, model, _, _ = digits_cnn
    with pytest.raises(InputError, match=message):
        assess_robustness(model, dataset, samples=4, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pgd_runs_on_the_gpu(digits_cnn):
    _, model, X, y = digits_cnn
    gpu = model.to("cuda")
    try:
        x_adv = pgd(gpu, X.cuda(), y.cuda(), 0.1, constraints=image_constraints((1, 8, 8), (0.0, 1.0)), steps=10)
        assert x_adv.is_cuda
        check_image_ball(x_adv.cpu(), X, 0.1, "linf")
    finally:
        model.cpu()


def cli(capsys, *args) -> tuple[int, str, str]:
    from scrutiny.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_attack_prints_the_curve_and_writes_figures(trained, capsys, tmp_path):
    _, _, checkpoint = trained("digits", "cnn")
    plot = tmp_path / "robustness.png"
    code, out, err = cli(capsys, "attack", checkpoint, "--data", "digits", "--attack", "pgd,gaussian", "--eps", "0.1,0.2",
                         "--samples", "40", "--steps", "5", "--no-detector", "--plot", plot)
    assert code == 0, err
    assert "robust accuracy" in out and "worst case" in out and "smallest eps that flips a row" in out
    assert plot.is_file() and plot.with_name("robustness-examples.png").is_file()


def test_cli_attack_on_a_table_lists_constraints_and_changes(trained, capsys):
    _, _, checkpoint = trained("breast_cancer", "mlp")
    code, out, err = cli(capsys, "attack", checkpoint, "--data", "breast_cancer", "--attack", "pgd", "--eps", "1,2",
                         "--samples", "40", "--steps", "5", "--immutable", "mean radius")
    assert code == 0, err
    assert "constraint: immutable: mean radius" in out
    assert "would an autoencoder notice" in out
    assert " → " in out  # an adversarial row shown as a diff of changed features


@pytest.mark.parametrize("args, fragment", [
    (["--eps", "0.1,abc"], "--eps 0.1,abc: expected finite positive numbers"),
    (["--norm", "l3"], "norm 'l3': expected one of linf, l2"),
    (["--attack", "pgd,deepfool"], "unknown attack 'deepfool'"),
    (["--immutable", "age"], "immutable and mutable name table features"),
])
def test_cli_attack_bad_options(trained, capsys, args, fragment):
    _, _, checkpoint = trained("digits", "cnn")
    code, out, err = cli(capsys, "attack", checkpoint, "--data", "digits", "--samples", "4", "--no-detector", *args)
    assert code == 2
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
