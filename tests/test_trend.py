"""`scrutiny trend`: the Adult MLP audited on three disjoint slices of its test split, then the trend report.

The three runs (performance and fairness only) are written once per module; the third is audited
under a policy that asks a balanced accuracy of 0.9 (warn below), so its finding turns from pass
to warn and the policy changes. A fourth run, of the performance family only, audits a copy of
the model with one weight nudged: a changed model, and fairness findings not in the run. Every
number of the HTML is checked against the run (or the two runs) it names: findings and manifest
by JSON pointer, drift statistics recomputed here from the named arrays (PSI by a separate
implementation, KS by scipy); the gated values against sklearn on each run's predictions.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scrutiny.audit.run.run_folder import load_run, to_json
from scrutiny.cli import main

from .report_runs import check_rounding, md_cells, md_tables, num_spans, parse_html, pointer, section
from .test_cli import assert_one_line_error, cli

CONFIG = {"families": ["performance", "fairness"], "fairness": {"n_boot": 50}}
EPS = 1e-4  # the PSI's floor of a share, written out here


@dataclasses.dataclass
class Trend:
    runs: list[Path]
    slices: list[slice]
    dataset: object
    changed: Path           # the performance-only run of a nudged model
    out: Path
    html_text: str
    md: str


def _slice(dataset, rows: slice):
    test = dataset.test
    return dataclasses.replace(dataset, test=dataclasses.replace(
        test, X=test.X.iloc[rows].reset_index(drop=True), y=test.y[rows],
        groups=test.groups.iloc[rows].reset_index(drop=True)))


@pytest.fixture(scope="module")
def trend(trained, tmp_path_factory) -> Trend:
    import torch

    from scrutiny.audit import run_audit

    dataset, result, _ = trained("adult", "mlp")
    root = tmp_path_factory.mktemp("trend")
    strict = root / "strict.toml"
    strict.write_text('[checks."performance.balanced_accuracy"]\nfail_below = 0.6\nwarn_below = 0.9\n')
    third = len(dataset.test.y) // 3
    slices = [slice(k * third, (k + 1) * third) for k in range(3)]
    runs = [root / "2024-q1 <i>", root / "2024-q2", root / "2024-q3"]
    for k, (rows, path) in enumerate(zip(slices, runs)):
        run_audit(result.model, _slice(dataset, rows), config=CONFIG, policy=strict if k == 2 else None,
                  progress=False, device="cpu", out=path)
    nudged = copy.deepcopy(result.model)
    with torch.no_grad():
        next(nudged.parameters()).view(-1)[0] += 1e-3
    changed = root / "nudged"
    run_audit(nudged, _slice(dataset, slices[1]), config={"families": ["performance"]}, progress=False,
              device="cpu", out=changed)
    out = root / "report"
    code = main(["trend", *map(str, runs), "--out", str(out), "--format", "html,pdf,md"])
    assert code == 0
    return Trend(runs=runs, slices=slices, dataset=dataset, changed=changed, out=out,
                 html_text=(out / "trend.html").read_text(encoding="utf-8"),
                 md=(out / "trend.md").read_text(encoding="utf-8"))


# ------------------------------------------------------------------ an independent recomputation of the drift


def _psi(reference, compared, numeric: bool) -> tuple[float, int]:
    """PSI as the report states it, computed apart from the code under test: pandas' right-closed bins at
    numpy's inverted-CDF deciles (NaN a bin of its own), or one bin per category; shares floored at 1e-4."""
    if numeric:
        reference, compared = np.asarray(reference, float), np.asarray(compared, float)
        edges = np.unique(np.percentile(reference[~np.isnan(reference)], np.arange(10, 100, 10), method="inverted_cdf"))
        cut = [-np.inf, *edges, np.inf]

        def shares(x):
            binned = pd.cut(pd.Series(x), cut, right=True).cat.codes.to_numpy()  # NaN: -1
            binned = np.where(np.isnan(x), len(cut) - 1, binned)
            return np.bincount(binned, minlength=len(cut)) / len(x)
        e, a = shares(reference), shares(compared)
    else:
        categories = sorted({str(v) for v in [*reference, *compared]})
        e = np.array([sum(str(v) == c for v in reference) for c in categories]) / len(reference)
        a = np.array([sum(str(v) == c for v in compared) for c in categories]) / len(compared)
    used = (e > 0) | (a > 0)
    e, a = np.maximum(e[used], EPS), np.maximum(a[used], EPS)
    return float(np.sum((a - e) * np.log(a / e))), int(used.sum())


