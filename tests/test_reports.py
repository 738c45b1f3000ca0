"""`scrutiny report`: a run folder rendered as self-contained HTML, PDF and Markdown.

Two audits run once per session (tests/report_runs.py) (the Adult MLP and the digits CNN, small configs) and each is
rendered once in every format; the tests read those files. Every number the HTML shows
carries its source (findings.json, manifest.json or an array of the run) and exact value, so
each is checked against the run and against its rounding; the PDF's bookmarks and first page,
the Markdown's headings and tables, the adverse-action reasons (against a hand computation
from the stored attributions and the raw Adult rows), and the one-line errors on broken run
folders and bad options are checked as well.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from scrutiny.audit.run.findings import STATUS_WORDS, STATUSES
from scrutiny.audit.run.run_folder import load_run, to_json

from .report_runs import (
    ARRAY_PATH,
    Node,
    Rendered,
    check_rounding,
    copy_run,
    data_uri_bytes,
    md_cells,
    md_section,
    md_tables,
    num_spans,
    parse_html,
    pointer,
    report,
    section,
    threshold_whatif,
)
from .test_cli import cli

# written out here, not imported from the code under test
SECTIONS = [
    ("summary", "1. Executive summary"),
    ("findings", "2. Findings that need attention"),
    ("model_card", "3. Model card"),
    ("explainability", "4. Explainability"),
    ("robustness", "5. Robustness"),
    ("fairness", "6. Fairness"),
    ("adverse_action", "7. Adverse-action reasons"),
    ("signoff", "8. Sign-off"),
    ("compliance", "9. Compliance mapping"),
    ("passes", "Appendix A. Checks that passed"),
    ("groups", "Appendix B. Group tables: fairness per comparison, NYC LL144 rates and group sizes"),
    ("importance", "Appendix C. Global importance and agreement between methods"),
    ("clauses", "Appendix D. Clause texts"),
    ("reproducibility", "Appendix E. Reproducibility"),
]
HEADINGS = [heading for _, heading in SECTIONS]


# ------------------------------------------------------------------ the session's two runs (tests/report_runs.py)


@pytest.fixture
def adult(adult_report) -> Rendered:
    return adult_report


@pytest.fixture
def digits(digits_report) -> Rendered:
    return digits_report


@pytest.fixture(params=["adult", "digits"])
def rendered(request) -> Rendered:
    return request.getfixturevalue(request.param)


# ------------------------------------------------------------------ 1. every number equals the run


def test_every_number_in_the_html_is_the_runs_value_correctly_rounded(adult):
    run = adult.run
    findings = json.loads((adult.path / "findings.json").read_text())
    manifest = json.loads((adult.path / "manifest.json").read_text())
    arrays: dict[str, dict] = {}
    spans = num_spans(adult.html)
    sources = {}
    for span in spans:
        source, path, value = span.attrs["data-source"], span.attrs["data-path"], span.attrs["data-value"]
        text = span.text()
        where = f"{source}:{path}"
        sources[source] = sources.get(source, 0) + 1
        if source in ("findings", "manifest"):
            expected = pointer(findings if source == "findings" else manifest, path)
        else:
            assert source == "arrays", where
            if path.startswith("threshold_whatif("):  # a remediation's what-if, recomputed from the arrays
                expected = threshold_whatif(run, path)
                assert value != "" and math.isclose(float(value), expected, rel_tol=1e-9, abs_tol=1e-12), \
                    f"{where}: data-value {value} != {expected!r}"
                check_rounding(text, float(value), where)
                sources["whatif"] = sources.get("whatif", 0) + 1
                continue
            match = ARRAY_PATH.fullmatch(path)
            assert match, where
            file, name, row, column = match.group(1), match.group(2), int(match.group(3)), int(match.group(4))
            if file not in arrays:
                arrays[file] = run.arrays(file)
            expected = arrays[file][name][row, column]
            if file == "arrays/adverse_action.npz" and name == "contribution":
                # a stored reason's contribution is its attribution toward the unfavourable class (class 0)
                attributions = run.arrays("arrays/attributions.npz")
                position, feature = arrays[file]["position"][row], arrays[file]["reason"][row, column]
                assert attributions["target"][position] == 0, where
                assert expected == attributions["kernel_shap"][position, feature], where
        if expected is None:
            assert value == "" and text == "n/a", where
            continue
        assert not isinstance(expected, (dict, list, str)), where
        assert value != "", where
        assert float(value) == float(expected), f"{where}: data-value {value} != {expected!r}"
        check_rounding(text, float(expected), where, count=span.attrs.get("data-style") == "count")
    # not vacuous: hundreds of numbers, from every source
    assert len(spans) >= 300
    assert sources.get("findings", 0) >= 200 and sources.get("manifest", 0) >= 3 and sources.get("arrays", 0) >= 10
    assert any(span.attrs.get("data-style") == "count" for span in spans)  # the fairness support table's counts
    assert any(" - /" in span.attrs["data-path"] for span in spans)  # the certification's gaps, recomputed above
    assert sources.get("whatif", 0) >= 10  # the fairness remediation's threshold what-ifs, recomputed above


def test_digits_numbers_equal_the_run_too(digits):
    findings = json.loads((digits.path / "findings.json").read_text())
    manifest = json.loads((digits.path / "manifest.json").read_text())
    spans = num_spans(digits.html)
    assert len(spans) >= 30
    for span in spans:
        source, path, value = span.attrs["data-source"], span.attrs["data-path"], span.attrs["data-value"]
        assert source in ("findings", "manifest"), path  # no adverse-action numbers on images
        expected = pointer(findings if source == "findings" else manifest, path)
        if expected is None:
            assert value == "" and span.text() == "n/a", path
            continue
        assert float(value) == float(expected), path
        check_rounding(span.text(), float(expected), path, count=span.attrs.get("data-style") == "count")


def test_rounding_check_itself_catches_wrong_numbers():
    """The checker above can fail: a misrounded, truncated or mis-scaled text is caught."""
    check_rounding("0.779", 0.77912, "ok")
    check_rounding("72.5%", 0.725, "ok")
    check_rounding("-0.0707", -0.070734, "ok")
    check_rounding("+0.705", 0.70477, "ok")
    check_rounding("15,060", 15060, "ok")
    check_rounding("1.23e-05", 1.2312e-05, "ok")
    check_rounding("2,435.0", 2434.96, "ok", count=True)
    with pytest.raises(AssertionError):
        check_rounding("2.43e+03", 2434.96, "bad", count=True)
    for text, value in [("0.780", 0.77912), ("7.2%", 0.725), ("0.8", 0.77912), ("15060", 15060),
                        ("1,50,60", 15060), ("0.705", -0.70477)]:
        with pytest.raises(AssertionError):
            check_rounding(text, value, "bad")


def test_every_finding_is_a_row_of_the_attention_or_the_passes_table(rendered):
    """Failures, warnings, insufficient data and not assessed first; passes in the appendix."""
    findings = rendered.run.findings["findings"]
    tables = {key: [t for t in section(rendered.html, key).iter("table") if "findings" in t.classes()]
              for key in ("findings", "passes")}
    body_rows = {key: [tr for t in found for tr in t.find("tbody").iter("tr") if "finding" in tr.classes()]
                 for key, found in tables.items()}
    assert sum(map(len, body_rows.values())) == len(findings) > 5
    for i, finding in enumerate(findings):
        summary = section(rendered.html, "passes" if finding["status"] == "pass" else "findings")
        row = summary.find("tr", id=f"finding-{i}")
        assert row is not None, finding["id"]
        cells = list(row.iter("td"))
        assert cells[0].text() == finding["id"]
        value = [s for s in num_spans(row) if s.attrs["data-path"] == f"/findings/{i}/value"]
        assert len(value) == 1, finding["id"]
        status = [c for c in cells if "status" in c.classes()]
        assert len(status) == 1 and status[0].text().strip() == STATUS_WORDS[finding["status"]], finding["id"]
        assert finding["status"] in status[0].classes()
        if finding["interval"]:
            paths = {s.attrs["data-path"] for s in num_spans(row)}
            assert {f"/findings/{i}/interval/low", f"/findings/{i}/interval/high"} <= paths
    verdict = next(d for d in rendered.html.find("header").iter("div") if "verdict" in d.classes())
    assert rendered.run.findings["verdict"] in verdict.classes()
    assert " ".join(verdict.text().split()).startswith(f"Verdict: {rendered.run.findings['verdict']} (")
    counts = {s.attrs["data-path"]: int(s.text()) for s in num_spans(verdict)}
    assert counts == {f"/counts/{k}": sum(f["status"] == k for f in findings) for k in STATUSES}


# ------------------------------------------------------------------ 2. self-contained HTML, its sections in order


def test_html_is_self_contained_with_valid_inline_pngs(rendered):
    from PIL import Image

    root = rendered.html
    for node in root.iter():
        for attribute in ("src", "href"):
            value = (node.attrs.get(attribute) or "").strip().lower()
            assert not value.startswith(("http://", "https://", "//")), f"<{node.tag} {attribute}={value[:80]}>"
        if node.tag == "link":
            assert "stylesheet" not in (node.attrs.get("rel") or "").lower()
        if node.tag == "script":
            assert "src" not in node.attrs
    for style in root.iter("style"):
        assert "@import" not in style.text() and "url(http" not in style.text().replace(" ", "")
    images = list(root.iter("img"))
    assert len(images) >= 4
    for image in images:
        data = data_uri_bytes(image.attrs["src"])
        with Image.open(io.BytesIO(data)) as png:
            assert png.format == "PNG"
            assert png.size[0] > 10 and png.size[1] > 10
            png.load()
    # every figure the run lists is shown, byte for byte
    shown = {data_uri_bytes(i.attrs["src"]) for i in images}
    figures = [name for name in rendered.run.manifest["files"] if name.startswith("figures/")]
    assert figures
    for name in figures:
        assert (rendered.path / name).read_bytes() in shown, name


def test_html_has_its_sections_in_order(rendered):
    sections = list(rendered.html.iter("section"))
    assert [s.attrs.get("id") for s in sections] == [key for key, _ in SECTIONS]
    for s, heading in zip(sections, HEADINGS):
        assert s.find("h2").text().strip() == heading
    # the table of contents links to them
    links = [a.attrs["href"] for a in rendered.html.find("nav").iter("a")]
    assert links == [f"#{key}" for key, _ in SECTIONS]


def test_method_table_shows_each_methods_error_figure(adult):
    """KernelSHAP adds up by construction: its row shows the sampling error, IG's the completeness gap."""
    findings = json.loads((adult.path / "findings.json").read_text())
    rows = {}
    for tr in section(adult.html, "explainability").find("table").iter("tr"):
        cells = [td.text().strip() for td in tr.iter("td")]
        if cells:
            rows[cells[0]] = (cells, tr)
    kernel, kernel_row = rows["kernel_shap"]
    assert kernel[3] == "sampling error"
    (span,) = num_spans(kernel_row)
    assert span.attrs["data-path"] == "/details/attributions/methods/kernel_shap/sampling_error_p95"
    assert float(span.attrs["data-value"]) == next(
        f["value"] for f in findings["findings"] if f["id"] == "attributions.sampling_error[kernel_shap]")
    assert rows["integrated_gradients"][0][3] == "completeness gap"


