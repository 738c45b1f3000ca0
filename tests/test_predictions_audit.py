"""Audits of logged decisions and scores, without the model (``--predictions FILE --spec SPEC``).

ProPublica's COMPAS analysis is redone from the raw file: every race category's error rates,
selection rates and LL144 tables against counts taken here with pandas, on the full file and on
ProPublica's filtered rows. A prediction-only audit of a model's own outputs must give that
model's audit figures; the families that need the model are "not assessed", never passes; bad
input is one line, exit 2, nothing written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scrutiny.audit.run.findings import validate_findings
from scrutiny.audit.run.policy import CHECK_INFO
from scrutiny.audit.run.run_folder import load_run
from scrutiny.cli import main

from .test_cli import assert_one_line_error

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "audit" / "run" / "findings.schema.json"

# the README's spec of ProPublica's file, shipped in examples/: the runs below are the README's command
COMPAS_SPEC = (Path(__file__).resolve().parents[1] / "examples" / "compas-deciles.toml").read_text()
REFERENCE = "Caucasian"
SEX_WORDS = {"sex: Female": "Female", "sex: not Female": "Male"}
CLOSE = 1e-12   # a rate taken as 1 - another, or summed in another order, may differ in its last bit


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def quiet_cli(*args) -> int:
    """The CLI outside a test's capsys (module fixtures): its output is dropped."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main([str(a) for a in args])


def raw_compas(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / "compas" / "compas-scores-two-years.csv")


def propublica_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """ProPublica's filter (compas-analysis, "Compas Analysis.ipynb")."""
    keep = (raw.days_b_screening_arrest <= 30) & (raw.days_b_screening_arrest >= -30) & (raw.is_recid != -1) \
        & (raw.c_charge_degree != "O") & raw.score_text.notna() & (raw.score_text != "N/A")
    return raw[keep].reset_index(drop=True)


def propublica_figures(rows: pd.DataFrame) -> dict[str, float]:
    """ProPublica's rates of a set of defendants, counted here: decile >= 5 ("medium or high") is
    the unfavourable decision, no reoffence within two years the favourable outcome."""
    no, yes = rows[rows.two_year_recid == 0], rows[rows.two_year_recid == 1]
    return {
        "n": len(rows),
        "false_positive_rate": float((no.decile_score >= 5).sum() / len(no)),   # high risk, did not reoffend
        "false_negative_rate": float((yes.decile_score < 5).sum() / len(yes)),  # low risk, did reoffend
        "selection_rate": float((rows.decile_score < 5).sum() / len(rows)),    # the favourable decision
    }


def assert_figures_match(side: dict, expected: dict[str, float], where: str) -> None:
    """scrutiny's figures of one group against ProPublica's. The favourable label is "no reoffence",
    so scrutiny's true-positive rate is the share of non-reoffenders given the favourable (low-risk)
    decision: ProPublica's false-positive rate (high risk among non-reoffenders) is 1 − it, and
    ProPublica's false-negative rate (low risk among reoffenders) is scrutiny's false-positive rate."""
    assert side["n"] == expected["n"], where
    assert 1 - side["true_positive_rate"] == pytest.approx(expected["false_positive_rate"], abs=CLOSE), where
    assert side["false_positive_rate"] == pytest.approx(expected["false_negative_rate"], abs=CLOSE), where
    assert side["selection_rate"] == pytest.approx(expected["selection_rate"], abs=CLOSE), where


@pytest.fixture(scope="module")
def compas_runs(data_dir, tmp_path_factory):
    """``compas_runs(rows)``: findings.json and the run folder of ``scrutiny audit --predictions`` on
    the raw file (``"full"``) or on ProPublica's filtered rows written to a CSV (``"propublica"``),
    with the frame pandas reads; each run once per module."""
    folder = tmp_path_factory.mktemp("compas")
    spec = folder / "compas.toml"
    spec.write_text(COMPAS_SPEC)
    raw = raw_compas(data_dir)
    cache: dict[str, tuple[dict, Path, pd.DataFrame]] = {}

    def run(rows: str):
        if rows not in cache:
            if rows == "full":
                path, frame = data_dir / "compas" / "compas-scores-two-years.csv", raw
            else:
                frame = propublica_rows(raw)
                path = folder / "propublica.csv"
                frame.to_csv(path, index=False)
            out = folder / f"run-{rows}"
            code = quiet_cli("audit", "--predictions", path, "--spec", spec, "--out", out)
            assert code in (0, 1), code   # 1: the audit's verdict is fail, which COMPAS earns
            cache[rows] = (json.loads((out / "findings.json").read_text()), out, frame)
        return cache[rows]

    return run


