"""Fairness metrics equal aif360's (and Fairlearn's), intervals behave, bad input is a clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from scrutiny.audit.fairness import group_metrics as gm
from scrutiny.audit.fairness.assess import aif360_metrics, assess_fairness, impact_ratios, protected_groups
from scrutiny.errors import DataError, InputError
from scrutiny.models.training import predict_proba

DATASETS = ("adult", "german", "compas")


@pytest.fixture(scope="module")
def predictions(load):
    """Each data set with a briefly trained MLP's test-split predictions."""
    from scrutiny.models import train_on

    cache = {}

    def _get(name):
        if name not in cache:
            dataset = load(name)
            model = train_on(dataset, "mlp", seed=0, progress=False, epochs=2).model
            X = dataset.encode(dataset.test.X)
            cache[name] = dataset, model, X, predict_proba(model, X).argmax(axis=1)
        return cache[name]

    return _get


def assert_same(ours: dict, theirs: dict, names):
    for name in names:
        a, b = float(ours[name]), float(theirs[name])
        if np.isfinite(b):
            assert abs(a - b) <= 1e-9, (name, a, b)
        else:
            assert not np.isfinite(a) and np.sign(a) == np.sign(b) or np.isnan(a) and np.isnan(b), (name, a, b)


@pytest.mark.parametrize("name", DATASETS)
def test_data_set_metrics_equal_aif360(load, name):
    dataset = load(name)
    for group in protected_groups(dataset.spec, dataset.train.groups).values():
        ours = gm.metrics_from_counts(gm.confusion_counts(dataset.train.y, None, group.mask), model=False)
        assert_same(ours, aif360_metrics(dataset.train.y, None, group.mask), gm.DATA_METRICS)


@pytest.mark.parametrize("name", DATASETS)
def test_model_metrics_equal_aif360(predictions, name):
    dataset, _, _, y_pred = predictions(name)
    masks = protected_groups(dataset.spec, dataset.test.groups)
    assert len(masks) == 3  # two attributes and their intersection
    for group in masks.values():
        ours = gm.metrics_from_counts(gm.confusion_counts(dataset.test.y, y_pred, group.mask))
        assert_same(ours, aif360_metrics(dataset.test.y, y_pred, group.mask), gm.MODEL_METRICS)


@pytest.mark.parametrize("name", DATASETS)
def test_consistency_equals_aif360(predictions, name):
    """aif360's k-NN consistency over its features (the group column, then the model's
    inputs), to the bit; Adult's test split is cut to 2,000 rows (aif360's ball-tree search is
    what costs)."""
    dataset, _, X, y_pred = predictions(name)
    mask = protected_groups(dataset.spec, dataset.test.groups)[dataset.spec.protected[0].name].mask
    rows = slice(0, 2000)
    features = np.column_stack([mask[rows].astype(np.float64), X[rows]])
    ours = gm.consistency(features, y_pred[rows])
    theirs = aif360_metrics(dataset.test.y[rows], y_pred[rows], mask[rows], features=X[rows])["consistency"]
    assert ours == theirs


def aif360_consistency(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """aif360's own consistency of a data set whose features are exactly ``features`` (its first
    column doubles as the protected attribute aif360 insists on; consistency ignores groups)."""
    from aif360.datasets import BinaryLabelDataset
    from aif360.metrics import BinaryLabelDatasetMetric

    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])]).assign(label=labels)
    data = BinaryLabelDataset(df=frame.astype(np.float64), label_names=["label"], protected_attribute_names=["f0"],
                              favorable_label=1.0, unfavorable_label=0.0)
    return float(BinaryLabelDatasetMetric(data).consistency(n_neighbors=k)[0])


@pytest.mark.parametrize("kind", ["ties", "one-hot", "continuous"])
def test_consistency_neighbours_break_ties_as_aif360(kind):
    """Tables full of equidistant rows (a small integer grid, one-hot columns) with predictions
    that differ between tied rows: every row's deviation and the mean are aif360's exactly."""
    rng = np.random.default_rng(3)
    n = 1500
    X = {"ties": lambda: rng.integers(0, 3, (n, 4)),
         "one-hot": lambda: np.column_stack([rng.integers(0, 4, (n, 2)), np.eye(5)[rng.integers(0, 5, n)]]),
         "continuous": lambda: rng.standard_normal((n, 8))}[kind]().astype(np.float64)
    y = (rng.random(n) < 0.4).astype(np.float64)
    assert gm.consistency(X, y, 5) == aif360_consistency(X, y, 5)
    from sklearn.neighbors import NearestNeighbors

    _, neighbours = NearestNeighbors(n_neighbors=5, algorithm="ball_tree").fit(X).kneighbors(X)
    np.testing.assert_array_equal(gm.consistency_deviations(X, y, 5), np.abs(y - y[neighbours].mean(axis=1)))
    rows = np.array([0, 7, n - 1])
    np.testing.assert_array_equal(gm.consistency_deviations(X, y, 5, rows=rows),
                                  np.abs(y[rows] - y[neighbours[rows]].mean(axis=1)))