def test_typed_reading_fails_loudly_on_a_field_the_details_do_not_declare(adult):
    """Report numbers come from the typed details, their pointers from the classes' field names: a
    misspelt field is an error, not a missing number; a pointer is the JSON's own."""
    from scrutiny.reports.content import _At

    findings = json.loads((adult.path / "findings.json").read_text())
    fairness = _At(adult.run.details("fairness"), "/details/fairness")
    n = fairness.num("model", 2, "per_group", "privileged", "n", style="int")
    assert n.path == "/details/fairness/model/2/per_group/privileged/n"
    assert n.value == pointer(findings, n.path)
    with pytest.raises(AttributeError, match="GroupFigures has no field 'rows'"):
        fairness.num("model", 2, "per_group", "privileged", "rows")
    with pytest.raises(AttributeError, match="GroupComparisonEntry has no field 'attributes'"):
        fairness.at("model", 0, "attributes")  # a property, not a field: it has no place in the JSON


# ------------------------------------------------------------------ 3. PDF


def _outline_titles(outline) -> list:
    """[(title, [children...]), ...] from pypdf's nested outline lists."""
    out = []
    for item in outline:
        if isinstance(item, list):
            assert out, "children before their parent"
            out[-1] = (out[-1][0], _outline_titles(item))
        else:
            out.append((item.title, []))
    return out


