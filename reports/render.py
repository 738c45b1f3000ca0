"""Run folder → HTML, PDF and Markdown reports (Jinja2 templates; PDF by WeasyPrint from the HTML).

The HTML is one self-contained file: figures are inline PNG data, there are no links to
fetch. The PDF is the same HTML laid out for A4 paper, with one bookmark per section. Each
file is written under a temporary name and renamed, so a failed render leaves nothing
half-written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from markupsafe import Markup, escape

from scrutiny.audit.run_folder import load_run
from scrutiny.audit.toml_file import read_toml
from scrutiny.models.errors import InputError

from .compliance import load_mapping
from .content import Num, report_content

__all__ = ["FORMATS", "render_html", "render_markdown", "render_pdf", "write_reports", "load_card"]

FORMATS = ("html", "pdf", "md")
TEMPLATES = Path(__file__).with_name("templates")


def _environment(markdown: bool):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=not markdown,
                             undefined=jinja2.StrictUndefined, trim_blocks=markdown, lstrip_blocks=markdown,
                             keep_trailing_newline=True)

    def num(n: Num | None):
        if n is None:
            return "" if markdown else Markup("")
        if markdown:
            return n.text
        value = "" if n.value is None else repr(float(n.value))
        return Markup(f'<span class="num" data-source="{escape(n.source)}" data-path="{escape(n.path)}" '
                      f'data-value="{value}">{escape(n.text)}</span>')

    def md(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    def breakable(text) -> Markup:
        """Identifiers such as fairness.disparate_impact[sex] may wrap after . [ _ and spaces only."""
        out = str(escape(str(text)))
        for mark in (".", "[", "_"):
            out = out.replace(mark, mark + "<wbr>")
        return Markup(out)

    env.filters["num"] = num
    env.filters["breakable"] = breakable
    env.filters["md"] = md
    return env


def render_html(content) -> str:
    return _environment(False).get_template("report.html.j2").render(c=content)


def render_markdown(content) -> str:
    return _environment(True).get_template("report.md.j2").render(c=content)


def render_pdf(html: str) -> bytes:
    import logging

    try:
        import weasyprint
    except OSError as exc:  # WeasyPrint loads Pango when imported
        raise InputError(f"--format pdf needs the Pango library, which WeasyPrint could not load ({str(exc).splitlines()[0]}); "
                         "install it (Debian/Ubuntu: apt-get install libpango-1.0-0 libpangoft2-1.0-0) or ask for html,md") from None

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    return weasyprint.HTML(string=html, base_url=None).write_pdf()


def load_card(path: str | Path | None) -> dict | None:
    """The model card's statements only people can make: intended_use, out_of_scope, owner, limitations."""
    if path is None:
        return None
    card = read_toml(path, "--card")
    allowed = {"intended_use": str, "out_of_scope": str, "owner": str, "limitations": list}
    for key, value in card.items():
        if key not in allowed:
            raise InputError(f"--card {path}: unknown key '{key}'; expected {', '.join(allowed)}")
        if not isinstance(value, allowed[key]) or (key == "limitations" and not all(isinstance(v, str) for v in value)):
            raise InputError(f"--card {path}: '{key}' must be {'a list of strings' if key == 'limitations' else 'a string'}")
    return card


def write_reports(run_path: str | Path, *, formats=("html",), out: str | Path | None = None,
                  mapping: str | Path | None = None, card: str | Path | None = None) -> list[Path]:
    """Render the run at ``run_path`` in each of ``formats`` into ``out`` (default: the run's own
    ``report/`` folder, which the run's manifest does not list). Returns the files written."""
    formats = list(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"--format {','.join(unknown) or '(none)'}: expected some of {', '.join(FORMATS)}")
    run = load_run(run_path)
    content = report_content(run, load_mapping(mapping), card=load_card(card))
    folder = Path(out) if out is not None else run.path / "report"
    folder.mkdir(parents=True, exist_ok=True)
    html = render_html(content) if {"html", "pdf"} & set(formats) else None
    written = []
    for kind in formats:
        target = folder / f"report.{kind}"
        if kind == "html":
            _atomic(target, html.encode("utf-8"))
        elif kind == "md":
            _atomic(target, render_markdown(content).encode("utf-8"))
        else:
            _atomic(target, render_pdf(html))
        written.append(target)
    return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(target: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide the report from its readers
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
