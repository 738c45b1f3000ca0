"""Robustness: robust-accuracy curves, weak-evaluation warnings, adversarial examples by attack and
ε, certified robustness.

The URL holds the view: ``eps=0.25`` highlights that radius on the curve and in the tables and
picks the examples shown at it, ``radius=0.5`` opens the certified section (first on the page) at
that L2 radius, ``attack=pgd`` picks the attack whose examples are shown. A value the run does not
have is dropped from the URL with a one-line warning.
"""

from __future__ import annotations

from collections.abc import Callable

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from scrutiny.app import state
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
from scrutiny.modality import modality

__all__ = ["curve_table", "contributions_table", "bounds_table", "curve_chart", "examples_at", "examples_table",
           "changes_table", "perturbation", "match_value", "show"]

HIGHLIGHT = "background-color: #fde2b8"  # the chosen eps or radius, in every table
RULE_COLOUR = "#d9480f"                   # and on the curve


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


def match_value(raw: str, options: list[float]) -> float | None:
    """The option ``raw`` (a URL's text) names: equal as printed (``%g``) or as a number; else None."""
    try:
        wanted = float(raw)
    except ValueError:
        return None
    if not np.isfinite(wanted):
        return None
    return next((o for o in options if f"{o:g}" == f"{wanted:g}" or np.isclose(o, wanted, rtol=1e-9, atol=0)), None)


def curve_chart(details: RobustnessDetails, eps: float, unit: str) -> alt.LayerChart:
    """Robust accuracy against ε, one line per attack (the worst case bold), and a vertical line
    at ``eps`` (its value inline in the chart's spec)."""
    order = [*details.attacks, "worst case"]
    data = pd.DataFrame({"attack": [p.attack for p in details.curve], "eps": [p.eps for p in details.curve],
                         "robust accuracy": [p.robust_accuracy for p in details.curve]})
    x_title = f"eps ({'L∞' if details.norm == 'linf' else 'L2'}, {unit})"
    lines = alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("eps:Q", title=x_title),
        y=alt.Y("robust accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        color=alt.Color("attack:N", sort=order, scale=alt.Scale(domain=order)),
        strokeWidth=alt.condition(alt.datum.attack == "worst case", alt.value(3.5), alt.value(1.5)),
        tooltip=["attack", alt.Tooltip("eps:Q", format="g"), alt.Tooltip("robust accuracy:Q", format=".1%")],
    )
    chosen = alt.Data(values=[{"eps": float(eps), "label": f"eps={eps:g}"}])
    rule = alt.Chart(chosen).mark_rule(color=RULE_COLOUR, strokeDash=[5, 3], strokeWidth=2).encode(x="eps:Q")
    label = alt.Chart(chosen).mark_text(color=RULE_COLOUR, align="left", dx=4, dy=-6, y=0).encode(
        x="eps:Q", text="label:N")
    return alt.LayerChart(layer=[lines, rule, label], height=320)


def examples_at(details: RobustnessDetails, attack: str, eps: float) -> list[int]:
    """Indices (in ``details.examples`` and the stored ``examples_x``) of ``attack``'s examples at ``eps``."""
    return [i for i, e in enumerate(details.examples) if e.attack == attack and np.isclose(e.eps, eps, rtol=1e-9, atol=0)]


def perturbation(x: np.ndarray, x_adv: np.ndarray, norm: str) -> float:
    """The size of ``x_adv - x`` in ``norm`` (``linf`` or ``l2``), in the model's input units."""
    delta = np.asarray(x_adv, dtype=np.float64) - np.asarray(x, dtype=np.float64)
    return float(np.abs(delta).max() if norm == "linf" else np.sqrt((delta ** 2).sum()))


