"""The compliance mapping: which regulation clauses each finding and report section gives evidence for.

The mapping is data, not code: ``compliance.toml`` next to this module (shipped with the
package) lists the clauses (``[clauses."ID"]``), the clauses of each audit check
(``[checks."CHECK"]``) and of the report sections that are evidence in themselves
(``[sections."NAME"]``). Users edit a copy and pass it with ``scrutiny report RUN --mapping
FILE``. It is an evidence mapping, not legal advice.

Every problem with a file raises :class:`~scrutiny.errors.InputError` with one line
naming the file and the offending key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from scrutiny.audit.run.findings import STATUS_WORDS
from scrutiny.audit.run.policy import CHECK_INFO, CHECKS
from scrutiny.errors import InputError
from scrutiny.toml_file import read_toml

__all__ = ["Clause", "Mapping", "load_mapping", "by_framework", "DEFAULT_MAPPING", "SECTIONS", "CLAUSE_FIELDS",
           "CLAUSE_OPTIONAL", "MATRIX_STATUSES", "compliance_section"]

DEFAULT_MAPPING = Path(__file__).with_name("compliance.toml")

# the report sections that are evidence in themselves
SECTIONS = ("model_card", "adverse_action", "reproducibility", "robustness_examples", "signoff", "monitoring")
CLAUSE_FIELDS = ("framework", "reference", "title", "summary")  # every clause has them
CLAUSE_OPTIONAL = ("note", "outside_audit")                      # text a clause may add
_TOP_LEVEL = ("version", "as_of", "clauses", "checks", "sections", "frameworks")
_LINK_KEYS = ("clauses", "why")
_FRAMEWORK_KEYS = ("note",)
# a clause's status in the matrix, worst first: the findings' statuses, then evidence shown by report sections only
MATRIX_STATUSES = ("fail", "warn", "insufficient", "pass", "evidence", "not_assessed")
_FINDING_ORDER = ("fail", "warn", "insufficient", "pass")
# where the report shows a mapping section (monitoring: in the trend report, not in a run's report)
_REPORT_SECTION = {"model_card": "model_card", "adverse_action": "adverse_action", "reproducibility": "reproducibility",
                   "robustness_examples": "robustness", "signoff": "signoff"}
MONITORING_REASON = "evidence is a trend report over successive runs (scrutiny trend), not a single run"


@dataclass(frozen=True)
class Clause:
    """One clause of one framework, e.g. EU AI Act Art. 15(5)."""

    id: str
    framework: str     # "EU AI Act", "NIST AI RMF 1.0", ...
    reference: str     # "Art. 15(5)", "MEASURE 2.7", "29 CFR 1607.4(D)", ...
    title: str
    summary: str
    note: str | None = None           # its status as of the mapping's date (withdrawn guidance, no standard yet)
    outside_audit: str | None = None  # why no audit can give evidence for it (a process the organisation runs)


@dataclass(frozen=True)
class Mapping:
    """A loaded mapping. ``clauses`` keeps the file's order; ``checks`` and ``sections`` give
    clause ids in the order the file lists them."""

    clauses: dict[str, Clause]
    checks: dict[str, list[str]]
    sections: dict[str, list[str]]
    source: str                                        # "default" or the user's file
    why: dict[str, str] = field(default_factory=dict)  # check or section name -> its optional `why`
    as_of: date | None = None                          # when the file's clauses and notes were last checked
    notes: dict[str, str] = field(default_factory=dict)  # framework -> its note ([frameworks."NAME"])

    def for_check(self, check: str) -> list[Clause]:
        """The clauses a finding of ``check`` gives evidence for; none for a check the mapping leaves out."""
        return [self.clauses[i] for i in self.checks.get(check, [])]

    def for_section(self, name: str) -> list[Clause]:
        """The clauses report section ``name`` (one of :data:`SECTIONS`) gives evidence for;
        none when the mapping leaves it out."""
        if name not in SECTIONS:
            raise KeyError(f"unknown report section {name!r}; expected one of {', '.join(SECTIONS)}")
        return [self.clauses[i] for i in self.sections.get(name, [])]


def load_mapping(path: str | Path | None = None) -> Mapping:
    """The packaged mapping, or the user's file at ``path``.

    A user's file REPLACES the packaged mapping whole: nothing is merged, so clauses, checks
    and sections it leaves out have no mapping (a check left out shows no clauses).

    Raises:
        InputError: one line naming the file and the key: no such file, not valid TOML, an
            unknown top-level key, an ``as_of`` that is not a date, a check not in the audit
            policy's ``CHECKS``, an unknown section, a clause table missing a field, with an
            unknown field or a non-text value, a clause id that is referenced but not defined, a
            clause with ``outside_audit`` that a check or section names, or a
            ``[frameworks."NAME"]`` that no clause's framework is.
    """
    file = DEFAULT_MAPPING if path is None else Path(path)
    document = read_toml(file, "compliance mapping")
    where = f"compliance mapping {file}"
    unknown = [k for k in document if k not in _TOP_LEVEL]
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; expected version, as_of and [clauses.\"ID\"], "
                         f"[checks.\"CHECK\"], [sections.\"NAME\"], [frameworks.\"NAME\"] tables")
    if document.get("version", 1) != 1:
        raise InputError(f"{where}: version {document['version']!r} is not supported; expected 1")
    as_of = _as_of(where, document.get("as_of"))
    clauses = _clauses(where, _tables(where, document, "clauses"))
    why: dict[str, str] = {}
    checks = {}
    for name, table in _tables(where, document, "checks").items():
        if name not in CHECKS:
            close = [c for c in CHECKS if c.split(".")[-1] == name.split(".")[-1]]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InputError(f"{where}: [checks.\"{name}\"]: unknown check '{name}'{hint}; "
                             f"known checks: {', '.join(CHECKS)}")
        checks[name] = _links(where, f"[checks.\"{name}\"]", table, clauses, why, name)
    sections = {}
    for name, table in _tables(where, document, "sections").items():
        if name not in SECTIONS:
            raise InputError(f"{where}: [sections.\"{name}\"]: unknown section '{name}'; "
                             f"expected one of {', '.join(SECTIONS)}")
        sections[name] = _links(where, f"[sections.\"{name}\"]", table, clauses, why, name)
    notes = _framework_notes(where, _tables(where, document, "frameworks"), clauses)
    return Mapping(clauses=clauses, checks=checks, sections=sections,
                   source="default" if path is None else str(path), why=why, as_of=as_of, notes=notes)


def by_framework(mapping: Mapping, checks: list[str]) -> dict[str, list[tuple[Clause, list[str]]]]:
    """Which of ``checks`` give evidence for which clause, grouped by framework.

    Frameworks and their clauses come in the order the clauses appear in the mapping file;
    each clause carries the checks of ``checks`` mapped to it, in the order given (repeats
    dropped). Clauses none of ``checks`` gives evidence for, and checks the mapping leaves
    out, do not appear.
    """
    given = list(dict.fromkeys(checks))
    grouped: dict[str, list[tuple[Clause, list[str]]]] = {}
    for clause_id, clause in mapping.clauses.items():
        evidence = [c for c in given if clause_id in mapping.checks.get(c, ())]
        if evidence:
            grouped.setdefault(clause.framework, []).append((clause, evidence))
    return grouped


# ------------------------------------------------------------------ the report's clause-by-status matrix


def compliance_section(mapping: Mapping, run) -> dict:
    """The report's compliance section for ``run``: EVERY clause of ``mapping`` with a status.

    A clause's status is the worst status (fail, warn, insufficient, pass) of the findings of
    the checks mapped to it; a clause no finding assesses but a report section with content for
    this run gives evidence for is "evidence" (in that section); any other clause is
    "not_assessed", with the reason: its ``outside_audit`` text, why its checks made no finding
    (their family was not run, the check is opt-in, the findings' own not-assessed
    explanation), why its sections have nothing for this run (no sign-off yet, monitoring is a
    trend report), or that nothing in the mapping gives evidence for it.

    Returns a dict: ``as_of`` (ISO date text or None), ``source`` (the mapping file or
    "default"), ``frameworks``: a list of ``{"framework", "note", "rows"}`` in the file's order,
    and ``rows``: every row, in the file's order. A row: ``clause`` (:class:`Clause`),
    ``status`` (one of :data:`MATRIX_STATUSES`), ``status_text``, ``checks`` (the checks with
    findings that were assessed: ``{"check", "status", "subjects"}``, worst first, subjects
    grouped by status), ``sections`` (the report section keys that show evidence for it),
    ``gaps`` (``(what, reason)`` for each mapped check or section that gave no evidence) and
    ``reason`` (for a clause not assessed, one line).
    """
    by_check: dict[str, list[dict]] = {}
    for entry in run.findings["findings"]:
        by_check.setdefault(entry["check"], []).append(entry)
    section_evidence = {name: _section_evidence(name, run) for name in SECTIONS}
    checks_of: dict[str, list[str]] = {}
    for check, ids in mapping.checks.items():
        for clause_id in ids:
            checks_of.setdefault(clause_id, []).append(check)
    sections_of: dict[str, list[str]] = {}
    for name, ids in mapping.sections.items():
        for clause_id in ids:
            sections_of.setdefault(clause_id, []).append(name)

    rows: list[dict] = []
    frameworks: dict[str, list[dict]] = {}
    for clause_id, clause in mapping.clauses.items():
        assessed, gaps = [], []
        for check in checks_of.get(clause_id, []):
            entries = by_check.get(check, [])
            judged = [e for e in entries if e["status"] in _FINDING_ORDER]
            if judged:
                groups = [(status, [e["subject"] or "overall" for e in judged if e["status"] == status])
                          for status in _FINDING_ORDER]
                groups = [(s, subjects) for s, subjects in groups if subjects]
                assessed.append({"check": check, "family": CHECKS[check], "status": groups[0][0], "subjects": groups})
            else:
                gaps.append((check, *_why_no_finding(check, entries, run)))
        assessed.sort(key=lambda a: _FINDING_ORDER.index(a["status"]))
        shown = []
        for name in sections_of.get(clause_id, []):
            key, short, full = section_evidence[name]
            if key is not None:
                shown.append(key)
            else:
                gaps.append((name, short, full))
        shown = list(dict.fromkeys(shown))
        if assessed:
            status, reason, reason_full = assessed[0]["status"], None, None
        elif shown:
            status, reason, reason_full = "evidence", None, None
        else:
            status = "not_assessed"
            if clause.outside_audit:
                reason = reason_full = clause.outside_audit
            elif gaps:
                shorts = list(dict.fromkeys(short for _, short, _ in gaps))
                # in the one-line matrix a family not run says it all; the appendix keeps every gap
                reason = "; ".join([r for r in shorts if r.endswith((" not run", " not assessed"))] or shorts)
                reason_full = "; ".join(dict.fromkeys(full for _, _, full in gaps))
            else:
                reason = reason_full = "no check or report section of this mapping gives evidence for it"
        # the families whose checks decided, worst status first: the matrix's one-line evidence
        families: dict[str, list[str]] = {}
        for a in assessed:
            named = families.setdefault(a["status"], [])
            if a["family"] not in named and not any(a["family"] in f for f in families.values()):
                named.append(a["family"])
        row = {"clause": clause, "status": status,
               "status_text": "evidence" if status == "evidence" else STATUS_WORDS[status],
               "checks": assessed, "families": [(s, f) for s, f in families.items() if f],
               "sections": shown, "gaps": [(what, full) for what, _, full in gaps],
               "reason": reason, "reason_full": reason_full}
        rows.append(row)
        frameworks.setdefault(clause.framework, []).append(row)
    return {
        "as_of": mapping.as_of.isoformat() if mapping.as_of else None,
        "source": mapping.source,
        "frameworks": [{"framework": name, "note": mapping.notes.get(name), "rows": items}
                       for name, items in frameworks.items()],
        "rows": rows,
        "by_id": {row["clause"].id: row for row in rows},
    }


def _why_no_finding(check: str, entries: list[dict], run) -> tuple[str, str]:
    """Why ``check`` has no pass, warn, fail or insufficient finding in ``run``: (a few words, a line)."""
    family = CHECKS[check]
    explained = [e["explanation"] for e in entries if e["status"] == "not_assessed" and e.get("explanation")]
    if explained:
        return f"{family} not assessed", f"{check} not assessed: {_one_line(explained[0]).rstrip('.')}"
    if run.details(family) is None:
        why = _one_line(run.absent(family)).rstrip(".")
        return (f"{family} not run",
                f"the {family} family was not run: {why[:1].lower() + why[1:] if why[1:2].islower() else why}")
    if CHECK_INFO[check].opt_in:
        return (f"{check} not asked for",
                f"{check} is made only when the audit config asks for it, and this one did not")
    return f"no {check} finding", f"{check} made no finding in this run (nothing it applies to)"


def _section_evidence(name: str, run) -> tuple[str | None, str, str]:
    """(the report section that shows evidence of mapping section ``name`` for ``run``, "", ""),
    or (None, why it has none for this run in a few words, and in a line)."""
    if name == "monitoring":
        return None, "needs a trend report (scrutiny trend)", MONITORING_REASON
    if name == "adverse_action":
        explained = run.details("attributions")
        if explained is None or getattr(explained, "adverse_action", None) is None:
            return None, "no adverse-action reasons in this run", (
                "the run stores no adverse-action reasons (only binary tabular data sets with attributions have them)")
    if name == "robustness_examples":
        attacked = run.details("robustness")
        if attacked is None or not getattr(attacked, "examples", None):
            return None, "no adversarial examples", "the run holds no adversarial examples"
    if name == "signoff":
        from scrutiny.audit.run.signoff import read_signoffs, verify_run

        if not read_signoffs(run.path):
            return None, "not signed yet", "no sign-off is recorded for this run yet (scrutiny sign)"
        if not verify_run(run.path).ok:
            return None, "sign-off does not verify", "the run's sign-off records do not verify (scrutiny verify)"
    return _REPORT_SECTION[name], "", ""


# ------------------------------------------------------------------ reading and checking


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _tables(where: str, document: dict, key: str) -> dict[str, dict]:
    tables = document.get(key, {})
    if not isinstance(tables, dict):
        raise InputError(f"{where}: '{key}' must be tables such as [{key}.\"NAME\"], got {_one_line(repr(tables))}")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise InputError(f"{where}: [{key}.\"{name}\"] must be a table, got {_one_line(repr(table))}")
    return tables


def _clauses(where: str, tables: dict[str, dict]) -> dict[str, Clause]:
    clauses = {}
    known = (*CLAUSE_FIELDS, *CLAUSE_OPTIONAL)
    for clause_id, table in tables.items():
        at = f"{where}: [clauses.\"{clause_id}\"]"
        for key in table:
            if key not in known:
                raise InputError(f"{at}: unknown key '{key}'; expected {', '.join(CLAUSE_FIELDS)} "
                                 f"and optionally {', '.join(CLAUSE_OPTIONAL)}")
        for key in known:
            if key not in table:
                if key in CLAUSE_OPTIONAL:
                    continue
                raise InputError(f"{at}: missing '{key}'; a clause needs {', '.join(CLAUSE_FIELDS)}")
            value = table[key]
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{at}: '{key}' must be non-empty text, got {_one_line(repr(value))}")
        clauses[clause_id] = Clause(id=clause_id, **{k: _one_line(table[k]) for k in known if k in table})
    return clauses


def _as_of(where: str, value) -> date | None:
    """The file's ``as_of``: a TOML date or "YYYY-MM-DD" text; None when the file leaves it out."""
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise InputError(f"{where}: 'as_of' must be a date such as \"2026-12-02\" (the day the clauses were last "
                     f"checked), got {_one_line(repr(value))}")


