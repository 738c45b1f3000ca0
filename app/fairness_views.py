"""The Fairness page's figures and aggregates: per-group bars with intervals and policy bands, per-category
selection rates, per-group confusion matrices and the threshold what-if.

Everything here is computed on the server from what the run holds (its details, findings and stored
arrays) and reduced to a few numbers per group before it reaches the page: no per-row data is ever
sent to the browser. The aggregates of the stored arrays are cached per run (its path and the stamp of
its manifest, so a rewritten run is read again) and are vectorised (one ``bincount`` or one sort per
comparison), so a run of a million predictions stays responsive.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd
import streamlit as st
from matplotlib.patches import Patch

from scrutiny.app.runs import stamp
from scrutiny.audit.fairness import group_metrics as gm
from scrutiny.audit.fairness.details import GROUPS, FairnessDetails, GroupComparisonEntry, ImpactRatioEntry
from scrutiny.audit.fairness.whatif import whatif_counts
from scrutiny.audit.performance.details import PREDICTIONS
from scrutiny.audit.plots import subplots
from scrutiny.audit.run.run_folder import Run

__all__ = ["ARGMAX_RULE", "BAR_METRICS", "WHATIF_METRICS", "wilson", "group_bars", "category_bars",
           "stored_counts", "confusion_table", "whatif_table", "whatif_curves", "whatif_unavailable",
           "bars_figure", "category_figure", "curves_figure"]

ARGMAX_RULE = "argmax (P(favourable) > 0.5)"  # the audited rule the what-if reproduces at 0.5
# metric -> (label, the rows it is a rate of)
BAR_METRICS = {
    "selection_rate": ("selection rate", "rows"),
    "true_positive_rate": ("TPR", "rows with the favourable label"),
    "false_positive_rate": ("FPR", "rows with the unfavourable label"),
    "precision": ("precision", "rows decided favourable"),
    "accuracy": ("accuracy", "rows"),
}
WHATIF_METRICS = ("disparate_impact", "statistical_parity_difference", "equal_opportunity_difference",
                  "average_odds_difference")
SIDES = (("privileged", "reference"), ("unprivileged", "compared"))  # per_group key -> the page's word
HATCH = "///"


# ------------------------------------------------------------------ intervals


def wilson(k, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion ``k / n`` (vectorised; NaN where ``n`` is 0).

    With z the normal quantile of ``(1 + confidence) / 2`` and p = k / n, the interval is
    ``(p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)``: unlike p ± z·sqrt(p(1−p)/n) it stays
    inside [0, 1] and does not collapse to a point at 0 or 1, which matters for the small groups an
    audit is about. ``k`` and ``n`` are counts (or counted rows, for a run of weighted entries)."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denominator = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    empty = ~(n > 0)
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


# ------------------------------------------------------------------ the policy


def _finding(findings: list[dict], check: str, subject: str) -> dict | None:
    return next((f for f in findings if f["check"] == check and f.get("subject") == subject), None)


def _bounds(finding: dict | None) -> tuple[float, float]:
    """(low, high) a value must stay within not to fail (the warn bounds where the policy sets no fail
    bound; ±inf where it sets neither)."""
    threshold = (finding or {}).get("threshold") or {}
    low = threshold.get("fail_below", threshold.get("warn_below"))
    high = threshold.get("fail_above", threshold.get("warn_above"))
    return (-np.inf if low is None else float(low)), (np.inf if high is None else float(high))


def min_rows(findings: list[dict], subject: str | None = None) -> int:
    """The policy's minimum rows of a group, as the fairness findings (of ``subject`` where given) record it."""
    for f in findings:
        if f["family"] == "fairness" and (subject is None or f.get("subject") == subject) and f.get("comparison"):
            return int(f["comparison"].get("min_rows") or 0)
    return 0 if subject is None else min_rows(findings)


# ------------------------------------------------------------------ per-group bars (from the details)


