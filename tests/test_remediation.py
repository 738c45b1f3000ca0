"""Remediation blocks of the report (issue 18, item 2): every failed or warned check gets one, with
its meaning, likely causes and the options the tool offers; fairness failures show --mitigate
and a threshold what-if whose numbers are recomputed here from the run's arrays; explanation
failures name the methods not to rely on and those that passed. Reads the session's Adult and
digits runs (conftest ``adult_report``, ``digits_report``); starts no audit."""

from __future__ import annotations

import numpy as np
import pytest

from .report_runs import check_rounding, md_section, num_spans, section, threshold_whatif

EXPLANATION_CHECKS = ("attributions.completeness", "attributions.sampling_error", "attributions.randomisation",
                      "attributions.deletion")


def blocks(rendered) -> list:
    return [d for d in section(rendered.html, "findings").iter("div") if "remedy" in d.classes()]


def flagged(rendered) -> list[dict]:
    return [f for f in rendered.run.findings["findings"] if f["status"] in ("fail", "warn")]


@pytest.mark.parametrize("name", ["adult_report", "digits_report"])
def test_every_failed_or_warned_check_has_one_block_and_passes_none(name, request):
    rendered = request.getfixturevalue(name)
    found = blocks(rendered)
    assert found, "no remediation block"
    named = {}
    for block in found:
        ids = [c.text() for c in block.find("p", **{"class": "remedy-ids"}).iter("code")]
        for i in ids:
            assert i not in named, f"{i} named by two blocks"
            named[i] = block
        text = block.text()
        assert "What it means." in text and "Options." in text
    assert set(named) == {f["id"] for f in flagged(rendered)}
    passed = {f["id"] for f in rendered.run.findings["findings"] if f["status"] == "pass"}
    assert not passed & set(named)
    # the Markdown carries the same blocks, naming the same checks
    md = md_section(rendered.md, "Findings that need attention")
    assert "### What to do about each failed or warned check" in md
    headings = [line[5:] for line in md.splitlines() if line.startswith("#### ")]
    assert headings == [b.find("h4").text() for b in found]
    for i in named:
        assert f"`{i}`" in md, i


def test_fairness_blocks_offer_mitigation_and_a_threshold_whatif_recomputed_here(adult_report):
    run = adult_report.run
    findings = run.findings["findings"]
    model = run.findings["details"]["fairness"]["model"]
    predictions = run.arrays("arrays/predictions.npz")
    groups = run.arrays("arrays/fairness_groups.npz")
    p, y = predictions["proba"][:, 1].astype(np.float64), predictions["y_true"]
    fairness_blocks = [b for b in blocks(adult_report) if b.find("h4").text().startswith("Decisions differ by")]
    assert fairness_blocks
    checked = 0
    for block in fairness_blocks:
        text = block.text()
        assert "--mitigate" in text and "mitigate = " in text
        whatif_rows = [tr for t in block.iter("table") if "whatif" in t.classes() for tr in t.find("tbody").iter("tr")]
        for subject in dict.fromkeys(tr.attrs["data-subject"] for tr in whatif_rows):
            i = next(k for k, c in enumerate(model) if (c["attribute"] if c.get("compared") is None else
                                                         f"{c['attribute']}={c['compared']}") == subject)
            code = groups[f"model_{i}"]
            # the stored groups are the comparison's: their sizes are the details' counts
            assert (code == 1).sum() == model[i]["n_privileged"] and (code == 0).sum() == model[i]["n_unprivileged"]
            di = next(f for f in findings if f["check"] == "fairness.disparate_impact" and f["subject"] == subject)
            bound = di["threshold"]["fail_below"]
            rows = [tr for tr in whatif_rows if tr.attrs["data-subject"] == subject]
            assert len(rows) >= 2 and "audited" in rows[0].classes()
            for tr in rows[1:]:
                spans = num_spans(tr)
                ref_t, cmp_t = (float(s.attrs["data-value"]) for s in spans[:2])
                # recomputed here from the probabilities and the groups (not through the report's code)
                chosen = np.where(code == 0, p > cmp_t, p > ref_t)
                rate_ref, rate_cmp = chosen[code == 1].mean(), chosen[code == 0].mean()
                expected = [ref_t, cmp_t, rate_ref, rate_cmp, rate_cmp / rate_ref,
                            chosen[(code == 0) & (y == 1)].mean() - chosen[(code == 1) & (y == 1)].mean(),
                            (chosen == (y == 1)).mean()]
                for span, value in zip(spans, expected, strict=True):
                    assert np.isclose(float(span.attrs["data-value"]), value, rtol=1e-9, atol=1e-12), span.attrs
                    check_rounding(span.text(), value, span.attrs["data-path"])
                    assert np.isclose(threshold_whatif(run, span.attrs["data-path"]), value, rtol=1e-9, atol=1e-12)
                label = next(td for td in tr.iter("td") if "rule" in td.classes()).text()
                if "compared group only" in label:
                    assert ref_t == 0.5 and cmp_t < 0.5
                    assert rate_cmp / rate_ref >= bound  # it reaches the policy's bound …
                    higher = np.where(code == 0, p > cmp_t + 0.005, p > ref_t)
                    assert higher[code == 0].mean() / higher[code == 1].mean() < bound  # … at the highest such step
                if "one for everyone" in label:
                    assert ref_t == cmp_t
                    if "none reaches" in label:  # the lowest step tried, and it does not reach the bound
                        assert ref_t == 0.005 and rate_cmp / rate_ref < bound
                checked += 1
    assert checked >= 3


def test_explanation_blocks_name_the_methods_not_to_rely_on_and_those_that_passed(digits_report, adult_report):
    for rendered in (digits_report, adult_report):
        findings = rendered.run.findings["findings"]
        bad = {f["subject"] for f in findings if f["check"] in EXPLANATION_CHECKS and f["status"] in ("fail", "warn")}
        good = {f["subject"] for f in findings if f["check"] in EXPLANATION_CHECKS} - bad
        block = next((b for b in blocks(rendered) if b.find("h4").text().startswith("Explanation")), None)
        if not bad:
            continue
        assert block is not None
        listed = block.find("ul", **{"class": "unreliable"})
        assert {li.find("code").text() for li in listed.iter("li")} == bad
        options = block.find("ul", **{"class": "options"}).text()
        for method in good:
            assert method in options
        kept = [m for m in rendered.run.findings["details"]["attributions"]["methods"] if m not in bad]
        if kept:  # the config line that leaves the failing methods out
            assert "methods = [" + ", ".join(f'"{m}"' for m in kept) + "]" in options
    # the digits run: integrated gradients fails randomisation, saliency passes its checks
    digits = digits_report.run.findings["findings"]
    assert any(f["id"] == "attributions.randomisation[integrated_gradients]" and f["status"] == "fail" for f in digits)
    block = next(b for b in blocks(digits_report) if b.find("h4").text().startswith("Explanation"))
    assert "Rely on the explanations of saliency" in block.text()


def test_protected_input_block_names_the_features_to_drop(adult_report):
    findings = adult_report.run.findings["findings"]
    reliance = [f for f in findings if f["check"] == "attributions.protected_reliance" and f["status"] != "pass"]
    assert reliance, "the Adult run was expected to warn on its reliance on sex"
    block = next(b for b in blocks(adult_report) if b.find("h4").text() == "Decisions that rest on protected attributes")
    text = block.text()
    summary = adult_report.run.findings["details"]["attributions"]["adverse_action"]
    for name in {f["subject"] for f in reliance} | set(summary["prohibited_inputs"]):
        assert f'"{name}"' in text, name
    assert "drop = [" in text and "audit again" in text
