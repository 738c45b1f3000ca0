"""Explanations: explore the explained rows, one decision's waterfall per method, the beeswarm and
dependence views, global importance, agreement and quality.

The view lives in the URL (:mod:`scrutiny.app.state`): ``method`` (the method the top-k filter,
the sort and the dependence view read), ``topk`` (an attribute, or ``prohibited``: the rows where
it is among the method's top-4 by |attribution|, or whose adverse-action reasons include a
prohibited basis), ``sort`` (``row``, ``p_low``, ``p_high``, ``error``, ``protected``,
``disagreement``), ``row`` (the test row shown) and ``feature`` (the dependence view's). A value
the run does not have is ignored with a one-line warning.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from scrutiny.app import state
from scrutiny.app.explanation_views import (
    PAGE_ROWS,
    TOP_K,
    UNITS,
    bars_figure,
    beeswarm_figure,
    beeswarm_sample,
    dependence_figure,
    heatmaps_figure,
    one_minus_spearman,
    sign_conflicts,
    time_feature_figure,
    time_profile,
    top_k,
    waterfall,
    waterfall_figure,
)
from scrutiny.app.runs import arrays, table
from scrutiny.app.text import literal
from scrutiny.audit.attributions.adverse_action import value_text
from scrutiny.audit.attributions.details import (
    ARRAYS,
    BASE_SUFFIX,
    EXPLAINED_ROWS,
    FX_SUFFIX,
    IMPORTANCE_FIGURE,
    TERMS_SUFFIX,
    TIME_FEATURE_SUFFIX,
)
from scrutiny.audit.attributions.registry import METHOD_INFO, RELIANCE_METHODS
from scrutiny.audit.performance.details import PREDICTIONS

PROHIBITED = "prohibited"
SORTS = {
    "row": "test row",
    "p_low": "P(prediction), lowest first",
    "p_high": "P(prediction), highest first",
    "error": "errors first (most confident first)",
    "protected": f"protected attribute in the top {TOP_K}",
    "disagreement": "method disagreement",
}
BASE_COLUMNS = ("test row", "prediction", "label", "P(prediction)", "correct")


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


def per_method(run) -> dict[str, np.ndarray]:
    """Each method's stored per-feature attributions, (N, F), in the details' method order."""
    details = run.details("attributions")
    stored = arrays(run, ARRAYS)
    return {m: np.asarray(stored[m], dtype=np.float64) for m in details.methods}


def preferred_method(methods: list[str]) -> str:
    """The method the reliance findings read: the first additive one of the registry's preference."""
    return next((m for m in RELIANCE_METHODS if m in methods), methods[0])


def protected_features(run) -> list[str]:
    """The protected attributes among the features: those the fairness family compared, the
    prohibited bases the model reads, the subjects of the protected-reliance findings."""
    details = run.details("attributions")
    names = []
    if run.has(EXPLAINED_ROWS):
        names += group_columns(run, table(run, EXPLAINED_ROWS))
    if details.adverse_action is not None:
        names += details.adverse_action.prohibited_inputs
    names += [f["subject"] for f in run.findings["findings"] if f["check"] == "attributions.protected_reliance"]
    return [f for f in dict.fromkeys(names) if f in details.features]


def prohibited_positions(run) -> np.ndarray | None:
    """Positions (rows of the attribution arrays) whose adverse-action reasons include a
    prohibited basis; None when the run has no such notices or no prohibited basis is an input."""
    summary = run.details("attributions").adverse_action
    if summary is None or not summary.prohibited_inputs or not run.has(summary.file):
        return None
    notices = arrays(run, summary.file)
    return np.asarray(notices["position"])[np.asarray(notices["cannot_issue"], dtype=bool)]


def row_attributions(run, position: int) -> pd.DataFrame:
    """Per-feature attributions of one explained row, one column per method, and whether two
    methods give the feature opposite signs."""
    details = run.details("attributions")
    values = per_method(run)
    stored = arrays(run, ARRAYS)
    frame = pd.DataFrame({method: stored[method][position] for method in details.methods},
                         index=pd.Index(details.features, name="feature"))
    if run.has(EXPLAINED_ROWS):
        raw = table(run, EXPLAINED_ROWS)
        frame.insert(0, "value", [str(raw.iloc[position][f]) for f in details.features])
    if len(details.methods) > 1:
        frame["opposite signs"] = sign_conflicts({m: v[position:position + 1] for m, v in values.items()})[0][0]
    return frame


