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

from dataclasses import dataclass, field
from pathlib import Path

from scrutiny.audit.run.policy import CHECKS
from scrutiny.errors import InputError
from scrutiny.toml_file import read_toml

__all__ = ["Clause", "Mapping", "load_mapping", "by_framework", "DEFAULT_MAPPING", "SECTIONS", "CLAUSE_FIELDS", "compliance_section"]

DEFAULT_MAPPING = Path(__file__).with_name("compliance.toml")

# the report sections that are evidence in themselves
SECTIONS = ("model_card", "adverse_action", "reproducibility", "robustness_examples", "signoff", "monitoring")
CLAUSE_FIELDS = ("framework", "reference", "title", "summary")
_TOP_LEVEL = ("version", "clauses", "checks", "sections")
_LINK_KEYS = ("clauses", "why")


@dataclass(frozen=True)
class Clause:
    """One clause of one framework, e.g. EU AI Act Art. 15(5)."""

    id: str
    framework: str     # "EU AI Act", "NIST AI RMF 1.0", ...
    reference: str     # "Art. 15(5)", "MEASURE 2.7", "29 CFR 1607.4(D)", ...
    title: str
    summary: str


@dataclass(frozen=True)
class Mapping:
    """A loaded mapping. ``clauses`` keeps the file's order; ``checks`` and ``sections`` give
    clause ids in the order the file lists them."""

    clauses: dict[str, Clause]
    checks: dict[str, list[str]]
    sections: dict[str, list[str]]
    source: str                                        # "default" or the user's file
    why: dict[str, str] = field(default_factory=dict)  # check or section name -> its optional `why`

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
            unknown top-level key, a check not in the audit policy's ``CHECKS``, an unknown
            section, a clause table missing a field or with a non-text value, or a clause id
            that is referenced but not defined.
    """
    file = DEFAULT_MAPPING if path is None else Path(path)
    document = read_toml(file, "compliance mapping")
    where = f"compliance mapping {file}"
    unknown = [k for k in document if k not in _TOP_LEVEL]
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; expected version and [clauses.\"ID\"], "
                         f"[checks.\"CHECK\"], [sections.\"NAME\"] tables")
    if document.get("version", 1) != 1:
        raise InputError(f"{where}: version {document['version']!r} is not supported; expected 1")
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
    return Mapping(clauses=clauses, checks=checks, sections=sections,
                   source="default" if path is None else str(path), why=why)


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


def compliance_section(mapping: Mapping, run) -> list:
    """The report's compliance section for ``run``: per framework and clause, each check that bears on it
    with its subjects grouped by status."""
    entries = run.findings["findings"]
    by_check: dict[str, list] = {}
    for entry in entries:
        by_check.setdefault(entry["check"], []).append(entry)
    out = []
    for framework, items in by_framework(mapping, list(by_check)).items():
        clauses = []
        for clause, checks in items:
            evidence = []
            for check in checks:
                groups = []
                for status in ("fail", "warn", "insufficient", "pass"):
                    subjects = [e["subject"] or "overall" for e in by_check[check] if e["status"] == status]
                    if subjects:
                        groups.append((status, subjects))
                evidence.append({"check": check, "groups": groups})
            clauses.append({"clause": clause, "checks": evidence})
        out.append({"framework": framework, "clauses": clauses})
    return out


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
    for clause_id, table in tables.items():
        at = f"{where}: [clauses.\"{clause_id}\"]"
        for key in table:
            if key not in CLAUSE_FIELDS:
                raise InputError(f"{at}: unknown key '{key}'; expected {', '.join(CLAUSE_FIELDS)}")
        for key in CLAUSE_FIELDS:
            if key not in table:
                raise InputError(f"{at}: missing '{key}'; a clause needs {', '.join(CLAUSE_FIELDS)}")
            value = table[key]
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{at}: '{key}' must be non-empty text, got {_one_line(repr(value))}")
        clauses[clause_id] = Clause(id=clause_id, **{k: _one_line(table[k]) for k in CLAUSE_FIELDS})
    return clauses


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
    if "why" in table:
        if not isinstance(table["why"], str):
            raise InputError(f"{at}: 'why' must be text, got {_one_line(repr(table['why']))}")
        why[name] = _one_line(table["why"])
    return list(dict.fromkeys(ids))
