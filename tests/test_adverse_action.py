"""Adverse-action notices: computed by the audit for every unfavourable explained row, never
stating a prohibited basis as a reason, counted in a gated finding and read back by the report.

The report tests' Adult run (tests/report_runs.py: KernelSHAP and IG attributions of 12 rows) is
read; the tests recompute by hand, from the run's own predictions and attributions, which
rows are unfavourable and which of them rest on a prohibited basis. A small user table checks
the spec's ``prohibited`` key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scrutiny.audit.run.run_folder import Run, load_run
from scrutiny.cli import main

# written out here, not imported from the code under test (12 CFR 1002.2(z) and proxies)
ADULT_PROHIBITED = {"sex", "race", "marital-status", "relationship", "native-country", "age"}
CHECK = "attributions.prohibited_basis_notices"
EXPLAINED = 12  # attributions.samples of tests/audit_configs.py TABULAR, which the report tests' Adult run uses
CONFIG = """
seed = 0
families = ["performance", "attributions"]

[attributions]
methods = ["kernel_shap"]
samples = 40
n_boot = 20
"""


@dataclass
class Audited:
    path: Path
    run: Run
    dataset: object
    md: str


def _audit(tmp: Path, model: Path, data: list[str], config: str = CONFIG) -> Path:
    (tmp / "audit.toml").write_text(config)
    out = tmp / "run"
    code = main(["audit", str(model), *data, "--config", str(tmp / "audit.toml"), "--out", str(out), "--device", "cpu"])
    assert code in (0, 1), f"audit exited {code}"
    return out


@pytest.fixture(scope="module")
def adult(adult_report) -> Audited:
    """The report tests' Adult run (tests/report_runs.py), whose KernelSHAP explains 12 rows."""
    return Audited(path=adult_report.path, run=adult_report.run, dataset=adult_report.dataset, md=adult_report.md)


def by_hand(run: Run, prohibited: set[str]) -> tuple[list[int], dict[int, list[int]], set[int]]:
    """(unfavourable explained positions, their top-4 pushing features, positions resting on a
    prohibited basis), from predictions.npz and attributions.npz alone."""
    stored = run.arrays("arrays/attributions.npz")
    y_pred = run.arrays("arrays/predictions.npz")["y_pred"]
    features = run.findings["details"]["attributions"]["features"]
    unfavourable = [i for i, row in enumerate(stored["rows"]) if y_pred[row] == 0]
    top, resting = {}, set()
    for i in unfavourable:
        # the share pushing toward class 0 is the class-0 attribution, or minus the class-1 one
        push = stored["kernel_shap"][i] * (1 if stored["target"][i] == 0 else -1)
        top[i] = sorted((j for j in range(len(features)) if push[j] > 0), key=lambda j: (-push[j], j))[:4]
        if any(features[j] in prohibited for j in top[i]):
            resting.add(i)
    return unfavourable, top, resting


def test_every_unfavourable_row_is_stored_with_its_reasons(adult):
    run = adult.run
    unfavourable, top, _ = by_hand(run, ADULT_PROHIBITED)
    stored = run.arrays("arrays/adverse_action.npz")
    rows = run.arrays("arrays/attributions.npz")["rows"]
    assert 0 < len(unfavourable) < len(rows)  # the filter matters
    assert stored["position"].tolist() == unfavourable
    assert stored["test_row"].tolist() == [int(rows[i]) for i in unfavourable]
    summary = run.findings["details"]["attributions"]["adverse_action"]
    assert summary["n_unfavourable"] == len(unfavourable) and summary["n_explained"] == len(rows) == EXPLAINED
    assert summary["method"] == "kernel_shap"
    values = run.arrays("arrays/attributions.npz")["kernel_shap"]
    features = run.findings["details"]["attributions"]["features"]
    raw = adult.dataset.test.X
    for k, i in enumerate(unfavourable):
        reasons = [int(j) for j in stored["reason"][k] if j >= 0]
        assert reasons == top[i]
        assert stored["contribution"][k, :len(reasons)].tolist() == [float(values[i, j]) for j in reasons]
        assert np.isnan(stored["contribution"][k, len(reasons):]).all()
        for slot, j in enumerate(reasons):
            value = raw[features[j]].iloc[int(rows[i])]
            assert stored["value"][k, slot] == (str(int(value)) if isinstance(value, float) and value.is_integer()
                                                else str(value))
        assert float(stored["proba"][k, 1]) == float(run.arrays("arrays/predictions.npz")["proba"][rows[i], 1])


def test_cannot_issue_exactly_where_a_prohibited_basis_is_a_principal_reason(adult):
    run = adult.run
    unfavourable, _, resting = by_hand(run, ADULT_PROHIBITED)
    stored = run.arrays("arrays/adverse_action.npz")
    marked = {int(i) for i, cannot in zip(stored["position"], stored["cannot_issue"]) if cannot}
    assert marked == resting
    assert resting and len(resting) < len(unfavourable)  # both kinds, so the test can fail either way
    features = run.findings["details"]["attributions"]["features"]
    flagged = [(features[j], p) for row_r, row_p in zip(stored["reason"], stored["prohibited"])
               for j, p in zip(row_r, row_p) if j >= 0]
    assert all(p == (name in ADULT_PROHIBITED) for name, p in flagged)

    finding = next(f for f in run.findings["findings"] if f["check"] == CHECK)
    assert finding["value"] == len(resting)
    assert finding["status"] == "warn" and finding["threshold"] == {"warn_above": 0}  # the default policy
    assert f"{len(resting)} of the {len(unfavourable)} explained rows" in finding["explanation"]
    assert run.findings["details"]["attributions"]["adverse_action"]["n_cannot_issue"] == len(resting)


