"""scrutiny's Streamlit app: explore audit runs (``scrutiny app RUNS_DIR``).

Read-only: every page shows what a run folder holds and never re-runs an audit. The page
and the chosen runs live in the URL (``?page=fairness&run=adult-mlp``), with what each page
shows (:mod:`scrutiny.app.state`), so a view can be shared; a run named there is opened only if it is a run folder directly under RUNS_DIR.
"""

from __future__ import annotations

import streamlit as st

from scrutiny.app import compare_page, explanations_page, fairness_page, robustness_page, runs_page, state
from scrutiny.app.runs import RunError, open_run, run_names, runs_dir
from scrutiny.app.text import literal

PAGES = {
    "Runs": runs_page,
    "Explanations": explanations_page,
    "Robustness": robustness_page,
    "Fairness": fairness_page,
    "Compare": compare_page,
}


def main() -> None:
    st.set_page_config(page_title="scrutiny: audit runs", page_icon=":material/fact_check:", layout="wide")
    try:
        root = runs_dir()
        names = run_names(root)
    except RunError as exc:
        st.error(literal(exc))
        return
    params = st.query_params
    page_keys = {name.lower(): name for name in PAGES}
    if "page" not in st.session_state:
        st.session_state.page = page_keys.get(params.get("page", "").lower(), "Runs")
    if "run" not in st.session_state:
        wanted = params.get("run")
        if wanted and wanted not in names:
            st.warning(literal(f"'{wanted}' is not a run folder in {root}; showing another run"))
        st.session_state.run = wanted if wanted in names else (names[0] if names else None)
    with st.sidebar:
        st.title("scrutiny")
        st.caption(f"runs in {literal(root)}")
        # another page: the view parameters of the page left behind no longer apply
        page = st.radio("Page", list(PAGES), key="page", on_change=state.keep_only_app_params)
        if names:
            st.selectbox("Run", names, key="run")
    params["page"] = page.lower()
    if st.session_state.run:
        params["run"] = st.session_state.run
    if not names:
        st.info(f"No run folders in {literal(root)} yet. Write one with "
                f"{literal(f'scrutiny audit MODEL --data DATA --out {root}/NAME')}.")
        return
    try:  # a file of the run that is missing or changed is named on the page; the app goes on
        if page in ("Runs", "Compare"):
            PAGES[page].show(root, names)
            return
        run, problem = open_run(root, st.session_state.run)
        if run is None:
            st.error(literal(problem))
            return
        PAGES[page].show(run)
    except RunError as exc:
        st.error(literal(exc))


main()
