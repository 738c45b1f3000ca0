"""The Streamlit app (``scrutiny app RUNS_DIR``) under ``streamlit.testing.v1.AppTest``: every
page on runs written by the test suite, the numbers shown against ``findings.json`` and the
run's arrays, filters, broken run folders, and that no URL or widget opens a folder outside
RUNS_DIR.

The runs (Adult MLP, a second cheaper Adult run with another seed, digits CNN, one run whose
findings.json was edited by hand, one with findings.json deleted, one without a manifest) are
written once per session by :func:`build_runs`; ``tests/test_app_e2e.py`` reuses them.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scrutiny.app.text import literal
from scrutiny.audit.run.findings import STATUS_WORDS, STATUSES
from scrutiny.audit.run.run_folder import to_json
from scrutiny.cli import main

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

MAIN = Path(__file__).resolve().parents[1] / "app" / "main.py"
PAGES = ["Runs", "Explanations", "Robustness", "Fairness", "Compare"]
GOOD_RUNS = ("adult", "adult-seed1", "digits")

# adult and digits are the report tests' session runs (audit_configs.TABULAR and IMAGE, each with
# CERTIFICATION); fairness.mitigate = "sex" would retrain the MLP, so the Fairness page's mitigation
# table is tested on a run given a mitigation block instead, see test_mitigation_table

# the second Adult run, for Compare: same model and data, another seed; robustness by Gaussian
# noise only (its values change with the seed), no attributions nor fairness (checks absent in B)
ADULT_SEED1 = """
seed = 1
families = ["performance", "robustness"]

[robustness]
attacks = ["gaussian"]
samples = 40
detector = false
"""

_BUILT: dict[str, Path] = {}


def build_runs(trained, tmp_path_factory, request) -> Path:
    """RUNS: the audit runs the app tests read, written once per session.

    adult, adult-seed1, digits   complete runs
    corrupt                      adult's copy, findings.json edited by hand (hash no longer matches)
    no-findings                  adult's copy, findings.json deleted (listed: it has a manifest)
    incomplete                   adult's copy, manifest.json deleted (not a run folder: not listed)
    """
    if "runs" in _BUILT:
        return _BUILT["runs"]
    work = tmp_path_factory.mktemp("app").resolve()  # the app names runs by their resolved path
    runs = work / "RUNS"
    runs.mkdir()
    (_, _, adult), _ = trained("adult", "mlp"), trained("digits", "cnn")
    # adult and digits: the report tests' session runs (the same configs), without their report folders
    for name, fixture in (("adult", "adult_report"), ("digits", "digits_report")):
        shutil.copytree(request.getfixturevalue(fixture).path, runs / name, ignore=shutil.ignore_patterns("report"))
    for name, checkpoint, data, config in (("adult-seed1", adult, "adult", ADULT_SEED1),):
        path = work / f"{name}.toml"
        path.write_text(config)
        with contextlib.redirect_stdout(io.StringIO()) as printed:  # the audit's own table of findings
            code = main(["audit", str(checkpoint), "--data", data, "--config", str(path), "--out", str(runs / name)])
        assert code in (0, 1), (name, code, printed.getvalue()[-2000:])
    shutil.copytree(runs / "adult", runs / "corrupt")
    findings_path = runs / "corrupt" / "findings.json"
    edited = json.loads(findings_path.read_text())
    edited["findings"][0]["value"] = 0.999  # still valid against the schema; only the hash tells
    findings_path.write_text(json.dumps(edited, indent=2))
    shutil.copytree(runs / "adult", runs / "no-findings")
    (runs / "no-findings" / "findings.json").unlink()
    shutil.copytree(runs / "adult", runs / "incomplete")
    (runs / "incomplete" / "manifest.json").unlink()
    _BUILT["runs"] = runs
    return runs


@pytest.fixture(scope="module")
def RUNS(trained, tmp_path_factory, request):
    runs = build_runs(trained, tmp_path_factory, request)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRUTINY_RUNS_DIR", str(runs))
        yield runs


# ---------------------------------------------------------------- helpers


def findings_of(runs: Path, name: str) -> dict:
    return json.loads((runs / name / "findings.json").read_text(encoding="utf-8"))


def app(page: str | None = None, run: str | None = None):
    """A fresh app session, opened as from the URL ?page=…&run=…, after its first script run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(MAIN), default_timeout=60)
    if page is not None:
        at.query_params["page"] = page
    if run is not None:
        at.query_params["run"] = run
    return at.run()


def go(at, page: str, run: str | None = None):
    """Pick a page (and a run) with the sidebar widgets, as a user does."""
    if run is not None:
        at.sidebar.selectbox(key="run").set_value(run)
    at.sidebar.radio(key="page").set_value(page)
    return ok(at.run())


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame(at, *columns: str, index: str | None = None, where=None, exact: bool = False) -> pd.DataFrame:
    """The one dataframe shown (in ``where``, default the whole app) with these columns (``exact``:
    only these) and index name.

    AppTest does not expose the keys of st.dataframe (their element id is empty), so tables are
    told apart by their columns."""
    def matches(shown: pd.DataFrame) -> bool:
        names = list(map(str, shown.columns))
        return (names == list(columns) if exact else set(columns) <= set(names)) and (
            index is None or shown.index.name == index)

    found = [d.value for d in (where or at).dataframe if matches(d.value)]
    assert len(found) == 1, (columns, index, [list(d.value.columns) for d in (where or at).dataframe])
    return found[0]


def same(shown, expected) -> None:
    """Equal numbers, None shown as NaN; exact (the values travel through Arrow unchanged)."""
    shown = np.asarray(pd.to_numeric(pd.Series(list(shown)), errors="raise"), dtype=float)
    expected = np.asarray([np.nan if v is None else v for v in expected], dtype=float)
    np.testing.assert_array_equal(shown, expected)


def texts(elements) -> list[str]:
    return [e.value for e in elements]


class KnownBug(AssertionError):
    """The symptom a bug had (the tests raising it once carried ``xfail(raises=KnownBug)``)."""


# ---------------------------------------------------------------- every page renders


