"""ONNX models in the audit: the Adult MLP and the digits CNN exported to ONNX and audited as
black boxes give the checkpoint audit's figures wherever no gradient is needed; with the
checkpoint as twin (checked to give the ONNX probabilities) every figure is the checkpoint
audit's; without a twin, or with one that disagrees, the gradient methods are "not assessed"
with the reason and the audit still completes. The CLI exports, audits with --twin, and refuses
bad input in one line."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e '.[dev]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[dev]'")

from scrutiny.audit.run.findings import validate_findings  # noqa: E402
from scrutiny.audit.run.run_folder import load_run  # noqa: E402
from scrutiny.audit.run.runner import run_audit  # noqa: E402
from scrutiny.cli import main  # noqa: E402
from scrutiny.errors import InputError  # noqa: E402
from scrutiny.models import load_model  # noqa: E402
from scrutiny.models.onnx_model import export_onnx  # noqa: E402

from .test_cli import assert_one_line_error  # noqa: E402

pytestmark = pytest.mark.filterwarnings(r"ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning",
                                        r"ignore:The feature will be removed:DeprecationWarning")

CLOSE = 1e-5   # the bound: a float32 graph of the same weights, run by another engine
ROBUSTNESS = {"attacks": ["pgd", "square", "gaussian"], "samples": 30, "steps": 5, "queries": 30, "detector": False}
CONFIGS = {
    "adult": {"seed": 0, "attributions": {"methods": ["integrated_gradients", "kernel_shap", "lime"], "samples": 6,
                                          "quality_samples": 3, "n_boot": 30},
              "robustness": ROBUSTNESS, "fairness": {"n_boot": 30}},
    "digits": {"seed": 0, "attributions": {"methods": ["integrated_gradients", "saliency", "feature_ablation"],
                                           "samples": 6, "quality_samples": 3, "n_boot": 30},
               "robustness": ROBUSTNESS},
}
ARCH = {"adult": "mlp", "digits": "cnn"}
# what needs gradients in those configs, named here rather than taken from scrutiny's registries
GRADIENT_METHODS = {"adult": {"integrated_gradients"}, "digits": {"integrated_gradients", "saliency"}}
BLACK_BOX_METHODS = {"adult": {"kernel_shap", "lime"}, "digits": {"feature_ablation"}}
COMPLETENESS_CHECKED = {"integrated_gradients"}   # of those methods, the one whose attributions should add up
BLACK_BOX_ATTACKS = ["square", "gaussian"]
TWIN_BOUND = 1e-5   # the default policy's fail_above for performance.twin_difference
TINY_CLI_CONFIG = """
seed = 0
families = ["performance", "attributions", "robustness"]

[attributions]
methods = ["integrated_gradients", "kernel_shap"]
samples = 2
quality = false
n_boot = 10

[robustness]
attacks = ["pgd", "gaussian"]
samples = 10
steps = 2
detector = false
"""


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- the audits, each run once per module

@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """``exported(data)``: (dataset, checkpoint, ONNX file), exported once per module."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("onnx-audit")

    def _exported(data: str):
        if data not in cache:
            dataset, _, checkpoint = trained(data, ARCH[data])
            cache[data] = (dataset, checkpoint, export_onnx(checkpoint, root / f"{data}.onnx"))
        return cache[data]

    return _exported


@pytest.fixture(scope="module")
def audits(exported, tmp_path_factory):
    """``audits(data, kind)``: the AuditResult of the checkpoint (``"checkpoint"``), of the ONNX file
    without a twin (``"onnx"``, also written as a run folder) or with the checkpoint as twin
    (``"twin"``), same config and seed; each run once per module, when first asked for."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("onnx-runs")

    def _audit(data: str, kind: str):
        if (data, kind) not in cache:
            dataset, checkpoint, path = exported(data)
            model = checkpoint if kind == "checkpoint" else path
            twin = checkpoint if kind == "twin" else None
            out = root / f"{data}-{kind}" if kind == "onnx" else None
            cache[data, kind] = run_audit(model, dataset, twin=twin, config=CONFIGS[data], out=out)
        return cache[data, kind]

    return _audit


# ---------------------------------------------------------------- independent references

def encoded_test(dataset) -> np.ndarray:
    """The test split as the audit feeds it, array layout included: the image encoder's (N, 1, H, W)
    strides read to torch as channels-last, whose convolution differs from a default-layout copy's
    in the seventh digit, the size of the difference measured here."""
    return np.asarray(dataset.preprocessor.transform(dataset.test.X), dtype=np.float32)


def softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def onnxruntime_logits(path: Path, X: np.ndarray) -> np.ndarray:
    """The file run by onnxruntime's own session, on one thread (the suite runs torch on one)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: X[i:i + 1024]})[0] for i in range(0, len(X), 1024)])