@pytest.mark.parametrize("rows", ["full", "propublica"])
def test_compas_error_rates_of_every_race_equal_propublica_counts(compas_runs, rows):
    document, _, frame = compas_runs(rows)
    assert len(frame) == (7214 if rows == "full" else 6172)   # ProPublica's counts
    assert document["details"]["performance"]["n"] == len(frame)   # no split column: every row is audited
    fairness = document["details"]["fairness"]
    model = {entry["attribute"] + ("" if entry.get("compared") is None else f"={entry['compared']}"): entry
             for entry in fairness["model"]}
    reference = propublica_figures(frame[frame.race == REFERENCE])
    races = sorted(set(frame.race) - {REFERENCE})
    assert {key for key in model if key.startswith("race=")} == {f"race={race}" for race in races}
    for race in races:
        entry = model[f"race={race}"]
        assert entry["privileged"] == REFERENCE
        assert entry["compared_levels"] == [{"attribute": "race", "value": race}]
        expected = propublica_figures(frame[frame.race == race])
        assert (entry["n_privileged"], entry["n_unprivileged"]) == (reference["n"], expected["n"])
        assert_figures_match(entry["per_group"]["unprivileged"], expected, race)
        assert_figures_match(entry["per_group"]["privileged"], reference, f"{REFERENCE} against {race}")
        metrics = {name: e["value"] for name, e in entry["metrics"].items()}
        # the gated metrics in ProPublica's terms: each category against the reference, not the rest
        assert metrics["disparate_impact"] == pytest.approx(expected["selection_rate"] / reference["selection_rate"],
                                                            rel=CLOSE)
        assert metrics["equal_opportunity_difference"] == pytest.approx(
            reference["false_positive_rate"] - expected["false_positive_rate"], abs=CLOSE)
        assert metrics["false_positive_rate_ratio"] == pytest.approx(
            expected["false_negative_rate"] / reference["false_negative_rate"], rel=CLOSE)
    # ProPublica's headline: Black defendants who did not reoffend were flagged high risk about twice as often
    black, white = propublica_figures(frame[frame.race == "African-American"]), reference
    assert 1.7 < black["false_positive_rate"] / white["false_positive_rate"] < 2.1


@pytest.mark.parametrize("rows", ["full", "propublica"])
def test_compas_intersections_are_compared_with_the_crossed_reference(compas_runs, rows):
    document, _, frame = compas_runs(rows)
    crossed = [e for e in document["details"]["fairness"]["model"] if e["attribute"] == "race × sex"]
    reference = propublica_figures(frame[(frame.race == REFERENCE) & (frame.sex == "Female")])
    cells = {(race, sex) for race, sex in zip(frame.race, frame.sex, strict=True)} - {(REFERENCE, "Female")}
    seen = set()
    for entry in crossed:
        assert [level["value"] for level in entry["privileged_levels"]] == [REFERENCE, "sex: Female"]
        race, sex_words = (level["value"] for level in entry["compared_levels"])
        cell = (race, SEX_WORDS[sex_words])
        seen.add(cell)
        rows_of_cell = frame[(frame.race == cell[0]) & (frame.sex == cell[1])]
        if rows_of_cell.two_year_recid.nunique() < 2:
            assert entry["per_group"]["unprivileged"]["n"] == len(rows_of_cell)
            continue   # a cell without both outcomes has no error rate to compare
        assert_figures_match(entry["per_group"]["unprivileged"], propublica_figures(rows_of_cell), str(cell))
        assert_figures_match(entry["per_group"]["privileged"], reference, f"reference against {cell}")
    assert seen == cells