@pytest.mark.parametrize("run", GOOD_RUNS)
def test_every_page_renders_without_an_exception(RUNS, run):
    at = app(run=run)
    assert at.sidebar.radio(key="page").options == PAGES
    assert at.sidebar.selectbox(key="run").value == run
    headers = {"Runs": "Runs", "Explanations": "Explanations", "Robustness": "Robustness", "Fairness": "Fairness",
               "Compare": "Compare two runs"}
    for page in PAGES:
        go(at, page)
        assert texts(at.header) == [headers[page]], page
        # only the Runs page lists the unreadable runs, each with its reason
        assert [e.split(":")[0] for e in texts(at.error)] == ([literal("corrupt"), literal("no-findings")]
                                                             if page == "Runs" else []), page
        assert at.query_params["page"] == page.lower()
        assert at.query_params["run"] == run


def test_pages_open_from_the_url(RUNS):
    at = ok(app("fairness", "adult"))
    assert at.sidebar.radio(key="page").value == "Fairness" and texts(at.header) == ["Fairness"]
    at = ok(app("NO-SUCH-PAGE", "digits"))
    assert at.sidebar.radio(key="page").value == "Runs" and at.sidebar.selectbox(key="run").value == "digits"


# ---------------------------------------------------------------- Runs


def test_runs_table_lists_the_runs_with_verdict_and_counts(RUNS):
    at = ok(app("runs", "adult"))
    table = frame(at, "run", "verdict", "pass", "warn", "fail", "insufficient", "problem").set_index("run")
    # incomplete has no manifest: not a run folder, not listed
    assert list(table.index) == ["adult", "adult-seed1", "corrupt", "digits", "no-findings"]
    assert at.sidebar.selectbox(key="run").options == list(table.index)
    for name in GOOD_RUNS:
        findings = findings_of(RUNS, name)
        row = table.loc[name]
        assert row["verdict"] == findings["verdict"]
        assert [int(row[s]) for s in STATUSES] == [findings["counts"][s] for s in STATUSES]
        assert sum(findings["counts"].values()) == len(findings["findings"])
        assert row["data"] == findings["subject"]["data"]["name"]
        assert row["model"] == findings["subject"]["model"]["architecture"]
        assert not row["problem"]
    for name, why in (("corrupt", "changed or corrupt"), ("no-findings", "missing")):
        row = table.loc[name]
        assert row["verdict"] == "unreadable" and pd.isna(row["pass"])
        assert str(RUNS / name / "findings.json") in row["problem"] and why in row["problem"]
        assert any(e.startswith(f"{literal(name)}: ") and "findings.json" in e for e in texts(at.error)), texts(at.error)


WORST_FIRST = ["fail", "warn", "insufficient", "not_assessed", "pass"]


def worst_first(findings: list[dict]) -> list[dict]:
    return sorted(findings, key=lambda f: WORST_FIRST.index(f["status"]))  # stable: file order within a status


@pytest.mark.parametrize("run", GOOD_RUNS)
def test_findings_table_equals_findings_json(RUNS, run):
    from scrutiny.audit.run.policy import CHECK_INFO

    at = ok(app("runs", run))
    findings = findings_of(RUNS, run)
    assert texts(at.subheader)[0].startswith(f"{literal(run)}: ")
    metrics = {m.label: m.value for m in at.metric}
    # the two verdicts, recomputed here from the registry's "about" of each check
    about = [(CHECK_INFO[f["check"]].about == "model" and f["status"] in ("pass", "warn", "fail"), f["status"])
             for f in findings["findings"]]
    model = max((s for m, s in about if m), key=["pass", "warn", "fail"].index, default="not_assessed")
    evidence = max((s for m, s in about if not m), key=["pass", "not_assessed", "insufficient", "warn", "fail"].index,
                   default="not_assessed")
    assert metrics == {"verdict": STATUS_WORDS[findings["verdict"]], "verdict on the model": STATUS_WORDS[model],
                       "verdict on the evidence": STATUS_WORDS[evidence],
                       **{STATUS_WORDS[s]: str(findings["counts"][s]) for s in STATUSES}}
    table = frame(at, "check", "family", "value", "low", "high", "threshold", "status", "about", "evidence")
    expected = worst_first(findings["findings"])
    assert table["check"].tolist() == [f["id"] for f in expected]
    assert table["family"].tolist() == [f["family"] for f in expected]
    assert table["status"].tolist() == [STATUS_WORDS[f["status"]] for f in expected]
    assert table["about"].tolist() == ["model" if m else "evidence" for m, _ in
                                       (about[findings["findings"].index(f)] for f in expected)]
    assert table["caveats"].tolist() == ["; ".join(f["caveats"]) for f in expected]
    assert table["explanation"].tolist() == [f["explanation"] for f in expected]
    same(table["value"], [f["value"] for f in expected])
    same(table["low"], [f["interval"]["low"] if f["interval"] else None for f in expected])
    same(table["high"], [f["interval"]["high"] if f["interval"] else None for f in expected])
    for shown, f in zip(table["threshold"], expected):
        for key, value in f["threshold"].items():
            assert f"{key.replace('_', ' ')} {value:g}" in shown
    assert all(link.startswith("?page=") and f"run={run}" in link for link in table["evidence"])


def test_status_and_family_filters_narrow_the_findings(RUNS):
    at = ok(app("runs", "adult"))
    findings = worst_first(findings_of(RUNS, "adult")["findings"])
    statuses = at.multiselect(key="statuses")
    assert statuses.options == statuses.value == ["fail", "warn", "insufficient data", "not assessed", "pass"]
    for chosen in (["fail"], ["warn", "pass"], ["insufficient"]):
        ok(at.multiselect(key="statuses").set_value([STATUS_WORDS[s] for s in chosen]).run())
        table = frame(at, "check", "status")
        assert table["check"].tolist() == [f["id"] for f in findings if f["status"] in chosen]
    ok(at.multiselect(key="statuses").set_value(["fail", "warn", "insufficient data", "pass"]).run())
    ok(at.multiselect(key="families").set_value(["fairness"]).run())
    assert frame(at, "check", "status")["check"].tolist() == [f["id"] for f in findings if f["family"] == "fairness"]
    ok(at.multiselect(key="statuses").set_value([]).run())
    assert frame(at, "check", "status").empty


