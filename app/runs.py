"""Run folders for the app: which may be opened, and cached, read-only loading.

Only direct sub-folders of the runs folder given to ``scrutiny app`` can be opened: a run is
chosen by its folder name, which must be one of the names :func:`run_names` lists (no
separators, no ``..``, no links out), whatever a URL or widget asks for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import streamlit as st

from scrutiny.app import RUNS_ENV
from scrutiny.audit.run.run_folder import MANIFEST, Run, RunError, list_runs, load_run

__all__ = ["ENV", "runs_dir", "run_names", "open_run", "arrays", "table", "stamp", "RunError"]

ENV = RUNS_ENV


def runs_dir() -> Path:
    """The folder of runs, from ``scrutiny app RUNS_DIR`` (passed in the environment)."""
    value = os.environ.get(ENV)
    if not value:
        raise RunError(f"no runs folder: start the app with `scrutiny app RUNS_DIR` (or set {ENV})")
    return Path(value).resolve()


def run_names(root: Path) -> list[str]:
    """Names of the run folders directly under ``root`` that stay inside it."""
    return [p.name for p in list_runs(root) if p.resolve().parent == root]


def stamp(path: Path) -> float:
    """Changes when the run is rewritten (--overwrite), so the cache does not serve the old one."""
    try:
        return (path / MANIFEST).stat().st_mtime_ns
    except OSError:
        return 0.0


@st.cache_data(show_spinner=False, max_entries=64)
def _load(path: str, stamp: float) -> tuple[Run | None, str | None]:
    try:
        return load_run(path), None
    except RunError as exc:
        return None, str(exc)


def open_run(root: Path, name: str | None) -> tuple[Run | None, str | None]:
    """(run, None), or (None, a one-line reason) for a name that is not an openable run."""
    if not name:
        return None, "no run chosen"
    if name not in run_names(root):
        return None, f"'{name}' is not a run folder in {root}"
    path = root / name
    return _load(str(path), stamp(path))


@st.cache_data(show_spinner=False, max_entries=64)
def _arrays(path: str, stamp: float, relative: str) -> dict[str, np.ndarray]:
    return load_run(path).arrays(relative)


def arrays(run: Run, relative: str) -> dict[str, np.ndarray]:
    """An .npz file of the run, loaded on first use and cached."""
    return _arrays(str(run.path), stamp(run.path), relative)


@st.cache_data(show_spinner=False, max_entries=64)
def _table(path: str, stamp: float, relative: str):
    import pandas as pd

    return pd.read_parquet(load_run(path).file(relative))


def table(run: Run, relative: str):
    """A .parquet table of the run, loaded on first use and cached."""
    return _table(str(run.path), stamp(run.path), relative)
