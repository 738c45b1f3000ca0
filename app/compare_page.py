"""Compare: two runs side by side, findings matched by id, each difference told apart.

Run A starts at the run chosen in the sidebar, run B at the next run; ``a=`` and ``b=`` in the
URL keep a choice. A check's ``change`` is one of :data:`CHANGES`: its status changed (or it is
in one run only); else its value moved outside the other run's interval (B's value outside A's
95 % interval, or A's outside B's); else it drifted inside both intervals; else (values differ,
no interval to judge them by) a change without an interval; else unchanged.
"""

from __future__ import annotations

import math
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from scrutiny.app import state
from scrutiny.app.runs import open_run
from scrutiny.app.text import literal, number
from scrutiny.audit.run.findings import STATUS_WORDS

__all__ = ["CHANGES", "change_of", "comparison", "curves", "fairness_points", "show"]

STATUS_CHANGE = "status change"
OUTSIDE = "outside the intervals"
DRIFT = "drift inside the intervals"
NO_INTERVAL = "value change, no interval"
UNCHANGED = "unchanged"
CHANGES = (STATUS_CHANGE, OUTSIDE, DRIFT, NO_INTERVAL, UNCHANGED)
COLOURS = {STATUS_CHANGE: "#f8c9c4", OUTSIDE: "#fde2b8", DRIFT: "#fff6c7", NO_INTERVAL: "#e4e4ec", UNCHANGED: ""}
EXPLAINED = {
    STATUS_CHANGE: "the status differs, or the check is in one run only",
    OUTSIDE: "same status; one run's value lies outside the other's interval",
    DRIFT: "same status; each value lies inside the other run's interval",
    NO_INTERVAL: "same status; the values differ and neither run gives an interval to judge it",
}


def _value(finding: dict | None) -> float | None:
    value = finding["value"] if finding else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _inside(value: float, interval: dict | None) -> bool | None:
    """Whether ``value`` lies in ``interval`` (a finding's, bounds included); None without one."""
    if not interval or interval.get("low") is None or interval.get("high") is None:
        return None
    return interval["low"] <= value <= interval["high"]


def change_of(fa: dict | None, fb: dict | None) -> str:
    """How a check (its finding in run A and in run B, None where absent) changed: one of :data:`CHANGES`."""
    if (fa is None) != (fb is None) or (fa is not None and fb is not None and fa["status"] != fb["status"]):
        return STATUS_CHANGE
    va, vb = _value(fa), _value(fb)
    if va is None and vb is None or va == vb:
        return UNCHANGED
    if va is None or vb is None:
        return NO_INTERVAL
    inside = [_inside(vb, fa.get("interval") if fa else None), _inside(va, fb.get("interval") if fb else None)]
    judged = [i for i in inside if i is not None]
    if not judged:
        return NO_INTERVAL
    return DRIFT if all(judged) else OUTSIDE


def _interval_text(finding: dict | None) -> str:
    interval = finding.get("interval") if finding else None
    if not interval:
        return ""
    confidence = f" ({interval['confidence']:.0%})" if interval.get("confidence") else ""
    return f"[{interval['low']:.4g}, {interval['high']:.4g}]{confidence}"


def comparison(a, b) -> pd.DataFrame:
    """Every finding id of either run (A's order, then B's new ones): values, intervals, difference,
    statuses and the kind of change (``change``, and ``changed``: any other than unchanged)."""
    left = {f["id"]: f for f in a.findings["findings"]}
    right = {f["id"]: f for f in b.findings["findings"]}
    rows = []
    for key in list(dict.fromkeys([*left, *right])):
        fa, fb = left.get(key), right.get(key)
        va = fa["value"] if fa else None
        vb = fb["value"] if fb else None
        change = change_of(fa, fb)
        rows.append({"check": key, "change": change, f"{a.name}": va, f"{a.name} interval": _interval_text(fa),
                     f"{b.name}": vb, f"{b.name} interval": _interval_text(fb),
                     "difference": (vb - va) if va is not None and vb is not None else None,
                     f"status {a.name}": STATUS_WORDS[fa["status"]] if fa else "absent",
                     f"status {b.name}": STATUS_WORDS[fb["status"]] if fb else "absent",
                     "changed": change != UNCHANGED})
    return pd.DataFrame(rows)


def curves(runs: list) -> pd.DataFrame:
    """Robust accuracy per run, attack and ε, for the runs with robustness results."""
    rows = []
    for run in runs:
        details = run.details("robustness")
        for p in details.curve if details is not None else []:
            rows.append({"run": run.name, "attack": p.attack, "eps": p.eps, "robust accuracy": p.robust_accuracy,
                         "norm": details.norm})
    return pd.DataFrame(rows, columns=["run", "attack", "eps", "robust accuracy", "norm"])


def fairness_points(runs: list) -> pd.DataFrame:
    """Each run's model fairness metrics: value and interval per comparison and metric."""
    rows = []
    for run in runs:
        details = run.details("fairness")
        for c in details.model if details is not None else []:
            compared = c.compared or "the others"
            for metric, estimate in c.metrics.items():
                rows.append({"run": run.name, "comparison": f"{c.attribute}: {compared} vs {c.privileged}",
                             "metric": metric, "value": estimate.value, "low": estimate.low, "high": estimate.high})
    return pd.DataFrame(rows, columns=["run", "comparison", "metric", "value", "low", "high"])


