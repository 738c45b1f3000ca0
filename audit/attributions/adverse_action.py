"""Principal reasons for adverse action, and the notices that cannot be issued.

US ECOA / Regulation B (12 CFR 1002.9(b)(2)) requires a creditor who takes adverse action to
state the principal reasons for it. For each explained test row the model decides
unfavourably, the reasons here are the (up to four) original features whose attributions push
its score furthest toward the unfavourable outcome, with the applicant's own values. Only
features that push that way count: a row may have fewer than four.

A creditor may not take a prohibited basis into account (12 CFR 1002.6(b)): when one of a
row's principal reasons is a prohibited basis of the data set
(:attr:`~scrutiny.models.spec.DatasetSpec.prohibited_bases`), no lawful notice can be written
for that decision, and such a row is marked as one that cannot be issued. How many there are
is itself a finding: the model's decisions rely on a prohibited basis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .details import ADVERSE_ACTION_ARRAYS as ARRAYS
from .details import AdverseActionSummary
from .registry import REASON_METHODS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PREFERRED_METHODS", "MAX_REASONS", "ARRAYS", "Notices", "adverse_action_notices", "value_text"]

# model-agnostic and additive first: KernelSHAP values share out exactly the score being explained
PREFERRED_METHODS = REASON_METHODS  # the registry's order of preference for a notice's reasons
MAX_REASONS = 4
FAVOURABLE, UNFAVOURABLE = 1, 0  # scrutiny's class indices for binary tasks


@dataclass
class Notices:
    """Every explained row decided unfavourably, in the order of the explained rows.

    Reasons are padded to :data:`MAX_REASONS` columns: feature index -1, contribution NaN,
    value "" where a row has fewer.
    """

    method: str
    features: list[str]
    prohibited_bases: list[str]   # the data set's, whether or not the model reads them
    n_explained: int
    test_rows: np.ndarray         # (M,) rows of the test split
    positions: np.ndarray         # (M,) rows of the stored attribution arrays
    proba: np.ndarray             # (M, 2) class probabilities
    reasons: np.ndarray           # (M, MAX_REASONS) feature indices, strongest first
    contributions: np.ndarray     # (M, MAX_REASONS) push toward the unfavourable outcome
    values: np.ndarray            # (M, MAX_REASONS) the applicant's values, as text
    prohibited: np.ndarray        # (M, MAX_REASONS) whether the reason is a prohibited basis

    @property
    def cannot_issue(self) -> np.ndarray:
        """(M,) rows whose principal reasons include a prohibited basis."""
        return np.any(self.prohibited, axis=1)

    @property
    def prohibited_inputs(self) -> list[str]:
        """The prohibited bases the model reads: the only ones a reason can name."""
        return [f for f in self.features if f in self.prohibited_bases]

    def arrays(self) -> dict[str, np.ndarray]:
        """What the run stores in :data:`ARRAYS` (plain arrays, no pickles)."""
        return {"test_row": self.test_rows, "position": self.positions, "proba": self.proba.astype(np.float32),
                "reason": self.reasons, "contribution": self.contributions.astype(np.float32),
                "value": self.values, "prohibited": self.prohibited, "cannot_issue": self.cannot_issue}

    def summary(self) -> AdverseActionSummary:
        """The run's details entry: the counts behind the finding."""
        shown = self.reasons >= 0
        by_basis = {name: int((self.prohibited & (self.reasons == self.features.index(name))).any(axis=1).sum())
                    for name in self.prohibited_inputs}
        return AdverseActionSummary(
            method=self.method, file=ARRAYS, max_reasons=MAX_REASONS, prohibited_bases=list(self.prohibited_bases),
            prohibited_inputs=list(self.prohibited_inputs), n_explained=self.n_explained,
            n_unfavourable=len(self.test_rows), n_cannot_issue=int(self.cannot_issue.sum()),
            n_without_reasons=int((~shown.any(axis=1)).sum()), cannot_issue_by_basis=by_basis)


