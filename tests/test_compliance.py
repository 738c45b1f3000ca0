"""The compliance mapping: the packaged file covers every check and names the frameworks the
issue asks for; a user's file replaces it; malformed files fail with one line naming the file
and the key; by_framework groups findings under clauses in the file's order."""

from __future__ import annotations

import re
import tomllib
from datetime import date

import pytest

from scrutiny.audit.run.policy import CHECKS
from scrutiny.errors import InputError
from scrutiny.reports.compliance import (
    DEFAULT_MAPPING,
    SECTIONS,
    Clause,
    Mapping,
    by_framework,
    load_mapping,
)


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return load_mapping()


def _references(mapping: Mapping, clauses: list[Clause], framework: str) -> set[str]:
    return {c.reference for c in clauses if c.framework == framework}


# ------------------------------------------------------------------ the packaged mapping


def test_packaged_mapping_is_the_file_beside_the_module(mapping):
    assert DEFAULT_MAPPING.name == "compliance.toml" and DEFAULT_MAPPING.is_file()
    assert mapping.source == "default"
    raw = tomllib.loads(DEFAULT_MAPPING.read_text(encoding="utf-8"))
    assert list(mapping.clauses) == list(raw["clauses"])      # the file's order is kept
    assert set(mapping.checks) == set(raw["checks"])


def test_header_says_what_it_is_and_how_to_replace_it():
    header = DEFAULT_MAPPING.read_text(encoding="utf-8").split("\nversion", 1)[0].lower()
    assert "not legal advice" in header
    assert "scrutiny report run --mapping file" in header
    assert "replaces" in header


def test_every_check_is_mapped_to_defined_clauses(mapping):
    assert set(mapping.checks) == set(CHECKS)
    for check in CHECKS:
        clauses = mapping.for_check(check)
        assert clauses, check
        assert all(isinstance(c, Clause) and c.id in mapping.clauses for c in clauses)
        assert len({c.id for c in clauses}) == len(clauses)


def test_every_clause_is_used_or_says_why_no_audit_can_be_and_every_used_clause_is_defined(mapping):
    used = {i for ids in [*mapping.checks.values(), *mapping.sections.values()] for i in ids}
    outside = {i for i, c in mapping.clauses.items() if c.outside_audit}
    assert used | outside == set(mapping.clauses)
    assert not used & outside
    assert outside  # the process clauses (EU AI Act Art. 9(1)-(2), Art. 12, ISO A.6.2.8)
    for clause_id, clause in mapping.clauses.items():
        assert clause.id == clause_id
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", clause_id), clause_id
        for value in (clause.framework, clause.reference, clause.title, clause.summary):
            assert isinstance(value, str) and value.strip() and "\n" not in value
        for value in (clause.note, clause.outside_audit):
            assert value is None or (value.strip() and "\n" not in value)


def test_every_section_is_mapped(mapping):
    assert set(mapping.sections) == set(SECTIONS)
    for name in SECTIONS:
        assert mapping.for_section(name), name
    with pytest.raises(KeyError):
        mapping.for_section("model-card")


def test_unknown_check_has_no_clauses(mapping):
    assert mapping.for_check("fairness.no_such_metric") == []


def test_the_frameworks_the_issue_names_are_there(mapping):
    clauses = list(mapping.clauses.values())
    eu = _references(mapping, clauses, "EU AI Act")
    for article in ("Art. 10(", "Art. 13(", "Art. 15(", "Annex IV("):
        assert any(r.startswith(article) for r in eu), article
    assert any(r.startswith("MEASURE ") for r in _references(mapping, clauses, "NIST AI RMF 1.0"))
    assert _references(mapping, clauses, "NYC Local Law 144")
    assert "29 CFR 1607.4(D)" in _references(mapping, clauses, "EEOC Uniform Guidelines")
    assert "12 CFR 1002.9(b)(2)" in _references(mapping, mapping.for_section("adverse_action"), "ECOA / Regulation B")


