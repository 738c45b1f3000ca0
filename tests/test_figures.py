"""The audit's figures as the report prints them (issue 18, item 6): image figures at the text
width with labels of at least 7 pt there, colour bars on the heat maps and perturbations, the
policy's fail and warn regions on the fairness figure, and group names in words."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from PIL import Image

from scrutiny.audit import plots
from scrutiny.audit.run.details import Estimate

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "reports" / "templates"
MM = 25.4
SAVED_DPI = 150      # save_figure's PNG resolution
CSS_DPI = 96         # a browser's (and WeasyPrint's) pixels per inch: an <img>'s own size
MIN_PRINTED_PT = 7.0


def text_width_mm() -> float:
    """A4's 210 mm less the left and right margins of the report's @page rule."""
    css = (TEMPLATES / "report.html.j2").read_text()
    found = re.search(r"@page\s*\{[^}]*size:\s*A4;\s*margin:\s*([\d.]+)mm\s+([\d.]+)mm\s+([\d.]+)mm\s+([\d.]+)mm", css)
    assert found, "reports/templates/report.html.j2: expected an @page rule with size A4 and four margins in mm"
    return 210.0 - float(found[2]) - float(found[4])


def max_height_mm(alt: str) -> float:
    """The most height the HTML report gives the figure whose <img> has ``alt``: its own style,
    else the ``figure img`` rule."""
    css = (TEMPLATES / "report.html.j2").read_text()
    default = re.search(r"figure img\s*\{[^}]*max-height:\s*([\d.]+)mm", css)
    assert default, "reports/templates/report.html.j2: expected a 'figure img' rule with max-height in mm"
    for template in sorted((TEMPLATES / "html").glob("*.j2")):
        tag = re.search(rf'<img alt="{re.escape(alt)}"[^>]*>', template.read_text())
        if tag:
            own = re.search(r"max-height:\s*([\d.]+)mm", tag[0])
            return float(own[1]) if own else float(default[1])
    raise AssertionError(f"reports/templates/html: no <img alt={alt!r}>")


def printed_scale(fig, path: Path, alt: str) -> float:
    """Printed size / drawn size of ``fig`` saved by save_figure and shown as the report shows it:
    at most the text width, at most its own pixel size, at most the template's max-height."""
    plots.save_figure(fig, path)
    width_px, height_px = Image.open(path).size
    saved_width_in = width_px / SAVED_DPI
    printed_width_in = min(text_width_mm() / MM, width_px / CSS_DPI, max_height_mm(alt) / MM * width_px / height_px)
    return printed_width_in / saved_width_in


def assert_readable(fig, path: Path, alt: str) -> None:
    scale = printed_scale(fig, path, alt)
    shown = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert shown
    small = [(t.get_text(), round(t.get_fontsize() * scale, 2)) for t in shown if t.get_fontsize() * scale < MIN_PRINTED_PT]
    assert not small, f"{path.name}: labels under {MIN_PRINTED_PT} pt in print: {small[:5]}"


def colour_bar(fig, im):
    """The colour bar that shows ``im``'s colours: the one drawn for a mappable of the same scale."""
    (bar,) = [other.colorbar for ax in fig.axes for other in ax.get_images()
              if other.colorbar is not None and other.norm is im.norm]
    return bar


def images_and_attributions(n=6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, 8, 8))
    values = {"integrated_gradients": rng.normal(0, 0.3, (n, 1, 8, 8)),
              "occlusion": rng.normal(0.5, 2.0, (n, 1, 8, 8))}
    values["occlusion"][n // 2, 0, 3, 4] = -9.5  # one extreme, negative: the bar must reach it
    return images, values


def test_text_width_is_the_reports():
    assert plots.TEXT_WIDTH == pytest.approx(text_width_mm() / MM, abs=1e-9)


def test_heat_maps_have_symmetric_colour_bars_holding_every_attribution(tmp_path):
    images, values = images_and_attributions()
    fig = plots.heatmap_figure(images, values, titles=[f"true {i}, explained {i}" for i in range(6)],
                               outputs={"integrated_gradients": "logit", "occlusion": "probability"})
    assert fig.get_figwidth() == pytest.approx(text_width_mm() / MM, abs=1e-9)
    drawn = [im for ax in fig.axes for im in ax.get_images()]
    for method, attributions in values.items():
        heats = attributions.sum(axis=1)
        extreme = np.abs(heats).max()
        rows = [im for im in drawn if im.get_cmap().name == plots.ATTRIBUTION_COLOURS
                and any(np.array_equal(im.get_array(), h) for h in heats)]
        assert len(rows) == len(heats), method  # every sample's heat map of this method is drawn
        for im in rows:
            low, high = im.get_clim()
            assert low == -high and high >= extreme, (method, low, high, extreme)
            assert high == pytest.approx(extreme)  # the scale is the row's own, not a loose one
            bar = colour_bar(fig, im)
            assert (bar.vmin, bar.vmax) == (low, high)
            assert "attribution" in bar.ax.get_ylabel()
    bars = {im.colorbar.ax.get_ylabel() for im in drawn if im.colorbar is not None}
    assert bars == {"pixel value", "attribution\n(logit)", "attribution\n(probability)"}
    assert_readable(fig, tmp_path / "heatmaps.png", "heat maps")


def test_heat_maps_of_all_zero_attributions_keep_a_symmetric_bar(tmp_path):
    images, _ = images_and_attributions(n=2)
    fig = plots.heatmap_figure(images, {"saliency": np.zeros((2, 1, 8, 8))})
    (im, *_) = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == plots.ATTRIBUTION_COLOURS]
    low, high = im.get_clim()
    assert low == -high and high > 0


