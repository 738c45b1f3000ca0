"""Robustness: how far an input must move before the model changes its mind.

White-box attacks (PGD, FGSM) and black-box ones (Square, Gaussian noise) under L∞ or L2 within
an ε-ball, with the data's constraints kept (pixel range; for tables immutable columns, ranges,
whole numbers); robust accuracy per ε, the smallest ε that flips each row, signs of a weak
evaluation and an out-of-distribution score of the adversarial rows. Entry point:
:func:`.family.run`; details: :class:`RobustnessDetails`.
"""

import importlib

_EXPORTS = {
    **dict.fromkeys(["assess_robustness", "Robustness"], "scrutiny.audit.robustness.assess"),
    **dict.fromkeys(["RobustnessDetails"], "scrutiny.audit.robustness.details"),
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