def test_checks_point_at_the_clauses_they_measure(mapping):
    def refs(check):
        return {(c.framework, c.reference) for c in mapping.for_check(check)}

    robust = refs("robustness.robust_accuracy")
    assert {("EU AI Act", "Art. 15(1)"), ("EU AI Act", "Art. 15(5)"), ("NIST AI RMF 1.0", "MEASURE 2.7")} <= robust
    impact = refs("fairness.impact_ratio")
    assert ("EEOC Uniform Guidelines", "29 CFR 1607.4(D)") in impact
    # a selecting tool's bias audit is §5-301(b); a scoring tool's, with scoring rates, §5-301(c)
    nyc_select = {r for f, r in impact if f == "NYC Local Law 144"}
    nyc_score = {r for f, r in refs("fairness.scoring_rate_impact_ratio") if f == "NYC Local Law 144"}
    assert any(r.startswith("6 RCNY §5-301(b)") for r in nyc_select)
    assert not any(r.startswith("6 RCNY §5-301(c)") for r in nyc_select)
    assert any(r.startswith("6 RCNY §5-301(c)") for r in nyc_score)
    assert not any(r.startswith("6 RCNY §5-301(b)") for r in nyc_score)
    for check in ("performance.balanced_accuracy", "robustness.robust_accuracy", "fairness.impact_ratio"):
        assert ("EU AI Act", "Art. 9(6)-(8)") in refs(check), check
    for check in ("performance.balanced_accuracy", "performance.calibration_error"):
        assert {r for f, r in refs(check) if f.startswith("US model risk")} == {
            "SR 26-2: model validation", "SR 26-2: outcomes analysis"}, check
    assert ("EEOC Uniform Guidelines", "29 CFR 1607.4(D)") in refs("fairness.disparate_impact")
    data = refs("fairness.data.disparate_impact")
    assert {("EU AI Act", "Art. 10(2)(f)"), ("EU AI Act", "Art. 10(2)(g)")} <= data
    for check in ("attributions.completeness", "attributions.agreement", "attributions.randomisation",
                  "attributions.deletion"):
        found = refs(check)
        assert any(f == "EU AI Act" and r.startswith("Art. 13(") for f, r in found), check
        assert ("NIST AI RMF 1.0", "MEASURE 2.9") in found, check
    for check in ("performance.balanced_accuracy", "performance.calibration_error"):
        found = refs(check)
        assert {("EU AI Act", "Art. 15(1)"), ("EU AI Act", "Art. 15(3)"), ("EU AI Act", "Annex IV(2)(g)"),
                ("NIST AI RMF 1.0", "MEASURE 2.5")} <= found, check
    for check in CHECKS:
        if CHECKS[check] == "fairness":
            assert ("NIST AI RMF 1.0", "MEASURE 2.11") in refs(check), check


