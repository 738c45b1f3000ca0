"""What a report says, gathered from one run folder (never recomputed).

:func:`report_content` turns a :class:`~scrutiny.audit.run.run_folder.Run` into plain data the
templates lay out. Every number taken from ``findings.json`` or ``manifest.json`` is a
:class:`Num` that remembers where it came from (a JSON pointer), so the HTML can carry the
exact value beside the rounded one and a test can check each against the run. The families'
details are read typed (``run.details(family)``); their pointers follow the details classes'
field names, which are the JSON's keys.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scrutiny.audit.attributions import details as attributions
from scrutiny.audit.fairness import details as fairness
from scrutiny.audit.robustness import details as robustness
from scrutiny.audit.run.details import Details
from scrutiny.audit.run.findings import STATUS_WORDS, STATUSES
from scrutiny.reports.adverse_action import stored_notices
from scrutiny.reports.compliance import Mapping, compliance_section

__all__ = ["Num", "report_content", "SECTIONS"]

SECTIONS = (  # key, title, whether it is an appendix
    ("summary", "Executive summary", False),
    ("findings", "Findings that need attention", False),
    ("model_card", "Model card", False),
    ("explainability", "Explainability", False),
    ("robustness", "Robustness", False),
    ("fairness", "Fairness", False),
    ("adverse_action", "Adverse-action reasons", False),
    ("signoff", "Sign-off", False),
    ("compliance", "Compliance mapping", False),
    ("passes", "Checks that passed", True),
    ("groups", "Group tables: fairness per comparison, NYC LL144 rates and group sizes", True),
    ("importance", "Global importance and agreement between methods", True),
    ("clauses", "Clause texts", True),
    ("reproducibility", "Reproducibility", True),
)
SIGNING_ROLES = ("owner", "validator", "approver")  # the lines to sign on a run no one has signed yet


_BOUND_WORDS = {"fail_below": "fail <", "fail_above": "fail >", "warn_below": "warn <", "warn_above": "warn >"}


@dataclass(frozen=True)
class Num:
    """A number shown in a report and where in the run it comes from."""

    value: float | None
    source: str          # "findings", "manifest" or "arrays"
    path: str            # JSON pointer into that file (arrays: FILE#NAME[ROW,COLUMN]); a difference of two
                         # values of the file: "POINTER - POINTER" (a pointer escapes "/", so " - /" splits it)
    style: str = "fixed"  # fixed, percent, signed, int, g, value, count (one decimal, thousands separated:
                          # expected counts, seconds)

    @property
    def text(self) -> str:
        v = self.value
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "n/a"
        if self.style == "percent":
            return f"{v:.1%}"
        if self.style == "signed":
            return f"{v:+.3f}"
        if self.style == "int":
            return f"{int(v):,}"
        if self.style == "g":
            return f"{v:.3g}"
        if self.style == "count":
            return f"{v:,.1f}"
        if self.style == "value":  # a check's value or bound: a count as a whole number, a rate or ratio fixed
            return f"{int(v):,}" if float(v).is_integer() else f"{v:.3f}"
        return f"{v:.3f}"


@dataclass(frozen=True)
class _At:
    """A place in one of a run's JSON files and what it holds there: typed details (a
    :class:`~scrutiny.audit.run.details.Details`), or a plain table or list of the document.

    :meth:`at` steps into a Details object by field name only, so a name its class does not
    declare fails (AttributeError) instead of showing nothing; tables and lists by key and index.
    """

    node: Any
    pointer: str = ""
    source: str = "findings"  # or "manifest"

    def at(self, *path) -> _At:
        node, pointer = self.node, self.pointer
        for key in path:
            node = _step(node, key)
            pointer += "/" + str(key).replace("~", "~0").replace("/", "~1")
        return _At(node, pointer, self.source)

    def num(self, *path, style: str = "fixed") -> Num:
        value = self.at(*path)
        return Num(value=_number(value.node), source=self.source, path=value.pointer, style=style)


def _step(node, key):
    if isinstance(node, Details):
        if key not in {f.name for f in dataclasses.fields(node)}:
            raise AttributeError(f"{type(node).__name__} has no field {key!r}")
        return getattr(node, key)
    return node[key]


def _number(value) -> float | None:
    """JSON's null, which typed details read back as NaN, is None: shown as n/a."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _details(run, family: str) -> _At | None:
    """The typed details of ``family`` at their place in findings.json, or None when the run has none."""
    typed = run.details(family)
    return None if typed is None else _At(typed, f"/details/{family}")


