"""Robustness: robust-accuracy curves, weak-evaluation warnings, adversarial examples before and after."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from scrutiny.app.runs import arrays
from scrutiny.app.text import literal
from scrutiny.audit.plots import subplots
from scrutiny.audit.robustness.details import ARRAYS, CURVE_FIGURE, MIN_EPS_FIGURE, RobustnessDetails


def curve_table(details: RobustnessDetails) -> pd.DataFrame:
    """Robust accuracy per attack (rows) and ε (columns)."""
    frame = pd.DataFrame({"attack": [p.attack for p in details.curve], "eps": [p.eps for p in details.curve],
                          "robust_accuracy": [p.robust_accuracy for p in details.curve]})
    table = frame.pivot(index="attack", columns="eps", values="robust_accuracy")
    order = [*details.attacks, "worst case"]
    return table.loc[[a for a in order if a in table.index]]


def show(run) -> None:
    st.header("Robustness")
    details = run.details("robustness")
    if details is None:
        st.info(f"This run has no robustness results. {run.absent('robustness')}")
        return
    classes = run.findings["subject"]["data"]["classes"]
    clean = details.curve[0].clean_accuracy
    headline = st.columns(4)
    headline[0].metric("clean accuracy", f"{clean:.1%}")
    gated = next(p for p in details.curve if p.attack == "worst case" and np.isclose(p.eps, details.gated_eps))
    headline[1].metric(f"worst case at eps={details.gated_eps:g}", f"{gated.robust_accuracy:.1%}")
    searched = not np.isnan(details.never_flipped)  # NaN: the search (PGD) needs gradients the model lacks
    headline[2].metric("median smallest flipping eps", f"{details.median_min_eps:.3g}" if searched else "not assessed")
    headline[3].metric("rows never flipped", f"{details.never_flipped:.1%}" if searched else "not assessed")
    st.subheader(f"Robust accuracy ({literal(details.norm)}, {details.n:d} test rows)")
    table = curve_table(details)
    if run.has(CURVE_FIGURE):  # the audit's own plot: worst case in bold, each attack marked
        st.image(str(run.file(CURVE_FIGURE)), width=640)
    else:
        st.line_chart(table.T, x_label="eps", y_label="robust accuracy")
    st.dataframe(table, width="stretch", key="curve")
    if run.has(MIN_EPS_FIGURE):
        st.image(str(run.file(MIN_EPS_FIGURE)), width=640)
    for warning in details.warnings:
        st.warning(literal(warning))
    if not details.warnings:
        st.success("No sign that the attack evaluation is weak.")
    with st.expander("Constraints applied"):
        for rule in details.constraints:
            st.markdown(f"- {literal(rule)}")
    if details.ood:
        st.subheader("Would an autoencoder notice the attack?")
        st.dataframe(pd.DataFrame([entry.to_dict() for entry in details.ood]), hide_index=True, width="stretch",
                     key="ood")
    st.subheader("Adversarial examples")
    examples = details.examples
    if not examples:
        st.info("No adversarial example: no attack flipped a row.")
        return
    labels = [f"test row {e.row}: {e.attack} at eps={e.eps:g}, {classes[e.before]} → {classes[e.after]}"
              for e in examples]
    index = st.selectbox("Example", range(len(examples)), format_func=lambda i: labels[i], key="example")
    example = examples[index]
    cells = st.columns(3)
    cells[0].metric("true label", literal(classes[example.label]))
    cells[1].metric("prediction before", literal(classes[example.before]))
    cells[2].metric("prediction after", literal(classes[example.after]))
    if run.findings["subject"]["data"]["task"] == "image":
        stored = arrays(run, ARRAYS)
        st.pyplot(_side_by_side(stored["examples_x"][index], stored["examples_x_adv"][index]), clear_figure=True)
    else:
        st.dataframe(pd.DataFrame(example.changes, columns=["feature", "before", "after"]), hide_index=True,
                     width="stretch", key="changes")


def _side_by_side(x: np.ndarray, x_adv: np.ndarray):
    delta = x_adv - x
    bound = float(np.abs(delta).max()) or 1.0
    fig, axes = subplots(1, 3, figsize=(7.5, 2.8))
    for ax, image, title, kwargs in (
        (axes[0], x[0], "original", {"cmap": "gray_r", "vmin": 0, "vmax": 1}),
        (axes[1], x_adv[0], "adversarial", {"cmap": "gray_r", "vmin": 0, "vmax": 1}),
        (axes[2], delta[0], f"perturbation (max {bound:.3f})", {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}),
    ):
        ax.imshow(image, **kwargs)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