def adverse_action_notices(
    *,
    per_feature: dict[str, np.ndarray],
    target: np.ndarray,
    rows: np.ndarray,
    proba: np.ndarray,
    raw: pd.DataFrame,
    features: list[str],
    prohibited_bases: list[str],
) -> Notices | None:
    """The notices of every explained row decided unfavourably.

    Args:
        per_feature: method -> attributions per original feature, shape (N, n_features); the
            first of :data:`PREFERRED_METHODS` present is used.
        target: the class each row's attributions explain, shape (N,).
        rows: the explained rows' indices in the test split, shape (N,).
        proba: the model's class probabilities for the explained rows, shape (N, 2).
        raw: the explained rows' raw features (N rows, original columns).
        features: names of the attribution columns.
        prohibited_bases: columns a notice may not state as reasons.

    Returns None when no method of :data:`PREFERRED_METHODS` was run.
    """
    method = next((m for m in PREFERRED_METHODS if m in per_feature), None)
    if method is None:
        return None
    values = np.asarray(per_feature[method], dtype=np.float64)
    positions = np.flatnonzero(proba.argmax(axis=1) == UNFAVOURABLE)
    m = len(positions)
    reasons = np.full((m, MAX_REASONS), -1, dtype=np.int64)
    contributions = np.full((m, MAX_REASONS), np.nan)
    texts = np.full((m, MAX_REASONS), "", dtype=object)
    is_prohibited = np.array([f in prohibited_bases for f in features])
    for k, i in enumerate(positions):
        # attributions explain the target class's score: positive pushes toward the target
        push = values[i] if target[i] == UNFAVOURABLE else -values[i]
        order = [j for j in np.argsort(-push, kind="stable") if push[j] > 0][:MAX_REASONS]
        reasons[k, :len(order)] = order
        contributions[k, :len(order)] = push[order]
        texts[k, :len(order)] = [value_text(raw.iloc[i][features[j]]) for j in order]
    return Notices(
        method=method, features=list(features), prohibited_bases=list(prohibited_bases), n_explained=len(rows),
        test_rows=np.asarray(rows, dtype=np.int64)[positions], positions=positions.astype(np.int64),
        proba=np.asarray(proba, dtype=np.float64)[positions], reasons=reasons, contributions=contributions,
        values=texts.astype(str) if m else np.zeros((0, MAX_REASONS), dtype="<U1"),
        prohibited=(reasons >= 0) & is_prohibited[np.maximum(reasons, 0)],
    )


def value_text(value) -> str:
    """A raw value as a notice shows it (whole floats without the .0)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def explained_notices(model, dataset, result, *, preprocessor, device: str | None = None) -> Notices | None:
    """The notices of an audit's explained rows (:class:`~scrutiny.audit.attributions.explain.Explanations`);
    None unless the data set is tabular with a favourable class of two."""
    from scrutiny.models.training import predict_proba

    spec = dataset.spec
    if spec.task != "tabular" or not spec.is_binary or spec.favourable_label is None:
        return None
    raw = dataset.test.X.iloc[result.rows].reset_index(drop=True)
    proba = predict_proba(model, preprocessor.transform(raw), device=device)
    target = next(iter(result.attributions.values())).target
    return adverse_action_notices(per_feature=result.per_feature, target=target, rows=result.rows, proba=proba,
                                  raw=raw, features=list(result.space.names), prohibited_bases=spec.prohibited_bases)


def notices_finding(notices: Notices) -> dict:
    """metric, value and explanation of the ``attributions.prohibited_basis_notices`` finding."""
    m, k = len(notices.test_rows), int(notices.cannot_issue.sum())
    how = f"principal reasons ({notices.method}, top {MAX_REASONS})"
    if m == 0:
        explanation = f"None of the {notices.n_explained} explained rows was decided unfavourably: no notice to check."
    elif k == 0:
        explanation = (f"None of the {m} explained rows decided unfavourably has a prohibited basis "
                       f"({', '.join(notices.prohibited_inputs)}) among its {how}.")
    else:
        counts = ", ".join(f"{name} in {n}" for name, n in notices.summary().cannot_issue_by_basis.items() if n)
        explanation = (f"{k} of the {m} explained rows decided unfavourably ({k / m:.0%}) cannot get an adverse-action "
                       f"notice: their {how} include a prohibited basis ({counts}); the decisions rely on it.")
    return {"value": k, "explanation": explanation,
            "metric": f"explained rows decided unfavourably whose top-{MAX_REASONS} reasons include a prohibited basis"}
