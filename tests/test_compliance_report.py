"""The compliance mapping in the rendered Adult and digits reports (conftest's session runs): every
clause of the mapping appears exactly once in the clause-by-status matrix (HTML and Markdown)
with a status; the status is the worst finding of its checks in the run (recomputed here from
findings.json and the raw TOML), else evidence in a section, else not assessed with a reason;
the as-of date is shown; the clause texts appendix carries each clause's anchor; a user's
mapping with a clause nothing gives evidence for shows it as not assessed."""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter

import pytest

from scrutiny.reports.compliance import DEFAULT_MAPPING

from .report_runs import Rendered, md_cells, md_section, md_tables, parse_html, report, section

WORST = ("fail", "warn", "insufficient", "pass")  # written out here, not imported
WORDS = {"fail": "fail", "warn": "warn", "insufficient": "insufficient data", "pass": "pass",
         "evidence": "evidence", "not_assessed": "not assessed"}
RAW = tomllib.loads(DEFAULT_MAPPING.read_text(encoding="utf-8"))


@pytest.fixture(params=["adult_report", "digits_report"])
def rendered(request) -> Rendered:
    return request.getfixturevalue(request.param)


def _expected_from_findings(path) -> dict[str, str | None]:
    """clause id -> the worst assessed finding of its checks in the run (None: no assessed finding)."""
    findings = json.loads((path / "findings.json").read_text())["findings"]
    out: dict[str, str | None] = {}
    for clause_id in RAW["clauses"]:
        checks = [name for name, table in RAW["checks"].items() if clause_id in table["clauses"]]
        statuses = {f["status"] for f in findings if f["check"] in checks} & set(WORST)
        out[clause_id] = next((s for s in WORST if s in statuses), None)
    return out


def _matrix_rows(root) -> list:
    return [tr for tr in section(root, "compliance").iter("tr") if "data-clause" in tr.attrs]


def test_every_clause_appears_once_in_the_html_matrix_with_its_status(rendered):
    rows = _matrix_rows(rendered.html)
    assert Counter(tr.attrs["data-clause"] for tr in rows) == Counter(list(RAW["clauses"]))
    expected = _expected_from_findings(rendered.path)
    for tr in rows:
        clause_id, status = tr.attrs["data-clause"], tr.attrs["data-status"]
        spans = [s for s in tr.iter("span") if "status" in s.classes()]
        assert len(spans) == 1 and status in spans[0].classes() and spans[0].text() == WORDS[status], clause_id
        cells = list(tr.iter("td"))
        assert cells[0].find("a", href=f"#clause-{clause_id}") is not None, clause_id
        if expected[clause_id] is not None:
            assert status == expected[clause_id], clause_id
        else:
            assert status in ("evidence", "not_assessed"), clause_id
            if status == "not_assessed":
                assert cells[2].text().strip(), f"{clause_id}: not assessed without a reason"
            else:
                assert cells[2].find("a") is not None, f"{clause_id}: evidence without its section"


def test_a_failed_check_fails_its_clauses_and_monitoring_is_not_assessed(rendered):
    findings = rendered.run.findings["findings"]
    statuses = {tr.attrs["data-clause"]: tr for tr in _matrix_rows(rendered.html)}
    failed = {f["check"] for f in findings if f["status"] == "fail"}
    assert failed  # both runs fail something (Adult: fairness; digits: the randomisation check)
    for check in failed:
        for clause_id in RAW["checks"][check]["clauses"]:
            assert statuses[clause_id].attrs["data-status"] == "fail", (check, clause_id)
    for clause_id in RAW["sections"]["monitoring"]["clauses"]:
        tr = statuses[clause_id]
        assert tr.attrs["data-status"] == "not_assessed" and "scrutiny trend" in tr.text(), clause_id
    for clause_id, table in RAW["clauses"].items():
        if "outside_audit" in table:
            assert statuses[clause_id].attrs["data-status"] == "not_assessed"
            assert table["outside_audit"] in statuses[clause_id].text()


