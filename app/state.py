"""What a view shows lives in the URL, so any view can be shared as a link.

``?page=fairness&run=adult-mlp&focus=sex`` opens the Fairness page of run ``adult-mlp`` at the
attribute ``sex``. ``page`` and ``run`` belong to the app (:mod:`scrutiny.app.main`); every other
parameter belongs to the page that reads it and is dropped when another page is chosen. Values
from a URL are untrusted: a page checks them against what the run holds and shows them only
through :func:`scrutiny.app.text.literal`.
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

__all__ = ["APP_PARAMS", "get", "put", "keep_only_app_params", "link", "evidence", "evidence_link"]

APP_PARAMS = ("page", "run")


def get(name: str) -> str | None:
    """The URL's value of ``name``, or None."""
    value = st.query_params.get(name)
    return value if value else None


def put(name: str, value: str | None) -> None:
    """Keep ``value`` in the URL under ``name`` (None: remove it)."""
    if value is None or value == "":
        if name in st.query_params:
            del st.query_params[name]
    else:
        st.query_params[name] = str(value)


def keep_only_app_params() -> None:
    """Drop the parameters of the page left behind."""
    for name in list(st.query_params):
        if name not in APP_PARAMS:
            del st.query_params[name]


def link(run: str, page: str, **params: str) -> str:
    """A relative URL that opens ``page`` of ``run`` with ``params``."""
    return "?" + urlencode({"page": page, "run": run, **{k: v for k, v in params.items() if v not in (None, "")}})


def evidence(finding: dict) -> tuple[str, dict[str, str]]:
    """The page and parameters that show the evidence of ``finding`` (a findings.json entry).

    Fairness findings open Fairness at their attribute or intersection; a protected input's
    reliance opens Explanations filtered to rows where that attribute is among the top reasons;
    the prohibited-basis count opens Explanations filtered to rows with a prohibited basis among
    them; an explanation method's sanity check opens Explanations on that method; robust accuracy
    opens Robustness at its eps; certified accuracy at its radius; the rest opens Runs at the finding.
    """
    check, subject, family = finding["check"], finding.get("subject"), finding["family"]
    if family == "fairness" and subject:
        return "fairness", {"focus": subject}
    if check == "attributions.protected_reliance" and subject:
        return "explanations", {"topk": subject}
    if check == "attributions.prohibited_basis_notices":
        return "explanations", {"topk": "prohibited"}
    if check == "attributions.agreement":
        return "explanations", {"sort": "disagreement"}
    if family == "attributions" and subject:
        return "explanations", {"method": subject}
    if family == "robustness" and subject and "=" in subject:
        key, value = subject.split("=", 1)  # eps=0.25, radius=0.5
        return "robustness", {key: value}
    if family == "robustness":
        return "robustness", {}
    return "runs", {"focus": finding["id"]}


def evidence_link(run: str, finding: dict) -> str:
    page, params = evidence(finding)
    return link(run, page, **params)
