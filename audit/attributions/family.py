"""The attributions family: :func:`run`."""

from __future__ import annotations

import numpy as np

from scrutiny.audit import plots
from scrutiny.audit.run.family import AuditContext, FamilyResult
from scrutiny.audit.run.findings import Finding
from scrutiny.modality import modality

from . import adverse_action
from .details import (
    AGREEMENT_FIGURE,
    ARRAYS,
    BASE_SUFFIX,
    EXPLAINED_ROWS,
    FX_SUFFIX,
    HEATMAPS_FIGURE,
    IMPORTANCE_FIGURE,
    TERMS_SUFFIX,
    TIME_FEATURE_SUFFIX,
    AgreementEntry,
    AttributionsDetails,
    FirstStepEntry,
    ImportanceEntry,
    MethodEntry,
    QualityCurves,
    QualityEntry,
    SequenceDetails,
    StabilityEntry,
    StabilityRun,
)
from .kernel_shap import TARGET_ERROR
from .registry import COMPLETENESS_METHODS, METHOD_INFO, RELIANCE_METHODS
from .sequence import FirstStep
from .stability import Stability

__all__ = ["run"]

NEGLIGIBLE_CHANGE = 1e-4  # |f(x) - f(baseline)| below this leaves no share to account for


def run(context: AuditContext) -> FamilyResult:
    """Attribute a seeded sample of test rows with the configured methods and check the attributions.

    Example:
        >>> result = run(context)  # doctest: +SKIP
        >>> sorted(result.details.methods)  # doctest: +SKIP
        ['integrated_gradients', 'kernel_shap', 'lime']
    """
    from .explain import explain

    c = context
    cfg, spec = c.config.attributions, c.dataset.spec
    heatmaps = "heatmaps" in modality(spec.task).figures
    runnable, skipped = list(cfg.methods), {}
    findings: list[Finding] = []
    if c.gradient_model is None:  # an ONNX model without a twin that agrees: no gradients to take
        skipped = {m: f"{m} needs gradients: {c.no_gradients}" for m in runnable if METHOD_INFO[m].needs_gradients}
        runnable = [m for m in runnable if m not in skipped]
        if not runnable:
            reason = f"every configured method ({', '.join(skipped)}) needs gradients: {c.no_gradients}"
            return c.family_not_assessed("attributions", reason)
        findings += [c.not_assessed("attributions.completeness", reason, subject=m)
                     for m, reason in skipped.items() if m in COMPLETENESS_METHODS]
    twin = c.gradient_model if c.gradient_model is not c.model else None
    result = explain(c.module, c.dataset, methods=runnable, samples=cfg.samples, preprocessor=c.preprocessor,
                     seed=c.config.seed, top_k=cfg.top_k, n_boot=cfg.n_boot, quality=cfg.quality,
                     quality_samples=cfg.quality_samples, gradient_model=twin, executor=c.executor,
                     chunk_rows=c.config.chunk_rows, lime_target=cfg.lime_target)
    first = next(iter(result.attributions.values()))
    methods = {}
    for name, attribution in result.attributions.items():
        entry = MethodEntry(output=attribution.output, baseline=attribution.baseline,
                            error_name=attribution.error_name,
                            settings={k: v for k, v in attribution.settings.items()
                                      if isinstance(v, (int, float, str, bool))})
        findings += _completeness(c, name, attribution, entry)
        if attribution.error_name == "sampling_error":
            findings.append(_sampling_error(c, name, attribution, entry))
        methods[name] = entry
    for a in result.agreements:
        findings.append(c.finding(
            "attributions.agreement", a.spearman_median, subject=f"{a.methods[0]} vs {a.methods[1]}",
            metric="median per-row Spearman correlation of feature rankings",
            explanation=f"{a.methods[0]} and {a.methods[1]} rank the features with a median per-row Spearman "
                        f"correlation of {a.spearman_median:.2f} (top-{a.k} overlap {a.top_k_per_sample.mean():.0%}).",
        ))
    findings += _protected_reliance(c, result)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    notices = adverse_action.explained_notices(c.module, c.dataset, result, preprocessor=c.preprocessor, device=c.device)
    if notices is not None:
        arrays[adverse_action.ARRAYS] = notices.arrays()
        if notices.prohibited_inputs:  # else no reason can name a prohibited basis: a check that cannot fail
            findings.append(c.finding("attributions.prohibited_basis_notices", **adverse_action.notices_finding(notices)))
    quality = {}
    for name, q in (result.quality or {}).items():
        quality[name] = _quality_entry(q)
        findings += _quality_findings(c, name, q, quality[name].deletion_ratio)
    stability: dict[str, StabilityEntry] | None = None
    if cfg.quality:  # a sanity check of each method, run with the others
        stability = {}
        for name, found in _stability(c, result, twin, notices).items():
            stability[name] = _stability_entry(found)
            findings += _stability_findings(c, found, notice_method=notices.method if notices is not None else None)
    sequence: SequenceDetails | None = None
    time_feature: dict[str, np.ndarray] = {}
    if _is_sequence(c, twin) and heatmaps:  # reads its (C, H, W) input row by row: time steps × features
        sequence, time_feature, first_findings = _sequence(c, result, twin)
        findings += first_findings
    details = AttributionsDetails(
        n=len(result.rows),
        rows=result.rows.tolist(),
        features=list(result.space.names),
        target=first.target.tolist(),
        output=first.output,
        methods=methods,
        importance={m: ImportanceEntry(mean=_floats(i.mean), low=_floats(i.low), high=_floats(i.high))
                    for m, i in result.importance.items()},
        importance_confidence=next(iter(result.importance.values())).confidence,
        agreement=[AgreementEntry(methods=list(a.methods), spearman_median=a.spearman_median,
                                  spearman_global=a.spearman_global, top_k=a.k,
                                  top_k_overlap=float(a.top_k_per_sample.mean())) for a in result.agreements],
        quality=quality,
        adverse_action=notices.summary() if notices is not None else None,
        not_assessed=skipped or None,
        stability=stability,
        sequence=sequence,
    )
    stored = {"rows": result.rows, "target": first.target}
    stored.update(time_feature)
    stored.update({f"{m}": v.astype(np.float32) for m, v in result.per_feature.items()})
    stored.update(_waterfall_ends(c, result, twin))
    if heatmaps:  # the pixels the heat maps are drawn over
        stored["inputs"] = c.dataset.test.X[result.rows].astype(np.float32)
        stored.update({f"{m}__pixels": a.values.astype(np.float32) for m, a in result.attributions.items()})
    arrays[ARRAYS] = stored
    tables = {}
    if spec.task != "image":
        rows = c.dataset.test.X.iloc[result.rows].reset_index(drop=True).copy()
        rows.insert(0, "test_row", result.rows)
        rows["label"] = [spec.classes[i] for i in c.dataset.test.y[result.rows]]
        rows["explained_class"] = [spec.classes[i] for i in first.target]
        tables[EXPLAINED_ROWS] = rows
    figures = {IMPORTANCE_FIGURE: plots.importance_figure(result.importance)}
    if result.agreements:
        figures[AGREEMENT_FIGURE] = plots.agreement_figure(list(result.attributions), result.agreements)
    if heatmaps:
        shown = slice(0, min(6, len(result.rows)))
        titles = [f"true {spec.classes[c.dataset.test.y[r]]}, explained {spec.classes[t]}"
                  for r, t in zip(result.rows[shown], first.target[shown])]
        figures[HEATMAPS_FIGURE] = plots.heatmap_figure(c.dataset.test.X[result.rows[shown]],
                                                         {m: a.values[shown] for m, a in result.attributions.items()},
                                                         titles=titles,
                                                         outputs={m: a.output for m, a in result.attributions.items()})
    return FamilyResult(findings=findings, details=details, arrays=arrays, tables=tables, figures=figures)