@dataclass
class Figure:
    title: str
    data_uri: str


@dataclass
class Content:
    title: str
    run_name: str
    verdict: str
    counts: dict
    sections: list[tuple[str, str, str]]  # key, title, heading ("3. Fairness", "Appendix A. Checks that passed")
    summary: dict
    model_card: dict
    explainability: dict | None
    robustness: dict | None
    fairness: dict | None
    absent: dict          # family -> why its section is empty (no details): left out, or not assessed
    adverse_action: dict
    compliance: dict
    clause_texts: list    # every clause of the mapping, in its order (the appendix)
    signoff: dict
    reproducibility: dict
    figures: dict[str, Figure | None] = field(default_factory=dict)  # None: the run has no such figure


def report_content(run, mapping: Mapping, *, card: dict | None = None) -> Content:
    """Everything the report shows, from ``run`` and the compliance ``mapping``."""
    # the summary and the remediation read findings with this module's pointers: imported here, not above
    from scrutiny.reports.remediation import remediation
    from scrutiny.reports.summary import executive_summary

    f = _At(run.findings)
    m = _At(run.manifest, source="manifest")
    findings = run.findings
    data = findings["subject"]["data"]
    model = findings["subject"]["model"]
    fairness_details = _details(run, "fairness")
    figures = {name: Figure(title, _png(run, file)) if run.has(file) else None for name, file, title in (
        ("importance", attributions.IMPORTANCE_FIGURE,
         "Global importance: mean |attribution| with 95 % bootstrap intervals"),
        ("agreement", attributions.AGREEMENT_FIGURE, "Agreement between methods: median per-row Spearman correlation"),
        ("heatmaps", attributions.HEATMAPS_FIGURE, "Attributions over the input"),
        ("robustness", robustness.CURVE_FIGURE, "Robust accuracy against the perturbation radius"),
        ("min_eps", robustness.MIN_EPS_FIGURE, "Minimal perturbations: share of rows flipped by at most eps"),
        ("adversarial", robustness.EXAMPLES_FIGURE, "Adversarial examples beside their perturbation"),
        ("certified", robustness.CERTIFIED_FIGURE,
         "Randomized smoothing: certified accuracy (lower bound, steps) and accuracy under an attack on the smoothed "
         "classifier (upper bound, measured at the points and held to the next) against the L2 radius"),
        ("fairness", fairness.METRICS_FIGURE, "Fairness metrics with 95 % bootstrap intervals"),
    )}
    rows = []
    for i, entry in enumerate(findings["findings"]):
        interval = entry["interval"]
        rows.append({
            "index": i, "id": entry["id"], "subject": entry["subject"], "family": entry["family"], "metric": entry["metric"], "status": entry["status"],
            "status_text": STATUS_WORDS[entry["status"]],
            "value": f.num("findings", i, "value", style="value"),
            "low": f.num("findings", i, "interval", "low", style="value") if interval else None,
            "high": f.num("findings", i, "interval", "high", style="value") if interval else None,
            "threshold": [(_BOUND_WORDS[k], f.num("findings", i, "threshold", k, style="value"))
                          for k in entry["threshold"]],
            "bounds": _bounds(f, i, entry["threshold"]),
            "explanation": entry["explanation"], "caveats": entry["caveats"],
            "clauses": [c.id for c in mapping.for_check(entry["check"])],
        })
    architecture = run.manifest["model"].get("architecture") or {}
    card = card or {}
    remedies = remediation(run, rows)
    for row in rows:
        row["remediation"] = remedies.get(row["index"])
    limitations = [f"{r['id']}: fails the policy (see {SECTIONS[1][1]})" for r in rows if r["status"] == "fail"]
    return Content(
        title=f"Audit of {model.get('architecture') or model['source']} on {data['name']}",
        run_name=run.name,
        verdict=findings["verdict"],
        # runs written before the insufficient status have no count of it
        counts={k: f.num("counts", k, style="int") for k in STATUSES if k in findings["counts"]},
        sections=_headings(),
        summary={
            "model": model, "data": data, "date": run.manifest.get("finished", ""),
            "weights_sha256": model["weights_sha256"], "data_sha256": data["sha256"],
            "decisions": run.manifest["model"].get("decisions"),  # an audit of logged predictions: how they were made
            "n_test": f.num("subject", "data", "n_test", style="int"), "rows": rows,
            "executive": executive_summary(run, rows, card),
            "attention": [r for r in rows if r["status"] != "pass"], "passes": [r for r in rows if r["status"] == "pass"],
        },
        model_card={
            "intended_use": card.get("intended_use"), "out_of_scope": card.get("out_of_scope"),
            "owner": card.get("owner"),
            "architecture": architecture.get("name") if isinstance(architecture, dict) else None,
            "architecture_config": architecture.get("config") if isinstance(architecture, dict) else None,
            "source": run.manifest["model"]["source"], "kind": run.manifest["model"]["kind"],
            "data": data, "n_train": f.num("subject", "data", "n_train", style="int"),
            "performance": _performance(_details(run, "performance")),
            "groups": _group_performance(fairness_details),
            "limitations": [*card.get("limitations", []), *limitations],
            "stated_limitations": list(card.get("limitations", [])),
            "failing": [r["id"] for r in rows if r["status"] == "fail"],
            "clauses": mapping.for_section("model_card"),
        },
        absent=_absent(run),
        explainability=_explainability(_details(run, "attributions"), run),
        robustness=_robustness(_details(run, "robustness"), mapping),
        fairness=_fairness(fairness_details, f),
        adverse_action=_adverse_action(run, mapping),
        compliance=compliance_section(mapping, run),
        clause_texts=list(mapping.clauses.values()),
        signoff=_signoff(run),
        reproducibility={
            "command": " ".join(run.manifest.get("command") or []),
            "seed": m.num("seed", style="int"),
            "config": run.manifest.get("config", {}),
            "policy_source": run.manifest.get("policy", {}).get("source"),
            "weights_sha256": run.manifest["model"]["weights_sha256"] or "none: an audit of logged predictions",
            "data_sha256": run.manifest["data"]["sha256"],
            "libraries": run.manifest.get("libraries", {}), "device": run.manifest.get("device"),
            "platform": run.manifest.get("platform"),
            "started": run.manifest.get("started"), "finished": run.manifest.get("finished"),
            "seconds": [(k, m.num("seconds", k, style="count")) for k in run.manifest.get("seconds", {})],
            "files": run.manifest.get("files", {}),
            "clauses": mapping.for_section("reproducibility"),
        },
        figures=figures,
    )