def test_audit_consistency_is_aif360s_on_the_test_split(predictions):
    """The value assess_fairness reports (every row of German's test split) is aif360's, to the bit."""
    dataset, model, X, y_pred = predictions("german")
    result = assess_fairness(model, dataset, n_boot=100, seed=0)
    assert result.settings["consistency_rows"] == len(y_pred)
    assert result.consistency.value == aif360_consistency(X, y_pred)
    assert result.consistency.low <= result.consistency.value <= result.consistency.high


def test_consistency_of_a_large_table_is_a_seeded_sample_with_an_interval(monkeypatch):
    """Above CONSISTENCY_EXACT_ROWS the value averages a seeded sample of rows, each row's
    neighbours taken among all rows; the interval holds the whole table's value."""
    from scrutiny.audit.fairness import assess as fairness

    monkeypatch.setattr(fairness, "CONSISTENCY_EXACT_ROWS", 300)
    monkeypatch.setattr(fairness, "CONSISTENCY_SAMPLE", 250)
    dataset = synthetic_table(4000)

    class Wavy(torch.nn.Module):  # favourable where sin(40 x) > 0: close rows often disagree
        def forward(self, x):
            return torch.stack([torch.zeros_like(x[:, 0]), torch.sin(40 * x[:, 0])], dim=1)

    result = fairness.assess_fairness(Wavy(), dataset, n_boot=400, seed=0)
    assert result.settings["consistency_rows"] == 250
    X = dataset.encode(dataset.test.X)
    y_pred = (np.sin(40 * X[:, 0]) > 0).astype(np.float64)
    whole = aif360_consistency(X, y_pred)
    assert 0.5 < whole < 0.95
    assert result.consistency.low <= whole <= result.consistency.high
    assert result.consistency.high - result.consistency.low < 0.15
    assert result.consistency.value != whole  # a sample, not the whole table
    again = fairness.assess_fairness(Wavy(), dataset, n_boot=400, seed=0).consistency
    assert again == result.consistency


def test_parity_and_odds_differences_equal_fairlearn(predictions):
    metrics = pytest.importorskip("fairlearn.metrics")
    dataset, _, _, y_pred = predictions("adult")
    for attribute, group in protected_groups(dataset.spec, dataset.test.groups).items():
        ours = gm.metrics_from_counts(gm.confusion_counts(dataset.test.y, y_pred, group.mask))
        dpd = metrics.demographic_parity_difference(dataset.test.y, y_pred, sensitive_features=group.mask)
        eod = metrics.equalized_odds_difference(dataset.test.y, y_pred, sensitive_features=group.mask)
        assert abs(abs(ours["statistical_parity_difference"]) - dpd) <= 1e-12, attribute
        assert abs(ours["equalized_odds_difference"] - eod) <= 1e-12, attribute


def test_bootstrap_counts_resample_rows():
    """A multinomial draw over the eight cells is a row bootstrap: same mean and spread of a metric."""
    rng = np.random.default_rng(0)
    n = 4000
    y, y_pred, mask = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.random(n) < 0.3
    counts = gm.confusion_counts(y, y_pred, mask)
    fast = gm.metrics_from_counts(gm.bootstrap_counts(counts, 2000, rng))["equal_opportunity_difference"]
    slow = []
    for _ in range(2000):
        i = rng.integers(0, n, n)
        slow.append(gm.metrics_from_counts(gm.confusion_counts(y[i], y_pred[i], mask[i]))["equal_opportunity_difference"])
    assert abs(fast.mean() - np.mean(slow)) < 0.003
    assert abs(fast.std() / np.std(slow) - 1) < 0.1