def test_pdf_bookmarks_pages_and_first_page_text(rendered):
    import pypdf

    reader = pypdf.PdfReader(rendered.pdf)
    tree = _outline_titles(reader.outline)
    title = rendered.html.find("h1").text().strip()
    assert len(tree) == 1 and tree[0][0] == title
    assert [child for child, _ in tree[0][1]] == HEADINGS
    assert len(reader.pages) > 3
    first = " ".join(reader.pages[0].extract_text().split())
    assert rendered.run.findings["verdict"].lower() in first.lower()
    model = rendered.run.findings["subject"]["model"]["architecture"]
    assert model and model in first
    assert rendered.run.findings["subject"]["data"]["name"] in first


def test_adult_pdf_body_fits_twelve_pages(adult):
    """The body (everything before the first appendix) of the Adult report fits in 12 pages; this fixture's
    audit adds randomized-smoothing certification (about a page) to the default audit, so 13 here."""
    import pypdf

    reader = pypdf.PdfReader(adult.pdf)
    sections = next(item for item in reader.outline if isinstance(item, list))
    first_appendix = next(item for item in sections if not isinstance(item, list) and item.title.startswith("Appendix"))
    assert "Certified robustness" in adult.html.text()
    assert reader.get_destination_page_number(first_appendix) <= 13  # 0-based: the appendix starts by page 14


def test_pdf_first_page_is_not_blank(rendered, tmp_path):
    from PIL import Image

    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed; it converts the PDF's pages to PNG")
    subprocess.run([pdftoppm, "-r", "50", "-png", "-f", "1", "-l", "1", str(rendered.pdf), str(tmp_path / "page")],
                   check=True, capture_output=True, timeout=60)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) == 1
    with Image.open(pages[0]) as image:
        gray = np.asarray(image.convert("L"), dtype=np.float64)
    assert gray.shape[0] > 300 and gray.shape[1] > 200  # A4 at 50 dpi: about 585 x 414
    assert np.mean(gray < 200) > 0.01
    assert gray.std() > 10


# ------------------------------------------------------------------ 4. Markdown


def test_markdown_headings_findings_and_tables(rendered):
    md = rendered.md
    assert re.findall(r"^## (.+?)\s*$", md, re.MULTILINE) == HEADINGS
    assert md.startswith("# ")
    for finding in rendered.run.findings["findings"]:
        assert f"`{finding['id']}`" in md, finding["id"]
    tables = md_tables(md)
    assert len(tables) >= 5
    for table in tables:
        assert len(table) >= 2, table
        width = len(md_cells(table[0]))
        assert re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", table[1].strip()), table[1]
        for line in table:
            assert len(md_cells(line)) == width, f"{len(md_cells(line))} cells, header has {width}: {line}"


def test_markdown_summary_values_match_the_html(rendered):
    """Each finding's row in the Markdown shows the same value text and status as the HTML."""
    html_values = {s.attrs["data-path"]: s.text() for key in ("findings", "passes")
                   for s in num_spans(section(rendered.html, key))}
    rows = {}
    parts = re.split(r"(?m)^## ", rendered.md)
    headings = dict(SECTIONS)
    tables = [p for p in parts if p.startswith((headings["findings"], headings["passes"]))]
    assert len(tables) == 2
    for line in "".join(tables).splitlines():
        match = re.match(r"\| `([^`]+)` \|", line)
        if match and match.group(1) not in rows:
            rows[match.group(1)] = [c.strip() for c in md_cells(line)]
    for i, finding in enumerate(rendered.run.findings["findings"]):
        cells = rows[finding["id"]]
        assert cells[1] == html_values[f"/findings/{i}/value"], finding["id"]
        assert cells[4] == f"**{STATUS_WORDS[finding['status']]}**", finding["id"]


