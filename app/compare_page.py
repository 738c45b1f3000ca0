"""Compare: two runs side by side, findings matched by id, differences highlighted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from scrutiny.app.runs import open_run
from scrutiny.app.text import literal
from scrutiny.audit.run.findings import STATUS_WORDS


def comparison(a, b) -> pd.DataFrame:
    """Every finding id of either run: values, difference and statuses."""
    left = {f["id"]: f for f in a.findings["findings"]}
    right = {f["id"]: f for f in b.findings["findings"]}
    rows = []
    for key in list(dict.fromkeys([*left, *right])):
        fa, fb = left.get(key), right.get(key)
        va = fa["value"] if fa else None
        vb = fb["value"] if fb else None
        rows.append({"check": key, f"{a.name}": va, f"{b.name}": vb,
                     "difference": (vb - va) if va is not None and vb is not None else None,
                     f"status {a.name}": STATUS_WORDS[fa["status"]] if fa else "absent",
                     f"status {b.name}": STATUS_WORDS[fb["status"]] if fb else "absent"})
    frame = pd.DataFrame(rows)
    frame["changed"] = (frame[f"status {a.name}"] != frame[f"status {b.name}"]) | (
        frame["difference"].fillna(0).abs() > 1e-12)
    return frame


def show(root: Path, names: list[str]) -> None:
    st.header("Compare two runs")
    if len(names) < 2:
        st.info("Comparing needs two run folders.")
        return
    cells = st.columns(2)
    first = cells[0].selectbox("Run A", names, index=0, key="compare_a")
    second = cells[1].selectbox("Run B", names, index=1, key="compare_b")
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
    frame = comparison(a, b)
    only = st.checkbox("Only differences", value=False, key="only_changed")
    shown = frame[frame["changed"]] if only else frame
    st.caption(f"{int(frame['changed'].sum())} of {len(frame)} checks differ (value or status)")

    def highlight(row):
        colour = "background-color: #fff3cd" if row["changed"] else ""
        return [colour] * len(row)

    st.dataframe(shown.style.apply(highlight, axis=1), hide_index=True, width="stretch", key="comparison")
    if a.findings["subject"]["data"]["sha256"] != b.findings["subject"]["data"]["sha256"]:
        st.warning("The two runs audited different data: their numbers are not directly comparable.")
    if a.findings["subject"]["model"]["weights_sha256"] == b.findings["subject"]["model"]["weights_sha256"]:
        st.caption("Both runs audited the same model weights.")
