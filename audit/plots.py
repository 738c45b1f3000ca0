"""Figures of attribution findings: global importance with intervals, method agreement,
and image heat maps. Each function returns a matplotlib Figure; :func:`save_figure` writes
it atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from scrutiny.audit.attributions.importance import Agreement, Importance
from scrutiny.audit.robustness.registry import REAL_ATTACKS
from scrutiny.safe_write import write_file

__all__ = ["importance_figure", "agreement_figure", "heatmap_figure", "robustness_figure", "certified_figure", "adversarial_figure", "fairness_figure",
           "save_figure", "subplots"]


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs):
    """``(figure, axes)`` like ``pyplot.subplots``, but a plain :class:`~matplotlib.figure.Figure`:
    no pyplot state and no backend switch in the caller's process (PNG, SVG and PDF files are
    written by ``Figure.savefig`` alone)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def importance_figure(importances: dict[str, Importance], *, top: int = 15):
    """Horizontal bars of mean |attribution| with bootstrap intervals, one panel per method,
    features in the first method's order."""
    first = next(iter(importances.values()))
    order = first.ranked()[:top][::-1]
    fig, axes = subplots(1, len(importances), figsize=(4.2 * len(importances), 0.35 * len(order) + 1.4),
                             sharey=True, squeeze=False)
    for ax, (method, imp) in zip(axes[0], importances.items()):
        mean = imp.mean[order]
        errors = np.vstack([mean - imp.low[order], imp.high[order] - mean])
        ax.barh(np.arange(len(order)), mean, xerr=errors, color="#4c72b0", ecolor="#333333", capsize=2)
        ax.set_title(method.replace("_", " "), fontsize=10)
        ax.set_xlabel("mean |attribution|")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(np.arange(len(order)), [first.names[i] for i in order])
    fig.suptitle(f"Global importance ({first.confidence:.0%} bootstrap intervals)", fontsize=11)
    fig.tight_layout()
    return fig


def agreement_figure(methods: list[str], agreements: list[Agreement]):
    """Matrix of median per-sample Spearman ρ between methods."""
    index = {m: i for i, m in enumerate(methods)}
    matrix = np.eye(len(methods))
    for a in agreements:
        i, j = index[a.methods[0]], index[a.methods[1]]
        matrix[i, j] = matrix[j, i] = a.spearman_median
    fig, ax = subplots(figsize=(1.1 * len(methods) + 2.5, 1.0 * len(methods) + 1.5))
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu")
    labels = [m.replace("_", " ") for m in methods]
    ax.set_xticks(range(len(methods)), labels, rotation=40, ha="right")
    ax.set_yticks(range(len(methods)), labels)
    for i in range(len(methods)):
        for j in range(len(methods)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if abs(matrix[i, j]) > 0.6 else "black")
    fig.colorbar(image, ax=ax, label="median Spearman ρ of |attribution|")
    ax.set_title("Agreement between methods", fontsize=11)
    fig.tight_layout()
    return fig


def heatmap_figure(images: np.ndarray, values: dict[str, np.ndarray], *, titles: list[str] | None = None):
    """Rows of samples: the image, then each method's attribution as a signed heat map over it.

    Args:
        images: (N, C, H, W) inputs.
        values: method → (N, C, H, W) attributions.
        titles: one label per sample (e.g. "true 3, predicted 8").
    """
    n, methods = len(images), list(values)
    fig, axes = subplots(n, len(methods) + 1, figsize=(1.9 * (len(methods) + 1), 1.9 * n), squeeze=False)
    for r in range(n):
        axes[r][0].imshow(images[r].mean(axis=0), cmap="gray_r")
        axes[r][0].set_ylabel(titles[r] if titles else f"sample {r}", fontsize=8)
        for c, method in enumerate(methods, start=1):
            heat = values[method][r].sum(axis=0)
            bound = np.abs(heat).max() or 1.0
            axes[r][c].imshow(images[r].mean(axis=0), cmap="gray_r", alpha=0.35)
            axes[r][c].imshow(heat, cmap="RdBu_r", vmin=-bound, vmax=bound, alpha=0.75)
            if r == 0:
                axes[r][c].set_title(method.replace("_", " "), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].set_title("input", fontsize=8)
    fig.tight_layout()
    return fig


