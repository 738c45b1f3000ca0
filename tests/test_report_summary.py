"""The executive summary on page 1 (issue 18, item 1), read from the session's Adult and digits
reports (conftest ``adult_report``, ``digits_report``; no audit of its own).

What it must say is computed here from findings.json and a table of which checks speak about the
model and which about the audit's evidence, written out below (not imported from the code under
test): the verdict on the model, the verdict on the evidence, the worst findings in order with
numbers that are the run's values, whether each blocks use, the next steps, and a DRAFT banner
unless a card states the intended use and the owner.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from scrutiny.audit.run.findings import STATUS_WORDS
from scrutiny.audit.run.policy import CHECK_INFO
from scrutiny.cli import main
from scrutiny.reports.render import write_reports

from .report_runs import (
    Rendered,
    check_rounding,
    copy_run,
    md_section,
    num_spans,
    parse_html,
    pointer,
    section,
)

# the checks whose findings speak about the audit's own evidence; every other check speaks about the model
EVIDENCE_CHECKS = {
    "performance.twin_difference", "attributions.completeness", "attributions.sampling_error",
    "attributions.agreement", "attributions.randomisation", "attributions.deletion", "attributions.stability",
    "attributions.reason_stability", "attributions.first_step", "robustness.weak_evaluation",
}
MODEL_ORDER = ["pass", "warn", "fail"]
EVIDENCE_ORDER = ["pass", "not_assessed", "insufficient", "warn", "fail"]  # a gap in the evidence, then its checks
ATTENTION = ["fail", "warn", "insufficient", "not_assessed"]
BLOCKS = {"fail": "Blocks use under the policy", "warn": "Does not block use",
          "insufficient": "Does not block use", "not_assessed": "Does not block use"}


@pytest.fixture(params=["adult_report", "digits_report"])
def rendered(request) -> Rendered:
    return request.getfixturevalue(request.param)


def findings_of(rendered: Rendered) -> list[dict]:
    return json.loads((rendered.path / "findings.json").read_text())["findings"]


def expected_verdicts(findings: list[dict]) -> tuple[str, str]:
    model = [f["status"] for f in findings if f["check"] not in EVIDENCE_CHECKS and f["status"] in MODEL_ORDER]
    evidence = [f["status"] for f in findings
                if f["check"] in EVIDENCE_CHECKS or f["status"] in ("insufficient", "not_assessed")]
    return (max(model, key=MODEL_ORDER.index) if model else "not_assessed",
            max(evidence, key=EVIDENCE_ORDER.index) if evidence else "not_assessed")


def past_fail_bound(f: dict) -> float:
    """Distance past the fail bound, over the bound's distance from no difference (comparisons) or the bound."""
    if f["value"] is None:
        return -math.inf
    neutral = (f.get("comparison") or {}).get("no_difference")
    distances = []
    for key, sign in (("fail_below", -1), ("fail_above", 1)):
        if key in f["threshold"]:
            bound = f["threshold"][key]
            scale = abs(bound - neutral) if neutral is not None else abs(bound)
            distances.append(sign * (f["value"] - bound) / (scale or 1))
    return max(distances, default=-math.inf)


def expected_worst(findings: list[dict]) -> list[int]:
    order = sorted((i for i, f in enumerate(findings) if f["status"] in ATTENTION),
                   key=lambda i: (ATTENTION.index(findings[i]["status"]), findings[i]["check"] in EVIDENCE_CHECKS,
                                  -past_fail_bound(findings[i]), i))
    out, seen = [], set()
    for i in order:
        if findings[i]["check"] not in seen:
            seen.add(findings[i]["check"])
            out.append(i)
    return out[:5]


def summary_of(html):
    return section(html, "summary")


# ------------------------------------------------------------------ the registry says what the table above says


def test_every_check_is_about_the_model_or_the_evidence_as_written_here():
    assert {check: info.about for check, info in CHECK_INFO.items()} == {
        check: "evidence" if check in EVIDENCE_CHECKS else "model" for check in CHECK_INFO}


# ------------------------------------------------------------------ page 1