def test_each_finding_links_to_the_view_of_its_evidence(RUNS):
    from urllib.parse import parse_qs

    findings = findings_of(RUNS, "adult")["findings"]
    table = frame(ok(app("runs", "adult")), "check", "evidence").set_index("check")
    for f in findings:
        query = {k: v[0] for k, v in parse_qs(table.loc[f["id"], "evidence"].lstrip("?")).items()}
        assert query.pop("run") == "adult"
        page = query.pop("page")
        if f["family"] == "fairness":
            assert (page, query) == ("fairness", {"focus": f["subject"]})
        elif f["check"] == "attributions.protected_reliance":
            assert (page, query) == ("explanations", {"topk": f["subject"]})
        elif f["check"] == "robustness.robust_accuracy":
            assert (page, query) == ("robustness", {"eps": f["subject"].split("=")[1]})
            assert float(query["eps"]) in findings_of(RUNS, "adult")["details"]["robustness"]["eps"]
        elif f["family"] == "performance":
            assert (page, query) == ("runs", {"focus": f["id"]})
        else:
            assert page == f["family"] or (page, f["family"]) == ("explanations", "attributions"), (f["id"], page)


def test_a_finding_opens_from_the_url_and_its_button_opens_the_evidence(RUNS):
    findings = findings_of(RUNS, "adult")["findings"]
    target = next(f for f in findings if f["check"] == "fairness.disparate_impact" and f["subject"] == "race")
    at = ok(runs_page_at(target["id"]))
    assert at.selectbox(key="finding").value == target["id"]
    assert any(escape(target["explanation"]) in h.proto.body for h in at.get("html"))  # shown whole, as text
    ok(at.button(key="open_evidence").click().run())
    assert at.sidebar.radio(key="page").value == "Fairness" and texts(at.header) == ["Fairness"]
    assert at.query_params["focus"] == "race" and at.query_params["page"] == "fairness"


