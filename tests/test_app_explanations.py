"""The Explanations page as an exploration tool (issue 19): per-decision waterfalls against the
run's stored f(x) and base values, the top-k filter, the sort orders, the URL state, and the
stored base values themselves (KernelSHAP's additivity) on the session's Adult run.

Every expected value is computed here from the run's arrays (``attributions.npz``,
``predictions.npz``, ``adverse_action.npz``, ``explained_rows.parquet``), never by the page's
own helpers.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from scrutiny.app.text import literal
from scrutiny.audit.run.run_folder import to_json

from . import test_app
from .test_app import app, findings_of, frame, ok, texts

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

K = 4  # the page's top-k, like the adverse-action notices' principal reasons


RUNS = test_app.RUNS  # the session runs' fixture (adult, adult-seed1, digits, …)


def stored(runs, name: str, file: str = "attributions") -> dict[str, np.ndarray]:
    with np.load(runs / name / "arrays" / f"{file}.npz") as z:
        return {k: z[k] for k in z.files}


def log_odds(runs, name: str) -> np.ndarray:
    """f(x) of each explained row as the score methods explain it: the log-odds of the row's
    explained class, from the probabilities predictions.npz holds."""
    details = findings_of(runs, name)["details"]["attributions"]
    with np.load(runs / name / "arrays" / "predictions.npz") as p:
        proba = p["proba"].astype(np.float64)[details["rows"]]
    target = np.asarray(details["target"])
    own = proba[np.arange(len(target)), target]
    return np.log(own) - np.log(proba[np.arange(len(target)), 1 - target])


def top_features(values: np.ndarray, k: int = K) -> list[int]:
    """A row's top-k features by |attribution|, ties to the earlier feature, zeros never."""
    order = sorted(range(len(values)), key=lambda j: (-abs(float(values[j])), j))
    return [j for j in order[:k] if values[j] != 0]


def preferred(details: dict) -> str:
    return "kernel_shap" if "kernel_shap" in details["methods"] else details["methods"][0]


def shown_rows(at) -> list[int]:
    if any("No explained row matches" in w for w in texts(at.warning)):
        return []
    return [int(o) for o in at.selectbox(key="sample").options]


# ---------------------------------------------------------------- the stored base values


def test_stored_base_values_and_attributions_reproduce_fx(RUNS):
    """KernelSHAP's additivity: base + Σ attributions = f(x); f(x) is the log-odds the predictions
    hold; integrated gradients' base is f(the one training-mean baseline), the same for every row."""
    details = findings_of(RUNS, "adult")["details"]["attributions"]
    arrays = stored(RUNS, "adult")
    fx = log_odds(RUNS, "adult")
    for method in details["methods"]:
        assert details["methods"][method]["output"] == "log_odds", method
        # float32 probabilities: log-odds known to about 1e-6 / min(p, 1 - p)
        np.testing.assert_allclose(arrays[f"{method}__fx"], fx, rtol=0, atol=1e-4, err_msg=method)
    shap_sum = arrays["kernel_shap"].astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(arrays["kernel_shap__base"] + shap_sum, arrays["kernel_shap__fx"], rtol=1e-5, atol=1e-5)
    # one background (baseline) for every row: the same base, up to the sign of the explained class's log-odds
    toward_1 = np.where(arrays["target"] == 1, 1.0, -1.0)
    assert np.ptp(arrays["kernel_shap__base"] * toward_1) < 1e-9  # E f(background)
    ig = arrays["integrated_gradients__base"]
    assert np.ptp(ig * toward_1) < 1e-5 and np.all(np.isfinite(ig))  # f(train mean), up to float32 rounding
    gap = np.abs(arrays["integrated_gradients"].astype(np.float64).sum(axis=1) - (arrays["integrated_gradients__fx"] - ig))
    change = np.abs(arrays["integrated_gradients__fx"] - ig)
    p95 = details["methods"]["integrated_gradients"]["completeness_p95"]
    meaningful = change >= 1e-4
    # the completeness finding's figure is the 95th percentile of exactly these relative gaps
    assert np.percentile(gap[meaningful] / change[meaningful], 95) == pytest.approx(p95, rel=1e-3, abs=1e-5)


