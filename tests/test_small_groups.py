"""Small groups: a comparison the data cannot decide is "insufficient data", never a failure.

The status rule with a :class:`Comparison` (against the rule written out here), what a
comparison rests on (against counts done by hand), the policy's ``[groups]`` minimums, and
whole audits of a user table through ``scrutiny audit`` whose privileged group has about 15
test rows, or 50 times more, or 15 rows treated in a way no noise explains.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from scrutiny.audit.fairness import group_metrics as gm
from scrutiny.audit.run.findings import Comparison, Finding, findings_document, status_of, undecided
from scrutiny.audit.run.policy import load_policy
from scrutiny.errors import InputError

SPD = {"fail_below": -0.1, "fail_above": 0.1, "warn_below": -0.05, "warn_above": 0.05}


def comparison(rows=500, expected=100.0, no_difference=0.0, min_rows=30, min_expected=5) -> Comparison:
    return Comparison(no_difference=no_difference, rows=rows, expected_positives=expected, group="privileged group",
                      among="", min_rows=min_rows, min_expected_positives=min_expected)


@pytest.mark.parametrize("value,interval,c,expected", [
    # the smaller group under a minimum: insufficient, whatever the value ...
    (0.15, (-0.04, 0.30), comparison(rows=19), "insufficient"),
    (0.02, (-0.01, 0.04), comparison(rows=19), "insufficient"),
    (0.02, (-0.01, 0.04), comparison(expected=4.9), "insufficient"),
    # ... unless the interval lies wholly past a fail bound: a clear failure however small
    (-1.0, (-1.0, -1.0), comparison(rows=15), "fail"),
    (0.4, (0.12, 0.7), comparison(rows=15, expected=2.0), "fail"),
    # enough rows, but an interval holding both no difference and a failing value: too wide
    (0.15, (-0.04, 0.30), comparison(), "insufficient"),
    (0.03, (-0.02, 0.12), comparison(), "insufficient"),
    # enough rows and a decisive interval: pass, warn, fail as before
    (0.15, (0.05, 0.25), comparison(), "fail"),
    (0.07, (0.01, 0.13), comparison(), "warn"),
    (0.02, (-0.01, 0.04), comparison(), "pass"),
    # a ratio's no difference is 1
    (0.7, (0.5, 1.05), comparison(no_difference=1.0), None),
    # minimums of 0 ask for nothing
    (0.02, (-0.01, 0.04), comparison(rows=3, expected=0.5, min_rows=0, min_expected=0), "pass"),
])
def test_status_rule_for_comparisons(value, interval, c, expected):
    threshold = SPD if c.no_difference == 0 else {"fail_below": 0.8, "fail_above": 1.25}
    expected = expected or "insufficient"
    assert status_of(value, threshold, interval, [], c) == expected
    reason = undecided(value, threshold, interval, c)
    assert (reason is not None) == (expected == "insufficient")
    if c.rows < c.min_rows and reason:
        assert f"the privileged group has {c.rows} rows (policy minimum {c.min_rows})" in reason
    if not c.rows < c.min_rows and c.expected_positives < c.min_expected_positives and reason:
        assert f"{c.expected_positives:.1f} expected favourable outcomes" in reason
    # without a comparison (every other family) nothing is ever insufficient
    assert status_of(value, threshold, interval, []) != "insufficient"


def test_insufficient_never_decides_the_verdict():
    def finding(value, interval, c):
        return Finding(check="fairness.statistical_parity_difference", family="fairness", metric="m", value=value,
                       explanation="e", subject=f"s{value}", interval=interval, confidence=0.95, threshold=SPD,
                       comparison=c)

    small = finding(0.3, (-0.1, 0.6), comparison(rows=12))
    fine = finding(0.01, (-0.01, 0.03), comparison())
    document = findings_document([small, fine], details={}, subject={})
    assert document["verdict"] == "pass"
    assert document["counts"] == {"pass": 1, "warn": 0, "fail": 0, "insufficient": 1, "not_assessed": 0}
    entry = document["findings"][0]
    assert entry["status"] == "insufficient" and entry["caveats"][0].startswith("insufficient data: ")
    assert entry["comparison"]["rows"] == 12 and entry["comparison"]["min_rows"] == 30
    clear = finding(-1.0, (-1.0, -1.0), comparison(rows=12))
    assert findings_document([small, clear], details={}, subject={})["verdict"] == "fail"


def test_runs_written_before_the_status_still_validate():
    from scrutiny.audit.run.findings import validate_findings

    finding = Finding(check="fairness.disparate_impact", family="fairness", metric="m", value=0.9, explanation="e",
                      subject="sex", threshold={"fail_below": 0.8}, comparison=comparison(no_difference=1.0))
    document = findings_document([finding], details={}, subject={"model": {"source": "checkpoint", "architecture": None,
                                 "weights_sha256": "0" * 64}, "data": {"name": "t", "task": "tabular", "sha256": "0" * 64,
                                 "n_train": 1, "n_test": 1, "classes": ["no", "yes"]}})
    validate_findings(document)
    del document["counts"]["insufficient"], document["findings"][0]["comparison"]
    validate_findings(document)  # as an older scrutiny wrote it
    document["findings"][0]["status"] = "inconclusive"
    with pytest.raises(InputError, match="status"):
        validate_findings(document)


def test_support_counts_rows_and_expected_positives_by_hand():
    """(group, label, prediction) counts → rows behind each rate and outcomes expected at the pooled rate."""
    rng = np.random.default_rng(0)
    n = 400
    privileged = rng.random(n) < 0.1
    y, y_pred = rng.integers(0, 2, n), rng.integers(0, 2, n)
    counts = gm.confusion_counts(y, y_pred, privileged)
    got = {(g, among): (rows, expected) for g, among, rows, expected in gm.support(counts, "equal_opportunity_difference")}
    positives = y == 1
    pooled_tpr = y_pred[positives].mean()
    for mask, name in ((privileged, "privileged group"), (~privileged, "unprivileged group")):
        rows = int((mask & positives).sum())
        assert got[(name, "with the favourable label")] == (rows, pytest.approx(rows * pooled_tpr))
    entries = gm.support(counts, "disparate_impact")
    assert {(g, r) for g, _, r, _ in entries} == {("privileged group", privileged.sum()),
                                                  ("unprivileged group", (~privileged).sum())}
    group, among, rows, expected = gm.weakest(counts, "average_odds_difference", 30, 5)
    per_set = [(int((privileged & (y == k)).sum()), k) for k in (0, 1)]
    assert group == "privileged group" and rows == min(per_set)[0]


@pytest.mark.parametrize("table,fragment", [
    ("min_rows = -1", "[groups] min_rows must be a whole number of 0 or more, got -1"),
    ("min_rows = 2.5", "[groups] min_rows must be a whole number of 0 or more, got 2.5"),
    ("min_expected_positives = true", "[groups] min_expected_positives must be a whole number of 0 or more, got True"),
    ('min_expected_positives = "5"', "[groups] min_expected_positives must be a whole number"),
    ("min_row = 3", "[groups]: unknown key 'min_row'; expected min_rows or min_expected_positives"),
])
def test_policy_refuses_bad_minimums(tmp_path, capsys, table, fragment):
    policy = tmp_path / "policy.toml"
    policy.write_text(f"version = 1\n[groups]\n{table}\n")
    with pytest.raises(InputError) as error:
        load_policy(policy)
    assert fragment in str(error.value) and str(policy) in str(error.value)
    from scrutiny.cli import main

    out = tmp_path / "run"
    code = main(["audit", "nosuch-model", "--data", str(tmp_path / "t.csv"), "--out", str(out), "--policy", str(policy)])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stderr.count("\n") == 1 and stderr.startswith("error: ") and fragment in stderr, stderr
    assert "Traceback" not in stdout + stderr and not out.exists()


def test_policy_minimums_merge_with_the_defaults(tmp_path):
    default = load_policy().groups
    assert default == {"min_rows": 30, "min_expected_positives": 5}
    policy = tmp_path / "policy.toml"
    policy.write_text("version = 1\n[groups]\nmin_rows = 100\n")
    assert load_policy(policy).groups == {"min_rows": 100, "min_expected_positives": 5}


# ---------------------------------------------------------------- whole audits of a user table

SPEC = """
label = "approved"
favourable = "yes"
test_size = 0.5

