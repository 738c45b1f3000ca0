"""Findings: one gated check per entry, and the rule that turns a value into a status.

A finding is what a reviewer reads first: which check, on what (an attribute, a method, an
ε), the measured value with its interval where one exists, the policy's thresholds, the
status, and one plain sentence. ``findings.json`` holds them as a list, next to the detailed
results each family produced (``details``), and is checked against
``findings.schema.json`` (shipped beside this module) when written and when read.

A finding that compares two groups (the fairness checks) also carries a :class:`Comparison`:
the value that means "no difference" (0 for a difference, 1 for a ratio), the rows behind the
smaller group's rate(s), the favourable outcomes that group would have at the pooled rate
(its *expected positives*), and the policy's minimums for both.

Status rule, the same for every check, in this order:

- ``fail``, clearly: the interval lies wholly beyond a ``fail_below`` / ``fail_above`` bound
  (however small the groups: the data leave no doubt);
- ``insufficient`` (shown as "insufficient data"), for comparisons only: the smaller group has
  fewer rows or expected positives than the policy's minimum, or the interval is too wide to
  decide: it holds the no-difference value *and* reaches past a fail bound (the data cannot
  tell no difference from a failing one);
- ``fail``: the value is outside a fail bound;
- ``warn``: otherwise, the value is outside a ``warn_below`` / ``warn_above`` bound, or its
  interval reaches past a fail bound (the pass is not statistically secure), or the value
  could not be measured (NaN), or the check carries caveats;
- ``pass``: none of these.

A check the audit could not make at all (a prediction-only audit has no model to explain or
attack; an ONNX model has no gradients) is a finding too, ``not_assessed`` (shown as "not
assessed") with the reason as its explanation and first caveat, and no value: it is listed,
counted and reported, never read as a pass.

Verdict: ``fail`` if any finding fails, else ``warn`` if any warns, else ``pass``.
Insufficient and not-assessed findings are counted apart and never decide the verdict: an
audit with only passes and insufficient findings passes, with those counts shown beside it.

The schema stays at version 1: ``counts.insufficient``, ``counts.not_assessed`` and a finding's
``comparison`` are optional, so runs written before them still validate (read a missing count as 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from scrutiny.errors import InputError

__all__ = ["SCHEMA_VERSION", "STATUSES", "STATUS_WORDS", "Comparison", "Finding", "status_of", "undecided",
           "schema", "validate_findings", "findings_document", "verdict_of"]

SCHEMA_VERSION = 1
STATUSES = ("pass", "warn", "fail", "insufficient", "not_assessed")
STATUS_WORDS = {"pass": "pass", "warn": "warn", "fail": "fail", "insufficient": "insufficient data",
                "not_assessed": "not assessed"}
BOUNDS = ("fail_below", "fail_above", "warn_below", "warn_above")


@dataclass(frozen=True)
class Comparison:
    """What a comparison of two groups rests on, and the policy's minimums for it.

    Args:
        no_difference: the value meaning equal treatment (0 for a difference, 1 for a ratio).
        rows: rows behind the smaller group's rate(s) (for a rate among the rows with one true
            label, those rows only).
        expected_positives: favourable outcomes the smaller group would have at the pooled rate.
        group: the smaller group, in words (``privileged group``, ``category 'b'``).
        among: the rows the rate is taken over, in words (``""`` for all the group's rows).
        min_rows, min_expected_positives: the policy's minimums (0: none).
    """

    no_difference: float
    rows: int
    expected_positives: float
    group: str
    among: str
    min_rows: int
    min_expected_positives: int

    def to_dict(self) -> dict:
        return {"no_difference": self.no_difference, "rows": self.rows,
                "expected_positives": float(self.expected_positives), "group": self.group,
                "among": self.among, "min_rows": self.min_rows, "min_expected_positives": self.min_expected_positives}


@dataclass
class Finding:
    """One check on one subject.

    Args:
        check: the policy's name of the check (``"fairness.disparate_impact"``).
        family: ``performance``, ``attributions``, ``robustness`` or ``fairness``.
        metric: what ``value`` is, in words.
        value: the measurement (NaN when it could not be made).
        explanation: one plain-language sentence on what the value means.
        subject: what was checked: an attribute, a method, a pair of methods, ….
        interval: (low, high) at ``confidence`` where the value has one.
        threshold: the policy's bounds for this check.
        caveats: reasons the value should not be trusted on its own; each makes a pass a warning.
        comparison: for a comparison of two groups, what it rests on (see :class:`Comparison`).
        not_assessed: why the check could not be made at all (its status is then ``not_assessed``).
    """

    check: str
    family: str
    metric: str
    value: float
    explanation: str
    subject: str | None = None
    interval: tuple[float, float] | None = None
    confidence: float | None = None
    threshold: dict[str, float] = field(default_factory=dict)
    caveats: list[str] = field(default_factory=list)
    comparison: Comparison | None = None
    not_assessed: str | None = None

    @property
    def id(self) -> str:
        return f"{self.check}[{self.subject}]" if self.subject else self.check

    @property
    def status(self) -> str:
        if self.not_assessed:
            return "not_assessed"
        return status_of(self.value, self.threshold, self.interval, self.caveats, self.comparison)

    @property
    def all_caveats(self) -> list[str]:
        """The caveats, and first why the data cannot decide where they cannot."""
        if self.not_assessed:
            return list(self.caveats)  # the explanation says why
        reason = undecided(self.value, self.threshold, self.interval, self.comparison)
        return [reason, *self.caveats] if reason else list(self.caveats)

    def to_dict(self) -> dict:
        interval = None
        if self.interval is not None and all(math.isfinite(v) for v in self.interval):
            interval = {"low": _number(self.interval[0]), "high": _number(self.interval[1]),
                        "confidence": self.confidence}
        return {
            "id": self.id,
            "check": self.check,
            "family": self.family,
            "subject": self.subject,
            "metric": self.metric,
            "value": _number(self.value),
            "interval": interval,
            "threshold": {k: self.threshold[k] for k in BOUNDS if k in self.threshold},
            "status": self.status,
            "caveats": self.all_caveats,
            "explanation": self.explanation,
            "comparison": self.comparison.to_dict() if self.comparison else None,
        }


def status_of(value: float, threshold: dict, interval=None, caveats=(), comparison: Comparison | dict | None = None) -> str:
    """pass, warn, fail or insufficient (see the module docstring)."""
    if undecided(value, threshold, interval, comparison):
        return "insufficient"
    if value is None or not math.isfinite(value):
        return "warn"
    low, high = threshold.get("fail_below"), threshold.get("fail_above")
    if (low is not None and value < low) or (high is not None and value > high):
        return "fail"
    warn_low, warn_high = threshold.get("warn_below"), threshold.get("warn_above")
    if (warn_low is not None and value < warn_low) or (warn_high is not None and value > warn_high):
        return "warn"
    if _finite(interval):
        if (low is not None and interval[0] < low) or (high is not None and interval[1] > high):
            return "warn"
    return "warn" if caveats else "pass"


def undecided(value: float, threshold: dict, interval=None, comparison: Comparison | dict | None = None) -> str | None:
    """Why a comparison's data cannot decide its check, in one sentence; None when they can
    (every non-comparison, and every comparison whose interval lies wholly past a fail bound)."""
    if comparison is None:
        return None
    c = comparison if isinstance(comparison, dict) else comparison.to_dict()
    low, high = threshold.get("fail_below"), threshold.get("fail_above")
    if _finite(interval) and ((low is not None and interval[1] < low) or (high is not None and interval[0] > high)):
        return None  # a clear failure, however small the groups
    among = f" {c['among']}" if c["among"] else ""
    short = []
    if c["rows"] < c["min_rows"]:
        short.append(f"{c['rows']} rows{among} (policy minimum {c['min_rows']})")
    if c["expected_positives"] < c["min_expected_positives"]:
        short.append(f"{c['expected_positives']:.1f} expected favourable outcomes{among} at the pooled rate "
                     f"(policy minimum {c['min_expected_positives']})")
    if short:
        return f"insufficient data: the {c['group']} has " + " and ".join(short) + "; the value is mostly noise"
    if _finite(interval) and interval[0] <= c["no_difference"] <= interval[1] and (
            (low is not None and interval[0] < low) or (high is not None and interval[1] > high)):
        bound = low if low is not None and interval[0] < low else high
        return (f"insufficient data: the interval [{interval[0]:.4g}, {interval[1]:.4g}] holds both no difference "
                f"({c['no_difference']:g}) and the fail bound {bound:g}; too wide to decide")
    return None


def _finite(interval) -> bool:
    return interval is not None and all(v is not None and math.isfinite(v) for v in interval)


def verdict_of(counts: dict) -> str:
    """fail if any finding fails, else warn if any warns, else pass (insufficient and not assessed never decide)."""
    return "fail" if counts.get("fail") else ("warn" if counts.get("warn") else "pass")


def _number(value) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads((Path(__file__).with_name("findings.schema.json")).read_text())


def validate_findings(document: dict, *, where: str = "findings.json") -> None:
    """Raise InputError naming ``where`` and the first place the document breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        place = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InputError(f"{where}: does not match the findings schema v{SCHEMA_VERSION} at {place}: {error.message}")
    from .family import validate_details

    validate_details(document["details"], where=where)


def findings_document(findings: list[Finding], *, details: dict, subject: dict) -> dict:
    """The content of ``findings.json``: everything deterministic, no timings or dates."""
    entries = [f.to_dict() for f in findings]
    ids = [e["id"] for e in entries]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise ValueError(f"two findings share the id {duplicate}")
    counts = {s: sum(e["status"] == s for e in entries) for s in STATUSES}
    return {
        "schema_version": SCHEMA_VERSION,
        "subject": subject,
        "verdict": verdict_of(counts),
        "counts": counts,
        "findings": entries,
        "details": details,
    }
