"""The audit policy: thresholds per check, from ``default_policy.toml`` and the user's file.

A user's ``[checks."NAME"]`` table replaces the default one of the same check whole (so a
bound can be dropped by leaving it out); checks the user does not name keep the defaults.
The ``[groups]`` table holds the minimums a comparison of two groups needs to be decided
(``min_rows``, ``min_expected_positives``: whole numbers, 0 for none); a user's keys
replace the default ones they name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from scrutiny.audit.run.findings import BOUNDS
from scrutiny.errors import InputError
from scrutiny.modality import MODALITIES
from scrutiny.toml_file import read_toml

__all__ = ["CHECKS", "CHECK_INFO", "CheckInfo", "EVIDENCE", "GROUP_KEYS", "Policy", "load_policy", "DEFAULT_POLICY",
           "MODEL_STATUSES", "EVIDENCE_ORDER", "kind_of", "is_model_finding", "verdicts"]

DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")


@dataclass(frozen=True)
class CheckInfo:
    """One check an audit can make.

    Attributes:
        family: the audit family that makes it.
        subject: what a finding's ``subject`` names (None: the model as a whole, no subject).
        compares_groups: its findings compare groups of rows, and carry a ``Comparison`` that
            the policy's ``[groups]`` minimums apply to.
        extra_keys: keys its policy table takes beyond the bounds (and must have).
        opt_in: made only when the audit config asks for it (no "not assessed" finding otherwise).
        about: what a failure says something about: ``"model"`` (the model falls short: its
            accuracy, robustness, fairness, its reliance on protected inputs) or ``"evidence"`` (the
            audit's own evidence cannot be relied on: explanation methods that fail their sanity
            checks, an attack evaluation flagged as weak, a twin that differs from the model). The
            report gives a verdict on each apart.
    """

    family: str
    subject: str | None = None
    compares_groups: bool = False
    extra_keys: tuple[str, ...] = ()
    opt_in: bool = False
    about: str = "model"


EVIDENCE = "evidence"  # CheckInfo.about of a check on the audit's own evidence (the rest: "model")
MODEL_STATUSES = ("pass", "warn", "fail")  # a model check's status that speaks about the model, best first
# the evidence verdict's order, best first: a comparison too small to judge or a check not made is a
# gap in the evidence, smaller than an evidence check that warns or fails
EVIDENCE_ORDER = ("pass", "not_assessed", "insufficient", "warn", "fail")
GROUPS = "protected attribute or pair"  # "sex", or "sex × race"
# every check an audit makes, in the order families list them
CHECK_INFO: dict[str, CheckInfo] = {
    "performance.balanced_accuracy": CheckInfo("performance"),
    "performance.calibration_error": CheckInfo("performance"),
    "performance.twin_difference": CheckInfo("performance", about=EVIDENCE),
    "attributions.completeness": CheckInfo("attributions", subject="method", about=EVIDENCE),
    "attributions.sampling_error": CheckInfo("attributions", subject="method", about=EVIDENCE),
    "attributions.agreement": CheckInfo("attributions", subject="pair of methods", about=EVIDENCE),
    "attributions.randomisation": CheckInfo("attributions", subject="method", about=EVIDENCE),
    "attributions.deletion": CheckInfo("attributions", subject="method", about=EVIDENCE),
    "attributions.stability": CheckInfo("attributions", subject="method", about=EVIDENCE),
    "attributions.reason_stability": CheckInfo("attributions", subject="method", about=EVIDENCE),
    "attributions.first_step": CheckInfo("attributions", subject="method", about=EVIDENCE),
    "attributions.protected_reliance": CheckInfo("attributions", subject="protected input"),
    "attributions.prohibited_basis_notices": CheckInfo("attributions"),
    "robustness.robust_accuracy": CheckInfo("robustness", subject="radius", extra_keys=("at_eps",)),
    "robustness.weak_evaluation": CheckInfo("robustness", about=EVIDENCE),
    "robustness.certified_accuracy": CheckInfo("robustness", subject="radius", extra_keys=("at_radius",),
                                                       opt_in=True),
    "fairness.data.disparate_impact": CheckInfo("fairness", subject=GROUPS, compares_groups=True),
    "fairness.disparate_impact": CheckInfo("fairness", subject=GROUPS, compares_groups=True),
    "fairness.statistical_parity_difference": CheckInfo("fairness", subject=GROUPS, compares_groups=True),
    "fairness.equal_opportunity_difference": CheckInfo("fairness", subject=GROUPS, compares_groups=True),
    "fairness.average_odds_difference": CheckInfo("fairness", subject=GROUPS, compares_groups=True),
    "fairness.impact_ratio": CheckInfo("fairness", subject=GROUPS, compares_groups=True),
    "fairness.scoring_rate_impact_ratio": CheckInfo("fairness", subject=GROUPS, compares_groups=True),
}
CHECKS: dict[str, str] = {name: info.family for name, info in CHECK_INFO.items()}  # check -> family
GROUP_KEYS = ("min_rows", "min_expected_positives")
RADIUS_KEYS = {"at_eps": False, "at_radius": True}  # where a robustness check is gated: whether 0 is a radius  # the [groups] table: minimums of a two-group comparison


@dataclass(frozen=True)
class Policy:
    checks: dict[str, dict]          # check -> its table (bounds; at_eps, at_radius: where robustness is gated)
    source: str                      # "default" or the user's file
    groups: dict[str, int]           # GROUP_KEYS -> the minimum a two-group comparison needs

    def threshold(self, check: str) -> dict[str, float]:
        return {k: v for k, v in self.checks[check].items() if k in BOUNDS}

    def robust_eps(self, task: str) -> float:
        """The radius robust accuracy is gated at, for ``task`` data."""
        return self._radius("robustness.robust_accuracy", "at_eps", task)

    def certified_radius(self, task: str) -> float:
        """The L2 radius certified accuracy is gated at, for ``task`` data."""
        return self._radius("robustness.certified_accuracy", "at_radius", task)

    def _radius(self, check: str, key: str, task: str) -> float:
        at = self.checks[check][key]
        if isinstance(at, dict) and task not in at:
            raise InputError(f"policy {self.source}: [checks.\"{check}\"] {key} gives no radius for {task} data; "
                             f"add {task} = …")
        return float(at[task] if isinstance(at, dict) else at)


def load_policy(path: str | os.PathLike[str] | None = None) -> Policy:
    """The default policy, with the tables of the file at ``path`` (if given) replacing its own.

    Example:
        >>> policy = load_policy()  # doctest: +SKIP
        >>> policy.threshold("fairness.disparate_impact")  # doctest: +SKIP
        {'fail_below': 0.8, 'fail_above': 1.25}
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    checks, groups = _read(DEFAULT_POLICY)
    if path is None:
        return Policy(checks=checks, source="default", groups=groups)
    user_checks, user_groups = _read(Path(path))
    return Policy(checks={**checks, **user_checks}, source=str(path), groups={**groups, **user_groups})


