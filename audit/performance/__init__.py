"""Performance: how often the model is right and how honest its confidence is.

Balanced accuracy (mean recall over classes) and expected calibration error, each with a
percentile-bootstrap interval, plus plain accuracy, per-class recall, the confusion matrix and,
for two classes, ROC AUC. Entry point: :func:`.family.run`; details: :class:`PerformanceDetails`.
"""

from .details import PerformanceDetails

__all__ = ["PerformanceDetails"]
