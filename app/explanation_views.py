"""What the Explanations page computes from a run's stored attributions, and its figures.

Everything here reads arrays the audit stored (``arrays/attributions.npz``, the explained rows'
raw values, the adverse-action notices); nothing re-runs the model. The functions are plain
NumPy/pandas, so the tests can check them against values computed by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scrutiny.audit.attributions.importance import row_spearman
from scrutiny.audit.plots import subplots

__all__ = ["TOP_K", "WATERFALL_FEATURES", "PAGE_ROWS", "BEESWARM_ROWS", "BEESWARM_SEED", "UNITS", "RED", "BLUE",
           "top_k", "in_top_k", "sign_conflicts", "one_minus_spearman", "waterfall", "waterfall_figure",
           "bars_figure", "beeswarm_figure", "dependence_figure", "heatmaps_figure", "beeswarm_sample",
           "time_profile", "time_feature_figure"]

TOP_K = 4                  # like the adverse-action notices' principal reasons (MAX_REASONS)
WATERFALL_FEATURES = 10    # features drawn one by one in a waterfall; the rest are summed
PAGE_ROWS = 200            # rows of a table sent to the browser at most
BEESWARM_ROWS = 2000       # rows a beeswarm or dependence plot draws at most
BEESWARM_SEED = 0
UNITS = {"log_odds": "log-odds", "logit": "logit", "probability": "probability"}
RED, BLUE = "#ff0051", "#008bfb"  # shap's colours: red pushes the output up, blue down


def top_k(values: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Per row, the indices of the ``k`` features of largest |attribution| (ties: the earlier
    feature first), -1 where a row has fewer than ``k`` non-zero attributions; (N, k)."""
    values = np.abs(np.asarray(values, dtype=np.float64))
    k = min(k, values.shape[1])
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(values, order, axis=1) > 0, order, -1)


def in_top_k(values: np.ndarray, feature: int, k: int = TOP_K) -> np.ndarray:
    """(N,) whether ``feature`` is among each row's top ``k`` by |attribution|."""
    return np.any(top_k(values, k) == feature, axis=1)


def sign_conflicts(per_method: dict[str, np.ndarray], k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """Per row and feature, whether two methods give it opposite signs (one > 0, another < 0),
    (N, F); and per row, how many of the features in the top ``k`` of any method do, (N,)."""
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in per_method.values()])  # (M, N, F)
    opposite = np.asarray((stacked > 0).any(axis=0) & (stacked < 0).any(axis=0))
    top = np.zeros(opposite.shape, dtype=bool)
    for values in stacked:
        chosen = top_k(values, k)
        rows = np.repeat(np.arange(len(chosen)), chosen.shape[1])
        kept = chosen.ravel() >= 0
        top[rows[kept], chosen.ravel()[kept]] = True
    return opposite, (opposite & top).sum(axis=1)


def one_minus_spearman(per_method: dict[str, np.ndarray]) -> np.ndarray:
    """Per row, 1 − Spearman's rank correlation of two methods' |attributions| (the agreement
    finding's statistic), averaged over the pairs of methods; NaN where a row is constant."""
    names = list(per_method)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    rhos = [row_spearman(np.abs(np.asarray(per_method[a], dtype=np.float64)),
                         np.abs(np.asarray(per_method[b], dtype=np.float64))) for a, b in pairs]
    return 1.0 - np.mean(rhos, axis=0)


