"""Fairness: group and intersectional metrics with intervals, per-group bars with policy bands, each
category's selection rate, per-group confusion matrices, a threshold what-if, impact ratios, scoring rates,
a heat map, mitigation.

The attribute filter narrows every table and chart; the URL's ``focus`` (a finding's subject, as its
drill-down link gives it) preselects it and ``threshold`` the what-if's threshold. The page reads what the
run holds and never re-runs an audit; the what-if recomputes decisions from the stored probabilities
(see :mod:`scrutiny.app.fairness_views`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from scrutiny.app import fairness_views as views
from scrutiny.app import state
from scrutiny.app.text import literal
from scrutiny.audit.fairness.details import FairnessDetails, GroupComparisonEntry, ImpactRatioEntry, ScoringRateEntry
from scrutiny.audit.plots import subplots

IMPACT_COLUMNS = ("attribute", "category", "n", "selection_rate", "impact_ratio", "below_four_fifths", "excluded")
# field -> column shown; the ratio is named apart from the selection-rate table's
SCORING_COLUMNS = {"attribute": "attribute", "category": "category", "n": "n", "scoring_rate": "scoring_rate",
                   "impact_ratio": "scoring_impact_ratio", "below_four_fifths": "below_four_fifths",
                   "excluded": "excluded"}


def metrics_table(comparisons: list[GroupComparisonEntry]) -> pd.DataFrame:
    """One row per (comparison, metric): value and interval. ``privileged`` is the group compared
    against (the privileged group, or the reference category), ``compared`` the category set
    against a reference (empty where it is every other row)."""
    rows = []
    for c in comparisons:
        for name, e in c.metrics.items():
            rows.append({"attribute": c.attribute, "privileged": c.privileged, "compared": c.compared or "",
                         "metric": name, "value": e.value, "low": e.low, "high": e.high})
    return pd.DataFrame(rows)


def impact_table(impact: list[ImpactRatioEntry]) -> pd.DataFrame:
    """The impact-ratio rows with their display names (an intersection's joined)."""
    return pd.DataFrame([{column: getattr(r, column) for column in IMPACT_COLUMNS} for r in impact],
                        columns=list(IMPACT_COLUMNS))


def scoring_table(scoring: list[ScoringRateEntry]) -> pd.DataFrame:
    """The scoring-rate rows (share of each category scored above the median) with their display names."""
    return pd.DataFrame([{shown: getattr(r, name) for name, shown in SCORING_COLUMNS.items()} for r in scoring],
                        columns=list(SCORING_COLUMNS.values()))


def intersection_grid(impact: list[ImpactRatioEntry]) -> pd.DataFrame | None:
    """Selection rate over the categories of the first intersection (rows × columns)."""
    crossed = [r for r in impact if len(r.levels) == 2]
    if not crossed:
        return None
    first, second = crossed[0].attributes
    cells = {}
    for r in crossed:
        if r.attributes != [first, second]:
            continue
        a, b = (level.value for level in r.levels)
        cells[(a, b)] = r.selection_rate
    rows = sorted({a for a, _ in cells})
    columns = sorted({b for _, b in cells})
    grid = pd.DataFrame(np.nan, index=pd.Index(rows, name=first), columns=pd.Index(columns, name=second))
    for (a, b), value in cells.items():
        grid.loc[a, b] = value
    return grid


def show(run) -> None:
    st.header("Fairness")
    details = run.details("fairness")
    if details is None:
        st.info("This run has no fairness results: the family needs a binary tabular data set with protected "
                "attributes, or was left out of its config.")
        return
    findings = run.findings["findings"]
    st.caption("Differences are unprivileged − privileged; disparate impact is unprivileged / privileged "
               f"(AIF360's conventions); {details.confidence:.0%} bootstrap intervals.")
    model = metrics_table(details.model)
    attributes = list(dict.fromkeys(model["attribute"]))
    focus = _focus(details, attributes)
    chosen = st.multiselect("Attributes and intersections", attributes, key="attributes")
    _write_focus(details, attributes, chosen, focus)
    comparisons = [c for c in details.model if c.attribute in chosen]
    if focus is not None:  # the focused comparison first
        comparisons.sort(key=lambda c: c.subject != focus)
    st.subheader("Model fairness on the test split")
    st.dataframe(model[model["attribute"].isin(chosen)], hide_index=True, width="stretch", key="model_metrics")
    for c in comparisons:
        for warning in c.warnings:
            st.warning(f"{literal(c.attribute)}: {literal(warning)}")
    _group_bars(details, findings, comparisons)
    _categories(details, findings, chosen)
    _confusion(run, details, comparisons)
    _whatif(run, details, findings, comparisons)
    labels = "training labels" if details.settings.get("data_bias_split", "train") == "train" else "labels of the audited rows"
    st.subheader(f"Data-set bias ({labels})")
    bias = metrics_table(details.data_bias)
    st.dataframe(bias[bias["attribute"].isin(chosen)] if len(bias) else bias, hide_index=True, width="stretch",
                 key="data_bias")
    if details.scoring_rates is not None and details.median_score is not None:
        side = "above" if details.settings.get("higher_is_favourable", True) else "below"
        st.subheader("Scoring rates (NYC LL144)")
        st.caption(f"Score: {literal(details.settings.get('score') or 'P(favourable)')}. A category's scoring rate is the "
                   f"share of its rows scored {side} the median score of the whole test split "
                   f"({details.median_score:.4g}), the favourable side; a score equal to the median does not count.")
        scoring = scoring_table(details.scoring_rates)
        st.dataframe(scoring[scoring["attribute"].isin(chosen)], hide_index=True, width="stretch", key="scoring")
    grid = intersection_grid([r for r in details.impact_ratios if r.attribute in chosen])
    if grid is not None:
        st.subheader("Selection rate over an intersection")
        st.pyplot(_heatmap(grid), clear_figure=True)
    mitigation = [m for m in details.mitigation or [] if m.attribute in chosen]
    if mitigation:
        st.subheader("Mitigation: before and after")
        for i, m in enumerate(mitigation):
            st.markdown(f"**{literal(m.method)}** for {literal(m.attribute)}, measured on {literal(m.rows)} "
                        f"(n={m.n:d})")
            table = pd.DataFrame([{"metric": k, "before": m.before[k].value, "after": m.after[k].value,
                                   "change": _change(m.before[k].value, m.after[k].value)} for k in m.before])
            st.dataframe(table, hide_index=True, width="stretch", key=f"mitigation_{i}")


def _focus(details: FairnessDetails, attributes: list[str]) -> str | None:
    """The comparison or attribute the URL's ``focus`` names (a finding's subject: ``sex``, ``sex × race``,
    ``race=Black``), preselected in the attribute filter the first time the page shows; a value this run
    does not have is named in a one-line warning and ignored."""
    wanted = state.get("focus")
    subjects = {c.subject: c.attribute for c in details.model}
    known = wanted is not None and (wanted in subjects or wanted in attributes)
    if wanted is not None and not known:
        st.warning(f"{literal(wanted)} is not an attribute or comparison of this run: showing every attribute")
    if "attributes" in st.session_state:  # kept from an earlier run of the page: only what this run has
        st.session_state.attributes = [a for a in st.session_state.attributes if a in attributes]
    else:
        st.session_state.attributes = [subjects.get(wanted, wanted)] if known else list(attributes)
    return wanted if known else None


def _write_focus(details: FairnessDetails, attributes: list[str], chosen: list[str], focus: str | None) -> None:
    """One attribute chosen: it is the URL's ``focus`` (a focused comparison of it stays); otherwise none."""
    if len(chosen) != 1 or len(attributes) == 1:
        state.put("focus", None)
        return
    if focus is not None and {c.subject: c.attribute for c in details.model}.get(focus, focus) == chosen[0]:
        return
    state.put("focus", chosen[0])


def _group_bars(details: FairnessDetails, findings: list[dict], comparisons) -> None:
    if not comparisons:
        return
    bars = views.group_bars(details, findings)
    bars = bars[bars["subject"].isin([c.subject for c in comparisons])]
    st.subheader("Per group: rates with intervals and policy bands")
    st.caption(f"Bars: the audited figures of the reference and the compared group; whiskers: {details.confidence:.0%} "
               "Wilson score intervals from the group's rows; green band: the compared group's values that pass the "
               "policy's fail bounds relative to the reference group (disparate impact and statistical parity "
               "difference for the selection rate, equal opportunity difference for the TPR, average odds "
               "difference for the FPR, its TPR as it is). Hatched: a rate of fewer rows than the policy's "
               "minimum, read as noise.")
    for c in comparisons:
        st.pyplot(views.bars_figure(bars, c.subject), clear_figure=True)
    st.dataframe(bars, hide_index=True, width="stretch", key="group_bars")


def _categories(details: FairnessDetails, findings: list[dict], chosen: list[str]) -> None:
    st.subheader("Impact ratios (NYC LL144, four-fifths rule)")
    impact = [r for r in details.impact_ratios if r.attribute in chosen]
    categories = views.category_bars(impact, findings, details.confidence)
    for attribute in dict.fromkeys(categories["attribute"]):
        st.pyplot(views.category_figure(categories, attribute), clear_figure=True)
    if len(categories):
        st.caption("Each category's selection rate with its Wilson interval; dashed: the policy's impact-ratio bound "
                   "times the highest rate (a category left of it fails). Hatched: excluded from the highest rate "
                   "and the flag (under 2 % of rows, as LL144 allows) or under the policy's minimum rows.")
    st.dataframe(impact_table(impact), hide_index=True, width="stretch", key="impact")
    unknown = {name: n for name, n in (details.unknown_rows or {}).items() if name in chosen}
    if unknown:
        st.caption("Rows of unknown category, left out of the rates and ratios (LL144 has them counted): "
                   + "; ".join(f"{literal(name)} {n:,}" for name, n in unknown.items()))


def _confusion(run, details: FairnessDetails, comparisons) -> None:
    if not comparisons:
        return
    st.subheader("Per-group confusion matrices")
    counts = views.stored_counts(run, details)
    if isinstance(counts, str):
        st.info(f"No confusion matrices: {literal(counts)}")
        return
    table = views.confusion_table(details, counts)
    table = table[table["subject"].isin([c.subject for c in comparisons])]
    st.caption("From the stored decisions: per group, rows of each true label (rows) by decision (columns), "
               "counts and the share of the true label's rows.")
    st.dataframe(table, hide_index=True, width="stretch", key="confusion")


def _whatif(run, details: FairnessDetails, findings: list[dict], comparisons) -> None:
    if not comparisons:
        return
    st.subheader("Threshold what-if")
    reason = views.whatif_unavailable(run, details)
    if reason is not None:
        st.info(f"No threshold what-if: {literal(reason)}")
        return
    if "threshold" not in st.session_state:
        st.session_state.threshold = _url_threshold()
    threshold = round(float(st.slider("Decision threshold on P(favourable) — what-if", 0.0, 1.0, step=0.005,
                                      format="%.3f", key="threshold")), 3)
    state.put("threshold", None if threshold == 0.5 else f"{threshold:g}")
    st.info("What-if, not the audited model: decisions recomputed from the stored probabilities as favourable "
            f"where P(favourable) > {threshold:.3f}, for everyone. The findings are of the audited model "
            "(0.5, argmax), whose values this table equals at 0.5.")
    table = views.whatif_table(run, details, threshold)
    subjects = [c.subject for c in comparisons]
    table = table[table["subject"].isin(subjects)].drop(columns="comparison")
    table["outside_policy"] = [", ".join(m for m in views.WHATIF_METRICS
                                         if _outside(findings, f"fairness.{m}", row["subject"], row[m]))
                               for _, row in table.iterrows()]
    st.dataframe(table[["subject", *[c for c in table.columns if c != "subject"]]], hide_index=True,
                 width="stretch", key="whatif")
    curves = views.whatif_curves(run, details)
    chosen = [i for i, c in enumerate(details.model) if c.subject in subjects]
    st.pyplot(views.curves_figure([curves[i] for i in chosen], [details.model[i].subject for i in chosen], threshold),
              clear_figure=True)


def _url_threshold() -> float:
    """The URL's ``threshold`` (0.5 where absent; a value that is not a number in [0, 1] is named and ignored)."""
    raw = state.get("threshold")
    if raw is None:
        return 0.5
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        st.warning(f"{literal(raw)} is not a threshold between 0 and 1: showing 0.5")
        return 0.5
    return round(round(value / 0.005) * 0.005, 3)


def _outside(findings: list[dict], check: str, subject: str, value: float) -> bool:
    finding = next((f for f in findings if f["check"] == check and f.get("subject") == subject), None)
    threshold = (finding or {}).get("threshold") or {}
    low, high = threshold.get("fail_below"), threshold.get("fail_above")
    return bool(np.isnan(value) or (low is not None and value < low) or (high is not None and value > high))


def _change(before: float, after: float) -> float:
    """after - before, a value that could not be measured (NaN) counting as 0."""
    return (0.0 if np.isnan(after) else after) - (0.0 if np.isnan(before) else before)


def _heatmap(grid: pd.DataFrame):
    fig, ax = subplots(figsize=(1.2 + 1.1 * grid.shape[1], 0.9 + 0.5 * grid.shape[0]))
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
    ax.set_xlabel(grid.columns.name)
    ax.set_ylabel(grid.index.name)
    for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value < 0.5 * np.nanmax(grid.to_numpy(dtype=float)) else "black")
    fig.colorbar(image, ax=ax, label="selection rate")
    fig.tight_layout()
    return fig