def _stored(run, path: str):
    """The values an array path names: FILE#ARRAY, FILE#proba[:,1] or FILE#proba[:,max]; categorical
    features and classes as their texts."""
    file, name = path.split("#")
    arrays = run.arrays(file)
    classes = run.findings["subject"]["data"]["classes"]
    if name == "proba[:,1]":
        return arrays["proba"][:, 1].astype(float), True
    if name == "proba[:,max]":
        return arrays["proba"].max(axis=1).astype(float), True
    if name in ("y_pred", "y_true"):
        return [classes[i] for i in arrays[name]], False
    match = re.fullmatch(r"f(\d+)", name)
    assert match, path
    index = int(match.group(1))
    if str(arrays["kind"][index]) == "numeric":
        return arrays[name], True
    categories = arrays[f"{name}_categories"]
    return [None if c < 0 else str(categories[c]) for c in arrays[name]], False


def test_every_number_in_the_html_is_the_named_runs_value(trend):
    runs = [load_run(p) for p in trend.runs]
    documents = [(json.loads((p / "findings.json").read_text()), json.loads((p / "manifest.json").read_text()))
                 for p in trend.runs]
    spans = num_spans(parse_html(trend.html_text))
    counted = {"findings": 0, "manifest": 0, "arrays": 0}
    recomputed: dict[tuple, dict] = {}
    for span in spans:
        source, path, value, text = span.attrs["data-source"], span.attrs["data-path"], span.attrs["data-value"], span.text()
        named = [int(r) for r in span.attrs["data-run"].split()]
        where = f"run {named} {source}:{path}"
        counted[source] += 1
        if source in ("findings", "manifest"):
            assert len(named) == 1, where
            findings, manifest = documents[named[0] - 1]
            expected = pointer(findings if source == "findings" else manifest, path)
        else:
            assert source == "arrays" and len(named) == 2 and named[0] < named[1], where
            first, second = path.split(" - ")
            key = (tuple(named), path)
            if key not in recomputed:
                a, numeric = _stored(runs[named[0] - 1], first)
                b, numeric_b = _stored(runs[named[1] - 1], second)
                assert numeric == numeric_b, where
                psi, bins = _psi(a, b, numeric)
                ks = None
                if numeric:
                    with warnings.catch_warnings():  # ties: scipy's exact p-value falls back to the asymptotic one
                        warnings.simplefilter("ignore", RuntimeWarning)
                        ks = stats.ks_2samp(np.asarray(a, float)[~np.isnan(a)], np.asarray(b, float)[~np.isnan(b)])
                recomputed[key] = {"psi": psi, "bins": bins, "ks": ks and ks.statistic, "ks_p": ks and ks.pvalue}
            measure = span.attrs["data-measure"]
            expected = recomputed[key][measure]
            assert expected is not None, where
            assert float(value) == pytest.approx(expected, rel=1e-9, abs=1e-12), f"{where} {measure}: {value} != {expected}"
            check_rounding(text, float(value), where)
            continue
        if expected is None:
            assert value == "" and text == "n/a", where
            continue
        assert float(value) == float(expected), f"{where}: {value} != {expected!r}"
        check_rounding(text, float(expected), where)
    # not vacuous: every run's findings, and the drift of 3 pairs x (13 features + score + 2 classes)
    assert counted["findings"] >= 3 * 60 and counted["arrays"] >= 3 * 16 * 2
    assert {k[0] for k in recomputed} == {(1, 2), (2, 3), (1, 3)}
    assert len(recomputed) == 3 * 16


def test_the_slices_arrays_are_the_audited_rows(trend):
    """predictions.npz and data_profile.npz of each run hold that slice's rows, in original units."""
    X = trend.dataset.test.X
    for path, rows in zip(trend.runs, trend.slices):
        run = load_run(path)
        assert np.array_equal(run.arrays("arrays/predictions.npz")["y_true"], trend.dataset.test.y[rows])
        profile = run.arrays("arrays/data_profile.npz")
        assert list(profile["feature"]) == list(X.columns)
        for i, name in enumerate(profile["feature"]):
            expected = X[name].iloc[rows].tolist()
            if profile["kind"][i] == "numeric":
                assert profile[f"f{i}"].tolist() == [float(v) for v in expected], name
            else:
                categories = profile[f"f{i}_categories"]
                assert [str(categories[c]) for c in profile[f"f{i}"]] == [str(v) for v in expected], name


def test_gated_values_equal_the_findings_and_sklearn_on_each_runs_predictions(trend):
    from sklearn.metrics import balanced_accuracy_score

    root = parse_html(trend.html_text)
    rows = [r for r in section(root, "metrics").iter("tr") if "performance.balanced_accuracy" in r.text()]
    assert len(rows) == 1
    values = [s for s in num_spans(rows[0]) if s.attrs["data-path"].endswith("/value")]
    assert [int(s.attrs["data-run"]) for s in values] == [1, 2, 3]
    for span, path in zip(values, trend.runs):
        run = load_run(path)
        stored = run.arrays("arrays/predictions.npz")
        recomputed = balanced_accuracy_score(stored["y_true"], stored["y_pred"])
        finding = next(f for f in run.findings["findings"] if f["id"] == "performance.balanced_accuracy")
        assert float(span.attrs["data-value"]) == finding["value"]
        assert finding["value"] == pytest.approx(recomputed, abs=1e-12)
    # the Markdown shows the same texts
    table = next(t for t in md_tables(trend.md) if t[0].startswith("| check | run 1 | run 2 | run 3 |"))
    line = next(cells for cells in map(md_cells, table) if "performance.balanced_accuracy" in cells[0])
    for cell, span in zip(line[1:4], values):
        assert cell.strip().startswith(span.text() + " ["), (cell, span.text())