# ---------------------------------------------------------------- waterfalls


def test_waterfall_steps_add_up_to_fx_minus_base(RUNS):
    at = ok(app("explanations", "adult"))
    details = findings_of(RUNS, "adult")["details"]["attributions"]
    arrays = stored(RUNS, "adult")
    raw = pd.read_parquet(RUNS / "adult" / "arrays" / "explained_rows.parquet")
    fx = log_odds(RUNS, "adult")
    p95 = details["methods"]["integrated_gradients"]["completeness_p95"]
    features = details["features"]
    for position in (0, 5, len(details["rows"]) - 1):
        ok(at.selectbox(key="sample").set_value(details["rows"][position]).run())
        for method in details["methods"]:
            steps = frame(at, "step", method)
            assert steps["step"].iloc[0] == "base value" and steps["step"].iloc[-1] == "f(x)"
            base, end = float(steps["running total"].iloc[0]), float(steps["running total"].iloc[-1])
            assert base == arrays[f"{method}__base"][position] and end == arrays[f"{method}__fx"][position]
            assert end == pytest.approx(fx[position], abs=1e-4)
            values = arrays[method][position].astype(np.float64)
            order = sorted(range(len(features)), key=lambda j: (-abs(values[j]), j))
            inner = steps.iloc[1:-1]
            expected_labels = [f"{features[j]} = {value_text(raw.iloc[position][features[j]])}" for j in order[:10]]
            assert inner["step"].tolist()[:10] == expected_labels
            assert inner["step"].iloc[-1] == f"other {len(features) - 10} features"
            np.testing.assert_allclose(inner[method].to_numpy(dtype=float)[:10], values[order[:10]], rtol=0, atol=1e-7)
            total = float(inner[method].sum())
            if method == "kernel_shap":
                assert total == pytest.approx(end - base, rel=1e-5, abs=1e-5)
            else:  # within the completeness gap the run reports (its 95th percentile, or 1 % if larger)
                assert abs(total - (end - base)) <= max(p95, 0.01) * abs(end - base) + 1e-4, (position, method)
            # the running total is base + the contributions so far
            np.testing.assert_allclose(inner["running total"].to_numpy(dtype=float),
                                       base + np.cumsum(inner[method].to_numpy(dtype=float)), rtol=0, atol=1e-9)
        caption = " ".join(texts(at.caption))
        assert f"{literal('kernel_shap')}: the log-odds of " in caption