def synthetic_table(n: int, seed: int = 0):
    """A table where the favourable label depends on group: a real gap for the intervals to find."""
    from scrutiny.models import DatasetSpec, Feature, ProtectedAttribute
    from scrutiny.models.datasets import tabular_dataset

    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n, p=[0.6, 0.4])
    x = rng.standard_normal(n)
    label = np.where(rng.random(n) < 1 / (1 + np.exp(-(x + 0.8 * (group == "a")))), "yes", "no")
    frame = pd.DataFrame({"x": x, "group": group, "label": label})
    spec = DatasetSpec(name="synthetic", task="tabular", label="label", classes=("no", "yes"), favourable_label="yes",
                       features=(Feature("x", "numeric"), Feature("group", "binary")),
                       protected=(ProtectedAttribute("group", ("a",)),))
    half = n // 2
    return tabular_dataset(spec, frame.iloc[:half].reset_index(drop=True), frame.iloc[half:].reset_index(drop=True), "x")


def test_intervals_hold_the_estimate_and_shrink_with_more_rows():
    widths = []
    for n in (400, 4000, 40000):
        result = assess_fairness(None, synthetic_table(n), n_boot=400, seed=1)
        (comparison,) = result.data_bias
        for name, estimate in comparison.metrics.items():
            assert estimate.low <= estimate.value <= estimate.high, name
        spd = comparison.metrics["statistical_parity_difference"]
        widths.append(spd.high - spd.low)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]


def test_assess_fairness_on_german(predictions):
    dataset, model, _, y_pred = predictions("german")
    result = assess_fairness(model, dataset, n_boot=200, seed=0)
    assert [c.attribute for c in result.model] == ["sex", "age", "sex × age"]
    sex_group, age_group = (p.describe() for p in dataset.spec.protected)
    assert (sex_group, age_group) == ("sex: male", "age ≥ 25")
    assert [c.levels for c in result.model] == [(("sex", sex_group),), (("age", age_group),),
                                                (("sex", sex_group), ("age", age_group))]
    assert result.model[2].privileged == f"{sex_group} and {age_group}"
    sex = result.model[0]
    mask = dataset.spec.protected[0].is_privileged(dataset.test.groups["sex"])
    expected = aif360_metrics(dataset.test.y, y_pred, mask)
    for name in gm.MODEL_METRICS:
        assert sex.metrics[name].value == pytest.approx(expected[name], abs=1e-9, nan_ok=True)
    assert sex.n_privileged == mask.sum() and sex.n_unprivileged == (~mask).sum()
    for group in ("privileged", "unprivileged"):
        figures = sex.per_group[group]
        assert 0 <= figures["accuracy"] <= 1 and 0 <= figures["roc_auc"] <= 1 and 0 <= figures["calibration_error"] <= 1
    assert sex.per_group["unprivileged"]["selection_rate"] == pytest.approx(expected["selection_rate_unprivileged"])
    assert 0 < result.consistency.value <= 1
    same = assess_fairness(model, dataset, n_boot=200, seed=0)
    assert same.model[2].metrics["disparate_impact"] == result.model[2].metrics["disparate_impact"]


def test_small_groups_are_flagged():
    dataset = synthetic_table(80)
    result = assess_fairness(None, dataset, n_boot=50)
    privileged = (dataset.train.groups["group"] == "a").to_numpy()
    rows = min(privileged.sum(), (~privileged).sum())
    name = "privileged" if privileged.sum() <= (~privileged).sum() else "unprivileged"
    expected = rows * dataset.train.y.mean()
    assert result.warnings == [f"group: statistical_parity_difference, disparate_impact rest on {rows} rows of the "
                               f"{name} group, {expected:.1f} expected favourable at the pooled rate (policy minimums "
                               "30 rows, 5 expected); read as noise"]
    assert not assess_fairness(None, synthetic_table(2000), n_boot=50).warnings


def test_impact_ratio_table_follows_ll144():
    from scrutiny.models import DatasetSpec, Feature, ProtectedAttribute

    spec = DatasetSpec(name="t", task="tabular", label="y", classes=("no", "yes"), favourable_label="yes",
                       features=(Feature("race", "categorical"),), protected=(ProtectedAttribute("race", ("w",)),))
    race = np.array(["w"] * 50 + ["b"] * 40 + ["o"] * 9 + ["x"] * 1)
    selected = np.r_[np.ones(25), np.zeros(25), np.ones(10), np.zeros(30), np.ones(9), np.zeros(0), np.ones(1)]
    rows = {r.category: r for r in impact_ratios(spec, pd.DataFrame({"race": race}), selected, ["race"])}
    assert rows["o"].impact_ratio == 1.0 and rows["w"].impact_ratio == pytest.approx(0.5)
    assert rows["b"].impact_ratio == pytest.approx(0.25) and rows["b"].below_four_fifths
    assert rows["x"].excluded and not rows["x"].below_four_fifths  # 1 % of rows: left out, as LL144 allows