@pytest.mark.parametrize("rows", ["full", "propublica"])
def test_compas_ll144_tables_list_every_race_with_pandas_rates(compas_runs, rows):
    document, _, frame = compas_runs(rows)
    fairness = document["details"]["fairness"]
    total = len(frame)
    selected = frame.decile_score < 5
    # LL144's scoring rate: with higher_is_favourable = false the favourable side is strictly below the median
    median = float(frame.decile_score.median())
    assert fairness["median_score"] == median
    assert (frame.decile_score == median).any()   # ties at the median: the side they fall on matters
    scored = frame.decile_score < median
    for table, rate_key, flags in (("impact_ratios", "selection_rate", selected),
                                   ("scoring_rates", "scoring_rate", scored)):
        rows_of = {r["category"]: r for r in fairness[table] if r["attribute"] == "race"}
        assert set(rows_of) == set(frame.race)
        rate = flags.groupby(frame.race).mean()
        n = frame.race.value_counts()
        excluded = n / total < 0.02   # LL144 lets categories under 2 % of rows out of the highest rate
        top = rate[~excluded].max()
        for race, row in rows_of.items():
            assert row["n"] == n[race], (table, race)
            assert row[rate_key] == pytest.approx(rate[race], abs=CLOSE), (table, race)
            assert row["excluded"] == bool(excluded[race]), (table, race)
            assert row["impact_ratio"] == pytest.approx(rate[race] / top, rel=CLOSE), (table, race)
            assert row["below_four_fifths"] == bool(rate[race] / top < 0.8 and not excluded[race]), (table, race)
    # a tie counted on the favourable side would change the rates: the strict side is what is tested
    at_or_below = (frame.decile_score <= median).groupby(frame.race).mean()
    scoring = {r["category"]: r["scoring_rate"] for r in fairness["scoring_rates"] if r["attribute"] == "race"}
    assert any(abs(scoring[race] - at_or_below[race]) > 0.01 for race in scoring)


def test_fairness_command_prints_the_comparisons_of_logged_scores(data_dir, tmp_path, capsys):
    spec = tmp_path / "compas.toml"
    spec.write_text(COMPAS_SPEC)
    code, out, err = cli(capsys, "fairness", "--predictions", data_dir / "compas" / "compas-scores-two-years.csv",
                         "--spec", spec, "--boot", 50)
    assert code == 0, err
    text = " ".join(out.split())
    for race in ("African-American", "Asian", "Hispanic", "Native American", "Other"):
        assert f"race={race}" in text
    assert "reference: Caucasian" in text
    assert "below the median" in text and "decile_score" in text
    assert "consistency" not in text   # it needs the model's inputs


# ---------------------------------------------------------------- prediction-only = model audit

CONFIG = {"seed": 7, "families": ["performance", "fairness"], "fairness": {"n_boot": 200}}


@pytest.fixture(scope="module")
def model_and_logged(load, tmp_path_factory):
    """A model's audit and the audit of its outputs written to a file: adult with race compared
    with a reference category, sex privileged-versus-rest."""
    from scrutiny.audit.run.runner import run_audit
    from scrutiny.models import ProtectedAttribute, load_predictions, train_on
    from scrutiny.models.training import predict_proba

    base = load("adult")
    spec = dataclasses.replace(base.spec, protected=(ProtectedAttribute("sex", ("Male",)),
                                                     ProtectedAttribute("race", reference="White")))
    dataset = dataclasses.replace(base, spec=spec)
    model = train_on(dataset, "mlp", epochs=2, seed=0, progress=False).model
    proba = predict_proba(model, dataset.encode(dataset.test.X))

    unfavourable = next(c for c in spec.classes if c != spec.favourable_label)

    def part(split, decision, score, name):
        return pd.DataFrame({
            "income": np.where(split.y == 1, spec.favourable_label, unfavourable),
            "decision": decision, "p_favourable": score,
            "sex": split.groups["sex"], "race": split.groups["race"], "split": name})

    n_train = len(dataset.train)
    # training rows give the data-set reference: their decision and score cells are placeholders
    table = pd.concat([part(dataset.train, np.arange(n_train) % 2, np.full(n_train, 0.5), "train"),
                       part(dataset.test, proba.argmax(axis=1), proba[:, 1], "test")], ignore_index=True)
    folder = tmp_path_factory.mktemp("logged")
    table.to_csv(folder / "logged.csv", index=False, float_format="%.17g")
    (folder / "logged.toml").write_text("""
label = "income"
favourable = ">50K"
prediction = "decision"
prediction_favourable = 1
score = "p_favourable"
score_is_probability = true
split = "split"

[protected]
sex = ["Male"]
race = { reference = "White" }
""")
    logged_data, logged = load_predictions(folder / "logged.csv", folder / "logged.toml")
    with_model = run_audit(model, dataset, config=CONFIG, progress=False)
    without = run_audit(None, logged_data, predictions=logged, config=CONFIG, progress=False)
    return with_model.document["details"], without.document["details"], proba


