"""Typed details: the published schemas are the classes', the fairness details keep an
intersection's structure, and the readers (reports, app) go through the types and the families'
file-name constants instead of raw keys and spelt-out paths."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import jsonschema
import pytest

from scrutiny.audit.fairness.details import FairnessDetails, GroupComparisonEntry, ImpactRatioEntry, Level
from scrutiny.audit.run.details import Estimate
from scrutiny.audit.run.family import FAMILIES, details_type, schema_path
from scrutiny.audit.run.run_folder import to_json

ROOT = Path(__file__).resolve().parents[1]
READERS = sorted([*(ROOT / "reports").glob("*.py"), *(ROOT / "app").glob("*.py")])


@pytest.mark.parametrize("family", FAMILIES)
def test_published_schema_is_generated_from_the_details_class(family):
    """`python -m scrutiny.audit.run.family` was rerun after the last change to a details class."""
    assert json.loads(schema_path(family).read_text(encoding="utf-8")) == details_type(family).json_schema()


def _comparison(levels: list[tuple[str, str]]) -> GroupComparisonEntry:
    return GroupComparisonEntry(
        attribute=" × ".join(a for a, _ in levels), privileged=" and ".join(v for _, v in levels),
        privileged_levels=[Level(a, v) for a, v in levels], n_privileged=40, n_unprivileged=60,
        metrics={"disparate_impact": Estimate(0.8, 0.7, math.nan)}, per_group={}, warnings=[])


def _fairness() -> FairnessDetails:
    crossed = [("sex", "sex in {Male}"), ("race", "race in {White × Asian}")]
    return FairnessDetails(
        confidence=0.95, data_bias=[_comparison(crossed[:1]), _comparison(crossed)], model=[],
        impact_ratios=[ImpactRatioEntry(attribute="sex × race", category="Male × White × Asian",
                                        levels=[Level("sex", "Male"), Level("race", "White × Asian")], n=12,
                                        selection_rate=0.5, impact_ratio=1.0, below_four_fifths=False, excluded=False)],
        consistency=None, warnings=[], settings={"intersections": True})


def test_fairness_details_keep_an_intersections_levels_through_json():
    details = _fairness()
    document = json.loads(to_json(details.to_dict()))  # as findings.json holds them
    jsonschema.validate(document, json.loads(schema_path("fairness").read_text(encoding="utf-8")))
    assert document["data_bias"][1]["privileged_levels"] == [
        {"attribute": "sex", "value": "sex in {Male}"}, {"attribute": "race", "value": "race in {White × Asian}"}]
    back = FairnessDetails.from_dict(document)
    assert back.data_bias[1].attributes == ["sex", "race"] and back.data_bias[0].attributes == ["sex"]
    assert back.impact_ratios[0].attributes == ["sex", "race"]
    assert [level.value for level in back.impact_ratios[0].levels] == ["Male", "White × Asian"]
    assert back.data_bias[1].privileged_levels == details.data_bias[1].privileged_levels


def test_fairness_details_without_levels_are_refused_naming_the_field():
    document = _fairness().to_dict()
    del document["impact_ratios"][0]["levels"]
    with pytest.raises(ValueError, match=r"FairnessDetails\.impact_ratios\[0\]: missing key 'levels'"):
        FairnessDetails.from_dict(document)


def _constants(tree: ast.AST) -> list[str]:
    """The string constants of the code, docstrings left out."""
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
                  and isinstance(node.value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("path", READERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_readers_spell_no_run_file_name_and_read_no_raw_details(path):
    """A run-folder file is named where its family writes it (``audit/<family>/details.py``); the
    details are read typed (``run.details(family)``), intersections from their levels."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    spelt = [c for c in _constants(tree) if c.startswith(("arrays/", "figures/")) or c.endswith((".npz", ".parquet"))]
    assert not spelt, spelt
    assert not [c for c in _constants(tree) if " × " in c], "an intersection's display text joined or split"
    raw = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Subscript)
           and isinstance(node.slice, ast.Constant) and node.slice.value == "details"]
    assert not raw, f"{path.name}: findings['details'] read raw at line(s) {raw}"


