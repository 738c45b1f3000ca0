"""Fairness: group and intersectional metrics with intervals, impact ratios, scoring rates, a heat map, mitigation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from scrutiny.app.text import literal
from scrutiny.audit.fairness.details import GroupComparisonEntry, ImpactRatioEntry, ScoringRateEntry
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
    st.caption("Differences are unprivileged − privileged; disparate impact is unprivileged / privileged "
               f"(AIF360's conventions); {details.confidence:.0%} bootstrap intervals.")
    model = metrics_table(details.model)
    attributes = list(dict.fromkeys(model["attribute"]))
    chosen = st.multiselect("Attributes and intersections", attributes, default=attributes, key="attributes")
    st.subheader("Model fairness on the test split")
    st.dataframe(model[model["attribute"].isin(chosen)], hide_index=True, width="stretch", key="model_metrics")
    for c in details.model:
        for warning in c.warnings:
            st.warning(f"{literal(c.attribute)}: {literal(warning)}")
    labels = "training labels" if details.settings.get("data_bias_split", "train") == "train" else "labels of the audited rows"
    st.subheader(f"Data-set bias ({labels})")
    st.dataframe(metrics_table(details.data_bias), hide_index=True, width="stretch", key="data_bias")
    st.subheader("Impact ratios (NYC LL144, four-fifths rule)")
    st.dataframe(impact_table(details.impact_ratios), hide_index=True, width="stretch", key="impact")
    if details.unknown_rows:
        st.caption("Rows of unknown category, left out of the rates and ratios (LL144 has them counted): "
                   + "; ".join(f"{literal(name)} {n:,}" for name, n in details.unknown_rows.items()))
    if details.scoring_rates is not None and details.median_score is not None:
        side = "above" if details.settings.get("higher_is_favourable", True) else "below"
        st.subheader("Scoring rates (NYC LL144)")
        st.caption(f"Score: {literal(details.settings.get('score') or 'P(favourable)')}. A category's scoring rate is the "
                   f"share of its rows scored {side} the median score of the whole test split "
                   f"({details.median_score:.4g}), the favourable side; a score equal to the median does not count.")
        st.dataframe(scoring_table(details.scoring_rates), hide_index=True, width="stretch", key="scoring")
    grid = intersection_grid(details.impact_ratios)
    if grid is not None:
        st.subheader("Selection rate over an intersection")
        st.pyplot(_heatmap(grid), clear_figure=True)
    if details.mitigation:
        st.subheader("Mitigation: before and after")
        for i, m in enumerate(details.mitigation):
            st.markdown(f"**{literal(m.method)}** for {literal(m.attribute)}, measured on {literal(m.rows)} "
                        f"(n={m.n:d})")
            table = pd.DataFrame([{"metric": k, "before": m.before[k].value, "after": m.after[k].value,
                                   "change": _change(m.before[k].value, m.after[k].value)} for k in m.before])
            st.dataframe(table, hide_index=True, width="stretch", key=f"mitigation_{i}")


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
