"""Untrusted text on a page: run folder names, values from the URL, column and category names.

Streamlit renders the body of ``st.warning``, ``st.subheader``, ``st.caption``, metric values,
expander labels… as Markdown (links, images, bare-URL autolinks, emoji and colour directives,
maths). A value that comes from a URL, a folder name or a run's data must be shown as text, or a
shared link like ``?run=[Session expired](https://evil.example)`` puts a working link (or an
image the browser fetches) inside the dashboard. :func:`literal` makes it a code span: the one
Markdown construct whose content is never interpreted, so no escape list has to be complete.
"""

from __future__ import annotations

import math
import re

__all__ = ["literal", "number"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BACKTICKS = re.compile(r"`+")


def literal(value: object) -> str:
    """``value`` as a Markdown code span that shows every character as typed.

    Line breaks become a visible ``\\n`` (a blank line would end the span's paragraph). The fence
    is one backtick longer than the longest run of backticks inside; a space pads a value that
    starts or ends with a backtick or a space, as CommonMark strips one space from each side.
    """
    text = _LINE_BREAK.sub(r"\\n", str(value))
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    if text.strip(" ") and (text[0] in "` " or text[-1] in "` "):
        text = f" {text} "
    return f"{fence}{text}{fence}"


def number(value) -> str:
    """A check's value as the report prints it: a count whole, a rate or ratio with three decimals."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.3f}"
