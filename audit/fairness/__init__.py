"""Fairness: whether the model treats the groups a protected attribute defines alike.

aif360's group metrics (disparate impact, statistical parity, equal opportunity, average odds)
per protected attribute and intersection, on the training labels and on the model's test
predictions, with bootstrap intervals; impact ratios per category (NYC LL144); individual
consistency; mitigation (reweighing, equalized-odds post-processing) measured before and after.
Entry point: :func:`.family.run`; details: :class:`FairnessDetails`.
"""

import importlib

_EXPORTS = {
    **dict.fromkeys(["assess_fairness", "mitigate", "Fairness"], "scrutiny.audit.fairness.assess"),
    **dict.fromkeys(["FairnessDetails"], "scrutiny.audit.fairness.details"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
