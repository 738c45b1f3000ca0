"""The Fairness page as an exploration tool (issue 19): per-group bars against the details and the
findings, per-group confusion matrices against a hand count of the stored arrays, the threshold
what-if against a recount from the stored probabilities, the URL's ``focus`` and ``threshold``, and
the attribute filter narrowing every table. Runs: :func:`tests.test_app.build_runs`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scrutiny.app.text import literal

from . import test_app
from .test_app import app, findings_of, frame, ok, same, texts

RUNS = test_app.RUNS  # the session's runs (a module fixture), used here under the same name

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

SIDES = {"reference": "privileged", "compared": "unprivileged"}


def stored(runs, name: str = "adult"):
    """(y, P(favourable), {comparison index: group code per row}) read straight from the run's files."""
    predictions = np.load(runs / name / "arrays" / "predictions.npz")
    groups = np.load(runs / name / "arrays" / "fairness_groups.npz")
    assert "weight" not in predictions.files  # the recounts below count rows
    return (predictions["y_true"].astype(np.int64), predictions["proba"][:, 1].astype(np.float64),
            predictions["y_pred"].astype(np.int64), {int(k.split("_")[1]): groups[k] for k in groups.files})


def whatif_frame(at) -> pd.DataFrame:
    return frame(at, "subject", "threshold", "selection_rate_reference", "disparate_impact")


# ---------------------------------------------------------------- per-group bars


def test_group_bars_equal_the_details_and_the_findings(RUNS):
    at = ok(app("fairness", "adult"))
    findings = findings_of(RUNS, "adult")
    details = findings["details"]["fairness"]
    bars = frame(at, "subject", "group", "metric", "value", "low", "high", "n", "small", "band_low")
    y, _, y_pred, codes = stored(RUNS)
    assert len(at.image) >= len(details["model"])  # a chart per comparison (and per attribute, the what-if)
    for i, c in enumerate(details["model"]):
        shown = bars[bars["subject"] == c["attribute"]]  # no reference-category comparisons in this run
        assert len(shown) == 10, c["attribute"]
        for side, key in SIDES.items():
            g = c["per_group"][key]
            rows = shown[shown["group"] == side].set_index("metric")
            for metric in ("selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"):
                same([rows.loc[metric, "value"]], [g[metric]])
            # precision, which the details do not hold: a hand count of the stored decisions
            member = codes[i] == (1 if side == "reference" else 0)
            tp, fp = int((member & (y == 1) & (y_pred == 1)).sum()), int((member & (y == 0) & (y_pred == 1)).sum())
            np.testing.assert_allclose(rows.loc["precision", "value"], tp / (tp + fp), rtol=1e-12)
            assert rows.loc["precision", "n"] == tp + fp
            assert rows.loc["selection_rate", "n"] == g["n"] == member.sum()
            assert rows.loc["true_positive_rate", "n"] == (member & (y == 1)).sum()
            assert rows.loc["false_positive_rate", "n"] == (member & (y == 0)).sum()
            # 95 % Wilson intervals (statsmodels' as the reference) from the counts behind each rate
            from statsmodels.stats.proportion import proportion_confint

            for metric in ("selection_rate", "accuracy", "precision"):
                n = int(rows.loc[metric, "n"])
                k = round(rows.loc[metric, "value"] * n)
                low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
                np.testing.assert_allclose([rows.loc[metric, "low"], rows.loc[metric, "high"]], [low, high],
                                           rtol=1e-9)
            min_rows = next(f["comparison"]["min_rows"] for f in findings["findings"]
                            if f["check"] == "fairness.disparate_impact" and f["subject"] == c["attribute"])
            assert (rows["small"] == (rows["n"] < min_rows)).all()
        # the findings: the ratio and the difference of the selection rates shown
        reference = shown[(shown["group"] == "reference") & (shown["metric"] == "selection_rate")]["value"].iloc[0]
        compared = shown[(shown["group"] == "compared") & (shown["metric"] == "selection_rate")]["value"].iloc[0]
        by_check = {f["check"]: f for f in findings["findings"] if f["subject"] == c["attribute"]}
        np.testing.assert_allclose(compared / reference, by_check["fairness.disparate_impact"]["value"], rtol=1e-12)
        np.testing.assert_allclose(compared - reference, by_check["fairness.statistical_parity_difference"]["value"],
                                   rtol=1e-12)
        # the band of passing selection rates: both bounds of DI and SPD relative to the reference group
        di, spd = by_check["fairness.disparate_impact"]["threshold"], by_check["fairness.statistical_parity_difference"]["threshold"]
        band = shown[(shown["group"] == "compared") & (shown["metric"] == "selection_rate")].iloc[0]
        np.testing.assert_allclose(band["band_low"], max(di["fail_below"] * reference, reference + spd["fail_below"]))
        np.testing.assert_allclose(band["band_high"], min(di["fail_above"] * reference, reference + spd["fail_above"]))


# ---------------------------------------------------------------- confusion matrices


def test_confusion_matrices_sum_to_the_groups_and_match_a_hand_count(RUNS):
    at = ok(app("fairness", "adult"))
    details = findings_of(RUNS, "adult")["details"]["fairness"]
    table = frame(at, "subject", "group", "true", "decided_unfavourable", "decided_favourable", "rate_favourable")
    y, _, y_pred, codes = stored(RUNS)
    for i, c in enumerate(details["model"]):
        for side, code, n in (("reference", 1, c["n_privileged"]), ("compared", 0, c["n_unprivileged"])):
            rows = table[(table["subject"] == c["attribute"]) & (table["group"] == side)].set_index("true")
            assert rows[["decided_unfavourable", "decided_favourable"]].to_numpy().sum() == n
            for label, name in ((0, "unfavourable"), (1, "favourable")):
                member = (codes[i] == code) & (y == label)
                hand = [sum(1 for m, p in zip(member, y_pred) if m and p == d) for d in (0, 1)]  # a plain count
                assert rows.loc[name, "decided_unfavourable"] == hand[0] and rows.loc[name, "decided_favourable"] == hand[1]
                np.testing.assert_allclose(rows.loc[name, "rate_favourable"], hand[1] / sum(hand), rtol=1e-12)