def waterfall(values: np.ndarray, labels: list[str], base: float, fx: float, *,
              top: int = WATERFALL_FEATURES, end: str = "f(x)") -> pd.DataFrame:
    """One decision's waterfall: the base value, the ``top`` largest contributions by |value|
    (the rest summed as one step), f(x) (or what the contributions lead to, named ``end``).
    Columns: step, contribution (NaN for the two ends), cumulative (where the bar ends: the base,
    base + the contributions so far, f(x))."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(-np.abs(values), kind="stable")
    shown, rest = order[:top], order[top:]
    steps = [("base value", np.nan)] + [(labels[j], float(values[j])) for j in shown]
    if len(rest):
        steps.append((f"other {len(rest)} features", float(values[rest].sum())))
    frame = pd.DataFrame(steps, columns=["step", "contribution"])
    frame["cumulative"] = base + frame["contribution"].fillna(0.0).cumsum()
    last = pd.DataFrame([{"step": end, "contribution": np.nan, "cumulative": fx}])
    return pd.concat([frame, last], ignore_index=True)


def waterfall_figure(steps: pd.DataFrame, *, title: str, units: str, fx: float | None = None):
    """shap's waterfall: E at the bottom, f(x) at the top, each contribution a bar from the running
    total before it to the one after it, red when it pushes the output up, blue when down. ``fx``:
    f(x) drawn dashed, where the waterfall ends elsewhere (LIME's model at x)."""
    inner = steps.iloc[1:-1]
    base, end = float(steps["cumulative"].iloc[0]), float(steps["cumulative"].iloc[-1])
    fig, ax = subplots(figsize=(4.6, 0.32 * len(inner) + 1.4))
    starts = (inner["cumulative"] - inner["contribution"]).to_numpy()
    widths = inner["contribution"].to_numpy()
    y = np.arange(len(inner))[::-1]
    ax.barh(y, widths, left=starts, color=[RED if w > 0 else BLUE for w in widths], height=0.7)
    span = float(max(np.abs(widths).max() if len(widths) else 0.0, abs(end - base), 1e-12))
    for yi, start, width in zip(y, starts, widths):  # the value right of the bar, clear of the feature names
        ax.text(max(start, start + width) + 0.01 * span, yi, f"{width:+.3g}", va="center", ha="left", fontsize=7)
    ax.set_yticks(y, list(inner["step"]), fontsize=7)
    ax.axvline(base, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(end, color="black", linewidth=0.8)
    if fx is not None:
        ax.axvline(fx, color="black", linewidth=0.8, linestyle="--")
    reference = "" if fx is None else f" (f(x) {fx:.3g}, dashed)"
    ax.set_xlabel(f"{units}: base {base:.3g} → {steps['step'].iloc[-1]} {end:.3g}{reference}", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.margins(x=0.15)
    fig.tight_layout()
    return fig


def bars_figure(values: pd.Series, *, title: str, units: str):
    """The ten largest |attributions| of one row (a method with no base value to start a waterfall
    from), in shap's colours."""
    shown = values.reindex(values.abs().sort_values(ascending=False).index[:WATERFALL_FEATURES])[::-1]
    fig, ax = subplots(figsize=(4.6, 0.32 * len(shown) + 1.2))
    ax.barh(list(shown.index), shown.to_numpy(), color=[RED if v > 0 else BLUE for v in shown])
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel(units, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def beeswarm_sample(n: int) -> np.ndarray:
    """The positions a beeswarm draws: all rows, or :data:`BEESWARM_ROWS` of them drawn with a fixed seed."""
    if n <= BEESWARM_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(BEESWARM_SEED).choice(n, size=BEESWARM_ROWS, replace=False))


def _colour_values(column: pd.Series) -> np.ndarray | None:
    """A numeric feature's values as their rank in [0, 1] (shap colours by value, low blue, high
    red); None for a categorical feature (drawn grey)."""
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        return None
    ranks = column.rank(pct=True).to_numpy(dtype=float)
    return ranks


def beeswarm_figure(per_method: dict[str, np.ndarray], raw: pd.DataFrame | None, features: list[str],
                    units: dict[str, str], *, top: int = 12):
    """shap's beeswarm per method, side by side: one line per feature (the ``top`` of largest mean
    |attribution|), one dot per explained row at its attribution, coloured by the feature's value."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    cmap = LinearSegmentedColormap.from_list("low_high", [BLUE, "#7b2cbf", RED])
    methods = list(per_method)
    n_shown = min(top, len(features))
    fig, axes = subplots(1, len(methods), figsize=(4.8 * len(methods) + 0.8, 0.36 * n_shown + 1.4), squeeze=False)
    rng = np.random.default_rng(BEESWARM_SEED)
    for ax, method in zip(axes[0], methods):
        values = np.asarray(per_method[method], dtype=np.float64)
        order = np.argsort(-np.abs(values).mean(axis=0), kind="stable")[:n_shown]
        for line, j in enumerate(order[::-1]):
            colours = _colour_values(raw[features[j]]) if raw is not None else None
            jitter = rng.uniform(-0.3, 0.3, size=len(values))
            if colours is None:
                ax.scatter(values[:, j], line + jitter, s=6, color="#999999", linewidths=0)
            else:
                ax.scatter(values[:, j], line + jitter, s=6, c=colours, cmap=cmap, vmin=0, vmax=1, linewidths=0)
        ax.set_yticks(range(n_shown), [features[j] for j in order[::-1]], fontsize=7)
        ax.axvline(0, color="grey", linewidth=0.6)
        ax.set_xlabel(f"attribution ({units[method]})", fontsize=8)
        ax.set_title(method, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=list(axes[0]), fraction=0.03, pad=0.02)
    bar.set_ticks([0, 1], labels=["low", "high"], fontsize=7)
    bar.set_label("feature value (rank; grey: categorical)", fontsize=7)
    return fig


def dependence_figure(feature_values: pd.Series, per_method: dict[str, np.ndarray], units: dict[str, str]):
    """Feature value against attribution, one panel per method (categories spread on the x axis)."""
    methods = list(per_method)
    fig, axes = subplots(1, len(methods), figsize=(4.2 * len(methods), 3.2), squeeze=False)
    numeric = _colour_values(feature_values) is not None
    rng = np.random.default_rng(BEESWARM_SEED)
    if numeric:
        x = feature_values.to_numpy(dtype=float)
        ticks = None
    else:
        categories = sorted(feature_values.astype(str).unique())
        codes = feature_values.astype(str).map({c: i for i, c in enumerate(categories)}).to_numpy(dtype=float)
        x = codes + rng.uniform(-0.25, 0.25, size=len(codes))
        ticks = categories
    for ax, method in zip(axes[0], methods):
        y = np.asarray(per_method[method], dtype=np.float64)
        ax.scatter(x, y, s=8, c=[RED if v > 0 else BLUE for v in y], linewidths=0, alpha=0.8)
        ax.axhline(0, color="grey", linewidth=0.6)
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), ticks, rotation=45, ha="right", fontsize=7)
        ax.set_xlabel(str(feature_values.name), fontsize=8)
        ax.set_ylabel(f"attribution ({units[method]})", fontsize=8)
        ax.set_title(method, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def heatmaps_figure(image: np.ndarray, per_method: dict[str, np.ndarray], units: dict[str, str]):
    """The input and one heat map per method over it, on one symmetric colour scale shared by the
    row's heat maps (red pushes the explained output up, blue down), with a labelled colour bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    methods = list(per_method)
    bound = max((float(np.abs(v).max()) for v in per_method.values()), default=0.0) or 1.0
    fig, axes = subplots(1, len(methods) + 1, figsize=(2.4 * (len(methods) + 1) + 1.0, 2.8), squeeze=False)
    axes[0][0].imshow(image, cmap="gray_r")
    axes[0][0].set_title("input", fontsize=9)
    for ax, method in zip(axes[0][1:], methods):
        ax.imshow(image, cmap="gray_r", alpha=0.35)
        ax.imshow(per_method[method], cmap="RdBu_r", vmin=-bound, vmax=bound, alpha=0.75)
        ax.set_title(f"{method}\n({units[method]})", fontsize=8)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(ScalarMappable(norm=Normalize(-bound, bound), cmap="RdBu_r"), ax=list(axes[0]),
                       fraction=0.025, pad=0.02)
    bar.set_label(f"attribution per pixel (±{bound:.3g})", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return fig


def time_profile(time_share: dict[str, list[float]], time_steps: list[str]) -> pd.DataFrame:
    """A sequence model's time profiles as a table: a row per method, a column per time step, each
    step's share of a row's total |attribution| (mean over the explained rows)."""
    frame = pd.DataFrame([list(map(float, shares)) for shares in time_share.values()], columns=time_steps)
    frame.insert(0, "method", list(time_share))
    return frame


def time_feature_figure(heat: np.ndarray, time_steps: list[str], features: list[str], *, method: str, unit: str,
                        time_share: dict[str, list[float]]):
    """One method's mean |attribution| per time step (rows) and feature (columns), beside every
    method's time profile (bars: each step's share of |attribution|, mean over rows)."""
    heat = np.asarray(heat, dtype=np.float64)
    fig, axes = subplots(1, 2, figsize=(9.0, 3.2), squeeze=False, gridspec_kw={"width_ratios": [1.15, 1]})
    left, right = axes[0]
    shown = left.imshow(heat, cmap="viridis", aspect="auto", vmin=0.0)
    left.set_xticks(range(len(features)), features, rotation=90, fontsize=7)
    left.set_yticks(range(len(time_steps)), time_steps, fontsize=7)
    left.set_xlabel("feature", fontsize=8)
    left.set_ylabel("time step", fontsize=8)
    left.set_title(f"{method}: mean |attribution| ({unit})", fontsize=9)
    bar = fig.colorbar(shown, ax=left, fraction=0.05)
    bar.ax.tick_params(labelsize=7)
    steps = np.arange(len(time_steps))
    width = 0.8 / max(1, len(time_share))
    for k, (name, shares) in enumerate(time_share.items()):
        right.bar(steps + (k - (len(time_share) - 1) / 2) * width, np.asarray(shares, dtype=np.float64), width=width,
                  label=name)
    right.set_xticks(steps, time_steps, fontsize=7)
    right.tick_params(labelsize=7)
    right.set_xlabel("time step", fontsize=8)
    right.set_ylabel("share of |attribution|", fontsize=8)
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig
