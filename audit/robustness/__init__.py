"""Robustness: how far an input must move before the model changes its mind.

White-box attacks (PGD, FGSM) and black-box ones (Square, Gaussian noise) under L∞ or L2 within
an ε-ball, with the data's constraints kept (pixel range; for tables immutable columns, ranges,
whole numbers); robust accuracy per ε, the smallest ε that flips each row, signs of a weak
evaluation and an out-of-distribution score of the adversarial rows. Entry point:
:func:`.family.run`; details: :class:`RobustnessDetails`.
"""

from scrutiny.lazy import lazy_exports

_EXPORTS = {
    "run": "scrutiny.audit.robustness.family",
    **dict.fromkeys(["assess_robustness", "Robustness"], "scrutiny.audit.robustness.assess"),
    **dict.fromkeys(["RobustnessDetails"], "scrutiny.audit.robustness.details"),
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
