"""Runs: every run in the folder with its model, data, date and check counts; one run's findings."""

from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd
import streamlit as st

from scrutiny.app import state
from scrutiny.app.runs import open_run
from scrutiny.app.text import literal, number
from scrutiny.audit.run.findings import STATUS_WORDS, STATUSES
from scrutiny.audit.run.policy import is_model_finding, verdicts

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
    frame = pd.DataFrame(rows)
    return frame.astype({s: "Int64" for s in STATUSES})  # whole counts; an unreadable run's are missing


ORDER = ("fail", "warn", "insufficient", "not_assessed", "pass")  # worst first


def findings_table(run) -> pd.DataFrame:
    """The run's findings, worst first (fail, warn, insufficient data, not assessed, pass), each
    in the order of findings.json within its status; ``evidence`` links to the view that shows it."""
    rows = []
    for f in sorted(run.findings["findings"], key=lambda f: ORDER.index(f["status"])):
        interval = f["interval"]
        rows.append({
            "status": STATUS_WORDS[f["status"]], "check": f["id"], "family": f["family"],
            "about": "model" if is_model_finding(f) else "evidence",
            "value": f["value"], "low": interval["low"] if interval else None,
            "high": interval["high"] if interval else None,
            "threshold": ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in f["threshold"].items()),
            "explanation": f["explanation"], "caveats": "; ".join(f["caveats"]),
            "evidence": state.evidence_link(run.name, f),
        })
    return pd.DataFrame(rows, columns=["status", "check", "family", "about", "value", "low", "high", "threshold",
                                       "explanation", "caveats", "evidence"])


def status_style(value) -> str:
    colour = STATUS_COLOURS.get(value)
    return f"color: {colour}; font-weight: bold" if colour else ""


def show(root: Path, names: list[str]) -> None:
    st.header("Runs")
    table = overview(root, names)
    shown_table = table.drop(columns="problem") if not table["problem"].any() else table
    st.dataframe(shown_table.style.map(status_style, subset=["verdict"]), hide_index=True, width="stretch",
                 key="runs_table")
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
    split = verdicts(run.findings["findings"])
    counts = run.findings["counts"]
    columns = st.columns(3)
    columns[0].metric("verdict", STATUS_WORDS[run.findings["verdict"]])
    columns[1].metric("verdict on the model", STATUS_WORDS[split["model"]],
                      help="the worst status of the checks about the model: accuracy, robustness, fairness, "
                           "reliance on protected inputs")
    columns[2].metric("verdict on the evidence", STATUS_WORDS[split["evidence"]],
                      help="the worst status of the checks about the audit's own evidence (explanation sanity "
                           "checks, a weak attack evaluation), with comparisons too small to judge and checks not "
                           "assessed")
    for column, status in zip(st.columns(len(STATUSES)), STATUSES):
        column.metric(STATUS_WORDS[status], counts.get(status, 0))
    findings = findings_table(run)
    words = [STATUS_WORDS[s] for s in SHOWN]
    chosen = st.multiselect("Show statuses", words, default=words, key="statuses")
    families = st.multiselect("Families", sorted(findings["family"].unique()), default=sorted(findings["family"].unique()),
                              key="families")
    shown = findings[findings["status"].isin(chosen) & findings["family"].isin(families)]
    numbers = ("value", "low", "high")
    st.dataframe(shown.style.map(status_style, subset=["status"]).format({c: number for c in numbers}, na_rep=""),
                 hide_index=True, width="stretch", key="findings_table",
                 column_config={**{c: st.column_config.Column(width=70) for c in numbers},
                                "check": st.column_config.Column(width="medium"),
                                "explanation": st.column_config.Column(width="large"),
                                "evidence": st.column_config.LinkColumn("evidence", display_text="open",
                                                                        width="small")})
    _finding(run, shown)
    with st.expander("Reproducibility: command, seed, hashes, versions, timings"):
        m = run.manifest
        st.code(" ".join(m.get("command") or []), language="bash")
        st.json({"seed": m.get("seed"), "device": m.get("device"), "model": m.get("model"), "data": m.get("data"),
                 "seconds": m.get("seconds"), "libraries": m.get("libraries")}, expanded=False)


def _finding(run, shown: pd.DataFrame) -> None:
    """One finding in full (the explanation wrapped), chosen in a list or by ``focus=`` in the URL,
    with a button that opens the view showing its evidence."""
    if shown.empty:
        return
    ids = shown["check"].tolist()
    wanted = state.get("focus")
    if "finding" not in st.session_state or st.session_state.finding not in ids:
        st.session_state.finding = wanted if wanted in ids else ids[0]
    statuses = dict(zip(shown["check"], shown["status"]))
    chosen = st.selectbox("Finding", ids, key="finding", format_func=lambda i: f"{statuses[i].upper()} · {i}",
                          on_change=lambda: state.put("focus", st.session_state.finding))
    finding = next(f for f in run.findings["findings"] if f["id"] == chosen)
    colour = STATUS_COLOURS[STATUS_WORDS[finding["status"]]]
    caveats = "".join(f"<li>{escape(c)}</li>" for c in finding["caveats"])
    st.html(f'<div style="border-left:4px solid {colour};padding:.2rem .8rem;white-space:normal">'
            f'<b style="color:{colour}">{escape(STATUS_WORDS[finding["status"]].upper())}</b> '
            f'<code>{escape(finding["id"])}</code><br>{escape(finding["explanation"])}'
            f'{f"<ul>{caveats}</ul>" if caveats else ""}</div>')
    page, params = state.evidence(finding)
    st.button(f"Open the evidence on {page.capitalize()}", key="open_evidence", on_click=open_view,
              args=(page, params))


def open_view(page: str, params: dict[str, str]) -> None:
    """Go to ``page`` with ``params`` in the URL (a button's callback: it runs before the page's widgets)."""
    st.session_state.page = page.capitalize()
    state.keep_only_app_params()
    for name, value in params.items():
        state.put(name, value)

