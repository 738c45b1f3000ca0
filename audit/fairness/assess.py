"""The fairness family: does the data, and does the model, treat protected groups differently?

:func:`assess_fairness` compares the privileged and unprivileged group of each protected
attribute, and of each intersection of two (privileged = privileged on both), with
aif360's metrics (``BinaryLabelDatasetMetric`` for the data set's labels,
``ClassificationMetric`` for the model's test-split predictions) and a seeded bootstrap
interval around every value. It adds per-group accuracy, ROC AUC and calibration error,
aif360's k-NN consistency, and the impact-ratio table of a NYC Local Law 144 bias audit
(each category's selection rate over the highest, flagged under four fifths), with its
counterpart for the model's score, P(favourable), in :func:`scoring_rates`.

Consistency is exact where it can be cheap and sampled where it cannot: on a test split of
up to ``CONSISTENCY_EXACT_ROWS`` rows every row's term is computed with aif360's own
neighbours (:func:`.group_metrics.consistency_deviations`), so the value is aif360's to the
bit (the built-in data sets all fit); on a larger one, a seeded sample of
``CONSISTENCY_SAMPLE`` rows is averaged, each row's neighbours still found among all rows,
and the bootstrap interval covers the sampling. No exact method is both aif360's and
O(n log n) here: its ball tree (and a KD-tree) degrade to visiting most rows per query in
the 20+ dimensions of one-hot columns (150 s at 100,000 rows), and brute force is quadratic
(180 s at 1,000,000 rows); the sample costs O(sample × n) and its interval (at most about ±0.01
at 5,000 rows) is far narrower than anything read from this unthresholded metric.

Point values come from :mod:`.group_metrics` (aif360's definitions on confusion counts,
tested equal to aif360 to 1e-9) unless ``engine="aif360"`` asks for aif360 itself.
Conventions (as aif360): differences are unprivileged − privileged; disparate impact is
P(favourable | unprivileged) / P(favourable | privileged).
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from torch import nn

from scrutiny.audit import row_counts
from scrutiny.audit.fairness import group_metrics as gm
from scrutiny.audit.fairness.details import comparison_subject
from scrutiny.errors import DataError, InputError
from scrutiny.limits import check_int
from scrutiny.models import Dataset
from scrutiny.models.spec import ProtectedAttribute

if TYPE_CHECKING:
    from scrutiny.models.predictions import Predictions

__all__ = ["Estimate", "Levels", "GroupPair", "GroupComparison", "ImpactRow", "ScoringRow", "Fairness",
           "Mitigation", "assess_fairness", "mitigate", "protected_groups", "aif360_metrics", "impact_ratios",
           "scoring_rates", "unknown_rows", "CROSS"]

FOUR_FIFTHS = 0.8
CONSISTENCY_EXACT_ROWS = 20_000   # every row up to here (4e8 distance pairs, about a second)
CONSISTENCY_SAMPLE = 5_000        # above: rows sampled (seeded), each against all rows
LL144_SMALL = 0.02        # LL144 lets an auditor leave out categories under 2 % of the data
CROSS = " × "             # joins an intersection's attributes (and categories) for display

# (attribute, its category in words) for each attribute a group or category crosses: one, or two
Levels = tuple[tuple[str, str], ...]


@dataclass
class Estimate:
    value: float
    low: float
    high: float


@dataclass(frozen=True, eq=False)
class GroupPair:
    """The two groups one comparison sets against each other: the reference group (the privileged
    group of an attribute, or its reference category) and the compared group (every row outside
    the reference, or one other category). An intersection's groups cross two attributes."""

    mask: np.ndarray        # which rows belong to the reference group
    compared: np.ndarray    # which rows belong to the compared group (disjoint from ``mask``)
    levels: Levels          # the reference group: (attribute, its group in words), per attribute
    compared_levels: Levels | None = None   # the compared category, per attribute; None: every row outside

    @property
    def name(self) -> str:
        """The attribute, or the intersection's attributes joined by :data:`CROSS`."""
        return _attributes_text(self.levels)

    @property
    def subject(self) -> str:
        """What a finding names: the attribute, and for a category compared with a reference the category."""
        return _subject(self.levels, self.compared_levels)


def _subject(levels: Levels, compared: Levels | None) -> str:
    return comparison_subject(_attributes_text(levels), None if compared is None else [v for _, v in compared])


