"""``scrutiny audit``: every family on one model and data set, into one run folder.

:func:`run_audit` runs the families the config names (performance, attributions,
robustness, fairness), turns their results into findings gated by the policy, and writes
the run folder (:mod:`.run_folder`): ``findings.json`` (deterministic: the same inputs and
seed give the same bytes), ``manifest.json`` (command, hashes, versions, device, timings),
``arrays/`` and ``figures/``. The reports and the app read only that folder.
"""

from __future__ import annotations

import platform
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from scrutiny.models import Dataset
from scrutiny.models.checkpoint import LoadedModel, library_versions

from . import adverse_action, plots
from .config import AuditConfig
from .findings import Comparison, Finding, findings_document, validate_findings
from .policy import CHECKS, Policy
from .run_folder import FINDINGS, RunWriter, to_json

__all__ = ["AuditResult", "run_audit"]

# methods whose attributions must add up to f(x) - f(baseline) and may not (KernelSHAP adds up by
# construction: its check is the sampling error instead)
COMPLETENESS_METHODS = ("integrated_gradients", "deeplift")
RELIANCE_METHODS = ("kernel_shap", "integrated_gradients")  # additive methods first: shares of the explained score
FAIRNESS_GATED = ("disparate_impact", "statistical_parity_difference", "equal_opportunity_difference",
                  "average_odds_difference")
N_BOOT = 1000


@dataclass
class AuditResult:
    path: Path
    findings: list[Finding]
    verdict: str
    seconds: dict[str, float]