def _start(key: str, param: str, names: list[str], default: str, *, follow: bool) -> None:
    """Set the widget ``key`` to the run the URL's ``param`` names; without one, to ``default``
    when ``follow`` or when the widget has no run yet. A name that is not a run is dropped from
    the URL with a one-line warning."""
    raw = state.get(param)
    if raw is not None and raw not in names:
        st.warning(f"{literal(f'{param}={raw}')} is not a run folder here; showing {literal(default)}.")
        state.put(param, None)
        raw = None
    if raw is not None:  # the URL's choice (a widget's on_change writes it there)
        st.session_state[key] = raw
    elif follow or st.session_state.get(key) not in names:
        st.session_state[key] = default


def show(root: Path, names: list[str]) -> None:
    st.header("Compare two runs")
    if len(names) < 2:
        st.info("Comparing needs two run folders.")
        return
    sidebar = st.session_state.get("run")
    _start("compare_a", "a", names, sidebar if sidebar in names else names[0], follow=True)  # A: the sidebar's run
    _start("compare_b", "b", names, next(n for n in names if n != st.session_state.compare_a), follow=False)
    cells = st.columns(2)
    first = cells[0].selectbox("Run A", names, key="compare_a",
                               on_change=lambda: state.put("a", st.session_state.compare_a))
    second = cells[1].selectbox("Run B", names, key="compare_b",
                                on_change=lambda: state.put("b", st.session_state.compare_b))
    if first == second:
        st.info(f"Run A and run B are the same run ({literal(first)}): there is nothing to compare. Choose another "
                "run for B.")
        return
    a, problem_a = open_run(root, first)
    b, problem_b = open_run(root, second)
    for problem in (problem_a, problem_b):
        if problem:
            st.error(literal(problem))
    if a is None or b is None:
        return
    for column, run in zip(cells, (a, b)):
        subject = run.findings["subject"]
        model = subject["model"]["architecture"] or subject["model"]["source"]
        column.caption(f"{literal(model)} on {literal(subject['data']['name'])}, "
                       f"{literal(run.manifest.get('finished', ''))}: verdict {run.findings['verdict']}")
    if a.findings["subject"]["data"]["sha256"] != b.findings["subject"]["data"]["sha256"]:
        st.warning("The two runs audited different data: their numbers are not directly comparable.")
    if a.findings["subject"]["model"]["weights_sha256"] == b.findings["subject"]["model"]["weights_sha256"]:
        st.caption("Both runs audited the same model weights.")
    frame = comparison(a, b)
    counts = frame["change"].value_counts()
    metrics = st.columns(len(CHANGES))
    for cell, kind in zip(metrics, CHANGES):
        cell.metric(kind, int(counts.get(kind, 0)), help=EXPLAINED.get(kind, "same status and value"))
    st.caption(f"{int(frame['changed'].sum())} of {len(frame)} checks differ (value or status): "
               + "; ".join(f"{kind}: {EXPLAINED[kind]}" for kind in CHANGES[:-1]) + ".")
    only = st.checkbox("Only differences", value=False, key="only_changed")
    shown = frame[frame["changed"]] if only else frame

    def colour(row):
        fill = COLOURS[row["change"]]
        return [f"background-color: {fill}" if fill else ""] * len(row)

    numbers = [c for c in shown.columns if pd.api.types.is_float_dtype(shown[c])]
    st.dataframe(shown.style.apply(colour, axis=1).format({c: number for c in numbers}, na_rep=""), hide_index=True,
                 width="stretch", key="comparison")
    _overlays(a, b)


def _overlays(a, b) -> None:
    """The two runs' robustness curves in one chart, and their fairness metrics in one plot."""
    lines = curves([a, b])
    st.subheader("Robust accuracy, both runs")
    if lines["run"].nunique() < 2:
        have = [literal(n) for n in lines["run"].unique()]
        st.info(f"Only {', '.join(have)} has robustness results." if have else "Neither run has robustness results.")
    else:
        if lines["norm"].nunique() > 1:
            st.warning("The two runs attacked in different norms: their eps are not on the same scale.")
        chart = alt.Chart(lines).mark_line(point=True).encode(
            x=alt.X("eps:Q"), y=alt.Y("robust accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            color=alt.Color("run:N", scale=alt.Scale(domain=[a.name, b.name])), strokeDash=alt.StrokeDash("attack:N"),
            tooltip=["run", "attack", alt.Tooltip("eps:Q", format="g"),
                     alt.Tooltip("robust accuracy:Q", format=".1%")])
        st.altair_chart(chart.properties(height=320), width="stretch")
    points = fairness_points([a, b])
    st.subheader("Fairness metrics, both runs")
    if points["run"].nunique() < 2:
        have = [literal(n) for n in points["run"].unique()]
        st.info(f"Only {', '.join(have)} has fairness results." if have else "Neither run has fairness results.")
        return
    points = points.assign(row=points["comparison"] + " · " + points["metric"])
    y = alt.Y("row:N", title=None, sort=list(dict.fromkeys(points["row"])))
    run_colour = alt.Color("run:N", scale=alt.Scale(domain=[a.name, b.name]))
    offset = alt.YOffset("run:N", scale=alt.Scale(domain=[a.name, b.name]))
    base = alt.Chart(points)
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("low:Q", title="value (95 % interval)"), x2="high:Q", y=y,
                                                yOffset=offset, color=run_colour)
    dots = base.mark_point(filled=True, size=50).encode(
        x="value:Q", y=y, yOffset=offset, color=run_colour,
        tooltip=["run", "comparison", "metric", alt.Tooltip("value:Q", format=".4g"),
                 alt.Tooltip("low:Q", format=".4g"), alt.Tooltip("high:Q", format=".4g")])
    st.altair_chart(alt.layer(bars, dots).properties(height=max(200, 28 * points["row"].nunique())), width="stretch")