def test_the_summary_is_the_first_section_and_on_page_1_of_the_pdf(rendered):
    import pypdf

    first = next(rendered.html.iter("section"))
    assert first.attrs["id"] == "summary"
    page = " ".join(pypdf.PdfReader(rendered.pdf).pages[0].extract_text().split())
    for words in ("Executive summary", "The model", "The evidence", "The worst findings", "Recommended next steps"):
        assert words in page, words
    model, evidence = expected_verdicts(findings_of(rendered))
    assert STATUS_WORDS[model].upper() in page.upper() and STATUS_WORDS[evidence].upper() in page.upper()


def test_model_and_evidence_verdicts_are_the_worst_status_of_their_checks(rendered):
    model, evidence = expected_verdicts(findings_of(rendered))
    summary = summary_of(rendered.html)
    for key, status in (("verdict-model", model), ("verdict-evidence", evidence)):
        row = summary.find("tr", id=key)
        assert row is not None, key
        cell = next(td for td in row.iter("td") if "status" in td.classes())
        assert cell.text().strip() == STATUS_WORDS[status], key
        assert status in cell.classes(), key
    md = md_section(rendered.md, "Executive summary")
    assert f"**The model: {STATUS_WORDS[model].upper()}.**" in md
    assert f"**The evidence: {STATUS_WORDS[evidence].upper()}.**" in md


def test_digits_the_model_is_not_failed_by_its_explanations(digits_report):
    """The digits run fails only because an explanation method fails a sanity check: page 1 says the
    model passes its fail bounds and the evidence fails, naming the method."""
    findings = findings_of(digits_report)
    failing = [f for f in findings if f["status"] == "fail"]
    assert failing and all(f["check"] in EVIDENCE_CHECKS for f in failing), "the fixture's digits run changed shape"
    assert digits_report.run.findings["verdict"] == "fail"
    model, evidence = expected_verdicts(findings)
    assert model in ("pass", "warn") and evidence == "fail"
    evidence_row = summary_of(digits_report.html).find("tr", id="verdict-evidence")
    sanity = [f["subject"] for f in failing if f["check"].startswith("attributions.") and f["subject"]]
    assert sanity
    evidence_text = " ".join(evidence_row.text().split())
    steps = " ".join(summary_of(digits_report.html).find("ol", **{"class": "next"}).text().split())
    for method in sanity:
        assert re.search(rf"the explanations of [\w, ]*\b{method}\b[\w, ]* must not be relied on", evidence_text)
        assert re.search(rf"Do not rely on the explanations of [\w, ]*\b{method}\b", steps)


def test_worst_findings_in_order_with_the_runs_numbers(rendered):
    findings = findings_of(rendered)
    document = json.loads((rendered.path / "findings.json").read_text())
    summary = summary_of(rendered.html)
    items = [li for li in summary.iter("li") if li.attrs.get("id", "").startswith("worst-")]
    expected = expected_worst(findings)
    assert expected, "the fixture runs each have findings that need attention"
    assert [int(li.attrs["id"].removeprefix("worst-")) for li in items] == expected
    md = md_section(rendered.md, "Executive summary")
    for li, i in zip(items, expected):
        finding = findings[i]
        text = " ".join(li.text().split())
        assert finding["id"] in text.replace("\u200b", "")
        assert BLOCKS[finding["status"]] in text
        spans = num_spans(li)
        if finding["value"] is not None:
            values = [s for s in spans if s.attrs["data-path"] == f"/findings/{i}/value"]
            assert values, f"{finding['id']}: its value is not among the sentence's numbers"
        for span in spans:  # every number of the sentence is the run's value, rounded as shown
            assert span.attrs["data-source"] == "findings", span.attrs
            value = pointer(document, span.attrs["data-path"])
            assert float(span.attrs["data-value"]) == float(value)
            check_rounding(span.text(), float(value), f"{finding['id']}: {span.attrs['data-path']}")
        # the Markdown carries the same finding, status and numbers
        line = next(x for x in md.splitlines() if f"`{finding['id']}`" in x)
        assert f"**{STATUS_WORDS[finding['status']].upper()}**" in line
        for span in spans:
            assert span.text() in line, (finding["id"], span.text())