def units(run) -> dict[str, str]:
    """What each method's attributions are in (its details' ``output``)."""
    return {m: UNITS.get(e.output, e.output.replace("_", "-")) for m, e in run.details("attributions").methods.items()}


def _url_choice(name: str, key: str, options: list, *, what: str, encode=str) -> None:
    """Preselect the widget ``key`` from the URL's ``name`` on a session's first run; a value the
    run does not have is ignored, with one warning line."""
    if key in st.session_state:
        return
    wanted = state.get(name)
    if wanted is None:
        return
    match = [o for o in options if encode(o) == wanted]
    if match:
        st.session_state[key] = match[0]
    else:
        st.warning(f"Ignored {name}={literal(wanted)} from the URL: this run has no such {what}.")


def show(run) -> None:
    st.header("Explanations")
    details = run.details("attributions")
    if details is None:
        st.info(f"This run has no attributions. {run.absent('attributions')}")
        return
    for reason in (details.not_assessed or {}).values():
        st.info(f"Not assessed: {literal(reason)}.")
    if not run.has(PREDICTIONS):  # the rows are listed, filtered and sorted by their predictions
        st.info("This run did not run the performance family, so it holds no predictions: the explained rows "
                "cannot be listed with their predictions and labels here. Global importance and agreement follow; "
                "audit with the performance family (the default) to explore single decisions.")
        _global(run)
        return
    methods = list(details.methods)
    values = per_method(run)
    frame = samples(run)
    image = run.findings["subject"]["data"]["task"] == "image"

    # ---------------------------------------------------------------- choosing rows
    _url_choice("method", "method", methods, what="attribution method")
    if "method" not in st.session_state:
        st.session_state["method"] = preferred_method(methods)
    method = st.selectbox("Method (top-k, sorting, dependence)", methods, key="method")
    state.put("method", method)
    filters = st.columns(3)
    predicted = filters[0].selectbox("Prediction", ["any", *sorted(frame["prediction"].unique())], key="filter_prediction")
    correctness = filters[1].selectbox("Correctness", ["any", "correct", "wrong"], key="filter_correct")
    group_names = [c for c in frame.columns if c not in BASE_COLUMNS]
    # an option is None (any group) or a pair (attribute, value), shown as "attribute = value"
    group = filters[2].selectbox("Group", [None, *[(g, v) for g in group_names for v in sorted(frame[g].unique())]],
                                 format_func=lambda o: "any" if o is None else f"{o[0]} = {o[1]}", key="filter_group")
    prohibited = prohibited_positions(run)
    topk_options: list[str | None] = [None, *([PROHIBITED] if prohibited is not None else []), *details.features]
    protected = protected_features(run)
    sorts = [s for s in SORTS if (s != "protected" or protected) and (s != "disagreement" or len(methods) > 1)]
    _url_choice("topk", "topk", topk_options[1:], what=f"feature (or prohibited-basis notices) for the top-{TOP_K} filter")
    _url_choice("sort", "sort", sorts, what="sort order")
    searches = st.columns(2)
    wanted_top = searches[0].selectbox(
        f"Among the top {TOP_K} reasons", topk_options, key="topk",
        format_func=lambda o: "any" if o is None else (
            f"a prohibited basis (adverse-action reasons, {details.adverse_action.method})" if o == PROHIBITED
            and details.adverse_action is not None else o))
    sort = str(searches[1].selectbox("Sort rows by", sorts, format_func=lambda s: SORTS[s], key="sort"))
    state.put("topk", wanted_top)
    state.put("sort", None if sort == "row" else sort)

    chosen_top = top_k(values[method])
    names = np.asarray(details.features, dtype=object)
    frame[f"top {TOP_K} ({method})"] = [", ".join(names[j] for j in row if j >= 0) for row in chosen_top]
    if protected:
        is_protected = np.isin(chosen_top, [details.features.index(p) for p in protected])
        frame[f"protected in top {TOP_K}"] = is_protected.sum(axis=1)
    if len(methods) > 1:
        frame["sign conflicts"] = sign_conflicts(values)[1]
        frame["1 - Spearman"] = one_minus_spearman(values)

    keep = np.ones(len(frame), dtype=bool)
    if predicted != "any":
        keep &= frame["prediction"] == predicted
    if correctness != "any":
        keep &= frame["correct"] == (correctness == "correct")
    if group is not None:
        name, value = group
        keep &= frame[name] == value
    if wanted_top == PROHIBITED and prohibited is not None:
        keep &= np.isin(np.arange(len(frame)), prohibited)
    elif wanted_top is not None:
        keep &= np.any(chosen_top == details.features.index(wanted_top), axis=1)
    matching = frame[keep].iloc[_order(frame[keep], sort)]
    st.caption(f"{len(matching)} of {len(frame)} explained test rows match")
    if not len(matching):
        st.warning("No explained row matches these filters.")
    else:
        shown = matching.iloc[:PAGE_ROWS]
        st.dataframe(shown, hide_index=True, width="stretch", key="matching_rows")
        if len(matching) > len(shown):
            st.caption(f"showing the first {len(shown)} of the {len(matching)} matching rows; narrow the filters or "
                       f"change the order to see others")
        options = shown["test row"].tolist()
        _url_choice("row", "sample", options, what="test row among the rows shown")
        row = st.selectbox("Sample (test row)", options, key="sample")
        state.put("row", str(row))
        _row_view(run, int(np.flatnonzero(frame["test row"].to_numpy() == row)[0]), frame, values, image)

    if not image and run.has(EXPLAINED_ROWS):
        _summary(run, method, values)
    _sequence(run, method)
    _global(run)


