"""The Adult and digits runs the report tests read (audited and rendered once per session, by
conftest's ``adult_report`` and ``digits_report``), and the helpers that read what was rendered:
a small HTML tree, JSON pointers, the rounding check, Markdown sections and tables."""

from __future__ import annotations

import base64
import re
import shutil
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from scrutiny.audit.run.run_folder import Run, load_run
from scrutiny.cli import main

from . import audit_configs

ADULT_CONFIG = audit_configs.TABULAR + audit_configs.CERTIFICATION

DIGITS_CONFIG = audit_configs.IMAGE + audit_configs.CERTIFICATION


def md_section(md: str, title: str) -> str:
    """The Markdown section whose heading ends with ``title`` (numbers and letters change, titles do not)."""
    parts = [p for p in re.split(r"(?m)^## ", md) if p.split("\n", 1)[0].strip().endswith(title)]
    assert len(parts) == 1, title
    return parts[0]


# ------------------------------------------------------------------ a small HTML tree (stdlib only)

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list = []

    def iter(self, tag: str | None = None):
        if tag is None or self.tag == tag:
            yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter(tag)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def find(self, tag: str, **attrs) -> Node | None:
        return next((n for n in self.iter(tag) if all(n.attrs.get(k) == v for k, v in attrs.items())), None)


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.stack[-1])
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs), self.stack[-1]))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Node:
    builder = _Builder()
    builder.feed(text)
    builder.close()
    return builder.root


# ------------------------------------------------------------------ the module's two runs


@dataclass
class Rendered:
    path: Path
    run: Run
    dataset: object
    html_text: str
    html: Node
    md: str
    pdf: Path
    code: int


def audit_and_render(trained, tmp_path_factory, data: str, arch: str, config: str) -> Rendered:
    """``data``'s model audited with ``config`` and rendered in every format, once per session."""
    from .conftest import built_once

    dataset, _, checkpoint = trained(data, arch)

    def audit(folder: Path) -> None:
        folder.mkdir()
        config_path = folder / "audit.toml"
        config_path.write_text(config)
        code = main(["audit", str(checkpoint), "--data", data, "--config", str(config_path), "--out",
                     str(folder / "run"), "--device", "cpu"])
        assert code in (0, 1), f"audit of {data} exited {code}"
        assert main(["report", str(folder / "run"), "--format", "html,pdf,md"]) == 0
        (folder / "exit_code").write_text(str(code))
    folder = built_once(tmp_path_factory, f"report-{data}-{arch}", audit)
    out, code = folder / "run", int((folder / "exit_code").read_text())
    report = out / "report"
    html_text = (report / "report.html").read_text(encoding="utf-8")
    return Rendered(path=out, run=load_run(out), dataset=dataset, html_text=html_text, html=parse_html(html_text),
                    md=(report / "report.md").read_text(encoding="utf-8"), pdf=report / "report.pdf", code=code)


# ------------------------------------------------------------------ helpers