def _bounds(f: _At, i: int, threshold: dict) -> list[tuple[str, list[tuple[str, Num]]]]:
    """A finding's thresholds by level, for one line each: [("fail", [("<", 0.8), (">", 1.25)]), ("warn", …)]."""
    out = []
    for level in ("fail", "warn"):
        sides = [(mark, f.num("findings", i, "threshold", f"{level}_{side}", style="value"))
                 for side, mark in (("below", "<"), ("above", ">")) if f"{level}_{side}" in threshold]
        if sides:
            out.append((level, sides))
    return out


def _headings() -> list[tuple[str, str, str]]:
    """Each section's key, title and heading: numbered in the body, lettered in the appendices."""
    out, body, appendix = [], 0, 0
    for key, title, is_appendix in SECTIONS:
        if is_appendix:
            appendix += 1
            out.append((key, title, f"Appendix {chr(ord('A') + appendix - 1)}. {title}"))
        else:
            body += 1
            out.append((key, title, f"{body}. {title}"))
    return out


def _signoff(run) -> dict:
    """The run's sign-off records (``scrutiny sign``) and whether the run verifies now: its files
    against the manifest, the records' chain, hashes and signatures; the roles still to sign."""
    from scrutiny.audit.run.signoff import read_signoffs, verify_run

    records = read_signoffs(run.path)
    checked = verify_run(run.path)
    return {
        "records": [{"name": r.get("name"), "role": r.get("role"), "decision": r.get("decision"),
                     "time": r.get("time"), "reason": r.get("reason"),
                     "exceptions": list(r.get("accepted_exceptions") or []), "signed": "signature" in r,
                     "sha256": r.get("record_sha256")} for r in records],
        "verified": checked.ok, "problems": list(checked.problems),
        "summary": checked.summary() if checked.ok else
        f"NOT VERIFIED: {len(checked.problems)} problem(s) with the files or the sign-off records since they were "
        "written (scrutiny verify RUN lists the same):",
        "unsigned_roles": [role for role in SIGNING_ROLES if role not in {r.get("role") for r in records}],
    }


