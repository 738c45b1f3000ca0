"""The adverse-action notices a run stored, read for the report (never recomputed).

The audit (:mod:`scrutiny.audit.attributions.adverse_action`) stores, for every explained test row the
model decided unfavourably, its principal reasons (up to four features pushing furthest
toward the unfavourable outcome, with the applicant's values) and whether one of them is a
prohibited basis, in which case no notice can be issued. This module reads the first rows of
that store and the counts over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Reason", "Notice", "StoredNotices", "stored_notices", "SHOWN_NOTICES"]

SHOWN_NOTICES = 6  # notices the report lists; the run stores them all


@dataclass
class Reason:
    feature: str
    value: str
    contribution: float      # toward the unfavourable outcome, in the explained output's units
    feature_index: int       # column of the stored attribution array
    slot: int                # column of the stored notice arrays
    prohibited: bool         # a prohibited basis: never stated as a reason


@dataclass
class Notice:
    index: int               # row of the stored notice arrays
    test_row: int
    position: int            # row of the stored attribution array
    decision: str
    favourable_probability: float
    reasons: list[Reason]    # the principal reasons, strongest first, prohibited ones included

    @property
    def cannot_issue(self) -> bool:
        return any(r.prohibited for r in self.reasons)

    @property
    def prohibited(self) -> list[Reason]:
        return [r for r in self.reasons if r.prohibited]


@dataclass
class StoredNotices:
    method: str
    file: str                # the run's array file the numbers come from
    n_unfavourable: int      # explained rows decided unfavourably: all of them are stored
    n_cannot_issue: int
    prohibited_bases: list[str]
    notices: list[Notice]    # the first ones, in the order of the explained rows


def stored_notices(run, *, max_rows: int = SHOWN_NOTICES) -> StoredNotices | None:
    """The first ``max_rows`` notices of ``run`` and the counts over all; None when the run
    stores none (not a binary tabular data set, no attributions, or audited before scrutiny
    stored notices)."""
    explained = run.details("attributions")
    summary = explained.adverse_action if explained is not None else None
    if summary is None:
        return None
    stored = run.arrays(summary.file)
    features = explained.features
    unfavourable = run.findings["subject"]["data"]["classes"][0]
    notices = []
    for k in range(min(max_rows, len(stored["test_row"]))):
        reasons = [Reason(feature=features[j], value=str(stored["value"][k, s]),
                          contribution=float(stored["contribution"][k, s]), feature_index=int(j), slot=s,
                          prohibited=bool(stored["prohibited"][k, s]))
                   for s, j in enumerate(stored["reason"][k]) if j >= 0]
        notices.append(Notice(index=k, test_row=int(stored["test_row"][k]), position=int(stored["position"][k]),
                              decision=unfavourable, favourable_probability=float(stored["proba"][k, 1]),
                              reasons=reasons))
    return StoredNotices(method=summary.method, file=summary.file, n_unfavourable=summary.n_unfavourable,
                         n_cannot_issue=summary.n_cannot_issue, prohibited_bases=summary.prohibited_bases,
                         notices=notices)