def test_markdown_tables_survive_pipes_in_a_users_mapping(adult, tmp_path, capsys):
    from scrutiny.reports.compliance import DEFAULT_MAPPING

    text = DEFAULT_MAPPING.read_text(encoding="utf-8")
    assert 'reference = "Art. 10(2)(f)"' in text and 'title = "' in text
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(text.replace('reference = "Art. 10(2)(f)"', 'reference = "Art. 10(2)(f) | (g)"', 1)
                       .replace('title = "', 'title = "a | b: ', 1), encoding="utf-8")
    code, _, err = report([str(adult.path), "--format", "md", "--out", str(tmp_path / "out"), "--mapping",
                           str(mapping)], capsys)
    assert code == 0, err
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "(f) " in md and "a \\| b: " in md
    for table in md_tables(md):
        width = len(md_cells(table[0]))
        for line in table:
            assert len(md_cells(line)) == width, line


def test_markdown_limitations_are_a_list(adult):
    failing = [f for f in adult.run.findings["findings"] if f["status"] == "fail"]
    assert failing
    for finding in failing:
        shown = finding["id"].replace("[", "\\[")  # the md filter escapes [ (no link can be made of a name)
        assert re.search(rf"^- {re.escape(shown)}: ", adult.md, re.MULTILINE), finding["id"]


# ------------------------------------------------------------------ 5. adverse-action reasons


