"""Runs: every run in the folder with its model, data, date and check counts; one run's findings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from scrutiny.app.runs import open_run
from scrutiny.app.text import literal
from scrutiny.audit.run.findings import STATUS_WORDS, STATUSES

STATUS_COLOURS = {"pass": "#1b7a2f", "warn": "#9a6700", "fail": "#b3261e", "insufficient data": "#1f5f8b",
                  "not assessed": "#6b4c9a"}
SHOWN = ("fail", "warn", "insufficient", "not_assessed", "pass")  # the order statuses are offered in


def overview(root: Path, names: list[str]) -> pd.DataFrame:
    """One row per run folder; a run that cannot be opened says why instead of failing the page."""
    rows = []
    for name in names:
        run, problem = open_run(root, name)
        if run is None:
            rows.append({"run": name, "model": "", "data": "", "date": "", "verdict": "unreadable",
                         **dict.fromkeys(STATUSES), "problem": problem})
            continue
        subject, counts = run.findings["subject"], run.findings["counts"]
        rows.append({
            "run": name,
            "model": subject["model"]["architecture"] or subject["model"]["source"],
            "data": subject["data"]["name"],
            "date": run.manifest.get("finished", ""),
            "verdict": run.findings["verdict"],
            # runs written before the insufficient and not-assessed statuses have no count of them: none
            **{s: counts.get(s, 0) for s in STATUSES},
            "problem": "",
        })
    return pd.DataFrame(rows)


def findings_table(run) -> pd.DataFrame:
    rows = []
    for f in run.findings["findings"]:
        interval = f["interval"]
        rows.append({
            "check": f["id"], "family": f["family"], "value": f["value"],
            "low": interval["low"] if interval else None, "high": interval["high"] if interval else None,
            "threshold": ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in f["threshold"].items()),
            "status": STATUS_WORDS[f["status"]], "explanation": f["explanation"], "caveats": "; ".join(f["caveats"]),
        })
    return pd.DataFrame(rows)


def status_style(value) -> str:
    colour = STATUS_COLOURS.get(value)
    return f"color: {colour}; font-weight: bold" if colour else ""


def show(root: Path, names: list[str]) -> None:
    st.header("Runs")
    table = overview(root, names)
    st.dataframe(table.drop(columns="problem") if not table["problem"].any() else table, hide_index=True,
                 width="stretch", key="runs_table")
    for _, row in table[table["verdict"] == "unreadable"].iterrows():
        st.error(f"{literal(row['run'])}: {literal(row['problem'])}")
    run, problem = open_run(root, st.session_state.get("run"))
    if run is None:
        if st.session_state.get("run") not in set(table["run"]):  # an unreadable run's reason is shown above
            st.warning(literal(problem))
        return
    subject = run.findings["subject"]
    model = subject["model"]["architecture"] or subject["model"]["source"]
    st.subheader(f"{literal(run.name)}: {literal(model)} on {literal(subject['data']['name'])}")
    counts = run.findings["counts"]
    columns = st.columns(1 + len(STATUSES))
    columns[0].metric("verdict", run.findings["verdict"])
    for column, status in zip(columns[1:], STATUSES):
        column.metric(STATUS_WORDS[status], counts.get(status, 0))
    findings = findings_table(run)
    words = [STATUS_WORDS[s] for s in SHOWN]
    chosen = st.multiselect("Show statuses", words, default=words, key="statuses")
    families = st.multiselect("Families", sorted(findings["family"].unique()), default=sorted(findings["family"].unique()),
                              key="families")
    shown = findings[findings["status"].isin(chosen) & findings["family"].isin(families)]
    # four significant digits, as the console prints them: Styler's default six decimals made a count
    # such as 136 too wide for its column, which then showed "36.000000"
    numbers = ("value", "low", "high")
    st.dataframe(shown.style.map(status_style, subset=["status"]).format({c: "{:.4g}" for c in numbers}, na_rep=""),
                 hide_index=True, width="stretch", key="findings_table",
                 column_config={c: st.column_config.Column(width=80) for c in numbers})
    with st.expander("Reproducibility: command, seed, hashes, versions, timings"):
        m = run.manifest
        st.code(" ".join(m.get("command") or []), language="bash")
        st.json({"seed": m.get("seed"), "device": m.get("device"), "model": m.get("model"), "data": m.get("data"),
                 "seconds": m.get("seconds"), "libraries": m.get("libraries")}, expanded=False)
