"""scrutiny's Streamlit app over a folder of audit runs (``scrutiny app RUNS_DIR``)."""

RUNS_ENV = "SCRUTINY_RUNS_DIR"  # how `scrutiny app` tells the Streamlit script where the runs are