def test_adult_worst_finding_is_a_fairness_failure_in_percent(adult_report):
    findings = findings_of(adult_report)
    first = findings[expected_worst(findings)[0]]
    assert first["status"] == "fail" and first["check"].startswith("fairness.")
    li = summary_of(adult_report.html).find("li", id=f"worst-{expected_worst(findings)[0]}")
    assert any(s.text().endswith("%") for s in num_spans(li))  # a ratio or rate in plain units


def test_next_steps_follow_from_the_run(rendered):
    findings = findings_of(rendered)
    steps = " ".join(summary_of(rendered.html).find("ol", **{"class": "next"}).text().split())
    model_fairness = [f for f in findings if f["status"] == "fail" and f["check"].startswith("fairness.")
                      and not f["check"].startswith("fairness.data.")]
    mitigated = (rendered.run.findings["details"].get("fairness") or {}).get("mitigation")
    assert ('mitigate = "' in steps) == bool(model_fairness and not mitigated)
    assert "model card" in steps  # the session's reports have no card
    assert "scrutiny sign" in steps  # nor sign-offs


# ------------------------------------------------------------------ DRAFT, a card, an accepted exception


def render_again(rendered: Rendered, tmp_path, name: str, card_text: str | None = None, run=None) -> tuple:
    card = None
    if card_text is not None:
        card = tmp_path / f"{name}.toml"
        card.write_text(card_text, encoding="utf-8")
    out = tmp_path / name
    write_reports(run or rendered.path, formats=["html", "md"], out=out, card=card)
    return parse_html((out / "report.html").read_text(encoding="utf-8")), (out / "report.md").read_text(encoding="utf-8")


def test_draft_banner_until_the_card_states_intended_use_and_owner(adult_report, tmp_path):
    html, md = adult_report.html, adult_report.md
    banner = html.find("div", id="draft")
    assert banner is not None and "DRAFT" in banner.text()
    header = next(html.iter("header"))
    assert header.find("div", id="draft") is not None  # at the top of page 1
    assert "**DRAFT" in md.split("## ", 1)[0]

    html, md = render_again(adult_report, tmp_path, "use-only", 'intended_use = "Screening of loan applications"\n')
    banner = html.find("div", id="draft")
    assert banner is not None and "the owner" in banner.text() and "intended use" not in banner.text()
    assert "**DRAFT" in md

    html, md = render_again(adult_report, tmp_path, "both",
                            'intended_use = "Screening of loan applications"\nowner = "Credit risk team"\n')
    assert html.find("div", id="draft") is None
    assert "DRAFT" not in md
    assert "model card" not in " ".join(summary_of(html).find("ol", **{"class": "next"}).text().split())


def test_an_accepted_exception_is_shown_beside_the_blocking_finding(digits_report, tmp_path):
    findings = findings_of(digits_report)
    i = expected_worst(findings)[0]
    assert findings[i]["status"] == "fail"
    run = copy_run(digits_report.path, tmp_path / "run")
    assert main(["sign", str(run), "--name", "Ada Lovelace", "--role", "validator",
                 "--decision", "accept-with-conditions", "--reason", "explanations not used",
                 "--accept-exception", findings[i]["id"]]) == 0
    html, md = render_again(digits_report, tmp_path, "signed", run=run)
    li = summary_of(html).find("li", id=f"worst-{i}")
    text = " ".join(li.text().split())
    date = re.search(r"on (\d{4}-\d{2}-\d{2})", text)
    assert "accepted as an exception by Ada Lovelace (validator)" in text and date
    signed = json.loads((run / "signoffs.jsonl").read_text().splitlines()[0])
    assert signed["time"].startswith(date.group(1))
    assert "accepted as an exception by Ada Lovelace (validator)" in md
    steps = " ".join(summary_of(html).find("ol", **{"class": "next"}).text().split())
    assert "validator" not in steps.split("signed off by", 1)[-1].split("(")[0]  # only the approver is left