def group_bars(details: FairnessDetails, findings: list[dict]) -> pd.DataFrame:
    """One row per comparison × group × metric of :data:`BAR_METRICS`: the details' value (precision,
    which they do not hold, from them: TPR × base rate / selection rate), its Wilson interval, the rows
    it is a rate of (``n``), ``small`` where those are under the policy's minimum rows, and for the
    compared group the band of values that pass the policy's bounds relative to the reference group:
    disparate impact and statistical parity difference for the selection rate, equal opportunity
    difference for the TPR, average odds difference (given the compared group's TPR) for the FPR."""
    rows = []
    for c in details.model:
        least = min_rows(findings, c.subject)
        figures = {}
        for key, side in SIDES:
            g = c.per_group.get(key)
            if g is None:
                continue
            positives = g.n * g.base_rate
            selected = g.n * g.selection_rate
            precision = g.true_positive_rate * g.base_rate / g.selection_rate if g.selection_rate > 0 else np.nan
            figures[side] = {
                "selection_rate": (g.selection_rate, g.n), "true_positive_rate": (g.true_positive_rate, positives),
                "false_positive_rate": (g.false_positive_rate, g.n - positives), "precision": (precision, selected),
                "accuracy": (g.accuracy, g.n)}
        bands = _bands(c, figures, findings)
        for side, values in figures.items():
            for metric, (value, n) in values.items():
                n = int(round(n))
                low, high = wilson(np.round(value * n) if np.isfinite(value) else np.nan, n, details.confidence)
                band = bands.get(metric, (np.nan, np.nan)) if side == "compared" else (np.nan, np.nan)
                rows.append({"subject": c.subject, "attribute": c.attribute, "group": side,
                             "group_name": c.privileged if side == "reference" else (c.compared or "all others"),
                             "metric": metric, "value": float(value), "low": float(low), "high": float(high), "n": n,
                             "small": n < least, "band_low": band[0], "band_high": band[1]})
    return pd.DataFrame(rows, columns=["subject", "attribute", "group", "group_name", "metric", "value", "low", "high",
                                       "n", "small", "band_low", "band_high"])


def _bands(c: GroupComparisonEntry, figures: dict, findings: list[dict]) -> dict[str, tuple[float, float]]:
    if "reference" not in figures or "compared" not in figures:
        return {}
    ref = {metric: value for metric, (value, _) in figures["reference"].items()}
    tpr_compared = figures["compared"]["true_positive_rate"][0]
    di = _bounds(_finding(findings, "fairness.disparate_impact", c.subject))
    spd = _bounds(_finding(findings, "fairness.statistical_parity_difference", c.subject))
    eod = _bounds(_finding(findings, "fairness.equal_opportunity_difference", c.subject))
    aod = _bounds(_finding(findings, "fairness.average_odds_difference", c.subject))
    s, t, f = ref["selection_rate"], ref["true_positive_rate"], ref["false_positive_rate"]
    out = {"selection_rate": (max(di[0] * s, s + spd[0]), min(di[1] * s, s + spd[1])),
           "true_positive_rate": (t + eod[0], t + eod[1]),
           # AOD = ((fpr_c − fpr_r) + (tpr_c − tpr_r)) / 2 within [low, high], the TPRs as they are
           "false_positive_rate": (f + 2 * aod[0] - (tpr_compared - t), f + 2 * aod[1] - (tpr_compared - t))}
    return {k: (float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1))) for k, (low, high) in out.items()}


def category_bars(impact: list[ImpactRatioEntry], findings: list[dict], confidence: float) -> pd.DataFrame:
    """Each category's selection rate (NYC LL144's table, from the details) with its Wilson interval,
    ``excluded`` (under 2 % of rows: out of the highest rate and the flag) and ``small`` (under the
    policy's minimum rows), and the band of rates that pass the impact-ratio bound: at least the bound
    times the highest rate of a category not excluded."""
    rows = []
    for r in impact:
        kept = [x.selection_rate for x in impact if x.attribute == r.attribute and not x.excluded]
        top = max(kept) if kept else max(x.selection_rate for x in impact if x.attribute == r.attribute)
        low_bound, _ = _bounds(_finding(findings, "fairness.impact_ratio", r.attribute))
        low, high = wilson(np.round(r.selection_rate * r.n), r.n, confidence)
        rows.append({"attribute": r.attribute, "category": r.category, "n": r.n, "selection_rate": r.selection_rate,
                     "low": float(low), "high": float(high), "impact_ratio": r.impact_ratio,
                     "excluded": r.excluded, "small": r.n < min_rows(findings, r.attribute),
                     "band_low": float(low_bound * top) if np.isfinite(low_bound) else np.nan})
    return pd.DataFrame(rows, columns=["attribute", "category", "n", "selection_rate", "low", "high", "impact_ratio",
                                       "excluded", "small", "band_low"])


