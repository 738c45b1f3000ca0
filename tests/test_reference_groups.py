"""Protected attributes with a reference category (``race = { reference = "A" }``): every other
category, and every crossed category of an intersection, is compared with the reference.

The per-group figures are checked against Fairlearn's ``MetricFrame`` and the disparities (each
category's rate over, and minus, the reference's, as Aequitas reports them) against counts taken
here with pandas, to 1e-12; privileged-versus-rest attributes keep their single comparison; each
comparison's interval comes from its own stream.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from scrutiny.audit.fairness.assess import assess_fairness, protected_groups
from scrutiny.errors import DataError
from scrutiny.models import DatasetSpec, Feature, ProtectedAttribute
from scrutiny.models.datasets import tabular_dataset
from scrutiny.models.predictions import Predictions

TOL = 1e-12
REFERENCE = "A"
CATEGORIES = ("A", "B", "C", "D", "E")
SHARES = (0.4, 0.27, 0.2, 0.122, 0.008)   # E: about 24 rows of a split, a small group
SEX_WORDS = {"sex: m": "m", "sex: not m": "f"}


def spec_with(race: ProtectedAttribute, *more: ProtectedAttribute) -> DatasetSpec:
    return DatasetSpec(name="synthetic", task="tabular", label="label", classes=("no", "yes"), favourable_label="yes",
                       features=(Feature("x", "numeric"), Feature("race", "categorical"), Feature("sex", "binary")),
                       protected=(race, ProtectedAttribute("sex", ("m",)), *more))


def frame(n: int, seed: int) -> pd.DataFrame:
    """Labels whose rate depends on race and sex, so that every disparity is away from parity."""
    rng = np.random.default_rng(seed)
    race = rng.choice(CATEGORIES, n, p=SHARES)
    sex = rng.choice(["f", "m"], n, p=[0.45, 0.55])
    x = rng.standard_normal(n)
    shift = pd.Series(race).map({"A": 0.6, "B": -0.3, "C": 0.1, "D": -0.6, "E": 0.3}).to_numpy() + 0.4 * (sex == "m")
    label = np.where(rng.random(n) < 1 / (1 + np.exp(-(1.5 * x + shift))), "yes", "no")
    return pd.DataFrame({"x": x, "race": race, "sex": sex, "label": label})


def dataset_with(spec: DatasetSpec, n: int = 3000):
    return tabular_dataset(spec, frame(n, 1), frame(n, 2), "synthetic")


REFERENCE_SPEC = spec_with(ProtectedAttribute("race", reference=REFERENCE))
PRIVILEGED_SPEC = spec_with(ProtectedAttribute("race", (REFERENCE,)))


class Threshold(torch.nn.Module):
    """Favourable where the first encoded input (x, scaled) is above 0.1: logits (0, 4 (x − 0.1))."""

    def forward(self, inputs):
        return torch.stack([torch.zeros_like(inputs[:, 0]), 4 * (inputs[:, 0] - 0.1)], dim=1)


def decisions(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of the test rows: noisy, group-dependent decisions and a score in (0, 1)."""
    rng = np.random.default_rng(5)
    test = dataset.test
    tilt = test.groups["race"].map({"A": 0.5, "B": -0.2, "C": 0.0, "D": -0.5, "E": 0.2}).to_numpy()
    score = 1 / (1 + np.exp(-(test.X["x"].to_numpy() + tilt + 0.8 * rng.standard_normal(len(test)))))
    return (score > 0.5).astype(np.int64), score


def assessed(source: str, dataset, **kwargs):
    """``assess_fairness`` on logged predictions or on a tiny torch module, and the decisions it judged."""
    if source == "predictions":
        y_pred, score = decisions(dataset)
        found = assess_fairness(None, dataset, predictions=Predictions(decisions=y_pred, scores=score,
                                                                       scores_are_probabilities=True), **kwargs)
        return found, y_pred
    model = Threshold()
    with torch.no_grad():
        y_pred = model(torch.as_tensor(dataset.encode(dataset.test.X))).argmax(dim=1).numpy()
    return assess_fairness(model, dataset, **kwargs), y_pred