def test_the_report_never_states_a_prohibited_basis_as_a_reason(adult):
    run = adult.run
    unfavourable, top, resting = by_hand(run, ADULT_PROHIBITED)
    rows = run.arrays("arrays/attributions.npz")["rows"]
    features = run.findings["details"]["attributions"]["features"]
    section = next(p for p in re.split(r"(?m)^## ", adult.md) if p.split("\n", 1)[0].endswith("Adverse-action reasons"))
    from scrutiny.reports.adverse_action import SHOWN_NOTICES

    shown = min(SHOWN_NOTICES, len(unfavourable))
    assert f"{shown} of {len(unfavourable)} unfavourable rows shown" in section
    assert f"**{len(resting)} of {len(unfavourable)} notices cannot be issued**" in section
    lines = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(line.split("|")[1]) for line in lines] == [int(rows[i]) for i in unfavourable[:shown]]
    for line, i in zip(lines, unfavourable):
        reasons = line.split("|")[4]
        stated = re.findall(r"\d+\. ([\w-]+) = ", reasons)
        assert not ADULT_PROHIBITED & set(stated), line
        if i in resting:
            bases = sorted({features[j] for j in top[i]} & ADULT_PROHIBITED)
            assert "cannot be issued: the decision relies on a prohibited basis" in reasons and not stated
            assert sorted(re.findall(r"([\w-]+) [+-]\d", reasons.split("prohibited basis:")[1])) == bases
        else:
            assert stated == [features[j] for j in top[i]]


# ------------------------------------------------------------------ a user table's `prohibited` key

SPEC = """
label = "approved"
favourable = "yes"
prohibited = ["region"]

[protected]
sex = ["male"]
"""


def _table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """approved depends on score and strongly on region, so region is often a principal reason."""
    rng = np.random.default_rng(seed)
    score = rng.normal(size=n).round(3)
    region = rng.choice(["north", "south"], size=n)
    return pd.DataFrame({"score": score, "region": region, "sex": rng.choice(["female", "male"], size=n),
                         "approved": np.where(score + 2.0 * (region == "north") > 1.0, "yes", "no")})


def _write(folder: Path, spec: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    _table().to_csv(folder / "loans.csv", index=False)
    (folder / "loans.toml").write_text(spec)
    return folder / "loans.csv", folder / "loans.toml"


def test_a_user_spec_adds_prohibited_bases(tmp_path, capsys):
    data, spec = _write(tmp_path / "in", SPEC)
    model = tmp_path / "model"
    assert main(["train", "--data", str(data), "--spec", str(spec), "--out", str(model), "--epochs", "20",
                 "--device", "cpu", "--seed", "0"]) == 0
    saved = json.loads((model / "manifest.json").read_text())["dataset"]["spec"]
    assert saved["prohibited"] == ["region"]
    config = CONFIG.replace("samples = 40", "samples = 30")
    out = _audit(tmp_path, model, ["--data", str(data), "--spec", str(spec)], config)
    run = load_run(out)
    summary = run.findings["details"]["attributions"]["adverse_action"]
    assert summary["prohibited_bases"] == ["region", "sex"]  # the protected attribute is one too
    unfavourable, _, resting = by_hand(run, {"region", "sex"})
    assert resting and summary["cannot_issue_by_basis"]["region"] > 0
    stored = run.arrays("arrays/adverse_action.npz")
    assert {int(i) for i, c in zip(stored["position"], stored["cannot_issue"]) if c} == resting
    assert next(f for f in run.findings["findings"] if f["check"] == CHECK)["value"] == len(resting)
    capsys.readouterr()


def test_a_prohibited_column_the_table_lacks_is_one_error_line(tmp_path, capsys):
    data, spec = _write(tmp_path / "in", SPEC.replace('["region"]', '["region", "postcode"]'))
    out = tmp_path / "model"
    code = main(["train", "--data", str(data), "--spec", str(spec), "--out", str(out), "--epochs", "1",
                 "--device", "cpu"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in captured.out + captured.err
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "prohibited column 'postcode'" in lines[0] and "loans.toml" in lines[0]
    assert not out.exists()


def test_built_in_data_sets_declare_their_prohibited_bases():
    from scrutiny.models.datasets import ADULT_SPEC, COMPAS_SPEC, GERMAN_SPEC

    for spec, expected in ((ADULT_SPEC, ADULT_PROHIBITED), (GERMAN_SPEC, {"sex", "age", "foreign_worker"}),
                           (COMPAS_SPEC, {"race", "sex", "age", "age_cat"})):
        assert set(spec.prohibited_bases) == expected, spec.name
        assert expected <= set(spec.feature_names), spec.name  # real columns the model reads


def test_an_old_manifest_without_prohibited_still_loads():
    from scrutiny.errors import DataError
    from scrutiny.models.datasets import ADULT_SPEC
    from scrutiny.models.spec import DatasetSpec

    assert DatasetSpec.from_dict(ADULT_SPEC.to_dict()) == ADULT_SPEC
    old = ADULT_SPEC.to_dict()
    del old["prohibited"]
    spec = DatasetSpec.from_dict(old)
    assert spec.prohibited == () and spec.prohibited_bases == ["sex", "race"]  # the protected attributes
    with pytest.raises(DataError, match="'prohibited' must be a list"):
        DatasetSpec.from_dict({**ADULT_SPEC.to_dict(), "prohibited": "sex"})