@dataclass
class GroupComparison:
    """One protected attribute (or intersection): privileged vs unprivileged group."""

    levels: Levels          # the reference group: (attribute, its group in words), per attribute
    n_privileged: int       # rows of the reference group
    n_unprivileged: int     # rows of the compared group
    metrics: dict[str, Estimate]
    counts: np.ndarray      # (group, label, prediction) counts, group 1 = reference (group_metrics)
    per_group: dict[str, dict[str, float]] = field(default_factory=dict)  # "privileged"/"unprivileged" -> figures
    warnings: list[str] = field(default_factory=list)
    compared_levels: Levels | None = None   # the category compared with the reference; None: every other row

    @property
    def attribute(self) -> str:
        """For display: the attribute, or the intersection's attributes joined by :data:`CROSS`."""
        return _attributes_text(self.levels)

    @property
    def privileged(self) -> str:
        """For display: the reference group (privileged group or reference category) in words."""
        return " and ".join(value for _, value in self.levels)

    @property
    def compared(self) -> str | None:
        """For display: the category compared with the reference; None where it is every other row."""
        return None if self.compared_levels is None else " and ".join(value for _, value in self.compared_levels)

    @property
    def subject(self) -> str:
        """What its findings name (:attr:`GroupPair.subject`)."""
        return _subject(self.levels, self.compared_levels)


@dataclass
class _CategoryRow:
    levels: Levels          # (attribute, its category), per attribute the row crosses

    @property
    def attribute(self) -> str:
        """For display: the attribute, or the intersection's attributes joined by :data:`CROSS`."""
        return _attributes_text(self.levels)

    @property
    def category(self) -> str:
        """For display: the category, or the intersection's categories joined by :data:`CROSS`."""
        return CROSS.join(value for _, value in self.levels)


@dataclass
class ImpactRow(_CategoryRow):
    n: int
    selection_rate: float
    impact_ratio: float
    below_four_fifths: bool
    excluded: bool          # under 2 % of rows: left out of the highest rate and the flag


@dataclass
class ScoringRow(_CategoryRow):
    """LL144's scoring rate of a category: the share of its rows scored above the full sample's median."""

    n: int
    scoring_rate: float
    impact_ratio: float     # the scoring rate over the highest category's
    below_four_fifths: bool
    excluded: bool          # under 2 % of rows: left out of the highest rate and the flag


def _attributes_text(levels: Levels) -> str:
    return CROSS.join(attribute for attribute, _ in levels)


@dataclass
class Fairness:
    data_bias: list[GroupComparison]        # the labels of the training split
    model: list[GroupComparison] | None     # the model's predictions on the test split
    impact_ratios: list[ImpactRow]
    consistency: Estimate | None
    warnings: list[str]
    settings: dict
    scoring_rates: list[ScoringRow] = field(default_factory=list)
    median_score: float | None = None   # of P(favourable) over the test split, when a model ran
    unknown_rows: dict[str, int] = field(default_factory=dict)   # attribute (or pair) -> rows of unknown category


def protected_groups(spec, groups: pd.DataFrame, attributes=None, *, intersections: bool = True,
                     where: str = "data") -> dict[str, GroupPair]:
    """The comparisons of each attribute and of each pair of them, by subject.

    An attribute with a privileged group gives one comparison (named ``sex``): the privileged
    group against every other row. An attribute with a reference category gives one per other
    category (``race=Asian``): that category's rows against the reference's, other rows left out.
    A pair of attributes crosses them (``sex × race``): privileged on both against the rest when
    both have a privileged group; otherwise each crossed category against the crossed reference
    (a privileged-group attribute contributing its two groups). Rows without a value (NaN) belong
    to no category.
    """
    declared = {p.name: p for p in spec.protected}
    if not declared:
        raise InputError(f"{spec.name}: the data set declares no protected attribute; add a [protected] table to its spec")
    attributes = list(attributes or declared)
    unknown = [a for a in attributes if a not in declared]
    if unknown:
        raise InputError(f"attributes: {', '.join(map(repr, unknown))} not protected in {spec.name} "
                         f"(protected: {', '.join(declared)})")
    single = {name: _categories(declared[name], groups, where) for name in attributes}
    pairs = [pair for name in attributes for pair in _pairs((name,), [single[name]])]
    if intersections:
        pairs += [pair for a, b in itertools.combinations(attributes, 2)
                  for pair in _pairs((a, b), [single[a], single[b]])]
    return {pair.subject: pair for pair in pairs}


@dataclass(frozen=True, eq=False)
class _Categories:
    """An attribute's rows as categories: their names per row ('' for none), and which is the reference."""

    attribute: ProtectedAttribute
    names: np.ndarray        # per row: its category in words, or '' (a missing value)
    reference: str           # the reference category's (or privileged group's) name

    @property
    def privileged_style(self) -> bool:
        return self.attribute.reference is None