@pytest.mark.parametrize("n", [1, 3, 6])
def test_adversarial_grid_is_text_width_with_a_perturbation_bar_in_pixel_units(tmp_path, n):
    rng = np.random.default_rng(n)
    classes = [str(i) for i in range(10)]
    examples = []
    for i in range(n):
        x = rng.random((1, 8, 8))
        eps = [0.05, 0.1, 0.2][i % 3]
        x_adv = np.clip(x + rng.choice([-eps, eps], x.shape), 0, 1)
        examples.append(SimpleNamespace(row=i, attack="pgd", eps=eps, label=i, before=i, after=(i + 3) % 10,
                                        x=x, x_adv=x_adv))
    fig = plots.adversarial_figure(examples, classes)
    assert fig.get_figwidth() == pytest.approx(text_width_mm() / MM, abs=1e-9)
    changes = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == plots.ATTRIBUTION_COLOURS]
    assert len(changes) == n
    extreme = max(np.abs(e.x_adv - e.x).mean(axis=0).max() for e in examples)
    for im in changes:
        low, high = im.get_clim()
        assert low == -high == pytest.approx(-extreme)
        assert "pixel units" in colour_bar(fig, im).ax.get_ylabel()
    titles = [ax.get_title() for ax in fig.axes]
    for e in examples:
        assert f"true {e.label}\npredicted {e.before}" in titles
        assert f"pgd, eps {e.eps:g}\npredicted {e.after}" in titles
    assert_readable(fig, tmp_path / "adversarial.png", "adversarial examples")


def comparison(subject: str, shift: float):
    values = {"statistical_parity_difference": -0.19, "equal_opportunity_difference": -0.07,
              "average_odds_difference": 0.03, "equalized_odds_difference": 0.09, "predictive_parity_difference": 0.0,
              "accuracy_difference": 0.11, "disparate_impact": 0.55, "false_negative_rate_ratio": 1.2,
              "false_positive_rate_ratio": 0.3}
    return SimpleNamespace(subject=subject, metrics={k: Estimate(v + shift, v + shift - 0.02, v + shift + 0.02)
                                                    for k, v in values.items()})


def default_thresholds() -> dict[str, dict[str, float]]:
    """The shipped policy's bounds of the gated fairness checks, read from the TOML file itself."""
    with open(ROOT / "audit" / "run" / "default_policy.toml", "rb") as handle:
        checks = tomllib.load(handle)["checks"]
    names = ("disparate_impact", "statistical_parity_difference", "equal_opportunity_difference",
             "average_odds_difference")
    return {n: {k: v for k, v in checks[f"fairness.{n}"].items() if k.startswith(("fail_", "warn_"))} for n in names}


def bands(fig) -> dict[tuple[str, str], tuple]:
    """The policy regions drawn: (metric, bound) -> (x from, x to, y from, y to, their axes)."""
    out = {}
    for ax in fig.axes:
        for patch in ax.patches:
            gid = patch.get_gid() or ""
            if gid.startswith("policy:"):
                _, metric, key = gid.split(":")
                x, y = patch.get_xy()
                out[metric, key] = (x, x + patch.get_width(), y, y + patch.get_height(), ax)
    return out