def rates(y: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Aequitas-style group rates from confusion counts, with numpy."""
    tp = float(np.sum((y == 1) & (y_pred == 1)))
    fn = float(np.sum((y == 1) & (y_pred == 0)))
    fp = float(np.sum((y == 0) & (y_pred == 1)))
    tn = float(np.sum((y == 0) & (y_pred == 0)))
    return {"n": len(y), "selection": (tp + fp) / len(y), "tpr": tp / (tp + fn), "fpr": fp / (fp + tn),
            "fnr": fn / (tp + fn), "ppv": tp / (tp + fp), "accuracy": (tp + tn) / len(y), "base": (tp + fn) / len(y)}


def theil(y: np.ndarray, y_pred: np.ndarray) -> float:
    """Generalised entropy (alpha = 1) of the benefit b = ŷ − y + 1 (aif360's Theil index), 0 log 0 = 0."""
    b = (y_pred - y + 1).astype(np.float64)
    ratio = b / b.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean(np.where(ratio > 0, ratio * np.log(ratio), 0.0)))


def expected_metrics(y, y_pred, compared: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Every model metric of a comparison: the compared group's rates against the reference's."""
    c, r = rates(y[compared], y_pred[compared]), rates(y[reference], y_pred[reference])
    both = compared | reference
    return {
        "selection_rate_unprivileged": c["selection"], "selection_rate_privileged": r["selection"],
        "disparate_impact": c["selection"] / r["selection"],
        "statistical_parity_difference": c["selection"] - r["selection"],
        "equal_opportunity_difference": c["tpr"] - r["tpr"],
        "average_odds_difference": 0.5 * ((c["fpr"] - r["fpr"]) + (c["tpr"] - r["tpr"])),
        "equalized_odds_difference": max(abs(c["fpr"] - r["fpr"]), abs(c["tpr"] - r["tpr"])),
        "predictive_parity_difference": c["ppv"] - r["ppv"],
        "false_negative_rate_ratio": c["fnr"] / r["fnr"],
        "false_positive_rate_ratio": c["fpr"] / r["fpr"],
        "accuracy_difference": c["accuracy"] - r["accuracy"],
        "accuracy": float(np.mean(y[both] == y_pred[both])),
        "theil_index": theil(y[both], y_pred[both]),
    }


def metric_frame(y, y_pred, sensitive):
    from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    return MetricFrame(metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                                "false_positive_rate": false_positive_rate, "accuracy": accuracy_score, "n": count},
                       y_true=y, y_pred=y_pred, sensitive_features=sensitive).by_group


def assert_figures(figures: dict, fairlearn_row: pd.Series, where: str) -> None:
    for key in ("selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"):
        assert abs(figures[key] - fairlearn_row[key]) <= TOL, (where, key)
    assert figures["n"] == fairlearn_row["n"], where


def assert_metrics(metrics: dict, expected: dict[str, float], where: str) -> None:
    assert set(metrics) == set(expected), where
    for name, value in expected.items():
        assert abs(metrics[name].value - value) <= TOL * max(1.0, abs(value)), (where, name, metrics[name].value, value)


@pytest.mark.parametrize("source", ["predictions", "module"])
def test_each_category_against_the_reference_equals_fairlearn_and_aequitas_disparities(source):
    dataset = dataset_with(REFERENCE_SPEC)
    found, y_pred = assessed(source, dataset, n_boot=50, seed=0, intersections=False)
    y, race = dataset.test.y, dataset.test.groups["race"].to_numpy()
    by_group = metric_frame(y, y_pred, race)
    assert (y_pred == 1).mean() not in (0.0, 1.0)
    comparisons = {c.subject: c for c in found.model}
    assert set(comparisons) == {f"race={c}" for c in CATEGORIES[1:]} | {"sex"}
    for category in CATEGORIES[1:]:
        comparison = comparisons[f"race={category}"]
        where = f"{source} race={category}"
        assert comparison.privileged == REFERENCE and comparison.compared == category
        assert comparison.levels == (("race", REFERENCE),) and comparison.compared_levels == (("race", category),)
        assert (comparison.n_privileged, comparison.n_unprivileged) == (by_group.loc[REFERENCE, "n"],
                                                                       by_group.loc[category, "n"])
        assert_figures(comparison.per_group["unprivileged"], by_group.loc[category], where)
        assert_figures(comparison.per_group["privileged"], by_group.loc[REFERENCE], where)
        assert_metrics(comparison.metrics, expected_metrics(y, y_pred, race == category, race == REFERENCE), where)
        for name, estimate in comparison.metrics.items():
            assert estimate.low <= estimate.value <= estimate.high, (where, name)
    # the small category says it is noise, the large ones do not
    assert any("race=E" in w for w in comparisons["race=E"].warnings)
    assert comparisons["race=B"].warnings == []
    # the data set's labels (training split) too: base rates against the reference's
    train_race = dataset.train.groups["race"].to_numpy()
    base = pd.Series(dataset.train.y).groupby(train_race).mean()
    data = {c.subject: c for c in found.data_bias}
    for category in CATEGORIES[1:]:
        metrics = data[f"race={category}"].metrics
        expected = {"base_rate_unprivileged": base[category], "base_rate_privileged": base[REFERENCE],
                    "statistical_parity_difference": base[category] - base[REFERENCE],
                    "disparate_impact": base[category] / base[REFERENCE]}
        assert_metrics(metrics, expected, f"data race={category}")


def test_intersections_use_the_crossed_reference():
    dataset = dataset_with(REFERENCE_SPEC)
    found, y_pred = assessed("predictions", dataset, n_boot=0)
    y, groups = dataset.test.y, dataset.test.groups
    race, sex = groups["race"].to_numpy(), groups["sex"].to_numpy()
    by_group = metric_frame(y, y_pred, groups[["race", "sex"]])
    reference = (race == REFERENCE) & (sex == "m")
    crossed = [c for c in found.model if c.attribute == "race × sex"]
    cells = set(zip(race, sex, strict=True)) - {(REFERENCE, "m")}
    assert len(crossed) == len(cells) == 9
    seen = set()
    for comparison in crossed:
        assert comparison.levels == (("race", REFERENCE), ("sex", "sex: m"))
        (_, category), (_, sex_words) = comparison.compared_levels
        cell = (category, SEX_WORDS[sex_words])
        seen.add(cell)
        assert comparison.subject == f"race × sex={category} × {sex_words}"
        rows = (race == cell[0]) & (sex == cell[1])
        assert_figures(comparison.per_group["unprivileged"], by_group.loc[cell], str(cell))
        assert_figures(comparison.per_group["privileged"], by_group.loc[(REFERENCE, "m")], str(cell))
        assert_metrics(comparison.metrics, expected_metrics(y, y_pred, rows, reference), str(cell))
    assert seen == cells
    # the LL144 table lists every crossed cell, the reference included
    table = {r.category for r in found.impact_ratios if r.attribute == "race × sex"}
    assert len(table) == 10


def test_privileged_versus_rest_is_unchanged():
    with_reference, y_pred = assessed("predictions", dataset_with(REFERENCE_SPEC), n_boot=100, seed=1)
    privileged_only, same_pred = assessed("predictions", dataset_with(PRIVILEGED_SPEC), n_boot=100, seed=1)
    assert np.array_equal(y_pred, same_pred)
    # an attribute given by privileged values: one comparison, its group against every other row
    subjects = [c.subject for c in privileged_only.model]
    assert subjects == ["race", "sex", "race × sex"]
    dataset = dataset_with(PRIVILEGED_SPEC)
    y, groups = dataset.test.y, dataset.test.groups
    race, sex = groups["race"].to_numpy(), groups["sex"].to_numpy()
    for subject, privileged in (("race", race == REFERENCE), ("sex", sex == "m"),
                                ("race × sex", (race == REFERENCE) & (sex == "m"))):
        comparison = next(c for c in privileged_only.model if c.subject == subject)
        assert comparison.compared_levels is None and comparison.compared is None
        assert (comparison.n_privileged, comparison.n_unprivileged) == (privileged.sum(), (~privileged).sum())
        by_group = metric_frame(y, y_pred, np.where(privileged, "in", "out"))
        assert_figures(comparison.per_group["privileged"], by_group.loc["in"], subject)
        assert_figures(comparison.per_group["unprivileged"], by_group.loc["out"], subject)
        assert_metrics(comparison.metrics, expected_metrics(y, y_pred, ~privileged, privileged), subject)
    # and sex, privileged-versus-rest in both specs, is the same comparison whatever race is
    for split in ("data_bias", "model"):
        a = next(c for c in getattr(with_reference, split) if c.subject == "sex")
        b = next(c for c in getattr(privileged_only, split) if c.subject == "sex")
        assert (a.levels, a.n_privileged, a.n_unprivileged, a.per_group, a.warnings) == \
            (b.levels, b.n_privileged, b.n_unprivileged, b.per_group, b.warnings)
        assert np.array_equal(a.counts, b.counts)
        assert estimates(a) == estimates(b)


def estimates(comparison) -> dict[str, tuple[float, float, float]]:
    """Value and interval of each metric, NaN written as None so that equal reads equal."""
    def plain(x: float):
        return None if np.isnan(x) else x

    return {k: (plain(e.value), plain(e.low), plain(e.high)) for k, e in comparison.metrics.items()}


def test_an_interval_does_not_depend_on_the_other_comparisons():
    dataset = dataset_with(REFERENCE_SPEC)
    alone, _ = assessed("predictions", dataset, attributes=["race"], intersections=False, n_boot=200, seed=3)
    among, _ = assessed("predictions", dataset, attributes=["sex", "race"], intersections=True, n_boot=200, seed=3)
    other_seed, _ = assessed("predictions", dataset, attributes=["race"], intersections=False, n_boot=200, seed=4)
    for split in ("data_bias", "model"):
        first = {c.subject: c for c in getattr(alone, split)}
        second = {c.subject: c for c in getattr(among, split)}
        third = {c.subject: c for c in getattr(other_seed, split)}
        assert set(first) < set(second)
        for subject, comparison in first.items():
            assert estimates(second[subject]) == estimates(comparison), (split, subject)
            assert estimates(third[subject]) != estimates(comparison), (split, subject)   # the seed matters
        intervals = {subject: estimates(c)["statistical_parity_difference"][1:] for subject, c in first.items()}
        assert len(set(intervals.values())) == len(intervals)   # and each comparison has its own draws


def test_protected_groups_errors_name_the_problem():
    groups = dataset_with(REFERENCE_SPEC).test.groups
    absent = spec_with(ProtectedAttribute("race", reference="Z"))
    with pytest.raises(DataError, match=r"reference category 'Z' of 'race' not found"):
        protected_groups(absent, groups)
    single = groups.assign(race=REFERENCE)
    with pytest.raises(DataError, match=r"'race' has a single category \('A'\)"):
        protected_groups(REFERENCE_SPEC, single)
    # a category the spec names as a number matches the column's text (TOML 1 against "1")
    numbered = groups.assign(race=groups["race"].map({c: str(i) for i, c in enumerate(CATEGORIES)}))
    pairs = protected_groups(spec_with(ProtectedAttribute("race", reference=0)), numbered, ["race"])
    assert set(pairs) == {"race=1", "race=2", "race=3", "race=4"}


def test_rows_without_a_category_belong_to_no_comparison():
    groups = dataset_with(REFERENCE_SPEC).test.groups.copy()
    groups.loc[:99, "race"] = np.nan
    race = groups["race"]
    pairs = protected_groups(REFERENCE_SPEC, groups, intersections=False)
    for category in CATEGORIES[1:]:
        pair = pairs[f"race={category}"]
        assert pair.mask.sum() == (race == REFERENCE).sum() and pair.compared.sum() == (race == category).sum()
        assert not (pair.mask | pair.compared)[:100].any()


def test_spec_round_trip_keeps_the_reference():
    data = REFERENCE_SPEC.to_dict()
    entries = {p["name"]: p for p in data["protected"]}
    assert entries["race"]["reference"] == REFERENCE and "reference" not in entries["sex"]
    again = DatasetSpec.from_dict(json.loads(json.dumps(data)))
    assert again == REFERENCE_SPEC and again.protected_attribute("race").reference == REFERENCE
    plain = PRIVILEGED_SPEC.to_dict()
    assert all("reference" not in p for p in plain["protected"])
    assert DatasetSpec.from_dict(json.loads(json.dumps(plain))) == PRIVILEGED_SPEC
    with pytest.raises(DataError, match="one of privileged values, a numeric minimum or a reference"):
        ProtectedAttribute("race", ("A",), reference="A")


def test_a_table_spec_declares_a_reference(tmp_path):
    from scrutiny.models import load_table

    table = frame(400, 3)
    table.to_csv(tmp_path / "people.csv", index=False)
    (tmp_path / "people.toml").write_text('label = "label"\nfavourable = "yes"\n\n[protected]\n'
                                          'race = { reference = "A" }\nsex = ["m"]\n')
    dataset = load_table(tmp_path / "people.csv", tmp_path / "people.toml")
    assert dataset.spec.protected_attribute("race") == ProtectedAttribute("race", reference="A")
    found = assess_fairness(None, dataset, n_boot=0)
    assert {c.subject for c in found.data_bias if c.attribute == "race"} == {f"race={c}" for c in CATEGORIES[1:]
                                                                          if (dataset.train.groups["race"] == c).any()}
