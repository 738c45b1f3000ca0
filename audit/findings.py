"""Findings: one gated check per entry, and the rule that turns a value into pass/warn/fail.

A finding is what a reviewer reads first: which check, on what (an attribute, a method, an
ε), the measured value with its interval where one exists, the policy's thresholds, the
status, and one plain sentence. ``findings.json`` holds them as a list, next to the detailed
results each family produced (``details``), and is checked against
``findings.schema.json`` (shipped beside this module) when written and when read.

Status rule, the same for every check:

- ``fail``: the value is outside a ``fail_below`` / ``fail_above`` bound;
- ``warn``: otherwise, the value is outside a ``warn_below`` / ``warn_above`` bound, or its
  interval reaches past a fail bound (the pass is not statistically secure), or the value
  could not be measured (NaN), or the check carries caveats (e.g. a group too small to trust);
- ``pass``: none of these.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from scrutiny.models.errors import InputError

__all__ = ["SCHEMA_VERSION", "STATUSES", "Finding", "status_of", "schema", "validate_findings", "findings_document"]

SCHEMA_VERSION = 1
STATUSES = ("pass", "warn", "fail")
BOUNDS = ("fail_below", "fail_above", "warn_below", "warn_above")


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
        caveats: reasons the value should not be trusted on its own; each makes it a warning.
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

    @property
    def id(self) -> str:
        return f"{self.check}[{self.subject}]" if self.subject else self.check

    @property
    def status(self) -> str:
        return status_of(self.value, self.threshold, self.interval, self.caveats)

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
            "caveats": list(self.caveats),
            "explanation": self.explanation,
        }


def status_of(value: float, threshold: dict, interval=None, caveats=()) -> str:
    """pass, warn or fail (see the module docstring)."""
    if value is None or not math.isfinite(value):
        return "warn"
    low, high = threshold.get("fail_below"), threshold.get("fail_above")
    if (low is not None and value < low) or (high is not None and value > high):
        return "fail"
    warn_low, warn_high = threshold.get("warn_below"), threshold.get("warn_above")
    if (warn_low is not None and value < warn_low) or (warn_high is not None and value > warn_high):
        return "warn"
    if interval is not None and all(math.isfinite(v) for v in interval):
        if (low is not None and interval[0] < low) or (high is not None and interval[1] > high):
            return "warn"
    return "warn" if caveats else "pass"


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


def findings_document(findings: list[Finding], *, details: dict, subject: dict) -> dict:
    """The content of ``findings.json``: everything deterministic, no timings or dates."""
    entries = [f.to_dict() for f in findings]
    ids = [e["id"] for e in entries]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise ValueError(f"two findings share the id {duplicate}")
    counts = {s: sum(e["status"] == s for e in entries) for s in STATUSES}
    verdict = "fail" if counts["fail"] else ("warn" if counts["warn"] else "pass")
    return {
        "schema_version": SCHEMA_VERSION,
        "subject": subject,
        "verdict": verdict,
        "counts": counts,
        "findings": entries,
        "details": details,
    }