def pointer(document, path: str):
    """RFC 6901 JSON pointer; ``A - B``: the difference of two values (None when either is null). A
    pointer escapes its tokens' slashes, so " - /" can only be the separator."""
    if " - /" in path:
        minuend, subtrahend = (pointer(document, part) for part in re.split(r" - (?=/)", path))
        return None if minuend is None or subtrahend is None else minuend - subtrahend
    assert path.startswith("/"), path
    node = document
    for token in path[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


ARRAY_PATH = re.compile(r"(arrays/[\w.-]+\.npz)#(\w+)\[(\d+),(\d+)\]")
WHATIF_PATH = re.compile(r"threshold_whatif\((arrays/predictions\.npz), (arrays/[\w.-]+\.npz)#(model_\d+), "
                         r"reference=([0-9.e+-]+), compared=([0-9.e+-]+)\)\.(\w+)")


def threshold_whatif(run, path: str) -> float:
    """A report's threshold what-if number, recomputed here from the run's arrays: favourable where
    P(favourable) is above the threshold of the row's group (the reference threshold for the
    reference group and for rows in neither group, the compared one for the compared group), rows
    counted by ``weight`` where stored."""
    match = WHATIF_PATH.fullmatch(path)
    assert match, f"not a threshold what-if: {path}"
    predictions, groups = run.arrays(match.group(1)), run.arrays(match.group(2))
    code = groups[match.group(3)]
    reference, compared, quantity = float(match.group(4)), float(match.group(5)), match.group(6)
    if quantity == "reference_threshold":
        return reference
    if quantity == "compared_threshold":
        return compared
    p = predictions["proba"][:, 1].astype(np.float64)
    y = predictions["y_true"] == 1
    w = predictions["weight"].astype(np.float64) if "weight" in predictions else np.ones(len(p))
    favourable = np.where(code == 0, p > compared, p > reference)

    def share(among: np.ndarray) -> float:
        return float(np.sum(w[among & favourable]) / np.sum(w[among]))

    rate = {g: share(code == g) for g in (0, 1)}
    tpr = {g: share((code == g) & y) for g in (0, 1)}
    return {"selection_rate_reference": rate[1], "selection_rate_compared": rate[0],
            "disparate_impact": rate[0] / rate[1], "equal_opportunity_difference": tpr[0] - tpr[1],
            "accuracy": float(np.sum(w[favourable == y]) / np.sum(w))}[quantity]
SHOWN = re.compile(r"([+-]?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?")


def shown_number(text: str) -> tuple[float, float]:
    """(the number a displayed text stands for, half a unit of its last shown digit)."""
    body = text.strip()
    percent = body.endswith("%")
    if percent:
        body = body[:-1]
    if "," in body:
        assert re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", body), f"misplaced thousands separators in {text!r}"
        body = body.replace(",", "")
    match = SHOWN.fullmatch(body)
    assert match, f"{text!r} is not a displayed number"
    decimals = len(match.group(3) or "")
    exponent = int(match.group(4) or 0)
    number, half = float(body), 0.5 * 10.0 ** (exponent - decimals)
    if percent:
        number, half = number / 100, half / 100
    return number, half


def check_rounding(text: str, value: float, where: str, count: bool = False) -> None:
    number, half = shown_number(text)
    assert abs(number - value) <= half * (1 + 1e-9) + 1e-15, f"{where}: {text!r} is not {value!r} rounded"
    # and it is one of the report's formats, at full precision (not e.g. a 1-digit rounding)
    formats = {f"{value:.3f}", f"{value:.3g}", f"{value:+.3f}", f"{value:.1%}"}
    if count:  # an expected count (a span marked data-style="count"): one decimal, thousands separated
        formats = {f"{value:,.1f}"}
    if float(value).is_integer():
        formats.add(f"{int(value):,}")
    assert text in formats, f"{where}: {text!r} is none of {sorted(formats)} for {value!r}"


def num_spans(root: Node) -> list[Node]:
    return [n for n in root.iter("span") if "num" in n.classes()]


def section(root: Node, key: str) -> Node:
    node = root.find("section", id=key)
    assert node is not None, f"no <section id={key}>"
    return node


def data_uri_bytes(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:60]
    return base64.b64decode(uri[len(prefix):], validate=True)


def md_cells(line: str) -> list[str]:
    """Cells of a Markdown table row: split at pipes that are not escaped."""
    stripped = line.strip()
    assert stripped.startswith("|") and stripped.endswith("|") and not stripped.endswith("\\|"), line
    return re.split(r"(?<!\\)\|", stripped)[1:-1]


def md_tables(md: str) -> list[list[str]]:
    tables, current = [], []
    for line in md.splitlines():
        if line.lstrip().startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def report(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["report", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def copy_run(source: Path, destination: Path) -> Path:
    """The run folder without the module's rendered report."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("report"))
    return destination
