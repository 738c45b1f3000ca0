"""The robustness family: :func:`run`."""

from __future__ import annotations

import numpy as np

from scrutiny.audit import plots
from scrutiny.audit.run.family import AuditContext, FamilyResult
from scrutiny.modality import modality

from .details import (
    ARRAYS,
    CURVE_FIGURE,
    EXAMPLES_FIGURE,
    MIN_EPS_FIGURE,
    ExampleEntry,
    OodEntry,
    RobustnessDetails,
)
from .registry import WHITE_BOX, chain_of

__all__ = ["run"]


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
        chunk_rows=c.config.chunk_rows,
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
                                              clean_accuracy=result.curve[0].clean_accuracy),
    }
    if searched:
        figures[MIN_EPS_FIGURE] = plots.min_eps_figure(result.min_eps, norm=result.norm, search_eps=result.search_eps,
                                                       gated_eps=gated)
    if "adversarial" in kind.figures and result.examples:
        figures[EXAMPLES_FIGURE] = plots.adversarial_figure(result.examples[:6], spec.classes)
    return FamilyResult(findings=findings, details=details, arrays={ARRAYS: stored}, figures=figures)


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(centre - half), float(centre + half))
