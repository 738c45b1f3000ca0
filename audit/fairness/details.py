"""What the fairness family records beside its findings."""

from __future__ import annotations

from dataclasses import dataclass

from scrutiny.audit.run.details import Details, Estimate, optional

__all__ = ["FairnessDetails", "GroupComparisonEntry", "GroupFigures", "ImpactRatioEntry", "Level", "MitigationEntry",
           "ScoringRateEntry", "DETAILS", "METRICS_FIGURE", "GROUPS"]

Setting = int | float | str | bool | None

METRICS_FIGURE = "figures/fairness.png"  # the model's fairness metrics with their intervals
# which group each audited row is in, per comparison of the model's decisions, in the order of the rows of
# arrays/predictions.npz (whose ``weight`` applies to them too): ``model_<i>`` (int8) for ``model[i]`` of the
# details: 1 the reference (privileged) group, 0 the compared group, -1 neither (an unknown value, or another
# category). What a report's threshold what-if recomputes the groups' selection rates from.
GROUPS = "arrays/fairness_groups.npz"


@dataclass
class Level(Details):
    """One attribute's part of a group or category: the attribute and its category there, in words
    (a value such as ``Male``, or a group such as ``sex: Male``, ``sex: not Male`` or ``age ≥ 25``;
    runs written before issue 18 name groups as ``sex in {Male}``, ``sex not in {Male}``,
    ``age >= 25``, and still load: the value is display text, never parsed)."""

    attribute: str
    value: str


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
    """One comparison of an attribute (or an intersection of attributes): its privileged group
    against everyone else, or one category against the attribute's reference category.

    Args:
        attribute: for display: the attribute, or the intersection's attributes joined by `` × ``.
        privileged: for display: the reference group (the privileged group, or the reference
            category), in words.
        privileged_levels: the reference group on each attribute compared (one, or the two an
            intersection crosses), in the order of ``attribute``.
        n_privileged, n_unprivileged: rows of the reference group and of the compared group.
        metrics: metric name -> estimate with its bootstrap interval (compared vs reference).
        per_group: ``"privileged"`` (the reference) / ``"unprivileged"`` (the compared group) ->
            their figures (model comparisons only).
        compared, compared_levels: the category compared with the reference, in words and per
            attribute; absent where the compared group is every row outside the privileged group.
    """

    attribute: str
    privileged: str
    privileged_levels: list[Level]
    n_privileged: int
    n_unprivileged: int
    metrics: dict[str, Estimate]
    per_group: dict[str, GroupFigures]
    warnings: list[str]
    compared: str | None = optional()
    compared_levels: list[Level] | None = optional()

    @property
    def attributes(self) -> list[str]:
        """The attributes compared: one, or the two an intersection crosses."""
        return [level.attribute for level in self.privileged_levels]

    @property
    def subject(self) -> str:
        """What its findings name: the attribute, and a compared category after ``=``."""
        return comparison_subject(self.attribute, None if self.compared_levels is None
                                  else [level.value for level in self.compared_levels])

    @property
    def groups_in_words(self) -> tuple[str, str]:
        """(the compared group, the reference group), as a sentence names them."""
        if self.compared is None:
            return f"rows outside the privileged group of {self.attribute}", f"the privileged group ({self.privileged})"
        return f"rows with {self.attribute} = {self.compared}", f"the reference group ({self.privileged})"


def comparison_subject(attribute: str, compared: list[str] | None) -> str:
    """What a comparison's findings name: the attribute (or intersection), and after ``=`` the
    category compared with the reference, an intersection's categories joined by `` × ``."""
    return attribute if compared is None else f"{attribute}={' × '.join(compared)}"


@dataclass
class _CategoryRate(Details):
    """A category's rate, its ratio to the highest category's, and the four-fifths flag."""

    attribute: str
    category: str
    levels: list[Level]
    n: int
    impact_ratio: float
    below_four_fifths: bool
    excluded: bool  # under 2 % of rows: left out of the highest rate and the flag

    @property
    def attributes(self) -> list[str]:
        """The attributes whose categories this row crosses: one, or two."""
        return [level.attribute for level in self.levels]


@dataclass
class ImpactRatioEntry(_CategoryRate):
    """One category's selection rate and its ratio to the most selected category (NYC LL144).

    Args:
        attribute, category: for display: the attribute and its category, or an intersection's
            attributes and categories, each joined by `` × ``.
        levels: the category on each attribute (one, or the two an intersection crosses).
    """

    selection_rate: float


@dataclass
class ScoringRateEntry(_CategoryRate):
    """One category's scoring rate (the share of its rows whose score, P(favourable), is above the
    median of the whole test split; a score equal to the median does not count) and its ratio to
    the highest category's (NYC LL144, 6 RCNY §5-300, for a tool that outputs a score).

    Args:
        attribute, category: for display, as in :class:`ImpactRatioEntry`.
        levels: the category on each attribute (one, or the two an intersection crosses).
    """

    scoring_rate: float


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
        scoring_rates: every category of every attribute, scored against ``median_score`` (the
            median P(favourable) over the test split). Both absent from runs written before
            scrutiny recorded them.
        unknown_rows: attribute (or pair, joined by `` × ``) -> test rows without a value for it
            (the unknown category, left out of its comparisons and of the LL144 rates and ratios);
            absent when every row has every value.
    """

    confidence: float
    data_bias: list[GroupComparisonEntry]
    model: list[GroupComparisonEntry]
    impact_ratios: list[ImpactRatioEntry]
    consistency: Estimate | None
    warnings: list[str]
    settings: dict[str, Setting]
    mitigation: list[MitigationEntry] | None = optional()
    scoring_rates: list[ScoringRateEntry] | None = optional()
    median_score: float | None = optional()
    unknown_rows: dict[str, int] | None = optional()

    @classmethod
    def upgrade(cls, data: dict) -> dict:
        """Runs written before the levels were recorded (scrutiny 0.1.0 until issue 14) hold only the
        display strings, which joined an intersection's attributes and categories by `` × `` and its
        privileged groups by `` and ``: the levels are derived from them here, the one place a display
        string is split, and only where the pieces match the attributes one to one."""
        if not isinstance(data, dict):
            return data
        upgraded = dict(data)
        for key in ("data_bias", "model"):
            upgraded[key] = [_with_levels(c, "privileged_levels", "privileged", " and ") for c in data.get(key) or []]
        upgraded["impact_ratios"] = [_with_levels(r, "levels", "category", " × ") for r in data.get("impact_ratios") or []]
        return upgraded


def _with_levels(entry, field: str, display: str, joiner: str):
    if not isinstance(entry, dict) or field in entry or not isinstance(entry.get("attribute"), str):
        return entry
    attributes = entry["attribute"].split(" × ")
    values = [str(entry.get(display, ""))] if len(attributes) == 1 else str(entry.get(display, "")).split(joiner)
    if len(values) != len(attributes):
        return entry  # cannot be told apart: the schema check names the missing field
    return {**entry, field: [{"attribute": a, "value": v} for a, v in zip(attributes, values, strict=True)]}


DETAILS = FairnessDetails