def _framework_notes(where: str, tables: dict[str, dict], clauses: dict[str, Clause]) -> dict[str, str]:
    named = list(dict.fromkeys(c.framework for c in clauses.values()))
    notes = {}
    for name, table in tables.items():
        at = f"{where}: [frameworks.\"{name}\"]"
        if name not in named:
            raise InputError(f"{at}: no clause has framework '{name}'; expected one of "
                             f"{', '.join(named) or '(no clauses defined)'}")
        for key in table:
            if key not in _FRAMEWORK_KEYS:
                raise InputError(f"{at}: unknown key '{key}'; expected note = \"...\"")
        note = table.get("note")
        if not isinstance(note, str) or not note.strip():
            raise InputError(f"{at}: 'note' must be non-empty text, got {_one_line(repr(note))}")
        notes[name] = _one_line(note)
    return notes


def _links(where: str, table_name: str, table: dict, clauses: dict[str, Clause], why: dict, name: str) -> list[str]:
    at = f"{where}: {table_name}"
    for key in table:
        if key not in _LINK_KEYS:
            raise InputError(f"{at}: unknown key '{key}'; expected clauses = [\"ID\", ...] and optionally why")
    ids = table.get("clauses")
    if ids is None:
        raise InputError(f"{at}: missing 'clauses'; give clauses = [\"ID\", ...] (an empty list for none)")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InputError(f"{at}: 'clauses' must be a list of clause ids, got {_one_line(repr(ids))}")
    for clause_id in ids:
        if clause_id not in clauses:
            raise InputError(f"{at}: clause '{clause_id}' is not defined; add a [clauses.\"{clause_id}\"] table")
        if clauses[clause_id].outside_audit:
            raise InputError(f"{at}: clause '{clause_id}' has outside_audit (no audit gives evidence for it); "
                             f"drop it from this table or drop its outside_audit")
    if "why" in table:
        if not isinstance(table["why"], str):
            raise InputError(f"{at}: 'why' must be text, got {_one_line(repr(table['why']))}")
        why[name] = _one_line(table["why"])
    return list(dict.fromkeys(ids))
