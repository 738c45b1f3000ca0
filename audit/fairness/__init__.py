"""Fairness: whether the model treats the groups a protected attribute defines alike.

aif360's group metrics (disparate impact, statistical parity, equal opportunity, average odds)
per protected attribute and intersection, on the training labels and on the model's test
predictions, with bootstrap intervals; impact ratios per category (NYC LL144); individual
consistency; mitigation (reweighing, equalized-odds post-processing) measured before and after.
Entry point: :func:`.family.run`; details: :class:`FairnessDetails`.
"""

from scrutiny.lazy import lazy_exports

_EXPORTS = {
    "run": "scrutiny.audit.fairness.family",
    **dict.fromkeys(["assess_fairness", "mitigate", "Fairness"], "scrutiny.audit.fairness.assess"),
    **dict.fromkeys(["FairnessDetails"], "scrutiny.audit.fairness.details"),
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