def _read(path: Path) -> tuple[dict[str, dict], dict[str, int]]:
    document = read_toml(path, "policy")
    unknown = set(document) - {"version", "checks", "groups"}
    if unknown:
        raise InputError(f"policy {path}: unknown key {sorted(unknown)[0]!r}; expected version, [groups] and "
                         f"[checks.\"NAME\"] tables")
    if document.get("version", 1) != 1:
        raise InputError(f"policy {path}: version {document['version']!r} is not supported; expected 1")
    checks = document.get("checks", {})
    if not isinstance(checks, dict):
        raise InputError(f"policy {path}: 'checks' must be tables such as [checks.\"fairness.disparate_impact\"]")
    for name, table in checks.items():
        _check_table(path, name, table)
    return {name: dict(table) for name, table in checks.items()}, _groups(path, document.get("groups", {}))


def _groups(path: Path, table) -> dict[str, int]:
    if not isinstance(table, dict):
        raise InputError(f"policy {path}: 'groups' must be a table ([groups] with {' and '.join(GROUP_KEYS)})")
    for key, value in table.items():
        if key not in GROUP_KEYS:
            raise InputError(f"policy {path}: [groups]: unknown key '{key}'; expected {' or '.join(GROUP_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"policy {path}: [groups] {key} must be a whole number of 0 or more, got {value!r}")
    return dict(table)


def _check_table(path: Path, name: str, table) -> None:
    where = f"policy {path}: [checks.\"{name}\"]"
    if name not in CHECKS:
        close = [c for c in CHECKS if c.split(".")[-1] == name.split(".")[-1]]
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InputError(f"policy {path}: unknown check '{name}'{hint}; known checks: {', '.join(CHECKS)}")
    if not isinstance(table, dict):
        raise InputError(f"{where} must be a table of bounds ({', '.join(BOUNDS)})")
    extra = CHECK_INFO[name].extra_keys
    allowed = set(BOUNDS) | set(extra)
    for key, value in table.items():
        if key not in allowed:
            raise InputError(f"{where}: unknown key '{key}'; expected {', '.join(sorted(allowed))}")
        if key in RADIUS_KEYS:
            _check_radius(where, key, value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{where}: {key} must be a finite number, got {value!r}")
    for key in extra:
        if key not in table:
            per_type = ", ".join(f"{task} = …" for task in sorted(MODALITIES))
            raise InputError(f"{where}: needs {key} (a number, or {{ {per_type} }})")
    for side in ("below", "above"):
        fail, warn = table.get(f"fail_{side}"), table.get(f"warn_{side}")
        if fail is not None and warn is not None and (warn < fail if side == "below" else warn > fail):
            raise InputError(f"{where}: warn_{side} = {warn} lies beyond fail_{side} = {fail}; a warning must come first")
    low, high = table.get("fail_below"), table.get("fail_above")
    if low is not None and high is not None and low > high:
        raise InputError(f"{where}: fail_below = {low} is above fail_above = {high}; nothing could pass")


def _check_radius(where: str, key: str, value) -> None:
    values = value.values() if isinstance(value, dict) else [value]
    if isinstance(value, dict) and (set(value) - set(MODALITIES) or not value):
        raise InputError(f"{where}: {key} takes the keys {' and '.join(sorted(MODALITIES))}, got {sorted(value)}")
    zero = RADIUS_KEYS[key]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (v == 0 and not zero):
            raise InputError(f"{where}: {key} must be a {'number >= 0' if zero else 'positive number'} (per data type), "
                             f"got {v!r}")


def kind_of(check: str) -> str:
    """``"model"`` or ``"evidence"``: what a finding of ``check`` says something about."""
    return CHECK_INFO[check].about if check in CHECK_INFO else "model"


def is_model_finding(finding: dict) -> bool:
    """A finding that speaks about the model: a model check that passed, warned or failed (a model
    check with insufficient data or not assessed is a gap in the evidence)."""
    return kind_of(finding["check"]) == "model" and finding["status"] in MODEL_STATUSES


def verdicts(findings: list[dict]) -> dict[str, str]:
    """The verdict on the model and the verdict on the evidence, each a status (``"not_assessed"``
    where no finding speaks to it), from findings.json entries."""
    model = [f["status"] for f in findings if is_model_finding(f)]
    evidence = [f["status"] for f in findings if not is_model_finding(f)]
    return {"model": max(model, key=MODEL_STATUSES.index, default="not_assessed"),
            "evidence": max(evidence, key=EVIDENCE_ORDER.index, default="not_assessed")}