def runs_page_at(focus: str):
    """The Runs page of adult opened from a URL that names a finding."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.query_params.update({"page": "runs", "run": "adult", "focus": focus})
    return at.run()


def test_choosing_another_page_drops_the_view_parameters(RUNS):
    at = ok(runs_page_at("performance.balanced_accuracy"))
    assert at.query_params["focus"] == "performance.balanced_accuracy"
    go(at, "Robustness")
    assert "focus" not in at.query_params and at.query_params["page"] == "robustness"


def test_reproducibility_expander_shows_the_manifest(RUNS):
    at = ok(app("runs", "adult"))
    manifest = json.loads((RUNS / "adult" / "manifest.json").read_text())
    assert at.code[0].value == " ".join(manifest["command"])
    assert "audit" in at.code[0].value


# ---------------------------------------------------------------- Explanations


def test_row_attributions_equal_the_stored_arrays(RUNS):
    at = ok(app("explanations", "adult"))
    details = findings_of(RUNS, "adult")["details"]["attributions"]
    with np.load(RUNS / "adult" / "arrays" / "attributions.npz") as z:
        stored = {k: z[k] for k in z.files}
    raw = pd.read_parquet(RUNS / "adult" / "arrays" / "explained_rows.parquet")
    sample = at.selectbox(key="sample")
    assert [int(o) for o in sample.options] == details["rows"]
    for position in (0, 5, len(details["rows"]) - 1):
        ok(at.selectbox(key="sample").set_value(details["rows"][position]).run())
        table = frame(at, *details["methods"], index="feature")
        assert table.index.tolist() == details["features"]
        assert list(table.columns) == ["value", *details["methods"], "opposite signs"]
        signs = np.sign([stored[m][position] for m in details["methods"]])
        assert table["opposite signs"].tolist() == np.asarray((signs > 0).any(axis=0) & (signs < 0).any(axis=0)).tolist()
        for method in details["methods"]:
            assert np.allclose(table[method].to_numpy(dtype=float), stored[method][position], rtol=0, atol=0), method
        assert table["value"].tolist() == [str(raw.iloc[position][f]) for f in details["features"]]
        with np.load(RUNS / "adult" / "arrays" / "predictions.npz") as p:
            row = details["rows"][position]
            classes = findings_of(RUNS, "adult")["subject"]["data"]["classes"]
            metrics = {m.label: m.value for m in at.metric}
            assert metrics["prediction"] == literal(classes[p["y_pred"][row]])
            assert metrics["label"] == literal(classes[p["y_true"][row]])
            assert metrics["P(prediction)"] == f"{p['proba'][row, p['y_pred'][row]]:.3f}"
        assert len(at.image) >= 1  # the bar chart of this row


@pytest.mark.parametrize("run", ["adult", "digits"])
def test_global_importance_equals_the_details(RUNS, run):
    at = ok(app("explanations", run))
    details = findings_of(RUNS, run)["details"]["attributions"]
    assert [e.label for e in at.expander] == [literal(m) for m in details["importance"]]
    for expander, entry in zip(at.expander, details["importance"].values()):
        table = frame(at, "feature", "mean |attribution|", where=expander).set_index("feature").loc[details["features"]]
        same(table["mean |attribution|"], entry["mean"])
        same(table["low"], entry["low"])
        same(table["high"], entry["high"])
        shown = frame(at, "feature", "mean |attribution|", where=expander)["mean |attribution|"].to_numpy()
        assert np.all(np.diff(shown) <= 0)  # sorted, most important first
    quality = frame(at, "method", "deletion ratio").set_index("method")
    for method, q in details["quality"].items():
        same([quality.loc[method, "deletion ratio"]], [q["deletion_ratio"]])
        same([quality.loc[method, "randomisation rho"]], [q["randomisation_spearman"]])
    agreement = frame(at, *details["methods"], exact=True)
    for a in details["agreement"]:
        first, second = a["methods"]
        same([agreement.loc[first, second], agreement.loc[second, first]], [a["spearman_median"]] * 2)


def test_filters_narrow_the_sample_list(RUNS):
    at = ok(app("explanations", "adult"))
    findings = findings_of(RUNS, "adult")
    classes = findings["subject"]["data"]["classes"]
    rows = findings["details"]["attributions"]["rows"]
    with np.load(RUNS / "adult" / "arrays" / "predictions.npz") as p:
        predicted = {r: classes[p["y_pred"][r]] for r in rows}
        correct = {r: bool(p["y_pred"][r] == p["y_true"][r]) for r in rows}
    raw = pd.read_parquet(RUNS / "adult" / "arrays" / "explained_rows.parquet")
    sex = dict(zip(rows, raw["sex"].astype(str)))

    def shown():
        if at.warning and "No explained row matches" in at.warning[0].value:
            return []
        return [int(o) for o in at.selectbox(key="sample").options]

    labels = sorted(set(predicted.values()))
    assert at.selectbox(key="filter_prediction").options == ["any", *labels]
    assert at.selectbox(key="filter_correct").options == ["any", "correct", "wrong"]
    assert [o for o in at.selectbox(key="filter_group").options if o.startswith("sex = ")] == \
        [f"sex = {v}" for v in sorted(set(sex.values()))]
    # each step changes one filter; the sample list is the explained rows that satisfy all of them
    steps = [("filter_prediction", labels[0]), ("filter_correct", "wrong"), ("filter_prediction", labels[-1]),
             ("filter_correct", "correct"), ("filter_prediction", "any"), ("filter_correct", "any"),
             *[("filter_group", ("sex", v)) for v in sorted(set(sex.values()))]]  # shown as "sex = v"
    state = {"filter_prediction": "any", "filter_correct": "any", "filter_group": None}
    for key, value in steps:
        ok(at.selectbox(key=key).set_value(value).run())
        state[key] = value
        expected = [r for r in rows
                    if state["filter_prediction"] in ("any", predicted[r])
                    and state["filter_correct"] in ("any", "correct" if correct[r] else "wrong")
                    and state["filter_group"] in (None, ("sex", sex[r]))]
        assert shown() == expected, state
        assert f"{len(expected)} of {len(rows)} explained test rows match" in texts(at.caption), state


def test_filters_that_match_nothing_warn(RUNS):
    at = ok(app("explanations", "digits"))
    classes = findings_of(RUNS, "digits")["subject"]["data"]["classes"]
    options = at.selectbox(key="filter_prediction").options
    assert set(options[1:]) <= set(classes)
    # no row is predicted two classes at once: prediction X and label ≠ X = "wrong"; make one empty cell
    for label in options[1:]:
        ok(at.selectbox(key="filter_prediction").set_value(label).run())
        ok(at.selectbox(key="filter_correct").set_value("wrong").run())
        if any("No explained row matches" in w for w in texts(at.warning)):
            assert not [s for s in at.selectbox if s.key == "sample"]
            rows = findings_of(RUNS, "digits")["details"]["attributions"]["rows"]
            assert f"0 of {len(rows)} explained test rows match" in texts(at.caption)
            return
    pytest.skip("every predicted class of the digits run has a wrong prediction among the explained rows")


def test_digits_explanations_show_the_heat_maps(RUNS):
    at = ok(app("explanations", "digits"))
    run_files = json.loads((RUNS / "digits" / "manifest.json").read_text())["files"]
    # one pyplot figure (input + a heat map per method) and the run's importance figure; no table of one row
    assert len(at.image) == 1 + ("figures/importance.png" in run_files)
    assert not [d for d in at.dataframe if d.value.index.name == "feature"]
    assert "Attributions explain" in " ".join(texts(at.caption))


# ---------------------------------------------------------------- Robustness


@pytest.mark.parametrize("run", ["adult", "digits"])
def test_robustness_curve_and_metrics_equal_the_details(RUNS, run):
    at = ok(app("robustness", run))
    findings = findings_of(RUNS, run)
    details = findings["details"]["robustness"]
    table = frame(at, index="attack")
    assert table.index.tolist() == [*details["attacks"], "worst case"]
    columns = [float(c) for c in table.columns]
    assert columns == sorted({p["eps"] for p in details["curve"]})
    for point in details["curve"]:
        assert table.iloc[table.index.get_loc(point["attack"]), columns.index(point["eps"])] == point["robust_accuracy"]
    metrics = {m.label: m.value for m in at.metric}
    gated = details["gated_eps"]
    finding = next(f for f in findings["findings"] if f["id"] == f"robustness.robust_accuracy[eps={gated:g}]")
    assert metrics[f"worst case at eps={gated:g}"] == f"{finding['value']:.1%}"
    assert metrics["clean accuracy"] == f"{details['curve'][0]['clean_accuracy']:.1%}"
    assert metrics["rows never flipped"] == f"{details['never_flipped']:.1%}"


@pytest.mark.parametrize("run", ["adult", "digits"])
def test_contributions_table_equals_the_details(RUNS, run):
    at = ok(app("robustness", run))
    details = findings_of(RUNS, run)["details"]["robustness"]
    entries = details["contributions"]
    assert len(entries) == len(details["attacks"]) * len(details["eps"])
    shown = frame(at, "eps", "attack", "ran on", "rows attacked", "rows broken", exact=True)
    assert shown["attack"].tolist() == [e["attack"] for e in entries]
    same(shown["eps"], [e["eps"] for e in entries])
    same(shown["rows attacked"], [e["attacked"] for e in entries])
    same(shown["rows broken"], [e["broken"] for e in entries])
    assert shown["ran on"].tolist() == ["rows left standing" if e["chained"] else "every row" for e in entries]
    # the attacks together broke the rows the model gets right less those the worst case leaves
    for eps in details["eps"]:
        worst = next(p for p in details["curve"] if p["attack"] == "worst case" and p["eps"] == eps)
        broken = shown.loc[shown["eps"] == eps, "rows broken"].sum()
        assert broken == round(worst["clean_accuracy"] * worst["n"]) - round(worst["robust_accuracy"] * worst["n"])
    assert any("weak-evaluation checks flag it" in c for c in texts(at.caption))


@pytest.mark.parametrize("run", ["adult", "digits"])
def test_certification_bounds_and_headline_equal_the_details(RUNS, run):
    at = ok(app("robustness", run))
    findings = findings_of(RUNS, run)
    cert = findings["details"]["robustness"]["certification"]
    assert [s.value for s in at.subheader if s.value.startswith("Certified robustness")] == [
        f"Certified robustness (randomized smoothing, sigma={cert['sigma']:g})"]
    table = frame(at, "L2 radius", "certified (lower bound)", "under attack (upper bound)", "gap", "rows certified",
                  "rows", exact=True)
    entries = cert["table"]
    same(table["L2 radius"], [e["radius"] for e in entries])
    same(table["certified (lower bound)"], [e["certified_accuracy"] for e in entries])
    same(table["under attack (upper bound)"], [e["attacked_accuracy"] for e in entries])
    same(table["gap"], [e["attacked_accuracy"] - e["certified_accuracy"] for e in entries])
    same(table["rows certified"], [e["certified"] for e in entries])
    same(table["rows"], [e["n"] for e in entries])
    assert all(e["certified_accuracy"] <= e["attacked_accuracy"] for e in entries)  # lower bound below upper
    metrics = {m.label: m.value for m in at.metric}
    gated = cert["gated_radius"]
    finding = next(f for f in findings["findings"] if f["id"] == f"robustness.certified_accuracy[radius={gated:g}]")
    assert metrics[f"certified at radius={gated:g}"] == f"{finding['value']:.1%}"
    assert metrics["smoothed accuracy"] == f"{cert['smoothed_accuracy']:.1%}"
    assert metrics["base accuracy (no noise)"] == f"{cert['base_accuracy']:.1%}"
    assert metrics["abstained"] == f"{cert['abstention_rate']:.1%}"
    assert metrics["median certified radius"] == f"{cert['median_radius']:.3g}"
    caption = next(c for c in texts(at.caption) if c.startswith("Gaussian noise sigma="))
    assert f"n0={cert['n0']:,}" in caption and f"n={cert['n']:,}" in caption and f"alpha={cert['alpha']:g}" in caption
    assert f"Radii in {literal(cert['units'])}." in caption and literal(cert["attack"]) in caption
    # the suite's models were trained without noise
    assert "trained_sigma" not in cert and any("not trained with noise" in w for w in texts(at.warning))
    noised = [i for i in texts(at.info) if "covers moves of these columns only" in i]
    if run == "adult":
        assert cert["noised"] and noised == ["Only these columns get noise, and the certificate covers moves of these "
                                             "columns only: " + ", ".join(literal(n) for n in cert["noised"])]
    else:
        assert cert["noised"] == [] and not noised


def test_a_run_written_before_contributions_and_certification_shows_neither(RUNS, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(RUNS / "digits", root / "old")
    findings = findings_of(RUNS, "digits")
    del findings["details"]["robustness"]["contributions"], findings["details"]["robustness"]["certification"]
    rewrite_findings(root / "old", findings)
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(root))
    at = ok(app("robustness", "old"))
    assert not at.error
    subheaders = texts(at.subheader)
    assert not [s for s in subheaders if s.startswith(("What each attack added", "Certified robustness"))]
    assert any(s.startswith("Robust accuracy") for s in subheaders)
    assert not [d for d in at.dataframe if "rows broken" in d.value.columns or "gap" in d.value.columns]
    # the curve (in an expander) and the minimal perturbations (no certified figure), the examples at the policy's eps
    assert len(at.image) == 2 + 1


def test_certification_without_an_upper_bound_and_with_another_trained_sigma(RUNS, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(RUNS / "digits", root / "edited")
    findings = findings_of(RUNS, "digits")
    cert = findings["details"]["robustness"]["certification"]
    cert["attack"], cert["trained_sigma"] = "", 0.5
    for entry in cert["table"]:
        entry["attacked_accuracy"] = None
    rewrite_findings(root / "edited", findings)
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(root))
    at = ok(app("robustness", "edited"))
    table = frame(at, "L2 radius", "under attack (upper bound)", "gap")
    assert table["under attack (upper bound)"].isna().all() and table["gap"].isna().all()
    assert any("no attack gave an upper bound" in c for c in texts(at.caption))
    assert any(f"trained with Gaussian noise of sigma=0.5, not the sigma={cert['sigma']:g}" in w
               for w in texts(at.warning))
    assert not any("not trained with noise" in w for w in texts(at.warning))


def test_adversarial_examples_and_their_changes(RUNS):
    at = ok(app("robustness", "adult"))
    findings = findings_of(RUNS, "adult")
    classes = findings["subject"]["data"]["classes"]
    examples = findings["details"]["robustness"]["examples"]
    assert examples, "the Adult run has no adversarial example to show"
    # every (attack, eps) the run kept examples at: the examples there, each row's changes in original units
    for attack, eps in dict.fromkeys((e["attack"], e["eps"]) for e in examples):
        at.select_slider(key="robustness_eps").set_value(eps)
        ok(at.selectbox(key="robustness_attack").set_value(attack).run())
        kept = [e for e in examples if (e["attack"], e["eps"]) == (attack, eps)]
        shown = frame(at, "test row", "true label", "prediction before", "prediction after")
        assert shown["test row"].tolist() == [e["row"] for e in kept]
        assert shown["true label"].tolist() == [classes[e["label"]] for e in kept]
        assert shown["prediction before"].tolist() == [classes[e["before"]] for e in kept]
        assert shown["prediction after"].tolist() == [classes[e["after"]] for e in kept]
        changes = frame(at, "feature", "before", "after")
        assert changes.values.tolist() == [[e["row"], *map(str, c)] for e in kept for c in e["changes"]]


def test_digits_examples_are_images(RUNS):
    at = ok(app("robustness", "digits"))
    examples = findings_of(RUNS, "digits")["details"]["robustness"]["examples"]
    at.select_slider(key="robustness_eps").set_value(examples[-1]["eps"])
    ok(at.selectbox(key="robustness_attack").set_value(examples[-1]["attack"]).run())
    # the run's own figures (the curve, the minimal perturbations, the certified bounds), then one figure of the
    # examples at that attack and eps: original, adversarial, perturbation with its colour bar
    run_figures = sum((RUNS / "digits" / "figures" / name).exists()
                      for name in ("robustness.png", "min_eps.png", "certified.png"))
    assert run_figures == 3
    assert len(at.image) == run_figures + 1
    assert not [d for d in at.dataframe if "feature" in d.value.columns]


# ---------------------------------------------------------------- Fairness


def test_fairness_tables_equal_the_details(RUNS):
    at = ok(app("fairness", "adult"))
    details = findings_of(RUNS, "adult")["details"]["fairness"]
    expected = [(c["attribute"], c["privileged"], name, e) for c in details["model"] for name, e in c["metrics"].items()]
    tables = [d.value for d in at.dataframe if "privileged" in d.value.columns]
    assert len(tables) == 2  # model metrics, data-set bias
    model = tables[0]
    assert list(zip(model["attribute"], model["privileged"], model["metric"])) == [e[:3] for e in expected]
    for column in ("value", "low", "high"):
        same(model[column], [e[3][column] for e in expected])
    bias = [(c["attribute"], name, e) for c in details["data_bias"] for name, e in c["metrics"].items()]
    assert list(zip(tables[1]["attribute"], tables[1]["metric"])) == [b[:2] for b in bias]
    same(tables[1]["value"], [b[2]["value"] for b in bias])
    impact = frame(at, "impact_ratio", "category")
    shown = ("attribute", "category", "n", "selection_rate", "impact_ratio", "below_four_fifths", "excluded")
    _records_equal(impact, [{k: r[k] for k in shown} for r in details["impact_ratios"]])
    # the intersection heat map
    assert any(len(r["levels"]) == 2 for r in details["impact_ratios"])
    assert at.image, "no heat map of the intersection"


def test_intersection_grid_places_each_category_by_its_levels():
    """A category value holding the display separator (`` × ``) lands in its own cell: the grid is
    built from the levels, never by splitting the joined text."""
    from scrutiny.app.fairness_page import intersection_grid
    from scrutiny.audit.fairness.details import ImpactRatioEntry, Level

    def entry(levels, rate):
        return ImpactRatioEntry(attribute=" × ".join(a for a, _ in levels), category=" × ".join(v for _, v in levels),
                                levels=[Level(a, v) for a, v in levels], n=10, selection_rate=rate, impact_ratio=1.0,
                                below_four_fifths=False, excluded=False)

    impact = [entry([("race", "w × v")], 0.5), entry([("sex", "f")], 0.4),
              entry([("race", "b"), ("sex", "f")], 0.1), entry([("race", "w × v"), ("sex", "f")], 0.2),
              entry([("race", "w × v"), ("sex", "m × n")], 0.3)]
    grid = intersection_grid(impact)
    assert (grid.index.name, grid.columns.name) == ("race", "sex")
    assert grid.index.tolist() == ["b", "w × v"] and grid.columns.tolist() == ["f", "m × n"]
    assert grid.loc["w × v", "m × n"] == 0.3 and grid.loc["w × v", "f"] == 0.2 and grid.loc["b", "f"] == 0.1
    assert np.isnan(grid.loc["b", "m × n"])
    assert intersection_grid(impact[:2]) is None


def rewrite_findings(run: Path, findings: dict) -> None:
    """Replace a run's findings.json and its hash in the manifest: a consistent run, as the audit would write it."""
    import hashlib

    text = to_json(findings)
    (run / "findings.json").write_text(text, encoding="utf-8")
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["findings.json"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    (run / "manifest.json").write_text(to_json(manifest), encoding="utf-8")


def test_mitigation_table(RUNS, tmp_path, monkeypatch):
    """The before/after tables of fairness.mitigate, on a copy of the Adult run given a mitigation
    block shaped as the audit writes it (before: the audited model's metrics)."""
    root = tmp_path / "runs"
    shutil.copytree(RUNS / "adult", root / "mitigated")
    findings = findings_of(RUNS, "adult")
    before = next(c for c in findings["details"]["fairness"]["model"] if c["attribute"] == "sex")["metrics"]
    after = {k: {"value": None if k == "theil_index" else e["value"] / 2 + 0.01, "low": None, "high": None}
             for k, e in before.items()}
    findings["details"]["fairness"]["mitigation"] = [
        {"method": "reweighing (aif360), same architecture retrained", "attribute": "sex", "rows": "test", "n": 15060,
         "before": before, "after": after},
        {"method": "equalized-odds post-processing (aif360)", "attribute": "sex", "rows": "half of test", "n": 7530,
         "before": before, "after": before}]
    rewrite_findings(root / "mitigated", findings)
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(root))
    at = ok(app("fairness", "mitigated"))
    assert not at.error
    shown = [d.value for d in at.dataframe if list(d.value.columns) == ["metric", "before", "after", "change"]]
    assert len(shown) == 2
    for table, m in zip(shown, findings["details"]["fairness"]["mitigation"]):
        assert table["metric"].tolist() == list(m["before"])
        same(table["before"], [m["before"][k]["value"] for k in m["before"]])
        same(table["after"], [m["after"][k]["value"] for k in m["before"]])
        same(table["change"], [(m["after"][k]["value"] or 0) - (m["before"][k]["value"] or 0) for k in m["before"]])
    assert any("reweighing" in t and "(n=15060)" in t for t in texts(at.markdown))