def test_the_refreshed_clauses_and_their_status_as_of_the_files_date(mapping):
    """Issue 18: SR 26-2 (SR 11-7 rescinded), ISO/IEC 42001 Annex A, EU AI Act Art. 9, 12, 17, 72 and
    Annex IV(9) with the Omnibus date, NIST MANAGE 4.1 beside MEASURE, §5-301(c), the CFPB's status."""
    assert mapping.as_of == date(2026, 12, 2)
    refs = {(c.framework, c.reference) for c in mapping.clauses.values()}
    eu = {r for f, r in refs if f == "EU AI Act"}
    for article in ("Art. 9(", "Art. 12(", "Art. 17(", "Art. 72(", "Annex IV(9)"):
        assert any(r.startswith(article) for r in eu), article
    nist = {r for f, r in refs if f == "NIST AI RMF 1.0"}
    assert "MANAGE 4.1" in nist and any(r.startswith("MEASURE") for r in nist)
    iso = {r for f, r in refs if f == "ISO/IEC 42001:2023"}
    assert {f"Annex A, A.6.2.{k}" for k in (4, 5, 6, 7, 8)} <= iso
    mrm = [c for c in mapping.clauses.values() if c.framework.startswith("US model risk")]
    assert {c.reference for c in mrm} >= {"SR 26-2: model validation", "SR 26-2: outcomes analysis",
                                         "SR 26-2: ongoing monitoring"}
    assert all("not enforceable" in c.summary for c in mrm)
    notes = mapping.notes
    assert "SR 11-7 rescinded 17 April 2026" in notes[mrm[0].framework]
    assert "2 December 2027" in notes["EU AI Act"] and "no harmonised standard" in notes["EU AI Act"]
    assert "2022-03" in notes["ECOA / Regulation B"] and "withdrawn May 2025" in notes["ECOA / Regulation B"]
    assert "1002.9" in notes["ECOA / Regulation B"]
    assert "§5-301(c)" in notes["NYC Local Law 144"]
    assert "withdrawn" in mapping.clauses["ecoa-reg-b-1002-9-b-2"].note
    assert "prEN 18286" in mapping.clauses["eu-ai-act-art-17-1-d"].note
    # the monitoring clauses come from the trend report (section monitoring)
    monitoring = {(c.framework, c.reference) for c in mapping.for_section("monitoring")}
    assert {("EU AI Act", "Art. 72(1)-(2)"), ("EU AI Act", "Annex IV(9)"), ("NIST AI RMF 1.0", "MANAGE 4.1"),
            ("ISO/IEC 42001:2023", "Annex A, A.6.2.6")} <= monitoring
    assert ("EU AI Act", "Art. 17(1)(d), (k)") in {(c.framework, c.reference) for c in mapping.for_section("signoff")}


@pytest.mark.parametrize("text, expected", [
    ('as_of = "2026-12-02"\n', date(2026, 12, 2)),
    ("as_of = 2025-01-31\n", date(2025, 1, 31)),  # a TOML date
    ("", None),
])
def test_as_of_is_a_date_or_absent(tmp_path, text, expected):
    path = tmp_path / "m.toml"
    path.write_text(text + CLAUSE, encoding="utf-8")
    assert load_mapping(path).as_of == expected


