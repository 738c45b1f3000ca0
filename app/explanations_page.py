"""Explanations: one sample's attributions by every method, global importance, agreement, quality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from scrutiny.app.runs import arrays, table
from scrutiny.app.text import literal
from scrutiny.audit.attributions.details import ARRAYS, EXPLAINED_ROWS, IMPORTANCE_FIGURE
from scrutiny.audit.performance.details import PREDICTIONS
from scrutiny.audit.plots import subplots


def samples(run) -> pd.DataFrame:
    """The explained rows with what a user filters on: prediction, label, correctness, groups."""
    details = run.details("attributions")
    classes = run.findings["subject"]["data"]["classes"]
    predictions = arrays(run, PREDICTIONS)
    rows = np.asarray(details.rows)
    frame = pd.DataFrame({
        "test row": rows,
        "prediction": [classes[i] for i in predictions["y_pred"][rows]],
        "label": [classes[i] for i in predictions["y_true"][rows]],
        "P(prediction)": predictions["proba"][rows, predictions["y_pred"][rows]],
    })
    frame["correct"] = frame["prediction"] == frame["label"]
    if run.has(EXPLAINED_ROWS):
        raw = table(run, EXPLAINED_ROWS)
        for attribute in group_columns(run, raw):
            frame[attribute] = raw[attribute].astype(str).to_numpy()
    return frame


def group_columns(run, raw: pd.DataFrame) -> list[str]:
    """The protected attributes the fairness family compared one by one, as columns of ``raw``."""
    fairness = run.details("fairness")
    names = [c.attributes[0] for c in (fairness.model if fairness else []) if len(c.attributes) == 1]
    return [n for n in names if n in raw.columns]


def row_attributions(run, position: int) -> pd.DataFrame:
    """Per-feature attributions of one explained row, one column per method."""
    details = run.details("attributions")
    stored = arrays(run, ARRAYS)
    frame = pd.DataFrame({method: stored[method][position] for method in details.methods},
                         index=pd.Index(details.features, name="feature"))
    if run.has(EXPLAINED_ROWS):
        raw = table(run, EXPLAINED_ROWS)
        frame.insert(0, "value", [str(raw.iloc[position][f]) for f in details.features])
    return frame


def show(run) -> None:
    st.header("Explanations")
    details = run.details("attributions")
    if details is None:
        st.info(f"This run has no attributions. {run.absent('attributions')}")
        return
    for reason in (details.not_assessed or {}).values():
        st.info(f"Not assessed: {literal(reason)}.")
    frame = samples(run)
    filters = st.columns(3)
    predicted = filters[0].selectbox("Prediction", ["any", *sorted(frame["prediction"].unique())], key="filter_prediction")
    correctness = filters[1].selectbox("Correctness", ["any", "correct", "wrong"], key="filter_correct")
    group_names = [c for c in frame.columns if c not in ("test row", "prediction", "label", "P(prediction)", "correct")]
    # an option is None (any group) or a pair (attribute, value), shown as "attribute = value"
    group = filters[2].selectbox("Group", [None, *[(g, v) for g in group_names for v in sorted(frame[g].unique())]],
                                 format_func=lambda o: "any" if o is None else f"{o[0]} = {o[1]}", key="filter_group")
    keep = np.ones(len(frame), dtype=bool)
    if predicted != "any":
        keep &= frame["prediction"] == predicted
    if correctness != "any":
        keep &= frame["correct"] == (correctness == "correct")
    if group is not None:
        name, value = group
        keep &= frame[name] == value
    matching = frame[keep]
    st.caption(f"{len(matching)} of {len(frame)} explained test rows match")
    if not len(matching):
        st.warning("No explained row matches these filters.")
    else:
        row = st.selectbox("Sample (test row)", matching["test row"].tolist(), key="sample")
        position = int(np.flatnonzero(frame["test row"].to_numpy() == row)[0])
        chosen = frame.iloc[position]
        cells = st.columns(3)
        cells[0].metric("prediction", literal(chosen["prediction"]))
        cells[1].metric("label", literal(chosen["label"]))
        cells[2].metric("P(prediction)", f"{chosen['P(prediction)']:.3f}")
        explained = run.findings["subject"]["data"]["classes"][details.target[position]]
        st.caption(f"Attributions explain the {literal(details.output.replace('_', '-'))} of the explained class "
                   f"{literal(explained)}.")
        if run.findings["subject"]["data"]["task"] == "image":
            st.pyplot(_heatmaps(run, position), clear_figure=True)
        else:
            values = row_attributions(run, position)
            st.pyplot(_bars(values), clear_figure=True)
            st.dataframe(values, width="stretch", key="row_attributions")
    st.subheader("Global importance")
    for method, entry in details.importance.items():
        importance = pd.DataFrame({"feature": details.features, "mean |attribution|": entry.mean,
                                   "low": entry.low, "high": entry.high}).sort_values("mean |attribution|",
                                                                                      ascending=False)
        with st.expander(literal(method), expanded=method == next(iter(details.importance))):
            st.dataframe(importance, hide_index=True, width="stretch", key=f"importance_{method}")
    if run.has(IMPORTANCE_FIGURE):
        st.image(str(run.file(IMPORTANCE_FIGURE)), caption="mean |attribution| with 95 % bootstrap intervals")
    if details.agreement:
        st.subheader("Agreement between methods")
        methods = list(details.methods)
        matrix = pd.DataFrame(np.eye(len(methods)), index=methods, columns=methods)
        for a in details.agreement:
            first, second = a.methods
            matrix.loc[first, second] = matrix.loc[second, first] = a.spearman_median
        st.dataframe(matrix.style.background_gradient(cmap="RdBu", vmin=-1, vmax=1).format("{:.3f}"),
                     width="stretch", key="agreement")
        st.caption("median per-row Spearman correlation of the feature rankings")
    if details.quality:
        st.subheader("Explanation quality")
        quality = pd.DataFrame([{"method": m, "deletion ratio": q.deletion_ratio, "deletion AUC": q.deletion_auc,
                                 "random deletion AUC": q.random_deletion_auc, "infidelity": q.infidelity_median,
                                 "sensitivity": q.sensitivity_median, "randomisation rho": q.randomisation_spearman}
                                for m, q in details.quality.items()])
        st.dataframe(quality, hide_index=True, width="stretch", key="quality")
        st.caption("deletion ratio < 1: the attribution order beats random orders; low randomisation rho: the "
                   "explanation depends on the trained weights (Adebayo et al., 2018)")


def _bars(values: pd.DataFrame):
    methods = [c for c in values.columns if c != "value"]
    fig, axes = subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), squeeze=False)
    order = values[methods[0]].abs().sort_values().index[-10:]
    for ax, method in zip(axes[0], methods):
        shown = values.loc[order, method]
        ax.barh(list(shown.index), shown.to_numpy(), color=["#b2182b" if v < 0 else "#2166ac" for v in shown])
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(method, fontsize=10)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def _heatmaps(run, position: int):
    details = run.details("attributions")
    stored = arrays(run, ARRAYS)
    image = stored["inputs"][position][0]
    methods = list(details.methods)
    fig, axes = subplots(1, len(methods) + 1, figsize=(2.4 * (len(methods) + 1), 2.6), squeeze=False)
    axes[0][0].imshow(image, cmap="gray_r")
    axes[0][0].set_title("input", fontsize=9)
    for ax, method in zip(axes[0][1:], methods):
        values = stored[f"{method}__pixels"][position][0]
        bound = float(np.abs(values).max()) or 1.0
        ax.imshow(image, cmap="gray_r", alpha=0.35)
        ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, alpha=0.75)
        ax.set_title(method, fontsize=9)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