def _records_equal(shown: pd.DataFrame, expected: list[dict]) -> None:
    assert len(shown) == len(expected)
    assert set(shown.columns) == set(expected[0])
    for (_, row), record in zip(shown.iterrows(), expected):
        for key, value in record.items():
            if isinstance(value, float) or value is None:
                same([row[key]], [value])
            else:
                assert row[key] == value, (key, row[key], value)


def test_fairness_attribute_filter(RUNS):
    at = ok(app("fairness", "adult"))
    details = findings_of(RUNS, "adult")["details"]["fairness"]
    attributes = list(dict.fromkeys(c["attribute"] for c in details["model"]))
    assert at.multiselect(key="attributes").options == attributes
    ok(at.multiselect(key="attributes").set_value([attributes[0]]).run())
    model = next(d.value for d in at.dataframe if "privileged" in d.value.columns)
    assert set(model["attribute"]) == {attributes[0]}
    assert len(model) == len(details["model"][0]["metrics"])
    # every table, not only the first (tests/test_app_fairness.py checks each of them)
    impact = frame(at, "impact_ratio", "category")
    assert impact["category"].tolist() == [r["category"] for r in details["impact_ratios"]
                                           if r["attribute"] == attributes[0]]


def test_digits_has_no_fairness_results(RUNS):
    at = ok(app("fairness", "digits"))
    assert len(at.info) == 1 and "no fairness results" in at.info[0].value
    assert not at.dataframe


