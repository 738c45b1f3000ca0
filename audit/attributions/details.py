"""What the attributions family records beside its findings."""

from __future__ import annotations

from dataclasses import dataclass

from scrutiny.audit.run.details import Details, optional

__all__ = ["AttributionsDetails", "MethodEntry", "ImportanceEntry", "AgreementEntry", "QualityEntry", "QualityCurves",
           "StabilityRun", "StabilityEntry", "FirstStepEntry", "SequenceDetails", "AdverseActionSummary", "DETAILS", "ARRAYS",
           "FX_SUFFIX", "BASE_SUFFIX", "TERMS_SUFFIX", "TIME_FEATURE_SUFFIX", "EXPLAINED_ROWS", "ADVERSE_ACTION_ARRAYS", "IMPORTANCE_FIGURE",
           "AGREEMENT_FIGURE", "HEATMAPS_FIGURE"]

Setting = int | float | str | bool

# the run-folder files the family writes
ARRAYS = "arrays/attributions.npz"                    # rows, target, per-feature attributions of each method
# in ARRAYS, per method: f(x) of each row's explained class and the base value its attributions start
# from, in the method's units (MethodEntry.output); base NaN for a method that shares out no f(x).
# Runs written before these were stored have neither.
FX_SUFFIX, BASE_SUFFIX = "__fx", "__base"
# in ARRAYS, LIME only: its local linear model's terms at each explained row, per feature (N, F); its
# BASE_SUFFIX array is then that model's intercept, and the intercept plus the terms is LIME's own
# prediction at x, which misses f(x) by the model's misfit. Runs written before hold neither.
TERMS_SUFFIX = "__terms"
# in ARRAYS, per method, for a sequence model only (SequenceDetails): the (T, F) mean |attribution|
# per time step and feature over the explained rows (scrutiny.audit.attributions.sequence)
TIME_FEATURE_SUFFIX = "__time_feature"
EXPLAINED_ROWS = "arrays/explained_rows.parquet"      # tables only: the explained rows' raw values
ADVERSE_ACTION_ARRAYS = "arrays/adverse_action.npz"   # the adverse-action notices (AdverseActionSummary.file)
IMPORTANCE_FIGURE = "figures/importance.png"
AGREEMENT_FIGURE = "figures/agreement.png"            # two methods or more
HEATMAPS_FIGURE = "figures/heatmaps.png"              # images only


@dataclass
class MethodEntry(Details):
    """One attribution method as it ran.

    Args:
        output: what the attributions explain (e.g. the explained class's log-odds).
        baseline: the reference input, in words.
        error_name: the method's own error figure (``convergence_delta``, ``sampling_error``…).
        settings: the method's scalar settings (steps, samples, coalitions…).
        completeness_p95, within_1pct: additive methods: 95th percentile of the relative
            completeness gap, and the share of rows within 1 %.
        sampling_error_p95, sampling_error_median: KernelSHAP's estimated sampling error as a
            share of the row's largest attribution.
    """

    output: str
    baseline: str
    error_name: str | None
    settings: dict[str, Setting]
    completeness_p95: float | None = optional()
    within_1pct: float | None = optional()
    sampling_error_p95: float | None = optional()
    sampling_error_median: float | None = optional()


@dataclass
class ImportanceEntry(Details):
    """Mean |attribution| per feature with its bootstrap interval, in feature order."""

    mean: list[float]
    low: list[float]
    high: list[float]


@dataclass
class AgreementEntry(Details):
    """How two methods rank the features alike."""

    methods: list[str]
    spearman_median: float
    spearman_global: float
    top_k: int
    top_k_overlap: float


@dataclass
class QualityCurves(Details):
    """Deletion and insertion curves (mean over rows) against the share of features removed."""

    fractions: list[float]
    deletion: list[float]
    insertion: list[float]
    random_deletion: list[float]
    random_insertion: list[float]


@dataclass
class QualityEntry(Details):
    """The quality checks of one method."""

    n: int
    deletion_auc: float
    random_deletion_auc: float
    insertion_auc: float
    random_insertion_auc: float
    deletion_ratio: float
    curves: QualityCurves
    infidelity_median: float
    sensitivity_median: float | None
    randomisation_spearman: float  # NaN (null): not assessed, no weights to re-initialise


@dataclass
class StabilityRun(Details):
    """One re-explanation of the stability rows: its seed, and its sample count where it differs
    from the audit's (LIME's extra rerun with more samples)."""

    seed: int
    n_samples: int | None = optional()


