"""`scrutiny audit` end to end: the run folder, the values behind each finding, determinism,
policy gating, atomic writes, corrupt run folders and a corpus of bad input.

The expensive audits (Adult MLP, digits CNN, small configs) run once per module in fixtures;
the tests read their run folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import shutil
import time
import tomllib
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from scrutiny.audit.run.findings import BOUNDS, status_of, validate_findings
from scrutiny.audit.run.policy import load_policy
from scrutiny.audit.run.run_folder import RunError, list_runs, load_run
from scrutiny.cli import main
from scrutiny.errors import InputError

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

AUDIT_DIR = Path(__file__).resolve().parents[1] / "audit" / "run"
SCHEMA_PATH = AUDIT_DIR / "findings.schema.json"
DEFAULT_POLICY_PATH = AUDIT_DIR / "default_policy.toml"

TABULAR = """
seed = {seed}

[attributions]
methods = ["integrated_gradients", "kernel_shap"]
samples = 12
quality_samples = 6
n_boot = 50

[robustness]
attacks = ["pgd", "gaussian"]
eps = [0.1, 0.5]
samples = 40
steps = 5
queries = 50
detector = false

[fairness]
n_boot = 50
"""

IMAGE = """
seed = {seed}

[attributions]
methods = ["integrated_gradients", "saliency"]
samples = 12
quality_samples = 6
n_boot = 50

[robustness]
attacks = ["pgd", "gaussian"]
samples = 40
steps = 5
queries = 50
detector = false
"""

# for the interrupted and the overwritten runs: cheap, and performance writes a file first
CHEAP_IMAGE = """
families = ["performance", "robustness"]

[robustness]
attacks = ["gaussian"]
eps = [0.1]
samples = 10
detector = false
"""

ADULT_FAMILIES = ["performance", "attributions", "robustness", "fairness"]
DIGITS_FAMILIES = ["performance", "attributions", "robustness"]
FAIRNESS_SUBJECTS = ("sex", "race", "sex × race")
FAIRNESS_MODEL_CHECKS = ("fairness.disparate_impact", "fairness.statistical_parity_difference",
                         "fairness.equal_opportunity_difference", "fairness.average_odds_difference")


# ---------------------------------------------------------------- helpers


@dataclass
class Audit:
    """One `scrutiny audit` through main(): its arguments, exit code, output and run folder."""

    args: list[str]
    code: int
    stdout: str
    stderr: str
    path: Path

    @property
    def findings(self) -> dict:
        return json.loads((self.path / "findings.json").read_text(encoding="utf-8"))

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))

    def finding(self, finding_id: str) -> dict:
        matches = [f for f in self.findings["findings"] if f["id"] == finding_id]
        assert len(matches) == 1, (finding_id, [f["id"] for f in self.findings["findings"]])
        return matches[0]


def audit(checkpoint, data: str, out: Path, *extra) -> Audit:
    """Run `scrutiny audit` in-process, capturing what it prints (usable in module fixtures)."""
    args = ["audit", str(checkpoint), "--data", data, "--out", str(out), *map(str, extra)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(args)
    return Audit(args=args, code=code, stdout=stdout.getvalue(), stderr=stderr.getvalue(), path=out)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[Path]:
    """Hidden staging (.NAME.*.partial) or trash (.NAME.*.old) folders beside a run folder."""
    return sorted(out.parent.glob(f".{out.name}.*"))


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> str:
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error:") and line[len("error:"):].strip(), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert code == 2, (code, line)
    return line


def default_thresholds() -> dict[str, dict]:
    document = tomllib.loads(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    return {name: {k: v for k, v in table.items() if k in BOUNDS} for name, table in document["checks"].items()}


def recomputed_status(finding: dict) -> str:
    """The finding's status by ``status_of``, checked against the rule written out here."""
    value = finding["value"]
    interval = finding["interval"]
    status = status_of(math.nan if value is None else value, finding["threshold"],
                       None if interval is None else (interval["low"], interval["high"]), finding["caveats"],
                       finding.get("comparison"))
    assert status == _status_rule(finding), finding["id"]
    return status


def _status_rule(finding: dict) -> str:
    """The documented rule: a comparison whose interval is not wholly past a fail bound, and whose smaller group
    is under a minimum or whose interval holds both no difference and a failing value, is insufficient; else
    outside a fail bound fails; outside a warn bound, an interval reaching past a fail bound, no value, or any
    caveat warns; else pass."""
    t, value, interval, c = finding["threshold"], finding["value"], finding["interval"], finding.get("comparison")
    low, high = t.get("fail_below", -math.inf), t.get("fail_above", math.inf)
    if c is not None:
        clear = interval is not None and (interval["high"] < low or interval["low"] > high)
        small = c["rows"] < c["min_rows"] or c["expected_positives"] < c["min_expected_positives"]
        wide = interval is not None and interval["low"] <= c["no_difference"] <= interval["high"] and (
            interval["low"] < low or interval["high"] > high)
        if not clear and (small or wide):
            assert finding["caveats"][0].startswith("insufficient data: "), finding["id"]
            return "insufficient"
    if value is None:
        return "warn"
    if value < t.get("fail_below", -math.inf) or value > t.get("fail_above", math.inf):
        return "fail"
    if value < t.get("warn_below", -math.inf) or value > t.get("warn_above", math.inf):
        return "warn"
    if interval is not None and (interval["low"] < t.get("fail_below", -math.inf)
                                 or interval["high"] > t.get("fail_above", math.inf)):
        return "warn"
    return "warn" if finding["caveats"] else "pass"