# ---------------------------------------------------------------- Compare


def _check_comparison(table: pd.DataFrame, runs: Path, a: str, b: str) -> None:
    left = {f["id"]: f for f in findings_of(runs, a)["findings"]}
    right = {f["id"]: f for f in findings_of(runs, b)["findings"]}
    ids = list(dict.fromkeys([*left, *right]))
    assert table["check"].tolist() == ids
    same(table[a], [left[i]["value"] if i in left else None for i in ids])
    same(table[b], [right[i]["value"] if i in right else None for i in ids])
    assert table[f"status {a}"].tolist() == [STATUS_WORDS[left[i]["status"]] if i in left else "absent" for i in ids]
    assert table[f"status {b}"].tolist() == [STATUS_WORDS[right[i]["status"]] if i in right else "absent" for i in ids]
    for i, changed, change in zip(ids, table["changed"], table["change"]):
        fa, fb = left.get(i), right.get(i)
        status = (fa is None) != (fb is None) or fa["status"] != fb["status"]
        differs = status or fa["value"] != fb["value"]  # a value measured in one run only differs too
        assert bool(changed) == differs and (change == "status change") == status, i
        assert (change == "unchanged") == (not differs), i


def test_compare_two_adult_runs(RUNS):
    at = ok(app("compare"))
    assert at.selectbox(key="compare_a").value == "adult" and at.selectbox(key="compare_b").value == "adult-seed1"
    table = frame(at, "check", "changed")
    _check_comparison(table, RUNS, "adult", "adult-seed1")
    # same model and data: performance values equal; attributions, fairness and certification only in adult:
    # absent and changed
    assert not table.set_index("check").loc["performance.balanced_accuracy", "changed"]
    absent = table[table["status adult-seed1"] == "absent"]
    certified = [f["id"] for f in findings_of(RUNS, "adult")["findings"] if f["check"] == "robustness.certified_accuracy"]
    assert len(certified) == 1 and [c for c in absent["check"] if c.startswith("robustness.")] == certified
    assert set(absent["check"].str.split(".").str[0]) == {"attributions", "fairness", "robustness"}
    assert absent["changed"].all()
    # Gaussian noise drawn with another seed: a value present in both runs that differs
    robust = table[table["check"].str.startswith("robustness.robust_accuracy")]
    assert len(robust) and robust["adult"].notna().all() and robust["adult-seed1"].notna().all()
    assert "Both runs audited the same model weights." in texts(at.caption)
    assert not at.warning
    ok(at.checkbox(key="only_changed").check().run())
    only = frame(at, "check", "changed")
    assert only["check"].tolist() == table[table["changed"]]["check"].tolist()
    assert any(c.startswith(f"{int(table['changed'].sum())} of {len(table)} checks differ (value or status)")
               for c in texts(at.caption))


