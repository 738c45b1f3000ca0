"""`scrutiny audit` on a bring-your-own model (TorchScript) and a user's CSV table, as on built-ins."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from scrutiny.audit.run.run_folder import load_run
from scrutiny.cli import main

from .test_user_data import make_frame, write

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

CONFIG = """
seed = 3

[attributions]
methods = ["integrated_gradients", "kernel_shap"]
samples = 10
quality_samples = 5
n_boot = 50

[robustness]
attacks = ["pgd", "gaussian"]
samples = 30
steps = 5
detector = false

[fairness]
n_boot = 50
"""


@pytest.fixture(scope="module")
def byo_run(tmp_path_factory):
    from scrutiny.models import load_table, train_on

    folder = tmp_path_factory.mktemp("byo")
    data, spec = write(folder, make_frame(n=600, seed=1))
    dataset = load_table(data, spec)
    model = train_on(dataset, "mlp", seed=0, progress=False, epochs=5).model.eval()
    scripted = folder / "model.pt"
    example = torch.from_numpy(dataset.encode(dataset.test.X[:4]))
    torch.jit.save(torch.jit.trace(model, example), str(scripted))
    config = folder / "audit.toml"
    config.write_text(CONFIG)
    out = folder / "run"
    code = main(["audit", str(scripted), "--data", str(data), "--spec", str(spec), "--config", str(config),
                 "--out", str(out)])
    return code, out, scripted, dataset


def test_audit_of_a_torchscript_model_on_a_user_csv(byo_run):
    code, out, scripted, dataset = byo_run
    run = load_run(out)
    assert code == (1 if run.findings["verdict"] == "fail" else 0)
    manifest = run.manifest
    assert manifest["model"]["kind"] == "torchscript"
    assert manifest["model"]["weights_sha256"] == hashlib.sha256(scripted.read_bytes()).hexdigest()
    assert manifest["data"]["name"] == "loans" and manifest["data"]["sha256"] == dataset.sha256
    assert manifest["config"]["seed"] == 3
    assert run.findings["subject"]["model"]["architecture"] is None
    ids = {f["id"] for f in run.findings["findings"]}
    # the spec's protected attributes are audited, each alone and together
    for attribute in ("sex", "age", "sex × age"):
        assert f"fairness.disparate_impact[{attribute}]" in ids
    assert "attributions.completeness[integrated_gradients]" in ids
    assert "robustness.robust_accuracy[eps=0.25]" in ids


def test_byo_findings_match_the_predictions_written(byo_run):
    """Balanced accuracy of the run equals the one recomputed from its own prediction array."""
    from sklearn.metrics import balanced_accuracy_score

    _, out, _, dataset = byo_run
    run = load_run(out)
    arrays = run.arrays("arrays/predictions.npz")
    assert np.array_equal(arrays["y_true"], dataset.test.y)
    finding = next(f for f in run.findings["findings"] if f["id"] == "performance.balanced_accuracy")
    assert finding["value"] == pytest.approx(balanced_accuracy_score(arrays["y_true"], arrays["y_pred"]), abs=1e-12)
    low, high = finding["interval"]["low"], finding["interval"]["high"]
    assert low <= finding["value"] <= high
    # the explained rows keep the user's own column names and values
    import pandas as pd

    rows = pd.read_parquet(run.file("arrays/explained_rows.parquet"))
    assert {"score", "region", "sex", "age"} <= set(rows.columns)
    original = dataset.test.X.iloc[rows["test_row"].to_numpy()].reset_index(drop=True)
    assert rows["region"].tolist() == original["region"].tolist()
    assert json.loads((out / "findings.json").read_text())["subject"]["data"]["task"] == "tabular"


def test_mitigation_runs_in_the_audit_on_a_checkpoint(tmp_path):
    """fairness.mitigate adds before/after comparisons; 'before' is the audited model itself."""
    from scrutiny.models import load_table, save_checkpoint, train_on

    data, spec = write(tmp_path, make_frame(n=600, seed=2))
    dataset = load_table(data, spec)
    trained = train_on(dataset, "mlp", seed=0, progress=False, epochs=5)
    checkpoint = save_checkpoint(tmp_path / "ckpt", model=trained.model, dataset=dataset, metrics=trained.metrics,
                                 training=trained.settings, seed=0)
    config = tmp_path / "audit.toml"
    config.write_text('families = ["performance", "fairness"]\n[fairness]\nn_boot = 20\nmitigate = "sex"\n'
                      'attributes = ["sex"]\nintersections = false\n')
    out = tmp_path / "run"
    code = main(["audit", str(checkpoint), "--data", str(data), "--spec", str(spec), "--config", str(config),
                 "--out", str(out)])
    run = load_run(out)
    assert code in (0, 1)
    mitigation = run.findings["details"]["fairness"]["mitigation"]
    assert [m["attribute"] for m in mitigation] == ["sex", "sex"]
    assert "reweighing" in mitigation[0]["method"] and "equalized-odds" in mitigation[1]["method"]
    finding = next(f for f in run.findings["findings"] if f["id"] == "fairness.disparate_impact[sex]")
    assert mitigation[0]["before"]["disparate_impact"]["value"] == pytest.approx(finding["value"], abs=1e-12)
    assert set(mitigation[0]["after"]) == set(mitigation[0]["before"])
    assert not any(f["family"] in ("attributions", "robustness") for f in run.findings["findings"])


def test_mitigation_of_a_model_without_an_architecture_is_refused_before_any_work(byo_run, tmp_path, capsys):
    _, _, scripted, _ = byo_run
    data, spec = write(tmp_path, make_frame(n=600, seed=1))
    config = tmp_path / "audit.toml"
    config.write_text('[fairness]\nmitigate = "sex"\n')
    out = tmp_path / "run"
    code = main(["audit", str(scripted), "--data", str(data), "--spec", str(spec), "--config", str(config),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "mitigate" in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".run.*"))


def test_reliance_on_protected_inputs_is_the_share_of_their_attribution(byo_run):
    """attributions.protected_reliance[attr] = mean |attribution| of that input / the sum over inputs
    (KernelSHAP, additive, when the run has it), for each protected attribute the model reads."""
    _, out, _, dataset = byo_run
    run = load_run(out)
    details = run.findings["details"]["attributions"]
    mean = np.asarray(details["importance"]["kernel_shap"]["mean"])
    found = {f["subject"]: f for f in run.findings["findings"] if f["check"] == "attributions.protected_reliance"}
    assert set(found) == {"sex", "age"}  # both protected columns of the loans table are model inputs
    for name, finding in found.items():
        share = mean[details["features"].index(name)] / mean.sum()
        assert finding["value"] == pytest.approx(share, rel=1e-12)
        assert finding["threshold"] == {"warn_above": 0.05}
        assert finding["status"] == ("warn" if share > 0.05 else "pass")