@pytest.mark.parametrize("thresholds", [default_thresholds(), {
    "disparate_impact": {"fail_below": 0.7, "warn_below": 0.85},
    "statistical_parity_difference": {"fail_above": 0.2, "warn_above": 0.08, "warn_below": -0.3},
}])
def test_fairness_figure_shades_the_policys_fail_and_warn_regions(tmp_path, thresholds):
    fig = plots.fairness_figure([comparison("sex", 0.0), comparison("race", 0.02), comparison("sex × race", -0.01)],
                                thresholds=thresholds)
    assert fig.get_figwidth() == pytest.approx(text_width_mm() / MM, abs=1e-9)
    drawn = bands(fig)
    expected = {(m, k) for m, bounds in thresholds.items() for k in bounds}
    assert set(drawn) == expected  # every bound opens a region; no metric the policy leaves alone is shaded
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    for (metric, key), (start, end, y0, y1, ax) in drawn.items():
        bounds = thresholds[metric]
        low, high = ax.get_xlim()
        side = key.split("_")[1]
        fail, warn = bounds.get(f"fail_{side}"), bounds.get(f"warn_{side}")
        outer = low if side == "below" else high  # where a region without a fail bound beyond it ends
        opens = outer if key.startswith("fail") or fail is None else fail  # the region's far edge
        closes = fail if key.startswith("fail") else warn                    # its edge at the bound
        assert (start, end) == pytest.approx(tuple(sorted((opens, closes)))), (metric, key, start, end)
        row = [i for i, label in enumerate(labels) if label.split("\n")[0] == metric.replace("_", " ")]
        assert len(row) == 1 and y0 < row[0] < y1 and y1 - y0 <= 1.0, (metric, y0, y1)
        assert low < min(v for v in bounds.values()) and max(v for v in bounds.values()) < high  # every bound visible
    assert {f"{level} region (policy)" for level in ("fail", "warn")} <= {t.get_text() for t in fig.legends[0].get_texts()}
    for label in labels:
        gated = any(label.split("\n")[0] == m.replace("_", " ") for m in thresholds)
        assert label.endswith("(not gated)") != gated, label
    # the interval of every comparison is drawn, as before
    errorbars = [c for ax in fig.axes for c in ax.containers]
    assert sorted({c.get_label() for c in errorbars}) == ["race", "sex", "sex × race"]
    assert_readable(fig, tmp_path / "fairness.png", "fairness metrics")


def test_policy_bands_clip_to_the_axis():
    assert plots.policy_bands({"fail_below": 0.8, "warn_below": 0.9, "fail_above": 1.25, "warn_above": 1.11},
                              0.85, 1.2) == [("warn_below", 0.85, 0.9), ("warn_above", 1.11, 1.2)]
    assert plots.policy_bands({"warn_above": 0.05}, -1.0, 1.0) == [("warn_above", 0.05, 1.0)]
    assert plots.policy_bands({}, -1.0, 1.0) == []


def test_robustness_figures_state_the_unit_as_the_curve_does():
    curve = [SimpleNamespace(attack="pgd", eps=0.1, robust_accuracy=0.5, clean_accuracy=0.9),
             SimpleNamespace(attack="worst case", eps=0.1, robust_accuracy=0.5, clean_accuracy=0.9)]
    ours = plots.robustness_figure(curve, norm="linf", clean_accuracy=0.9, unit="pixel units").axes[0].get_xlabel()
    assert ours == "eps (L∞, pixel units)"
    minimal = plots.min_eps_figure(np.array([0.05, 0.2, np.inf]), norm="linf", search_eps=1.0, unit="pixel units")
    assert minimal.axes[0].get_xlabel().startswith("smallest flipping eps (L∞, pixel units)")
    certification = SimpleNamespace(curve_radius=[0.1, 0.3], curve_accuracy=[0.8, 0.4], table=[], gated_radius=0.25,
                                    units="pixel units", sigma=0.25)
    assert plots.certified_figure(certification).axes[0].get_xlabel() == "radius (L2, pixel units)"


# ---------------------------------------------------------------- group names in a new run

def groups_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "east", "south", "west"], n)
    race = rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2])
    sex = rng.choice(["f", "m"], n)
    age = rng.integers(18, 70, n)
    x = rng.standard_normal(n)
    label = np.where(rng.random(n) < 1 / (1 + np.exp(-(x + 0.5 * np.isin(region, ["north", "east"])))), "yes", "no")
    return pd.DataFrame({"x": x, "region": region, "race": race, "sex": sex, "age": age, "label": label})


