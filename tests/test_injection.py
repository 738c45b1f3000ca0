"""Values from URLs, folder names and data are shown as text, never as Markdown or HTML.

One small audit run of a user table whose column names, category values and class names are
HTML (``<script>``, ``<img onerror>``) and Markdown (a link, an image that the browser would
fetch) is rendered by the app (every page, from a run folder whose own name is a Markdown link,
and from a ``?run=`` URL value that is one) and as the Markdown report. Every body the app
hands to Streamlit's Markdown renderer and the whole report are rendered with markdown-it's
CommonMark preset (raw HTML passed through, as many wikis do; tables on): no link, image or
script may come out, and the attacker's URLs may appear only inside code spans (so that GFM's
bare-URL autolinks, which Streamlit also applies, cannot make a link of them either).
"""

from __future__ import annotations

import contextlib
import html
import io
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scrutiny.app.text import literal
from scrutiny.cli import main

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

MAIN = Path(__file__).resolve().parents[1] / "app" / "main.py"
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
LINK = "[Session expired](https://evil.example/login)"
BEACON = "![x](http://127.0.0.1:9/p.png)"
FOLDER = "[click me](https:__evil.example)"  # a run folder's name (no "/" in a file name)
HOSTS = ("evil.example", "127.0.0.1")

SPEC = f'''
label = "approved"
favourable = "yes"

[protected]
"{LINK}" = ["north"]
'''

CONFIG = """
seed = 0

[attributions]
methods = ["integrated_gradients", "kernel_shap"]
samples = 8
quality_samples = 4
n_boot = 20

[robustness]
attacks = ["pgd", "gaussian"]
samples = 20
steps = 3
detector = false

[fairness]
n_boot = 20
"""

CARD = f"""
intended_use = 'Ranking {SCRIPT} applications & nothing else'
out_of_scope = 'Automated denial {LINK}'
owner = 'Risk team {IMG}'
limitations = ['Trained on synthetic rows {BEACON}', 'A second limitation']
"""


def hostile_table(n: int = 300) -> pd.DataFrame:
    """Label = score > 0; a categorical feature named <script>…, a protected attribute named as a
    Markdown link, categories that are HTML and a Markdown image, a class name that is HTML."""
    rng = np.random.default_rng(0)
    score = rng.normal(size=n).round(3)
    return pd.DataFrame({
        "score": score,
        SCRIPT: rng.choice([IMG, LINK, "plain"], size=n),
        LINK: rng.choice(["north", BEACON], size=n),
        "approved": np.where(score > 0, "yes", IMG),
    })


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Path:
    from scrutiny.models import load_table, save_checkpoint, train_on

    folder = tmp_path_factory.mktemp("hostile").resolve()
    data, spec, config = folder / "table.csv", folder / "table.toml", folder / "audit.toml"
    hostile_table().to_csv(data, index=False)
    spec.write_text(SPEC, encoding="utf-8")
    config.write_text(CONFIG, encoding="utf-8")
    dataset = load_table(data, spec)
    assert dataset.spec.classes and IMG in dataset.spec.classes  # the class names carry the payload
    trained = train_on(dataset, "mlp", seed=0, progress=False, epochs=3)
    checkpoint = save_checkpoint(folder / "model", model=trained.model, dataset=dataset, metrics=trained.metrics,
                                 training=trained.settings, seed=0)
    runs = folder / "RUNS"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main(["audit", str(checkpoint), "--data", str(data), "--spec", str(spec), "--config", str(config),
                     "--out", str(runs / FOLDER)])
    assert code in (0, 1), printed.getvalue()[-2000:]
    shutil.copytree(runs / FOLDER, runs / "plain")  # a second run, for Compare
    return runs / FOLDER


# ---------------------------------------------------------------- rendering Markdown as a browser would get it


