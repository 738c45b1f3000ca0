"""The app's Robustness page (adversarial examples by attack and eps, drill-down from the URL) and
Compare page (A from the sidebar, A and B in the URL, changes told apart, overlays), under
``streamlit.testing.v1.AppTest`` on the session runs of :mod:`tests.test_app`.

Every figure is checked against the run's files, recomputed here: the examples against the model
reloaded from its checkpoint, the kinds of change from both findings.json files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from scrutiny.app.text import literal
from scrutiny.audit.run.findings import STATUS_WORDS

from . import test_app
from .test_app import app, findings_of, frame, go, ok, rewrite_findings, same, texts

RUNS = test_app.RUNS  # the session runs' fixture (adult, adult-seed1, digits, …)

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

PER_POINT = 4  # examples a run keeps per attack and eps (scrutiny.audit.robustness.family.EXAMPLES_PER_POINT)
ARCH = {"adult": ("adult", "mlp"), "digits": ("digits", "cnn")}


def charts(at) -> list[dict]:
    """The specs of the Vega-Lite (Altair) charts shown."""
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def rule_values(spec: dict) -> list[float]:
    """The eps of the vertical lines (rule layers with inline data) of a chart spec."""
    found = []
    for layer in spec.get("layer", []):
        mark = layer.get("mark")
        if (mark == "rule" or isinstance(mark, dict) and mark.get("type") == "rule") and "values" in layer.get("data", {}):
            found += [v["eps"] for v in layer["data"]["values"]]
    return found


def norm_of(x: np.ndarray, x_adv: np.ndarray, norm: str) -> float:
    flat = (x_adv.astype(np.float64) - x.astype(np.float64)).reshape(-1)
    return float(np.abs(flat).max() if norm == "linf" else np.sqrt((flat ** 2).sum()))


def recomputed_examples(trained, runs: Path, run: str):
    """The run's details and arrays, its model reloaded from the checkpoint, the rows the model gets
    right among the attacked ones, and, per (attack, eps), the positions (in the attacked rows) of the
    first rows that attack flipped: what the run should keep."""
    from scrutiny.models.checkpoint import load_model

    details = findings_of(runs, run)["details"]["robustness"]
    stored = dict(np.load(runs / run / "arrays" / "robustness.npz"))
    dataset, _, checkpoint = trained(*ARCH[run])
    loaded = load_model(checkpoint)
    test_x = dataset.test.X.iloc[stored["rows"]] if hasattr(dataset.test.X, "iloc") else dataset.test.X[stored["rows"]]
    x = torch.as_tensor(loaded.preprocessor().transform(test_x), dtype=torch.float32)
    y = np.asarray(dataset.test.y)[stored["rows"]]
    with torch.no_grad():
        right = loaded.model(x).argmax(dim=1).numpy() == y
    assert "chain" not in details["settings"]  # the session runs attack with pgd and gaussian, each on every row
    expected = {}
    for attack in details["attacks"]:
        for k, eps in enumerate(details["eps"]):
            flipped = np.flatnonzero(right & ~stored[f"robust__{attack}"][k])
            expected[attack, eps] = flipped[:PER_POINT]
    return details, stored, loaded, x, expected


# ---------------------------------------------------------------- the stored examples


@pytest.mark.parametrize("run", ["adult", "digits"])
def test_the_run_keeps_examples_of_every_attack_at_every_eps_and_each_flips_the_model(RUNS, trained, run):
    details, stored, loaded, x, expected = recomputed_examples(trained, RUNS, run)
    examples = details["examples"]
    assert len(stored["examples_x"]) == len(stored["examples_x_adv"]) == len(examples)
    # per (attack, eps): the first rows (in sample order) that attack flipped, up to PER_POINT, by attack then eps
    assert [(e["attack"], e["eps"], e["row"]) for e in examples] == [
        (attack, eps, int(stored["rows"][i])) for (attack, eps), positions in expected.items() for i in positions]
    assert {e["attack"] for e in examples} == {a for (a, _), p in expected.items() if len(p)}
    assert len({e["eps"] for e in examples}) > 1  # the run's runs flip rows at several radii
    with torch.no_grad():
        before = loaded.model(torch.as_tensor(stored["examples_x"])).argmax(dim=1).numpy()
        after = loaded.model(torch.as_tensor(stored["examples_x_adv"])).argmax(dim=1).numpy()
    position = {int(r): i for i, r in enumerate(stored["rows"])}
    for j, e in enumerate(examples):
        # the clean input is the test row the example names, and the reloaded model flips on the stored pair
        np.testing.assert_allclose(stored["examples_x"][j], x[position[e["row"]]].numpy(), rtol=0, atol=1e-6)
        assert before[j] == e["before"] == e["label"] != e["after"] == after[j], e
        assert not np.array_equal(stored["examples_x"][j], stored["examples_x_adv"][j])
        assert norm_of(stored["examples_x"][j], stored["examples_x_adv"][j], details["norm"]) <= e["eps"] * (1 + 1e-5)
    if run == "digits":  # pixel units: the adversarial images stay in the valid range
        assert stored["examples_x_adv"].min() >= 0.0 and stored["examples_x_adv"].max() <= 1.0


@pytest.mark.parametrize("run", ["adult", "digits"])
def test_examples_shown_for_each_attack_and_eps_equal_the_stored_ones(RUNS, run):
    findings = findings_of(RUNS, run)
    classes = findings["subject"]["data"]["classes"]
    details = findings["details"]["robustness"]
    examples = details["examples"]
    stored = dict(np.load(RUNS / run / "arrays" / "robustness.npz"))
    at = ok(app("robustness", run))
    assert at.select_slider(key="robustness_eps").options == [f"{e:g}" for e in details["eps"]]
    assert at.selectbox(key="robustness_attack").options[:len(details["attacks"])] == [
        f"{a} ({n} example{'s' * (n != 1)} at eps={details['gated_eps']:g})"
        for a in details["attacks"]
        for n in [sum(e["attack"] == a and e["eps"] == details["gated_eps"] for e in examples)]]
    shown_any = 0
    for attack in details["attacks"]:
        for eps in details["eps"]:
            at.select_slider(key="robustness_eps").set_value(eps)
            ok(at.selectbox(key="robustness_attack").set_value(attack).run())
            kept = [j for j, e in enumerate(examples) if e["attack"] == attack and e["eps"] == eps]
            if not kept:
                assert not [d for d in at.dataframe if "test row" in d.value.columns]
                assert any(f"No adversarial example of {literal(attack)} at eps={eps:g}" in i for i in texts(at.info))
                continue
            shown_any += 1
            table = frame(at, "test row", "true label", "prediction before", "prediction after")
            assert table["test row"].tolist() == [examples[j]["row"] for j in kept]
            assert table["true label"].tolist() == [classes[examples[j]["label"]] for j in kept]
            assert table["prediction before"].tolist() == [classes[examples[j]["before"]] for j in kept]
            assert table["prediction after"].tolist() == [classes[examples[j]["after"]] for j in kept]
            sizes = [norm_of(stored["examples_x"][j], stored["examples_x_adv"][j], details["norm"]) for j in kept]
            np.testing.assert_allclose(table[f"perturbation ({details['norm']})"].to_numpy(float), sizes, rtol=1e-9)
            assert max(sizes) <= eps * (1 + 1e-5)
            if run == "digits":  # one figure of the examples: original, adversarial, perturbation with its colour bar
                assert not [d for d in at.dataframe if "feature" in d.value.columns]
                assert len(at.image) >= 1
            else:
                changes = frame(at, "test row", "feature", "before", "after", exact=True)
                assert changes.values.tolist() == [[examples[j]["row"], *map(str, c)]
                                                   for j in kept for c in examples[j]["changes"]]
                assert all(examples[j]["changes"] for j in kept)
    assert shown_any >= 2


def test_a_run_written_with_one_list_of_examples_still_shows_them(RUNS, tmp_path, monkeypatch):
    """Runs written before examples were kept per attack and eps: up to 16 of one attack, shown
    by attack and eps all the same; an attack without any says the run kept none or it flipped none."""
    root = tmp_path / "runs"
    shutil.copytree(RUNS / "adult", root / "old")
    findings = findings_of(RUNS, "adult")
    details = findings["details"]["robustness"]
    pgd = [e for e in details["examples"] if e["attack"] == "pgd"]
    assert len(pgd) > 1
    details["examples"] = pgd  # the arrays keep their order: pgd's come first
    rewrite_findings(root / "old", findings)
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(root))
    at = ok(app("robustness", "old"))
    eps = pgd[0]["eps"]
    at.select_slider(key="robustness_eps").set_value(eps)
    ok(at.selectbox(key="robustness_attack").set_value("pgd").run())
    table = frame(at, "test row", "prediction after")
    assert table["test row"].tolist() == [e["row"] for e in pgd if e["eps"] == eps]
    ok(at.selectbox(key="robustness_attack").set_value("gaussian").run())
    gaussian = next(p for p in details["curve"] if p["attack"] == "gaussian" and p["eps"] == eps)
    why = "it flipped none of the rows" if gaussian["success_rate"] == 0 else "the run kept none"
    assert any(why in i for i in texts(at.info))


# ---------------------------------------------------------------- drill-down


def app_at(run: str, **params: str):
    from streamlit.testing.v1 import AppTest

    from .test_app import MAIN

    at = AppTest.from_file(str(MAIN), default_timeout=60)
    for name, value in {"page": "robustness", "run": run, **params}.items():
        at.query_params[name] = value
    return ok(at.run())


@pytest.mark.parametrize("run", ["adult", "digits"])
def test_eps_in_the_url_preselects_and_highlights_that_eps(RUNS, run):
    details = findings_of(RUNS, run)["details"]["robustness"]
    # without eps=: the policy's eps
    at = ok(app("robustness", run))
    assert at.select_slider(key="robustness_eps").value == details["gated_eps"]
    assert rule_values(charts(at)[0]) == [details["gated_eps"]]
    other = next(e for e in details["eps"] if e != details["gated_eps"])
    at = app_at(run, eps=f"{other:g}")
    assert not [w for w in texts(at.warning) if "is not in this run" in w]
    assert at.select_slider(key="robustness_eps").value == other
    (curve,) = [c for c in charts(at) if rule_values(c)]
    assert rule_values(curve) == [other]
    worst = next(p for p in details["curve"] if p["attack"] == "worst case" and p["eps"] == other)
    assert (f"At eps={other:g} ({literal('training standard deviations' if run == 'adult' else 'pixel units')}): "
            f"{worst['robust_accuracy']:.1%} of {worst['n']} test rows") in " ".join(texts(at.caption))
    # the examples follow the eps
    table = [d.value for d in at.dataframe if "test row" in d.value.columns and "true label" in d.value.columns]
    attack = at.selectbox(key="robustness_attack").value
    assert [r for t in table for r in t["test row"]] == [
        e["row"] for e in details["examples"] if e["attack"] == attack and e["eps"] == other]
    # a choice goes back into the URL
    ok(at.select_slider(key="robustness_eps").set_value(details["gated_eps"]).run())
    assert at.query_params["eps"] == f"{details['gated_eps']:g}"
    ok(at.selectbox(key="robustness_attack").set_value(details["attacks"][-1]).run())
    assert at.query_params["attack"] == details["attacks"][-1]


def test_a_value_the_run_does_not_have_is_ignored_with_one_warning(RUNS):
    details = findings_of(RUNS, "adult")["details"]["robustness"]
    for params in ({"eps": "9.75"}, {"eps": "[x](https://evil.example)"}, {"radius": "123"},
                   {"attack": "[x](https://evil.example)"}):
        at = app_at("adult", **params)
        ((name, raw),) = params.items()
        refused = [w for w in texts(at.warning) if "is not in this run" in w]
        assert len(refused) == 1 and refused[0].startswith(literal(f"{name}={raw}") + " is not in this run; showing ")
        assert name not in at.query_params
        assert at.select_slider(key="robustness_eps").value == details["gated_eps"]
        ok(at.run())  # the next run no longer warns
        assert not [w for w in texts(at.warning) if "is not in this run" in w]


@pytest.mark.parametrize("run", ["adult", "digits"])
def test_radius_in_the_url_opens_the_certified_section_at_that_radius(RUNS, run):
    cert = findings_of(RUNS, run)["details"]["robustness"]["certification"]
    radii = [e["radius"] for e in cert["table"]]
    at = ok(app("robustness", run))
    subheaders = texts(at.subheader)
    certified = next(i for i, s in enumerate(subheaders) if s.startswith("Certified robustness"))
    attacked = next(i for i, s in enumerate(subheaders) if s.startswith("Robust accuracy"))
    assert attacked < certified  # without radius=: the attacks first
    assert at.select_slider(key="robustness_radius").value == cert["gated_radius"]
    radius = next(r for r in radii if r != cert["gated_radius"])
    at = app_at(run, radius=f"{radius:g}")
    subheaders = texts(at.subheader)
    certified = next(i for i, s in enumerate(subheaders) if s.startswith("Certified robustness"))
    attacked = next(i for i, s in enumerate(subheaders) if s.startswith("Robust accuracy"))
    assert certified < attacked  # the link's section first
    assert at.select_slider(key="robustness_radius").value == radius
    entry = next(e for e in cert["table"] if e["radius"] == radius)
    assert any(c.startswith(f"At L2 radius {radius:g}: {entry['certified_accuracy']:.1%} of {entry['n']} rows")
               for c in texts(at.caption))
    # the figure and the bounds table stay
    frame(at, "L2 radius", "certified (lower bound)", "under attack (upper bound)")
    assert (RUNS / run / "figures" / "certified.png").exists()
    ok(at.select_slider(key="robustness_radius").set_value(radii[0]).run())
    assert at.query_params["radius"] == f"{radii[0]:g}"


def test_a_finding_link_opens_its_evidence(RUNS):
    from scrutiny.app import state

    findings = findings_of(RUNS, "adult")
    for finding in findings["findings"]:
        if finding["family"] != "robustness" or not finding["subject"]:
            continue
        page, params = state.evidence(finding)
        assert page == "robustness"
        at = app_at("adult", **params)
        assert not [w for w in texts(at.warning) if "is not in this run" in w]
        key, value = next(iter(params.items()))
        widget = at.select_slider(key=f"robustness_{key}")
        assert f"{widget.value:g}" == value


# ---------------------------------------------------------------- Compare


def expected_changes(runs: Path, a: str, b: str) -> dict[str, str]:
    """The kind of change of each check, recomputed from both findings.json files."""
    left = {f["id"]: f for f in findings_of(runs, a)["findings"]}
    right = {f["id"]: f for f in findings_of(runs, b)["findings"]}
    kinds = {}
    for key in dict.fromkeys([*left, *right]):
        fa, fb = left.get(key), right.get(key)
        if fa is None or fb is None or fa["status"] != fb["status"]:
            kinds[key] = "status change"
            continue
        va, vb = fa["value"], fb["value"]
        if va == vb:
            kinds[key] = "unchanged"
            continue
        if va is None or vb is None:
            kinds[key] = "value change, no interval"
            continue
        verdicts = [fa["interval"]["low"] <= vb <= fa["interval"]["high"] if fa["interval"] else None,
                    fb["interval"]["low"] <= va <= fb["interval"]["high"] if fb["interval"] else None]
        verdicts = [v for v in verdicts if v is not None]
        kinds[key] = ("value change, no interval" if not verdicts else
                      "drift inside the intervals" if all(verdicts) else "outside the intervals")
    return kinds


def check_kinds(at, runs: Path, a: str, b: str) -> dict[str, str]:
    table = frame(at, "check", "change")
    kinds = expected_changes(runs, a, b)
    assert table["check"].tolist() == list(kinds)
    assert table["change"].tolist() == list(kinds.values())
    assert table["changed"].tolist() == [k != "unchanged" for k in kinds.values()]
    left = {f["id"]: f for f in findings_of(runs, a)["findings"]}
    right = {f["id"]: f for f in findings_of(runs, b)["findings"]}
    same(table[a], [left[i]["value"] if i in left else None for i in kinds])
    same(table[b], [right[i]["value"] if i in right else None for i in kinds])
    assert table[f"status {a}"].tolist() == [STATUS_WORDS[left[i]["status"]] if i in left else "absent" for i in kinds]
    metrics = {m.label: m.value for m in at.metric}
    for kind in ("status change", "outside the intervals", "drift inside the intervals", "value change, no interval",
                 "unchanged"):
        assert metrics[kind] == str(list(kinds.values()).count(kind)), kind
    return kinds


def test_compare_tells_status_changes_from_values_outside_and_inside_the_intervals(RUNS, tmp_path, monkeypatch):
    """A copy of the Adult run with one finding's status changed, one value moved outside its
    interval and one moved within it: each classified apart, and the fairness metrics overlaid."""
    root = tmp_path / "runs"
    shutil.copytree(RUNS / "adult", root / "adult")
    shutil.copytree(RUNS / "adult", root / "edited")
    findings = findings_of(RUNS, "adult")
    with_interval = [f for f in findings["findings"] if f["interval"] and f["value"] is not None
                     and f["interval"]["high"] > f["interval"]["low"]]
    assert len(with_interval) >= 3
    status, outside, drift = with_interval[:3]
    status["status"] = "fail" if status["status"] != "fail" else "pass"
    outside["value"] = outside["interval"]["high"] + (outside["interval"]["high"] - outside["interval"]["low"])
    outside["interval"] = {**outside["interval"], "low": outside["value"] - 1e-9, "high": outside["value"] + 1e-9}
    drift["value"] = (drift["value"] + drift["interval"]["high"]) / 2
    rewrite_findings(root / "edited", findings)
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(root))
    at = ok(app("compare"))
    ok(at.selectbox(key="compare_b").set_value("edited").run())
    kinds = check_kinds(at, root, "adult", "edited")
    assert kinds[status["id"]] == "status change" and kinds[outside["id"]] == "outside the intervals"
    assert kinds[drift["id"]] == "drift inside the intervals"
    assert list(kinds.values()).count("unchanged") == len(kinds) - 3
    # both runs have robustness and fairness results: the curves and the fairness metrics overlaid
    specs = charts(at)
    assert len(specs) == 2
    fairness = findings["details"]["fairness"]["model"]
    from scrutiny.app.compare_page import fairness_points
    from scrutiny.app.runs import open_run

    points = fairness_points([open_run(root, "adult")[0], open_run(root, "edited")[0]])
    assert len(points) == 2 * sum(len(c["metrics"]) for c in fairness)
    expected = [(c["attribute"], name, e) for c in fairness for name, e in c["metrics"].items()]
    for run in ("adult", "edited"):
        mine = points[points["run"] == run]
        assert mine["metric"].tolist() == [name for _, name, _ in expected]
        assert all(row.startswith(f"{attribute}: ") for row, (attribute, _, _) in zip(mine["comparison"], expected))
        same(mine["value"], [e["value"] for _, _, e in expected])
        same(mine["low"], [e["low"] for _, _, e in expected])
        same(mine["high"], [e["high"] for _, _, e in expected])


@pytest.mark.parametrize("b", ["adult-seed1", "digits"])
def test_compare_classifies_each_check_as_recomputed_from_the_findings(RUNS, b):
    at = ok(app("compare"))
    ok(at.selectbox(key="compare_b").set_value(b).run())
    kinds = check_kinds(at, RUNS, "adult", b)
    assert "status change" in kinds.values()
    # both runs attacked the model: their curves in one chart, one line per run and attack
    (spec,) = charts(at)
    assert spec["encoding"]["color"]["scale"]["domain"] == ["adult", b]
    infos = texts(at.info)
    assert any(f"Only {literal('adult')} has fairness results." in i for i in infos)


def test_run_a_defaults_to_the_sidebar_run_and_both_live_in_the_url(RUNS):
    at = ok(app("compare", "digits"))
    assert at.selectbox(key="compare_a").value == "digits"
    assert at.selectbox(key="compare_b").value == "adult"  # the first other run
    go(at, "Compare", run="adult-seed1")  # not chosen on the page: A follows the sidebar
    assert at.selectbox(key="compare_a").value == "adult-seed1"
    ok(at.selectbox(key="compare_a").set_value("adult").run())
    ok(at.selectbox(key="compare_b").set_value("digits").run())
    assert at.query_params["a"] == "adult" and at.query_params["b"] == "digits"
    frame(at, "check", "change")
    # a link with a= and b= opens that comparison, whatever the sidebar's run
    from streamlit.testing.v1 import AppTest

    from .test_app import MAIN

    linked = AppTest.from_file(str(MAIN), default_timeout=60)
    for name, value in {"page": "compare", "run": "adult", "a": "digits", "b": "adult-seed1"}.items():
        linked.query_params[name] = value
    ok(linked.run())
    assert linked.selectbox(key="compare_a").value == "digits" and linked.selectbox(key="compare_b").value == "adult-seed1"
    frame(linked, "check", "change")
    # a name that is not a run: one warning, dropped from the URL
    bad = AppTest.from_file(str(MAIN), default_timeout=60)
    for name, value in {"page": "compare", "run": "adult", "b": "../etc"}.items():
        bad.query_params[name] = value
    ok(bad.run())
    assert [w for w in texts(bad.warning) if "b=" in w] == [f"{literal('b=../etc')} is not a run folder here; "
                                                            f"showing {literal('adult-seed1')}."]
    assert "b" not in bad.query_params and bad.selectbox(key="compare_b").value == "adult-seed1"


def test_comparing_a_run_with_itself_is_explained(RUNS):
    at = ok(app("compare"))
    ok(at.selectbox(key="compare_b").set_value("adult").run())
    assert at.selectbox(key="compare_a").value == at.selectbox(key="compare_b").value == "adult"
    assert [i for i in texts(at.info) if "same run" in i] == [
        f"Run A and run B are the same run ({literal('adult')}): there is nothing to compare. Choose another run for B."]
    assert not at.dataframe and not at.error and not at.exception
