"""Performance: how often the model is right and how honest its confidence is.

Balanced accuracy (mean recall over classes) and expected calibration error, each with a
percentile-bootstrap interval, plus plain accuracy, per-class recall, the confusion matrix and,
for two classes, ROC AUC. Entry point: :func:`run`; details: :class:`PerformanceDetails`.
"""

from scrutiny.lazy import lazy_exports

_EXPORTS = {
    "run": "scrutiny.audit.performance.family",
    "PerformanceDetails": "scrutiny.audit.performance.details",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