def test_intersections_are_pairs_of_attribute_and_value_whatever_the_values_hold():
    """A category whose value holds the display separator (`` × ``) or `` and `` keeps its own
    levels: an intersection's attribute and category are structured, the joined text only shown."""
    from scrutiny.models import DatasetSpec, Feature, ProtectedAttribute

    spec = DatasetSpec(name="t", task="tabular", label="y", classes=("no", "yes"), favourable_label="yes",
                       features=(Feature("race", "categorical"), Feature("sex", "binary")),
                       protected=(ProtectedAttribute("race", ("w × v",)), ProtectedAttribute("sex", ("m and f",))))
    groups = pd.DataFrame({"race": ["w × v", "w × v", "b", "b", "w × v", "b"] * 10,
                           "sex": ["m and f", "f", "m and f", "f", "f", "f"] * 10})
    selected = np.tile([1, 0, 1, 1, 0, 0], 10)
    rows = impact_ratios(spec, groups, selected, ["race", "sex"])
    crossed = [r for r in rows if len(r.levels) == 2]
    assert [r.levels for r in crossed] == [(("race", "b"), ("sex", "f")), (("race", "b"), ("sex", "m and f")),
                                           (("race", "w × v"), ("sex", "f")), (("race", "w × v"), ("sex", "m and f"))]
    assert crossed[2].attribute == "race × sex" and crossed[2].category == "w × v × f"
    for r in crossed:
        race, sex = (value for _, value in r.levels)
        cell = (groups["race"] == race).to_numpy() & (groups["sex"] == sex).to_numpy()
        assert r.n == cell.sum() and r.selection_rate == selected[cell].mean(), r.levels
    group = protected_groups(spec, groups)["race × sex"]
    assert group.levels == (("race", "race: w × v"), ("sex", "sex: m and f"))
    assert (group.mask == ((groups["race"] == "w × v") & (groups["sex"] == "m and f")).to_numpy()).all()


def test_groups_are_named_in_words():
    """A group's name is words, not set notation: the privileged group, and every row outside it."""
    from scrutiny.models import DatasetSpec, Feature, ProtectedAttribute

    cases = [
        (ProtectedAttribute("sex", ("Male",)), "sex: Male", "sex: not Male"),
        (ProtectedAttribute("race", ("White", "Asian-Pac-Islander")), "race: White or Asian-Pac-Islander",
         "race: neither White nor Asian-Pac-Islander"),
        (ProtectedAttribute("race", ("a", "b", "c")), "race: a, b or c", "race: none of a, b or c"),
        (ProtectedAttribute("age", privileged_min=25), "age ≥ 25", "age < 25"),
        (ProtectedAttribute("age", privileged_min=2.5), "age ≥ 2.5", "age < 2.5"),
        (ProtectedAttribute("race", reference="Caucasian"), "race: Caucasian", "race: not Caucasian"),
    ]
    for attribute, privileged, rest in cases:
        assert (attribute.describe(), attribute.describe_rest()) == (privileged, rest)
    groups = pd.DataFrame({"sex": ["Male", "Female", "Male", None], "age": [30, 20, 25, 40]})
    spec = DatasetSpec(name="t", task="tabular", label="y", classes=("no", "yes"), favourable_label="yes",
                       features=(Feature("sex", "binary"), Feature("age", "numeric")),
                       protected=(ProtectedAttribute("sex", ("Male",)), ProtectedAttribute("age", privileged_min=25)))
    pair = protected_groups(spec, groups)["sex × age"]
    assert pair.levels == (("sex", "sex: Male"), ("age", "age ≥ 25"))
    assert pair.mask.tolist() == [True, False, True, False] and pair.compared.tolist() == [False, True, False, False]
    categories = {r.category for r in impact_ratios(spec, groups, np.array([1, 0, 1, 1]), ["age"])}
    assert categories == {"age ≥ 25", "age < 25"}