def _waterfall_ends(c: AuditContext, result, twin) -> dict[str, np.ndarray]:
    """Per method, f(x) of each explained row's target (``{method}__fx``) and the base value its
    attributions start from (``{method}__base``), in the method's own units (``Attribution.output``):
    the attributions of an additive method add up to fx - base (exactly for KernelSHAP, up to the
    completeness gap for integrated gradients and DeepLIFT, in expectation for the sampled
    gradient methods). The base is what the completeness check already measured against:
    f(x) - ``output_change`` (f(baseline), or its mean over the baseline rows); KernelSHAP's is
    its expected value E f(background), as :mod:`.kernel_shap` computes it. LIME's base is its local
    model's intercept, with that model's terms at x (``{method}__terms``): they add up to LIME's own
    prediction at x, not to f(x). Methods with no such property (saliency…) get a NaN base: they
    share out no f(x)."""
    from .methods import ExplainedOutput, batched_outputs

    test = c.dataset.test.X
    test_X = test.iloc[result.rows] if hasattr(test, "iloc") else test[result.rows]
    inputs = np.asarray((c.preprocessor or c.dataset.preprocessor).transform(test_X), dtype=np.float32)
    kind = result.space.kind
    outputs: dict[tuple[int, bool], np.ndarray] = {}  # one forward pass per model and unit, whatever the methods

    def explained(model, probabilities: bool) -> np.ndarray:
        key = (id(model), probabilities)
        if key not in outputs:
            outputs[key] = batched_outputs(model, inputs, 4096, probabilities=True) if probabilities else \
                batched_outputs(ExplainedOutput(model).eval(), inputs, 4096)
        return outputs[key]

    ends: dict[str, np.ndarray] = {}
    for name, attribution in result.attributions.items():
        info = METHOD_INFO[name]
        model = (twin or c.module) if info.needs_gradients else c.module
        target = np.asarray(attribution.target, dtype=np.int64)
        fx = explained(model, attribution.output == "probability")[np.arange(len(target)), target]
        base = np.full(len(target), np.nan)
        if attribution.local_terms is not None and attribution.local_intercept is not None:
            base = attribution.local_intercept
            ends[name + TERMS_SUFFIX] = attribution.local_terms.astype(np.float64)
        elif attribution.output_change is not None:
            base = fx - attribution.output_change
        elif info.additivity == "exact":  # KernelSHAP: E f(background), over the baseline rows (a table)
            background = attribution.baseline_values                     # or of their mean image
            if kind != "tabular":
                background = background.mean(axis=0, keepdims=True)
            base = batched_outputs(ExplainedOutput(model).eval(), background, 8192).mean(axis=0)[target]
        ends[name + FX_SUFFIX] = fx.astype(np.float64)
        ends[name + BASE_SUFFIX] = base.astype(np.float64)
    return ends


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64)]