@pytest.fixture(scope="module")
def new_run(tmp_path_factory):
    from scrutiny.audit import run_audit
    from scrutiny.models import DatasetSpec, Feature, ProtectedAttribute
    from scrutiny.models.datasets import tabular_dataset
    from scrutiny.models.predictions import Predictions

    spec = DatasetSpec(name="groups", task="tabular", label="label", classes=("no", "yes"), favourable_label="yes",
                       features=(Feature("x", "numeric"), Feature("region", "categorical"),
                                 Feature("race", "categorical"), Feature("sex", "binary"), Feature("age", "numeric")),
                       protected=(ProtectedAttribute("region", ("north", "east")),
                                  ProtectedAttribute("race", reference="A"), ProtectedAttribute("sex", ("m",)),
                                  ProtectedAttribute("age", privileged_min=40)))
    dataset = tabular_dataset(spec, groups_frame(2000, 1), groups_frame(2000, 2), hashlib.sha256(b"groups").hexdigest())
    score = 1 / (1 + np.exp(-dataset.test.X["x"].to_numpy()))
    predictions = Predictions(decisions=(score > 0.5).astype(np.int64), scores=score, scores_are_probabilities=True)
    out = tmp_path_factory.mktemp("runs") / "groups"
    result = run_audit(None, dataset, predictions=predictions, out=out, progress=False,
                       config={"families": ["fairness"], "fairness": {"n_boot": 20}})
    return result, json.loads((out / "findings.json").read_text())


def group_texts(findings: dict) -> list[str]:
    """Every text of a run's findings that names a group: subjects, explanations, the comparison's
    group, and the fairness details' attributes, groups and categories."""
    texts = []
    for f in findings["findings"]:
        texts += [f.get("subject") or "", f.get("explanation") or "", (f.get("comparison") or {}).get("group", "")]
    details = findings["details"]["fairness"]
    for entry in details["data_bias"] + details["model"]:
        texts += [entry["attribute"], entry["privileged"], entry.get("compared") or ""]
        texts += [level["value"] for level in entry["privileged_levels"] + (entry.get("compared_levels") or [])]
    for entry in details["impact_ratios"] + (details.get("scoring_rates") or []):
        texts += [entry["attribute"], entry["category"]] + [level["value"] for level in entry["levels"]]
    return [t for t in texts if t]


def test_no_group_name_in_a_new_run_is_set_notation(new_run):
    _, findings = new_run
    texts = group_texts(findings)
    assert len(texts) > 50
    assert not [t for t in texts if "{" in t or "}" in t]
    privileged = {entry["privileged"] for entry in findings["details"]["fairness"]["model"]}
    assert {"region: north or east", "sex: m", "age ≥ 40", "region: north or east and age ≥ 40", "A",
            "A and sex: m"} <= privileged
    compared = {entry.get("compared") for entry in findings["details"]["fairness"]["model"]}
    assert {"B", "C", "region: neither north nor east and B", "C and age < 40", "B and sex: not m"} <= compared
    assert {r["category"] for r in findings["details"]["fairness"]["impact_ratios"] if r["attribute"] == "age"} \
        == {"age ≥ 40", "age < 40"}


def test_a_new_runs_fairness_figure_shades_the_policy_it_was_gated_by(new_run):
    result, _ = new_run
    drawn = bands(result.figures["figures/fairness.png"])
    policy = default_thresholds()
    assert set(drawn) == {(m, k) for m, bounds in policy.items() for k in bounds}
    for (metric, key), (start, end, *_) in drawn.items():
        assert policy[metric][key] in (start, end), (metric, key, start, end)
    assert drawn["disparate_impact", "warn_below"][:2] == (policy["disparate_impact"]["fail_below"],
                                                          policy["disparate_impact"]["warn_below"])


def test_a_run_written_before_keeps_its_group_names():
    """An older run's set notation loads (through the upgrade a run folder's details go through)
    and is shown as it was written; so does one written before the levels were recorded."""
    from scrutiny.audit.fairness.details import FairnessDetails
    from scrutiny.audit.run.family import upgrade_details, validate_details

    old = {"attribute": "sex × race", "privileged": "sex in {Male} and race in {White}",
           "privileged_levels": [{"attribute": "sex", "value": "sex in {Male}"},
                                 {"attribute": "race", "value": "race in {White}"}],
           "n_privileged": 10, "n_unprivileged": 20, "metrics": {}, "per_group": {}, "warnings": []}
    without_levels = {k: v for k, v in old.items() if k != "privileged_levels"}
    for entry in (old, without_levels):
        document = {"fairness": {"confidence": 0.95, "data_bias": [], "model": [entry], "impact_ratios": [],
                                 "consistency": None, "warnings": [], "settings": {}}}
        upgraded = upgrade_details(document)
        validate_details(upgraded)
        (back,) = FairnessDetails.from_dict(upgraded["fairness"]).model
        assert back.privileged == "sex in {Male} and race in {White}" and back.subject == "sex × race"
        assert back.groups_in_words[1] == "the privileged group (sex in {Male} and race in {White})"
        assert [level.value for level in back.privileged_levels] == ["sex in {Male}", "race in {White}"]
