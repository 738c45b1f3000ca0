"""Figures of attribution findings: global importance with intervals, method agreement,
and image heat maps. Each function returns a matplotlib Figure; :func:`save_figure` writes
it atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from scrutiny.audit.attributions.importance import Agreement, Importance
from scrutiny.audit.robustness.registry import REAL_ATTACKS
from scrutiny.safe_write import write_file

__all__ = ["TEXT_WIDTH", "FONT", "importance_figure", "agreement_figure", "heatmap_figure", "robustness_figure",
           "certified_figure", "min_eps_figure", "adversarial_figure", "fairness_figure", "policy_bands", "save_figure",
           "subplots"]

TEXT_WIDTH = (210 - 2 * 14) / 25.4  # inches: the report's text width (A4, 14 mm margins), 182 mm
FONT = 8.0  # pt: every label of a figure drawn at TEXT_WIDTH (save_figure's tight crop prints it at over 7 pt)
HEATMAP_HEIGHT = 4.4  # inches at most: the report shows heat maps at most 120 mm high
ADVERSARIAL_HEIGHT = 4.0  # inches at most: and adversarial examples at most 110 mm high
ATTRIBUTION_COLOURS = "RdBu_r"  # diverging: blue lowers, white is 0, red raises the explained output
OUTPUT_WORDS = {"logit": "logit", "log_odds": "log-odds", "probability": "probability"}


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


def heatmap_figure(images: np.ndarray, values: dict[str, np.ndarray], *, titles: list[str] | None = None,
                   outputs: dict[str, str] | None = None):
    """The explained images (top row, one column per sample) and under them each method's
    attribution as a signed heat map, the image's outline drawn over it; drawn at the report's
    text width.

    Each method's row has its colour bar: a diverging map centred at 0 (red raises the explained
    class's output, blue lowers it), its limits symmetric and holding the row's largest
    |attribution|, so the samples of a row compare.

    Args:
        images: (N, C, H, W) inputs.
        values: method → (N, C, H, W) attributions (summed over channels here).
        titles: one label per sample (e.g. "true 3, explained 8"; a ", " starts a new line).
        outputs: method → the output it explains (``"logit"``, ``"log_odds"``, ``"probability"``),
            named on its colour bar.
    """
    n, methods = len(images), list(values)
    rows = len(methods) + 1
    header, footer, sides = 0.42, 0.42, 1.9  # inches: column titles, the sentence below, row labels and bars
    cell = min((TEXT_WIDTH - sides) / max(n, 1), (HEATMAP_HEIGHT - header - footer) / rows, 1.2)
    fig = Figure(figsize=(TEXT_WIDTH, header + footer + rows * cell), layout="constrained")
    axes = fig.subplots(rows, n, squeeze=False)
    pixels = np.asarray(images, dtype=np.float64).mean(axis=1)
    low, high = min(float(pixels.min()), 0.0), max(float(pixels.max()), 1.0)  # one grey scale for every sample
    grey = Normalize(low, high)
    for c in range(n):
        shown = axes[0][c].imshow(pixels[c], cmap="gray_r", norm=grey)
        title = titles[c] if titles else f"sample {c + 1}"
        axes[0][c].set_title(title.replace(", ", "\n"), fontsize=FONT)
    bar = fig.colorbar(shown, ax=list(axes[0]), aspect=12, pad=0.02)
    bar.set_label("pixel value", fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT)
    for r, method in enumerate(methods, start=1):
        heats = np.asarray(values[method], dtype=np.float64).sum(axis=1)
        bound = float(np.abs(heats).max()) if heats.size else 0.0
        bound = bound or 1.0  # every attribution 0: any symmetric range holds them
        scale = Normalize(-bound, bound)  # one for the row: its colour bar is every sample's
        for c in range(n):
            heat = axes[r][c].imshow(heats[c], cmap=ATTRIBUTION_COLOURS, norm=scale)
            if np.ptp(pixels[c]) > 0:
                axes[r][c].contour(pixels[c], levels=[(pixels[c].min() + pixels[c].max()) / 2], colors="black",
                                   linewidths=0.5, alpha=0.55)
        axes[r][0].set_ylabel(method.replace("_", "\n", 1).replace("_", " "), fontsize=FONT)
        bar = fig.colorbar(heat, ax=list(axes[r]), aspect=12, pad=0.02)
        output = (outputs or {}).get(method)
        bar.set_label(f"attribution\n({OUTPUT_WORDS.get(output, output)})" if output else "attribution", fontsize=FONT)
        bar.ax.tick_params(labelsize=FONT)
    axes[0][0].set_ylabel("input", fontsize=FONT)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.supxlabel("Colour: attribution toward the explained class, 0 white; red pixels raise its output, blue lower it.\n"
                  "Each method's scale is its colour bar; the black line outlines the input.", fontsize=FONT)
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
    ax.set_xlabel(f"radius (L2, {c.units})")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, top)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"Randomized smoothing, sigma = {c.sigma:g}: robust accuracy between the bounds", fontsize=10)
    fig.tight_layout()
    return fig


def min_eps_figure(min_eps: np.ndarray, *, norm: str, search_eps: float, gated_eps: float | None = None,
                   unit: str = ""):
    """Share of rows flipped by a perturbation of at most ε: the distribution of each row's
    smallest flipping ε (rows already wrong count at 0; rows never flipped stay off the curve);
    ``unit`` names ε's unit on the axis, as in :func:`robustness_figure`."""
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
    ax.set_xlabel(f"smallest flipping eps ({'L∞' if norm == 'linf' else 'L2'}{', ' + unit if unit else ''}), "
                  "by PGD bisection")
    ax.set_ylabel("share of rows flipped")
    ax.set_xlim(0, search_eps)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"Minimal perturbations: {np.mean(~np.isfinite(values)):.0%} of rows never flipped up to {search_eps:g}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def adversarial_figure(examples, class_names):
    """Image adversarial examples, one column each, drawn at the report's text width: the
    original (its true and predicted class), the adversarial image (the attack, its ε and the
    class now predicted) and the perturbation, adversarial − original in pixel units, on one
    diverging scale whose colour bar holds every shown pixel's change."""
    n = len(examples)
    header, footer, sides = 0.36, 0.05, 2.0  # inches: the first title, below, row labels and bars
    cell = min((TEXT_WIDTH - sides) / max(n, 1), (ADVERSARIAL_HEIGHT - header - footer) / 3.45, 1.2)
    fig = Figure(figsize=(TEXT_WIDTH, header + footer + 3.45 * cell), layout="constrained")
    axes = fig.subplots(3, n, squeeze=False)
    originals = np.stack([np.asarray(e.x, dtype=np.float64).mean(axis=0) for e in examples])
    adversarial = np.stack([np.asarray(e.x_adv, dtype=np.float64).mean(axis=0) for e in examples])
    deltas = adversarial - originals
    low, high = min(float(originals.min()), float(adversarial.min()), 0.0), \
        max(float(originals.max()), float(adversarial.max()), 1.0)
    bound = float(np.abs(deltas).max()) or 1.0  # no change at all: any symmetric range holds it
    pixel, scale = Normalize(low, high), Normalize(-bound, bound)  # one each: a colour bar is every column's
    for c, example in enumerate(examples):
        grey = axes[0][c].imshow(originals[c], cmap="gray_r", norm=pixel)
        axes[0][c].set_title(f"true {class_names[example.label]}\npredicted {class_names[example.before]}",
                             fontsize=FONT)
        axes[1][c].imshow(adversarial[c], cmap="gray_r", norm=pixel)
        axes[1][c].set_title(f"{example.attack}, eps {example.eps:g}\npredicted {class_names[example.after]}",
                             fontsize=FONT)
        change = axes[2][c].imshow(deltas[c], cmap=ATTRIBUTION_COLOURS, norm=scale)
    for r, words in enumerate(("original", "adversarial", "perturbation")):
        axes[r][0].set_ylabel(words, fontsize=FONT)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(grey, ax=list(axes[:2].flat), aspect=20, pad=0.02)
    bar.set_label("pixel value", fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT)
    bar = fig.colorbar(change, ax=list(axes[2]), aspect=10, pad=0.02)
    bar.set_label("change\n(pixel units)", fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT)
    return fig


FAIRNESS_PLOTTED = {  # metric -> the value of parity
    "statistical_parity_difference": 0.0, "equal_opportunity_difference": 0.0, "average_odds_difference": 0.0,
    "equalized_odds_difference": 0.0, "predictive_parity_difference": 0.0, "accuracy_difference": 0.0,
    "disparate_impact": 1.0, "false_negative_rate_ratio": 1.0, "false_positive_rate_ratio": 1.0,
}


BAND_COLOURS = {"fail": "#b3261e", "warn": "#c77700"}  # the policy's regions, as in robustness_figure


def policy_bands(bounds: dict[str, float], low: float, high: float) -> list[tuple[str, float, float]]:
    """The policy's fail and warn regions of one metric's axis from ``low`` to ``high``:
    ``(key, start, end)``, ``key`` the bound that opens the region (``fail_below`` covers
    ``low``..bound, ``warn_below`` its fail bound (or ``low``)..bound; the ``_above`` bounds the
    same upward). Regions outside ``low``..``high`` are clipped; empty ones are left out."""
    regions = []
    for side, toward in (("below", low), ("above", high)):
        fail, warn = bounds.get(f"fail_{side}"), bounds.get(f"warn_{side}")
        if fail is not None:
            regions.append((f"fail_{side}", toward, fail))
        if warn is not None:
            regions.append((f"warn_{side}", toward if fail is None else fail, warn))
    clipped = [(key, min(max(min(a, b), low), high), min(max(max(a, b), low), high)) for key, a, b in regions]
    return [(key, a, b) for key, a, b in clipped if b > a]


def fairness_figure(comparisons, *, thresholds: dict[str, dict[str, float]] | None = None):
    """Each fairness metric with its bootstrap interval, one marker per comparison, drawn at the
    report's text width; the dotted line is parity. ``thresholds``: metric -> the policy's
    bounds of its check (``fail_below``, ``warn_above``, …): the metric's row is shaded where the
    policy fails it (red) and warns (amber); a metric without bounds is named "not gated"."""
    thresholds = thresholds or {}
    names = [n for n in FAIRNESS_PLOTTED if n in comparisons[0].metrics]
    legend_rows = (len(comparisons) + 2 + 4) // 5  # the two bands and the comparisons, five a row
    fig = Figure(figsize=(TEXT_WIDTH, 0.34 * len(names) + 0.8 + 0.17 * legend_rows), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    offsets = np.linspace(-0.25, 0.25, len(comparisons)) if len(comparisons) > 1 else [0.0]
    drawn = set()
    for ax, kind in zip(axes, ("difference", "ratio")):
        rows = [(i, name) for i, name in enumerate(names) if (FAIRNESS_PLOTTED[name] == 1.0) == (kind == "ratio")]
        parity = 0.0 if kind == "difference" else 1.0
        edges = [parity]
        for offset, comparison in zip(offsets, comparisons):
            ys, values, errors = [], [], []
            for i, name in rows:
                e = comparison.metrics[name]
                if not np.isfinite(e.value):
                    continue
                ys.append(i + offset)
                values.append(e.value)
                errors.append([max(e.value - e.low, 0) if np.isfinite(e.low) else 0,
                               max(e.high - e.value, 0) if np.isfinite(e.high) else 0])
                edges += [v for v in (e.value, e.low, e.high) if np.isfinite(v)]
            if ys:
                ax.errorbar(values, ys, xerr=np.array(errors).T, fmt="o", ms=4, capsize=2.5, lw=1.2,
                            label=comparison.subject)
        edges += [v for _, name in rows for v in thresholds.get(name, {}).values()]
        span = (max(edges) - min(edges)) or 1.0
        low, high = min(edges) - 0.08 * span, max(edges) + 0.08 * span
        for i, name in rows:
            for key, start, end in policy_bands(thresholds.get(name, {}), low, high):
                level = key.split("_")[0]
                band = Rectangle((start, i - 0.45), end - start, 0.9, color=BAND_COLOURS[level],
                                 alpha=0.16 if level == "fail" else 0.12, lw=0, zorder=0,
                                 label=f"{level} region (policy)" if level not in drawn else None)
                band.set_gid(f"policy:{name}:{key}")
                ax.add_patch(band)
                drawn.add(level)
        ax.axvline(parity, color="black", ls=":", lw=1)
        ax.set_xlim(low, high)
        ax.set_xlabel(f"{kind} (unprivileged vs privileged)", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.grid(axis="x", alpha=0.3)
    labels = [n.replace("_", " ") + ("" if thresholds.get(n) or not thresholds else "\n(not gated)") for n in names]
    axes[0].set_yticks(range(len(names)), labels)
    axes[0].set_ylim(len(names) - 0.5, -0.5)
    handles, legend_labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in legend_labels:
                handles.append(handle)
                legend_labels.append(label)
    fig.legend(handles, legend_labels, loc="outside lower center", ncols=min(len(legend_labels), 5), fontsize=FONT,
               frameon=False)
    fig.suptitle("Model fairness with bootstrap intervals", fontsize=FONT + 1)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) atomically, with the one permission rule
    of :func:`scrutiny.safe_write.write_file`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".").lower(), dpi=150, bbox_inches="tight")
    return write_file(path, buffer.getvalue())