def _without_levels(document: dict) -> dict:
    """``document`` as a run written before the levels were recorded holds it."""
    old = json.loads(json.dumps(document))
    for entry in (*old["data_bias"], *old["model"]):
        del entry["privileged_levels"]
    for entry in old["impact_ratios"]:
        del entry["levels"]
    return old


def test_an_earlier_runs_levels_are_derived_where_the_display_strings_allow_it():
    details = _fairness()
    details.impact_ratios[0] = ImpactRatioEntry(attribute="sex × race", category="Male × White", levels=[
        Level("sex", "Male"), Level("race", "White")], n=12, selection_rate=0.5, impact_ratio=1.0,
        below_four_fifths=False, excluded=False)
    document = json.loads(to_json(details.to_dict()))
    upgraded = FairnessDetails.from_dict(FairnessDetails.upgrade(_without_levels(document)))
    assert to_json(upgraded.to_dict()) == to_json(document)


def test_an_earlier_run_whose_display_strings_are_ambiguous_is_refused_not_guessed():
    old = _without_levels(json.loads(to_json(_fairness().to_dict())))  # category "Male × White × Asian": 3 pieces
    upgraded = FairnessDetails.upgrade(old)
    assert "privileged_levels" in upgraded["data_bias"][1] and "levels" not in upgraded["impact_ratios"][0]
    with pytest.raises(ValueError, match=r"impact_ratios\[0\]: missing key 'levels'"):
        FairnessDetails.from_dict(upgraded)


def test_load_run_reads_an_earlier_runs_fairness_details(tmp_path):
    from scrutiny.audit.run.findings import findings_document
    from scrutiny.audit.run.run_folder import load_run
    from scrutiny.hashing import sha256_file

    details = _fairness()
    details.impact_ratios = []
    subject = {"model": {"source": "checkpoint", "architecture": "mlp", "weights_sha256": "0" * 64},
               "data": {"name": "t", "task": "tabular", "sha256": "0" * 64, "n_train": 1, "n_test": 1,
                        "classes": ["a", "b"]}}
    document = findings_document([], details={"fairness": _without_levels(details.to_dict())}, subject=subject)
    (tmp_path / "findings.json").write_text(to_json(document), encoding="utf-8")
    manifest = {"format_version": 1, "files": {"findings.json": sha256_file(tmp_path / "findings.json")}}
    (tmp_path / "manifest.json").write_text(to_json(manifest), encoding="utf-8")
    read = load_run(tmp_path).details("fairness")
    assert [c.attributes for c in read.data_bias] == [["sex"], ["sex", "race"]]
    assert read.data_bias[1].privileged_levels == details.data_bias[1].privileged_levels


def test_a_finding_must_have_what_its_checks_registry_entry_declares():
    from scrutiny.audit.run.family import AuditContext
    from scrutiny.audit.run.findings import Comparison
    from scrutiny.audit.run.policy import load_policy

    context = AuditContext(model=None, dataset=None, preprocessor=None, config=None, policy=load_policy(),
                           device="cpu")
    compared = Comparison(no_difference=1.0, rows=50, expected_positives=9.0, group="privileged group", among="",
                          min_rows=30, min_expected_positives=5)
    found = context.finding("fairness.impact_ratio", 0.7, "x", metric="m", subject="sex", comparison=compared)
    assert found.family == "fairness" and found.threshold == load_policy().threshold("fairness.impact_ratio")
    with pytest.raises(ValueError, match="group comparison"):
        context.finding("fairness.impact_ratio", 0.7, "x", metric="m", subject="sex")
    with pytest.raises(ValueError, match="names subject"):
        context.finding("attributions.completeness", 0.01, "x", metric="m")
    with pytest.raises(ValueError, match="has no subject"):
        context.finding("performance.balanced_accuracy", 0.9, "x", metric="m", subject="anything")