# ------------------------------------------------------------------ the stored arrays


def _stored(run: Run):
    """(y, decisions, weights or None, favourable score or None, groups) of the stored arrays, or a
    one-line reason why the page cannot count by group from them."""
    from scrutiny.app.runs import arrays

    if not run.has(GROUPS) or not run.has(PREDICTIONS):
        return f"this run holds no {GROUPS} or {PREDICTIONS} (written before scrutiny stored them)"
    stored, groups = arrays(run, PREDICTIONS), arrays(run, GROUPS)
    y, y_pred = np.asarray(stored["y_true"]), np.asarray(stored["y_pred"])
    if not (np.isin(y, (0, 1)).all() and np.isin(y_pred, (0, 1)).all()):
        return "the stored labels are not binary (a multiclass run's favourable set is not stored with them)"
    proba = stored.get("proba")
    score = None if proba is None or proba.ndim != 2 or proba.shape[1] != 2 else proba[:, 1].astype(np.float64)
    weight = stored["weight"].astype(np.float64) if "weight" in stored else None
    return y.astype(np.int64), y_pred.astype(np.int64), weight, score, groups


@st.cache_data(show_spinner=False, max_entries=16)
def _counts(path: str, stamp: float, n: int, _run: Run) -> list[np.ndarray] | str:
    stored = _stored(_run)
    if isinstance(stored, str):
        return stored
    y, y_pred, weight, _, groups = stored
    out = []
    for i in range(n):
        code = groups.get(f"model_{i}")
        if code is None:
            return f"{GROUPS} has no array model_{i}"
        rows = (code == 0) | (code == 1)
        out.append(gm.confusion_counts(y[rows], y_pred[rows], code[rows], None if weight is None else weight[rows]))
    return out


def stored_counts(run: Run, details: FairnessDetails) -> list[np.ndarray] | str:
    """Per model comparison, the (group, true label, decision) counts of the stored decisions (group 1
    the reference), or a one-line reason why there are none. Cached per run."""
    return _counts(str(run.path), stamp(run.path), len(details.model), run)


def confusion_table(details: FairnessDetails, counts: list[np.ndarray]) -> pd.DataFrame:
    """Per comparison, group and true label: rows decided unfavourable / favourable, and their rates
    among the rows of that true label (rows: the true label; columns: the decision)."""
    rows = []
    for c, cells in zip(details.model, counts, strict=True):
        for g, side in ((1, "reference"), (0, "compared")):
            for label, name in ((0, "unfavourable"), (1, "favourable")):
                decided = cells[g, label]
                total = decided.sum()
                with np.errstate(divide="ignore", invalid="ignore"):
                    rates = decided / total
                rows.append({"subject": c.subject, "attribute": c.attribute, "group": side,
                             "group_name": c.privileged if side == "reference" else (c.compared or "all others"),
                             "true": name, "decided_unfavourable": float(decided[0]),
                             "decided_favourable": float(decided[1]), "rate_unfavourable": float(rates[0]),
                             "rate_favourable": float(rates[1])})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the threshold what-if


def whatif_unavailable(run: Run, details: FairnessDetails) -> str | None:
    """Why the run's probabilities cannot give a what-if (None: they can)."""
    if details.settings.get("threshold") != ARGMAX_RULE:
        return (f"the audited decisions are not {ARGMAX_RULE} of a binary model (they are "
                f"{details.settings.get('threshold')}), so a threshold on P(favourable) would not reproduce them")
    stored = _stored(run)
    if isinstance(stored, str):
        return stored
    if stored[3] is None:
        return f"{PREDICTIONS} holds no probabilities of two classes"
    return None


