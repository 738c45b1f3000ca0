"""What the fairness family records beside its findings."""

from __future__ import annotations

from dataclasses import dataclass

from scrutiny.audit.run.details import Details, Estimate, optional

__all__ = ["FairnessDetails", "GroupComparisonEntry", "GroupFigures", "ImpactRatioEntry", "MitigationEntry", "DETAILS"]

Setting = int | float | str | bool | None


@dataclass
class GroupFigures(Details):
    """One side of a comparison (the privileged group, or everyone else) on the test split."""

    n: int
    base_rate: float
    selection_rate: float
    accuracy: float
    roc_auc: float
    calibration_error: float
    true_positive_rate: float
    false_positive_rate: float


@dataclass
class GroupComparisonEntry(Details):
    """The privileged group of an attribute (or an intersection of attributes) against everyone else.

    Args:
        attribute: the attribute, or the intersection's attributes joined by `` × ``.
        privileged: the privileged group, in words.
        metrics: metric name -> estimate with its bootstrap interval.
        per_group: ``"privileged"`` / ``"unprivileged"`` -> their figures (model comparisons only).
    """

    attribute: str
    privileged: str
    n_privileged: int
    n_unprivileged: int
    metrics: dict[str, Estimate]
    per_group: dict[str, GroupFigures]
    warnings: list[str]


@dataclass
class ImpactRatioEntry(Details):
    """One category's selection rate and its ratio to the most selected category (NYC LL144)."""

    attribute: str
    category: str
    n: int
    selection_rate: float
    impact_ratio: float
    below_four_fifths: bool
    excluded: bool  # under 2 % of rows: left out of the highest rate and the flag


@dataclass
class MitigationEntry(Details):
    """The fairness metrics before and after one mitigation method, on the same rows."""

    method: str
    attribute: str
    rows: str
    n: int
    before: dict[str, Estimate]
    after: dict[str, Estimate]


@dataclass
class FairnessDetails(Details):
    """Group fairness of the training labels (``data_bias``) and the model's test predictions (``model``).

    Args:
        confidence: the intervals' confidence level.
        impact_ratios: every category of every attribute.
        consistency: individual fairness (aif360's consistency), when a model ran.
        warnings: what the comparisons could not measure.
        settings: how the metrics were computed.
        mitigation: when the config asks for it.
    """

    confidence: float
    data_bias: list[GroupComparisonEntry]
    model: list[GroupComparisonEntry]
    impact_ratios: list[ImpactRatioEntry]
    consistency: Estimate | None
    warnings: list[str]
    settings: dict[str, Setting]
    mitigation: list[MitigationEntry] | None = optional()


DETAILS = FairnessDetails