def _order(frame: pd.DataFrame, sort: str) -> np.ndarray:
    """Positions of ``frame``'s rows in the chosen order (ties: by test row)."""
    p, row = frame["P(prediction)"].to_numpy(dtype=float), frame["test row"].to_numpy()
    if sort == "p_low":
        keys = [row, p]
    elif sort == "p_high":
        keys = [row, -p]
    elif sort == "error":
        keys = [row, -p, frame["correct"].to_numpy(dtype=int)]
    elif sort == "protected":
        keys = [row, -frame[f"protected in top {TOP_K}"].to_numpy()]
    elif sort == "disagreement":
        keys = [row, -np.nan_to_num(frame["1 - Spearman"].to_numpy(dtype=float), nan=-np.inf),
                -frame["sign conflicts"].to_numpy()]
    else:
        keys = [row]
    return np.lexsort(keys)


def _row_view(run, position: int, frame: pd.DataFrame, values: dict[str, np.ndarray], image: bool) -> None:
    details = run.details("attributions")
    chosen = frame.iloc[position]
    cells = st.columns(3)
    cells[0].metric("prediction", literal(chosen["prediction"]))
    cells[1].metric("label", literal(chosen["label"]))
    cells[2].metric("P(prediction)", f"{chosen['P(prediction)']:.3f}")
    explained = run.findings["subject"]["data"]["classes"][details.target[position]]
    unit = units(run)
    said = "; ".join(f"{literal(m)}: the {unit[m]} of {literal(explained)}" for m in details.methods)
    st.caption(f"Attributions explain, per method, {said}.")
    stored = arrays(run, ARRAYS)
    if image:
        pixels = {m: stored[f"{m}__pixels"][position][0] for m in details.methods}
        st.pyplot(heatmaps_figure(stored["inputs"][position][0], pixels, unit), clear_figure=True)
        st.caption("red pushes the explained output up, blue down; one symmetric colour scale for the row's heat maps")
        return
    attributions = row_attributions(run, position)
    conflicts = [f for f in attributions.index if len(details.methods) > 1 and attributions.loc[f, "opposite signs"]]
    in_top = {details.features[j] for m in details.methods for j in top_k(values[m][position:position + 1])[0] if j >= 0}
    flagged = [f for f in conflicts if f in in_top]
    if flagged:
        st.warning(f"The methods give opposite signs to {len(flagged)} of the features in their top {TOP_K}: "
                   f"{', '.join(literal(f) for f in flagged)}.")
    columns = st.columns(len(details.methods))
    for cell, method in zip(columns, _first(details.methods, st.session_state.get("method"))):
        with cell:
            _waterfall(run, method, position, attributions, stored, unit[method], explained)
    st.dataframe(attributions, width="stretch", key="row_attributions")


