"""The fairness family: :func:`run`."""

from __future__ import annotations

import numpy as np

from scrutiny.audit import plots
from scrutiny.audit.run.details import Estimate
from scrutiny.audit.run.family import AuditContext, FamilyResult
from scrutiny.audit.run.findings import Comparison, Finding

from . import group_metrics as gm
from .details import (
    GROUPS,
    METRICS_FIGURE,
    FairnessDetails,
    GroupComparisonEntry,
    GroupFigures,
    ImpactRatioEntry,
    Level,
    MitigationEntry,
    ScoringRateEntry,
)

__all__ = ["run", "GATED", "NEEDS_MODEL"]

NEEDS_MODEL = False  # logged decisions (and scores) are enough; only mitigation retrains a model

# the model metrics the policy gates, per attribute and intersection
GATED = ("disparate_impact", "statistical_parity_difference", "equal_opportunity_difference",
         "average_odds_difference")


def run(context: AuditContext) -> FamilyResult:
    """Group fairness of the training labels and of the model's test predictions, with bootstrap intervals.

    Example:
        >>> result = run(context)  # doctest: +SKIP
        >>> [(f.check, f.subject, f.status) for f in result.findings][:1]  # doctest: +SKIP
        [('fairness.data.disparate_impact', 'sex', 'fail')]
    """
    from .assess import assess_fairness, mitigate, protected_groups

    c = context
    cfg = c.config.fairness
    result = assess_fairness(c.model, c.dataset, preprocessor=c.preprocessor, predictions=c.predictions,
                             attributes=cfg.attributes or None,
                             intersections=cfg.intersections, n_boot=cfg.n_boot, confidence=cfg.confidence,
                             seed=c.config.seed, device=c.device, minimums=c.policy.groups)
    compared = result.model
    assert compared is not None  # given a model or its predictions, assess_fairness compares the decisions
    data_bias, model = [_comparison(x) for x in result.data_bias], [_comparison(x) for x in compared]
    findings: list[Finding] = []
    labels = "training data" if result.settings["data_bias_split"] == "train" else "labels of the audited rows"
    for comparison, entry in zip(result.data_bias, data_bias, strict=True):
        e = comparison.metrics["disparate_impact"]
        group, reference = entry.groups_in_words
        findings.append(c.finding(
            "fairness.data.disparate_impact", e.value, subject=entry.subject, interval=(e.low, e.high),
            confidence=cfg.confidence, comparison=_rests_on(c, comparison.counts, "disparate_impact"),
            metric=f"base rate of the favourable label, unprivileged / privileged ({labels})",
            explanation=f"In the {labels}, {group} carry the favourable label at {e.value:.2f} times the rate "
                        f"of {reference}.",
        ))
    for comparison, entry in zip(compared, model, strict=True):
        group, reference = entry.groups_in_words
        for metric in GATED:
            e = comparison.metrics[metric]
            findings.append(c.finding(
                f"fairness.{metric}", e.value, subject=entry.subject, interval=(e.low, e.high),
                confidence=cfg.confidence, comparison=_rests_on(c, comparison.counts, metric),
                metric=_WORDS[metric][0],
                explanation=_WORDS[metric][1].format(v=e.value, g=group, r=reference),
            ))
    for attribute, lowest, highest in _lowest_and_highest(result.impact_ratios, "selection_rate"):
        findings.append(c.finding(
            "fairness.impact_ratio", lowest.impact_ratio, subject=attribute,
            comparison=_impact_rests_on(c, lowest, highest, "selection_rate"),
            metric="lowest selection rate of a category / highest category's (NYC LL144)",
            explanation=f"Of the categories of {attribute}, {lowest.category} is selected least often: at "
                        f"{lowest.impact_ratio:.2f} of the highest category's rate.",
        ))
    for attribute, lowest, highest in _lowest_and_highest(result.scoring_rates, "scoring_rate"):
        findings.append(c.finding(
            "fairness.scoring_rate_impact_ratio", lowest.impact_ratio, subject=attribute,
            comparison=_impact_rests_on(c, lowest, highest, "scoring_rate"),
            metric="lowest scoring rate of a category (share scored on the favourable side of the median) / "
                   "highest category's (NYC LL144)",
            explanation=f"Of the categories of {attribute}, {lowest.category} is scored "
                        f"{'above' if result.settings['higher_is_favourable'] else 'below'} the median "
                        f"{result.settings['score']} ({result.median_score:.4g}) least often: at "
                        f"{lowest.impact_ratio:.2f} of the highest category's rate.",
        ))
    details = FairnessDetails(
        confidence=cfg.confidence,
        data_bias=data_bias,
        model=model,
        impact_ratios=[_impact_ratio(r) for r in result.impact_ratios],
        consistency=_estimate(result.consistency) if result.consistency else None,
        warnings=list(result.warnings),
        settings=dict(result.settings),
        scoring_rates=[_scoring_rate(r) for r in result.scoring_rates],
        median_score=result.median_score,
        unknown_rows=result.unknown_rows or None,
    )
    if cfg.mitigate:
        details.mitigation = [
            MitigationEntry(method=m.method, attribute=m.attribute, rows=m.rows, n=m.n,
                            before={k: _estimate(v) for k, v in m.before.items()},
                            after={k: _estimate(v) for k, v in m.after.items()})
            for m in mitigate(c.module, c.dataset, cfg.mitigate, preprocessor=c.preprocessor, n_boot=cfg.n_boot,
                              confidence=cfg.confidence, seed=c.config.seed, device=c.device)
        ]
    figure = plots.fairness_figure(compared, thresholds={m: c.policy.threshold(f"fairness.{m}") for m in GATED})
    # the same pairs assess_fairness compared (cheap: masks of the group columns), stored per row
    pairs = list(protected_groups(c.dataset.spec, c.dataset.test.groups, cfg.attributes or None,
                                  intersections=cfg.intersections, where=f"{c.dataset.spec.name} test split").values())
    assert [p.subject for p in pairs] == [entry.subject for entry in model]
    groups = {f"model_{i}": np.where(p.mask, 1, np.where(p.compared, 0, -1)).astype(np.int8)
              for i, p in enumerate(pairs)}
    return FamilyResult(findings=findings, details=details, figures={METRICS_FIGURE: figure},
                        arrays={GROUPS: groups} if groups else {})


