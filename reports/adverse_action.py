"""Principal reasons for adverse action, from the attributions a run stored.

US ECOA / Regulation B (12 CFR 1002.9(b)(2)) requires a creditor who takes adverse action to
state the principal reasons for it. For each explained test row the model decided
unfavourably, the reasons here are the (up to four) original features whose attributions
pushed its score furthest toward the unfavourable outcome, named as the data names them and
with the applicant's own values. Only features that pushed that way count: a row may have
fewer than four.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Reason", "Notice", "PREFERRED_METHODS", "adverse_action_notices"]

# model-agnostic and additive first: KernelSHAP values share out exactly the score being explained
PREFERRED_METHODS = ("kernel_shap", "integrated_gradients", "deeplift", "lime", "gradient_shap", "shap_gradient",
                     "feature_ablation", "input_x_gradient", "saliency", "occlusion")


@dataclass
class Reason:
    feature: str
    value: str
    contribution: float      # toward the unfavourable outcome, in the explained output's units
    feature_index: int       # column of the stored attribution array


@dataclass
class Notice:
    test_row: int
    position: int            # row of the stored attribution array
    decision: str
    favourable_probability: float
    reasons: list[Reason]


def adverse_action_notices(run, *, max_rows: int = 10, max_reasons: int = 4) -> tuple[str | None, list[Notice]]:
    """(method used, notices) for up to ``max_rows`` explained rows with an unfavourable decision.

    Needs a binary tabular run with attributions; otherwise (None, []).
    """
    findings = run.findings
    subject = findings["subject"]["data"]
    attributions = findings["details"].get("attributions")
    if subject["task"] != "tabular" or len(subject["classes"]) != 2 or not attributions:
        return None, []
    import pandas as pd

    method = next((m for m in PREFERRED_METHODS if m in attributions["methods"]), None)
    if method is None:
        return None, []
    stored = run.arrays("arrays/attributions.npz")
    values, target, rows = stored[method], stored["target"], stored["rows"]
    predictions = run.arrays("arrays/predictions.npz")
    raw = pd.read_parquet(run.file("arrays/explained_rows.parquet"))
    features = attributions["features"]
    classes = subject["classes"]
    favourable, unfavourable = 1, 0  # scrutiny's convention for binary tasks
    notices = []
    for i, row in enumerate(rows):
        if predictions["y_pred"][row] != unfavourable:
            continue
        # attributions explain the target class's score: positive pushes toward the target
        push = values[i] if target[i] == unfavourable else -values[i]
        order = [j for j in np.argsort(-push, kind="stable") if push[j] > 0][:max_reasons]
        notices.append(Notice(
            test_row=int(row),
            position=i,
            decision=classes[unfavourable],
            favourable_probability=float(predictions["proba"][row, favourable]),
            reasons=[Reason(features[j], _value(raw.iloc[i][features[j]]), float(push[j]), int(j)) for j in order],
        ))
        if len(notices) == max_rows:
            break
    return method, notices


def _value(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)