def test_bad_protected_attributes_are_clear_errors(load):
    german = load("german")
    groups = german.test.groups
    with pytest.raises(DataError, match="protected column 'sex' not found"):
        protected_groups(german.spec, groups.drop(columns=["sex"]))
    with pytest.raises(DataError, match="'sex' has a single group"):
        protected_groups(german.spec, groups.assign(sex="male"))
    with pytest.raises(DataError, match="privileged value\\(s\\) 'male' of 'sex' not found"):
        protected_groups(german.spec, groups.assign(sex=np.where(groups["sex"] == "male", "m", "f")))
    with pytest.raises(InputError, match="^attributes: 'race' not protected in german"):
        protected_groups(german.spec, groups, ["race"])


def cli(capsys, *args):
    from scrutiny.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_fairness(trained, capsys, tmp_path):
    _, _, checkpoint = trained("breast_cancer", "mlp")
    code, _, err = cli(capsys, "fairness", checkpoint, "--data", "breast_cancer")
    assert code == 2 and "declares no protected attribute" in err and len(err.strip().splitlines()) == 1


def test_cli_fairness_data_only_and_model(capsys, tmp_path, data_dir, predictions):
    from scrutiny.models import save_checkpoint

    dataset, model, _, _ = predictions("german")
    code, out, err = cli(capsys, "fairness", "--data", "german", "--boot", "100")
    assert code == 0, err
    assert "data-set bias" in out and "statistical_parity_difference" in out
    checkpoint = save_checkpoint(tmp_path / "german", model=model, dataset=dataset, metrics={}, training={}, seed=0)
    code, out, err = cli(capsys, "fairness", checkpoint, "--data", "german", "--boot", "100", "--attributes", "age")
    assert code == 0, err
    assert "equalized_odds_difference" in out and "impact ratio" in out
    from scrutiny.models import predict_proba

    median = np.median(predict_proba(model, dataset.preprocessor.transform(dataset.test.X))[:, 1])
    assert "scoring rate" in out and f"P(favourable), {median:.3f}" in " ".join(out.split())
    code, _, err = cli(capsys, "fairness", checkpoint, "--data", "german", "--attributes", "race")
    assert code == 2 and "--attributes: 'race' not protected in german" in err  # the CLI names its option


def test_a_label_needs_two_values(tmp_path, capsys):
    data = tmp_path / "t.csv"
    pd.DataFrame({"x": [1, 2, 3, 4], "g": ["a", "b", "a", "b"], "y": [1, 1, 1, 1]}).to_csv(data, index=False)
    spec = tmp_path / "t.toml"
    spec.write_text('label = "y"\nfavourable = 1\n[protected]\ng = ["a"]\n')
    code, _, err = cli(capsys, "fairness", "--data", data, "--spec", spec)
    assert code == 2 and "label column 'y' has 1 distinct value(s)" in err


def test_mitigation_before_and_after(predictions):
    """Both mitigations report the same metric set with intervals on the same rows; on Adult
    (sex) reweighing narrows the parity gap and post-processing the odds gap."""
    from scrutiny.audit.fairness.assess import mitigate

    dataset, model, _, _ = predictions("adult")
    reweighing, post = mitigate(model, dataset, "sex", n_boot=200, seed=0, epochs=2)
    assert reweighing.n == len(dataset.test) and post.n < len(dataset.test)
    for m in (reweighing, post):
        assert set(m.before) == set(m.after) == set(gm.MODEL_METRICS)
        for estimate in (*m.before.values(), *m.after.values()):
            if np.isfinite(estimate.value):
                assert estimate.low <= estimate.value <= estimate.high
    spd = "statistical_parity_difference"
    assert abs(reweighing.after[spd].value) < abs(reweighing.before[spd].value)
    eod = "equalized_odds_difference"
    assert post.after[eod].value < post.before[eod].value


def test_mitigation_of_a_model_that_names_no_architecture_asks_for_arch(predictions):
    """The library names its own parameter, never a CLI option."""
    from scrutiny.audit.fairness.assess import mitigate

    class Plain(torch.nn.Module):  # a model from elsewhere: no `arch` to retrain
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    dataset, model, _, _ = predictions("german")
    plain = Plain(model)
    assert getattr(plain, "arch", None) is None
    with pytest.raises(InputError, match=r"this model does not say which \(pass arch\)$"):
        mitigate(plain, dataset, "sex", n_boot=0)


def test_cli_fairness_mitigate_needs_a_model(capsys, data_dir):
    code, _, err = cli(capsys, "fairness", "--data", "german", "--mitigate", "sex")
    assert code == 2 and "--mitigate needs a MODEL" in err