def robustness_figure(curve, *, norm: str, clean_accuracy: float, unit: str = "", gated_eps: float | None = None,
                      bounds: dict[str, float] | None = None):
    """Robust accuracy against ε, one line per attack (dashed: noise baselines), the per-row
    worst case in bold; ``unit`` names ε's unit on the axis, and the policy's radius
    (``gated_eps``) and its fail/warn bounds on the worst case (``bounds``) are drawn."""
    fig, ax = subplots(figsize=(6.0, 4.0))
    attacks = list(dict.fromkeys(p.attack for p in curve))
    for name in attacks:
        points = sorted((p.eps, p.robust_accuracy) for p in curve if p.attack == name)
        eps, acc = [0.0] + [e for e, _ in points], [clean_accuracy] + [a for _, a in points]
        worst = name == "worst case"
        ax.plot(eps, acc, marker="o", lw=2.6 if worst else 1.4, color="black" if worst else None,
                ls="-" if worst or name in REAL_ATTACKS else "--", label=name)
    if gated_eps is not None:
        ax.axvline(gated_eps, color="black", ls=":", lw=1.0, label=f"policy eps = {gated_eps:g}")
    for key, colour in (("fail_below", "#b3261e"), ("warn_below", "#c77700")):
        if bounds and key in bounds:
            ax.axhline(bounds[key], color=colour, ls="-.", lw=0.9,
                       label=f"{key.split('_')[0]} below {bounds[key]:g} (worst case)")
    ax.set_xlabel(f"eps ({'L∞' if norm == 'linf' else 'L2'}{', ' + unit if unit else ''})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Accuracy under attack (eps 0 = clean)", fontsize=11)
    fig.tight_layout()
    return fig


def certified_figure(certification, *, base_curve=None):
    """Both bounds of the smoothed classifier's robust accuracy against the L2 radius: the
    certified accuracy (lower bound, a step curve) and the accuracy under the attack on the
    smoothed classifier (upper bound, points), the gap between them marked at each radius; ``base_curve``: (radii, accuracy)
    of the attacks on the base model under L2, when the audit attacked in L2."""
    c = certification
    fig, ax = subplots(figsize=(6.0, 4.0))
    radius, accuracy = np.asarray(c.curve_radius, float), np.asarray(c.curve_accuracy, float)
    top = max([*(e.radius for e in c.table), float(radius.max()) if len(radius) else 0.0, c.gated_radius]) * 1.1 or 1.0
    # certified accuracy at r counts the rows certified at r or more: on (r_i, r_i+1] it is that of r_i+1
    ax.step(np.append(radius, top), np.append(accuracy, 0.0), where="pre", color="#1f5fa8", lw=2.0,
            label="certified (lower bound)")
    upper = [e for e in c.table if np.isfinite(e.attacked_accuracy)]
    if upper:
        # robust accuracy falls as the radius grows: an upper bound at r_i holds up to the next radius
        ax.step([e.radius for e in upper] + [top], [e.attacked_accuracy for e in upper] + [upper[-1].attacked_accuracy],
                where="post", color="#b3261e", lw=1.4, label="smoothed classifier under attack (upper bound)")
        ax.plot([e.radius for e in upper], [e.attacked_accuracy for e in upper], "o", color="#b3261e")
        ax.vlines([e.radius for e in upper], [e.certified_accuracy for e in upper],
                  [e.attacked_accuracy for e in upper], color="#b3261e", alpha=0.35, lw=6,
                  label="left open by the two bounds")
    if base_curve is not None:
        ax.plot(*base_curve, marker=".", color="grey", ls="--", lw=1.2, label="base model, attack ensemble (L2)")
    ax.axvline(c.gated_radius, color="black", ls=":", lw=1.0, label=f"policy radius = {c.gated_radius:g}")
    ax.set_xlabel(f"L2 radius ({c.units})")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, top)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"Randomized smoothing, sigma = {c.sigma:g}: robust accuracy between the bounds", fontsize=10)
    fig.tight_layout()
    return fig