def value_text(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def test_a_run_without_base_values_shows_bars_and_says_why(RUNS, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(RUNS / "adult", root / "old")
    arrays = {k: v for k, v in stored(RUNS, "adult").items() if not k.endswith(("__fx", "__base"))}
    path = root / "old" / "arrays" / "attributions.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    manifest = json.loads((root / "old" / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["arrays/attributions.npz"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / "old" / "manifest.json").write_text(to_json(manifest), encoding="utf-8")
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(root))
    at = ok(app("explanations", "old"))
    methods = findings_of(RUNS, "adult")["details"]["attributions"]["methods"]
    assert not [d for d in at.dataframe if "step" in d.value.columns]
    for method in methods:
        assert any(c.startswith(f"{literal(method)}: no base value: this run was written before") for c in texts(at.caption))
    assert len(at.image) >= len(methods)  # a bar chart per method


# ---------------------------------------------------------------- choosing rows


def test_topk_filter_from_the_url_lists_the_rows_with_that_attribute_among_the_top_k(RUNS):
    details = findings_of(RUNS, "adult")["details"]["attributions"]
    arrays = stored(RUNS, "adult")
    method = preferred(details)
    features = details["features"]
    tops = [top_features(arrays[method][i]) for i in range(len(details["rows"]))]
    reliance = [f["subject"] for f in findings_of(RUNS, "adult")["findings"]
                if f["check"] == "attributions.protected_reliance"]
    most = features[int(np.argmax(np.abs(arrays[method]).mean(axis=0)))]
    assert reliance, "the Adult run names no protected input"
    hits = 0
    for attribute in [*reliance, most]:
        at = ok(_url_app(topk=attribute))
        assert at.selectbox(key="topk").value == attribute and at.selectbox(key="method").value == method
        expected = [details["rows"][i] for i, top in enumerate(tops) if features.index(attribute) in top]
        assert shown_rows(at) == expected, attribute
        hits += len(expected)
        if expected:
            listed = frame(at, "test row", f"top {K} ({method})")
            assert all(attribute in t.split(", ") for t in listed[f"top {K} ({method})"])
    assert hits  # the top feature is among the top-k of some row at least


def _url_app(**params):
    """A fresh session opened at ?page=explanations&run=adult&<params>."""
    from streamlit.testing.v1 import AppTest

    from .test_app import MAIN

    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.query_params.update({"page": "explanations", "run": "adult", **params})
    return at.run()


def test_topk_prohibited_lists_the_rows_whose_notices_rest_on_a_prohibited_basis(RUNS):
    notices = stored(RUNS, "adult", "adverse_action")
    expected = sorted(int(r) for r, bad in zip(notices["test_row"], notices["cannot_issue"]) if bad)
    at = ok(_url_app(topk="prohibited"))
    assert at.selectbox(key="topk").value == "prohibited"
    assert shown_rows(at) == expected
    rows = findings_of(RUNS, "adult")["details"]["attributions"]["rows"]
    assert f"{len(expected)} of {len(rows)} explained test rows match" in texts(at.caption)


def test_disagreement_sort_order(RUNS):
    details = findings_of(RUNS, "adult")["details"]["attributions"]
    arrays = stored(RUNS, "adult")
    methods = details["methods"]
    assert len(methods) == 2
    keys = []
    for i, row in enumerate(details["rows"]):
        a, b = (arrays[m][i].astype(np.float64) for m in methods)
        tops = set(top_features(a)) | set(top_features(b))
        conflicts = sum(1 for j in tops if (a[j] > 0 > b[j]) or (b[j] > 0 > a[j]))
        rho = spearmanr(np.abs(a), np.abs(b)).statistic
        keys.append((-conflicts, -(1 - rho) if np.isfinite(rho) else np.inf, row))
    expected = [k[2] for k in sorted(keys)]
    at = ok(_url_app(sort="disagreement"))
    assert at.selectbox(key="sort").value == "disagreement"
    assert shown_rows(at) == expected
    listed = frame(at, "test row", "sign conflicts").set_index("test row")
    assert [int(listed.loc[r, "sign conflicts"]) for r in expected] == [-k[0] for k in sorted(keys)]
    # the row view flags the features with opposite signs
    worst = expected[0]
    ok(at.selectbox(key="sample").set_value(worst).run())
    position = details["rows"].index(worst)
    a, b = (arrays[m][position].astype(np.float64) for m in methods)
    opposite = [(x > 0 > y) or (y > 0 > x) for x, y in zip(a, b)]
    assert frame(at, *methods, index="feature")["opposite signs"].tolist() == opposite
    if -sorted(keys)[0][0]:
        assert any("opposite signs" in w for w in texts(at.warning))


def test_error_and_probability_sorts(RUNS):
    details = findings_of(RUNS, "adult")["details"]["attributions"]
    rows = details["rows"]
    with np.load(RUNS / "adult" / "arrays" / "predictions.npz") as p:
        proba = {r: float(p["proba"][r, p["y_pred"][r]]) for r in rows}
        wrong = {r: bool(p["y_pred"][r] != p["y_true"][r]) for r in rows}
    at = ok(_url_app(sort="error"))
    assert shown_rows(at) == sorted(rows, key=lambda r: (not wrong[r], -proba[r], r))
    ok(at.selectbox(key="sort").set_value("p_low").run())
    assert shown_rows(at) == sorted(rows, key=lambda r: (proba[r], r))
    assert at.query_params["sort"] == "p_low"


def test_url_params_preselect_and_widgets_write_back(RUNS):
    details = findings_of(RUNS, "adult")["details"]["attributions"]
    row, feature = details["rows"][3], details["features"][2]
    at = ok(_url_app(method="integrated_gradients", row=str(row), feature=feature))
    assert at.selectbox(key="method").value == "integrated_gradients"
    assert at.selectbox(key="sample").value == row
    assert at.selectbox(key="dependence").value == feature
    assert not [w for w in texts(at.warning) if w.startswith("Ignored")]
    # the chosen method's waterfall comes first
    steps = [d.value for d in at.dataframe if "step" in d.value.columns]
    assert "integrated_gradients" in steps[0].columns
    ok(at.selectbox(key="method").set_value("kernel_shap").run())
    ok(at.selectbox(key="sample").set_value(details["rows"][0]).run())
    assert at.query_params["method"] == "kernel_shap" and at.query_params["row"] == str(details["rows"][0])


def test_url_values_the_run_does_not_have_are_ignored_with_a_warning(RUNS):
    at = ok(_url_app(method="[x](https://evil.example)", topk="no_such_feature", sort="nonsense", row="999999"))
    warnings = texts(at.warning)
    for name, value in (("method", "[x](https://evil.example)"), ("topk", "no_such_feature"), ("sort", "nonsense"),
                        ("row", "999999")):
        assert sum(w.startswith(f"Ignored {name}={literal(value)} from the URL") for w in warnings) == 1, warnings
    details = findings_of(RUNS, "adult")["details"]["attributions"]
    assert at.selectbox(key="method").value == preferred(details) and at.selectbox(key="topk").value is None
    assert shown_rows(at) == details["rows"]


def test_the_rows_table_shows_one_page_and_says_how_many_match(RUNS, monkeypatch):
    import scrutiny.app.explanations_page as page

    monkeypatch.setattr(page, "PAGE_ROWS", 5)
    at = ok(app("explanations", "adult"))
    rows = findings_of(RUNS, "adult")["details"]["attributions"]["rows"]
    listed = frame(at, "test row", "prediction", "P(prediction)")
    assert listed["test row"].tolist() == rows[:5] and shown_rows(at) == rows[:5]
    assert f"showing the first 5 of the {len(rows)} matching rows; narrow the filters or change the order to see " \
           f"others" in texts(at.caption)


def test_beeswarm_sample_is_bounded_and_seeded():
    from scrutiny.app.explanation_views import BEESWARM_ROWS, beeswarm_sample

    assert beeswarm_sample(12).tolist() == list(range(12))
    big = beeswarm_sample(50_000)
    assert len(big) == BEESWARM_ROWS == 2000 and len(set(big.tolist())) == BEESWARM_ROWS
    assert np.array_equal(big, beeswarm_sample(50_000)) and np.all(np.diff(big) > 0) and big.max() < 50_000


def test_heat_maps_share_one_symmetric_labelled_scale():
    from scrutiny.app.explanation_views import heatmaps_figure

    rng = np.random.default_rng(0)
    maps = {"integrated_gradients": rng.normal(size=(8, 8)), "saliency": 3 * rng.normal(size=(8, 8))}
    fig = heatmaps_figure(rng.uniform(size=(8, 8)), maps, {"integrated_gradients": "log-odds", "saliency": "log-odds"})
    bound = max(np.abs(v).max() for v in maps.values())
    overlays = [ax.images[-1] for ax in fig.axes[1:3]]
    assert all(im.get_clim() == (-bound, bound) for im in overlays)
    colour_bar = fig.axes[-1]
    assert colour_bar.get_ylabel() == f"attribution per pixel (±{bound:.3g})"


LIME_ONLY = """
seed = 0
families = ["performance", "attributions"]  # the page lists rows with their predictions

[attributions]
methods = ["lime"]
samples = 6
quality = false
stability_rows = 3
n_boot = 20
"""


def small_adult_run(trained, tmp_path, monkeypatch, name: str, config: str):
    """The Adult MLP audited with ``config`` into ``tmp_path/runs/name``, the app's runs folder."""
    import contextlib
    import io

    from scrutiny.cli import main

    _, _, checkpoint = trained("adult", "mlp")
    root = tmp_path / "runs"
    (tmp_path / f"{name}.toml").write_text(config)
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["audit", str(checkpoint), "--data", "adult", "--config", str(tmp_path / f"{name}.toml"),
                     "--out", str(root / name)])
    assert code in (0, 1)
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(root))
    return root