@dataclass
class StabilityEntry(Details):
    """How far one method's attributions move when the same rows are explained again with other
    seeds (:mod:`scrutiny.audit.attributions.stability`), each rerun against the audit's own.

    Args:
        n: rows re-explained; ``rows``: their positions among the explained rows.
        reruns: the re-explanations (one for a method that draws nothing at random).
        top_k: k of the top-k overlap.
        spearman_median: median over rows of the row's mean Spearman correlation of |attribution|
            (NaN, null, when no row has a ranking: every |attribution| equal).
        spearman_min: the lowest row's mean Spearman correlation.
        top_k_overlap: mean over rows and reruns of the share of the top-k features kept.
        n_unfavourable, reasons_unchanged: binary tabular data with a favourable class: the
            re-explained rows decided unfavourably, and the share of those whose principal-reason
            set (up to four features) no rerun changed (NaN, null, when there is none).
    """

    n: int
    rows: list[int]
    reruns: list[StabilityRun]
    top_k: int
    spearman_median: float
    spearman_min: float
    top_k_overlap: float
    n_unfavourable: int | None = optional()
    reasons_unchanged: float | None = optional()


@dataclass
class FirstStepEntry(Details):
    """The first-time-step check of one method (:mod:`scrutiny.audit.attributions.sequence`): the
    rows explained again from a baseline holding each row's own time steps in a shuffled order.

    Args:
        n: rows compared (total |attribution| at least the floor under both baselines);
            ``rows``: the re-explained rows' positions among the explained rows.
        baseline: the audit's baseline, in words.
        audit_share: mean over the compared rows of the first step's share of |attribution| with
            the audit's baseline (s0); NaN, null, when no row was compared.
        shuffled_share: the same with the shuffled-time baseline (s0').
        difference: the finding's value, ``audit_share - shuffled_share``.
    """

    n: int
    rows: list[int]
    baseline: str
    audit_share: float
    shuffled_share: float
    difference: float


@dataclass
class SequenceDetails(Details):
    """A sequence model's attributions per time step and feature (a ``RowGRU``: time step t is
    image row t, its features the row's pixels of every channel); the (T, F) heat maps are in
    ``ARRAYS`` as ``{method}__time_feature``.

    Args:
        time_steps, features: the names of the T steps and F features, in the heat maps' order.
        time_share: per method, the time profile: mean over the explained rows of each step's
            share of the row's total |attribution| (T values summing to 1).
        feature_share: per method, the same share per feature, summed over the time steps.
        n: per method, the rows counted (total |attribution| at least the floor).
        first_step: per gradient method with one baseline per row, the first-time-step check;
            absent when the quality checks were not run.
    """

    time_steps: list[str]
    features: list[str]
    time_share: dict[str, list[float]]
    feature_share: dict[str, list[float]]
    n: dict[str, int]
    first_step: dict[str, FirstStepEntry] | None = optional()


@dataclass
class AdverseActionSummary(Details):
    """The counts behind the prohibited-basis finding; the notices are in ``file``."""

    method: str
    file: str
    max_reasons: int
    prohibited_bases: list[str]
    prohibited_inputs: list[str]
    n_explained: int
    n_unfavourable: int
    n_cannot_issue: int
    n_without_reasons: int
    cannot_issue_by_basis: dict[str, int]


@dataclass
class AttributionsDetails(Details):
    """Attributions on a sample of the test split.

    Args:
        n: explained rows; ``rows``: their indices in the test split.
        features: the features attributions are reported over (original columns, or pixels).
        target: the class each row's attributions explain; ``output``: what they explain.
        methods, importance, quality: per method.
        importance_confidence: the importance intervals' confidence level.
        agreement: one entry per pair of methods.
        stability: per method, the seed-stability figures; absent when the quality checks were
            not run (and in runs written before the check existed).
        adverse_action: tabular data with a favourable class only.
        sequence: sequence models only (a ``RowGRU``): attributions per time step and feature,
            and the first-time-step check; absent otherwise (and in runs written before it existed).
        not_assessed: configured methods that could not run, and why (an ONNX model without a
            PyTorch twin has no gradients); absent when every method ran.
    """

    n: int
    rows: list[int]
    features: list[str]
    target: list[int]
    output: str
    methods: dict[str, MethodEntry]
    importance: dict[str, ImportanceEntry]
    importance_confidence: float
    agreement: list[AgreementEntry]
    quality: dict[str, QualityEntry]
    adverse_action: AdverseActionSummary | None
    not_assessed: dict[str, str] | None = optional()
    stability: dict[str, StabilityEntry] | None = optional()
    sequence: SequenceDetails | None = optional()


DETAILS = AttributionsDetails