def _categories(attribute: ProtectedAttribute, groups: pd.DataFrame, where: str) -> _Categories:
    name = attribute.name
    if name not in groups.columns:
        raise DataError(f"{where}: protected column '{name}' not found")
    values = groups[name]
    known = values.notna().to_numpy()
    present = sorted(values[known].astype(str).unique())
    if attribute.reference is not None:
        if str(attribute.reference) not in present:
            raise DataError(f"{where}: reference category {attribute.reference!r} of '{name}' not found in the column "
                            f"(values: {', '.join(present[:8])}{', …' if len(present) > 8 else ''})")
        if len(present) < 2:
            raise DataError(f"{where}: protected attribute '{name}' has a single category ({present[0]!r}); "
                            "fairness compares two")
        return _Categories(attribute, np.where(known, values.astype(str).to_numpy(), ""), str(attribute.reference))
    if attribute.privileged_values and not set(present) & {str(v) for v in attribute.privileged_values}:
        raise DataError(f"{where}: privileged value(s) {', '.join(map(repr, attribute.privileged_values))} of "
                        f"'{name}' not found in the column (values: {', '.join(present[:8])})")
    mask = attribute.is_privileged(values) & known
    if mask[known].all() or not mask.any():
        raise DataError(f"{where}: protected attribute '{name}' has a single group (every row is "
                        f"{'in' if mask[known].all() else 'outside'} the privileged group, {attribute.describe()}); "
                        "fairness compares two")
    privileged = attribute.describe()
    return _Categories(attribute, np.where(mask, privileged, np.where(known, attribute.describe_rest(), "")), privileged)


def _pairs(names: tuple[str, ...], crossed: list[_Categories]) -> list[GroupPair]:
    reference = np.logical_and.reduce([c.names == c.reference for c in crossed])
    levels = tuple((name, c.reference) for name, c in zip(names, crossed, strict=True))
    known = np.logical_and.reduce([c.names != "" for c in crossed])
    if all(c.privileged_style for c in crossed):
        return [GroupPair(reference, known & ~reference, levels)]
    if not reference.any():
        return []  # no row in the crossed reference: nothing to compare with
    keys = pd.Series(list(zip(*(c.names for c in crossed), strict=True)))
    out = []
    for key in sorted(set(keys[known & ~reference]), key=CROSS.join):
        rows = (keys == key).to_numpy() & known
        out.append(GroupPair(reference, rows, levels, tuple(zip(names, key, strict=True))))
    return out


def aif360_metrics(y: np.ndarray, y_pred: np.ndarray | None, privileged: np.ndarray,
                   features: np.ndarray | None = None) -> dict[str, float]:
    """The same metrics computed by aif360 itself (the reference; slow at scale)."""
    from .aif360_bridge import PRIVILEGED, UNPRIVILEGED, aif360, label_dataset

    privileged_groups, unprivileged_groups = PRIVILEGED, UNPRIVILEGED
    BinaryLabelDatasetMetric, ClassificationMetric = aif360().BinaryLabelDatasetMetric, aif360().ClassificationMetric

    def as_dataset(labels):
        return label_dataset(labels, privileged, features)

    with _quiet():
        truth = as_dataset(y)
        if y_pred is None:
            metric = BinaryLabelDatasetMetric(truth, unprivileged_groups=unprivileged_groups, privileged_groups=privileged_groups)
            return {
                "base_rate_unprivileged": metric.base_rate(privileged=False), "base_rate_privileged": metric.base_rate(privileged=True),
                "statistical_parity_difference": metric.statistical_parity_difference(),
                "disparate_impact": metric.disparate_impact(),
            }
        predicted = as_dataset(y_pred)
        m = ClassificationMetric(truth, predicted, unprivileged_groups=unprivileged_groups, privileged_groups=privileged_groups)
        out = {
            "selection_rate_unprivileged": m.selection_rate(privileged=False),
            "selection_rate_privileged": m.selection_rate(privileged=True),
            "statistical_parity_difference": m.statistical_parity_difference(),
            "disparate_impact": m.disparate_impact(),
            "equal_opportunity_difference": m.equal_opportunity_difference(),
            "average_odds_difference": m.average_odds_difference(),
            "equalized_odds_difference": m.equalized_odds_difference(),
            "predictive_parity_difference": m.difference(m.positive_predictive_value),
            "false_negative_rate_ratio": m.false_negative_rate_ratio(),
            "false_positive_rate_ratio": m.false_positive_rate_ratio(),
            "accuracy_difference": m.difference(m.accuracy),
            "theil_index": m.theil_index(),
            "accuracy": m.accuracy(),
        }
        if features is not None:
            out["consistency"] = float(BinaryLabelDatasetMetric(predicted, unprivileged_groups=unprivileged_groups,
                                                                privileged_groups=privileged_groups).consistency()[0])
    return {k: float(v) for k, v in out.items()}


