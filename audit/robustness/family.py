"""The robustness family: :func:`run`."""

from __future__ import annotations

import numpy as np

from scrutiny.audit import plots
from scrutiny.audit.run.family import AuditContext, FamilyResult
from scrutiny.audit.run.findings import Finding
from scrutiny.modality import modality

from .details import (
    ARRAYS,
    CERTIFIED_FIGURE,
    CURVE_FIGURE,
    EXAMPLES_FIGURE,
    MIN_EPS_FIGURE,
    CertificationDetails,
    CertifiedEntry,
    ExampleEntry,
    OodEntry,
    RobustnessDetails,
)
from .registry import WHITE_BOX, chain_of

__all__ = ["run", "EXAMPLES_PER_POINT"]

EXAMPLES_PER_POINT = 4
"""Adversarial examples a run keeps per attack and ε (the first rows each attack flipped there)."""


def run(context: AuditContext) -> FamilyResult:
    """Attack a seeded sample of test rows over the ε grid and gate the worst case at the policy's radius.

    Example:
        >>> result = run(context)  # doctest: +SKIP
        >>> result.details.gated_eps, result.findings[0].value  # doctest: +SKIP
        (0.1, 0.62)
    """
    from .assess import SEARCH_STEPS, assess_robustness, fit_detector

    c = context
    cfg, spec = c.config.robustness, c.dataset.spec
    kind = modality(spec.task)
    gated = c.policy.robust_eps(spec.task)
    grid = sorted(set(cfg.eps) | {gated})
    attacks, skipped, caveats = list(cfg.attacks), [], []
    if c.gradient_model is None:  # white-box attacks and the smallest-eps search (PGD) need gradients
        skipped = [a for a in attacks if a in WHITE_BOX]
        attacks = [a for a in attacks if a not in WHITE_BOX]
        caveats = [f"not assessed: {', '.join(skipped) + ' and ' if skipped else ''}the smallest-eps search (PGD), "
                   f"which need gradients; {c.no_gradients}"]
        if not attacks:
            reason = f"every configured attack ({', '.join(skipped)}) needs gradients: {c.no_gradients}"
            return FamilyResult(findings=[c.not_assessed("robustness.robust_accuracy", reason, subject=f"eps={gated:g}"),
                                          c.not_assessed("robustness.weak_evaluation", reason)], details=None)
    detector = fit_detector(c.dataset, c.preprocessor, seed=c.config.seed, device=c.device) if cfg.detector else None
    twin = c.gradient_model if c.gradient_model is not c.model else None
    searched = c.gradient_model is not None
    result = assess_robustness(
        c.module, c.dataset, attacks=attacks, eps=grid, norm=cfg.norm, samples=cfg.samples,
        preprocessor=c.preprocessor, immutable=tuple(cfg.immutable), mutable=tuple(cfg.mutable), steps=cfg.steps,
        restarts=cfg.restarts, queries=cfg.queries, detector=detector, seed=c.config.seed, device=c.device,
        gradient_model=twin, search_steps=SEARCH_STEPS if searched else 0, executor=c.executor,
        chunk_rows=c.config.chunk_rows, examples_per_point=EXAMPLES_PER_POINT,
    )
    worst = result.point("worst case", gated)
    chain = chain_of(result.attacks)
    chained = (f" ({' → '.join(chain)} as a chain, AutoAttack's way: each on the rows the ones before it left)"
               if len(chain) > 1 else "")
    findings = [
        c.finding(
            "robustness.robust_accuracy", worst.robust_accuracy, subject=f"eps={gated:g}", caveats=caveats,
            interval=wilson(worst.robust_accuracy, worst.n), confidence=0.95,
            metric=f"accuracy under the worst of {', '.join(result.attacks)} ({result.norm})",
            explanation=f"Under the strongest of {', '.join(result.attacks)} at {result.norm} radius "
                        f"{gated:g} {kind.radius_words}{chained}, "
                        f"{worst.robust_accuracy:.1%} of {worst.n} test rows stay correctly classified "
                        f"(clean: {worst.clean_accuracy:.1%}).",
        ),
        c.finding(
            "robustness.weak_evaluation", len(result.warnings),
            metric="signs of a weak attack evaluation",
            explanation=("No sign that the attack evaluation is weak." if not result.warnings else
                         f"{len(result.warnings)} sign(s) that the attack evaluation is weak: "
                         + " ".join(result.warnings)),
        ),
    ]
    details = RobustnessDetails(
        n=len(result.rows), norm=result.norm, eps=[float(e) for e in result.eps], gated_eps=gated,
        attacks=list(result.attacks),
        curve=list(result.curve),
        contributions=list(result.contributions),
        median_min_eps=result.median_min_eps,
        never_flipped=float(np.isinf(result.min_eps).mean()) if searched else float("nan"),
        search_eps=result.search_eps, large_eps_accuracy=result.large_eps_accuracy,
        constraints=list(result.constraints), warnings=list(result.warnings), gradient=dict(result.gradient),
        ood=[OodEntry(**entry) for entry in result.ood] if result.ood is not None else None,
        examples=[ExampleEntry(row=int(e.row), attack=e.attack, eps=e.eps, label=int(e.label), before=int(e.before),
                               after=int(e.after), changes=[[str(n), str(b), str(a)] for n, b, a in e.changes])
                  for e in result.examples],
        settings={k: v for k, v in result.settings.items() if isinstance(v, (int, float, str, bool))},
    )
    stored = {"rows": result.rows, "min_eps": result.min_eps}
    stored.update({f"robust__{a}": r for a, r in result.robust.items()})
    if result.examples:
        stored["examples_x"] = np.stack([e.x for e in result.examples]).astype(np.float32)
        stored["examples_x_adv"] = np.stack([e.x_adv for e in result.examples]).astype(np.float32)
    figures = {
        CURVE_FIGURE: plots.robustness_figure(result.curve, norm=result.norm,
                                              clean_accuracy=result.curve[0].clean_accuracy, unit=kind.eps_unit,
                                              gated_eps=gated,
                                              bounds=c.policy.threshold("robustness.robust_accuracy")),
    }
    if searched:
        figures[MIN_EPS_FIGURE] = plots.min_eps_figure(result.min_eps, norm=result.norm, search_eps=result.search_eps,
                                                       gated_eps=gated, unit=kind.eps_unit)
    if "adversarial" in kind.figures and result.examples:
        figures[EXAMPLES_FIGURE] = plots.adversarial_figure(_spread(result.examples, 6), spec.classes)
    if cfg.certification.sigma > 0:
        certification, finding, arrays = _certify(c, result)
        details.certification = certification
        findings.append(finding)
        stored.update(arrays)
        base_curve = None
        if result.norm == "l2":
            worst = sorted((p.eps, p.robust_accuracy) for p in result.curve if p.attack == "worst case")
            base_curve = ([0.0] + [e for e, _ in worst], [result.curve[0].clean_accuracy] + [a for _, a in worst])
        figures[CERTIFIED_FIGURE] = plots.certified_figure(certification, base_curve=base_curve)
    return FamilyResult(findings=findings, details=details, arrays={ARRAYS: stored}, figures=figures)