def test_lime_waterfall_runs_from_its_intercept_to_its_own_prediction_at_x(trained, tmp_path, monkeypatch):
    # LIME's weights are slopes: its waterfall is its local linear model read at x (intercept +
    # weight × input as the model reads it), which ends at LIME's prediction, not at f(x)
    root = small_adult_run(trained, tmp_path, monkeypatch, "lime", LIME_ONLY)
    arrays = stored(root, "lime")
    details = findings_of(root, "lime")["details"]["attributions"]
    at = ok(app("explanations", "lime"))
    for position in (0, len(details["rows"]) - 1):
        ok(at.selectbox(key="sample").set_value(details["rows"][position]).run())
        steps = frame(at, "step", "lime")
        terms = arrays["lime__terms"][position].astype(np.float64)
        base, end = float(steps["running total"].iloc[0]), float(steps["running total"].iloc[-1])
        assert steps["step"].iloc[0] == "base value" and steps["step"].iloc[-1] == "LIME's model at x"
        assert base == arrays["lime__base"][position]
        assert end == pytest.approx(base + terms.sum(), abs=1e-12)
        order = sorted(range(len(terms)), key=lambda j: (-abs(terms[j]), j))[:10]
        np.testing.assert_allclose(steps["lime"].to_numpy(dtype=float)[1:11], terms[order], rtol=0, atol=1e-12)
        # the terms are the weights (the attributions) times the row as the model reads it: a
        # categorical feature reads 1 (the row's own category), so its term is its weight
        weights = arrays["lime"][position].astype(np.float64)
        categorical = [j for j, f in enumerate(details["features"]) if f in ("workclass", "education", "sex", "race")]
        np.testing.assert_allclose(terms[categorical], weights[categorical], rtol=1e-6, atol=1e-9)  # weights: float32
        caption = " ".join(texts(at.caption))
        assert f"against f(x) {float(arrays['lime__fx'][position]):.4g}" in caption


def test_a_run_without_predictions_says_so_and_shows_global_importance(trained, tmp_path, monkeypatch):
    # `families = ["attributions"]`: no predictions.npz, which the row list reads; the page says why
    # instead of showing a read error as if the run were damaged
    root = small_adult_run(trained, tmp_path, monkeypatch, "ig", 'seed = 0\nfamilies = ["attributions"]\n\n'
                           '[attributions]\nmethods = ["integrated_gradients"]\nsamples = 6\nquality = false\n'
                           'stability_rows = 3\nn_boot = 20\n')
    assert not (root / "ig" / "arrays" / "predictions.npz").exists()
    at = ok(app("explanations", "ig"))
    assert not at.error, texts(at.error)
    assert any("did not run the performance family" in t for t in texts(at.info))
    importance = frame(at, "feature", "mean |attribution|")
    expected = findings_of(root, "ig")["details"]["attributions"]["importance"]["integrated_gradients"]["mean"]
    assert sorted(importance["mean |attribution|"].to_numpy(dtype=float)) == pytest.approx(sorted(expected))