[protected]
group = ["a"]
"""

CONFIG = """
seed = 0
families = ["performance", "fairness"]

[fairness]
n_boot = 200
"""


def write_table(folder, n: int, privileged_share: float):
    """score ~ N(0, 1); approved exactly when score > 0; group "a" (privileged) on a share of the rows."""
    rng = np.random.default_rng(1)
    score = rng.normal(size=n).round(4)
    group = np.where(rng.random(n) < privileged_share, "a", "b")
    folder.mkdir(parents=True, exist_ok=True)
    data, spec = folder / "t.csv", folder / "t.toml"
    pd.DataFrame({"score": score, "group": group, "approved": np.where(score > 0, "yes", "no")}).to_csv(data, index=False)
    spec.write_text(SPEC)
    return data, spec


def scripted_model(folder, data, spec, *, privileged_cut: float, unprivileged_cut: float):
    """A TorchScript model on the encoded columns: favourable when score exceeds its group's cut."""
    from scrutiny.models import load_table

    dataset = load_table(data, spec)
    names = list(dataset.preprocessor.encoded_feature_names)
    encoded = dataset.encode(dataset.test.X)
    score_column = names.index("score")
    (group_column,) = [i for i, name in enumerate(names) if name.startswith("group")]
    privileged = dataset.spec.protected[0].is_privileged(dataset.test.groups["group"])
    flag = 1.0 if np.array_equal(encoded[:, group_column] > 0.5, privileged) else 0.0   # the column's privileged value
    assert np.array_equal((encoded[:, group_column] > 0.5) == bool(flag), privileged)
    raw = dataset.test.X["score"].to_numpy()
    slope = (encoded[1, score_column] - encoded[0, score_column]) / (raw[1] - raw[0])  # standardised score
    offset = encoded[0, score_column] - slope * raw[0]

    class Cut(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.column, self.group, self.flag = score_column, group_column, flag
            self.slope, self.offset = float(slope), float(offset)
            self.cuts = (float(privileged_cut), float(unprivileged_cut))

        def forward(self, x):
            score = (x[:, self.column] - self.offset) / self.slope
            privileged = (x[:, self.group] > 0.5) == (self.flag > 0.5)
            cut = torch.where(privileged, torch.full_like(score, self.cuts[0]), torch.full_like(score, self.cuts[1]))
            logit = torch.clamp(50 * (score - cut), -30.0, 30.0)
            return torch.stack([torch.zeros_like(logit), logit], dim=1)

    path = folder / "model.pt"
    torch.jit.script(Cut()).save(str(path))
    return path, dataset, privileged


def run_audit_cli(monkeypatch, capsys, folder, model, data, spec):
    from scrutiny.audit.run.run_folder import load_run
    from scrutiny.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    config = folder / "audit.toml"
    config.write_text(CONFIG)
    out = folder / "run"
    code = main(["audit", str(model), "--data", str(data), "--spec", str(spec), "--out", str(out), "--config", str(config)])
    stdout, stderr = capsys.readouterr()
    assert code in (0, 1), stderr
    return code, stdout, load_run(out).findings


def table_rows(stdout: str) -> list[tuple[str, str, list[str]]]:
    """(check id, status, caveats) per row of the printed findings table, folded lines joined."""
    rows = []
    for line in stdout.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        check, value, status = cells[0], cells[1], cells[3]
        if value:                                     # a finding's first line
            rows.append([check, status, []])
        elif check.startswith("↳"):                   # a caveat's first line
            rows[-1][2].append(check[1:].strip())
        elif rows[-1][2]:                             # a caveat folded onto more lines
            rows[-1][2][-1] += " " + check
        else:                                         # an id folded onto more lines
            rows[-1][0] += check
            rows[-1][1] = (rows[-1][1] + " " + status).strip()
    return [(check, status, caveats) for check, status, caveats in rows]


def counted(findings: dict, status: str) -> list[str]:
    return [f["id"] for f in findings["findings"] if f["status"] == status]


def test_small_privileged_group_is_insufficient_data_not_a_failure(monkeypatch, capsys, tmp_path):
    data, spec = write_table(tmp_path, 600, 0.05)
    # the privileged group is favoured from score > -0.3: a gap of some 0.12 the old rule failed on 15 rows
    model, dataset, privileged = scripted_model(tmp_path, data, spec, privileged_cut=-0.3, unprivileged_cut=0.0)
    assert 10 <= privileged.sum() <= 20
    code, stdout, findings = run_audit_cli(monkeypatch, capsys, tmp_path, model, data, spec)
    fairness = [f for f in findings["findings"] if f["family"] == "fairness"]
    assert fairness and all(f["status"] == "insufficient" for f in fairness), [(f["id"], f["status"]) for f in fairness]
    assert code == 0 and findings["verdict"] == "pass"
    assert findings["counts"]["insufficient"] == len(fairness) and findings["counts"]["fail"] == 0
    spd = next(f for f in fairness if f["id"] == "fairness.statistical_parity_difference[group]")
    selected = (dataset.test.X["score"].to_numpy() > np.where(privileged, -0.3, 0.0))
    assert spd["value"] == pytest.approx(selected[~privileged].mean() - selected[privileged].mean(), abs=1e-12)
    assert spd["comparison"]["rows"] == privileged.sum()
    # each finding's caveat is about the rates it compares, not another metric's (newcomer review P5)
    by_id = {f["id"]: f for f in fairness}
    for check in ("disparate_impact", "statistical_parity_difference"):
        assert by_id[f"fairness.{check}[group]"]["caveats"] == [spd["caveats"][0]]
        assert "label" not in spd["caveats"][0]
    positives = int((privileged & (dataset.test.y == 1)).sum())
    assert by_id["fairness.equal_opportunity_difference[group]"]["caveats"][0].startswith(
        f"insufficient data: the privileged group has {positives} rows with the favourable label")
    # the console: every id whole, the status spelled out, the caveat under its own check
    printed = table_rows(stdout)
    assert [check for check, _, _ in printed] == [f["id"] for f in findings["findings"]]
    for (check, status, caveats), f in zip(printed, findings["findings"]):
        assert status == {"insufficient": "insufficient data"}.get(f["status"], f["status"]), check
        assert caveats == f["caveats"], check
    assert f"the privileged group has {privileged.sum()} rows (policy minimum 30)" in " ".join(printed[
        [c for c, _, _ in printed].index(spd["id"])][2])
    table = [line for line in stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(len(line) for line in table) <= 80 and "…" not in stdout
    verdict = " ".join(stdout.split())
    assert re.search(rf"verdict: pass \(\d+ pass, 0 warn, 0 fail, {len(fairness)} insufficient data\)", verdict), verdict
    # the report's fairness section shows what each comparison rests on, beside the policy's minimums
    from scrutiny.cli import main

    assert main(["report", str(tmp_path / "run"), "--format", "md"]) == 0
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    after = report.split("Enough data to decide?", 1)[1]
    support = [line.split(" | ") for line in after.splitlines() if line.startswith("| `fairness.")]
    assert [row[0].strip("| `") for row in support] == [f["id"] for f in fairness]
    for row, f in zip(support, fairness):
        assert row[2] == f"{f['comparison']['rows']:,} (30)" and row[4].rstrip(" |") == "insufficient data", row


def test_large_groups_keep_pass_warn_fail(monkeypatch, capsys, tmp_path):
    """The same table with half the rows privileged and a gap of some 0.23: decided, and failed."""
    data, spec = write_table(tmp_path, 3000, 0.5)
    model, _, privileged = scripted_model(tmp_path, data, spec, privileged_cut=-0.6, unprivileged_cut=0.0)
    assert privileged.sum() > 500
    code, _, findings = run_audit_cli(monkeypatch, capsys, tmp_path, model, data, spec)
    assert not counted(findings, "insufficient")
    assert "fairness.statistical_parity_difference[group]" in counted(findings, "fail")
    assert counted(findings, "pass")  # the data set's labels: no gap
    assert code == 1 and findings["verdict"] == "fail"


def test_clear_violation_on_a_small_group_still_fails(monkeypatch, capsys, tmp_path):
    """15 privileged rows always favoured, every other row never: every interval of the model's
    comparisons is a single point past the fail bound, and the audit fails."""
    data, spec = write_table(tmp_path, 600, 0.05)
    model, _, privileged = scripted_model(tmp_path, data, spec, privileged_cut=-math.inf, unprivileged_cut=math.inf)
    code, stdout, findings = run_audit_cli(monkeypatch, capsys, tmp_path, model, data, spec)
    by_id = {f["id"]: f for f in findings["findings"]}
    for check in ("statistical_parity_difference", "disparate_impact"):
        f = by_id[f"fairness.{check}[group]"]
        assert f["status"] == "fail" and f["comparison"]["rows"] < 30, f
        assert f["interval"]["high"] < f["threshold"]["fail_below"]
    # the training labels' bias rests on the same small group and decides nothing
    assert by_id["fairness.data.disparate_impact[group]"]["status"] == "insufficient"
    assert code == 1 and findings["verdict"] == "fail"
