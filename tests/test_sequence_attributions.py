"""Time × feature attributions of sequence models (issue 20, item 4): the layout is the order the
GRU reads its input in; the attributions add up over time steps and features to the explained
output change within integrated gradients' completeness tolerance; the profiles equal a
recomputation here; the first-time-step check fires on a model built to depend on the last step
only through a gate that the zeros baseline opens (the artefact), and neither with a train-mean
baseline nor without the gate; its figures equal captum's IntegratedGradients run here; the
audit of a digits GRU writes the finding, the heat maps and schema-valid details."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch
from torch import nn

from scrutiny.audit.attributions.feature_space import patch_groups
from scrutiny.audit.attributions.methods import ExplainedOutput, attribute
from scrutiny.audit.attributions.sequence import (
    FIRST_STEP_METHODS,
    first_step,
    is_sequence_model,
    shuffled_time_baseline,
    step_totals,
    time_feature,
    time_feature_summary,
    time_orders,
)
from scrutiny.audit.run.family import AuditContext, schema_path
from scrutiny.audit.run.policy import CHECK_INFO, load_policy
from scrutiny.audit.run.run_folder import to_json
from scrutiny.models.architectures import RowGRU

T, F = 6, 4          # the gated model's time steps and features
TOLERANCE = 0.01     # integrated gradients' completeness tolerance (attribute's default)


class GatedLastStep(nn.Module):
    """Reads (1, T, F) inputs as T steps of F features and explains, as class 1's log-odds, the
    last step's content times a gate on the first step's mean: sigmoid(20 (m − 0.5)), saturated
    (≈ 1) for every input whose first step lies in [1, 2], about 0 at a blank input. The output
    depends on the first step only through that gate, which no real input moves."""

    def __init__(self, gate: bool = True):
        super().__init__()
        self.gate = gate
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, F), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x[:, 0]
        content = steps[:, -1] @ self.w - 3.0
        gate = torch.sigmoid(20 * (steps[:, 0].mean(dim=1) - 0.5)) if self.gate else torch.ones_like(content)
        score = gate * content
        return torch.stack([torch.zeros_like(score), score], dim=1)


@pytest.fixture(scope="module")
def gated_data():
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 2, size=(30, 1, T, F)).astype(np.float32)
    background = rng.uniform(1, 2, size=(200, 1, T, F)).astype(np.float32)
    return X, background, patch_groups((1, T, F))


def _gru(shape, seed=0):
    torch.manual_seed(seed)
    return RowGRU(input_shape=shape, n_classes=3, hidden_size=8, dropout=0.0).eval()


def test_the_layout_is_the_order_the_gru_reads_its_input_in():
    shape = (2, 5, 3)
    model = _gru(shape)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(4, *shape)).astype(np.float32))
    seen = {}

    def keep(module, inputs, output):  # what the GRU reads, step by step
        seen["sequence"] = inputs[0].detach()

    model.gru.register_forward_hook(keep)
    model(x)
    np.testing.assert_array_equal(time_feature(x.numpy()), seen["sequence"].numpy())
    assert is_sequence_model(model) and not is_sequence_model(nn.Linear(3, 2))


def test_attributions_add_up_over_time_and_features_to_the_output_change():
    shape = (1, 8, 8)
    model = _gru(shape)
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 1, size=(10, *shape)).astype(np.float32)
    space = patch_groups(shape)
    found = attribute(model, X, method="integrated_gradients", space=space, background=X, baselines="zeros")
    per_time, per_feature = step_totals(found.values)
    # per step and per feature, summed here over the image's rows and columns
    np.testing.assert_allclose(per_time, found.values[:, 0].sum(axis=2), rtol=1e-12)
    np.testing.assert_allclose(per_feature, found.values[:, 0].sum(axis=1), rtol=1e-12)
    # the explained output change, computed here
    with torch.no_grad():
        wrapped = ExplainedOutput(model)
        fx = wrapped(torch.from_numpy(X)).double().numpy()
        f0 = wrapped(torch.zeros(1, *shape)).double().numpy()
    rows = np.arange(len(X))
    change = fx[rows, found.target] - f0[0, found.target]
    assert np.abs(change).min() > 1e-3
    for totals in (per_time.sum(axis=1), per_feature.sum(axis=1)):
        assert np.all(np.abs(totals - change) <= TOLERANCE * np.abs(change))
    # and captum's own integrated gradients gives the same per-step attributions
    from captum.attr import IntegratedGradients

    captum = IntegratedGradients(wrapped).attribute(torch.from_numpy(X), baselines=torch.zeros(1, *shape),
                                                    target=torch.from_numpy(found.target), n_steps=512)
    np.testing.assert_allclose(step_totals(captum.detach().numpy())[0], per_time,
                               atol=2e-3 * float(np.abs(per_time).max()))


def test_the_profiles_equal_a_recomputation():
    values = np.random.default_rng(3).normal(size=(7, 2, 4, 3))
    values[3] = 0.0  # nothing to share out: left out
    summary = time_feature_summary(values)
    kept = [i for i in range(7) if i != 3]
    heat = np.zeros((4, 6))
    time_share = np.zeros(4)
    feature_share = np.zeros(6)
    for i in kept:
        row = np.zeros((4, 6))
        for c in range(2):
            for t in range(4):
                for w in range(3):
                    row[t, c * 3 + w] = abs(values[i, c, t, w])
        heat += row / len(kept)
        time_share += row.sum(axis=1) / row.sum() / len(kept)
        feature_share += row.sum(axis=0) / row.sum() / len(kept)
    assert summary.n == 6
    np.testing.assert_allclose(summary.mean_abs, heat, rtol=1e-12)
    np.testing.assert_allclose(summary.time_share, time_share, rtol=1e-12)
    np.testing.assert_allclose(summary.feature_share, feature_share, rtol=1e-12)
    assert summary.time_share.sum() == pytest.approx(1.0) and summary.feature_share.sum() == pytest.approx(1.0)


def test_the_shuffled_baseline_holds_each_rows_own_steps_in_another_order(gated_data):
    X = gated_data[0]
    orders = time_orders(len(X), T, seed=5)
    np.testing.assert_array_equal(orders, time_orders(len(X), T, seed=5))
    assert not np.array_equal(orders, time_orders(len(X), T, seed=6))
    assert np.all(orders != np.arange(T)) and np.all(np.sort(orders, axis=1) == np.arange(T))
    base = shuffled_time_baseline(X, orders)
    for i in range(len(X)):
        for t in range(T):
            np.testing.assert_array_equal(base[i, :, t], X[i, :, orders[i, t]])


def _finding(found):
    from scrutiny.audit.attributions.family import _first_step_finding

    context = AuditContext(model=None, dataset=None, preprocessor=None, config=None, policy=load_policy(), device="cpu")
    return _first_step_finding(context, found)


def _check(model, data, baselines):
    X, background, space = data
    own = attribute(model, X, method="integrated_gradients", space=space, background=background, baselines=baselines,
                    target=1)
    return own, first_step(model, X, own.values, own.target, method="integrated_gradients", space=space,
                           background=background, baseline=own.baseline, rows=20, seed=0)


def _captum_shares(model, x, baselines):
    from captum.attr import IntegratedGradients

    values = IntegratedGradients(ExplainedOutput(model)).attribute(
        torch.from_numpy(x), baselines=torch.from_numpy(np.ascontiguousarray(baselines, dtype=np.float32)), target=1,
        n_steps=256).detach().double().numpy()
    magnitude = np.abs(values).sum(axis=3)[:, 0]  # (N, T)
    return magnitude[:, 0] / magnitude.sum(axis=1)


def test_the_first_step_check_fires_only_when_the_baseline_creates_the_artefact(gated_data):
    gated = GatedLastStep().eval()
    policy = load_policy().threshold("attributions.first_step")
    _, artefact = _check(gated, gated_data, "zeros")
    _, realistic = _check(gated, gated_data, "train_mean")
    _, ungated = _check(GatedLastStep(gate=False).eval(), gated_data, "zeros")
    fired = _finding(artefact)
    assert fired.status == "fail" and fired.id == "attributions.first_step[integrated_gradients]"
    assert artefact.value > policy["fail_above"] and artefact.n == 20
    assert artefact.shuffled_mean < 1e-3  # the shuffled baseline keeps the gate shut: no weight on step 0
    for quiet in (realistic, ungated):
        assert _finding(quiet).status == "pass" and abs(quiet.value) < 1e-3
    # recomputed with captum's IntegratedGradients on the same rows and shuffled orders
    X = gated_data[0][artefact.positions]
    s0 = _captum_shares(gated, X, np.zeros((1, 1, T, F)))
    s0_shuffled = _captum_shares(gated, X, shuffled_time_baseline(X, artefact.orders))
    np.testing.assert_allclose(artefact.audit_share, s0, atol=1e-3)
    np.testing.assert_allclose(artefact.shuffled_share, s0_shuffled, atol=1e-3)
    assert artefact.value == pytest.approx(float(np.mean(s0 - s0_shuffled)), abs=1e-3)
    info = CHECK_INFO["attributions.first_step"]
    assert info.about == "evidence" and info.subject == "method"
    assert FIRST_STEP_METHODS == ("integrated_gradients", "deeplift")


def test_the_digits_gru_audit_records_the_heat_maps_the_check_and_schema_valid_details(trained):
    from scrutiny.audit.attributions.details import ARRAYS, TIME_FEATURE_SUFFIX, AttributionsDetails
    from scrutiny.audit.attributions.family import run
    from scrutiny.audit.run.config import AttributionsConfig, AuditConfig

    dataset, result, _ = trained("digits", "gru")
    config = AuditConfig(seed=0, families=["attributions"], chunk_rows=8,
                         attributions=AttributionsConfig(methods=["integrated_gradients", "saliency"], samples=12,
                                                         quality_samples=3, stability_rows=6, n_boot=20))
    context = AuditContext(model=result.model.eval(), dataset=dataset, preprocessor=dataset.preprocessor,
                           config=config, policy=load_policy(), device="cpu")
    family = run(context)
    document = json.loads(to_json(family.details.to_dict()))
    jsonschema.validate(document, json.loads(schema_path("attributions").read_text(encoding="utf-8")))
    sequence = AttributionsDetails.from_dict(document).sequence
    assert sequence is not None and sequence.time_steps == [f"t{t}" for t in range(8)]
    assert sequence.features == [f"col{w}" for w in range(8)]
    stored = family.arrays[ARRAYS]
    for method in ("integrated_gradients", "saliency"):
        heat = stored[method + TIME_FEATURE_SUFFIX]
        pixels = np.abs(stored[f"{method}__pixels"][:, 0].astype(np.float64))  # (N, T=rows, F=columns)
        np.testing.assert_allclose(heat, pixels.mean(axis=0), rtol=1e-5)
        shares = pixels.sum(axis=2) / pixels.sum(axis=(1, 2))[:, None]
        np.testing.assert_allclose(sequence.time_share[method], shares.mean(axis=0), rtol=1e-5)
        assert sum(sequence.time_share[method]) == pytest.approx(1.0)
    by_id = {f.id: f for f in family.findings}
    assert "attributions.first_step[saliency]" not in by_id  # no baseline: no artefact to check
    finding = by_id["attributions.first_step[integrated_gradients]"]
    entry = sequence.first_step["integrated_gradients"]
    assert finding.value == entry.difference == pytest.approx(entry.audit_share - entry.shuffled_share)
    assert entry.baseline == "zeros" and len(entry.rows) == 6 and 0 < entry.n <= 6
    # the audit's s0 of those rows, recomputed from the stored attributions
    own = np.abs(stored["integrated_gradients__pixels"][entry.rows, 0].astype(np.float64)).sum(axis=2)
    assert entry.audit_share == pytest.approx(float(np.mean(own[:, 0] / own.sum(axis=1))), abs=1e-6)
    assert finding.status in ("pass", "warn", "fail")


def test_a_model_that_is_not_a_sequence_model_gets_no_time_feature_view(load):
    from scrutiny.audit.attributions.details import ARRAYS, TIME_FEATURE_SUFFIX
    from scrutiny.audit.attributions.family import run
    from scrutiny.audit.run.config import AttributionsConfig, AuditConfig
    from scrutiny.models.architectures import build_model

    dataset = load("digits")
    torch.manual_seed(0)
    model = build_model("cnn", input_shape=(1, 8, 8), n_classes=10).eval()
    config = AuditConfig(seed=0, families=["attributions"],
                         attributions=AttributionsConfig(methods=["integrated_gradients"], samples=4, quality=False,
                                                         n_boot=10))
    context = AuditContext(model=model, dataset=dataset, preprocessor=dataset.preprocessor, config=config,
                           policy=load_policy(), device="cpu")
    family = run(context)
    assert family.details.sequence is None
    assert not any(k.endswith(TIME_FEATURE_SUFFIX) for k in family.arrays[ARRAYS])
    assert not any(f.check == "attributions.first_step" for f in family.findings)


SEQUENCE_CONFIG = """
seed = 0
families = ["performance", "attributions"]