@st.cache_data(show_spinner=False, max_entries=256)
def _whatif(path: str, stamp: float, threshold: float, n: int, _run: Run) -> pd.DataFrame:
    y, _, weight, score, groups = _stored(_run)
    w = np.ones(len(y)) if weight is None else weight
    decided = score > threshold
    accuracy = float(w @ (decided.astype(np.int64) == y) / w.sum())
    rows = []
    for i in range(n):
        code = groups[f"model_{i}"]
        with np.errstate(divide="ignore", invalid="ignore"):
            m = gm.metrics_from_counts(whatif_counts(score, y, weight, code, threshold, threshold))
        rows.append({"comparison": i, "threshold": threshold,
                     "selection_rate_reference": float(m["selection_rate_privileged"]),
                     "selection_rate_compared": float(m["selection_rate_unprivileged"]),
                     **{k: float(m[k]) for k in WHATIF_METRICS}, "accuracy": accuracy})
    return pd.DataFrame(rows)


def whatif_table(run: Run, details: FairnessDetails, threshold: float) -> pd.DataFrame:
    """At ``threshold`` for everyone (favourable where P(favourable) > threshold): per model comparison,
    the two groups' selection rates, the gated fairness metrics (the audit's formulas:
    :func:`~scrutiny.audit.fairness.group_metrics.metrics_from_counts`) and the accuracy over every row;
    at 0.5 the audited model's values. Cached per run and threshold."""
    table = _whatif(str(run.path), stamp(run.path), float(threshold), len(details.model), run)
    return table.assign(subject=[details.model[i].subject for i in table["comparison"]])


GRID = np.round(np.linspace(0, 1, 201), 3)


@st.cache_data(show_spinner=False, max_entries=16)
def _curves(path: str, stamp: float, n: int, _run: Run) -> list[np.ndarray]:
    """Per comparison, the selection rates (reference, compared) at each threshold of :data:`GRID`: the
    scores sorted once, each group's rows above a threshold read from its cumulated weights."""
    y, _, weight, score, groups = _stored(_run)
    w = np.ones(len(y)) if weight is None else weight
    order = np.argsort(score, kind="stable")
    at_or_under = np.searchsorted(score[order], GRID, side="right")  # rows at or under each threshold
    out = []
    for i in range(n):
        code = groups[f"model_{i}"][order]
        rates = []
        for g in (1, 0):
            cw = np.concatenate([[0.0], np.cumsum(np.where(code == g, w[order], 0.0))])
            rates.append((cw[-1] - cw[at_or_under]) / cw[-1] if cw[-1] > 0 else np.full(len(GRID), np.nan))
        out.append(np.stack(rates))
    return out


def whatif_curves(run: Run, details: FairnessDetails) -> list[np.ndarray]:
    """Per model comparison, (2, len(GRID)) selection rates of the reference and the compared group
    against the threshold. Cached per run."""
    return _curves(str(run.path), stamp(run.path), len(details.model), run)


# ------------------------------------------------------------------ figures