def _certify(c: AuditContext, attacked) -> tuple[CertificationDetails, Finding, dict[str, np.ndarray]]:
    """Randomized smoothing on a seeded subset of the attacked rows: both bounds at each radius,
    the finding at the policy's radius, and the per-row arrays."""
    from .assess import _sample
    from .certification import ATTACK_COPIES, ATTACK_STEPS, assess_certification
    from .smoothing import table_noise

    cfg, spec = c.config.robustness, c.dataset.spec
    settings = cfg.certification
    gated = c.policy.certified_radius(spec.task)
    rows, x, y = _sample(c.dataset, c.preprocessor, cfg.samples, c.config.seed)
    assert np.array_equal(rows, attacked.rows)
    image = spec.task == "image"
    mask, scale = (None, None) if image else table_noise(c.dataset, c.preprocessor, immutable=tuple(cfg.immutable),
                                                          mutable=tuple(cfg.mutable))
    found = assess_certification(
        c.module, x, y, rows, sigma=settings.sigma, radii=[*settings.radii, gated], n0=settings.n0, n=settings.n,
        alpha=settings.alpha, samples=settings.samples, seed=c.config.seed, device=c.device, noise_scale=scale,
        mutable=mask, attack=c.gradient_model is not None, gradient_model=c.gradient_model, executor=c.executor,
        chunk_rows=c.config.chunk_rows,
    )
    n = len(found.rows)
    table = [CertifiedEntry(radius=float(r), certified_accuracy=float(lo), attacked_accuracy=float(hi),
                            certified=int(round(lo * n)), n=n)
             for r, lo, hi in zip(found.radii, found.certified_accuracy, found.attacked_accuracy)]
    units = "pixel units" if image else "training standard deviations of the noised columns"
    noised = [] if mask is None else [c.preprocessor.encoded_feature_names[i] for i in np.flatnonzero(mask)]
    attacked_words = (f"L2 PGD on the smoothed classifier, expectation over {ATTACK_COPIES} noisy copies per step, "
                      f"{ATTACK_STEPS} steps; PREDICT with n copies judges the result" if c.gradient_model is not None
                      else "")
    details = CertificationDetails(
        sigma=settings.sigma, n0=settings.n0, n=settings.n, alpha=settings.alpha, units=units, noised=noised,
        gated_radius=gated, table=table, curve_radius=[float(r) for r in found.curve_radius],
        curve_accuracy=[float(a) for a in found.curve_accuracy], smoothed_accuracy=found.smoothed_accuracy,
        base_accuracy=found.base_accuracy, abstention_rate=found.abstention_rate, median_radius=found.median_radius,
        median_radius_correct=found.median_radius_correct, attack=attacked_words,
        trained_sigma=float(c.noise_sigma) if c.noise_sigma else None,
    )
    at = next(e for e in table if e.radius == gated)
    caveats = []
    if not c.noise_sigma:
        caveats.append("the model was not trained with noise (scrutiny train --noise-sigma); smoothing a model "
                       "trained without it certifies little")
    elif abs(c.noise_sigma - settings.sigma) > 1e-12:
        caveats.append(f"certified with sigma={settings.sigma:g}; the model was trained with sigma={c.noise_sigma:g}")
    if not attacked_words:
        caveats.append(f"no upper bound: the attack on the smoothed classifier needs gradients; {c.no_gradients}")
    upper = (f" The attack on the smoothed classifier leaves {at.attacked_accuracy:.1%} (the upper bound): its robust "
             f"accuracy at this radius lies between." if np.isfinite(at.attacked_accuracy) else "")
    finding = c.finding(
        "robustness.certified_accuracy", at.certified_accuracy, subject=f"radius={gated:g}", caveats=caveats,
        interval=wilson(at.certified_accuracy, n), confidence=0.95,
        metric=f"certified accuracy of the smoothed classifier (L2, sigma={settings.sigma:g})",
        explanation=f"Randomized smoothing (Gaussian noise sigma={settings.sigma:g}, n={settings.n:,}, "
                    f"alpha={settings.alpha:g}) certifies {at.certified_accuracy:.1%} of {n} test rows correct within "
                    f"L2 radius {gated:g} ({units}): a lower bound on the smoothed classifier's robust accuracy, "
                    f"each row's certificate wrong with probability at most {settings.alpha:g}.{upper} "
                    f"Abstained on {found.abstention_rate:.1%} of rows.",
    )
    cert = found.certification
    arrays = {"certified_rows": found.rows, "certified_radius": cert.radius, "certified_prediction": cert.prediction,
              "certified_p_lower": cert.p_lower}
    if found.robust_upper is not None:
        arrays["robust_upper"] = found.robust_upper
    return details, finding, arrays


def _spread(examples: list, count: int) -> list:
    """``count`` of ``examples`` taken in turn from each (attack, ε), in their order: a figure
    that shows every attack and radius it can."""
    groups: dict[tuple[str, float], list] = {}
    for example in examples:
        groups.setdefault((example.attack, example.eps), []).append(example)
    taken: list = []
    for rank in range(max((len(g) for g in groups.values()), default=0)):
        taken += [g[rank] for g in groups.values() if rank < len(g)]
    return taken[:count]


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(centre - half), float(centre + half))