def test_compare_adult_with_digits(RUNS):
    at = ok(app("compare"))
    ok(at.selectbox(key="compare_b").set_value("digits").run())
    table = frame(at, "check", "changed")
    _check_comparison(table, RUNS, "adult", "digits")
    row = table.set_index("check").loc["performance.balanced_accuracy"]
    assert row["changed"] and row["difference"] == row["digits"] - row["adult"]
    assert any("different data" in w for w in texts(at.warning))


def test_compare_with_an_unreadable_run_says_why(RUNS):
    at = ok(app("compare"))
    ok(at.selectbox(key="compare_b").set_value("corrupt").run())
    assert any("findings.json" in e for e in texts(at.error)) and not at.dataframe


# ---------------------------------------------------------------- broken run folders


@pytest.mark.parametrize("page", PAGES[1:4])
@pytest.mark.parametrize("run", ["corrupt", "no-findings"])
def test_an_unreadable_run_shows_why_on_its_page(RUNS, run, page):
    at = ok(app(page.lower(), run))
    assert at.sidebar.selectbox(key="run").value == run
    assert len(at.error) == 1 and str(RUNS / run / "findings.json") in at.error[0].value
    # the app goes on: another run opens in the same session
    go(at, page, "adult")
    assert not at.error and texts(at.header) == [page]


def test_runs_page_of_an_unreadable_run_says_why_once(RUNS):
    at = ok(app("runs", "corrupt"))
    reasons = [e for e in texts(at.error) + texts(at.warning) if "corrupt" in e and "findings.json" in e]
    assert len(reasons) == 1
    assert frame(at, "run", "verdict")["run"].tolist()  # the table of every run is still there


def test_a_folder_without_a_manifest_cannot_be_opened(RUNS):
    from scrutiny.app.runs import open_run, run_names

    assert "incomplete" not in run_names(RUNS)
    run, problem = open_run(RUNS, "incomplete")
    assert run is None and "not a run folder" in problem
    at = ok(app("explanations", "incomplete"))
    assert any("'incomplete' is not a run folder" in w for w in texts(at.warning))
    assert at.sidebar.selectbox(key="run").value == "adult"


@pytest.mark.parametrize("source, page, broken", [("adult", "explanations", "arrays/attributions.npz"),
                                                  ("adult", "explanations", "arrays/explained_rows.parquet"),
                                                  ("adult", "explanations", "figures/importance.png"),
                                                  ("digits", "explanations", "arrays/attributions.npz"),
                                                  ("digits", "robustness", "arrays/robustness.npz")])
def test_a_run_with_a_broken_file_shows_why_on_its_page(RUNS, tmp_path, monkeypatch, source, page, broken):
    root = tmp_path / "runs"
    shutil.copytree(RUNS / source, root / "broken")
    target = root / "broken" / broken
    target.write_bytes(target.read_bytes()[:100])  # truncated: its SHA-256 no longer matches the manifest
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(root))
    at = app(page, "broken")
    if at.exception:
        shown = at.exception[0].value
        if "RunError" in at.exception[0].proto.type and str(target) in shown:
            raise KnownBug(shown)
        raise AssertionError(f"an unexpected exception: {shown}")
    assert texts(at.header) == [page.capitalize()]
    assert any(str(target) in e for e in texts(at.error)), texts(at.error)


# ---------------------------------------------------------------- path safety


def _recording_loads(monkeypatch) -> list[Path]:
    import scrutiny.app.runs as runs_module

    opened: list[Path] = []
    original = runs_module.load_run

    def load_run(path):
        opened.append(Path(path).resolve())
        return original(path)

    monkeypatch.setattr(runs_module, "load_run", load_run)
    runs_module._load.clear()
    return opened


URL_ESCAPES = ["../..", "/etc", "..", "../outside", "adult/../digits", "adult/", "digits/arrays",
               "adult\\..\\digits", "%2e%2e%2foutside"]