def _first(methods, method: str | None) -> list[str]:
    if method is None or method not in methods:
        return list(methods)
    return [method, *[m for m in methods if m != method]]


def _waterfall(run, method: str, position: int, attributions: pd.DataFrame, stored, unit: str, explained) -> None:
    """One method's waterfall for the row, or its bars and why there is no waterfall."""
    has_ends = method + FX_SUFFIX in stored and method + BASE_SUFFIX in stored
    values = attributions[method].astype(float)
    if run.has(EXPLAINED_ROWS):
        raw = table(run, EXPLAINED_ROWS).iloc[position]
        labels = [f"{f} = {value_text(raw[f])}" for f in attributions.index]
    else:
        labels = list(attributions.index)
    if not has_ends:
        st.pyplot(bars_figure(pd.Series(values.to_numpy(), index=labels), title=method, units=unit), clear_figure=True)
        st.caption(f"{literal(method)}: no base value: this run was written before f(x) and the base values were "
                   f"stored, so the bars start from 0.")
        return
    fx, base = float(stored[method + FX_SUFFIX][position]), float(stored[method + BASE_SUFFIX][position])
    if method + TERMS_SUFFIX in stored:  # LIME: its local linear model at x, which f(x) it approximates
        terms = np.asarray(stored[method + TERMS_SUFFIX][position], dtype=np.float64)
        local = base + float(terms.sum())
        steps, marked = waterfall(terms, labels, base, local, end="LIME's model at x"), fx
        caption = (f"{literal(method)}: its local linear model, intercept {base:.4g} + each feature's weight times its "
                   f"value as the model reads it (scaled; 1 for the row's own category) = {local:.4g} at x, "
                   f"against f(x) {fx:.4g} ({unit}): the model misses it by {local - fx:+.2g}. The weights "
                   f"are the attributions listed; the terms here are what they add at this row.")
    elif not np.isfinite(base):
        st.pyplot(bars_figure(pd.Series(values.to_numpy(), index=labels), title=method, units=unit), clear_figure=True)
        why = (f"its weights are the slopes of a local linear model of the {unit}, which do not add up to f(x)"
               if method == "lime" else "its values do not add up to f(x) minus a base value")
        st.caption(f"{literal(method)}: f(x) = {fx:.4g} ({unit} of {literal(explained)}); no waterfall: {why}.")
        return
    else:
        steps, marked = waterfall(values.to_numpy(), labels, base, fx), None
        total = float(values.sum())
        gap = total - (fx - base)
        additivity = METHOD_INFO[method].additivity if method in METHOD_INFO else "none"
        how = {"exact": "exactly (Shapley values)", "checked": "up to the completeness gap",
               "expected": "in expectation over baseline draws"}.get(additivity, "")
        caption = (f"{literal(method)}: base {base:.4g} + attributions {total:+.4g} vs f(x) {fx:.4g} ({unit}); the "
                   f"attributions add up to f(x) - base {how}: gap {gap:+.2g}.")
    st.pyplot(waterfall_figure(steps, title=method, units=f"{unit} of {explained}", fx=marked), clear_figure=True)
    st.caption(caption)
    table_ = steps[["step", "contribution", "cumulative"]].rename(
        columns={"contribution": method, "cumulative": "running total"})
    st.dataframe(table_, hide_index=True, width="stretch", key=f"waterfall_{method}")


def _summary(run, method: str, values: dict[str, np.ndarray]) -> None:
    """The beeswarm over the explained rows and the dependence view of one feature."""
    details = run.details("attributions")
    raw = table(run, EXPLAINED_ROWS)
    st.subheader("Summary over the explained rows")
    sample = beeswarm_sample(len(details.rows))
    unit = units(run)
    classes = run.findings["subject"]["data"]["classes"]
    if len(classes) == 2:  # each row explains its own class; the other's log-odds (probability) mirror it
        sign = np.where(np.asarray(details.target) == 1, 1.0, -1.0)[:, None]
        values = {m: v * sign for m, v in values.items()}
        toward = f"toward {literal(classes[1])} (rows explaining {literal(classes[0])} mirrored)"
    else:
        toward = "toward each row's explained class"
    sampled = {m: v[sample] for m, v in values.items()}
    st.pyplot(beeswarm_figure(sampled, raw.iloc[sample].reset_index(drop=True), details.features, unit),
              clear_figure=True)
    st.caption(f"one dot per explained row ({len(sample)} of {len(details.rows)}"
               f"{', a seeded sample' if len(sample) < len(details.rows) else ''}), at its attribution, coloured by "
               f"the feature's value; attributions {toward}")
    order = np.argsort(-np.abs(values[method]).mean(axis=0), kind="stable")
    features = [details.features[j] for j in order]
    _url_choice("feature", "dependence", features, what="feature")
    feature = st.selectbox("Dependence of", features, key="dependence")
    state.put("feature", feature)
    j = details.features.index(feature)
    st.pyplot(dependence_figure(raw[feature].iloc[sample].reset_index(drop=True),
                                {m: v[:, j] for m, v in sampled.items()}, unit), clear_figure=True)
    st.caption(f"the value of {literal(feature)} against its attribution {toward}, per method")


def _sequence(run, method: str) -> None:
    """A sequence model's attributions per time step and feature, where the run stored them: the
    chosen method's heat map (the first method's when it has none) beside every method's time
    profile, and the first-time-step check."""
    details = run.details("attributions")
    sequence = details.sequence
    stored = arrays(run, ARRAYS)
    shown = [m for m in sequence.time_share if m + TIME_FEATURE_SUFFIX in stored] if sequence is not None else []
    if not shown:
        return
    chosen = method if method in shown else shown[0]
    st.subheader("Time steps and features")
    st.pyplot(time_feature_figure(stored[chosen + TIME_FEATURE_SUFFIX], sequence.time_steps, sequence.features,
                                  method=chosen, unit=units(run)[chosen], time_share=sequence.time_share),
              clear_figure=True)
    st.caption(f"the model reads each input row by row: time step t is row t, its features the row's values; left: "
               f"{literal(chosen)}'s mean |attribution| over {sequence.n[chosen]} explained rows, right: each time "
               f"step's share of a row's total |attribution|, mean over the rows")
    st.dataframe(time_profile(sequence.time_share, sequence.time_steps), hide_index=True, width="stretch",
                 key="time_profile")
    if sequence.first_step:
        checks = pd.DataFrame([{"method": m, "baseline": e.baseline, "rows": e.n,
                                "first step's share (audit's baseline)": e.audit_share,
                                "first step's share (shuffled time order)": e.shuffled_share,
                                "difference": e.difference} for m, e in sequence.first_step.items()])
        st.dataframe(checks, hide_index=True, width="stretch", key="first_step")
        st.caption("the rows explained again from a baseline holding each row's own time steps in a shuffled order: "
                   "a first-step share the audit's baseline creates and the shuffled one does not is an artefact of "
                   "the baseline (captum#594)")


def _global(run) -> None:
    details = run.details("attributions")
    st.subheader("Global importance")
    for method, entry in details.importance.items():
        importance = pd.DataFrame({"feature": details.features, "mean |attribution|": entry.mean,
                                   "low": entry.low, "high": entry.high}).sort_values("mean |attribution|",
                                                                                      ascending=False)
        with st.expander(literal(method), expanded=method == next(iter(details.importance))):
            st.dataframe(importance, hide_index=True, width="stretch", key=f"importance_{method}")
    if run.has(IMPORTANCE_FIGURE):
        st.image(str(run.file(IMPORTANCE_FIGURE)), caption="mean |attribution| with 95 % bootstrap intervals", width=760)
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
