"""Robustness: robust-accuracy curves, weak-evaluation warnings, adversarial examples before and after."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from scrutiny.app.runs import arrays
from scrutiny.app.text import literal
from scrutiny.audit.plots import subplots
from scrutiny.audit.robustness.details import (
    ARRAYS,
    CERTIFIED_FIGURE,
    CURVE_FIGURE,
    MIN_EPS_FIGURE,
    CertificationDetails,
    RobustnessDetails,
)


def curve_table(details: RobustnessDetails) -> pd.DataFrame:
    """Robust accuracy per attack (rows) and ε (columns)."""
    frame = pd.DataFrame({"attack": [p.attack for p in details.curve], "eps": [p.eps for p in details.curve],
                          "robust_accuracy": [p.robust_accuracy for p in details.curve]})
    table = frame.pivot(index="attack", columns="eps", values="robust_accuracy")
    order = [*details.attacks, "worst case"]
    return table.loc[[a for a in order if a in table.index]]


def contributions_table(details: RobustnessDetails) -> pd.DataFrame:
    """What each attack of the ensemble added, one row per radius and attack (empty for runs
    written before the contributions were recorded)."""
    return pd.DataFrame([{"eps": e.eps, "attack": e.attack,
                          "ran on": "rows left standing" if e.chained else "every row",
                          "rows attacked": e.attacked, "rows broken": e.broken} for e in details.contributions],
                        columns=["eps", "attack", "ran on", "rows attacked", "rows broken"])


def bounds_table(certification: CertificationDetails) -> pd.DataFrame:
    """Both bounds of the smoothed classifier's robust accuracy per L2 radius, and the gap."""
    return pd.DataFrame([{"L2 radius": e.radius, "certified (lower bound)": e.certified_accuracy,
                          "under attack (upper bound)": e.attacked_accuracy,
                          "gap": e.attacked_accuracy - e.certified_accuracy,
                          "rows certified": e.certified, "rows": e.n} for e in certification.table],
                        columns=["L2 radius", "certified (lower bound)", "under attack (upper bound)", "gap",
                                 "rows certified", "rows"])


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
    if details.contributions:
        st.subheader("What each attack added")
        st.caption("Per eps, the rows each attack broke of those it attacked: the rows the model gets right that the "
                   "attacks before it left standing (the chain's members in its order, then the other attacks). A "
                   "later member of the chain that still breaks many rows means the gradient attacks before it had "
                   "not converged (or their gradients are masked); the weak-evaluation checks flag it when it breaks "
                   "over 2 % of the rows it attacked.")
        contributions = contributions_table(details)
        st.dataframe(contributions, hide_index=True, width="stretch", key="contributions",
                     height=min(35 * (len(contributions) + 1) + 3, 720))  # every row, up to about 20
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
    if details.certification is not None:
        _certification(run, details.certification)
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


def _certification(run, c: CertificationDetails) -> None:
    st.subheader(f"Certified robustness (randomized smoothing, sigma={c.sigma:g})")
    gated = next((e for e in c.table if e.radius == c.gated_radius), None)
    cells = st.columns(5)
    if gated is not None:
        cells[0].metric(f"certified at radius={c.gated_radius:g}", f"{gated.certified_accuracy:.1%}")
    cells[1].metric("smoothed accuracy", f"{c.smoothed_accuracy:.1%}")
    cells[2].metric("base accuracy (no noise)", f"{c.base_accuracy:.1%}")
    cells[3].metric("abstained", f"{c.abstention_rate:.1%}")
    cells[4].metric("median certified radius", _g(c.median_radius))
    if run.has(CERTIFIED_FIGURE):
        st.image(str(run.file(CERTIFIED_FIGURE)), width=640)
    percent = st.column_config.NumberColumn(format="percent")
    st.dataframe(bounds_table(c), hide_index=True, width="stretch", key="certified",
                 column_config={name: percent for name in ("certified (lower bound)", "under attack (upper bound)",
                                                           "gap")})
    rows = c.table[0].n if c.table else 0
    upper = (f"an attack on the same smoothed classifier ({literal(c.attack)}) gives the upper bound: its robust accuracy "
             "lies between the two." if c.attack else "no attack gave an upper bound: it needs gradients the model "
             "lacks.")
    st.caption(f"Gaussian noise sigma={c.sigma:g}; of {rows} attacked rows, each classified by n0={c.n0:,} noisy copies "
               f"and certified with n={c.n:,} more, alpha={c.alpha:g} (a row's certificate is wrong with probability "
               f"at most alpha). Radii in {literal(c.units)}. Certified accuracy is a lower bound on the smoothed classifier's "
               f"robust accuracy; {upper} Smoothed accuracy counts abstentions as errors; base accuracy is the model's "
               f"on the same rows without noise. Median certified radius over the rows certified correct: "
               f"{_g(c.median_radius_correct)}.")
    if c.noised:
        st.info("Only these columns get noise, and the certificate covers moves of these columns only: "
                + ", ".join(literal(name) for name in c.noised))
    if c.trained_sigma is None:
        st.warning("The model was not trained with noise (scrutiny train --noise-sigma): smoothing a model trained "
                   "without it certifies little.")
    elif np.isclose(c.trained_sigma, c.sigma, rtol=0, atol=1e-12):
        st.caption(f"The model was trained with Gaussian noise of sigma={c.trained_sigma:g}.")
    else:
        st.warning(f"The model was trained with Gaussian noise of sigma={c.trained_sigma:g}, not the "
                   f"sigma={c.sigma:g} certified here.")


def _g(value: float) -> str:
    """Three significant digits; n/a for NaN (no rows certified correct)."""
    return f"{value:.3g}" if np.isfinite(value) else "n/a"


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
