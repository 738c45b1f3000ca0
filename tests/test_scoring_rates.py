"""LL144's scoring-rate table (6 RCNY §5-300): the share of each category scored above the median
of the full sample, its ratio to the highest, the 2 % exclusion, and its gated finding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scrutiny.audit.fairness.assess import impact_ratios, scoring_rates
from scrutiny.errors import InputError


def race_sex_spec():
    from scrutiny.models import DatasetSpec, Feature, ProtectedAttribute

    return DatasetSpec(name="t", task="tabular", label="y", classes=("no", "yes"), favourable_label="yes",
                       features=(Feature("race", "categorical"), Feature("sex", "binary")),
                       protected=(ProtectedAttribute("race", ("w",)), ProtectedAttribute("sex", ("m",))))


def hand_table():
    """100 rows whose median score is 0.5, held by 20 rows (ties that must not count).

    race w (50 rows): 20 above 0.5, 10 at it, 20 below  -> 20/50 = 0.4
    race b (40 rows):  4 above,      10 at it, 26 below  ->  4/40 = 0.1
    race o  (9 rows):  6 above,       0 at it,  3 below  ->  6/9
    race x  (1 row):   1 above                            ->  1/1, but 1 % of rows: excluded
    """
    race = ["w"] * 50 + ["b"] * 40 + ["o"] * 9 + ["x"]
    score = ([0.9] * 20 + [0.5] * 10 + [0.1] * 20
             + [0.8] * 4 + [0.5] * 10 + [0.2] * 26
             + [0.7] * 6 + [0.3] * 3
             + [0.95])
    sex = (["m", "f"] * 25) + (["m"] * 4 + ["f"] * 36) + ["m"] * 9 + ["f"]
    return pd.DataFrame({"race": race, "sex": sex}), np.array(score)


def test_scoring_rates_by_hand_with_ties_at_the_median():
    groups, score = hand_table()
    median, rows = scoring_rates(race_sex_spec(), groups, score, ["race"], intersections=False)
    assert median == 0.5 and (score == median).sum() == 20
    by = {r.category: r for r in rows}
    assert [r.category for r in rows] == ["b", "o", "w", "x"]
    assert by["w"].scoring_rate == pytest.approx(20 / 50) and by["b"].scoring_rate == pytest.approx(4 / 40)
    assert by["o"].scoring_rate == pytest.approx(6 / 9) and by["x"].scoring_rate == 1.0
    # the highest rate is o's: x (1 % of rows) is left out of it and of the flag
    assert by["x"].excluded and not by["x"].below_four_fifths and by["x"].impact_ratio == pytest.approx(1.5)
    assert by["o"].impact_ratio == 1.0 and not by["o"].below_four_fifths
    assert by["w"].impact_ratio == pytest.approx(0.4 / (6 / 9)) and by["w"].below_four_fifths
    assert by["b"].impact_ratio == pytest.approx(0.1 / (6 / 9)) and by["b"].below_four_fifths
    # had a score equal to the median counted, w would score 30/50 and b 14/40
    assert by["w"].scoring_rate != pytest.approx(30 / 50) and by["b"].scoring_rate != pytest.approx(14 / 40)


def test_scoring_rates_of_intersections_are_per_cell():
    groups, score = hand_table()
    median, rows = scoring_rates(race_sex_spec(), groups, score, ["race", "sex"])
    assert {r.attribute for r in rows} == {"race", "sex", "race × sex"}
    crossed = [r for r in rows if len(r.levels) == 2]
    assert [r.category for r in crossed] == ["b × f", "b × m", "o × m", "w × f", "w × m", "x × f"]
    above = score > median
    for r in [*crossed, *(r for r in rows if r.attribute == "sex")]:
        cell = np.ones(len(score), dtype=bool)
        for attribute, value in r.levels:
            cell &= (groups[attribute] == value).to_numpy()
        assert r.n == cell.sum() and r.scoring_rate == pytest.approx(above[cell].mean()), r.levels
    kept = [r for r in crossed if not r.excluded]
    assert [r.category for r in crossed if r.excluded] == ["x × f"]
    top = max(r.scoring_rate for r in kept)
    for r in kept:
        assert r.impact_ratio == pytest.approx(r.scoring_rate / top) and r.below_four_fifths == (r.scoring_rate / top < 0.8)
    # the same table as the selection rates of "scored above the median"
    selection = impact_ratios(race_sex_spec(), groups, above, ["race", "sex"])
    assert [(r.levels, r.impact_ratio) for r in rows] == [(s.levels, s.impact_ratio) for s in selection]


def test_a_score_at_the_median_of_an_even_sample_is_the_midpoint():
    groups = pd.DataFrame({"race": ["w", "w", "b", "b"], "sex": ["m", "f", "m", "f"]})
    median, rows = scoring_rates(race_sex_spec(), groups, np.array([0.1, 0.4, 0.6, 0.9]), ["race"])
    assert median == 0.5 and {r.category: r.scoring_rate for r in rows} == {"b": 1.0, "w": 0.0}
    median, rows = scoring_rates(race_sex_spec(), groups, np.full(4, 0.3), ["race"])
    assert median == 0.3 and all(r.scoring_rate == 0 for r in rows)  # all tied: none above
    assert all(np.isnan(r.impact_ratio) and not r.below_four_fifths for r in rows)


@pytest.mark.parametrize("scores", [np.array([0.1, np.nan, 0.3, 0.4]), np.zeros((4, 2)), np.array([])])
def test_bad_scores_are_named(scores):
    groups = pd.DataFrame({"race": ["w", "w", "b", "b"][:len(scores)], "sex": ["m", "f", "m", "f"][:len(scores)]})
    with pytest.raises(InputError, match="^scores: "):
        scoring_rates(race_sex_spec(), groups, scores, ["race"])


def test_details_without_scoring_rates_still_load():
    """A fairness document written before the scoring rates (no scoring_rates, no median_score)
    reads back with both None, and one with them round-trips."""
    from scrutiny.audit.fairness.details import FairnessDetails, Level, ScoringRateEntry

    old = {"confidence": 0.95, "data_bias": [], "model": [], "impact_ratios": [], "consistency": None,
           "warnings": [], "settings": {"n_boot": 10}}
    details = FairnessDetails.from_dict(old)
    assert details.scoring_rates is None and details.median_score is None
    assert details.to_dict() == old
    details.median_score = 0.25
    details.scoring_rates = [ScoringRateEntry(attribute="sex", category="f", levels=[Level("sex", "f")], n=3,
                                              scoring_rate=0.5, impact_ratio=1.0, below_four_fifths=False,
                                              excluded=False)]
    back = FairnessDetails.from_dict(details.to_dict())
    assert back == details and back.scoring_rates[0].attributes == ["sex"]
    schema = FairnessDetails.json_schema()
    assert "scoring_rates" not in schema["required"] and "median_score" not in schema["required"]
    entry = details.to_dict()["scoring_rates"][0]
    del entry["scoring_rate"]
    with pytest.raises(ValueError, match=r"^FairnessDetails\.scoring_rates: "):
        FairnessDetails.from_dict({**old, "scoring_rates": [entry]})


CONFIG = """
seed = 0
families = ["fairness"]