def _absent(run) -> dict[str, str]:
    """Why a family's section is empty, where it is (:meth:`Run.absent`)."""
    return {family: run.absent(family) for family in ("attributions", "robustness", "fairness")
            if run.details(family) is None}


def _png(run, relative: str) -> str:
    return "data:image/png;base64," + base64.b64encode(run.file(relative).read_bytes()).decode("ascii")


def _performance(performance: _At | None) -> list:
    if performance is None:
        return []
    out = []
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                       ("calibration_error", "expected calibration error")):
        out.append({"metric": label, "value": performance.num(key, "value"), "low": performance.num(key, "low"),
                    "high": performance.num(key, "high")})
    if performance.node.roc_auc is not None:
        out.append({"metric": "ROC AUC", "value": performance.num("roc_auc"), "low": None, "high": None})
    return out


def _group_performance(fairness_details: _At | None) -> list:
    """Each group of each single attribute (intersections left out), once: rows, selection rate,
    true- and false-positive rates, accuracy, ROC AUC, calibration."""
    if fairness_details is None:
        return []
    out, seen = [], set()
    for i, comparison in enumerate(fairness_details.node.model):
        if len(comparison.attributes) > 1:
            continue
        for side in comparison.per_group:
            name = comparison.privileged if side == "privileged" else \
                (comparison.compared or "all others")
            if (comparison.attribute, name) in seen:  # a reference category heads each of its comparisons
                continue
            seen.add((comparison.attribute, name))
            group = fairness_details.at("model", i, "per_group", side)
            out.append({"attribute": comparison.attribute, "group": name, "n": group.num("n", style="int"),
                        **{key: group.num(key) for key in ("selection_rate", "true_positive_rate",
                                                           "false_positive_rate", "accuracy", "roc_auc",
                                                           "calibration_error")}})
    return out


def _explainability(explained: _At | None, run) -> dict | None:
    if explained is None:
        return None
    d = explained.node
    importance = []
    for method, entry in d.importance.items():
        at = explained.at("importance", method)
        order = np.argsort(-np.asarray(entry.mean, dtype=float), kind="stable")[:10]
        importance.append({"method": method, "rows": [
            {"feature": d.features[j], "mean": at.num("mean", int(j), style="g"),
             "low": at.num("low", int(j), style="g"), "high": at.num("high", int(j), style="g")} for j in order]})
    importance_table = _importance_table(explained)
    agreement = []
    for i, pair in enumerate(d.agreement):
        at = explained.at("agreement", i)
        agreement.append({"pair": " vs ".join(pair.methods), "median": at.num("spearman_median"),
                          "global": at.num("spearman_global"), "overlap": at.num("top_k_overlap", style="percent"),
                          "k": pair.top_k})
    quality = []
    for method in d.quality:
        at = explained.at("quality", method)
        quality.append({"method": method, "deletion_ratio": at.num("deletion_ratio"),
                        "deletion_auc": at.num("deletion_auc"), "random_deletion_auc": at.num("random_deletion_auc"),
                        "infidelity": at.num("infidelity_median", style="g"),
                        "sensitivity": at.num("sensitivity_median", style="g"),
                        "randomisation": at.num("randomisation_spearman")})
    methods = []
    for name, entry in d.methods.items():
        at = explained.at("methods", name)
        methods.append({"method": name, "output": entry.output, "baseline": entry.baseline,
                        "completeness": at.num("completeness_p95", style="percent")
                        if entry.completeness_p95 is not None else None,
                        "sampling_error": at.num("sampling_error_p95", style="percent")
                        if entry.sampling_error_p95 is not None else None})
    return {"n": explained.num("n", style="int"), "output": d.output, "methods": methods, "importance": importance,
            "importance_table": importance_table,
            "agreement": agreement, "quality": quality, "local": _local_figure(run, d),
            "sequence": _sequence(explained, run),
            "not_assessed": sorted((d.not_assessed or {}).items())}