def _completeness(c: AuditContext, name: str, attribution, entry: MethodEntry) -> list[Finding]:
    """How closely ``name``'s attributions add up to the output change they explain (its figures
    go into ``entry``; a finding only for :data:`COMPLETENESS_METHODS`)."""
    relative = attribution.relative_error
    if relative is None:
        return []
    meaningful = np.abs(attribution.output_change) >= NEGLIGIBLE_CHANGE
    gaps = relative[meaningful]
    entry.completeness_p95 = float(np.percentile(gaps, 95)) if len(gaps) else None
    entry.within_1pct = float(np.mean(gaps <= 0.01)) if len(gaps) else None
    if name not in COMPLETENESS_METHODS:
        return []
    caveats = [] if meaningful.all() else [
        f"{int((~meaningful).sum())} rows with |f(x) - f(baseline)| < {NEGLIGIBLE_CHANGE:g} left out (no share to "
        f"account for)"]
    value = entry.completeness_p95 if entry.completeness_p95 is not None else float("nan")
    return [c.finding(
        "attributions.completeness", value, subject=name, caveats=caveats,
        metric="95th percentile of |sum of attributions - (f(x) - f(baseline))| / |f(x) - f(baseline)|",
        explanation=f"For 95% of the {len(gaps)} explained rows, the {name} attributions add up to the "
                    f"output change they explain to within {value:.2%}.",
    )]