def test_optional_clause_fields_and_framework_notes_are_read(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(CLAUSE.replace('summary = "S"', 'summary = "S"\nnote = """withdrawn\n  2025"""\n'
                                   'outside_audit = "a process clause"')
                    + '\n[frameworks."F"]\nnote = "as of today"\n', encoding="utf-8")
    mapping = load_mapping(path)
    assert mapping.clauses["c1"].note == "withdrawn 2025"          # one line
    assert mapping.clauses["c1"].outside_audit == "a process clause"
    assert mapping.notes == {"F": "as of today"}
    assert load_mapping().clauses["eu-ai-act-art-15-1"].note is None


# ------------------------------------------------------------------ a user's file

USER = """
[clauses."house-rule-1"]
framework = "House policy"
reference = "Rule 1"
title = "Robust enough"
summary = "Models must keep their accuracy under small perturbations."

[clauses."house-rule-2"]
framework = "House policy"
reference = "Rule 2"
title = "Fair enough"
summary = "Selection rates must not differ much between groups."

[checks."robustness.robust_accuracy"]
clauses = ["house-rule-1"]

[checks."fairness.impact_ratio"]
why = "the lowest selection rate over the highest"
clauses = ["house-rule-2", "house-rule-1"]

[sections."reproducibility"]
clauses = ["house-rule-1"]
"""


def test_a_user_file_replaces_the_packaged_one(tmp_path):
    path = tmp_path / "mapping.toml"
    path.write_text(USER, encoding="utf-8")
    mapping = load_mapping(path)
    assert mapping.source == str(path)
    assert list(mapping.clauses) == ["house-rule-1", "house-rule-2"]
    assert [c.reference for c in mapping.for_check("robustness.robust_accuracy")] == ["Rule 1"]
    assert [c.id for c in mapping.for_check("fairness.impact_ratio")] == ["house-rule-2", "house-rule-1"]
    assert mapping.why["fairness.impact_ratio"] == "the lowest selection rate over the highest"
    # nothing of the packaged file is merged in
    assert mapping.for_check("performance.balanced_accuracy") == []
    assert mapping.for_section("adverse_action") == []
    assert [c.id for c in mapping.for_section("reproducibility")] == ["house-rule-1"]
    assert not any(c.framework == "EU AI Act" for c in mapping.clauses.values())


# ------------------------------------------------------------------ malformed files

CLAUSE = """
[clauses."c1"]
framework = "F"
reference = "R 1"
title = "T"
summary = "S"
"""

MALFORMED = {
    "invalid TOML": ("[clauses.\"c1\"\nframework = \"F\"\n", "line"),
    "unknown top-level key": (CLAUSE + "\n[clause_map]\nx = 1\n", "clause_map"),
    "unknown check": (CLAUSE + "\n[checks.\"fairness.disparate_ratio\"]\nclauses = [\"c1\"]\n",
                      "fairness.disparate_ratio"),
    "undefined clause": (CLAUSE + "\n[checks.\"fairness.impact_ratio\"]\nclauses = [\"c1\", \"nyc-ll144\"]\n",
                         "nyc-ll144"),
    "undefined clause in a section": (CLAUSE + "\n[sections.\"model_card\"]\nclauses = [\"gdpr-22\"]\n", "gdpr-22"),
    "clause missing a field": ("[clauses.\"c2\"]\nframework = \"F\"\nreference = \"R\"\ntitle = \"T\"\n", "summary"),
    "clause with a non-string value": ("[clauses.\"c3\"]\nframework = \"F\"\nreference = 15\ntitle = \"T\"\n"
                                       "summary = \"S\"\n", "reference"),
    "clause with an unknown field": (CLAUSE.replace("summary", "url = \"https://x\"\nsummary"), "url"),
    "unknown section": (CLAUSE + "\n[sections.\"appendix\"]\nclauses = [\"c1\"]\n", "appendix"),
    "clauses not a list": (CLAUSE + "\n[checks.\"fairness.impact_ratio\"]\nclauses = \"c1\"\n", "clauses"),
    "check without clauses": (CLAUSE + "\n[checks.\"fairness.impact_ratio\"]\nwhy = \"x\"\n", "clauses"),
    "unknown key in a check": (CLAUSE + "\n[checks.\"fairness.impact_ratio\"]\nclauses = [\"c1\"]\nnote = \"x\"\n",
                               "note"),
    "checks not tables": (CLAUSE + "\nchecks = [\"fairness.impact_ratio\"]\n", "checks"),
    "as_of not a date": ("as_of = \"02/12/2026\"\n" + CLAUSE, "as_of"),
    "as_of an impossible date": ("as_of = \"2026-13-01\"\n" + CLAUSE, "as_of"),
    "as_of a date and time": ("as_of = 2026-12-02T10:00:00\n" + CLAUSE, "as_of"),
    "as_of a number": ("as_of = 2026\n" + CLAUSE, "as_of"),
    "clause note not text": (CLAUSE + "note = 3\n", "note"),
    "clause outside_audit empty": (CLAUSE + "outside_audit = \" \"\n", "outside_audit"),
    "outside_audit clause named by a check": (CLAUSE + "outside_audit = \"a process\"\n\n[checks.\"fairness.impact_ratio\"]\n"
                                              "clauses = [\"c1\"]\n", "outside_audit"),
    "outside_audit clause named by a section": (CLAUSE + "outside_audit = \"a process\"\n\n[sections.\"signoff\"]\n"
                                                "clauses = [\"c1\"]\n", "signoff"),
    "framework note for no clause": (CLAUSE + "\n[frameworks.\"Nope Act\"]\nnote = \"x\"\n", "Nope Act"),
    "framework table with an unknown key": (CLAUSE + "\n[frameworks.\"F\"]\nurl = \"x\"\n", "url"),
    "framework note missing": (CLAUSE + "\n[frameworks.\"F\"]\n", "note"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_fail_with_one_line_naming_file_and_key(tmp_path, case):
    text, key = MALFORMED[case]
    path = tmp_path / f"{case.replace(' ', '_')}.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_mapping(path)
    message = str(caught.value)
    assert str(path) in message
    assert key in message
    assert "\n" not in message


def test_missing_file_fails_naming_it(tmp_path):
    path = tmp_path / "nowhere.toml"
    with pytest.raises(InputError, match=re.escape(str(path))) as caught:
        load_mapping(path)
    assert "no such file" in str(caught.value) and "\n" not in str(caught.value)


def test_the_error_names_the_offending_table(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(CLAUSE + "\n[checks.\"attributions.deletion\"]\nclauses = [\"c9\"]\n", encoding="utf-8")
    with pytest.raises(InputError, match=r'\[checks\."attributions\.deletion"\].*c9'):
        load_mapping(path)
    path.write_text("[clauses.\"eu-x\"]\nframework = \"F\"\nreference = \"R\"\ntitle = \"T\"\n", encoding="utf-8")
    with pytest.raises(InputError, match=r'\[clauses\."eu-x"\].*summary'):
        load_mapping(path)


# ------------------------------------------------------------------ by_framework

GROUPED = """
[clauses."b1"]
framework = "Beta"
reference = "B 1"
title = "t"
summary = "s"

[clauses."a1"]
framework = "Alpha"
reference = "A 1"
title = "t"
summary = "s"

[clauses."b2"]
framework = "Beta"
reference = "B 2"
title = "t"
summary = "s"

[clauses."a2"]
framework = "Alpha"
reference = "A 2"
title = "t"
summary = "s"

[clauses."only-a-section"]
framework = "Gamma"
reference = "G 1"
title = "t"
summary = "s"

[checks."fairness.impact_ratio"]
clauses = ["a2", "b1"]

[checks."robustness.robust_accuracy"]
clauses = ["b1", "b2"]

[checks."performance.balanced_accuracy"]
clauses = ["a1"]

[sections."model_card"]
clauses = ["only-a-section"]
"""


def test_by_framework_groups_in_the_files_order(tmp_path):
    path = tmp_path / "grouped.toml"
    path.write_text(GROUPED, encoding="utf-8")
    mapping = load_mapping(path)
    grouped = by_framework(mapping, ["robustness.robust_accuracy", "fairness.impact_ratio",
                                     "fairness.impact_ratio", "attributions.agreement"])
    assert list(grouped) == ["Beta", "Alpha"]     # first clause of each framework in the file; Gamma has no findings
    assert [(c.id, checks) for c, checks in grouped["Beta"]] == [
        ("b1", ["robustness.robust_accuracy", "fairness.impact_ratio"]),
        ("b2", ["robustness.robust_accuracy"]),
    ]
    assert [(c.id, checks) for c, checks in grouped["Alpha"]] == [("a2", ["fairness.impact_ratio"])]
    assert by_framework(mapping, []) == {}
    assert list(by_framework(mapping, ["performance.balanced_accuracy"])) == ["Alpha"]


def test_by_framework_on_the_packaged_mapping_covers_every_check(mapping):
    grouped = by_framework(mapping, list(CHECKS))
    assert list(grouped)[:2] == ["EU AI Act", "NIST AI RMF 1.0"]
    seen = {check for items in grouped.values() for _, checks in items for check in checks}
    assert seen == set(CHECKS)
    for items in grouped.values():
        for clause, checks in items:
            assert all(clause in mapping.for_check(c) for c in checks)
    # sections-only clauses (ECOA adverse-action reasons) are not in the findings table; a check's are
    references = {clause.reference for items in grouped.values() for clause, _ in items}
    assert "12 CFR 1002.9(b)(2)" not in references
    assert "12 CFR 1002.6(b)" in references