def _rests_on(c: AuditContext, counts: np.ndarray, metric: str) -> Comparison:
    """The smaller group behind ``metric``'s comparison (the one furthest under the policy's minimums)."""
    minimums = c.policy.groups
    group, among, rows, expected = gm.weakest(counts, metric, minimums["min_rows"], minimums["min_expected_positives"])
    return Comparison(no_difference=gm.NO_DIFFERENCE[metric], rows=rows, expected_positives=round(expected, 6),
                      group=group, among=among, **minimums)


def _lowest_and_highest(rows, rate: str):
    """Per attribute (or intersection), the category of lowest impact ratio and the one of highest
    ``rate``, categories excluded as under 2 % of rows left out."""
    by_attribute: dict[str, list] = {}
    for row in rows:
        if not row.excluded:
            by_attribute.setdefault(row.attribute, []).append(row)
    return [(attribute, min(kept, key=lambda r: r.impact_ratio), max(kept, key=lambda r: getattr(r, rate)))
            for attribute, kept in by_attribute.items()]


def _impact_rests_on(c: AuditContext, lowest, highest, rate: str) -> Comparison:
    """The smaller of the two categories an impact ratio divides (of their ``rate``: selection or
    scoring), and its share at their pooled rate."""
    smaller = min((lowest, highest), key=lambda r: r.n)
    pooled = (lowest.n * getattr(lowest, rate) + highest.n * getattr(highest, rate)) / (lowest.n + highest.n)
    return Comparison(no_difference=1.0, rows=smaller.n, expected_positives=round(smaller.n * pooled, 6),
                      group=f"category {smaller.category!r}", among="", **c.policy.groups)


_WORDS = {
    "disparate_impact": (
        "favourable-prediction rate, unprivileged / privileged",
        "The model gives the favourable outcome to {g} at {v:.2f} times the rate of {r}.",
    ),
    "statistical_parity_difference": (
        "favourable-prediction rate, unprivileged - privileged",
        "The favourable-outcome rate of {g} minus that of {r}: {v:+.3f}.",
    ),
    "equal_opportunity_difference": (
        "true-positive rate, unprivileged - privileged",
        "Among rows whose true label is favourable, the rate at which the model says so for {g} minus the rate "
        "for {r}: {v:+.3f}.",
    ),
    "average_odds_difference": (
        "mean of the false- and true-positive rate differences, unprivileged - privileged",
        "Averaged over false and true positives, {g} get the favourable outcome {v:+.3f} more often than {r}.",
    ),
}


def _estimate(e) -> Estimate:
    return Estimate(value=e.value, low=e.low, high=e.high)


def _levels(levels) -> list[Level]:
    return [Level(attribute=attribute, value=value) for attribute, value in levels]


def _comparison(c) -> GroupComparisonEntry:
    return GroupComparisonEntry(
        attribute=c.attribute, privileged=c.privileged, privileged_levels=_levels(c.levels),
        n_privileged=c.n_privileged, n_unprivileged=c.n_unprivileged,
        metrics={k: _estimate(v) for k, v in c.metrics.items()},
        per_group={side: GroupFigures(**figures) for side, figures in c.per_group.items()},
        warnings=list(c.warnings), compared=c.compared,
        compared_levels=None if c.compared_levels is None else _levels(c.compared_levels))


def _impact_ratio(r) -> ImpactRatioEntry:
    return ImpactRatioEntry(attribute=r.attribute, category=r.category, levels=_levels(r.levels), n=r.n,
                            selection_rate=r.selection_rate, impact_ratio=r.impact_ratio,
                            below_four_fifths=r.below_four_fifths, excluded=r.excluded)


def _scoring_rate(r) -> ScoringRateEntry:
    return ScoringRateEntry(attribute=r.attribute, category=r.category, levels=_levels(r.levels), n=r.n,
                            scoring_rate=r.scoring_rate, impact_ratio=r.impact_ratio,
                            below_four_fifths=r.below_four_fifths, excluded=r.excluded)