def test_digits_fairness_clauses_say_the_family_was_not_run(digits_report):
    assert digits_report.run.details("fairness") is None
    rows = {tr.attrs["data-clause"]: tr for tr in _matrix_rows(digits_report.html)}
    for clause_id in ("nyc-ll144-rcny-5-301-c", "nyc-ll144-rcny-5-301-bias-audit", "eeoc-ugesp-1607-4-d"):
        assert rows[clause_id].attrs["data-status"] == "not_assessed"
        assert "fairness not run" in rows[clause_id].text()


def test_as_of_and_disclaimer_are_shown_and_the_appendix_has_every_clause(rendered):
    text = " ".join(section(rendered.html, "compliance").text().split())
    assert f"As of: {RAW['as_of']}" in text and "not legal advice" in text
    appendix = section(rendered.html, "clauses")
    anchors = [tr.attrs["id"] for tr in appendix.iter("tr") if tr.attrs.get("id", "").startswith("clause-")]
    assert Counter(anchors) == Counter(f"clause-{i}" for i in RAW["clauses"])
    assert RAW["as_of"] in appendix.text()
    for note in (t["note"] for t in RAW["frameworks"].values()):
        assert " ".join(note.split()) in text


def test_markdown_matrix_has_every_clause_once_with_the_html_status(rendered):
    md = md_section(rendered.md, "Compliance mapping")
    assert f"As of: **{RAW['as_of']}**" in md
    html_status = {tr.attrs["data-clause"]: tr.attrs["data-status"] for tr in _matrix_rows(rendered.html)}
    tables = md_tables(md)
    assert len(tables) == 1
    first: Counter[str] = Counter()
    by_cell: dict[str, list[str]] = {}
    for line in tables[0][2:]:
        cells = [c.strip() for c in md_cells(line)]
        first[cells[0]] += 1
        by_cell[cells[0]] = cells
    for clause_id, table in RAW["clauses"].items():
        label = f"{table['reference']}: {table['title']}".replace("|", "\\|")
        assert first[label] == 1, label
        assert by_cell[label][1] == f"**{WORDS[html_status[clause_id]]}**", label
        if html_status[clause_id] == "not_assessed":
            assert by_cell[label][2], label
    appendix = md_section(rendered.md, "Clause texts")
    assert RAW["as_of"] in appendix


USER = """
[clauses."house-1"]
framework = "House policy"
reference = "Rule 1"
title = "Robust enough"
summary = "Models keep their accuracy under small perturbations."

[clauses."house-2"]
framework = "House policy"
reference = "Rule 2"
title = "Reviewed by the board"
summary = "The board reviews every model."

[checks."robustness.robust_accuracy"]
clauses = ["house-1"]
"""


def test_a_users_clause_with_no_evidence_is_not_assessed_and_no_date_is_not_stated(adult_report, tmp_path, capsys):
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(USER, encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = report([str(adult_report.path), "--format", "html,md", "--out", str(out), "--mapping",
                           str(mapping)], capsys)
    assert code == 0, err
    html = parse_html((out / "report.html").read_text(encoding="utf-8"))
    rows = {tr.attrs["data-clause"]: tr for tr in _matrix_rows(html)}
    assert set(rows) == {"house-1", "house-2"}
    robust = {f["status"] for f in adult_report.run.findings["findings"] if f["check"] == "robustness.robust_accuracy"}
    assert rows["house-1"].attrs["data-status"] == next(s for s in WORST if s in robust)
    assert rows["house-2"].attrs["data-status"] == "not_assessed"
    assert "no check or report section" in rows["house-2"].text()
    assert "As of: not stated" in " ".join(section(html, "compliance").text().split())
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "As of: **not stated**" in md_section(md, "Compliance mapping")
    assert re.search(r"\| Rule 2: Reviewed by the board \| \*\*not assessed\*\* \| no check", md)