[fairness]
n_boot = 20
"""


def test_cli_audit_gates_the_lowest_scoring_rate_ratio(trained, tmp_path, capsys):
    from scrutiny.audit.run.policy import load_policy
    from scrutiny.audit.run.run_folder import load_run
    from scrutiny.cli import main
    from scrutiny.models import load_model
    from scrutiny.models.training import predict_proba

    dataset, _, checkpoint = trained("german", "mlp")
    (tmp_path / "audit.toml").write_text(CONFIG)
    code = main(["audit", str(checkpoint), "--data", "german", "--out", str(tmp_path / "run"),
                 "--config", str(tmp_path / "audit.toml")])
    assert code in (0, 1), capsys.readouterr().err
    document = load_run(tmp_path / "run").findings
    loaded = load_model(checkpoint)
    score = predict_proba(loaded.model, loaded.preprocessor().transform(dataset.test.X))[:, 1]
    median = float(np.median(score))
    details = document["details"]["fairness"]
    assert details["median_score"] == median
    above = score > median
    findings = {f["id"]: f for f in document["findings"]}
    subjects = {r["attribute"] for r in details["scoring_rates"]}
    assert subjects == {"sex", "age", "sex × age"}
    for subject in subjects:
        rows = [r for r in details["scoring_rates"] if r["attribute"] == subject and not r["excluded"]]
        for r in rows:
            cell = np.ones(len(score), dtype=bool)
            for level in r["levels"]:
                cell &= _category_mask(dataset, level["attribute"], level["value"])
            assert r["n"] == cell.sum() and r["scoring_rate"] == pytest.approx(above[cell].mean(), abs=1e-12)
        rates = [r["scoring_rate"] for r in rows]
        finding = findings[f"fairness.scoring_rate_impact_ratio[{subject}]"]
        assert finding["value"] == pytest.approx(min(rates) / max(rates), abs=1e-12)
        assert finding["threshold"] == load_policy().threshold("fairness.scoring_rate_impact_ratio")
        assert finding["threshold"] == {"fail_below": 0.8, "warn_below": 0.9}
        assert finding["comparison"]["no_difference"] == 1.0
        expected = "pass" if finding["value"] >= 0.9 else ("warn" if finding["value"] >= 0.8 else "fail")
        assert finding["status"] in (expected, "insufficient"), finding


def _category_mask(dataset, attribute: str, value: str) -> np.ndarray:
    """The test rows in the category ``value`` of ``attribute`` (a value, or a numeric attribute's side of its cut)."""
    (declared,) = [p for p in dataset.spec.protected if p.name == attribute]
    column = dataset.test.groups[attribute]
    if declared.privileged_min is not None:
        privileged = np.asarray(declared.is_privileged(column))
        return privileged if value == declared.describe() else ~privileged
    return (column.astype(str) == value).to_numpy()


def test_app_scoring_table_names_its_ratio_apart_from_the_impact_ratios():
    from scrutiny.app.fairness_page import IMPACT_COLUMNS, scoring_table
    from scrutiny.audit.fairness.details import Level, ScoringRateEntry

    entries = [ScoringRateEntry(attribute="sex", category=c, levels=[Level("sex", c)], n=n, scoring_rate=rate,
                                impact_ratio=ratio, below_four_fifths=ratio < 0.8, excluded=False)
               for c, n, rate, ratio in (("f", 30, 0.2, 0.5), ("m", 70, 0.4, 1.0))]
    table = scoring_table(entries)
    assert list(table.columns) == ["attribute", "category", "n", "scoring_rate", "scoring_impact_ratio",
                                   "below_four_fifths", "excluded"]
    assert "impact_ratio" in IMPACT_COLUMNS and "impact_ratio" not in table.columns  # the app tells tables apart by columns
    assert table["scoring_rate"].tolist() == [0.2, 0.4] and table["scoring_impact_ratio"].tolist() == [0.5, 1.0]
    assert table["below_four_fifths"].tolist() == [True, False] and table["n"].tolist() == [30, 70]