def run_audit(
    loaded: LoadedModel,
    dataset: Dataset,
    *,
    config: AuditConfig,
    policy: Policy,
    out: str | Path,
    model_source: str,
    command: list[str] | None = None,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> AuditResult:
    """Audit ``loaded`` on ``dataset`` and write the run folder ``out``.

    Args:
        loaded: the model and what is known of it (:func:`~scrutiny.models.load_model`).
        dataset: the data set; its test split is audited, its training split is the reference.
        config: what to run (:func:`~scrutiny.audit.config.load_config`).
        policy: the thresholds (:func:`~scrutiny.audit.policy.load_policy`).
        out: the run folder to create.
        model_source: how the user named the model (recorded in the manifest).
        command: the command line to record. Default: none recorded.
        overwrite: replace an existing run folder.
        device: ``cpu`` or ``cuda``. Default: cuda when present.
        progress: show a progress display.
    """
    from scrutiny.models.training import _resolve_device

    _preflight(config, loaded)
    started = datetime.now(timezone.utc)
    wall = time.perf_counter()
    run_device = _resolve_device(device)
    with _callers_state_kept(run_device):
        torch.use_deterministic_algorithms(True, warn_only=True)
        return _run(loaded, dataset, config=config, policy=policy, out=out, model_source=model_source, command=command,
                    overwrite=overwrite, device=run_device, progress=progress, started=started, wall=wall)


@contextmanager
def _callers_state_kept(device: torch.device):
    """The families seed Python's, NumPy's and torch's global generators (captum and aif360 draw
    from them) and switch torch to deterministic algorithms; the caller gets all of it back."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _run(loaded, dataset, *, config, policy, out, model_source, command, overwrite, device, progress, started, wall):
    model = loaded.model.to(device).eval()
    preprocessor = loaded.preprocessor() if loaded.manifest else dataset.preprocessor
    families = {"performance": _performance, "attributions": _attributions, "robustness": _robustness,
                "fairness": _fairness}
    context = _Context(model=model, dataset=dataset, preprocessor=preprocessor, config=config, policy=policy,
                       device=str(device))
    findings: list[Finding] = []
    details: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    with RunWriter(out, overwrite=overwrite) as writer, _Progress(progress, config.families) as shown:
        context.writer = writer
        for family in config.families:
            shown.start(family)
            start = time.perf_counter()
            torch.manual_seed(config.seed)
            found, details[family] = families[family](context)
            findings += found
            seconds[family] = round(time.perf_counter() - start, 3)
            shown.done(family, seconds[family])
        document = findings_document(findings, details=details, subject=_subject(loaded, dataset))
        validate_findings(document)
        writer.text(FINDINGS, to_json(document))
        seconds["total"] = round(time.perf_counter() - wall, 3)
        manifest = {
            "command": command,
            "model": {"source": model_source, "kind": loaded.source, "weights_sha256": loaded.weights_sha256,
                      "architecture": loaded.manifest.get("architecture") if loaded.manifest else None,
                      "trained_on": loaded.manifest.get("dataset", {}).get("sha256") if loaded.manifest else None},
            "data": {"name": dataset.spec.name, "sha256": dataset.sha256, "n_train": len(dataset.train),
                     "n_test": len(dataset.test)},
            "config": config.to_dict(),
            "policy": {"source": policy.source, "checks": policy.checks, "groups": policy.groups},
            "seed": config.seed,
            "device": _device_name(device),
            "libraries": library_versions(),
            "platform": platform.platform(),
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": seconds,
            "verdict": document["verdict"],
            "counts": document["counts"],
        }
        path = writer.commit(manifest)
    return AuditResult(path=path, findings=findings, verdict=document["verdict"], seconds=seconds)


def _preflight(config: AuditConfig, loaded: LoadedModel) -> None:
    """What the config asks of this model, checked before any work (the data's side is
    checked when the config is loaded)."""
    from scrutiny.models.errors import InputError

    if "fairness" in config.families and config.fairness.mitigate and getattr(loaded.model, "arch", None) is None:
        raise InputError("audit config: 'fairness.mitigate' retrains the model's architecture, which only a scrutiny "
                         "checkpoint records; leave mitigate out for this model")


@dataclass
class _Context:
    model: torch.nn.Module
    dataset: Dataset
    preprocessor: object
    config: AuditConfig
    policy: Policy
    device: str
    writer: RunWriter | None = None

    def finding(self, check: str, value: float, explanation: str, **kwargs) -> Finding:
        return Finding(check=check, family=CHECKS[check], value=float(value), explanation=explanation,
                       threshold=self.policy.threshold(check), metric=kwargs.pop("metric"), **kwargs)

    def figure(self, name: str, fig) -> None:
        plots.save_figure(fig, self.writer.path(f"figures/{name}.png"))


class _Progress:
    """One display for the whole audit: a bar over the families, the current one named."""

    def __init__(self, show: bool, families: list[str]):
        self.show, self.families = show, families

    def __enter__(self):
        if self.show:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TimeElapsedColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("audit", total=len(self.families))
        return self

    def start(self, family: str) -> None:
        if self.show:
            self.bar.update(self.task, description=f"audit: {family}…")

    def done(self, family: str, seconds: float) -> None:
        if self.show:
            self.bar.console.print(f"  {family} done in {seconds:.1f} s")
            self.bar.advance(self.task)

    def __exit__(self, *exc):
        if self.show:
            self.bar.update(self.task, description="audit")
            self.bar.stop()


# ------------------------------------------------------------------ families


def _performance(c: _Context) -> tuple[list[Finding], dict]:
    from scrutiny.models.training import predict_proba

    spec, y = c.dataset.spec, c.dataset.test.y
    proba = predict_proba(c.model, c.preprocessor.transform(c.dataset.test.X), device=c.device)
    pred = proba.argmax(axis=1)
    k = spec.n_classes
    rng = np.random.default_rng(c.config.seed)
    weights = _bootstrap_weights(len(y), rng)
    confidence = proba.max(axis=1)
    correct = (pred == y).astype(np.float64)
    bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)  # (lo, hi] bins as expected_calibration_error

    def stats(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """accuracy, balanced accuracy, calibration error under row weights (B, n)."""
        total = w.sum(axis=1)
        accuracy = w @ correct / total
        recalls = [(w @ (correct * (y == cls))) / np.maximum(w @ (y == cls).astype(np.float64), 1e-12)
                   for cls in range(k) if (y == cls).any()]
        gap = np.zeros(len(w))
        for b in np.unique(bins):
            in_bin = (bins == b).astype(np.float64)
            gap += np.abs(w @ (in_bin * (correct - confidence)))
        return accuracy, np.mean(recalls, axis=0), gap / total

    point = [s[0] for s in stats(np.ones((1, len(y))))]
    boot = [np.concatenate(parts) for parts in zip(*(stats(w) for w in weights))]
    low = [float(np.quantile(b, 0.025)) for b in boot]
    high = [float(np.quantile(b, 0.975)) for b in boot]
    accuracy, balanced, calibration = point
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    details = {
        "n": len(y),
        "accuracy": {"value": accuracy, "low": low[0], "high": high[0]},
        "balanced_accuracy": {"value": balanced, "low": low[1], "high": high[1]},
        "calibration_error": {"value": calibration, "low": low[2], "high": high[2]},
        "confidence": 0.95,
        "classes": list(spec.classes),
        "recall": [float(confusion[i, i] / max(confusion[i].sum(), 1)) for i in range(k)],
        "confusion": confusion,
        "majority_rate": float(np.bincount(y, minlength=k).max() / len(y)),
    }
    if k == 2:
        from sklearn.metrics import roc_auc_score

        details["roc_auc"] = float(roc_auc_score(y, proba[:, 1])) if len(np.unique(y)) == 2 else None
    c.writer.arrays("arrays/predictions.npz", y_true=y, y_pred=pred, proba=proba.astype(np.float32))
    findings = [
        c.finding("performance.balanced_accuracy", balanced, interval=(low[1], high[1]), confidence=0.95,
                  metric="balanced accuracy (mean recall over classes)",
                  explanation=f"Mean recall over the {k} classes on {len(y):,} test rows is {balanced:.1%} "
                              f"(chance: {1 / k:.0%}; plain accuracy {accuracy:.1%}, majority class "
                              f"{details['majority_rate']:.1%})."),
        c.finding("performance.calibration_error", calibration, interval=(low[2], high[2]), confidence=0.95,
                  metric="expected calibration error (15 bins)",
                  explanation=f"The model's stated confidence differs from its observed accuracy by "
                              f"{calibration:.3f} on average over confidence bins."),
    ]
    return findings, details


def _bootstrap_weights(n: int, rng: np.random.Generator, chunk: int = 100):
    """N_BOOT resamples of n rows as multinomial counts per row, in chunks of (chunk, n)."""
    for start in range(0, N_BOOT, chunk):
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, N_BOOT - start)).astype(np.float64)


def _attributions(c: _Context) -> tuple[list[Finding], dict]:
    from .explain import explain

    cfg, spec = c.config.attributions, c.dataset.spec
    result = explain(c.model, c.dataset, methods=cfg.methods, samples=cfg.samples, preprocessor=c.preprocessor,
                     seed=c.config.seed, top_k=cfg.top_k, n_boot=cfg.n_boot, quality=cfg.quality,
                     quality_samples=cfg.quality_samples)
    names = list(result.space.names)
    first = next(iter(result.attributions.values()))
    findings: list[Finding] = []
    methods = {}
    for name, attribution in result.attributions.items():
        entry = {"output": attribution.output, "baseline": attribution.baseline, "error_name": attribution.error_name,
                 "settings": {k: v for k, v in attribution.settings.items() if isinstance(v, (int, float, str, bool))}}
        relative = attribution.relative_error
        if relative is not None:
            meaningful = np.abs(attribution.output_change) >= 1e-4
            gaps = relative[meaningful]
            entry["completeness_p95"] = float(np.percentile(gaps, 95)) if len(gaps) else None
            entry["within_1pct"] = float(np.mean(gaps <= 0.01)) if len(gaps) else None
            if name in COMPLETENESS_METHODS:
                caveats = [] if meaningful.all() else [
                    f"{int((~meaningful).sum())} rows with |f(x) - f(baseline)| < 1e-4 left out (no share to account for)"]
                value = entry["completeness_p95"] if len(gaps) else float("nan")
                findings.append(c.finding(
                    "attributions.completeness", value, subject=name, caveats=caveats,
                    metric="95th percentile of |sum of attributions - (f(x) - f(baseline))| / |f(x) - f(baseline)|",
                    explanation=f"For 95% of the {len(gaps)} explained rows, the {name} attributions add up to the "
                                f"output change they explain to within {value:.2%}.",
                ))
        if attribution.error_name == "sampling_error":
            findings.append(_sampling_error(c, name, attribution, entry))
        methods[name] = entry
    for a in result.agreements:
        pair = f"{a.methods[0]} vs {a.methods[1]}"
        findings.append(c.finding(
            "attributions.agreement", a.spearman_median, subject=pair,
            metric="median per-row Spearman correlation of feature rankings",
            explanation=f"{a.methods[0]} and {a.methods[1]} rank the features with a median per-row Spearman "
                        f"correlation of {a.spearman_median:.2f} (top-{a.k} overlap {a.top_k_per_sample.mean():.0%}).",
        ))
    findings += _protected_reliance(c, result)
    notices = adverse_action.explained_notices(c.model, c.dataset, result, preprocessor=c.preprocessor, device=c.device)
    if notices is not None:
        c.writer.arrays(adverse_action.ARRAYS, **notices.arrays())
        if notices.prohibited_inputs:  # else no reason can name a prohibited basis: a check that cannot fail
            findings.append(c.finding("attributions.prohibited_basis_notices", **adverse_action.notices_finding(notices)))
    quality = {}
    for name, q in (result.quality or {}).items():
        d = q.deletion
        ratio = float(d.deletion_auc.mean() / d.random_deletion_auc.mean())
        quality[name] = {
            "n": len(q.infidelity),
            "deletion_auc": float(d.deletion_auc.mean()), "random_deletion_auc": float(d.random_deletion_auc.mean()),
            "insertion_auc": float(d.insertion_auc.mean()), "random_insertion_auc": float(d.random_insertion_auc.mean()),
            "deletion_ratio": ratio,
            "curves": {"fractions": d.fractions, "deletion": d.deletion, "insertion": d.insertion,
                       "random_deletion": d.random_deletion, "random_insertion": d.random_insertion},
            "infidelity_median": float(np.median(q.infidelity)),
            "sensitivity_median": float(np.median(q.sensitivity)) if q.sensitivity is not None else None,
            "randomisation_spearman": q.randomisation.spearman_median,
        }
        findings.append(c.finding(
            "attributions.randomisation", q.randomisation.spearman_median, subject=name,
            metric="median per-row Spearman correlation with a re-initialised model's attributions",
            explanation=f"With the model's weights re-initialised, {name}'s feature rankings keep a median Spearman "
                        f"correlation of {q.randomisation.spearman_median:.2f} with the trained model's: "
                        f"{'they depend on what the model learned' if q.randomisation.passed else 'they barely depend on the model'}.",
        ))
        findings.append(c.finding(
            "attributions.deletion", ratio, subject=name,
            metric="deletion AUC in attribution order / deletion AUC in random orders",
            explanation=f"Deleting features in {name}'s order lowers the explained class's probability "
                        f"{'faster' if ratio < 1 else 'no faster'} than random orders do (area ratio {ratio:.2f}).",
        ))
    details = {
        "n": len(result.rows),
        "rows": result.rows,
        "features": names,
        "target": first.target,
        "output": first.output,
        "methods": methods,
        "importance": {m: {"mean": i.mean, "low": i.low, "high": i.high} for m, i in result.importance.items()},
        "importance_confidence": next(iter(result.importance.values())).confidence,
        "agreement": [{"methods": list(a.methods), "spearman_median": a.spearman_median,
                       "spearman_global": a.spearman_global, "top_k": a.k,
                       "top_k_overlap": float(a.top_k_per_sample.mean())} for a in result.agreements],
        "quality": quality,
        "adverse_action": notices.summary() if notices is not None else None,
    }
    arrays = {"rows": result.rows, "target": first.target}
    arrays.update({f"{m}": v.astype(np.float32) for m, v in result.per_feature.items()})
    if spec.task == "image":
        arrays["inputs"] = c.dataset.test.X[result.rows].astype(np.float32)
        arrays.update({f"{m}__pixels": a.values.astype(np.float32) for m, a in result.attributions.items()})
    c.writer.arrays("arrays/attributions.npz", **arrays)
    if spec.task != "image":
        rows = c.dataset.test.X.iloc[result.rows].reset_index(drop=True).copy()
        rows.insert(0, "test_row", result.rows)
        rows["label"] = [spec.classes[i] for i in c.dataset.test.y[result.rows]]
        rows["explained_class"] = [spec.classes[i] for i in first.target]
        rows.to_parquet(c.writer.path("arrays/explained_rows.parquet"), index=False)
    c.figure("importance", plots.importance_figure(result.importance))
    if result.agreements:
        c.figure("agreement", plots.agreement_figure(list(result.attributions), result.agreements))
    if spec.task == "image":
        shown = slice(0, min(6, len(result.rows)))
        titles = [f"true {spec.classes[c.dataset.test.y[r]]}, explained {spec.classes[t]}"
                  for r, t in zip(result.rows[shown], first.target[shown])]
        c.figure("heatmaps", plots.heatmap_figure(c.dataset.test.X[result.rows[shown]],
                                                  {m: a.values[shown] for m, a in result.attributions.items()},
                                                  titles=titles))
    return findings, details


def _sampling_error(c: _Context, name: str, attribution, entry: dict) -> Finding:
    """KernelSHAP's estimated sampling error (:mod:`.kernel_shap`): 95th percentile over the rows of
    the largest error over features as a share of the row's largest |attribution|; the rows with
    nothing to explain (NaN shares) left out. Adds its figures to the method's ``entry``."""
    from .attributions import ATTRIBUTION_FLOOR

    shares = attribution.error[np.isfinite(attribution.error)]
    left_out = len(attribution.error) - len(shares)
    caveats = [f"{left_out} rows whose largest |attribution| is below {ATTRIBUTION_FLOOR:g} left out (nothing to be "
               f"wrong about)"] if left_out else []
    value = float(np.percentile(shares, 95)) if len(shares) else float("nan")
    entry["sampling_error_p95"] = value if len(shares) else None
    entry["sampling_error_median"] = float(np.median(shares)) if len(shares) else None
    if attribution.settings["exact"]:
        said = (f"Every coalition of the {len(attribution.error)} explained rows was evaluated: the {name} attributions "
                f"are exact Shapley values, with no sampling error.")
    else:
        said = (f"For 95% of the {len(shares)} explained rows, the estimated largest error of a {name} attribution "
                f"against its exact Shapley value is at most {value:.1%} of the row's largest attribution (a bootstrap "
                f"over the {attribution.settings['coalitions']} coalitions evaluated per row).")
    return c.finding(
        "attributions.sampling_error", value, subject=name, caveats=caveats,
        metric="95th percentile over rows of the estimated largest sampling error of an attribution / the row's "
               "largest |attribution|",
        explanation=said,
    )


def _protected_reliance(c: _Context, result) -> list[Finding]:
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


def _robustness(c: _Context) -> tuple[list[Finding], dict]:
    from .robustness import assess_robustness, fit_detector

    cfg, spec = c.config.robustness, c.dataset.spec
    gated = c.policy.robust_eps(spec.task)
    grid = sorted(set(cfg.eps) | {gated})
    detector = fit_detector(c.dataset, c.preprocessor, seed=c.config.seed, device=c.device) if cfg.detector else None
    result = assess_robustness(
        c.model, c.dataset, attacks=cfg.attacks, eps=grid, norm=cfg.norm, samples=cfg.samples,
        preprocessor=c.preprocessor, immutable=tuple(cfg.immutable), mutable=tuple(cfg.mutable), steps=cfg.steps,
        restarts=cfg.restarts, queries=cfg.queries, detector=detector, seed=c.config.seed, device=c.device,
    )
    worst = result.point("worst case", gated)
    unit = " (pixel units)" if spec.task == "image" else " training standard deviations"
    findings = [
        c.finding(
            "robustness.robust_accuracy", worst.robust_accuracy, subject=f"eps={gated:g}",
            interval=_wilson(worst.robust_accuracy, worst.n), confidence=0.95,
            metric=f"accuracy under the worst of {', '.join(result.attacks)} ({result.norm})",
            explanation=f"Under the strongest of {', '.join(result.attacks)} at {result.norm} radius {gated:g}{unit}, "
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
    never = ~np.isfinite(result.min_eps)
    details = {
        "n": len(result.rows), "norm": result.norm, "eps": list(result.eps), "gated_eps": gated,
        "attacks": list(result.attacks),
        "curve": [{"attack": p.attack, "eps": p.eps, "clean_accuracy": p.clean_accuracy,
                   "robust_accuracy": p.robust_accuracy, "success_rate": p.success_rate, "n": p.n}
                  for p in result.curve],
        "median_min_eps": result.median_min_eps, "never_flipped": float(never.mean()),
        "search_eps": result.search_eps, "large_eps_accuracy": result.large_eps_accuracy,
        "constraints": list(result.constraints), "warnings": list(result.warnings), "gradient": result.gradient,
        "ood": result.ood,
        "examples": [{"row": e.row, "attack": e.attack, "eps": e.eps, "label": e.label, "before": e.before,
                      "after": e.after, "changes": [[str(n), str(b), str(a)] for n, b, a in e.changes]}
                     for e in result.examples],
        "settings": {k: v for k, v in result.settings.items() if isinstance(v, (int, float, str, bool))},
    }
    arrays = {"rows": result.rows, "min_eps": result.min_eps}
    arrays.update({f"robust__{a}": r for a, r in result.robust.items()})
    if result.examples:
        arrays["examples_x"] = np.stack([e.x for e in result.examples]).astype(np.float32)
        arrays["examples_x_adv"] = np.stack([e.x_adv for e in result.examples]).astype(np.float32)
    c.writer.arrays("arrays/robustness.npz", **arrays)
    c.figure("robustness", plots.robustness_figure(result.curve, norm=result.norm,
                                                   clean_accuracy=result.curve[0].clean_accuracy))
    c.figure("min_eps", plots.min_eps_figure(result.min_eps, norm=result.norm, search_eps=result.search_eps,
                                             gated_eps=gated))
    if spec.task == "image" and result.examples:
        c.figure("adversarial", plots.adversarial_figure(result.examples[:6], spec.classes))
    return findings, details


def _wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(centre - half), float(centre + half))


def _fairness(c: _Context) -> tuple[list[Finding], dict]:
    from .fairness import assess_fairness, mitigate

    cfg = c.config.fairness
    result = assess_fairness(c.model, c.dataset, preprocessor=c.preprocessor, attributes=cfg.attributes or None,
                             intersections=cfg.intersections, n_boot=cfg.n_boot, confidence=cfg.confidence,
                             seed=c.config.seed, device=c.device, minimums=c.policy.groups)
    findings: list[Finding] = []
    for comparison in result.data_bias:
        e = comparison.metrics["disparate_impact"]
        findings.append(c.finding(
            "fairness.data.disparate_impact", e.value, subject=comparison.attribute, interval=(e.low, e.high),
            confidence=cfg.confidence, comparison=_rests_on(c, comparison.counts, "disparate_impact"),
            metric="base rate of the favourable label, unprivileged / privileged (training data)",
            explanation=f"In the training data, rows outside the privileged group of {comparison.attribute} "
                        f"({comparison.privileged}) carry the favourable label at {e.value:.2f} times the privileged "
                        f"group's rate.",
        ))
    for comparison in result.model:
        for metric in FAIRNESS_GATED:
            e = comparison.metrics[metric]
            findings.append(c.finding(
                f"fairness.{metric}", e.value, subject=comparison.attribute, interval=(e.low, e.high),
                confidence=cfg.confidence, comparison=_rests_on(c, comparison.counts, metric),
                metric=_FAIRNESS_WORDS[metric][0],
                explanation=_FAIRNESS_WORDS[metric][1].format(v=e.value, a=comparison.attribute,
                                                              p=comparison.privileged),
            ))
    by_attribute: dict[str, list] = {}
    for row in result.impact_ratios:
        if not row.excluded:
            by_attribute.setdefault(row.attribute, []).append(row)
    for attribute, rows in by_attribute.items():
        lowest = min(rows, key=lambda r: r.impact_ratio)
        findings.append(c.finding(
            "fairness.impact_ratio", lowest.impact_ratio, subject=attribute,
            comparison=_impact_rests_on(c, lowest, max(rows, key=lambda r: r.selection_rate)),
            metric="lowest selection rate of a category / highest category's (NYC LL144)",
            explanation=f"Of the categories of {attribute}, {lowest.category} is selected least often: at "
                        f"{lowest.impact_ratio:.2f} of the highest category's rate.",
        ))
    details = {
        "confidence": cfg.confidence,
        "data_bias": [_comparison(x) for x in result.data_bias],
        "model": [_comparison(x) for x in result.model],
        "impact_ratios": [vars(r) for r in result.impact_ratios],
        "consistency": _estimate(result.consistency) if result.consistency else None,
        "warnings": list(result.warnings),
        "settings": result.settings,
    }
    if cfg.mitigate:
        details["mitigation"] = [
            {"method": m.method, "attribute": m.attribute, "rows": m.rows, "n": m.n,
             "before": {k: _estimate(v) for k, v in m.before.items()},
             "after": {k: _estimate(v) for k, v in m.after.items()}}
            for m in mitigate(c.model, c.dataset, cfg.mitigate, preprocessor=c.preprocessor, n_boot=cfg.n_boot,
                              confidence=cfg.confidence, seed=c.config.seed, device=c.device)
        ]
    c.figure("fairness", plots.fairness_figure(result.model))
    return findings, details


def _rests_on(c: _Context, counts: np.ndarray, metric: str) -> Comparison:
    """The smaller group behind ``metric``'s comparison (the one furthest under the policy's minimums)."""
    from . import group_metrics as gm

    minimums = c.policy.groups
    group, among, rows, expected = gm.weakest(counts, metric, minimums["min_rows"], minimums["min_expected_positives"])
    return Comparison(no_difference=gm.NO_DIFFERENCE[metric], rows=rows, expected_positives=round(expected, 6),
                      group=group, among=among, **minimums)


def _impact_rests_on(c: _Context, lowest, highest) -> Comparison:
    """The smaller of the two categories an impact ratio divides, and its share at their pooled rate."""
    smaller = min((lowest, highest), key=lambda r: r.n)
    pooled = (lowest.n * lowest.selection_rate + highest.n * highest.selection_rate) / (lowest.n + highest.n)
    return Comparison(no_difference=1.0, rows=smaller.n, expected_positives=round(smaller.n * pooled, 6),
                      group=f"category {smaller.category!r}", among="", **c.policy.groups)


_FAIRNESS_WORDS = {
    "disparate_impact": (
        "favourable-prediction rate, unprivileged / privileged",
        "The model gives the favourable outcome to rows outside the privileged group of {a} ({p}) at {v:.2f} times "
        "the privileged group's rate.",
    ),
    "statistical_parity_difference": (
        "favourable-prediction rate, unprivileged - privileged",
        "The favourable-outcome rate outside the privileged group of {a} ({p}) minus the privileged group's: {v:+.3f}.",
    ),
    "equal_opportunity_difference": (
        "true-positive rate, unprivileged - privileged",
        "Among rows whose true label is favourable, the rate at which the model says so outside the privileged group "
        "of {a} ({p}) minus inside it: {v:+.3f}.",
    ),
    "average_odds_difference": (
        "mean of the false- and true-positive rate differences, unprivileged - privileged",
        "Averaged over false and true positives, the unprivileged side of {a} ({p}) gets the favourable outcome "
        "{v:+.3f} more often than the privileged.",
    ),
}


def _estimate(e) -> dict:
    return {"value": e.value, "low": e.low, "high": e.high}


def _comparison(c) -> dict:
    return {"attribute": c.attribute, "privileged": c.privileged, "n_privileged": c.n_privileged,
            "n_unprivileged": c.n_unprivileged, "metrics": {k: _estimate(v) for k, v in c.metrics.items()},
            "per_group": c.per_group, "warnings": list(c.warnings)}


def _subject(loaded: LoadedModel, dataset: Dataset) -> dict:
    architecture = loaded.manifest.get("architecture", {}).get("name") if loaded.manifest else None
    return {
        "model": {"source": loaded.source, "architecture": architecture, "weights_sha256": loaded.weights_sha256},
        "data": {"name": dataset.spec.name, "task": dataset.spec.task, "sha256": dataset.sha256,
                 "n_train": len(dataset.train), "n_test": len(dataset.test), "classes": list(dataset.spec.classes)},
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