def commonmark(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(text)


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def elements(rendered: str) -> list[tuple[str, dict]]:
    parser = _Elements()
    parser.feed(rendered)
    parser.close()
    return parser.tags


def assert_text_only(body: str, where: str) -> None:
    """``body``, rendered as Markdown, makes no link, image or script, and names the attacker's
    hosts only inside code spans."""
    rendered = commonmark(body)
    made = [(tag, attrs) for tag, attrs in elements(rendered) if tag in ("a", "img", "script", "iframe")
            or any(name.startswith("on") for name in attrs)]
    assert not made, f"{where}: {body!r} renders as {rendered!r}"
    outside_code = re.sub(r"<code>.*?</code>", "", rendered, flags=re.DOTALL)
    assert not [h for h in HOSTS if h in outside_code], f"{where}: {body!r} renders as {rendered!r}"


def test_literal_shows_any_text_as_typed():
    """Independent reference: the text markdown-it renders is the value itself, every character."""
    for value in (LINK, BEACON, SCRIPT, IMG, FOLDER, "a`b", "``x``", "`", " lead", "trail ", "*x* _y_ $z$ :red[w]",
                  "line\nbreak\n\n# heading", "\\[x](y)"):
        rendered = commonmark(literal(value)).strip()
        match = re.fullmatch(r"<p><code>(.*)</code></p>", rendered, flags=re.DOTALL)
        assert match, (value, rendered)
        assert html.unescape(match.group(1)) == value.replace("\n", "\\n"), (value, rendered)
    assert literal("") == ""


# ---------------------------------------------------------------- the app


def _app(runs: Path, page: str, run: str | None, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SCRUTINY_RUNS_DIR", str(runs))
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.query_params["page"] = page
    if run is not None:
        at.query_params["run"] = run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown_bodies(at) -> list[tuple[str, str]]:
    """(kind, body) of every element whose text Streamlit renders as Markdown."""
    bodies = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "success", "warning", "error"):
        bodies += [(kind, e.value) for e in getattr(at, kind)]
    bodies += [("metric label", m.label) for m in at.metric] + [("metric value", m.value) for m in at.metric]
    bodies += [("expander", e.label) for e in at.expander]
    return bodies


@pytest.mark.parametrize("wanted", [LINK, BEACON, "[Session expired: click here to sign in again](https://evil.example/login)"])
def test_run_from_the_url_is_shown_as_text(hostile_run, monkeypatch, wanted):
    at = _app(hostile_run.parent, "runs", wanted, monkeypatch)
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 1, warnings
    shown = re.fullmatch(r"<p><code>(.*)</code></p>", commonmark(warnings[0]).strip(), flags=re.DOTALL)
    assert shown and f"'{wanted}' is not a run folder" in html.unescape(shown.group(1)), warnings  # verbatim
    for kind, body in markdown_bodies(at):
        assert_text_only(body, kind)


@pytest.mark.parametrize("page", ["runs", "explanations", "robustness", "fairness", "compare"])
def test_names_from_folders_and_data_are_shown_as_text(hostile_run, monkeypatch, page):
    at = _app(hostile_run.parent, page, FOLDER, monkeypatch)
    assert at.sidebar.selectbox(key="run").value == FOLDER
    bodies = markdown_bodies(at)
    shown = " ".join(body for _, body in bodies)
    if page == "runs":  # the run folder's name, in the subheader
        assert at.subheader[0].value.startswith(f"{literal(FOLDER)}: ")
    if page == "fairness":  # the protected attribute's name, in a warning about a small group
        assert literal(LINK) in shown
    if page == "explanations":  # class names, as metric values
        assert {literal("yes"), literal(IMG)} & {m.value for m in at.metric}
    if page == "robustness":  # class names, in the examples' table (a data grid: text, never Markdown)
        cells = {str(v) for d in at.dataframe for v in d.value.to_numpy().ravel()}
        assert {"yes", IMG} & cells, cells
    for kind, body in bodies:
        assert_text_only(body, f"{page}: {kind}")


def test_an_unreadable_run_named_as_a_link_is_named_as_text(hostile_run, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(hostile_run, runs / FOLDER)
    (runs / FOLDER / "findings.json").write_text("{}", encoding="utf-8")  # hash no longer matches
    at = _app(runs, "runs", None, monkeypatch)
    errors = [e.value for e in at.error]
    assert errors and errors[0].startswith(f"{literal(FOLDER)}: "), errors
    for kind, body in markdown_bodies(at):
        assert_text_only(body, kind)


# ---------------------------------------------------------------- the Markdown report


@pytest.fixture(scope="module")
def reports(hostile_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile-report")
    card = out / "card.toml"
    card.write_text(CARD, encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["report", str(hostile_run), "--format", "html,md", "--out", str(out / "report"), "--card", str(card)])
    assert code == 0
    return ((out / "report" / "report.md").read_text(encoding="utf-8"),
            (out / "report" / "report.html").read_text(encoding="utf-8"))


def test_markdown_report_makes_no_element_of_names_or_card_text(reports):
    md, _ = reports
    assert SCRIPT not in md and "<img" not in md  # raw in the file, it would run under CommonMark
    rendered = commonmark(md)
    made = [(tag, attrs) for tag, attrs in elements(rendered)
            if tag in ("a", "img", "script", "iframe") or any(name.startswith("on") for name in attrs)]
    assert not made, made
    text = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    for payload in (SCRIPT, IMG, LINK, BEACON):  # shown as text, character for character
        assert payload in text, payload


def test_markdown_report_tables_keep_their_columns(reports):
    md, _ = reports
    for block in re.findall(r"(?:^\|.*\|\n)+", md, flags=re.MULTILINE):
        rows = block.strip("\n").split("\n")
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(widths) == 1, rows


def _card_text(rendered_html: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", rendered_html)).split())


def test_markdown_model_card_holds_every_card_field_of_the_html(reports):
    import tomllib

    md, report_html = reports
    card = tomllib.loads(CARD)
    md_card = next(p for p in re.split(r"(?m)^## ", md) if p.split("\n", 1)[0].endswith("Model card"))
    html_card = report_html.split('<section id="model_card">')[1].split("</section>")[0]
    shown_md, shown_html = _card_text(commonmark(md_card)), _card_text(html_card)
    for key, value in card.items():
        for item in value if isinstance(value, list) else [value]:
            item = " ".join(item.split())
            assert item in shown_html, (key, "html")
            assert item in shown_md, (key, "md")
    # each statement is its own paragraph, not one run-on line
    paragraphs = [p for p in re.findall(r"<p>(.*?)</p>", commonmark(md_card), flags=re.DOTALL)]
    for label in ("Intended use:", "Out of scope:", "Owner:"):
        assert sum(p.startswith(f"<strong>{label}</strong>") for p in paragraphs) == 1, (label, paragraphs)