def bars_figure(bars: pd.DataFrame, subject: str):
    """Grouped bars of the reference and the compared group per metric, with their intervals, the compared
    group's policy band (shaded) and small groups hatched."""
    part = bars[bars["subject"] == subject]
    metrics = [m for m in BAR_METRICS if m in set(part["metric"])]
    fig, ax = subplots(figsize=(7.5, 3.1))
    width = 0.38
    colours = {"reference": "#8c8c8c", "compared": "#1f77b4"}
    for side, offset in (("reference", -width / 2), ("compared", width / 2)):
        rows = part[part["group"] == side].set_index("metric").reindex(metrics)
        x = np.arange(len(metrics)) + offset
        values = rows["value"].to_numpy(dtype=float)
        for xi, value, small, low, high in zip(x, values, rows["small"], rows["low"], rows["high"], strict=True):
            ax.bar(xi, value if np.isfinite(value) else 0, width, color=colours[side],
                   hatch=HATCH if small else None, edgecolor="white" if not small else "black", linewidth=0.6,
                   alpha=0.55 if small else 1.0, label=None)
            if np.isfinite(low):
                ax.errorbar(xi, value, yerr=[[max(value - low, 0)], [max(high - value, 0)]], color="black",
                            capsize=3, linewidth=1)
            if small:
                ax.text(xi, min(1.0, (high if np.isfinite(high) else value) + 0.03), "small", ha="center",
                        fontsize=7, rotation=90)
        if side == "compared":
            for xi, bl, bh in zip(x, rows["band_low"], rows["band_high"], strict=True):
                if np.isfinite(bl) and np.isfinite(bh):
                    ax.fill_between([xi - width / 2 - 0.02, xi + width / 2 + 0.02], bl, bh, color="#2ca02c",
                                    alpha=0.18, linewidth=0)
                    ax.hlines([bl, bh], xi - width / 2 - 0.02, xi + width / 2 + 0.02, color="#2ca02c", linewidth=1)
    handles = []
    for side in ("reference", "compared"):
        names = part[part["group"] == side]["group_name"]
        handles.append(Patch(color=colours[side], label=f"{side}: {names.iloc[0] if len(names) else ''}"))
    handles.append(Patch(color="#2ca02c", alpha=0.18, label="compared values that pass the policy"))
    if part["small"].any():
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=HATCH, label="under the policy's minimum rows"))
    ax.set_xticks(range(len(metrics)), [BAR_METRICS[m][0] for m in metrics], fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_title(subject, fontsize=9)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


def category_figure(categories: pd.DataFrame, attribute: str):
    """Horizontal bars of each category's selection rate with its interval; the impact-ratio bound (a
    dashed line: categories left of it fail); excluded and small categories hatched and labelled."""
    part = categories[categories["attribute"] == attribute]
    fig, ax = subplots(figsize=(7.5, 0.9 + 0.3 * len(part)))
    y = np.arange(len(part))[::-1]
    for yi, (_, r) in zip(y, part.iterrows(), strict=True):
        hatched = bool(r["excluded"] or r["small"])
        ax.barh(yi, r["selection_rate"], color="#1f77b4", alpha=0.5 if hatched else 1.0,
                hatch=HATCH if hatched else None, edgecolor="black" if hatched else "white", linewidth=0.6)
        if np.isfinite(r["low"]):
            ax.errorbar(r["selection_rate"], yi, xerr=[[max(r["selection_rate"] - r["low"], 0)],
                                                       [max(r["high"] - r["selection_rate"], 0)]],
                        color="black", capsize=2, linewidth=1)
        notes = [w for w, on in (("excluded (< 2 % of rows)", r["excluded"]), ("small", r["small"])) if on]
        label = f"n={int(r['n']):,}" + (f"  {', '.join(notes)}" if notes else "")
        ax.text(min(1.0, r["high"] if np.isfinite(r["high"]) else r["selection_rate"]) + 0.01, yi, label,
                va="center", fontsize=7)
    bound = part["band_low"].dropna()
    if len(bound):
        ax.axvline(float(bound.iloc[0]), color="#d62728", linestyle="--", linewidth=1,
                   label="the impact-ratio bound times the highest rate")
        ax.legend(fontsize=7, loc="lower right", frameon=False)
    ax.set_yticks(y, part["category"].tolist(), fontsize=8)
    ax.set_xlim(0, 1.25)
    ax.set_xlabel("selection rate")
    ax.set_title(attribute, fontsize=9)
    fig.tight_layout()
    return fig


def curves_figure(curves: list[np.ndarray], subjects: list[str], threshold: float):
    """Selection rates of each comparison's two groups against the threshold; the audited 0.5 and the
    what-if's threshold marked."""
    fig, axes = subplots(1, len(curves), figsize=(max(7.5, 3.6 * len(curves)), 2.8), squeeze=False, sharey=True)
    for ax, rates, subject in zip(axes[0], curves, subjects, strict=True):
        ax.plot(GRID, rates[0], color="#8c8c8c", label="reference")
        ax.plot(GRID, rates[1], color="#1f77b4", label="compared")
        ax.axvline(0.5, color="black", linewidth=0.8, linestyle=":", label="audited (0.5)")
        ax.axvline(threshold, color="#d62728", linewidth=1, label="what-if")
        ax.set_title(subject, fontsize=9)
        ax.set_xlabel("threshold on P(favourable)", fontsize=8)
    axes[0][0].set_ylabel("selection rate", fontsize=8)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