def test_a_tighter_policy_shows_as_a_transition_an_alert_and_its_bands(trend):
    third = load_run(trend.runs[2])
    finding = next(f for f in third.findings["findings"] if f["id"] == "performance.balanced_accuracy")
    assert finding["status"] == "warn" and finding["threshold"]["warn_below"] == 0.9
    root = parse_html(trend.html_text)
    transitions = section(root, "transitions")
    row = next(r for r in transitions.iter("tr") if "performance.balanced_accuracy" in r.text())
    assert re.search(r"2 → 3\s*pass.*warn.*policy bands changed", " ".join(row.text().split()))
    alerts = section(root, "alerts")
    items = [" ".join(li.text().split()) for li in alerts.iter("li")]
    status = [t for t in items if "performance.balanced_accuracy" in t]
    assert len(status) == 1 and status[0].startswith("warn") and "from pass (run 2" in status[0] \
        and "to warn (run 3" in status[0]
    assert any(t.startswith("info") and "policy changed between run 2 and run 3" in t for t in items)
    assert not any("model changed" in t for t in items)  # one model throughout
    # its bands per run: the default up to run 2, the strict policy's in run 3
    metrics = section(root, "metrics")
    row = next(r for r in metrics.iter("tr") if "performance.balanced_accuracy" in r.text())
    assert "runs 1–2: fail < 0.6, warn < 0.7" in " ".join(row.text().split())
    assert "run 3: fail < 0.6, warn < 0.9" in " ".join(row.text().split())
    assert "**warn**" in trend.md.split("## 3. Status transitions")[1].split("## 4.")[0]


def test_no_drift_alert_between_random_slices_of_one_split(trend):
    """Disjoint slices of one shuffled split: every PSI is well under 0.1 (no false alarm)."""
    root = parse_html(trend.html_text)
    psis = [float(s.attrs["data-value"]) for s in num_spans(root) if s.attrs.get("data-measure") == "psi"]
    assert psis and max(psis) < 0.1
    assert not any("shift of" in li.text() for li in section(root, "alerts").iter("li"))


def test_a_changed_model_and_findings_not_in_a_run(trend, tmp_path, capsys):
    out = tmp_path / "trend"
    code, stdout, err = cli(capsys, "trend", trend.runs[0], trend.changed, "--out", out, "--format", "html,md")
    assert code == 0, err
    assert str(out / "trend.html") in stdout and str(out / "trend.md") in stdout
    html = (out / "trend.html").read_text(encoding="utf-8")
    root = parse_html(html)
    items = [" ".join(li.text().split()) for li in section(root, "alerts").iter("li")]
    assert any("model changed between run 1 and run 2" in t for t in items)
    metrics = section(root, "metrics")
    row = next(r for r in metrics.iter("tr") if "fairness.disparate_impact[sex]" in r.text())
    assert "not in run" in row.text()
    transitions = section(root, "transitions")
    row = next(r for r in transitions.iter("tr") if "fairness.disparate_impact[sex]" in r.text())
    assert "not in run" in row.text()
    # no 'first to last' pair with two runs
    assert "first to last" not in html