def _sequence(explained: _At, run) -> dict | None:
    """A sequence model's attributions over time steps and features (details ``sequence``; None for
    other models): the time profile of each method, the first-time-step check, and a figure of the
    first method's (T, F) heat map beside the time profiles."""
    d = explained.node.sequence
    if d is None:
        return None
    at = explained.at("sequence")
    profile = [{"method": m, "shares": [at.num("time_share", m, t, style="percent") for t in range(len(d.time_steps))]}
               for m in d.time_share]
    checks = []
    for m, entry in (d.first_step or {}).items():
        check = at.at("first_step", m)
        checks.append({"method": m, "n": check.num("n", style="int"), "baseline": entry.baseline,
                       "audit": check.num("audit_share", style="percent"),
                       "shuffled": check.num("shuffled_share", style="percent"),
                       "difference": check.num("difference", style="percent")})
    return {"steps": d.time_steps, "profile": profile, "first_step": checks, "figure": _sequence_figure(run, d)}


def _sequence_figure(run, d: attributions.SequenceDetails) -> str | None:
    """The first method's mean |attribution| per time step and feature (the stored heat map),
    beside every method's time profile."""
    from scrutiny.audit.plots import subplots

    stored = run.arrays(attributions.ARRAYS)
    method = next((m for m in d.time_share if m + attributions.TIME_FEATURE_SUFFIX in stored), None)
    if method is None:
        return None
    heat = np.asarray(stored[method + attributions.TIME_FEATURE_SUFFIX], dtype=float)
    fig, (left, right) = subplots(1, 2, figsize=(8.4, 2.9), gridspec_kw={"width_ratios": [1.15, 1]})
    shown = left.imshow(heat, cmap="viridis", aspect="auto")
    left.set_xticks(range(len(d.features)), d.features, rotation=90, fontsize=7)
    left.set_yticks(range(len(d.time_steps)), d.time_steps, fontsize=7)
    left.set_xlabel("feature", fontsize=8)
    left.set_ylabel("time step", fontsize=8)
    left.set_title(f"{method}: mean |attribution| ({d.n[method]} rows)", fontsize=9)
    fig.colorbar(shown, ax=left, fraction=0.05)
    steps = np.arange(len(d.time_steps))
    width = 0.8 / max(1, len(d.time_share))
    for k, (m, shares) in enumerate(d.time_share.items()):
        right.bar(steps + (k - (len(d.time_share) - 1) / 2) * width, shares, width=width, label=m)
    right.set_xticks(steps, d.time_steps, fontsize=7)
    right.tick_params(labelsize=7)
    right.set_xlabel("time step", fontsize=8)
    right.set_title("share of |attribution| per time step (mean over rows)", fontsize=9)
    right.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _importance_table(explained: _At, top: int = 10) -> dict:
    """One table of global importance: a row per feature in any method's top ``top`` (ordered by the
    first method's mean |attribution|), a column per method."""
    d = explained.node
    methods = list(d.importance)
    means = {m: np.asarray(d.importance[m].mean, dtype=float) for m in methods}
    chosen = {int(j) for m in methods for j in np.argsort(-means[m], kind="stable")[:top]}
    order = sorted(chosen, key=lambda j: (-means[methods[0]][j], j))
    rows = []
    for j in order:
        cells = {}
        for m in methods:
            at = explained.at("importance", m)
            cells[m] = {"mean": at.num("mean", j, style="g"), "low": at.num("low", j, style="g"),
                        "high": at.num("high", j, style="g")}
        rows.append({"feature": d.features[j], "cells": cells})
    return {"methods": methods, "rows": rows, "top": top}