def test_logged_predictions_give_the_model_audits_fairness_figures(model_and_logged):
    model_side, logged_side, _ = model_and_logged
    ours, theirs = model_side["fairness"], logged_side["fairness"]
    assert len(ours["model"]) > 10 and any(e.get("compared") for e in ours["model"])   # reference comparisons too
    # data-set bias (training labels), every comparison of the decisions (counts, values, intervals,
    # warnings): identical, not merely close, since the counts and the seeded streams are the same
    assert theirs["data_bias"] == ours["data_bias"]
    assert theirs["settings"]["data_bias_split"] == "train"
    assert len(theirs["model"]) == len(ours["model"])
    for a, b in zip(ours["model"], theirs["model"], strict=True):
        assert b["metrics"] == a["metrics"], a["attribute"]
        assert all(np.isfinite(e["low"]) and e["low"] < e["high"] for e in a["metrics"].values()
                   if np.isfinite(e["value"]) and e["value"] not in (0.0, 1.0))
        assert b == a, a["attribute"]
    assert theirs["impact_ratios"] == ours["impact_ratios"]
    assert theirs["scoring_rates"] == ours["scoring_rates"]
    assert theirs["median_score"] == ours["median_score"]
    assert theirs["warnings"] == ours["warnings"]
    assert ours["consistency"] is not None and theirs["consistency"] is None   # needs the model's inputs


def test_logged_predictions_give_the_model_audits_performance(model_and_logged):
    model_side, logged_side, proba = model_and_logged
    ours, theirs = model_side["performance"], logged_side["performance"]
    assert theirs["balanced_accuracy"] == ours["balanced_accuracy"]
    assert theirs["accuracy"] == ours["accuracy"]
    assert theirs["confusion"] == ours["confusion"] and theirs["n"] == ours["n"] == len(proba)
    assert theirs["roc_auc"] == ours["roc_auc"]
    # calibration bins the larger of (1 − p, p) here and the model's two softmax outputs there: same to rounding
    assert theirs["calibration_error"]["value"] == pytest.approx(ours["calibration_error"]["value"], abs=1e-12)


# ---------------------------------------------------------------- not assessed, never passed

def test_checks_that_need_the_model_are_not_assessed(compas_runs, tmp_path, capsys):
    document, run, _ = compas_runs("full")
    needs_model = [check for check, info in CHECK_INFO.items()
                   if info.family in ("attributions", "robustness") and not info.opt_in]  # certification: not asked
    assert len(needs_model) >= 9
    by_check = {f["check"]: f for f in document["findings"] if f["family"] in ("attributions", "robustness")}
    assert set(by_check) == set(needs_model)
    for check, finding in by_check.items():
        assert finding["status"] == "not_assessed", check
        assert finding["value"] is None and finding["interval"] is None, check
        assert "model" in finding["explanation"], check
    # a score that is not a probability: no calibration either
    calibration = next(f for f in document["findings"] if f["check"] == "performance.calibration_error")
    assert calibration["status"] == "not_assessed"
    counts = {status: sum(f["status"] == status for f in document["findings"])
              for status in ("pass", "warn", "fail", "insufficient", "not_assessed")}
    assert {k: v for k, v in counts.items() if v} == {k: v for k, v in document["counts"].items() if v}
    assert counts["not_assessed"] == len(needs_model) + 1
    assert counts["pass"] == sum(f["status"] == "pass" for f in document["findings"] if f["family"] == "fairness"
                                 or f["check"] == "performance.balanced_accuracy")
    assert set(document["details"]) == {"performance", "fairness"}

    # the run validates (scrutiny's check, and the schema file itself), and reports render
    import jsonschema

    validate_findings(document)
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document)) == []
    assert load_run(run).findings["counts"] == document["counts"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "predictions" and manifest["model"]["weights_sha256"] is None
    code, out, err = cli(capsys, "report", run, "--format", "html,md", "--out", tmp_path / "report")
    assert code in (0, None), err
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "report.html").stat().st_size > 0
    for check in needs_model:
        line = next(line for line in markdown.splitlines() if f"`{check}`" in line)
        assert "not assessed" in line and "pass" not in line.replace("passes", ""), line