def _sampling_error(c: AuditContext, name: str, attribution, entry: MethodEntry) -> Finding:
    """KernelSHAP's estimated sampling error (:mod:`.kernel_shap`): 95th percentile over the rows of
    the largest error over features as a share of the row's largest |attribution|; the rows with
    nothing to explain (NaN shares) left out. Adds its figures to the method's ``entry``."""
    from .methods import ATTRIBUTION_FLOOR

    shares = attribution.error[np.isfinite(attribution.error)]
    left_out = len(attribution.error) - len(shares)
    caveats = [f"{left_out} rows whose largest |attribution| is below {ATTRIBUTION_FLOOR:g} left out (nothing to be "
               f"wrong about)"] if left_out else []
    value = float(np.percentile(shares, 95)) if len(shares) else float("nan")
    entry.sampling_error_p95 = value if len(shares) else None
    entry.sampling_error_median = float(np.median(shares)) if len(shares) else None
    if attribution.settings["exact"]:
        said = (f"Every coalition of the {len(attribution.error)} explained rows was evaluated: the {name} attributions "
                f"are exact Shapley values, with no sampling error.")
    else:
        said = (f"For 95% of the {len(shares)} explained rows, the estimated largest error of a {name} attribution "
                f"against its exact Shapley value is at most {value:.1%} of the row's largest attribution "
                f"({_error_basis(attribution.settings)})"
                f"{_refined_text(attribution.settings)}.")
    return c.finding(
        "attributions.sampling_error", value, subject=name, caveats=caveats,
        metric="95th percentile over rows of the estimated largest sampling error of an attribution / the row's "
               "largest |attribution|",
        explanation=said,
    )


def _protected_reliance(c: AuditContext, result) -> list[Finding]:
    """How much of the explanations rests on protected attributes the model reads as inputs."""
    spec = c.dataset.spec
    names = list(result.space.names)
    inputs = [p.name for p in spec.protected if p.name in names]
    if not inputs:
        return []
    method = next((m for m in RELIANCE_METHODS if m in result.importance), next(iter(result.importance)))
    mean = np.asarray(result.importance[method].mean, dtype=np.float64)
    total = float(mean.sum())
    findings = []
    for name in inputs:
        j = names.index(name)
        share = float(mean[j] / total) if total > 0 else float("nan")
        rank = int(np.argsort(-mean, kind="stable").tolist().index(j)) + 1
        findings.append(c.finding(
            "attributions.protected_reliance", share, subject=name,
            metric=f"share of total mean |attribution| ({method}) on this protected input",
            explanation=f"The model reads the protected attribute {name} as an input; it carries {share:.1%} of the "
                        f"{method} attribution over the explained rows (rank {rank} of {len(names)} features).",
        ))
    return findings


def _quality_entry(q) -> QualityEntry:
    d = q.deletion
    return QualityEntry(
        n=len(q.infidelity),
        deletion_auc=float(d.deletion_auc.mean()), random_deletion_auc=float(d.random_deletion_auc.mean()),
        insertion_auc=float(d.insertion_auc.mean()), random_insertion_auc=float(d.random_insertion_auc.mean()),
        deletion_ratio=float(d.deletion_auc.mean() / d.random_deletion_auc.mean()),
        curves=QualityCurves(fractions=_floats(d.fractions), deletion=_floats(d.deletion), insertion=_floats(d.insertion),
                             random_deletion=_floats(d.random_deletion), random_insertion=_floats(d.random_insertion)),
        infidelity_median=float(np.median(q.infidelity)),
        sensitivity_median=float(np.median(q.sensitivity)) if q.sensitivity is not None else None,
        randomisation_spearman=q.randomisation.spearman_median if q.randomisation is not None else float("nan"),
    )