def _local_figure(run, details: attributions.AttributionsDetails) -> str | None:
    """Top features of a few explained rows as bars (tables only), from the stored attributions."""
    if run.findings["subject"]["data"]["task"] != "tabular":
        return None
    from scrutiny.audit.plots import subplots

    stored = run.arrays(attributions.ARRAYS)
    method = next(iter(details.methods))
    values, rows, target = stored[method], stored["rows"], stored["target"]
    classes = run.findings["subject"]["data"]["classes"]
    shown = min(2, len(rows))
    columns = min(2, shown)
    grid = (shown + columns - 1) // columns
    fig, axes = subplots(grid, columns, figsize=(4.6 * columns, 2.6 * grid), squeeze=False)
    for ax in axes.flat[shown:]:
        ax.set_visible(False)
    for ax, i in zip(axes.flat, range(shown)):
        order = np.argsort(-np.abs(values[i]), kind="stable")[:6][::-1]
        ax.barh([details.features[j] for j in order], values[i][order],
                color=["#b2182b" if v < 0 else "#2166ac" for v in values[i][order]])
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(f"test row {rows[i]}: explains '{classes[target[i]]}'", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"Local explanations ({method}): blue pushes toward the explained class, red away", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _robustness(attacked: _At | None, mapping: Mapping) -> dict | None:
    if attacked is None:
        return None
    d = attacked.node
    curve: dict[str, dict[float, Num]] = {}
    for i, point in enumerate(d.curve):
        curve.setdefault(point.attack, {})[point.eps] = attacked.num("curve", i, "robust_accuracy", style="percent")
    ood = []
    for i in range(len(d.ood or [])):
        at = attacked.at("ood", i)
        ood.append({"eps": at.num("eps", style="g"), "n": at.num("n_adversarial", style="int"),
                    "auroc": at.num("auroc"), "detected": at.num("detected_at_5pct_fpr", style="percent")})
    return {
        "norm": d.norm, "eps": d.eps, "attacks": [*d.attacks, "worst case"],
        "curve": curve, "gated_eps": d.gated_eps,
        "clean": attacked.num("curve", 0, "clean_accuracy", style="percent"),
        "n": attacked.num("n", style="int"),
        "median_min_eps": attacked.num("median_min_eps", style="g"),
        "never_flipped": attacked.num("never_flipped", style="percent"),
        "search_eps": attacked.num("search_eps", style="g"),
        "large_eps_accuracy": attacked.num("large_eps_accuracy", style="percent"),
        "constraints": d.constraints, "warnings": d.warnings, "ood": ood,
        "contributions": _contributions(attacked),
        "certification": _certification(attacked.at("certification")) if d.certification is not None else None,
        "examples": d.examples[:5], "classes": None,
        "clauses": mapping.for_section("robustness_examples"),
    }


def _contributions(attacked: _At) -> list[dict]:
    """What each attack of the ensemble added, one row per attack (in the order they were counted)
    and one cell per radius: the rows it broke of those it attacked. Empty for runs written before
    the contributions were recorded."""
    rows: dict[str, dict] = {}
    for i, entry in enumerate(attacked.node.contributions):
        at = attacked.at("contributions", i)
        row = rows.setdefault(entry.attack, {"attack": entry.attack, "chained": set(), "cells": {}})
        row["chained"].add(entry.chained)
        row["cells"][entry.eps] = {"broken": at.num("broken", style="int"), "attacked": at.num("attacked", style="int")}
    for row in rows.values():
        chained = row.pop("chained")
        row["ran_on"] = ("the rows left standing" if chained == {True} else
                         "every row" if chained == {False} else "every row at some radii, the rows left at others")
    return list(rows.values())


def _certification(certified: _At) -> dict:
    """Randomized smoothing's settings, both bounds per radius and the gap between them, and its headline numbers."""
    c = certified.node
    table = []
    for i, entry in enumerate(c.table):
        at = certified.at("table", i)
        lower, upper = at.num("certified_accuracy", style="percent"), at.num("attacked_accuracy", style="percent")
        gap = None if lower.value is None or upper.value is None else upper.value - lower.value
        table.append({"radius": at.num("radius", style="g"), "gated": entry.radius == c.gated_radius,
                      "lower": lower, "upper": upper,
                      # a difference of two values of findings.json: both pointers name it
                      "gap": Num(gap, "findings", f"{upper.path} - {lower.path}", style="percent"),
                      "certified": at.num("certified", style="int"), "n": at.num("n", style="int")})
    return {
        "sigma": certified.num("sigma", style="g"), "n0": certified.num("n0", style="int"),
        "n": certified.num("n", style="int"), "alpha": certified.num("alpha", style="g"),
        "units": c.units, "noised": c.noised, "gated_radius": certified.num("gated_radius", style="g"),
        "rows": table[0]["n"] if table else None, "table": table, "attack": c.attack,
        "smoothed_accuracy": certified.num("smoothed_accuracy", style="percent"),
        "base_accuracy": certified.num("base_accuracy", style="percent"),
        "abstention_rate": certified.num("abstention_rate", style="percent"),
        "median_radius": certified.num("median_radius", style="g"),
        "median_radius_correct": certified.num("median_radius_correct", style="g"),
        "trained_sigma": certified.num("trained_sigma", style="g") if c.trained_sigma is not None else None,
        "same_sigma": c.trained_sigma is not None and math.isclose(c.trained_sigma, c.sigma, abs_tol=1e-12),
    }


# the metrics of each comparison the report tabulates (one column each; findings.json holds them all)
SHOWN_METRICS = {
    "data_bias": ("base_rate_privileged", "base_rate_unprivileged", "disparate_impact", "statistical_parity_difference"),
    "model": ("disparate_impact", "statistical_parity_difference", "equal_opportunity_difference",
              "average_odds_difference", "false_positive_rate_ratio", "false_negative_rate_ratio"),
}


def _fairness(compared: _At | None, f: _At) -> dict | None:
    if compared is None:
        return None
    d = compared.node

    def comparisons(kind: str) -> list:
        out = []
        for i, c in enumerate(getattr(d, kind)):
            at = compared.at(kind, i)
            shown = [name for name in SHOWN_METRICS[kind] if name in c.metrics]
            out.append({"attribute": c.attribute, "privileged": c.privileged, "subject": c.subject,
                        "reference": "privileged" if c.compared is None else "reference",
                        "n_privileged": at.num("n_privileged", style="int"),
                        "n_unprivileged": at.num("n_unprivileged", style="int"),
                        "metrics": [{"metric": name.replace("_", " "), "value": at.num("metrics", name, "value"),
                                     "low": at.num("metrics", name, "low"), "high": at.num("metrics", name, "high")}
                                    for name in shown],
                        "warnings": c.warnings})
        return out

    impact = _rate_table(compared, "impact_ratios", "selection_rate")
    scoring, median = None, None
    if d.scoring_rates is not None and d.median_score is not None:  # absent from runs written before them
        scoring, median = _rate_table(compared, "scoring_rates", "scoring_rate"), compared.num("median_score")
    mitigation = []
    for i, mit in enumerate(d.mitigation or []):
        at = compared.at("mitigation", i)
        mitigation.append({"method": mit.method, "attribute": mit.attribute, "rows": mit.rows,
                           "n": at.num("n", style="int"),
                           "metrics": [{"metric": name.replace("_", " "), "before": at.num("before", name, "value"),
                                        "after": at.num("after", name, "value")} for name in mit.before]})
    consistency = compared.num("consistency", "value") if d.consistency else None
    settings = d.settings
    logged = str(settings.get("threshold") or "").startswith(("logged decisions", "favourable where"))
    one_vs_rest = str(settings.get("threshold") or "").startswith("argmax class in")  # a multiclass model
    return {"data_bias": comparisons("data_bias"), "model": comparisons("model"), "impact": impact,
            "columns": {kind: [name.replace("_", " ") for name in names] for kind, names in SHOWN_METRICS.items()},
            "labels": "training labels" if settings.get("data_bias_split", "train") == "train"
            else "labels of the audited rows",
            "decisions": f"logged decisions ({settings['threshold']})" if logged
            else (f"the model's decisions ({settings['threshold']}, one-vs-rest)" if one_vs_rest
                  else "the model's decisions"),
            "score": settings.get("score") or "P(favourable)",
            "side": "above" if settings.get("higher_is_favourable", True) else "below",
            "scoring": scoring, "median_score": median,
            "unknown": [(name, compared.num("unknown_rows", name, style="int")) for name in d.unknown_rows or {}],
            "mitigation": mitigation, "consistency": consistency, "warnings": d.warnings, "support": _support(f)}


def _rate_table(compared: _At, kind: str, rate: str) -> list[dict]:
    """The LL144 rows of ``kind`` (impact_ratios or scoring_rates), each rate and ratio pointing at its value."""
    rows = []
    for i, r in enumerate(getattr(compared.node, kind)):
        at = compared.at(kind, i)
        rows.append({"attribute": r.attribute, "category": r.category, "n": at.num("n", style="int"),
                     "rate": at.num(rate), "ratio": at.num("impact_ratio"),
                     "flag": "excluded (< 2 % of rows)" if r.excluded
                     else ("below 4/5" if r.below_four_fifths else "")})
    return rows


def _support(f: _At) -> list[dict]:
    """What each gated group comparison rests on (its smaller group's rows and expected favourable
    outcomes) beside the policy's minimums: where a status of insufficient data comes from."""
    out = []
    for i, finding in enumerate(f.node["findings"]):
        comparison = finding.get("comparison")
        if not comparison:
            continue
        path = ("findings", i, "comparison")
        out.append({"id": finding["id"], "status": finding["status"], "status_text": STATUS_WORDS[finding["status"]],
                    "group": " ".join(filter(None, (comparison["group"], comparison["among"]))),
                    "rows": f.num(*path, "rows", style="int"), "min_rows": f.num(*path, "min_rows", style="int"),
                    "expected": f.num(*path, "expected_positives", style="count"),
                    "min_expected": f.num(*path, "min_expected_positives", style="int")})
    return out


def _adverse_action(run, mapping: Mapping) -> dict:
    stored = stored_notices(run)
    clauses = mapping.for_section("adverse_action")
    explained = _details(run, "attributions")
    if stored is None or explained is None:  # stored notices come with the attributions' details
        return {"stored": None, "notices": [], "clauses": clauses}
    summary = explained.at("adverse_action")

    def stored_num(array: str, row: int, column: int, value: float, style: str = "fixed") -> Num:
        return Num(value, "arrays", f"{stored.file}#{array}[{row},{column}]", style=style)

    shown = []
    for n in stored.notices:
        reasons = [{"feature": r.feature, "value": r.value,
                    "contribution": stored_num("contribution", n.index, r.slot, r.contribution, "signed")}
                   for r in n.reasons]
        shown.append({"notice": n, "probability": stored_num("proba", n.index, 1, n.favourable_probability),
                      # a notice that cannot be issued states no reasons, only the prohibited bases it rests on
                      "reasons": [] if n.cannot_issue else reasons,
                      "prohibited": [r for r, reason in zip(reasons, n.reasons) if reason.prohibited]})
    return {"stored": stored, "method": stored.method, "notices": shown, "n_shown": len(shown),
            "n_unfavourable": summary.num("n_unfavourable", style="int"),
            "n_cannot_issue": summary.num("n_cannot_issue", style="int"),
            "n_explained": summary.num("n_explained", style="int"),
            "prohibited_bases": stored.prohibited_bases, "clauses": clauses}