def torch_logits(module: nn.Module, X: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(X[i:i + 1024])).numpy() for i in range(0, len(X), 1024)])


def largest_difference(module: nn.Module, path: Path, dataset) -> float:
    """max |softmax(torch logits) − softmax(onnxruntime logits)| over the encoded test split."""
    X = encoded_test(dataset)
    return float(np.abs(softmax64(torch_logits(module, X)) - softmax64(onnxruntime_logits(path, X))).max())


# ---------------------------------------------------------------- comparisons

def by_key(result) -> dict:
    found = {(f.check, f.subject): f for f in result.findings}
    assert len(found) == len(result.findings), "two findings share a check and subject"
    return found


def same_number(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= CLOSE


def assert_same_finding(ours, theirs, key, *, status: bool = True) -> None:
    assert same_number(ours.value, theirs.value), (key, ours.value, theirs.value)
    assert (ours.interval is None) == (theirs.interval is None), key
    if ours.interval is not None:
        assert all(same_number(a, b) for a, b in zip(ours.interval, theirs.interval)), (key, ours.interval, theirs.interval)
    if status:
        assert ours.status == theirs.status, (key, ours.status, theirs.status)


def assert_close_tree(ours, theirs, where: str = "") -> None:
    """Two JSON documents equal, numbers within CLOSE."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict) and set(ours) == set(theirs), (where, set(ours) ^ set(theirs or {}))
        for key in ours:
            assert_close_tree(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_close_tree(a, b, f"{where}[{i}]")
    elif isinstance(ours, float) or isinstance(theirs, float):
        assert isinstance(ours, (int, float)) and isinstance(theirs, (int, float)), where
        assert same_number(float(ours), float(theirs)), (where, ours, theirs)
    else:
        assert ours == theirs, (where, ours, theirs)


def involves_gradients(key, data: str) -> bool:
    """A finding of a method that needs gradients, or of a pair holding one."""
    check, subject = key
    return subject is not None and any(m in subject.split(" vs ") for m in GRADIENT_METHODS[data])


def expected_not_assessed(data: str) -> set:
    """The checks an ONNX model without gradients cannot make, in the configs above: completeness
    of the gradient methods that have it, and the weight-randomisation check of every method run."""
    return ({("attributions.completeness", m) for m in GRADIENT_METHODS[data] & COMPLETENESS_CHECKED}
            | {("attributions.randomisation", m) for m in BLACK_BOX_METHODS[data]})


def gated_worst_of(result, attacks: list[str]) -> float:
    """Robust accuracy at the gated radius under the worst of ``attacks``, from the run's row flags."""
    details = result.details["robustness"]
    flags = result.arrays["arrays/robustness.npz"]
    k = details.eps.index(details.gated_eps)
    return float(np.logical_and.reduce([flags[f"robust__{a}"][k] for a in attacks]).mean())


# ---------------------------------------------------------------- 1. black-box findings

@pytest.mark.parametrize("data", ["adult", "digits"])
def test_black_box_findings_equal_the_checkpoint_audits(audits, data):
    ours, theirs = audits(data, "onnx"), audits(data, "checkpoint")
    mine, reference = by_key(ours), by_key(theirs)
    assessed = {k: f for k, f in mine.items() if f.status != "not_assessed"}
    # every finding of the checkpoint audit that needs no gradients is made on the ONNX model too
    assert set(assessed) == {k for k in reference if not involves_gradients(k, data)} - expected_not_assessed(data)
    for key, finding in assessed.items():
        if key[0] == "robustness.robust_accuracy":
            continue
        if key[0] == "robustness.weak_evaluation":
            # without PGD there is no white-box attack to compare the black-box ones with: the ONNX
            # run's signs are the checkpoint run's that concern the black-box attacks alone
            kept = [w for w in theirs.details["robustness"].warnings
                    if w.split(":")[0] in BLACK_BOX_ATTACKS and "gradient" not in w]
            assert ours.details["robustness"].warnings == kept
            assert finding.value == len(kept)
            continue
        assert_same_finding(finding, reference[key], key)
    # robust accuracy: the worst of the black-box attacks, which the checkpoint audit ran too, on the same rows
    (key, robust), = [(k, f) for k, f in assessed.items() if k[0] == "robustness.robust_accuracy"]
    assert key in reference
    assert ours.details["robustness"].attacks == BLACK_BOX_ATTACKS
    assert np.array_equal(ours.arrays["arrays/robustness.npz"]["rows"], theirs.arrays["arrays/robustness.npz"]["rows"])
    assert robust.value == pytest.approx(gated_worst_of(theirs, BLACK_BOX_ATTACKS), abs=CLOSE)
    for attack in BLACK_BOX_ATTACKS:
        assert np.array_equal(ours.arrays["arrays/robustness.npz"][f"robust__{attack}"],
                              theirs.arrays["arrays/robustness.npz"][f"robust__{attack}"]), attack
    # the black-box methods' attributions, and the performance and fairness details
    for method in BLACK_BOX_METHODS[data]:
        assert np.allclose(ours.arrays["arrays/attributions.npz"][method],
                           theirs.arrays["arrays/attributions.npz"][method], rtol=0, atol=CLOSE), method
    families = ["performance", "fairness"] if data == "adult" else ["performance"]
    assert set(ours.document["details"]) >= set(families)
    for family in families:
        assert_close_tree(ours.document["details"][family], theirs.document["details"][family], family)


# ---------------------------------------------------------------- 2. the checkpoint as twin

@pytest.mark.parametrize("data", ["adult", "digits"])
def test_with_the_checkpoint_as_twin_every_finding_equals_the_checkpoint_audits(audits, exported, data):
    ours, theirs = audits(data, "twin"), audits(data, "checkpoint")
    mine, reference = by_key(ours), by_key(theirs)
    twin = mine.pop(("performance.twin_difference", None))
    assert ours.findings[0] is twin   # made first: it decides whether the gradient methods run
    assert set(mine) == set(reference)
    for key, finding in mine.items():
        assert_same_finding(finding, reference[key], key)
    assert "not_assessed" not in {f.status for f in ours.findings}
    assert_close_tree({k: v for k, v in ours.document["details"].items()}, theirs.document["details"], "details")

    dataset, checkpoint, path = exported(data)
    expected = largest_difference(load_model(checkpoint).model, path, dataset)
    assert twin.status == "pass" and 0 <= twin.value < TWIN_BOUND
    assert twin.value == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert twin.threshold == {"fail_above": TWIN_BOUND}
    manifest = ours.manifest["model"]
    assert manifest["kind"] == "onnx" and manifest["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["twin"]["source"] == str(checkpoint)
    assert manifest["twin"]["weights_sha256"] == hashlib.sha256((checkpoint / "weights.safetensors").read_bytes()).hexdigest()


# ---------------------------------------------------------------- 3. no twin: not assessed, with the reason

@pytest.mark.parametrize("data", ["adult", "digits"])
def test_without_a_twin_exactly_the_gradient_checks_are_not_assessed(audits, data):
    result = audits(data, "onnx")
    skipped = {k: f for k, f in by_key(result).items() if f.status == "not_assessed"}
    assert set(skipped) == expected_not_assessed(data)
    for key, finding in skipped.items():
        assert "gradients" in finding.not_assessed and "twin" in finding.not_assessed, key
        assert finding.explanation.startswith("Not assessed") and math.isnan(finding.value), key
        assert finding.interval is None, key
    assert not any(involves_gradients(k, data) for k, f in by_key(result).items() if f.status != "not_assessed")
    details = result.details["attributions"]
    assert set(details.not_assessed) == GRADIENT_METHODS[data]
    assert all("gradients" in reason for reason in details.not_assessed.values())
    assert set(details.methods) == BLACK_BOX_METHODS[data]
    assert ("performance.twin_difference", None) not in by_key(result)

    robust, = [f for f in result.findings if f.check == "robustness.robust_accuracy"]
    caveat, = robust.caveats
    assert "pgd" in caveat and "smallest-eps search" in caveat and "gradients" in caveat
    assert robust.status == "warn"   # a caveat makes a pass a warning, never a pass
    robustness = result.details["robustness"]
    assert robustness.attacks == BLACK_BOX_ATTACKS
    assert math.isnan(robustness.median_min_eps) and math.isnan(robustness.large_eps_accuracy)
    assert result.counts["not_assessed"] == len(expected_not_assessed(data))
    assert result.manifest["model"]["kind"] == "onnx" and "twin" not in result.manifest["model"]


def test_the_run_without_a_twin_validates_and_its_report_shows_not_assessed(audits, tmp_path, capsys):
    result = audits("adult", "onnx")
    run = load_run(result.path)
    validate_findings(run.findings)
    assert run.findings["counts"] == result.counts and run.findings["counts"]["not_assessed"] == 3
    assert set(run.details("attributions").not_assessed) == GRADIENT_METHODS["adult"]
    code, out, err = cli(capsys, "report", result.path, "--format", "html,md", "--out", tmp_path / "report")
    assert code in (0, None), err
    markdown = (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    for check, method in expected_not_assessed("adult"):
        line = next(line for line in markdown.splitlines() if line.startswith(f"| `{check}[{method}]`"))
        assert "not assessed" in line and "pass" not in line, line
    assert "not assessed" in html


# ---------------------------------------------------------------- 4. a twin that differs

def test_a_perturbed_twin_fails_its_check_and_the_audit_goes_on(audits, exported, tmp_path):
    dataset, checkpoint, path = exported("adult")
    copy = shutil.copytree(checkpoint, tmp_path / "perturbed")
    twin = load_model(copy).model
    first = next(twin.parameters())
    with torch.no_grad():
        first.add_(0.05 * torch.randn(first.shape, generator=torch.Generator().manual_seed(0)))
    expected = largest_difference(twin, path, dataset)
    assert expected > 100 * TWIN_BOUND

    result = run_audit(path, dataset, twin=twin, config=CONFIGS["adult"])
    check = result.findings[0]
    assert check.check == "performance.twin_difference" and check.status == "fail"
    assert check.value == pytest.approx(expected, rel=1e-6)
    assert result.verdict == "fail"
    assert set(result.details) == {"performance", "attributions", "robustness", "fairness"}   # it completed
    findings = by_key(result)
    skipped = {k: f for k, f in findings.items() if f.status == "not_assessed"}
    assert set(skipped) == expected_not_assessed("adult")
    for key, finding in skipped.items():
        assert "twin" in finding.not_assessed and "differs" in finding.not_assessed, key
        assert f"{check.value:.3g}" in finding.not_assessed, key
    assert all("differs" in reason for reason in result.details["attributions"].not_assessed.values())
    robust, = [f for f in result.findings if f.check == "robustness.robust_accuracy"]
    assert "pgd" in robust.caveats[0] and "differs" in robust.caveats[0]
    # nothing ran on the twin: every other finding is the no-twin ONNX audit's
    alone = by_key(audits("adult", "onnx"))
    findings.pop(("performance.twin_difference", None))
    assert set(findings) == set(alone)
    for key, finding in findings.items():
        assert_same_finding(finding, alone[key], key)
    assert result.manifest["model"]["twin"]["source"] == "module"


def test_a_twin_with_other_classes_lends_no_gradients(exported):
    """A twin whose output has another number of classes cannot be the ONNX model's twin: it is
    refused, or its check fails and the gradient methods are not assessed; never run on it."""
    dataset, _, path = exported("adult")
    twin = nn.Sequential(nn.Linear(encoded_test(dataset).shape[1], 3))
    config = {"seed": 0, "families": ["performance", "attributions"],
              "attributions": {"methods": ["integrated_gradients"], "samples": 2, "quality": False, "n_boot": 10}}
    try:
        result = run_audit(path, dataset, twin=twin, config=config)
    except InputError as exc:
        assert "twin" in str(exc) and "\n" not in str(exc)
        return
    check = result.findings[0]
    assert check.check == "performance.twin_difference"
    assert check.status == "fail", (check.status, check.value)
    completeness, = [f for f in result.findings if f.check == "attributions.completeness"]
    assert completeness.status == "not_assessed"


# ---------------------------------------------------------------- 5. the command line

def test_cli_export_writes_an_onnx_file_and_refuses_an_existing_one(trained, tmp_path, capsys):
    dataset, _, checkpoint = trained("adult", "mlp")
    out = tmp_path / "adult.onnx"
    code, printed, err = cli(capsys, "export", checkpoint, "--out", out)
    assert code in (0, None), err
    assert hashlib.sha256(out.read_bytes()).hexdigest() in printed
    X = encoded_test(dataset)[:300]
    np.testing.assert_allclose(onnxruntime_logits(out, X), torch_logits(load_model(checkpoint).model, X),
                               rtol=0, atol=CLOSE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adult.onnx"]

    before = out.read_bytes()
    code, printed, err = cli(capsys, "export", checkpoint, "--out", out)
    assert_one_line_error(code, printed, err, "--out", "already exists", "--overwrite")
    assert out.read_bytes() == before
    code, printed, err = cli(capsys, "export", checkpoint, "--out", tmp_path / "other.onnx", "--format", "torchscript")
    assert_one_line_error(code, printed, err, "--format", "onnx", out_dir=tmp_path / "other.onnx")
    code, printed, err = cli(capsys, "export", checkpoint, "--out", out, "--format", "onnx", "--overwrite")
    assert code in (0, None), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adult.onnx"]


def test_cli_audit_with_a_twin_records_it(exported, data_dir, tmp_path, capsys):
    _, checkpoint, path = exported("adult")
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CLI_CONFIG)
    out = tmp_path / "run"
    code, printed, err = cli(capsys, "audit", path, "--data", "adult", "--twin", checkpoint, "--config", config,
                             "--out", out, "--device", "cpu")
    assert code in (0, 1), err   # 1: a failing check (the verdict), not an error
    run = load_run(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "onnx"
    assert manifest["model"]["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    findings = {(f["check"], f.get("subject")): f for f in run.findings["findings"]}
    assert findings["performance.twin_difference", None]["status"] == "pass"
    assert findings["attributions.completeness", "integrated_gradients"]["status"] != "not_assessed"
    assert run.findings["counts"].get("not_assessed", 0) == 0
    assert run.details("robustness").attacks == ["pgd", "gaussian"]
    assert code == (1 if run.findings["verdict"] == "fail" else 0)
    # the twin as the command named it, as the model's source is
    assert manifest["model"]["source"] == str(path)
    assert manifest["model"]["twin"] == {
        "source": str(checkpoint),
        "weights_sha256": hashlib.sha256((checkpoint / "weights.safetensors").read_bytes()).hexdigest()}


def bad_cases(exported, trained, tmp_path) -> dict:
    _, _, adult_onnx = exported("adult")
    _, _, checkpoint = trained("adult", "mlp")
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"these bytes are not an ONNX protobuf message\n" * 4)
    return {
        "not-onnx": (["audit", fake, "--data", "adult"], [str(fake), "not an ONNX model"]),
        "wrong-width": (["audit", adult_onnx, "--data", "german"], [str(adult_onnx), "width"]),
        "twin-without-onnx": (["audit", checkpoint, "--data", "adult", "--twin", checkpoint], ["--twin", "ONNX"]),
    }


@pytest.mark.parametrize("case", ["not-onnx", "wrong-width", "twin-without-onnx"])
def test_bad_input_is_one_line_exit_2_nothing_written(exported, trained, data_dir, tmp_path, capsys, case):
    args, fragments = bad_cases(exported, trained, tmp_path)[case]
    out = tmp_path / "run"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, printed, err = cli(capsys, *args, "--out", out)
    assert_one_line_error(code, printed, err, *fragments, out_dir=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