def _quiet():
    """aif360 divides by zero loudly where a group has no row of a kind; NumPy's inf/nan is the answer."""
    return np.errstate(divide="ignore", invalid="ignore")


def _estimates(counts: np.ndarray, *, model: bool, n_boot: int, confidence: float, rng, engine_values=None) -> dict[str, Estimate]:
    point = engine_values if engine_values is not None else gm.metrics_from_counts(counts, model=model)
    boots = gm.metrics_from_counts(gm.bootstrap_counts(counts, n_boot, rng), model=model) if n_boot else {}
    tail = (1 - confidence) / 2
    out = {}
    for name, value in point.items():
        value = float(value)
        if n_boot:
            sample = boots[name][np.isfinite(boots[name])]
            low, high = (np.quantile(sample, [tail, 1 - tail]) if len(sample) else (np.nan, np.nan))
            # a percentile interval need not hold a value at the edge of the resamples' support
            low, high = min(low, value), max(high, value)
        else:
            low = high = float("nan")
        out[name] = Estimate(value, float(low), float(high))
    return out


def _group_warnings(attribute: str, counts: np.ndarray, *, model: bool, minimums: dict[str, int]) -> list[str]:
    """One line per shortfall under the policy's ``[groups]`` minimums, naming the metrics it touches."""
    min_rows, min_expected = minimums["min_rows"], minimums["min_expected_positives"]
    short: dict[tuple, list[str]] = {}
    for metric in (gm.RATE_ROWS if model else ("statistical_parity_difference", "disparate_impact")):
        group, among, rows, expected = gm.weakest(counts, metric, min_rows, min_expected)
        if rows < min_rows or expected < min_expected:
            short.setdefault((group, among, rows, expected), []).append(metric)
    return [f"{attribute}: {', '.join(metrics)} rest{'s' if len(metrics) == 1 else ''} on {rows} rows"
            f"{' ' + among if among else ''} of the {group}, {expected:.1f} expected favourable at the pooled rate "
            f"(policy minimums {min_rows} rows, {min_expected} expected); read as noise"
            for (group, among, rows, expected), metrics in short.items()]


def _per_group(y, y_pred, score, probability, pair: GroupPair, weights=None) -> dict[str, dict[str, float]]:
    """Figures of the reference (``privileged``) and the compared group (``unprivileged``): ROC AUC
    of the score where there is one, calibration error where the score is a probability. ``weights``:
    rows per entry (counted rows); the score's figures are taken over distinct cells
    (:func:`~scrutiny.audit.row_counts.distinct`), so rows and counted rows give the same bytes."""
    return {label: _group_figures(y[rows], y_pred[rows], None if score is None else score[rows],
                                  None if probability is None else probability[rows],
                                  None if weights is None else weights[rows])
            for label, rows in (("privileged", pair.mask), ("unprivileged", pair.compared))}


def _group_figures(y, y_pred, score, probability, weights) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    from scrutiny.models.training import expected_calibration_error

    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)

    def rate(values: np.ndarray, among: np.ndarray) -> float:
        return float(w[among] @ values[among] / w[among].sum()) if among.any() else float("nan")

    def roc_auc(values: np.ndarray) -> float:
        (labels, cells), counts = row_counts.distinct([y, values], weights)
        return float(roc_auc_score(labels, cells, sample_weight=counts))

    def calibration(values: np.ndarray) -> float:
        (labels, cells), counts = row_counts.distinct([y, values], weights)
        return expected_calibration_error(np.column_stack([1 - cells, cells]), labels, sample_weight=counts)

    every = np.ones(len(y), dtype=bool)
    return {
        "n": int(w.sum()),
        "base_rate": rate(y, every),
        "selection_rate": rate(y_pred, every),
        "accuracy": rate((y == y_pred).astype(np.float64), every),
        "roc_auc": roc_auc(score) if score is not None and len(np.unique(y)) == 2 else float("nan"),
        "calibration_error": calibration(probability) if probability is not None else float("nan"),
        "true_positive_rate": rate(y_pred, y == 1),
        "false_positive_rate": rate(y_pred, y == 0),
    }