def _quality_findings(c: AuditContext, name: str, q, ratio: float) -> list[Finding]:
    if q.randomisation is None:
        randomisation = c.not_assessed("attributions.randomisation", f"the check re-initialises the model's "
                                       f"weights: {c.no_gradients}", subject=name)
    else:
        randomisation = c.finding(
            "attributions.randomisation", q.randomisation.spearman_median, subject=name,
            metric="median per-row Spearman correlation with a re-initialised model's attributions",
            explanation=f"With the model's weights re-initialised, {name}'s feature rankings keep a median Spearman "
                        f"correlation of {q.randomisation.spearman_median:.2f} with the trained model's: "
                        f"{'they depend on what the model learned' if q.randomisation.passed else 'they barely depend on the model'}.",
        )
    return [
        randomisation,
        c.finding(
            "attributions.deletion", ratio, subject=name,
            metric="deletion AUC in attribution order / deletion AUC in random orders",
            explanation=f"Deleting features in {name}'s order lowers the explained class's probability "
                        f"{'faster' if ratio < 1 else 'no faster'} than random orders do (area ratio {ratio:.2f}).",
        ),
    ]


def _stability(c: AuditContext, result, twin, notices) -> dict[str, Stability]:
    """Each method's attributions of a seeded subset of the explained rows, explained again with
    other seeds and the audit's own baseline (:mod:`.stability`), against the audit's own; the
    reason sets on the rows decided unfavourably where notices apply. The reruns run on the
    audit's executor, each its own piece of work in the manifest."""
    from .stability import stability

    cfg = c.config.attributions
    rows = cfg.stability_rows
    test = c.dataset.test.X
    encode = (c.preprocessor or c.dataset.preprocessor).transform
    inputs = np.asarray(encode(test.iloc[result.rows] if hasattr(test, "iloc") else test[result.rows]),
                        dtype=np.float32)
    background = np.asarray(encode(c.dataset.train.X), dtype=np.float32)
    unfavourable = None
    if notices is not None:
        unfavourable = np.zeros(len(result.rows), dtype=bool)
        unfavourable[notices.positions] = True
    found = {}
    for name, attribution in result.attributions.items():
        model = (twin or c.module) if METHOD_INFO[name].needs_gradients else c.module
        count = attribution.settings.get("num_samples", attribution.settings.get("n_samples"))
        found[name] = stability(model, inputs, result.per_feature[name], attribution.target, method=name,
                                space=result.space, background=background, seed=c.config.seed, rows=rows,
                                n_samples=count if isinstance(count, int) else None, unfavourable=unfavourable,
                                baselines=attribution.baseline_values, chunk_rows=c.config.chunk_rows,
                                executor=c.executor, lime_target=cfg.lime_target)
    return found


def _stability_entry(found: Stability) -> StabilityEntry:
    rows = found.row_spearman
    finite = rows[np.isfinite(rows)]
    kept = found.reasons_unchanged
    return StabilityEntry(
        n=len(found.positions), rows=[int(p) for p in found.positions],
        reruns=[StabilityRun(seed=r.seed, n_samples=r.n_samples) for r in found.reruns], top_k=found.k,
        spearman_median=found.spearman_median, spearman_min=float(finite.min()) if len(finite) else float("nan"),
        top_k_overlap=found.top_k_mean,
        n_unfavourable=int(found.unfavourable.sum()) if found.unfavourable is not None else None,
        reasons_unchanged=kept,
    )