# ---------------------------------------------------------------- bad input

GOOD_SPEC = {
    "label": '"outcome"', "favourable": '"yes"', "score": '"risk"', "higher_is_favourable": "false",
    "threshold": "5",
}
GOOD_PROTECTED = {"race": '{ reference = "white" }', "sex": '["female"]'}


def spec_text(changes: dict | None = None, protected: dict | None = None) -> str:
    keys = {**GOOD_SPEC, **(changes or {})}
    lines = [f"{k} = {v}" for k, v in keys.items() if v is not None]
    lines.append("[protected]")
    lines += [f"{k} = {v}" for k, v in (protected or GOOD_PROTECTED).items()]
    return "\n".join(lines) + "\n"


def small_table(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame({
        "outcome": rng.choice(["yes", "no"], n), "risk": rng.integers(1, 11, n),
        "risk_band": rng.choice(["low", "medium", "high"], n),
        "race": rng.choice(["white", "black", "asian"], n), "sex": rng.choice(["female", "male"], n),
    })
    path = folder / "logged.csv"
    frame.to_csv(path, index=False)
    return path


def test_the_small_table_audits(tmp_path, capsys):
    """The bad inputs below are each one change away from this good one."""
    table = small_table(tmp_path)
    spec = tmp_path / "logged.toml"
    spec.write_text(spec_text())
    code, out, err = cli(capsys, "audit", "--predictions", table, "--spec", spec, "--out", tmp_path / "run",
                         "--config", config_file(tmp_path))
    assert code in (0, 1) and err == "", err
    assert (tmp_path / "run" / "findings.json").is_file()


def config_file(folder: Path) -> Path:
    path = folder / "audit.toml"
    path.write_text("[fairness]\nn_boot = 20\n")
    return path


BAD = {
    "label column missing": (spec_text({"label": '"result"'}), None, ["result"]),
    "score column missing": (spec_text({"score": '"riskk"'}), None, ["riskk"]),
    "protected column missing": (spec_text(protected={"colour": '["red"]'}), None, ["colour"]),
    "score not numeric": (spec_text({"score": '"risk_band"'}), None, ["risk_band"]),
    "reference absent": (spec_text(protected={"race": '{ reference = "martian" }'}), None, ["martian"]),
    "neither prediction nor score": (spec_text({"score": None, "higher_is_favourable": None, "threshold": None}),
                                     None, ["prediction", "score"]),
    "score without threshold": (spec_text({"threshold": None}), None, ["threshold"]),
    "with a MODEL": (spec_text(), ["some_model"], ["--predictions", "MODEL"]),
    "with --data": (spec_text(), ["--data", "adult"], ["--predictions", "--data"]),
    "without --spec": (None, None, ["--spec"]),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("command", ["audit", "fairness"])
def test_bad_predictions_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, case, command):
    spec_body, extra, fragments = BAD[case]
    table = small_table(tmp_path)
    args = [command, *(extra or []), "--predictions", table]
    if spec_body is not None:
        spec = tmp_path / "logged.toml"
        spec.write_text(spec_body)
        args += ["--spec", spec]
    out_dir = tmp_path / "run"
    if command == "audit":
        args += ["--out", out_dir]
    code, out, err = cli(capsys, *args)
    assert_one_line_error(code, out, err, *fragments, out_dir=out_dir)