def impact_ratios(spec, groups: pd.DataFrame, selected: np.ndarray, attributes, *, intersections: bool = True,
                  weights: np.ndarray | None = None) -> list[ImpactRow]:
    """LL144's table: per category of each attribute (and of each pair), the selection rate
    divided by the highest category's. Numeric attributes split at their privileged minimum.
    Rows without a value (the unknown category) are left out of the table: :func:`unknown_rows`
    counts them, as the rule asks. ``weights``: rows per entry (counted rows)."""
    declared = {p.name: p for p in spec.protected}

    def categories_of(name: str) -> np.ndarray:
        attribute = declared[name]
        if attribute.privileged_min is not None:
            return np.where(attribute.is_privileged(groups[name]), attribute.describe(), attribute.describe_rest())
        return groups[name].astype(str).to_numpy()

    columns = {name: categories_of(name).astype(str) for name in attributes}
    known = {name: groups[name].notna().to_numpy() for name in attributes}
    selected = np.asarray(selected, dtype=np.float64)
    weights = np.ones(len(selected)) if weights is None else np.asarray(weights, dtype=np.float64)
    rows = []
    for crossed in _crossings(attributes, intersections):
        rows_known = np.logical_and.reduce([known[name] for name in crossed])
        categories, n, rate = _selection_by_category(selected[rows_known], weights[rows_known],
                                                     [columns[name][rows_known] for name in crossed])
        excluded = n / weights.sum() < LL144_SMALL
        top = rate[~excluded].max() if (~excluded).any() else rate.max()
        for category, count, share, left_out in zip(categories, n, rate, excluded, strict=True):
            ratio = share / top if top > 0 else float("nan")
            rows.append(ImpactRow(tuple(zip(crossed, category, strict=True)), int(count), float(share), float(ratio),
                                  bool(ratio < FOUR_FIFTHS and not left_out), bool(left_out)))
    return rows


def unknown_rows(groups: pd.DataFrame, attributes, *, intersections: bool = True,
                 weights: np.ndarray | None = None) -> dict[str, int]:
    """Per attribute (and pair), the rows whose category is unknown (no value), where there are any:
    LL144 has them reported, and left out of the rates and ratios. ``weights``: rows per entry."""
    out = {}
    weights = np.ones(len(groups), dtype=np.int64) if weights is None else weights
    for crossed in _crossings(attributes, intersections):
        count = int(weights[groups[list(crossed)].isna().any(axis=1).to_numpy()].sum())
        if count:
            out[CROSS.join(crossed)] = count
    return out


def _crossings(attributes, intersections: bool) -> list[tuple[str, ...]]:
    crossings: list[tuple[str, ...]] = [(name,) for name in attributes]
    return crossings + (list(itertools.combinations(attributes, 2)) if intersections else [])