def _is_sequence(c: AuditContext, twin) -> bool:
    """The audited model reads its input as a sequence of time steps (a ``RowGRU``); for an ONNX
    model, its PyTorch twin does, which computes the same function (it agreed with the model)."""
    from .sequence import is_sequence_model

    return is_sequence_model(c.module) or (twin is not None and is_sequence_model(twin))


def _sequence(c: AuditContext, result, twin) -> tuple[SequenceDetails, dict[str, np.ndarray], list[Finding]]:
    """A sequence model's attributions per time step and feature (:mod:`.sequence`): the profiles
    (details), the (T, F) heat maps (arrays, ``{method}__time_feature``) and, with the quality
    checks, the first-time-step check of each gradient method with one baseline per row, on as
    many rows as the stability check explains again."""
    from .sequence import FIRST_STEP_METHODS, feature_names, first_step, time_feature_summary, time_names

    cfg = c.config.attributions
    shape = tuple(result.space.input_shape)
    summaries = {m: time_feature_summary(a.values) for m, a in result.attributions.items()}
    arrays = {m + TIME_FEATURE_SUFFIX: s.mean_abs.astype(np.float32) for m, s in summaries.items()}
    checks: dict[str, FirstStepEntry] | None = None
    findings: list[Finding] = []
    checked = [m for m in result.attributions if m in FIRST_STEP_METHODS]
    if cfg.quality and checked:
        checks = {}
        if shape[1] < 2:
            findings += [c.not_assessed("attributions.first_step", f"the model reads a single time step ({shape[1]} "
                                        f"image row): no first step to compare", subject=m) for m in checked]
        else:
            test = c.dataset.test.X
            encode = (c.preprocessor or c.dataset.preprocessor).transform
            inputs = np.asarray(encode(test[result.rows]), dtype=np.float32)
            background = np.asarray(encode(c.dataset.train.X), dtype=np.float32)
            for name in checked:
                attribution = result.attributions[name]
                found = first_step(twin or c.module, inputs, attribution.values, attribution.target, method=name,
                                   space=result.space, background=background, baseline=attribution.baseline,
                                   seed=c.config.seed, rows=cfg.stability_rows, chunk_rows=c.config.chunk_rows,
                                   executor=c.executor)
                checks[name] = FirstStepEntry(n=found.n, rows=[int(p) for p in found.positions],
                                              baseline=found.baseline, audit_share=found.audit_mean,
                                              shuffled_share=found.shuffled_mean, difference=found.value)
                findings.append(_first_step_finding(c, found))
    details = SequenceDetails(time_steps=time_names(shape), features=feature_names(shape),
                              time_share={m: _floats(s.time_share) for m, s in summaries.items()},
                              feature_share={m: _floats(s.feature_share) for m, s in summaries.items()},
                              n={m: s.n for m, s in summaries.items()}, first_step=checks)
    return details, arrays, findings


def _first_step_finding(c: AuditContext, found: FirstStep) -> Finding:
    """``attributions.first_step[method]``: the first time step's share of |attribution| with the
    audit's baseline, less its share with a baseline of the row's own time steps reordered."""
    name, k = found.method, len(found.positions)
    if found.n == 0:
        return c.not_assessed("attributions.first_step", f"none of the {k} re-explained rows has a total "
                              f"|attribution| to share out under both baselines", subject=name)
    left_out = k - found.n
    caveats = [f"{left_out} rows with a total |attribution| below the floor under either baseline left out "
               f"(nothing to share out)"] if left_out else []
    value, own, shuffled = found.value, found.audit_mean, found.shuffled_mean
    if value > 0:
        said = (f"the audit's baseline gives the first step {value:.1%} more of the explanation than a baseline with "
                f"realistic content at every step does; that part is an artefact of the baseline, not something the "
                f"model relies on")
    else:
        said = "the audit's baseline gives the first step no more of the explanation than a realistic baseline does"
    return c.finding(
        "attributions.first_step", value, subject=name, caveats=caveats,
        metric="mean over re-explained rows of the first time step's share of |attribution| with the audit's "
               "baseline minus its share with a baseline of the row's own time steps in a shuffled order",
        explanation=f"Explained again from a baseline holding each row's own time steps in a shuffled order, the "
                    f"first time step carries {shuffled:.1%} of {name}'s |attribution| on average over {found.n} rows, "
                    f"against {own:.1%} from the audit's baseline ({found.baseline}): {said}.",
    )