def test_run_in_the_url_cannot_leave_runs_dir(RUNS, monkeypatch):
    # a complete run right beside RUNS_DIR: `?run=../outside` must not open it
    outside = RUNS.parent / "outside"
    if not outside.exists():
        shutil.copytree(RUNS / "digits", outside)
    opened = _recording_loads(monkeypatch)
    # Robustness draws no matplotlib figure for Adult: the cheapest page that opens the chosen run
    for wanted, page in [(w, "robustness") for w in URL_ESCAPES] + [("../outside", "runs"), ("/etc", "explanations")]:
        at = ok(app(page, wanted))
        assert any(f"'{wanted}' is not a run folder in {RUNS}" in w for w in texts(at.warning)), (wanted, texts(at.warning))
        assert at.sidebar.selectbox(key="run").value == "adult", wanted
        assert at.query_params["run"] == "adult", wanted
        assert [e.split(":")[0] for e in texts(at.error)] == ([literal("corrupt"), literal("no-findings")]
                                                             if page == "runs" else []), wanted
        assert texts(at.header) == [page.capitalize()]
    assert opened and all(p.parent == RUNS.resolve() for p in opened), opened
    assert RUNS / "adult" in opened and outside.resolve() not in opened


def test_open_run_refuses_names_that_are_not_run_folders(RUNS):
    from scrutiny.app.runs import open_run

    for name in ("../something", "..", "/etc", str(RUNS / "adult"), "adult/", "adult/../digits", "", None,
                 "incomplete", "no-such-run"):
        run, problem = open_run(RUNS, name)
        assert run is None and problem, name
    run, problem = open_run(RUNS, "adult")
    assert run is not None and problem is None and run.path == RUNS / "adult"


def test_a_link_out_of_runs_dir_is_neither_listed_nor_opened(RUNS, tmp_path, monkeypatch):
    from scrutiny.app.runs import open_run, run_names

    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(RUNS / "adult", root / "adult")
    (root / "escape").symlink_to(RUNS / "digits", target_is_directory=True)
    assert run_names(root) == ["adult"]
    assert open_run(root, "escape") == (None, f"'escape' is not a run folder in {root}")
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(root))
    opened = _recording_loads(monkeypatch)
    for page in ("runs", "explanations", "compare"):
        at = ok(app(page, "escape"))
        assert at.sidebar.selectbox(key="run").options == ["adult"]
        assert any("'escape' is not a run folder" in w for w in texts(at.warning))
    assert opened and all(p == (root / "adult").resolve() for p in opened), opened
    # with one run, Compare has nothing to compare
    assert any("needs two run folders" in i for i in texts(at.info))


def test_the_run_widgets_cannot_leave_runs_dir(RUNS, monkeypatch):
    """Widget state set to a path (as a tampered session would): the widgets offer run folders only."""
    from streamlit.testing.v1 import AppTest

    outside = RUNS.parent / "outside"
    if not outside.exists():
        shutil.copytree(RUNS / "digits", outside)
    opened = _recording_loads(monkeypatch)
    for page, state in (("Explanations", {"run": "../outside"}), ("Robustness", {"run": str(outside)}),
                        ("Compare", {"compare_a": "../outside", "compare_b": "/etc"})):
        at = AppTest.from_file(str(MAIN), default_timeout=60)
        at.session_state["page"] = page
        for key, value in state.items():
            at.session_state[key] = value
        ok(at.run())
        assert at.sidebar.selectbox(key="run").options == ["adult", "adult-seed1", "corrupt", "digits", "no-findings"]
        assert at.sidebar.selectbox(key="run").value == "adult" and not at.error, page
        if page == "Compare":
            assert (at.selectbox(key="compare_a").value, at.selectbox(key="compare_b").value) == ("adult", "adult-seed1")
    assert opened and all(p.parent == RUNS.resolve() for p in opened), opened


# ---------------------------------------------------------------- the runs folder itself


def test_an_empty_runs_dir_says_so(RUNS, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(tmp_path))
    for page in ("runs", "explanations", "compare"):
        at = ok(app(page))
        assert len(at.info) == 1 and "No run folders in" in at.info[0].value and str(tmp_path) in at.info[0].value
        assert not at.error and not at.sidebar.selectbox


def test_a_missing_runs_dir_is_an_error_not_an_exception(RUNS, tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(missing))
    at = ok(app("runs"))
    assert len(at.error) == 1 and str(missing) in at.error[0].value
    monkeypatch.delenv("SCRUTINY_RUNS_DIR")
    at = ok(app("runs"))
    assert len(at.error) == 1 and "scrutiny app RUNS_DIR" in at.error[0].value


def test_cli_app_on_a_missing_folder_exits_2(capsys):
    code = main(["app", "/no/such/dir"])
    captured = capsys.readouterr()
    assert code == 2
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors == ["error: /no/such/dir: no such folder of runs"], captured.err
    assert "Traceback" not in captured.err + captured.out


def test_cli_app_on_a_missing_folder_prints_one_line():
    """In a fresh process (in this one, AppTest has already imported scrutiny.app: no warnings)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "scrutiny.cli", "app", "/no/such/dir"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[-1:] == ["error: /no/such/dir: no such folder of runs"], done.stderr
    if lines[:-1]:
        raise KnownBug(done.stderr)


def test_cli_app_refuses_a_file(tmp_path, capsys):
    file = tmp_path / "runs.txt"
    file.write_text("")
    assert main(["app", str(file)]) == 2
    assert str(file) in capsys.readouterr().err


def test_terminating_scrutiny_app_stops_the_server(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as answer:
                return answer.read() == b"ok"
        except OSError:
            return False

    process = subprocess.Popen([sys.executable, "-m", "scrutiny.cli", "app", str(tmp_path), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not answers():
            assert process.poll() is None and time.monotonic() < deadline, "the app server did not start"
            time.sleep(0.25)
        os.kill(process.pid, signal.SIGTERM)  # the scrutiny process only, as `kill PID` does
        process.wait(timeout=10)
        deadline = time.monotonic() + 2
        while answers() and time.monotonic() < deadline:
            time.sleep(0.25)
        if answers():
            raise KnownBug(f"the Streamlit server still answers on port {port} after `scrutiny app` was terminated")
    finally:
        try:  # the whole process group this test started, the orphaned server included
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