def scoring_rates(spec, groups: pd.DataFrame, scores: np.ndarray, attributes, *, intersections: bool = True,
                  higher_is_favourable: bool = True, weights: np.ndarray | None = None) -> tuple[float, list[ScoringRow]]:
    """LL144's table for a tool that outputs a score (6 RCNY §5-300, §5-301): the median score of
    the full sample, and per category of each attribute (and of each pair) its scoring rate, the
    share of its rows scored *above* that median, over the highest category's (categories under
    2 % of rows left out of the highest rate and the flag, as in :func:`impact_ratios`). For a
    score where lower is favourable (a risk score), the favourable side is *below* the median.

    A score equal to the median is not beyond it and does not count: where many rows tie at the
    median (a saturated or coarse score) every category's scoring rate falls below one half.
    ``weights``: rows per entry (counted rows); the median is still exact, that of the rows.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not len(scores) or not np.isfinite(scores).all():
        raise InputError(f"scores: expected a non-empty 1-D array of finite numbers, shape {scores.shape}")
    median = row_counts.median(scores, weights)
    beyond = scores > median if higher_is_favourable else scores < median
    rows = impact_ratios(spec, groups, beyond, attributes, intersections=intersections, weights=weights)
    return median, [ScoringRow(r.levels, r.n, r.selection_rate, r.impact_ratio, r.below_four_fifths, r.excluded)
                    for r in rows]


def _selection_by_category(selected: np.ndarray, weights: np.ndarray, columns: list[np.ndarray]):
    """The categories (tuples: one value per column) in the order of their display names, with
    their rows (summed ``weights``) and selection rates."""
    by = pd.DataFrame({"rows": weights, "selected": weights * selected}).groupby(columns, sort=False)
    sums = by.sum()
    n, rate = sums["rows"], sums["selected"] / sums["rows"]
    categories = [key if isinstance(key, tuple) else (key,) for key in n.index]
    order = sorted(range(len(categories)), key=lambda i: CROSS.join(categories[i]))
    return [categories[i] for i in order], n.to_numpy()[order], rate.to_numpy()[order]


def assess_fairness(
    model: nn.Module | None,
    dataset: Dataset,
    *,
    preprocessor: Any = None,
    predictions: Predictions | None = None,
    attributes: Sequence[str] | None = None,
    intersections: bool = True,
    n_boot: int = 1000,
    confidence: float = 0.95,
    n_neighbors: int = 5,
    engine: str = "vectorised",
    seed: int = 0,
    device: str | None = None,
    minimums: dict[str, int] | None = None,
) -> Fairness:
    """Data-set bias of the training labels and, given a model or its predictions, fairness of
    the decisions on the test split.

    Args:
        model: a classifier returning logits, or None. On a multiclass data set the comparison
            is one-vs-rest for the spec's favourable class set: a label is favourable when its
            class is in the set, a decision when the predicted class is, and the score is the
            set's summed probability.
        predictions: without a model, its logged decisions (and scores) on the test split's rows
            (:func:`~scrutiny.models.load_predictions`). Neither: the data-set checks only.
        attributes: protected attributes to compare. Default: all the spec declares.
        intersections: also compare each pair of attributes (see :func:`protected_groups`).
        n_boot: bootstrap resamples per interval (0: none).
        confidence: interval coverage. Default: 0.95
        n_neighbors: k of aif360's consistency (exact up to ``CONSISTENCY_EXACT_ROWS`` test
            rows, a seeded sample of ``CONSISTENCY_SAMPLE`` above; see the module docstring);
            it needs the model's inputs, so predictions alone leave it out.
        engine: ``"vectorised"`` (default) or ``"aif360"`` for the point values.
        seed: seeds the bootstrap; each comparison draws from its own stream (the seed, the
            split and the comparison's subject), so its interval does not depend on which other
            comparisons were made.
        minimums: ``min_rows`` and ``min_expected_positives`` a comparison needs, as the policy's
            ``[groups]`` table; under them a comparison's warnings say it is noise. Default: the
            default policy's.

    Example:
        >>> data = load_dataset("adult")  # doctest: +SKIP
        >>> found = assess_fairness(train_on(data).model, data, n_boot=200)  # doctest: +SKIP
        >>> [(c.attribute, round(c.metrics["disparate_impact"].value, 2)) for c in found.model][:1]  # doctest: +SKIP
        [('sex', 0.31)]
    """
    spec = dataset.spec
    favourable = _favourable_view(spec, "fairness metrics")
    if engine not in ("vectorised", "aif360"):
        raise InputError(f"engine {engine!r}: expected vectorised or aif360")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be between 0 and 1, got {confidence}")
    if model is not None and predictions is not None:
        raise InputError("give a model or its predictions, not both")
    check_int("n_boot", n_boot)
    check_int("seed", seed)
    if minimums is None:
        from scrutiny.audit.run.policy import load_policy

        minimums = load_policy().groups
    warnings: list[str] = []

    def compare(pair: GroupPair, split: str, y, y_pred=None, score=None, probability=None,
                weights=None) -> GroupComparison:
        rows = pair.mask | pair.compared
        counts = gm.confusion_counts(y[rows], None if y_pred is None else y_pred[rows], pair.mask[rows],
                                     None if weights is None else weights[rows])
        model_side = y_pred is not None
        reference = None
        if engine == "aif360":
            if weights is not None:
                raise InputError("engine 'aif360' takes rows; these logged decisions are counted rows (streamed from "
                                 "Parquet): use the vectorised engine, tested equal to aif360")
            reference = aif360_metrics(y[rows], None if y_pred is None else y_pred[rows], pair.mask[rows])
        every = np.ones(len(y), dtype=np.int64) if weights is None else weights
        comparison = GroupComparison(
            pair.levels, int(every[pair.mask].sum()), int(every[pair.compared].sum()),
            _estimates(counts, model=model_side, n_boot=n_boot, confidence=confidence,
                       rng=_stream(seed, split, pair.subject), engine_values=reference),
            counts=counts, warnings=_group_warnings(pair.subject, counts, model=model_side, minimums=minimums),
            per_group=_per_group(y, y_pred, score, probability, pair, weights) if model_side else {},
            compared_levels=pair.compared_levels)
        warnings.extend(comparison.warnings)
        return comparison

    train_pairs = protected_groups(spec, dataset.train.groups, attributes, intersections=intersections,
                                   where=f"{spec.name} training split")
    data_bias = [compare(pair, "train", favourable(dataset.train.y), weights=dataset.train.weights)
                 for pair in train_pairs.values()]

    results, impact, consistency, consistency_rows = None, [], None, None
    unknown: dict[str, int] = {}
    higher, score_name = True, None
    scoring: list[ScoringRow] = []
    median_score = None
    decided = model is not None or predictions is not None
    if decided:
        features = None
        if model is not None:
            from scrutiny.models.training import predict_proba

            features = (preprocessor or dataset.preprocessor).transform(dataset.test.X)
            proba = predict_proba(model, features, device=device)
            if spec.is_binary:
                y_pred, score, probability = proba.argmax(axis=1), proba[:, 1], proba[:, 1]
            else:  # one-vs-rest: the predicted class in the favourable set, its classes' summed probability
                y_pred = favourable(proba.argmax(axis=1))
                score = probability = proba[:, list(spec.favourable_indices)].sum(axis=1)
            higher, score_name = True, "P(favourable)"
        else:
            assert predictions is not None
            y_pred, score, probability = predictions.decisions, predictions.scores, predictions.probability
            higher, score_name = predictions.higher_is_favourable, predictions.score_name
        y = favourable(dataset.test.y)
        if len(y_pred) != len(y):
            raise InputError(f"predictions: {len(y_pred)} decisions for {len(y)} test rows")
        test_pairs = protected_groups(spec, dataset.test.groups, attributes, intersections=intersections,
                                      where=f"{spec.name} test split")
        oriented = None if score is None else (score if higher else -score)  # higher leans favourable: ROC AUC
        weights = dataset.test.weights
        results = [compare(pair, "test", y, y_pred, oriented, probability, weights) for pair in test_pairs.values()]
        if features is not None:
            rng = _stream(seed, "test", "consistency")
            n_test = len(y_pred)
            sample = None if n_test <= CONSISTENCY_EXACT_ROWS else np.sort(rng.choice(n_test, CONSISTENCY_SAMPLE, replace=False))
            deviations = gm.consistency_deviations(features, y_pred, n_neighbors, rows=sample)
            consistency_rows = len(deviations)  # of n: all of them, or the sample
            consistency = _consistency_estimate(deviations, n_boot, confidence, rng)
        names = list(dict.fromkeys(pair.levels[0][0] for pair in test_pairs.values() if len(pair.levels) == 1))
        impact = impact_ratios(spec, dataset.test.groups, y_pred, names, intersections=intersections, weights=weights)
        unknown = unknown_rows(dataset.test.groups, names, intersections=intersections, weights=weights)
        if score is not None:
            median_score, scoring = scoring_rates(spec, dataset.test.groups, score, names, intersections=intersections,
                                                  higher_is_favourable=higher, weights=weights)
        flagged = [r for r in impact if r.below_four_fifths]
        if flagged:
            warnings.append("four-fifths rule: " + "; ".join(
                f"{r.attribute}={r.category} selected at {r.impact_ratio:.2f} of the highest rate" for r in flagged))
    if model is not None and not spec.is_binary:
        threshold = f"argmax class in the favourable set {{{', '.join(spec.favourable_classes)}}}"
    elif model is not None:
        threshold = "argmax (P(favourable) > 0.5)"
    elif predictions is not None:
        threshold = predictions.rule
    else:
        threshold = None
    return Fairness(
        data_bias=data_bias, model=results, impact_ratios=impact, consistency=consistency, warnings=warnings,
        scoring_rates=scoring, median_score=median_score, unknown_rows=unknown,
        settings={"n_boot": n_boot, "confidence": confidence, "seed": seed, "engine": engine, "n_neighbors": n_neighbors,
                  "consistency_rows": consistency_rows,
                  "threshold": threshold, "model_split": "test",
                  # logged predictions without a split column: the labels of the audited rows themselves
                  "data_bias_split": "test" if dataset.train is dataset.test else "train",
                  "intersections": intersections, "score": score_name if median_score is not None else None,
                  "higher_is_favourable": higher},
    )


def _favourable_view(spec, what: str):
    """Class indices → 1 where favourable, 0 elsewhere: the identity on a binary task; on a
    multiclass one, whether the class is in the spec's favourable set (one-vs-rest). InputError
    where the data set has no favourable outcome to compare."""
    if spec.task != "tabular" or not spec.favourable_indices:
        raise InputError(f"{spec.name}: {what} need a tabular data set with a favourable outcome (a binary label, "
                         "or a multiclass label with a favourable class set) and protected attributes")
    if spec.is_binary:
        return lambda y: y
    chosen = np.asarray(spec.favourable_indices)
    return lambda y: np.isin(y, chosen).astype(np.int64)


def _stream(seed: int, split: str, subject: str) -> np.random.Generator:
    """The random stream of one piece of work (a comparison's bootstrap): the seed, the split and
    the subject, so that a comparison's interval is the same whatever else was compared."""
    return np.random.default_rng([seed, zlib.crc32(f"{split}:{subject}".encode())])


def _consistency_estimate(deviations: np.ndarray, n_boot: int, confidence: float, rng) -> Estimate:
    """1 − mean deviation, summed in order as aif360 sums it, and a bootstrap interval. The
    deviations take at most k + 1 values, so a resample of the rows is a multinomial draw over them."""
    m = len(deviations)
    value = float(1.0 - np.cumsum(deviations)[-1] / m)
    if not n_boot:
        return Estimate(value, float("nan"), float("nan"))
    values, counts = np.unique(deviations, return_counts=True)
    means = 1.0 - rng.multinomial(m, counts / m, size=n_boot) @ values / m
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Estimate(value, float(min(low, value)), float(max(high, value)))


@dataclass
class Mitigation:
    """Fairness metrics and accuracy before and after one mitigation, on the same rows."""

    method: str
    attribute: str
    rows: str                     # which rows both sides are measured on
    n: int
    before: dict[str, Estimate]
    after: dict[str, Estimate]


def mitigate(
    model: nn.Module,
    dataset: Dataset,
    attribute: str,
    *,
    arch: str | None = None,
    preprocessor: Any = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
    **training: Any,
) -> list[Mitigation]:
    """Two mitigations for ``attribute``, each as a before/after comparison with intervals.

    - Pre-processing: aif360 ``Reweighing`` weights, the same architecture retrained with
      them (``arch``, default ``model.arch``; ``training`` overrides its settings), both
      models scored on the whole test split (``model`` through ``preprocessor``, its
      checkpoint's own, default the data set's; the retrained one through the data set's).
    - Post-processing: aif360 ``EqOddsPostprocessing`` tuned on a seeded half of the test
      split (stratified by group and label); both sides scored on the other half.

    Example:
        >>> data = load_dataset("adult")  # doctest: +SKIP
        >>> [m.method for m in mitigate(load_model("artifacts/adult-mlp").model, data, "sex")]  # doctest: +SKIP
        ['reweighing', 'equalized_odds']
    """
    from scrutiny.audit.fairness.mitigation import (
        EqualizedOddsPostprocessor,
        retrain_reweighed,
        split_for_postprocessing,
    )
    from scrutiny.models.training import predict_proba

    if dataset.spec.task != "tabular" or dataset.spec.n_classes != 2:
        raise InputError(f"{dataset.spec.name}: mitigation (reweighing, equalized odds) needs a binary tabular data "
                         f"set with protected attributes; this one has {dataset.spec.n_classes} classes "
                         f"({', '.join(dataset.spec.classes[:5])}{', …' if dataset.spec.n_classes > 5 else ''})")
    protected_groups(dataset.spec, dataset.test.groups, [attribute], intersections=False,
                     where=f"{dataset.spec.name} test split")  # checks the column
    # the privileged group (or reference category) against every other row, as aif360's methods take it
    mask = dataset.spec.protected_attribute(attribute).is_privileged(dataset.test.groups[attribute])
    rng = np.random.default_rng(seed)
    y = dataset.test.y
    proba = predict_proba(model, (preprocessor or dataset.preprocessor).transform(dataset.test.X), device=device)
    y_pred = proba.argmax(axis=1)

    def measure(rows, predictions):
        counts = gm.confusion_counts(y[rows], predictions, mask[rows])
        return _estimates(counts, model=True, n_boot=n_boot, confidence=confidence, rng=rng)

    results = []
    arch = arch or getattr(model, "arch", None)
    if arch is None:
        raise InputError("reweighing retrains the model's architecture; this model does not say which (pass arch)")
    retrained = retrain_reweighed(dataset, attribute, arch, seed=seed, device=device, progress=progress, **training)
    reweighed = predict_proba(retrained.model, dataset.encode(dataset.test.X), device=device).argmax(axis=1)
    every = np.arange(len(y))
    results.append(Mitigation("reweighing (aif360), same architecture retrained", attribute, "test split", len(y),
                              measure(every, y_pred), measure(every, reweighed)))
    tune, evaluate = split_for_postprocessing(len(y), y, mask, seed=seed)
    post = EqualizedOddsPostprocessor().fit(proba[tune, 1], y[tune], mask[tune], seed=seed)
    results.append(Mitigation("equalized-odds post-processing (aif360)", attribute,
                              "the test half not used to tune it", len(evaluate),
                              measure(evaluate, y_pred[evaluate]), measure(evaluate, post.predict(proba[evaluate, 1], mask[evaluate]))))
    return results