def min_eps_figure(min_eps: np.ndarray, *, norm: str, search_eps: float, gated_eps: float | None = None):
    """Share of rows flipped by a perturbation of at most ε: the distribution of each row's
    smallest flipping ε (rows already wrong count at 0; rows never flipped stay off the curve)."""
    values = np.sort(np.asarray(min_eps, dtype=float))
    n = len(values)
    finite = values[np.isfinite(values)]
    fig, ax = subplots(figsize=(6.0, 3.6))
    steps = np.concatenate([[0.0], finite, [search_eps]])
    shares = np.concatenate([[np.mean(values <= 0)], np.arange(1, len(finite) + 1) / n, [len(finite) / n]])
    ax.step(steps, shares, where="post", color="black", lw=1.8)
    median = float(np.median(values))
    if np.isfinite(median):
        ax.axvline(median, color="grey", lw=0.8, label=f"median = {median:.3g}")
    if gated_eps is not None:
        ax.axvline(gated_eps, color="#b3261e", ls=":", lw=1.2, label=f"policy eps = {gated_eps:g}")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel(f"smallest flipping eps ({'L∞' if norm == 'linf' else 'L2'}, PGD bisection)")
    ax.set_ylabel("share of rows flipped")
    ax.set_xlim(0, search_eps)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"Minimal perturbations: {np.mean(~np.isfinite(values)):.0%} of rows never flipped up to {search_eps:g}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def adversarial_figure(examples, class_names):
    """Image adversarial examples: original, adversarial and the perturbation, side by side."""
    fig, axes = subplots(len(examples), 3, figsize=(5.4, 1.9 * len(examples)), squeeze=False)
    for row, example in zip(axes, examples):
        delta = (example.x_adv - example.x).mean(axis=0)
        bound = np.abs(delta).max() or 1.0
        row[0].imshow(example.x.mean(axis=0), cmap="gray_r", vmin=0, vmax=1)
        row[0].set_ylabel(f"{example.attack} eps={example.eps:g}", fontsize=8)
        row[0].set_title(f"predicted {class_names[example.before]}", fontsize=8)
        row[1].imshow(example.x_adv.mean(axis=0), cmap="gray_r", vmin=0, vmax=1)
        row[1].set_title(f"now {class_names[example.after]}", fontsize=8)
        row[2].imshow(delta, cmap="RdBu_r", vmin=-bound, vmax=bound)
        row[2].set_title("perturbation", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


FAIRNESS_PLOTTED = {  # metric -> the value of parity
    "statistical_parity_difference": 0.0, "equal_opportunity_difference": 0.0, "average_odds_difference": 0.0,
    "equalized_odds_difference": 0.0, "predictive_parity_difference": 0.0, "accuracy_difference": 0.0,
    "disparate_impact": 1.0, "false_negative_rate_ratio": 1.0, "false_positive_rate_ratio": 1.0,
}


def fairness_figure(comparisons):
    """Each fairness metric with its interval, one marker per attribute; the dotted line is parity."""
    names = [n for n in FAIRNESS_PLOTTED if n in comparisons[0].metrics]
    fig, axes = subplots(1, 2, figsize=(10, 0.55 * len(names) + 1.6), sharey=True)
    offsets = np.linspace(-0.25, 0.25, len(comparisons)) if len(comparisons) > 1 else [0.0]
    for ax, kind in zip(axes, ("difference", "ratio")):
        for offset, comparison in zip(offsets, comparisons):
            ys, values, errors = [], [], []
            for i, name in enumerate(names):
                if (FAIRNESS_PLOTTED[name] == 1.0) != (kind == "ratio"):
                    continue
                e = comparison.metrics[name]
                if not np.isfinite(e.value):
                    continue
                ys.append(i + offset)
                values.append(e.value)
                errors.append([max(e.value - e.low, 0) if np.isfinite(e.low) else 0, max(e.high - e.value, 0) if np.isfinite(e.high) else 0])
            if ys:
                ax.errorbar(values, ys, xerr=np.array(errors).T, fmt="o", capsize=3, label=comparison.subject)
        ax.axvline(0.0 if kind == "difference" else 1.0, color="black", ls=":", lw=1)
        if kind == "ratio":
            ax.axvspan(0.8, 1.25, color="#2ca02c", alpha=0.08, label="within four fifths")
        ax.set_xlabel(f"{kind} (unprivileged vs privileged)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), [n.replace("_", " ") for n in names])
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle("Model fairness with bootstrap intervals", fontsize=11)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) atomically, with the one permission rule
    of :func:`scrutiny.safe_write.write_file`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".").lower(), dpi=150, bbox_inches="tight")
    return write_file(path, buffer.getvalue())