def lenient_policy(check_names) -> str:
    """A policy whose tables for ``check_names`` no value can fail (and no warn bound)."""
    parts = ["version = 1\n"]
    for name in sorted(set(check_names)):
        parts.append(f'[checks."{name}"]\nfail_below = -1e9\nfail_above = 1e9\n')
        if name == "robustness.robust_accuracy":
            parts.append("at_eps = { image = 0.1, tabular = 0.25 }\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- the audits, once per module


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="module")
def configs(folder) -> dict[str, Path]:
    return {
        "tabular": write(folder / "config" / "tabular.toml", TABULAR.format(seed=0)),
        "tabular_seed1": write(folder / "config" / "tabular-seed1.toml", TABULAR.format(seed=1)),
        "image": write(folder / "config" / "image.toml", IMAGE.format(seed=0)),
        "cheap_image": write(folder / "config" / "cheap-image.toml", CHEAP_IMAGE),
        "tabular_perf_fair": write(folder / "config" / "tabular-pf.toml", TABULAR.format(seed=0).replace(
            "seed = 0", 'seed = 0\nfamilies = ["performance", "fairness"]')),
    }


@pytest.fixture(scope="module")
def adult(trained):
    dataset, _, checkpoint = trained("adult", "mlp")
    return dataset, checkpoint


@pytest.fixture(scope="module")
def digits(trained):
    dataset, _, checkpoint = trained("digits", "cnn")
    return dataset, checkpoint


@pytest.fixture(scope="module")
def adult_run(adult, configs, folder) -> Audit:
    return audit(adult[1], "adult", folder / "adult-run", "--config", configs["tabular"])


@pytest.fixture(scope="module")
def digits_run(digits, configs, folder) -> Audit:
    return audit(digits[1], "digits", folder / "digits-run", "--config", configs["image"])


@pytest.fixture(scope="module")
def runs(adult_run, digits_run, adult, digits):
    return {"adult": (adult_run, *adult), "digits": (digits_run, *digits)}


# ---------------------------------------------------------------- 1. end to end


@pytest.mark.parametrize("name", ["adult", "digits"])
def test_exit_code_follows_the_verdict(runs, name):
    run = runs[name][0]
    assert "Traceback" not in run.stdout + run.stderr
    assert run.code in (0, 1), run.stderr
    verdict = run.findings["verdict"]
    assert run.code == (1 if verdict == "fail" else 0), (run.code, verdict)
    assert f"verdict: {verdict}" in " ".join(run.stdout.split())
    assert str(run.path) in "".join(run.stdout.split())


@pytest.mark.parametrize("name", ["adult", "digits"])
def test_run_folder_layout_and_hashes(runs, name):
    run = runs[name][0]
    assert (run.path / "manifest.json").is_file() and (run.path / "findings.json").is_file()
    assert sorted(p.name for p in (run.path / "arrays").glob("*.npz")) == sorted(
        (["adverse_action.npz", "data_profile.npz", "fairness_groups.npz"] if name == "adult" else [])
        + ["attributions.npz", "predictions.npz", "robustness.npz"])
    figures = sorted((run.path / "figures").glob("*.png"))
    assert {"importance.png", "agreement.png", "robustness.png"} <= {p.name for p in figures}
    for figure in figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    assert leftovers(run.path) == []

    manifest = run.manifest
    listed = manifest["files"]
    # every file but the manifest is listed, and nothing listed is missing
    on_disk = {p.relative_to(run.path).as_posix() for p in run.path.rglob("*") if p.is_file()}
    assert set(listed) == on_disk - {"manifest.json"}
    assert "findings.json" in listed
    for relative, digest in listed.items():
        assert sha256(run.path / relative) == digest, relative

    opened = load_run(run.path)
    assert opened.manifest == manifest and opened.findings == run.findings
    assert opened.name == run.path.name and run.path in list_runs(run.path.parent)
    predictions = opened.arrays("arrays/predictions.npz")
    assert set(predictions) == {"y_true", "y_pred", "proba"}
    assert opened.has("arrays/robustness.npz") and not opened.has("arrays/nothing.npz")


@pytest.mark.parametrize("name", ["adult", "digits"])
def test_findings_validate_against_the_schema(runs, name):
    import jsonschema

    document = runs[name][0].findings
    validate_findings(document)
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(document))
    assert errors == [], [e.message for e in errors[:3]]
    # and the schema is not vacuous: a broken copy is rejected
    broken = json.loads(json.dumps(document))
    broken["findings"][0]["status"] = "maybe"
    assert not jsonschema.Draft202012Validator(schema).is_valid(broken)
    with pytest.raises(InputError, match="findings/0/status"):
        validate_findings(broken)