def _error_basis(settings: dict) -> str:
    """How KernelSHAP's sampling error was estimated, in words, from the attribution's settings."""
    if settings.get("estimator") == "per_background":
        return (f"the posterior spread of each background row's game, up to {settings['coalitions']} coalitions per "
                f"row and background row, no further model evaluation")
    return f"a bootstrap over the {settings['coalitions']} coalitions evaluated per row"


def _refined_text(settings: dict) -> str:
    """What the target-error budget did: ", 7 rows explained again with up to 8x the coalitions"."""
    refined, used = settings.get("rows_refined", 0), settings.get("coalitions_used") or {}
    if not refined:
        return ""
    most = max(used) // settings["coalitions"] if used else 1
    return (f"; {refined} row{'s' if refined != 1 else ''} above {TARGET_ERROR:.0%} were explained again with up to "
            f"{most}x the coalitions")


def _reruns_text(found: Stability) -> str:
    """How the rows were explained again: "again with 2 other seeds and 10,000 samples"; "once more (it
    draws nothing at random)" for a method without random draws."""
    if not METHOD_INFO[found.method].sampled:
        return "once more (it draws nothing at random)"
    seeds = sum(r.n_samples is None for r in found.reruns)
    said = f"again with {seeds} other seed{'s' if seeds != 1 else ''}"
    counts = [r.n_samples for r in found.reruns if r.n_samples is not None]
    if counts:
        said += " and " + ", ".join(f"{n:,} samples" for n in counts)
    return said


def _stability_findings(c: AuditContext, found: Stability, *, notice_method: str | None) -> list[Finding]:
    """``attributions.stability[method]`` and, where notices apply, ``attributions.reason_stability[method]``."""
    name, n = found.method, len(found.positions)
    value = found.spearman_median
    flat = int((~np.isfinite(found.row_spearman)).sum())
    if not np.isfinite(value):
        findings = [c.not_assessed("attributions.stability", f"every one of the {n} re-explained rows has equal "
                                   f"|attributions| on every feature: no ranking to compare", subject=name)]
    else:
        caveats = [f"{flat} rows whose |attributions| are all equal left out (no ranking)"] if flat else []
        findings = [c.finding(
            "attributions.stability", value, subject=name, caveats=caveats,
            metric="median over re-explained rows of the Spearman correlation of |attribution| between the audit's "
                   "attributions and reruns with other seeds",
            explanation=f"Explained {_reruns_text(found)}, {n} rows keep {name}'s feature "
                        f"ranking with a median Spearman correlation of {value:.2f}; the top {found.k} features are "
                        f"the same for {found.top_k_mean:.0%} of them on average.",
        )]
    share = found.reasons_unchanged
    if share is None:  # no adverse-action notices for these data
        return findings
    m = len(found.reasons_kept) if found.reasons_kept is not None else 0
    stated = " (the method behind the adverse-action notices)" if name == notice_method else ""
    if m == 0:
        findings.append(c.not_assessed("attributions.reason_stability", f"none of the {n} re-explained rows was "
                                       f"decided unfavourably: no reasons to compare", subject=name))
    else:
        findings.append(c.finding(
            "attributions.reason_stability", share, subject=name,
            metric="share of re-explained rows decided unfavourably whose principal-reason set is unchanged in "
                   "every rerun with other seeds",
            explanation=f"Of the {m} re-explained rows decided unfavourably, {share:.0%} keep the same principal "
                        f"reasons from {name}{stated} when explained {_reruns_text(found)}.",
        ))
    return findings