def _raw_text(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


# the prohibited bases of Adult (12 CFR 1002.2(z); relationship stands in for marital status), written out here
ADULT_PROHIBITED = {"sex", "race", "marital-status", "relationship", "native-country", "age"}


def test_adverse_action_reasons_against_a_hand_computation(adult):
    from scrutiny.reports.adverse_action import SHOWN_NOTICES, stored_notices

    run, dataset = adult.run, adult.dataset
    classes = run.findings["subject"]["data"]["classes"]
    assert classes[0] == "<=50K"
    stored = stored_notices(run)
    assert stored.method == "kernel_shap"  # preferred over integrated_gradients
    attributions = run.arrays("arrays/attributions.npz")
    predictions = run.arrays("arrays/predictions.npz")
    rows, values, target = attributions["rows"], attributions["kernel_shap"], attributions["target"]
    features = run.findings["details"]["attributions"]["features"]
    unfavourable = [i for i, row in enumerate(rows) if predictions["y_pred"][row] == 0]
    assert unfavourable and len(unfavourable) < len(rows)  # some rows of each kind: the filter matters
    assert stored.n_unfavourable == len(unfavourable)
    assert [n.test_row for n in stored.notices] == [int(rows[i]) for i in unfavourable][:SHOWN_NOTICES]
    raw = dataset.test.X
    cannot = 0
    for i in unfavourable:
        # by hand: what pushes toward class 0 is the class-0 attribution (or minus the class-1 one)
        push = values[i] if target[i] == 0 else -values[i]
        order = sorted((j for j in range(len(features)) if push[j] > 0), key=lambda j: (-push[j], j))[:4]
        cannot += any(features[j] in ADULT_PROHIBITED for j in order)
        notice = next((n for n in stored.notices if n.position == i), None)
        if notice is None:
            continue
        assert int(rows[i]) == notice.test_row and notice.decision == "<=50K"
        assert notice.favourable_probability == float(predictions["proba"][notice.test_row, 1]) <= 0.5
        assert [(r.feature, r.feature_index) for r in notice.reasons] == [(features[j], j) for j in order]
        assert [r.contribution for r in notice.reasons] == [float(push[j]) for j in order]
        assert [r.prohibited for r in notice.reasons] == [features[j] in ADULT_PROHIBITED for j in order]
        assert notice.cannot_issue == any(features[j] in ADULT_PROHIBITED for j in order)
        for reason in notice.reasons:
            assert reason.feature in raw.columns  # an original Adult column, not an encoded one
            assert reason.value == _raw_text(raw[reason.feature].iloc[notice.test_row]), reason
    assert stored.n_cannot_issue == cannot
    assert any(len(n.reasons) == 4 for n in stored.notices)


def test_adverse_action_section_shows_each_notice(adult):
    from scrutiny.reports.adverse_action import stored_notices

    stored = stored_notices(adult.run)
    node = section(adult.html, "adverse_action")
    text = " ".join(node.text().split())
    assert "kernel_shap" in text
    assert f"{len(stored.notices)} of {stored.n_unfavourable} unfavourable rows shown" in text
    assert f"{stored.n_cannot_issue} of {stored.n_unfavourable} notices cannot be issued" in text
    body = list(node.find("tbody").iter("tr"))
    assert len(body) == len(stored.notices)
    for tr, notice in zip(body, stored.notices):
        cells = list(tr.iter("td"))
        assert cells[0].text().strip() == str(notice.test_row) and cells[1].text().strip() == "<=50K"
        items = [" ".join(li.text().split()) for li in tr.iter("li")]
        assert not {item.split(" = ")[0] for item in items} & ADULT_PROHIBITED  # never stated as a reason
        if notice.cannot_issue:
            reasons = " ".join(cells[3].text().split())
            assert not items and reasons.startswith("cannot be issued: the decision relies on a prohibited basis")
            assert [b.split(" ")[0] for b in reasons.split("(prohibited basis: ")[1].rstrip(")").split(", ")] == \
                [r.feature for r in notice.reasons if r.feature in ADULT_PROHIBITED]
        else:
            assert [item.rsplit(" (", 1)[0] for item in items] == [f"{r.feature} = {r.value}" for r in notice.reasons]
    md = md_section(adult.md, "Adverse-action reasons")
    assert f"{len(stored.notices)} of {stored.n_unfavourable} unfavourable rows shown" in md
    for notice in stored.notices:
        assert re.search(rf"^\| {notice.test_row} \| (<|&lt;)=50K \|", md, re.MULTILINE)


def test_no_adverse_action_reasons_for_digits(digits):
    from scrutiny.reports.adverse_action import stored_notices

    assert stored_notices(digits.run) is None
    node = section(digits.html, "adverse_action")
    assert "No adverse-action reasons" in node.text() and node.find("table") is None
    assert "None for this run." in md_section(digits.md, "Adverse-action reasons")


def test_scoring_rate_table_points_at_each_rate_and_the_median(adult):
    """LL144's scoring-rate table sits beside the impact ratios, each number a pointer into the run."""
    details = adult.run.findings["details"]["fairness"]
    fairness = section(adult.html, "groups")  # the LL144 tables are an appendix
    paths = {s.attrs["data-path"] for s in num_spans(fairness)}
    assert "/details/fairness/median_score" in paths
    assert details["scoring_rates"]
    for i in range(len(details["scoring_rates"])):
        for field in ("n", "scoring_rate", "impact_ratio"):
            assert f"/details/fairness/scoring_rates/{i}/{field}" in paths, (i, field)
    assert "Scoring rates" in fairness.text() and "does not count" in fairness.text()
    markdown = md_section(adult.md, "Group tables: fairness per comparison, NYC LL144 rates and group sizes")
    assert "| attribute | category | n | scoring rate | impact ratio | flag |" in markdown
    assert markdown.count("\n| ") >= 2 * len(details["scoring_rates"])


def test_a_run_written_before_the_scoring_rates_reports_without_them(adult, tmp_path, capsys):
    from scrutiny.hashing import sha256_file

    run = copy_run(adult.path, tmp_path / "run")
    document = json.loads((run / "findings.json").read_text())
    for key in ("scoring_rates", "median_score"):
        del document["details"]["fairness"][key]
    (run / "findings.json").write_text(to_json(document))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"]["findings.json"] = sha256_file(run / "findings.json")
    (run / "manifest.json").write_text(to_json(manifest))
    code, _, err = report([str(run), "--format", "html,md", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Impact ratios (NYC" in html and "Scoring rates (NYC" not in html
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| selection rate | impact ratio |" in markdown and "| scoring rate |" not in markdown


# ------------------------------------------------------------------ sign-off


def test_the_signoff_section_shows_lines_to_sign_then_the_records_and_whether_the_run_verifies(adult, tmp_path,
                                                                                               capsys):
    run = copy_run(adult.path, tmp_path / "run")

    def rendered(out: str) -> tuple[Node, str]:
        code, _, err = report([str(run), "--format", "html,md", "--out", str(tmp_path / out)], capsys)
        assert code == 0, err
        html = parse_html((tmp_path / out / "report.html").read_text(encoding="utf-8"))
        return part(html, "section", id="signoff"), (tmp_path / out / "report.md").read_text(encoding="utf-8")

    section, markdown = rendered("unsigned")
    assert "No one has signed this run." in section.text() and "verified: 0 sign-off records" in section.text()
    assert [cells(row)[0].text() for row in part(section, "table").iter("tr")] == ["owner", "validator", "approver"]
    assert "| validator | | | | |" in markdown
    name = "Ada <b>Validator</b> | x"  # data-derived text stays text in both formats
    code, _, err = cli(capsys, "sign", run, "--name", name, "--role", "validator", "--decision", "reject",
                       "--reason", "fails the four-fifths rule")
    assert code == 0, err
    record = json.loads((run / "signoffs.jsonl").read_text().splitlines()[0])
    section, markdown = rendered("signed")
    rows = list(part(section, "table").iter("tr"))
    assert [c.text() for c in cells(rows[1])][:5] == [name, "validator", "reject", record["time"],
                                                      "fails the four-fifths rule"]
    assert record["record_sha256"] in cells(rows[1])[6].text()
    assert "verified: 1 sign-off record" in section.text() and "Not yet signed by every role." in section.text()
    assert "<b>" not in markdown and "| Ada &lt;b&gt;Validator&lt;/b&gt; \\| x | validator | reject |" in markdown
    # a changed file of the run stops the report itself (load_run); a record edited after signing is shown
    edited = (run / "signoffs.jsonl").read_text().replace("fails the four-fifths rule", "passes")
    (run / "signoffs.jsonl").write_text(edited)
    section, _ = rendered("tampered")
    problems = [li.text() for li in section.iter("li")]
    assert len(problems) == 1 and "record 1" in problems[0], problems
    assert "fail" in part(section, "p").classes() and "verified:" not in part(section, "p").text()


# ------------------------------------------------------------------ the attack ensemble and certification


def cells(row: Node) -> list[Node]:
    return [c for c in row.children if isinstance(c, Node) and c.tag in ("td", "th")]


def part(node: Node, tag: str, **attrs) -> Node:
    found = node.find(tag, **attrs)
    assert found is not None, f"no <{tag} {attrs}>"
    return found


def words(node: Node) -> str:
    """The node's text with runs of white space (and line breaks, <br>) as one space."""
    def text(n: Node) -> str:
        return " " if n.tag == "br" else "".join(c if isinstance(c, str) else text(c) for c in n.children)

    return " ".join(text(node).split())


def test_contributions_table_shows_what_each_attack_broke_per_radius(rendered):
    details = rendered.run.findings["details"]["robustness"]
    entries = details["contributions"]
    attacks = list(dict.fromkeys(e["attack"] for e in entries))
    assert attacks == details["attacks"] and len(entries) == len(attacks) * len(details["eps"])
    table = part(section(rendered.html, "robustness"), "table", id="contributions")
    assert [words(c) for c in cells(part(part(table, "thead"), "tr"))] == [
        "attack", "ran on", *(f"ε = {eps} broken / attacked" for eps in details["eps"])]
    rows = list(part(table, "tbody").iter("tr"))
    assert [words(cells(r)[0]) for r in rows] == attacks
    for i, entry in enumerate(entries):
        row = cells(rows[attacks.index(entry["attack"])])
        assert words(row[1]) == ("the rows left standing" if entry["chained"] else "every row")
        cell = row[2 + details["eps"].index(entry["eps"])]
        at = f"/details/robustness/contributions/{i}"
        assert [s.attrs["data-path"] for s in num_spans(cell)] == [f"{at}/broken", f"{at}/attacked"]
        assert words(cell) == f"{entry['broken']} / {entry['attacked']}"
    # independently of the table: at each radius the attacks broke, together, the rows the model gets
    # right less those the worst case leaves (the curve's counts)
    for eps in details["eps"]:
        worst = next(p for p in details["curve"] if p["attack"] == "worst case" and p["eps"] == eps)
        right, left = round(worst["clean_accuracy"] * worst["n"]), round(worst["robust_accuracy"] * worst["n"])
        assert sum(e["broken"] for e in entries if e["eps"] == eps) == right - left, eps
    assert "weak-evaluation checks flag it" in words(section(rendered.html, "robustness"))
    # the Markdown shows the same cells
    markdown = next(t for t in md_tables(rendered.md) if t[0].startswith("| attack | ran on |"))
    assert [c.strip() for c in md_cells(markdown[0])][2:] == [f"eps = {eps}: broken / attacked" for eps in details["eps"]]
    assert [[c.strip() for c in md_cells(line)] for line in markdown[2:]] == [[words(c) for c in cells(r)] for r in rows]


def test_certification_shows_both_bounds_per_radius_and_its_settings(rendered):
    findings = rendered.run.findings
    cert = findings["details"]["robustness"]["certification"]
    base = "/details/robustness/certification"
    robustness = section(rendered.html, "robustness")
    rows = list(part(part(robustness, "table", id="certified"), "tbody").iter("tr"))
    assert len(rows) == len(cert["table"]) >= 3
    for i, (row, entry) in enumerate(zip(rows, cert["table"])):
        row_cells, at = cells(row), f"{base}/table/{i}"
        assert [[s.attrs["data-path"] for s in num_spans(c)] for c in row_cells] == [
            [f"{at}/radius"], [f"{at}/certified_accuracy"], [f"{at}/attacked_accuracy"],
            [f"{at}/attacked_accuracy - {at}/certified_accuracy"], [f"{at}/certified", f"{at}/n"]]
        lower, upper = entry["certified_accuracy"], entry["attacked_accuracy"]
        assert upper is not None and lower <= upper, entry  # the model has gradients: both bounds, in order
        gap = num_spans(row_cells[3])[0]
        assert float(gap.attrs["data-value"]) == upper - lower and gap.text() == f"{upper - lower:.1%}"
        assert words(row_cells[4]) == f"{entry['certified']} of {entry['n']}" and entry["n"] == 8
        assert entry["certified"] == round(lower * entry["n"])
        assert ("(policy)" in row_cells[0].text()) == (entry["radius"] == cert["gated_radius"])
    gated = next(e for e in cert["table"] if e["radius"] == cert["gated_radius"])
    finding = next(f for f in findings["findings"] if f["id"] == f"robustness.certified_accuracy[radius={cert['gated_radius']:g}]")
    assert finding["value"] == gated["certified_accuracy"]
    assert sum("(policy)" in r.text() for r in rows) == 1
    shown = {s.attrs["data-path"] for s in num_spans(robustness)}
    assert {f"{base}/{key}" for key in ("sigma", "n0", "n", "alpha", "gated_radius", "smoothed_accuracy", "base_accuracy",
                                        "abstention_rate", "median_radius", "median_radius_correct")} <= shown
    text = words(robustness)
    assert f"Radii in {cert['units']}" in text
    assert "trained_sigma" not in cert and "The model was not trained with noise" in text  # the suite's models
    covered = "the certificate covers moves of these columns only"
    if rendered.run.findings["subject"]["data"]["task"] == "tabular":
        assert cert["noised"] and covered in text and ", ".join(cert["noised"]) in text
    else:
        assert cert["noised"] == [] and covered not in text
    figure = (rendered.path / "figures" / "certified.png").read_bytes()
    assert figure in {data_uri_bytes(i.attrs["src"]) for i in robustness.iter("img")}
    # the Markdown: the same rows, and the settings
    markdown = next(t for t in md_tables(rendered.md) if t[0].startswith("| L2 radius |"))
    assert [[c.strip() for c in md_cells(line)] for line in markdown[2:]] == [[words(c) for c in cells(r)] for r in rows]
    assert f"sigma = {cert['sigma']:.3g}, n0 = {cert['n0']:,}, n = {cert['n']:,}, alpha = {cert['alpha']:.3g}" in rendered.md


def _rewritten(run: Path, edit) -> None:
    """``edit`` the run's findings.json in place and record its new hash in the manifest."""
    from scrutiny.hashing import sha256_file

    document = json.loads((run / "findings.json").read_text())
    edit(document)
    (run / "findings.json").write_text(to_json(document))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"]["findings.json"] = sha256_file(run / "findings.json")
    (run / "manifest.json").write_text(to_json(manifest))


def test_a_run_written_before_contributions_and_certification_reports_without_them(digits, tmp_path, capsys):
    run = copy_run(digits.path, tmp_path / "run")

    def old(document):
        del document["details"]["robustness"]["contributions"], document["details"]["robustness"]["certification"]

    _rewritten(run, old)
    code, _, err = report([str(run), "--format", "html,md", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    html = parse_html((tmp_path / "out" / "report.html").read_text(encoding="utf-8"))
    robustness = section(html, "robustness")
    assert robustness.find("table", id="contributions") is None and robustness.find("table", id="certified") is None
    assert "What each attack added" not in robustness.text() and "Certified robustness" not in robustness.text()
    assert (run / "figures" / "certified.png").read_bytes() not in {data_uri_bytes(i.attrs["src"]) for i in html.iter("img")}
    assert "worst case" in robustness.text()  # the rest of the section is there
    markdown = md_section((tmp_path / "out" / "report.md").read_text(encoding="utf-8"), "Robustness")
    assert "| attack | eps = " in markdown and "| attack | ran on |" not in markdown and "| L2 radius |" not in markdown


@pytest.mark.parametrize("trained_sigma, words_html, words_md", [
    (0.5, "trained with Gaussian noise of σ = 0.5, not the σ certified here", "Trained with noise sigma = 0.5, not the"),
    (0.25, "trained with Gaussian noise of σ = 0.25.", "Trained with noise sigma = 0.25."),
], ids=["another-sigma", "the-same-sigma"])
def test_certification_without_an_upper_bound_and_with_a_trained_sigma(digits, tmp_path, capsys, trained_sigma,
                                                                        words_html, words_md):
    """A model without gradients has no attack on its smoothed classifier: the upper bounds and gaps
    are n/a; the σ the model was trained with is named, and whether it is the one certified."""
    run = copy_run(digits.path, tmp_path / "run")

    def edit(document):
        cert = document["details"]["robustness"]["certification"]
        assert cert["sigma"] == 0.25
        cert["attack"], cert["trained_sigma"] = "", trained_sigma
        for entry in cert["table"]:
            entry["attacked_accuracy"] = None

    _rewritten(run, edit)
    code, _, err = report([str(run), "--format", "html,md", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    robustness = section(parse_html((tmp_path / "out" / "report.html").read_text(encoding="utf-8")), "robustness")
    rows = list(part(part(robustness, "table", id="certified"), "tbody").iter("tr"))
    assert rows and all([words(c) for c in cells(r)][2:4] == ["n/a", "n/a"] for r in rows)
    text = words(robustness)
    assert "no attack gave an upper bound" in text and words_html in text
    assert ("not the σ certified here" in text) == (trained_sigma != 0.25)
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "no attack gave an upper bound" in markdown and words_md in markdown
    assert ("not the sigma certified here" in markdown) == (trained_sigma != 0.25)


# ------------------------------------------------------------------ 6. the digits run


def test_digits_report_has_no_fairness_and_shows_its_image_figures(digits):
    fairness = section(digits.html, "fairness")
    assert "not part of this audit" in fairness.text()
    assert fairness.find("table") is None
    assert not [s for s in num_spans(digits.html) if s.attrs["data-path"].startswith("/details/fairness")]
    assert "Not part of this audit" in md_section(digits.md, "Fairness")
    shown = {data_uri_bytes(i.attrs["src"]): i for i in digits.html.iter("img")}
    for name, where in (("heatmaps", "explainability"), ("adversarial", "robustness")):
        relative = f"figures/{name}.png"
        assert digits.run.has(relative), relative
        image = shown[(digits.path / relative).read_bytes()]
        ancestor = image.parent
        while ancestor.tag != "section":
            ancestor = ancestor.parent
        assert ancestor.attrs["id"] == where, name
    # the tabular-only parts are absent
    assert all("local explanations" != i.attrs.get("alt") for i in digits.html.iter("img"))


# ------------------------------------------------------------------ 7. errors


def _edit_value(run: Path) -> str:
    document = json.loads((run / "findings.json").read_text())
    document["findings"][0]["value"] = (document["findings"][0]["value"] or 0) + 0.125
    (run / "findings.json").write_text(to_json(document))
    return str(run / "findings.json")


def _truncate(run: Path) -> str:
    data = (run / "findings.json").read_bytes()
    (run / "findings.json").write_bytes(data[: len(data) // 2])
    return str(run / "findings.json")


def _delete(relative: str):
    def corrupt(run: Path) -> str:
        (run / relative).unlink()
        return str(run / relative)
    return corrupt


BROKEN_RUNS = {
    "findings.json missing": (_delete("findings.json"), "missing"),
    "findings.json edited": (_edit_value, "SHA-256"),
    "findings.json truncated": (_truncate, "not valid JSON"),
    "manifest.json missing": (_delete("manifest.json"), "missing"),
    "figure deleted": (_delete("figures/importance.png"), "missing"),
}


def _assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err + out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "report written" not in out


def _assert_nothing_written(out_dir: Path) -> None:
    assert not out_dir.exists() or not any(out_dir.rglob("*")), sorted(out_dir.rglob("*"))


@pytest.mark.parametrize("case", list(BROKEN_RUNS))
def test_a_broken_run_folder_is_one_line_error_naming_the_file(adult, tmp_path, capsys, case):
    corrupt, words = BROKEN_RUNS[case]
    run = copy_run(adult.path, tmp_path / "run")
    load_run(run)  # intact before
    named = corrupt(run)
    out_dir = tmp_path / "reports"
    code, out, err = report([str(run), "--format", "html,pdf,md", "--out", str(out_dir)], capsys)
    _assert_one_line_error(code, out, err, named, words)
    _assert_nothing_written(out_dir)
    assert not (run / "report").exists()


def test_a_run_folder_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    out_dir = tmp_path / "reports"
    code, out, err = report([str(missing), "--out", str(out_dir)], capsys)
    _assert_one_line_error(code, out, err, str(missing))
    _assert_nothing_written(out_dir)


def test_an_unknown_format(adult, tmp_path, capsys):
    out_dir = tmp_path / "reports"
    code, out, err = report([str(adult.path), "--format", "html,docx", "--out", str(out_dir)], capsys)
    _assert_one_line_error(code, out, err, "--format", "docx")
    _assert_nothing_written(out_dir)


def test_a_mapping_naming_an_unknown_check(adult, tmp_path, capsys):
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('version = 1\n\n[clauses."X-1"]\nframework = "X"\nreference = "1"\ntitle = "t"\n'
                       'summary = "s"\n\n[checks."fairness.disparate_impact"]\nclauses = ["X-1"]\n\n'
                       '[checks."fairness.bogus_ratio"]\nclauses = ["X-1"]\n')
    out_dir = tmp_path / "reports"
    code, out, err = report([str(adult.path), "--format", "html,md", "--out", str(out_dir), "--mapping", str(mapping)],
                            capsys)
    _assert_one_line_error(code, out, err, str(mapping), "fairness.bogus_ratio")
    _assert_nothing_written(out_dir)


def test_a_card_with_an_unknown_key(adult, tmp_path, capsys):
    card = tmp_path / "card.toml"
    card.write_text('intended_use = "Screening"\nowner_email = "someone@example.org"\n')
    out_dir = tmp_path / "reports"
    code, out, err = report([str(adult.path), "--format", "html", "--out", str(out_dir), "--card", str(card)], capsys)
    _assert_one_line_error(code, out, err, "--card", str(card), "owner_email")
    _assert_nothing_written(out_dir)


def test_library_errors_name_the_parameters_not_the_cli_options(adult, tmp_path):
    from scrutiny.errors import InputError
    from scrutiny.reports.render import check_formats, load_card, write_reports

    with pytest.raises(InputError, match=r"^formats docx: expected some of html, pdf, md$"):
        write_reports(adult.path, formats=["html", "docx"], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match=r"^formats \(none\): expected"):
        check_formats([" ", ""])
    assert check_formats([" HTML", "md", "html"]) == ["html", "md"]
    card = tmp_path / "card.toml"
    card.write_text('owner_email = "someone@example.org"\n')
    with pytest.raises(InputError, match=rf"^card {re.escape(str(card))}: unknown key 'owner_email'"):
        load_card(card)
    with pytest.raises(InputError, match=rf"^--card {re.escape(str(card))}: unknown key"):  # as the CLI names it
        load_card(card, what="--card")
    with pytest.raises(InputError, match=r"^card \S+: no such file$"):
        load_card(tmp_path / "missing.toml")


# ------------------------------------------------------------------ 8. --card, --out, permissions


def test_card_out_folder_and_permissions(adult, tmp_path, capsys):
    run = copy_run(adult.path, tmp_path / "run")
    card = tmp_path / "card.toml"
    intended = "Ranking <b>loan</b> applications | for human review & nothing else"
    card.write_text(f'intended_use = "{intended}"\nout_of_scope = "Automated denial"\nowner = "Risk team"\n'
                    'limitations = ["Trained on 1994 census data"]\n')
    out_dir = tmp_path / "reports" / "nested"
    mask = os.umask(0o022)
    try:
        code, out, err = report([str(run), "--format", "md,html", "--out", str(out_dir), "--card", str(card)], capsys)
    finally:
        os.umask(mask)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["report.html", "report.md"]  # no partial files left
    printed = out.replace("\n", "")  # rich wraps long paths at the terminal width
    assert str(out_dir / "report.html") in printed and str(out_dir / "report.md") in printed
    assert not (run / "report").exists()  # --out, not the run's own folder
    for path in (out_dir / "report.html", out_dir / "report.md"):
        assert path.stat().st_mode & 0o044 == 0o044, oct(path.stat().st_mode)
    assert out_dir.stat().st_mode & 0o055 == 0o055, oct(out_dir.stat().st_mode)
    html = parse_html((out_dir / "report.html").read_text(encoding="utf-8"))
    model_card = section(html, "model_card")
    text = " ".join(model_card.text().split())
    assert intended in text  # shown as text, escaped: no <b> element made of it
    assert not [b for b in model_card.iter("b") if b.text() == "loan"]
    assert "Not stated" not in text
    assert "Automated denial" in text and "Risk team" in text and "Trained on 1994 census data" in text
    md = (out_dir / "report.md").read_text(encoding="utf-8")
    assert "**Intended use:** Ranking &lt;b&gt;loan&lt;/b&gt; applications \\| for human review &amp; nothing else" in md
    # without --card the module's report says it is not stated
    assert "Not stated" in section(adult.html, "model_card").text()


def test_reproducibility_appendix_shows_the_audit_command(adult):
    """The command given to main(), not the host process's arguments (pytest's here)."""
    command = section(adult.html, "reproducibility").find("code").text()
    assert command.startswith("scrutiny audit ") and "--config" in command and "--device cpu" in command
    seed = [s for s in num_spans(section(adult.html, "reproducibility")) if s.attrs["data-path"] == "/seed"]
    assert len(seed) == 1 and seed[0].text() == "0"