def test_data_derived_text_is_escaped_and_clauses_listed(trend):
    assert "2024-q1 <i>" not in trend.html_text and "2024-q1 &lt;i&gt;" in trend.html_text
    assert "`2024-q1 <i>`" in trend.md  # a code span shows it as typed
    monitoring = section(parse_html(trend.html_text), "monitoring")
    text = " ".join(monitoring.text().split())
    for reference in ("Art. 72(1)-(2)", "MANAGE 4.1", "A.6.2.6"):
        assert reference in text and reference in trend.md
    pdf = (trend.out / "trend.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    import io

    from pypdf import PdfReader

    first = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "Trend of" in first and "Alerts" in first


def test_a_feature_missing_from_one_run_is_skipped_and_named(trend, tmp_path, capsys):
    from scrutiny.hashing import sha256_file

    edited = Path(shutil.copytree(trend.runs[1], tmp_path / "q2"))
    profile = dict(np.load(edited / "arrays" / "data_profile.npz"))
    dropped = int(np.flatnonzero(profile["feature"] == "education")[0])
    kept = [i for i in range(len(profile["feature"])) if i != dropped]
    rewritten = {"feature": profile["feature"][kept], "kind": profile["kind"][kept]}
    for new, old in enumerate(kept):
        rewritten[f"f{new}"] = profile[f"f{old}"]
        if f"f{old}_categories" in profile:
            rewritten[f"f{new}_categories"] = profile[f"f{old}_categories"]
    np.savez_compressed(edited / "arrays" / "data_profile.npz", **rewritten)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["files"]["arrays/data_profile.npz"] = sha256_file(edited / "arrays" / "data_profile.npz")
    (edited / "manifest.json").write_text(to_json(manifest))
    code, _, err = cli(capsys, "trend", trend.runs[0], edited, "--out", tmp_path / "out", "--format", "md")
    assert code == 0, err
    md = (tmp_path / "out" / "trend.md").read_text(encoding="utf-8")
    assert "*Skipped (not a feature of both runs, or of another kind): `education`.*" in md
    drift = md.split("### run 1 → run 2")[1]
    assert "| education |" not in drift and "| education-num |" in drift
    # the features after the dropped one are compared by name, not position
    table = next(t for t in md_tables(drift))
    assert len(table) == 2 + 3 + 12


def test_bad_input_is_one_error_line_and_nothing_written(trend, tmp_path, capsys):
    out = tmp_path / "out"
    assert_one_line_error(*cli(capsys, "trend", trend.runs[0], "--out", out), "at least two run folders",
                          out_dir=out)
    assert_one_line_error(*cli(capsys, "trend", trend.runs[0], tmp_path, "--out", out), str(tmp_path), out_dir=out)
    assert_one_line_error(*cli(capsys, "trend", trend.runs[0], trend.runs[0], "--out", out), "given twice",
                          out_dir=out)
    assert_one_line_error(*cli(capsys, "trend", *trend.runs[:2], "--out", out, "--format", "html,docx"),
                          "--format", "docx", out_dir=out)
    assert_one_line_error(*cli(capsys, "trend", *trend.runs[:2], "--out", trend.runs[0] / "trend"), "--out",
                          "inside the input")
    assert not (trend.runs[0] / "trend").exists()
    assert_one_line_error(*cli(capsys, "trend", *trend.runs[:2], "--out", trend.runs[1]), "--out", out_dir=None)
    # runs of another task: a copy whose classes differ
    from scrutiny.hashing import sha256_file

    other = Path(shutil.copytree(trend.runs[1], tmp_path / "other"))
    document = json.loads((other / "findings.json").read_text())
    document["subject"]["data"]["classes"] = ["no", "yes"]
    (other / "findings.json").write_text(to_json(document))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["files"]["findings.json"] = sha256_file(other / "findings.json")
    (other / "manifest.json").write_text(to_json(manifest))
    assert_one_line_error(*cli(capsys, "trend", trend.runs[0], other, "--out", out), str(other), "classes",
                          out_dir=out)
    # a folder holding something else is never written into
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert_one_line_error(*cli(capsys, "trend", *trend.runs[:2], "--out", busy), "--out", "not a trend report folder")
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]


def test_an_earlier_trend_report_folder_is_replaced_file_by_file(trend, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(capsys, "trend", trend.runs[0], trend.changed, "--out", out, "--format", "md")[0] == 0
    assert "over 2 runs" in (out / "trend.md").read_text(encoding="utf-8")
    shutil.copy(trend.out / "trend.html", out / "trend.html")  # as a three-run trend would have written it
    assert cli(capsys, "trend", *trend.runs, "--out", out, "--format", "md")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["trend.html", "trend.md"]
    assert "over 3 runs" in (out / "trend.md").read_text(encoding="utf-8")


def test_a_run_without_predictions_is_compared_on_its_findings_only(trend, trained, tmp_path, capsys):
    from scrutiny.audit import run_audit

    dataset, result, _ = trained("adult", "mlp")
    fairness_only = tmp_path / "fairness-only"
    run_audit(result.model, _slice(dataset, trend.slices[1]), config={"families": ["fairness"], "fairness": {"n_boot": 20}},
              progress=False, device="cpu", out=fairness_only)
    code, _, err = cli(capsys, "trend", trend.runs[0], fairness_only, "--out", tmp_path / "out", "--format", "md")
    assert code == 0, err
    md = (tmp_path / "out" / "trend.md").read_text(encoding="utf-8")
    assert "*Run 2 stored no predictions (its audit left the performance family out)" in md
    assert "Nothing to compare: see the notes above." in md
    rows = next(t for t in md_tables(md) if t[0].startswith("| check | run 1 | run 2 |"))
    balanced = next(md_cells(line) for line in rows if "performance.balanced_accuracy" in line)
    assert balanced[2].strip() == "not in run"