[attributions]
methods = ["integrated_gradients", "saliency"]
samples = 12
quality_samples = 3
stability_rows = 6
n_boot = 20
"""


@pytest.fixture(scope="module")
def gru_runs(trained, tmp_path_factory):
    """A runs folder holding "gru": the digits GRU audited (performance and attributions, small) and
    reported, under a policy that fails the first-time-step check at any value above -1, so that the
    report shows its summary sentence and remediation block."""
    from scrutiny.cli import main

    _, _, checkpoint = trained("digits", "gru")
    work = tmp_path_factory.mktemp("sequence").resolve()
    config = work / "audit.toml"
    config.write_text(SEQUENCE_CONFIG)
    policy = work / "policy.toml"
    policy.write_text('version = 1\n\n[checks."attributions.first_step"]\nfail_above = -1.0\n')
    out = work / "runs" / "gru"
    assert main(["audit", str(checkpoint), "--data", "digits", "--config", str(config), "--policy", str(policy),
                 "--out", str(out), "--device", "cpu"]) == 1
    assert main(["report", str(out), "--format", "html,md"]) == 0
    return work / "runs"


def test_the_report_shows_the_time_profile_and_the_check_from_the_run(gru_runs):
    from scrutiny.audit.run.run_folder import load_run

    from .report_runs import (
        check_rounding,
        data_uri_bytes,
        md_section,
        md_tables,
        num_spans,
        parse_html,
        pointer,
        section,
    )

    out = gru_runs / "gru"
    findings = load_run(out).findings
    sequence = findings["details"]["attributions"]["sequence"]
    html = parse_html((out / "report" / "report.html").read_text(encoding="utf-8"))
    shown = [n for n in num_spans(html) if "/sequence/" in n.attrs["data-path"]]
    paths = {n.attrs["data-path"] for n in shown}
    assert "/details/attributions/sequence/first_step/integrated_gradients/difference" in paths
    for n in shown:
        check_rounding(n.text(), pointer(findings, n.attrs["data-path"]), n.attrs["data-path"])
    # the failed check: its sentence in the summary, its words and cause in the explanations' remediation block
    from scrutiny.reports.remediation import _EXPLANATION_WORDS

    text = html.text()
    assert "of its explanations on a sequence's first time step that it does not put there" in text
    remedy = next(d for d in section(html, "findings").iter("div") if "remedy" in d.classes()
                  and "attributions.first_step[integrated_gradients]" in d.text())
    assert _EXPLANATION_WORDS["attributions.first_step"] in " ".join(remedy.text().split())
    assert "a train_mean baseline avoids it" in " ".join(remedy.text().split())
    figure = next(img for img in html.iter("img") if img.attrs.get("alt") == "time by feature attributions")
    assert data_uri_bytes(figure.attrs["src"])[:8] == b"\x89PNG\r\n\x1a\n"
    md = md_section((out / "report" / "report.md").read_text(encoding="utf-8"), "Explainability")
    profile = next(t for t in md_tables(md) if t[0].startswith("| method | t0 |"))
    assert len(profile) == 4
    for line, method in zip(profile[2:], ("integrated_gradients", "saliency"), strict=True):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert cells[0] == method
        for text, value in zip(cells[1:], sequence["time_share"][method], strict=True):
            check_rounding(text, value, f"{method} time profile")


def test_the_app_shows_the_time_profile_and_the_check_when_the_run_has_the_heat_maps(gru_runs, tmp_path, monkeypatch):
    import hashlib
    import shutil

    from .test_app import app, findings_of, frame, ok, texts

    details = findings_of(gru_runs, "gru")["details"]["attributions"]["sequence"]
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(gru_runs))
    at = ok(app("explanations", "gru"))
    assert "Time steps and features" in texts(at.subheader)
    profile = frame(at, "method", *details["time_steps"], exact=True)
    assert profile["method"].tolist() == list(details["time_share"])
    for _, row in profile.iterrows():
        np.testing.assert_array_equal(row[details["time_steps"]].to_numpy(dtype=float),
                                      details["time_share"][row["method"]])
    checks = frame(at, "method", "difference")
    entry = details["first_step"]["integrated_gradients"]
    assert checks["method"].tolist() == ["integrated_gradients"]
    assert checks["difference"].tolist() == [entry["difference"]]
    assert checks["first step's share (audit's baseline)"].tolist() == [entry["audit_share"]]
    assert checks["first step's share (shuffled time order)"].tolist() == [entry["shuffled_share"]]
    # a copy of the run without the heat maps (a run written before they were stored) shows no such view
    root = tmp_path / "runs"
    shutil.copytree(gru_runs / "gru", root / "old", ignore=shutil.ignore_patterns("report"))
    path = root / "old" / "arrays" / "attributions.npz"
    with np.load(path) as z:
        kept = {k: z[k] for k in z.files if not k.endswith("__time_feature")}
    np.savez(path, **kept)
    manifest = json.loads((root / "old" / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["arrays/attributions.npz"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / "old" / "manifest.json").write_text(to_json(manifest), encoding="utf-8")
    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(root))
    at = ok(app("explanations", "old"))
    assert "Time steps and features" not in texts(at.subheader)