# ---------------------------------------------------------------- threshold what-if


def _recount(y, score, code, t: float) -> dict[str, float]:
    decided = score > t
    rate = {}
    for g, side in ((1, "reference"), (0, "compared")):
        member = code == g
        rate[side] = (decided[member].mean(), decided[member & (y == 1)].mean(), decided[member & (y == 0)].mean())
    (sr, tr, fr), (sc, tc, fc) = rate["reference"], rate["compared"]
    return {"selection_rate_reference": sr, "selection_rate_compared": sc, "disparate_impact": sc / sr,
            "statistical_parity_difference": sc - sr, "equal_opportunity_difference": tc - tr,
            "average_odds_difference": ((fc - fr) + (tc - tr)) / 2, "accuracy": (decided == y).mean()}


@pytest.mark.parametrize("threshold", [0.5, 0.2, 0.35, 0.725, 0.9])
def test_threshold_whatif_equals_a_recount_from_the_stored_probabilities(RUNS, threshold):
    at = ok(app("fairness", "adult"))
    findings = findings_of(RUNS, "adult")
    details = findings["details"]["fairness"]
    assert any("not the audited model" in t for t in texts(at.info))
    if threshold != 0.5:
        ok(at.slider(key="threshold").set_value(threshold).run())
        assert at.query_params["threshold"] == f"{threshold:g}"
    else:
        assert "threshold" not in at.query_params
    table = whatif_frame(at)
    y, score, _, codes = stored(RUNS)
    assert table["subject"].tolist() == [c["attribute"] for c in details["model"]]
    for i, c in enumerate(details["model"]):
        row = table.iloc[i]
        assert row["threshold"] == threshold
        for name, value in _recount(y, score, codes[i], threshold).items():
            np.testing.assert_allclose(row[name], value, rtol=1e-12, err_msg=f"{c['attribute']} {name} at {threshold}")
        if threshold == 0.5:  # the audited model: the details' values themselves
            for name in ("disparate_impact", "statistical_parity_difference", "equal_opportunity_difference",
                         "average_odds_difference"):
                same([row[name]], [c["metrics"][name]["value"]])
            same([row["selection_rate_reference"], row["selection_rate_compared"]],
                 [c["per_group"]["privileged"]["selection_rate"], c["per_group"]["unprivileged"]["selection_rate"]])
            np.testing.assert_allclose(row["accuracy"], findings["details"]["performance"]["accuracy"]["value"],
                                       rtol=1e-12)


def test_threshold_from_the_url(RUNS):
    at = ok(_with_params(threshold="0.3"))
    assert at.slider(key="threshold").value == 0.3
    assert whatif_frame(at)["threshold"].tolist() == [0.3] * len(whatif_frame(at))
    at = ok(_with_params(threshold="[x](https://evil.example)"))
    assert at.slider(key="threshold").value == 0.5
    assert texts(at.warning) == [f"{literal('[x](https://evil.example)')} is not a threshold between 0 and 1: showing 0.5"]
    ok(at.slider(key="threshold").set_value(0.5).run())
    assert "threshold" not in at.query_params


def _with_params(**params):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(test_app.MAIN), default_timeout=60)
    for name, value in {"page": "fairness", "run": "adult", **params}.items():
        at.query_params[name] = value
    return at.run()


# ---------------------------------------------------------------- focus and the filter


def test_focus_from_the_url_preselects_the_filter(RUNS):
    details = findings_of(RUNS, "adult")["details"]["fairness"]
    attributes = [c["attribute"] for c in details["model"]]
    for subject in attributes:
        at = ok(_with_params(focus=subject))
        assert at.multiselect(key="attributes").value == [subject]
        assert at.query_params["focus"] == subject and not at.warning
    at = ok(_with_params(focus="race=Martian"))
    assert at.multiselect(key="attributes").value == attributes
    assert texts(at.warning) == [f"{literal('race=Martian')} is not an attribute or comparison of this run: "
                                 "showing every attribute"]
    assert "focus" not in at.query_params
    # the filter writes back: one attribute chosen is the focus, several none
    ok(at.multiselect(key="attributes").set_value(["sex"]).run())
    assert at.query_params["focus"] == "sex"
    ok(at.multiselect(key="attributes").set_value(["sex", "race"]).run())
    assert "focus" not in at.query_params


def test_the_filter_narrows_every_table_and_chart(RUNS):
    at = ok(app("fairness", "adult"))
    everything = len(at.image)
    for chosen in (["race"], ["sex × race"], ["sex", "race"]):
        ok(at.multiselect(key="attributes").set_value(chosen).run())
        assert len(at.dataframe) >= 7, [list(d.value.columns) for d in at.dataframe]
        for d in at.dataframe:
            column = "attribute" if "attribute" in d.value.columns else "subject"
            assert column in d.value.columns, list(d.value.columns)  # a table the filter cannot narrow
            assert set(d.value[column]) <= set(chosen) and len(d.value), (list(d.value.columns), set(d.value[column]))
        assert len(at.image) < everything
    ok(at.multiselect(key="attributes").set_value([]).run())
    assert not at.image
    assert all(not len(d.value) for d in at.dataframe)
