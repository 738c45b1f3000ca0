"""Run folder → HTML, PDF and Markdown reports (Jinja2 templates; PDF by WeasyPrint from the HTML).

The HTML is one self-contained file: figures are inline PNG data, there are no links to
fetch. The PDF is the same HTML laid out for A4 paper, with one bookmark per section. Every
format is rendered before anything is written; a new report folder appears complete or not at
all, and in an existing one each file is replaced by one rename (:mod:`scrutiny.safe_write`),
so a failed render leaves nothing half-written and no empty folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from markupsafe import Markup, escape

from scrutiny.audit.run.run_folder import load_run
from scrutiny.errors import InputError
from scrutiny.reports.compliance import load_mapping
from scrutiny.reports.content import Num, report_content
from scrutiny.safe_write import Kind, Staging, check_destination, write_file
from scrutiny.toml_file import read_toml

__all__ = ["FORMATS", "REPORT_FOLDER", "render_html", "render_markdown", "render_pdf", "write_reports",
           "check_report_folder", "check_formats", "load_card"]

FORMATS = ("html", "pdf", "md")
TEMPLATES = Path(__file__).with_name("templates")


def _environment(markdown: bool):
    import re

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
        style = f' data-style="{escape(n.style)}"' if n.style == "count" else ""  # the one style tests must know
        # a trend report's number also names its run (or the two runs of a drift) and what it measures
        runs = f' data-run="{" ".join(str(r) for r in n.runs)}"' if hasattr(n, "runs") else ""
        measure = f' data-measure="{escape(n.measure)}"' if getattr(n, "measure", "") else ""
        return Markup(f'<span class="num" data-source="{escape(n.source)}" data-path="{escape(n.path)}"'
                      f'{runs}{measure} data-value="{value}"{style}>{escape(n.text)}</span>')

    def md(text) -> str:
        """Data-derived text (names, categories, card statements) as Markdown that shows it as typed.

        ``< > &`` become HTML entities, so a name such as ``<img src=x onerror=…>`` stays text under
        renderers that pass raw HTML through (CommonMark's default); ``[`` is escaped, so no link,
        image or link reference definition can be made of it; ``|`` for table cells; one line."""
        text = str(text).replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return text.replace("[", "\\[").replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    def code(text, table: bool = True) -> str:
        """A code span showing ``text`` as typed: the fence outgrows any run of backticks inside."""
        text = " ".join(str(text).splitlines())
        if not text:
            return ""
        if table:  # GFM splits table rows at unescaped pipes, code spans included
            text = text.replace("|", "\\|")
        fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
        pad = " " if text.strip(" ") and (text[0] in "` " or text[-1] in "` ") else ""
        return f"{fence}{pad}{text}{pad}{fence}"

    def breakable(text) -> Markup:
        """Identifiers such as fairness.disparate_impact[sex] may wrap after . [ _ and spaces only."""
        out = str(escape(str(text)))
        for mark in (".", "[", "_"):
            out = out.replace(mark, mark + "<wbr>")
        return Markup(out)

    env.filters["num"] = num
    env.filters["breakable"] = breakable
    env.filters["md"] = md
    env.filters["code"] = code
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
        raise InputError(f"a PDF report needs the Pango library, which WeasyPrint could not load ({str(exc).splitlines()[0]}); "
                         "install it (Debian/Ubuntu: apt-get install libpango-1.0-0 libpangoft2-1.0-0) or ask for html and "
                         "md only") from None

    loggers = [logging.getLogger(name) for name in ("weasyprint", "fontTools")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # their font and CSS notices, for this call only
        logger.setLevel(logging.ERROR)
    try:
        return weasyprint.HTML(string=html, base_url=None).write_pdf()
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def check_formats(formats, *, what: str = "formats") -> list[str]:
    """The report formats asked for, trimmed, lower-cased and without repeats; InputError naming
    ``what`` (the parameter, or the CLI's option) unless each is one of :data:`FORMATS`."""
    formats = list(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"{what} {','.join(unknown) or '(none)'}: expected some of {', '.join(FORMATS)}")
    return formats


def load_card(path: str | Path | None, *, what: str = "card") -> dict | None:
    """The model card's statements only people can make: intended_use, out_of_scope, owner, limitations.

    Raises:
        InputError: naming ``what`` (the parameter, or the CLI's option) and ``path``: no such
            file, not TOML, an unknown key or a value of the wrong type.
    """
    if path is None:
        return None
    card = read_toml(path, what)
    allowed = {"intended_use": str, "out_of_scope": str, "owner": str, "limitations": list}
    for key, value in card.items():
        if key not in allowed:
            raise InputError(f"{what} {path}: unknown key '{key}'; expected {', '.join(allowed)}")
        if not isinstance(value, allowed[key]) or (key == "limitations" and not all(isinstance(v, str) for v in value)):
            raise InputError(f"{what} {path}: '{key}' must be {'a list of strings' if key == 'limitations' else 'a string'}")
    return card


def rendered_folder(stem: str, name: str) -> Kind:
    """What :func:`write_formats` writes as ``STEM.FORMAT``: a folder holding only those files (and
    its ``.STEM.`` staging folders while it writes)."""
    files = tuple(f"{stem}.{fmt}" for fmt in FORMATS)
    return Kind(name, lambda folder: all(p.name in files or p.name.startswith(f".{stem}.") for p in folder.iterdir()))


REPORT_FOLDER = rendered_folder("report", "report folder")  # one holding only report.html, .pdf, .md


def check_report_folder(folder: str | os.PathLike, *, inputs=()) -> Path:
    """InputError unless reports may be written into ``folder``: a new or empty folder, or one
    holding only earlier reports (whose files are replaced); never the run folder itself."""
    return check_destination(folder, kind=REPORT_FOLDER, overwrite=True, inputs=inputs)


def write_reports(run_path: str | Path, *, formats: Sequence[str] = ("html",), out: str | Path | None = None,
                  mapping: str | Path | None = None, card: str | Path | None = None) -> list[Path]:
    """Render the run at ``run_path`` in each of ``formats`` into ``out`` (default: the run's own
    ``report/`` folder, which the run's manifest does not list). Returns the files written.

    Example:
        >>> write_reports("runs/adult-mlp", formats=["html", "md"])  # doctest: +SKIP
        [PosixPath('runs/adult-mlp/report/report.html'), PosixPath('runs/adult-mlp/report/report.md')]
    """
    formats = check_formats(formats)
    inputs = (run_path, mapping, card)
    if out is not None:
        check_report_folder(out, inputs=inputs)
    run = load_run(run_path)
    folder = check_report_folder(out if out is not None else run.path / "report", inputs=inputs)
    content = report_content(run, load_mapping(mapping), card=load_card(card))
    return write_formats(folder, "report", REPORT_FOLDER, formats, lambda: render_html(content),
                         lambda: render_markdown(content))


def write_formats(folder: Path, stem: str, kind: Kind, formats: Sequence[str], html: Callable[[], str],
                  markdown: Callable[[], str]) -> list[Path]:
    """Render ``formats`` (the PDF printed from the HTML) and write them as ``folder/STEM.FORMAT``:
    every format is rendered before anything is written; a new folder appears complete or not at
    all (``kind`` names what it may hold), in an existing one each file is replaced by one rename."""
    page = html() if {"html", "pdf"} & set(formats) else ""
    rendered = {}
    for fmt in formats:
        if fmt == "html":
            rendered[fmt] = page.encode("utf-8")
        elif fmt == "md":
            rendered[fmt] = markdown().encode("utf-8")
        else:
            rendered[fmt] = render_pdf(page)
    if folder.is_dir():
        return [write_file(folder / f"{stem}.{fmt}", data) for fmt, data in rendered.items()]
    with Staging(folder, kind=kind) as staging:
        for fmt, data in rendered.items():
            (staging.path / f"{stem}.{fmt}").write_bytes(data)
        staging.commit()
    return [folder / f"{stem}.{fmt}" for fmt in rendered]