def examples_table(details: RobustnessDetails, indices: list[int], classes: list[str],
                   stored: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per example: the test row, its label, both predictions and the perturbation's size."""
    size = f"perturbation ({details.norm})"
    rows = []
    for i in indices:
        e = details.examples[i]
        rows.append({"test row": e.row, "true label": classes[e.label], "prediction before": classes[e.before],
                     "prediction after": classes[e.after],
                     size: perturbation(stored["examples_x"][i], stored["examples_x_adv"][i], details.norm)
                     if "examples_x" in stored else np.nan})
    return pd.DataFrame(rows, columns=["test row", "true label", "prediction before", "prediction after", size])


def changes_table(details: RobustnessDetails, indices: list[int]) -> pd.DataFrame:
    """Tables: one row per feature an example changed (in original units), examples in order."""
    return pd.DataFrame([{"test row": details.examples[i].row, "feature": feature, "before": before, "after": after}
                         for i in indices for feature, before, after in details.examples[i].changes],
                        columns=["test row", "feature", "before", "after"])


def _choice(key: str, param: str, options: list, default, describe: Callable[[object], str],
            match: Callable[[str, list], object | None]) -> None:
    """Start the widget ``key`` at the URL's ``param`` when the run has it, else at ``default``;
    a value it does not have is dropped from the URL with a one-line warning."""
    if key in st.session_state and st.session_state[key] in options:
        return
    raw = state.get(param)
    found = match(raw, options) if raw is not None else None
    if raw is not None and found is None:
        st.warning(f"{literal(f'{param}={raw}')} is not in this run; showing {literal(describe(default))}.")
        state.put(param, None)
    st.session_state[key] = default if found is None else found


def _remember(key: str, param: str, text: Callable[[object], str]) -> Callable[[], None]:
    """A widget's on_change: its choice, into the URL."""
    return lambda: state.put(param, text(st.session_state[key]))


def show(run) -> None:
    st.header("Robustness")
    details = run.details("robustness")
    if details is None:
        st.info(f"This run has no robustness results. {run.absent('robustness')}")
        return
    subject = run.findings["subject"]
    classes, task = subject["data"]["classes"], subject["data"]["task"]
    unit = modality(task).eps_unit
    cert = details.certification
    gated_eps = next((e for e in details.eps if np.isclose(e, details.gated_eps)), details.eps[0])
    _choice("robustness_eps", "eps", details.eps, gated_eps, lambda e: f"eps={e:g}", match_value)
    radius_asked = state.get("radius") is not None
    if cert is not None and cert.table:
        radii = [e.radius for e in cert.table]
        default_radius = next((r for r in radii if np.isclose(r, cert.gated_radius)), radii[0])
        _choice("robustness_radius", "radius", radii, default_radius, lambda r: f"radius={r:g}", match_value)
    elif radius_asked:
        st.warning(f"{literal('radius=' + str(state.get('radius')))} is not in this run: it has no certified "
                   "robustness.")
        state.put("radius", None)
    radius_asked = cert is not None and state.get("radius") is not None  # a radius the run has

    clean = details.curve[0].clean_accuracy
    headline = st.columns(4)
    headline[0].metric("clean accuracy", f"{clean:.1%}")
    gated = next(p for p in details.curve if p.attack == "worst case" and np.isclose(p.eps, details.gated_eps))
    headline[1].metric(f"worst case at eps={details.gated_eps:g}", f"{gated.robust_accuracy:.1%}")
    searched = not np.isnan(details.never_flipped)  # NaN: the search (PGD) needs gradients the model lacks
    headline[2].metric("median smallest flipping eps", f"{details.median_min_eps:.3g}" if searched else "not assessed")
    headline[3].metric("rows never flipped", f"{details.never_flipped:.1%}" if searched else "not assessed")
    if radius_asked and cert is not None:  # the link asked for the certified bounds: they come first
        _certification(run, cert)
    _attacks(run, details, unit)
    _examples(run, details, classes, task, unit)
    if cert is not None and not radius_asked:
        _certification(run, cert)


def _attacks(run, details: RobustnessDetails, unit: str) -> None:
    st.subheader(f"Robust accuracy ({literal(details.norm)}, {details.n:d} test rows)")
    eps = st.select_slider("eps: highlighted on the curve and in the tables, and the examples shown below",
                           options=details.eps, key="robustness_eps", format_func=lambda e: f"{e:g}",
                           on_change=_remember("robustness_eps", "eps", lambda e: f"{e:g}"))
    worst = next(p for p in details.curve if p.attack == "worst case" and np.isclose(p.eps, eps))
    st.altair_chart(curve_chart(details, eps, unit), width="stretch")
    st.caption(f"At eps={eps:g} ({literal(unit)}): {worst.robust_accuracy:.1%} of {worst.n} test rows stay correctly "
               f"classified under the worst of the attacks (clean: {worst.clean_accuracy:.1%}).")
    table = curve_table(details)
    chosen_column = next(c for c in table.columns if np.isclose(c, eps))
    st.dataframe(table.style.apply(lambda column: [HIGHLIGHT if column.name == chosen_column else ""] * len(column),
                                   axis=0).format("{:.1%}").format_index("eps = {:g}", axis=1),
                 width="stretch", key="curve")
    if run.has(CURVE_FIGURE):  # the audit's own plot: the policy's radius and bounds drawn
        with st.expander("The audit's figure (as in the report: the policy's eps and bounds)"):
            st.image(str(run.file(CURVE_FIGURE)), width=640)
    for warning in details.warnings:
        st.warning(literal(warning))
    if not details.warnings:
        st.success("No sign that the attack evaluation is weak.")
    if details.contributions:
        st.subheader("What each attack added")
        st.caption("Per eps, the rows each attack broke of those it attacked: the rows the model gets right that the "
                   "attacks before it left standing (the chain's members in its order, then the other attacks). A "
                   "later member of the chain that still breaks many rows means the gradient attacks before it had "
                   "not converged (or their gradients are masked); the weak-evaluation checks flag it when it breaks "
                   "over 2 % of the rows it attacked.")
        contributions = contributions_table(details)
        at_eps = np.isclose(contributions["eps"].to_numpy(dtype=float), eps)
        st.dataframe(contributions.style.apply(lambda row: [HIGHLIGHT if at_eps[row.name] else ""] * len(row), axis=1),
                     hide_index=True, width="stretch", key="contributions",
                     height=min(35 * (len(contributions) + 1) + 3, 720))  # every row, up to about 20
    if run.has(MIN_EPS_FIGURE):
        st.image(str(run.file(MIN_EPS_FIGURE)), width=640)
    with st.expander("Constraints applied"):
        for rule in details.constraints:
            st.markdown(f"- {literal(rule)}")
    if details.ood:
        st.subheader("Would an autoencoder notice the attack?")
        st.dataframe(pd.DataFrame([entry.to_dict() for entry in details.ood]), hide_index=True, width="stretch",
                     key="ood")


def _flipped_any(details: RobustnessDetails, attack: str, eps: float) -> bool | None:
    """Whether ``attack`` flipped a row the model gets right at ``eps`` (None: the run cannot tell)."""
    entry = next((e for e in details.contributions if e.attack == attack and np.isclose(e.eps, eps)), None)
    if entry is not None and entry.chained:
        return entry.broken > 0
    point = next((p for p in details.curve if p.attack == attack and np.isclose(p.eps, eps)), None)
    return None if point is None else point.success_rate > 0


def _examples(run, details: RobustnessDetails, classes: list[str], task: str, unit: str) -> None:
    st.subheader("Adversarial examples")
    if not details.examples:
        st.info("No adversarial example: no attack flipped a row.")
        return
    eps = st.session_state.robustness_eps
    attacks = list(dict.fromkeys([*details.attacks, *(e.attack for e in details.examples)]))
    counts = {a: len(examples_at(details, a, eps)) for a in attacks}
    default = next((a for a in attacks if counts[a]), attacks[0])
    _choice("robustness_attack", "attack", attacks, default, lambda a: f"attack={a}",
            lambda raw, options: raw if raw in options else None)
    attack = st.selectbox("Attack", attacks, key="robustness_attack",
                          format_func=lambda a: f"{a} ({counts[a]} example{'s' * (counts[a] != 1)} at eps={eps:g})",
                          on_change=_remember("robustness_attack", "attack", str))
    chosen = examples_at(details, attack, eps)
    if not chosen:
        flipped = _flipped_any(details, attack, eps)
        why = ("it flipped none of the rows the model gets right there" if flipped is False else
               "the run kept none (runs written before examples were kept per attack and eps hold up to 16, of one "
               "attack)")
        st.info(f"No adversarial example of {literal(attack)} at eps={eps:g}: {why}.")
        return
    stored = arrays(run, ARRAYS)
    st.caption(f"The first {len(chosen)} test rows {literal(attack)} flipped at eps={eps:g} ({literal(unit)}) of the "
               f"rows the model gets right; the perturbation is measured in {literal(details.norm)} on the model's "
               "inputs.")
    st.dataframe(examples_table(details, chosen, classes, stored), hide_index=True, width="stretch",
                 key="examples", column_config={f"perturbation ({details.norm})": st.column_config.NumberColumn(
                     format="%.4g")})
    if task == "image":
        if "examples_x" in stored:
            st.pyplot(_image_examples(details, chosen, classes, stored, eps), clear_figure=True)
    else:
        st.dataframe(changes_table(details, chosen), hide_index=True, width="stretch", key="changes")


def _image_examples(details: RobustnessDetails, indices: list[int], classes: list[str], stored, eps: float):
    """Per example: the original, the adversarial image and the perturbation with a colour bar
    (±eps under L∞, so every example shares the scale; ±the largest change under L2)."""
    x, x_adv = stored["examples_x"][indices], stored["examples_x_adv"][indices]
    delta = x_adv.astype(np.float64) - x.astype(np.float64)
    bound = float(eps) if details.norm == "linf" else (float(np.abs(delta).max()) or 1.0)
    low, high = float(min(x.min(), x_adv.min(), 0.0)), float(max(x.max(), x_adv.max(), 1.0))
    fig, axes = subplots(len(indices), 3, figsize=(7.5, 2.5 * len(indices)), squeeze=False)
    for row, i in enumerate(indices):
        e = details.examples[i]
        for ax, image, title in ((axes[row][0], _picture(x[row]), f"row {e.row}: {classes[e.before]}"),
                                 (axes[row][1], _picture(x_adv[row]), f"adversarial: {classes[e.after]}")):
            if image.ndim == 3:
                ax.imshow(np.clip((image - low) / (high - low), 0, 1))
            else:
                ax.imshow(image, cmap="gray_r", vmin=low, vmax=high)
            ax.set_title(title, fontsize=8)
        ax = axes[row][2]
        im = ax.imshow(delta[row].mean(axis=0), cmap="RdBu_r", vmin=-bound, vmax=bound)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(f"perturbation ({details.norm} {perturbation(x[row], x_adv[row], details.norm):.3g})", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def _picture(x: np.ndarray) -> np.ndarray:
    """One image (channels, height, width) as imshow takes it: grey, or height × width × RGB."""
    return x[0] if x.shape[0] == 1 else np.moveaxis(x[:3], 0, -1)


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
    radius = None
    if c.table:
        radius = st.select_slider("L2 radius: highlighted in the table", options=[e.radius for e in c.table],
                                  key="robustness_radius", format_func=lambda r: f"{r:g}",
                                  on_change=_remember("robustness_radius", "radius", lambda r: f"{r:g}"))
        at = next(e for e in c.table if e.radius == radius)
        upper = f", at most {at.attacked_accuracy:.1%} under attack" if np.isfinite(at.attacked_accuracy) else ""
        st.caption(f"At L2 radius {radius:g}: {at.certified_accuracy:.1%} of {at.n} rows certified correct{upper}.")
    percent = st.column_config.NumberColumn(format="percent")
    table = bounds_table(c)
    chosen = [radius is not None and r == radius for r in table["L2 radius"]]
    st.dataframe(table.style.apply(lambda row: [HIGHLIGHT if chosen[row.name] else ""] * len(row), axis=1),
                 hide_index=True, width="stretch", key="certified",
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