@pytest.mark.parametrize("name", ["adult", "digits"])
def test_manifest_records_the_run(runs, configs, name):
    run, dataset, checkpoint = runs[name]
    manifest = run.manifest
    families = ADULT_FAMILIES if name == "adult" else DIGITS_FAMILIES

    assert isinstance(manifest["command"], list) and manifest["command"][0] == "scrutiny"
    assert manifest["seed"] == 0 and manifest["config"]["seed"] == 0
    assert manifest["config"]["families"] == families
    assert manifest["config"]["attributions"]["samples"] == 12
    assert manifest["config"]["robustness"]["attacks"] == ["pgd", "gaussian"]
    assert manifest["format_version"] == 1

    checkpoint_manifest = json.loads((checkpoint / "manifest.json").read_text())
    weights = manifest["model"]["weights_sha256"]
    assert weights == checkpoint_manifest["weights_sha256"] == sha256(checkpoint / "weights.safetensors")
    assert manifest["model"]["kind"] == "checkpoint" and manifest["model"]["source"] == str(checkpoint)
    assert manifest["data"]["name"] == name and manifest["data"]["sha256"] == dataset.sha256
    assert manifest["data"]["n_test"] == len(dataset.test) and manifest["data"]["n_train"] == len(dataset.train)
    subject = run.findings["subject"]
    assert subject["model"]["weights_sha256"] == weights and subject["data"]["sha256"] == dataset.sha256

    for library in ("torch", "captum", "shap", "lime", "aif360"):
        assert manifest["libraries"][library] == version(library), library

    import torch

    assert manifest["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
    seconds = manifest["seconds"]
    assert set(seconds) == {*families, "total"}
    assert all(isinstance(s, (int, float)) and s >= 0 for s in seconds.values())
    assert seconds["total"] + 0.01 >= sum(seconds[f] for f in families)
    assert manifest["verdict"] == run.findings["verdict"] and manifest["counts"] == run.findings["counts"]
    assert manifest["policy"]["source"] == "default"


def test_manifest_records_the_command_given_to_main(adult_run):
    assert adult_run.manifest["command"] == ["scrutiny", *adult_run.args]


def test_digits_has_no_fairness(digits_run):
    document = digits_run.findings
    assert not any(f["family"] == "fairness" or f["check"].startswith("fairness.") for f in document["findings"])
    assert set(document["details"]) == set(DIGITS_FAMILIES)
    assert "fairness.png" not in digits_run.manifest["files"]
    assert {"heatmaps.png"} <= {p.name for p in (digits_run.path / "figures").iterdir()}


def test_adult_has_fairness_for_each_attribute_and_the_intersection(adult_run):
    document = adult_run.findings
    assert set(document["details"]) == set(ADULT_FAMILIES)
    ids = {f["id"] for f in document["findings"]}
    for subject in FAIRNESS_SUBJECTS:
        for check in (*FAIRNESS_MODEL_CHECKS, "fairness.data.disparate_impact", "fairness.impact_ratio"):
            assert f"{check}[{subject}]" in ids
    assert {f["subject"] for f in document["findings"] if f["family"] == "fairness"} == set(FAIRNESS_SUBJECTS)
    assert "figures/fairness.png" in adult_run.manifest["files"]


# ---------------------------------------------------------------- 2. values behind the findings


@pytest.mark.parametrize("name", ["adult", "digits"])
def test_performance_equals_the_predictions_written(runs, name):
    from sklearn.metrics import balanced_accuracy_score

    from scrutiny.models import load_model
    from scrutiny.models.training import expected_calibration_error, predict_proba

    run, dataset, checkpoint = runs[name]
    arrays = load_run(run.path).arrays("arrays/predictions.npz")
    y_true, y_pred, proba = arrays["y_true"], arrays["y_pred"], arrays["proba"]
    assert np.array_equal(y_true, dataset.test.y)
    assert np.array_equal(y_pred, proba.argmax(axis=1))
    # the predictions are the audited model's own
    loaded = load_model(checkpoint, dataset=dataset)
    mine = predict_proba(loaded.model, loaded.preprocessor().transform(dataset.test.X), device="cpu")
    assert np.allclose(proba, mine, atol=1e-5)
    assert np.mean(y_pred == mine.argmax(axis=1)) > 0.999

    balanced = run.finding("performance.balanced_accuracy")
    assert balanced["value"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
    assert balanced["interval"]["low"] <= balanced["value"] <= balanced["interval"]["high"]
    assert balanced["interval"]["confidence"] == 0.95
    calibration = run.finding("performance.calibration_error")
    assert calibration["value"] == pytest.approx(expected_calibration_error(proba, y_true), abs=1e-6)
    details = run.findings["details"]["performance"]
    assert details["accuracy"]["value"] == pytest.approx(np.mean(y_true == y_pred), abs=1e-12)
    assert np.array_equal(np.array(details["confusion"]),
                          np.histogram2d(y_true, y_pred, bins=[np.arange(len(details["classes"]) + 1)] * 2)[0])


@pytest.mark.parametrize("name,gated", [("adult", 0.25), ("digits", 0.1)])
def test_robust_accuracy_is_the_worst_case_at_the_gated_eps(runs, name, gated):
    run = runs[name][0]
    details = run.findings["details"]["robustness"]
    assert details["gated_eps"] == gated
    if name == "adult":  # the gated radius joins the configured grid [0.1, 0.5]
        assert details["eps"] == [0.1, 0.25, 0.5]
    finding = run.finding(f"robustness.robust_accuracy[eps={gated:g}]")
    worst = [p for p in details["curve"] if p["attack"] == "worst case" and math.isclose(p["eps"], gated)]
    assert len(worst) == 1
    assert finding["value"] == worst[0]["robust_accuracy"]
    # the curve point is the mean of the per-row outcomes written to the arrays
    arrays = load_run(run.path).arrays("arrays/robustness.npz")
    column = details["eps"].index(gated)
    robust = arrays["robust__worst case"]
    assert robust.shape == (len(details["eps"]), 40)
    assert finding["value"] == pytest.approx(robust[column].mean(), abs=1e-12)
    assert np.array_equal(robust, arrays["robust__pgd"] & arrays["robust__gaussian"])
    for attack in ("pgd", "gaussian"):
        point = next(p for p in details["curve"] if p["attack"] == attack and math.isclose(p["eps"], gated))
        assert finding["value"] <= point["robust_accuracy"]
    assert finding["interval"]["low"] <= finding["value"] <= finding["interval"]["high"]


def _rate(pred: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean(pred[mask] == 1))


def test_fairness_values_equal_hand_computed_rates(adult_run, adult):
    dataset, _ = adult
    assert dataset.spec.classes[1] == ">50K"  # favourable is class 1
    pred = load_run(adult_run.path).arrays("arrays/predictions.npz")["y_pred"]
    y = dataset.test.y
    male = (dataset.test.groups["sex"] == "Male").to_numpy()
    white = (dataset.test.groups["race"] == "White").to_numpy()
    for subject, privileged in (("sex", male), ("race", white), ("sex × race", male & white)):
        di = _rate(pred, ~privileged) / _rate(pred, privileged)
        assert adult_run.finding(f"fairness.disparate_impact[{subject}]")["value"] == pytest.approx(di, abs=1e-12)
        spd = _rate(pred, ~privileged) - _rate(pred, privileged)
        assert adult_run.finding(f"fairness.statistical_parity_difference[{subject}]")["value"] == \
            pytest.approx(spd, abs=1e-12)
        eod = _rate(pred, ~privileged & (y == 1)) - _rate(pred, privileged & (y == 1))
        assert adult_run.finding(f"fairness.equal_opportunity_difference[{subject}]")["value"] == \
            pytest.approx(eod, abs=1e-12)
    # LL144 impact ratio of sex: the lower category's selection rate over the higher's
    rates = [_rate(pred, male), _rate(pred, ~male)]
    assert adult_run.finding("fairness.impact_ratio[sex]")["value"] == pytest.approx(min(rates) / max(rates), abs=1e-12)
    # the data-set check uses the training split's labels
    train_male = (dataset.train.groups["sex"] == "Male").to_numpy()
    data_di = _rate(dataset.train.y, ~train_male) / _rate(dataset.train.y, train_male)
    assert adult_run.finding("fairness.data.disparate_impact[sex]")["value"] == pytest.approx(data_di, abs=1e-12)


@pytest.mark.parametrize(
    "value,threshold,interval,caveats,expected",
    [
        (0.5, {"fail_below": 0.6, "warn_below": 0.7}, None, [], "fail"),
        (0.5, {"fail_below": 0.6}, None, ["a small group"], "fail"),
        (0.65, {"fail_below": 0.6, "warn_below": 0.7}, None, [], "warn"),
        (0.8, {"fail_below": 0.6, "warn_below": 0.7}, (0.55, 0.9), [], "warn"),
        (0.8, {"fail_below": 0.6, "warn_below": 0.7}, (0.65, 0.9), [], "pass"),
        (0.8, {"fail_below": 0.6, "warn_below": 0.7}, (math.nan, math.nan), [], "pass"),
        (0.8, {"fail_below": 0.6, "warn_below": 0.7}, None, ["a small group"], "warn"),
        (1.3, {"fail_below": 0.8, "fail_above": 1.25}, None, [], "fail"),
        (1.2, {"fail_above": 1.25}, (1.0, 1.3), [], "warn"),
        (1.2, {"fail_above": 1.25, "warn_above": 1.11}, None, [], "warn"),
        (math.nan, {"fail_below": 0.6}, None, [], "warn"),
        (0.0, {}, None, [], "pass"),
    ],
)
def test_status_rule(value, threshold, interval, caveats, expected):
    assert status_of(value, threshold, interval, caveats) == expected


@pytest.mark.parametrize("name", ["adult", "digits"])
def test_statuses_thresholds_counts_and_verdict(runs, name):
    document = runs[name][0].findings
    thresholds = default_thresholds()
    entries = document["findings"]
    assert len({f["id"] for f in entries}) == len(entries)
    for f in entries:
        assert f["check"] in thresholds and f["family"] == f["check"].split(".")[0]
        assert f["threshold"] == thresholds[f["check"]], f["id"]
        assert f["status"] == recomputed_status(f), f["id"]
    counts = {s: sum(f["status"] == s for f in entries) for s in ("pass", "warn", "fail", "insufficient", "not_assessed")}
    assert document["counts"] == counts
    expected = "fail" if counts["fail"] else "warn" if counts["warn"] else "pass"
    assert document["verdict"] == expected
    if name == "adult":  # the rule is exercised on every status but insufficient (tests/test_small_groups.py)
        assert all(counts[s] for s in ("pass", "warn", "fail")), counts


def test_attribution_findings_equal_their_details(adult_run):
    document = adult_run.findings
    details = document["details"]["attributions"]
    assert adult_run.finding("attributions.completeness[integrated_gradients]")["value"] == \
        details["methods"]["integrated_gradients"]["completeness_p95"]
    # KernelSHAP adds up by construction: its check is the sampling error, gated by the policy
    ids = {f["id"] for f in document["findings"]}
    assert "attributions.completeness[kernel_shap]" not in ids
    sampling = adult_run.finding("attributions.sampling_error[kernel_shap]")
    assert sampling["value"] == details["methods"]["kernel_shap"]["sampling_error_p95"] > 0
    assert sampling["threshold"] == load_policy().threshold("attributions.sampling_error")
    for method in ("integrated_gradients", "kernel_shap"):
        q = details["quality"][method]
        assert adult_run.finding(f"attributions.deletion[{method}]")["value"] == \
            pytest.approx(q["deletion_auc"] / q["random_deletion_auc"], rel=1e-12)
        assert adult_run.finding(f"attributions.randomisation[{method}]")["value"] == q["randomisation_spearman"]
    agreement = adult_run.finding("attributions.agreement[integrated_gradients vs kernel_shap]")
    assert agreement["value"] == details["agreement"][0]["spearman_median"]
    arrays = load_run(adult_run.path).arrays("arrays/attributions.npz")
    assert np.array_equal(arrays["rows"], details["rows"]) and arrays["kernel_shap"].shape == (12, len(details["features"]))


# ---------------------------------------------------------------- 3. determinism


@pytest.mark.parametrize("name", ["adult", "digits"])
def test_same_seed_gives_byte_identical_findings(runs, configs, folder, name):
    run, dataset, checkpoint = runs[name]
    again = audit(checkpoint, name, folder / f"{name}-again", "--config",
                  configs["tabular" if name == "adult" else "image"])
    assert again.code == run.code
    assert (again.path / "findings.json").read_bytes() == (run.path / "findings.json").read_bytes()
    assert again.manifest["files"]["findings.json"] == run.manifest["files"]["findings.json"]
    for relative in ("arrays/predictions.npz", "arrays/robustness.npz", "arrays/attributions.npz"):
        a, b = load_run(run.path).arrays(relative), load_run(again.path).arrays(relative)
        assert set(a) == set(b), relative
        assert not [k for k in a if not np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")], relative


def test_another_seed_gives_other_findings(adult_run, adult, configs, folder):
    other = audit(adult[1], "adult", folder / "adult-seed1", "--config", configs["tabular_seed1"])
    assert other.code in (0, 1) and other.manifest["seed"] == 1
    assert (other.path / "findings.json").read_bytes() != (adult_run.path / "findings.json").read_bytes()
    # the seed changes the sampled rows and the intervals, not the point values on the whole test split
    assert other.finding("performance.balanced_accuracy")["value"] == \
        adult_run.finding("performance.balanced_accuracy")["value"]
    assert other.finding("performance.balanced_accuracy")["interval"] != \
        adult_run.finding("performance.balanced_accuracy")["interval"]


# ---------------------------------------------------------------- 4. policy gating


@pytest.fixture(scope="module")
def policy_runs(adult_run, adult, configs, folder):
    """The same Adult audit (performance and fairness) under a lenient and a strict policy."""
    failing = sorted({f["check"] for f in adult_run.findings["findings"] if f["status"] == "fail"})
    lenient = write(folder / "policy" / "lenient.toml", lenient_policy(failing))
    strict = write(folder / "policy" / "strict.toml", lenient_policy(failing).replace(
        '[checks."performance.balanced_accuracy"]\nfail_below = -1e9\nfail_above = 1e9\n', "")
        + '\n[checks."performance.balanced_accuracy"]\nfail_below = 0.999\n')
    return {
        "failing": failing,
        "lenient": audit(adult[1], "adult", folder / "adult-lenient", "--config", configs["tabular_perf_fair"],
                         "--policy", lenient),
        "strict": audit(adult[1], "adult", folder / "adult-strict", "--config", configs["tabular_perf_fair"],
                        "--policy", strict),
        "lenient_path": lenient,
    }


def test_lenient_policy_for_every_failing_check_exits_0(policy_runs, adult_run):
    failing = policy_runs["failing"]
    assert adult_run.code == 1 and failing, "the default policy fails the Adult MLP somewhere"
    run = policy_runs["lenient"]
    assert run.code == 0, run.stderr
    document = run.findings
    assert document["counts"]["fail"] == 0 and document["verdict"] in ("pass", "warn")
    assert run.manifest["policy"]["source"] == str(policy_runs["lenient_path"])
    defaults = default_thresholds()
    for f in document["findings"]:
        if f["check"] in failing:  # the user's table replaced the default one whole: no default warn bound left
            assert f["threshold"] == {"fail_below": -1e9, "fail_above": 1e9}, f["id"]
        else:
            assert f["threshold"] == defaults[f["check"]], f["id"]
        assert f["status"] == recomputed_status(f)
        # the policy changes statuses, never values
        assert f["value"] == adult_run.finding(f["id"])["value"], f["id"]
        assert f["interval"] == adult_run.finding(f["id"])["interval"], f["id"]


def test_impossible_check_fails_the_audit(policy_runs, adult_run):
    run = policy_runs["strict"]
    assert run.code == 1, run.stderr
    balanced = run.finding("performance.balanced_accuracy")
    assert balanced["value"] < 0.999 and balanced["status"] == "fail"
    assert balanced["threshold"] == {"fail_below": 0.999}
    assert [f["id"] for f in run.findings["findings"] if f["status"] == "fail"] == ["performance.balanced_accuracy"]
    assert run.findings["verdict"] == "fail" and run.findings["counts"]["fail"] == 1


def test_policy_without_a_bound_the_default_has(tmp_path, capsys, digits, configs):
    """Leaving a bound out of a user's table drops it (the table is not merged with the default)."""
    policy = write(tmp_path / "p.toml", '[checks."attributions.randomisation"]\nwarn_above = 0.99\n')
    out = tmp_path / "run"
    config = write(tmp_path / "c.toml", IMAGE.format(seed=0).replace(
        "seed = 0", 'seed = 0\nfamilies = ["performance", "attributions"]'))
    code = main(["audit", str(digits[1]), "--data", "digits", "--out", str(out), "--config", str(config),
                 "--policy", str(policy)])
    capsys.readouterr()
    run = load_run(out)
    for f in run.findings["findings"]:
        if f["check"] == "attributions.randomisation":
            assert f["threshold"] == {"warn_above": 0.99} and f["status"] != "fail"
    assert code == (1 if run.findings["verdict"] == "fail" else 0)


@pytest.mark.parametrize("bound", ["inf", "nan"])
def test_non_finite_policy_bound_is_rejected_or_readable(tmp_path, capsys, digits, configs, bound):
    policy = write(tmp_path / "p.toml", f'[checks."performance.calibration_error"]\nfail_above = {bound}\n')
    config = write(tmp_path / "c.toml", 'families = ["performance"]\n')
    out = tmp_path / "run"
    code = main(["audit", str(digits[1]), "--data", "digits", "--out", str(out), "--config", str(config),
                 "--policy", str(policy)])
    _, err = capsys.readouterr()
    if code == 2:
        assert_one_line_error(code, "", err, "p.toml")
        assert not out.exists()
    else:
        load_run(out)  # RunError: findings.json ... threshold/fail_above: None is not of type 'number'


# ---------------------------------------------------------------- 5. atomicity


class _Stop(Exception):
    pass


def _failing_robustness(error: BaseException, seen: dict, out: Path):
    """The robustness family raising ``error``: families write nothing, so nothing is there yet."""
    def fake(context):
        seen["during"] = sorted(os.listdir(out.parent))
        raise error

    return fake


def _failing_save(error: BaseException, seen: dict):
    """Writing the first figure raising ``error``, once the arrays are in the staging folder."""
    def fake(figure, path):
        staging = Path(path).parent.parent
        seen["staging"] = staging
        seen["written"] = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        raise error

    return fake


def _break(patch, where: str, error: BaseException, seen: dict, out: Path) -> None:
    import scrutiny.audit.plots as plots
    import scrutiny.audit.robustness.family as robustness

    if where == "family":
        patch.setattr(robustness, "run", _failing_robustness(error, seen, out))
    else:
        patch.setattr(plots, "save_figure", _failing_save(error, seen))


@pytest.mark.parametrize(
    "error,code,message",
    [(KeyboardInterrupt(), 130, "interrupted: nothing was written"),
     (InputError("robustness: broken on purpose"), 2, "error: robustness: broken on purpose")],
    ids=["ctrl-c", "input-error"],
)
@pytest.mark.parametrize("where", ["family", "save"])
def test_failed_family_leaves_no_run_folder(monkeypatch, capsys, tmp_path, digits, configs, error, code, message,
                                            where):
    seen: dict = {}
    out = tmp_path / "run"
    _break(monkeypatch, where, error, seen, out)
    result = main(["audit", str(digits[1]), "--data", "digits", "--out", str(out), "--config", str(configs["cheap_image"])])
    _, err = capsys.readouterr()
    assert result == code
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 130:  # Ctrl-C: exit 130 without a traceback (see test_ctrl_c_says_interrupted for the message)
        assert set(lines) <= {message} and "Traceback" not in err
    else:
        assert lines == [message]
    if where == "family":  # the families write nothing: the run folder is written once they are all done
        assert seen["during"] == []
    else:  # midway through writing: the arrays are in the staging folder, which goes
        assert "arrays/predictions.npz" in seen["written"]
        assert seen["staging"].parent == tmp_path and seen["staging"].name.startswith(".run.")
        assert not seen["staging"].exists()
    assert not out.exists() and leftovers(out) == []


def test_ctrl_c_says_interrupted(monkeypatch, capsys, tmp_path, digits, configs):
    out = tmp_path / "run"
    _break(monkeypatch, "family", KeyboardInterrupt(), {}, out)
    code = main(["audit", str(digits[1]), "--data", "digits", "--out", str(out), "--config", str(configs["cheap_image"])])
    _, err = capsys.readouterr()
    assert code == 130 and "interrupted" in err


@pytest.mark.parametrize("where", ["family", "save"])
def test_unexpected_exception_leaves_no_run_folder(monkeypatch, capsys, tmp_path, digits, configs, where):
    seen: dict = {}
    out = tmp_path / "run"
    _break(monkeypatch, where, _Stop("boom"), seen, out)
    code = main(["audit", str(digits[1]), "--data", "digits", "--out", str(out), "--config", str(configs["cheap_image"])])
    _, err = capsys.readouterr()
    assert code == 3  # a bug, not bad input (2) nor a policy failure (1)
    assert err.startswith("error: internal error: _Stop: boom (a bug in scrutiny") and err.count("\n") == 1
    assert (seen["during"] == [] if where == "family" else seen["written"])
    assert not out.exists() and leftovers(out) == []


def test_overwrite_replaces_a_run_only_on_success(monkeypatch, capsys, tmp_path, digits_run, digits, configs):
    out = Path(shutil.copytree(digits_run.path, tmp_path / "run"))
    before = snapshot(out)
    args = ["audit", str(digits[1]), "--data", "digits", "--out", str(out), "--config", str(configs["cheap_image"]),
            "--overwrite"]

    seen: dict = {}
    with monkeypatch.context() as patch:
        _break(patch, "save", KeyboardInterrupt(), seen, out)
        assert main(args) == 130
    capsys.readouterr()
    assert seen["written"]
    assert snapshot(out) == before  # the old run survives intact
    load_run(out)
    assert leftovers(out) == []

    code = main(args)
    _, err = capsys.readouterr()
    assert code in (0, 1), err
    replaced = load_run(out)
    assert replaced.manifest["config"]["families"] == ["performance", "robustness"]
    assert not (out / "arrays" / "attributions.npz").exists()  # nothing of the old run is mixed in
    assert snapshot(out) != before
    assert leftovers(out) == []


# ---------------------------------------------------------------- 6. corrupt run folders


def _edit_value(path: Path) -> None:
    document = json.loads((path / "findings.json").read_text())
    document["findings"][0]["value"] = 0.123456
    (path / "findings.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def _truncate(path: Path) -> None:
    target = path / "findings.json"
    target.write_bytes(target.read_bytes()[:200])


def _bad_status(path: Path) -> None:
    document = json.loads((path / "findings.json").read_text())
    document["findings"][0]["status"] = "maybe"
    (path / "findings.json").write_text(json.dumps(document))


def _no_manifest(path: Path) -> None:
    (path / "manifest.json").unlink()


def _manifest_garbage(path: Path) -> None:
    (path / "manifest.json").write_text("{not json")


def _no_findings(path: Path) -> None:
    (path / "findings.json").unlink()


@pytest.mark.parametrize(
    "damage,fragments",
    [(_edit_value, ["findings.json", "SHA-256"]),
     (_truncate, ["findings.json", "not valid JSON"]),
     (_bad_status, ["findings.json", "schema", "status"]),
     (_no_manifest, ["manifest.json", "missing"]),
     (_manifest_garbage, ["manifest.json", "not valid JSON"]),
     (_no_findings, ["findings.json", "missing"])],
    ids=["edited", "truncated", "schema", "no-manifest", "manifest-garbage", "no-findings"],
)
def test_corrupt_run_folder_is_refused(tmp_path, digits_run, damage, fragments):
    run = Path(shutil.copytree(digits_run.path, tmp_path / "run"))
    load_run(run)
    damage(run)
    with pytest.raises(RunError) as caught:
        load_run(run)
    message = str(caught.value)
    assert "\n" not in message and str(run) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("relative", ["arrays/predictions.npz", "figures/robustness.png"])
@pytest.mark.parametrize("damage", ["deleted", "changed"])
def test_missing_or_changed_run_file_is_reported(tmp_path, digits_run, relative, damage):
    run = Path(shutil.copytree(digits_run.path, tmp_path / "run"))
    target = run / relative
    if damage == "deleted":
        target.unlink()
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one byte flipped, size unchanged
        target.write_bytes(bytes(data))
    opened = load_run(run)  # the manifest and findings are intact
    calls = [lambda: opened.file(relative)]
    if relative.endswith(".npz"):
        calls.append(lambda: opened.arrays(relative))
    for call in calls:
        with pytest.raises(RunError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and relative.split("/")[-1] in message
        assert ("missing" if damage == "deleted" else "SHA-256") in message


def test_run_folder_that_does_not_exist(tmp_path):
    with pytest.raises(RunError, match="no-such-run"):
        load_run(tmp_path / "no-such-run")


def test_staging_folders_are_not_runs(tmp_path, digits_run):
    shutil.copytree(digits_run.path, tmp_path / "a")
    shutil.copytree(digits_run.path, tmp_path / ".a.x1y2.partial")
    assert list_runs(tmp_path) == [tmp_path / "a"]


# ---------------------------------------------------------------- 7. bad input


TABLE_SPEC = 'label = "approved"\nfavourable = "yes"\n'


@dataclass
class Bad:
    id: str
    build: object          # (tmp_path, checkpoints) -> (argv after "audit", fragments)
    cheap: bool = True     # fails before a model is loaded or audited


def _config(text: str, name: str = "audit.toml"):
    return lambda tmp, ck: (["--config", write(tmp / name, text)], [name])


def _tab(old: str, new: str) -> str:
    text = TABULAR.format(seed=0)
    assert old in text
    return text.replace(old, new, 1)


def _policy(text: str, name: str = "policy.toml"):
    return lambda tmp, ck: (["--policy", write(tmp / name, text)], [name])


def _with(build, *fragments):
    def wrapped(tmp, ck):
        args, found = build(tmp, ck)
        return args, [*found, *fragments]

    return wrapped


def _pickled_model(tmp: Path, ck) -> tuple[list, list]:
    marker = tmp / "unpickled"
    path = tmp / "model.pkl"
    path.write_bytes(pickle.dumps(_Trap(str(marker))))
    return ["MODEL", path], ["model.pkl"]


def _torch_saved_state(tmp: Path, ck) -> tuple[list, list]:
    import torch

    path = tmp / "state.pt"
    torch.save({"weight": torch.zeros(2, 2), "trap": _Trap(str(tmp / "unpickled"))}, path)
    return ["MODEL", path], ["state.pt"]


class _Trap:
    """Unpickling this creates a folder: proof that a pickle was loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))


BAD = [
    # config: checked before the model is loaded
    Bad("config-unknown-top-level-key", _with(_config("bogus = 1\n" + TABULAR.format(seed=0)), "'bogus'")),
    Bad("config-unknown-key-in-attributions",
        _with(_config(_tab("[attributions]", "[attributions]\nfoo = 3")), "attributions.foo")),
    Bad("config-wrong-type", _with(_config(_tab("samples = 12", 'samples = "many"')), "attributions.samples", "many")),
    Bad("config-samples-zero", _with(_config(_tab("samples = 12", "samples = 0")), "attributions.samples")),
    Bad("config-invalid-toml", _with(_config("[attributions\nsamples = "), "not valid TOML")),
    Bad("config-unknown-method",
        _with(_config(_tab('"kernel_shap"', '"nosuch_method"')), "nosuch_method")),
    Bad("config-unknown-attack", _with(_config(_tab('"gaussian"', '"nosuch_attack"')), "nosuch_attack")),
    Bad("config-negative-eps", _with(_config(_tab("eps = [0.1, 0.5]", "eps = [0.1, -0.5]")), "robustness.eps")),
    Bad("config-section-not-a-table", _with(_config("attributions = 5\n"), "'attributions'")),
    Bad("config-confidence-out-of-range",
        _with(_config("[fairness]\nconfidence = 1.5\n"), "fairness.confidence")),
    Bad("config-unknown-family", _with(_config('families = ["performance", "vibes"]\n'), "vibes")),
    Bad("config-fairness-on-digits",
        lambda tmp, ck: (["--config", write(tmp / "img.toml", 'families = ["performance", "fairness"]\n'),
                          "DIGITS"], ["img.toml", "fairness", "families"])),
    Bad("config-missing-file", lambda tmp, ck: (["--config", tmp / "nosuch.toml"], ["nosuch.toml", "no such file"])),
    # the attribute is only known to be unknown once the data set is: may fail after the model is loaded
    Bad("config-unknown-protected-attribute",
        lambda tmp, ck: (["--config", write(tmp / "fair.toml", 'families = ["performance", "fairness"]\n[fairness]\n'
                                                               'n_boot = 10\nattributes = ["sex", "nosuch_attr"]\n')],
                         ["nosuch_attr"]), cheap=False),
    Bad("config-unknown-mitigate-attribute",
        lambda tmp, ck: (["--config", write(tmp / "mit.toml", '[fairness]\nmitigate = "nosuch_attr"\n')],
                         ["nosuch_attr"]), cheap=False),
    # policy: checked before the data set is even loaded
    Bad("policy-unknown-check", _with(_policy('[checks."performance.nosuch"]\nfail_below = 0.5\n'),
                                      "performance.nosuch")),
    Bad("policy-wrong-type", _with(_policy('[checks."performance.balanced_accuracy"]\nfail_below = "high"\n'),
                                   "fail_below", "high")),
    Bad("policy-warn-beyond-fail",
        _with(_policy('[checks."performance.balanced_accuracy"]\nfail_below = 0.6\nwarn_below = 0.5\n'),
              "warn_below", "fail_below")),
    Bad("policy-robust-accuracy-without-at-eps",
        _with(_policy('[checks."robustness.robust_accuracy"]\nfail_below = 0.5\n'), "at_eps")),
    Bad("policy-unknown-key", _with(_policy('[checks."performance.balanced_accuracy"]\nfail_under = 0.5\n'),
                                    "fail_under")),
    Bad("policy-unknown-top-level-key", _with(_policy("threshold = 3\n"), "threshold")),
    Bad("policy-missing-file", lambda tmp, ck: (["--policy", tmp / "nosuch-policy.toml"],
                                                ["nosuch-policy.toml", "no such file"])),
    Bad("policy-no-radius-for-tables",
        _with(_policy('[checks."robustness.robust_accuracy"]\nat_eps = { image = 0.1 }\nfail_below = 0.5\n'),
              "at_eps", "tabular"), cheap=False),
    # model and data
    Bad("model-data-mismatch", lambda tmp, ck: (["--data", "german"], ["adult", "german"]), cheap=False),
    Bad("empty-csv",
        lambda tmp, ck: (["--data", write(tmp / "empty.csv", ""), "--spec", write(tmp / "spec.toml", TABLE_SPEC)],
                         ["empty.csv", "empty"])),
    Bad("pickle-as-model", _pickled_model, cheap=False),
    Bad("torch-save-as-model", _torch_saved_state, cheap=False),
    Bad("model-does-not-exist", lambda tmp, ck: (["MODEL", tmp / "no-model-here"], ["no-model-here", "not found"]),
        cheap=False),
    Bad("unknown-device", lambda tmp, ck: (["--device", "tpu"], ["tpu"]), cheap=False),
    Bad("out-under-a-file", lambda tmp, ck: (["--out", write(tmp / "file.txt", "x") / "run"], ["file.txt"]),
        cheap=False),
]


def _argv(case: Bad, tmp_path: Path, checkpoints: dict) -> tuple[list[str], list[str], Path]:
    extra, fragments = case.build(tmp_path, checkpoints)
    model, data, out = checkpoints["adult"], "adult", tmp_path / "run"
    rest = []
    i = 0
    while i < len(extra):
        item = extra[i]
        if item == "MODEL":
            model, i = extra[i + 1], i + 2
        elif item == "DIGITS":
            model, data, i = checkpoints["digits"], "digits", i + 1
        elif item == "--data":
            data, i = extra[i + 1], i + 2
        elif item == "--out":
            out, i = extra[i + 1], i + 2
        else:
            rest.append(item)
            i += 1
    if "--config" not in rest and data in ("adult", "digits"):
        rest += ["--config", write(tmp_path / "ok" / "ok.toml", TABULAR.format(seed=0) if data == "adult"
                                   else IMAGE.format(seed=0))]
    return ["audit", str(model), "--data", str(data), "--out", str(out), *map(str, rest)], fragments, Path(out)


@pytest.fixture(scope="module")
def checkpoints(adult, digits):
    return {"adult": adult[1], "digits": digits[1]}


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_bad_input_is_one_error_line_and_no_run_folder(case, checkpoints, tmp_path, capsys, monkeypatch):
    argv, fragments, out = _argv(case, tmp_path, checkpoints)
    if case.cheap:
        def forbidden(*args, **kwargs):
            raise AssertionError(f"{case.id}: model work started before the bad input was reported")

        import scrutiny.audit.run.runner
        import scrutiny.models

        monkeypatch.setattr(scrutiny.models, "load_model", forbidden)
        monkeypatch.setattr(scrutiny.audit.run.runner, "run_audit", forbidden)
    started = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - started
    stdout, stderr = capsys.readouterr()
    assert_one_line_error(code, stdout, stderr, *fragments)
    assert not out.exists() and leftovers(out) == []
    assert not (tmp_path / "unpickled").exists(), "a pickle was unpickled"
    if case.cheap:
        assert seconds < 1.0, seconds  # about 0.1 s: data set and config read, nothing more


def test_bad_input_corpus_is_large_enough():
    assert len({case.id for case in BAD}) == len(BAD) >= 15


def test_existing_out_is_left_untouched(checkpoints, tmp_path, capsys, monkeypatch):
    import scrutiny.models

    monkeypatch.setattr(scrutiny.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "run"
    write(out / "keep.txt", "precious")
    write(out / "arrays" / "a.bin", "x")
    before = snapshot(out)
    code = main(["audit", str(checkpoints["adult"]), "--data", "adult", "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert_one_line_error(code, stdout, stderr, str(out), "--overwrite")
    assert snapshot(out) == before and leftovers(out) == []


def test_unknown_protected_attribute_names_the_config_file_and_key(checkpoints, tmp_path, capsys):
    config = write(tmp_path / "fair.toml", '[fairness]\nattributes = ["nosuch_attr"]\n')
    code = main(["audit", str(checkpoints["adult"]), "--data", "adult", "--out", str(tmp_path / "run"),
                 "--config", str(config)])
    _, err = capsys.readouterr()
    assert_one_line_error(code, "", err, "nosuch_attr", "fair.toml", "fairness.attributes")
