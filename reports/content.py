"""What a report says, gathered from one run folder (never recomputed).

:func:`report_content` turns a :class:`~scrutiny.audit.run.run_folder.Run` into plain data the
templates lay out. Every number taken from ``findings.json`` or ``manifest.json`` is a
:class:`Num` that remembers where it came from (a JSON pointer), so the HTML can carry the
exact value beside the rounded one and a test can check each against the run.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field

import numpy as np

from scrutiny.audit.run.findings import STATUS_WORDS, STATUSES

from scrutiny.reports.adverse_action import stored_notices
from scrutiny.reports.compliance import Mapping, by_framework

__all__ = ["Num", "report_content", "SECTIONS"]

SECTIONS = (
    ("summary", "Summary"),
    ("model_card", "Model card"),
    ("explainability", "Explainability"),
    ("robustness", "Robustness"),
    ("fairness", "Fairness"),
    ("adverse_action", "Adverse-action reasons"),
    ("compliance", "Compliance mapping"),
    ("reproducibility", "Reproducibility appendix"),
)


_BOUND_WORDS = {"fail_below": "fail <", "fail_above": "fail >", "warn_below": "warn <", "warn_above": "warn >"}


@dataclass(frozen=True)
class Num:
    """A number shown in a report and where in the run it comes from."""

    value: float | None
    source: str          # "findings" or "manifest"
    path: str            # JSON pointer into that file
    style: str = "fixed"  # fixed, percent, signed, int, g, count (an expected count: 2,435.0)

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
        return f"{v:.3f}"


class _Reader:
    """Numbers out of one JSON document, each with its pointer."""

    def __init__(self, document: dict, source: str):
        self.document, self.source = document, source

    def get(self, *path):
        node = self.document
        for key in path:
            node = node[key]
        return node

    def num(self, *path, style: str = "fixed") -> Num:
        value = self.get(*path)
        pointer = "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)
        return Num(value=None if value is None else float(value), source=self.source, path=pointer, style=style)


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
    sections: list[tuple[str, str]]
    summary: dict
    model_card: dict
    explainability: dict | None
    robustness: dict | None
    fairness: dict | None
    adverse_action: dict
    compliance: list
    reproducibility: dict
    figures: dict[str, Figure | None] = field(default_factory=dict)  # None: the run has no such figure


def report_content(run, mapping: Mapping, *, card: dict | None = None) -> Content:
    """Everything the report shows, from ``run`` and the compliance ``mapping``."""
    f = _Reader(run.findings, "findings")
    m = _Reader(run.manifest, "manifest")
    findings = run.findings
    details = findings["details"]
    data = findings["subject"]["data"]
    model = findings["subject"]["model"]
    figures = {name: Figure(title, _png(run, f"figures/{name}.png")) if run.has(f"figures/{name}.png") else None
               for name, title in (
        ("importance", "Global importance: mean |attribution| with 95 % bootstrap intervals"),
        ("agreement", "Agreement between methods: median per-row Spearman correlation"),
        ("heatmaps", "Attributions over the input"),
        ("robustness", "Robust accuracy against the perturbation radius"),
        ("min_eps", "Minimal perturbations: share of rows flipped by at most eps"),
        ("adversarial", "Adversarial examples beside their perturbation"),
        ("fairness", "Fairness metrics with 95 % bootstrap intervals"),
    )}
    rows = []
    for i, entry in enumerate(findings["findings"]):
        interval = entry["interval"]
        rows.append({
            "id": entry["id"], "family": entry["family"], "metric": entry["metric"], "status": entry["status"],
            "status_text": STATUS_WORDS[entry["status"]],
            "value": f.num("findings", i, "value", style="g"),
            "low": f.num("findings", i, "interval", "low", style="g") if interval else None,
            "high": f.num("findings", i, "interval", "high", style="g") if interval else None,
            "threshold": [(_BOUND_WORDS[k], f.num("findings", i, "threshold", k, style="g"))
                          for k in entry["threshold"]],
            "explanation": entry["explanation"], "caveats": entry["caveats"],
            "clauses": [c.id for c in mapping.for_check(entry["check"])],
        })
    architecture = run.manifest["model"].get("architecture") or {}
    card = card or {}
    limitations = [f"{r['id']}: {r['explanation']}" for r in rows if r["status"] == "fail"]
    return Content(
        title=f"Audit of {model.get('architecture') or model['source']} on {data['name']}",
        run_name=run.name,
        verdict=findings["verdict"],
        # runs written before the insufficient status have no count of it
        counts={k: f.num("counts", k, style="int") for k in STATUSES if k in findings["counts"]},
        sections=list(SECTIONS),
        summary={
            "model": model, "data": data, "date": run.manifest.get("finished", ""),
            "weights_sha256": model["weights_sha256"], "data_sha256": data["sha256"],
            "n_test": f.num("subject", "data", "n_test", style="int"), "rows": rows,
        },
        model_card={
            "intended_use": card.get("intended_use"), "out_of_scope": card.get("out_of_scope"),
            "owner": card.get("owner"),
            "architecture": architecture.get("name") if isinstance(architecture, dict) else None,
            "architecture_config": architecture.get("config") if isinstance(architecture, dict) else None,
            "source": run.manifest["model"]["source"], "kind": run.manifest["model"]["kind"],
            "data": data, "n_train": f.num("subject", "data", "n_train", style="int"),
            "performance": _performance(f, details.get("performance")),
            "groups": _group_performance(f, details.get("fairness")),
            "limitations": [*card.get("limitations", []), *limitations],
            "clauses": mapping.for_section("model_card"),
        },
        explainability=_explainability(f, details.get("attributions"), run),
        robustness=_robustness(f, details.get("robustness"), mapping),
        fairness=_fairness(f, details.get("fairness")),
        adverse_action=_adverse_action(run, mapping),
        compliance=_compliance(mapping, findings["findings"]),
        reproducibility={
            "command": " ".join(run.manifest.get("command") or []),
            "seed": m.num("seed", style="int"),
            "config": run.manifest.get("config", {}),
            "policy_source": run.manifest.get("policy", {}).get("source"),
            "weights_sha256": run.manifest["model"]["weights_sha256"], "data_sha256": run.manifest["data"]["sha256"],
            "libraries": run.manifest.get("libraries", {}), "device": run.manifest.get("device"),
            "platform": run.manifest.get("platform"),
            "started": run.manifest.get("started"), "finished": run.manifest.get("finished"),
            "seconds": [(k, m.num("seconds", k, style="g")) for k in run.manifest.get("seconds", {})],
            "files": run.manifest.get("files", {}),
            "clauses": mapping.for_section("reproducibility"),
        },
        figures=figures,
    )


def _png(run, relative: str) -> str:
    return "data:image/png;base64," + base64.b64encode(run.file(relative).read_bytes()).decode("ascii")


def _performance(f: _Reader, details: dict | None) -> list:
    if not details:
        return []
    out = []
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                       ("calibration_error", "expected calibration error")):
        out.append({"metric": label, "value": f.num("details", "performance", key, "value"),
                    "low": f.num("details", "performance", key, "low"),
                    "high": f.num("details", "performance", key, "high")})
    if details.get("roc_auc") is not None:
        out.append({"metric": "ROC AUC", "value": f.num("details", "performance", "roc_auc"), "low": None, "high": None})
    return out


def _group_performance(f: _Reader, details: dict | None) -> list:
    if not details:
        return []
    out = []
    for i, comparison in enumerate(details["model"]):
        if " × " in comparison["attribute"]:
            continue
        for side, figures in comparison["per_group"].items():
            path = ("details", "fairness", "model", i, "per_group", side)
            out.append({"attribute": comparison["attribute"], "group": side,
                        "n": f.num(*path, "n", style="int"),
                        "selection_rate": f.num(*path, "selection_rate"), "accuracy": f.num(*path, "accuracy"),
                        "roc_auc": f.num(*path, "roc_auc"), "calibration_error": f.num(*path, "calibration_error")})
    return out


def _explainability(f: _Reader, details: dict | None, run) -> dict | None:
    if not details:
        return None
    features = details["features"]
    importance = []
    for method, entry in details["importance"].items():
        order = np.argsort(-np.asarray(entry["mean"], dtype=float), kind="stable")[:10]
        importance.append({"method": method, "rows": [
            {"feature": features[j], "mean": f.num("details", "attributions", "importance", method, "mean", int(j), style="g"),
             "low": f.num("details", "attributions", "importance", method, "low", int(j), style="g"),
             "high": f.num("details", "attributions", "importance", method, "high", int(j), style="g")}
            for j in order]})
    agreement = [{"pair": " vs ".join(a["methods"]),
                  "median": f.num("details", "attributions", "agreement", i, "spearman_median"),
                  "global": f.num("details", "attributions", "agreement", i, "spearman_global"),
                  "overlap": f.num("details", "attributions", "agreement", i, "top_k_overlap", style="percent"),
                  "k": a["top_k"]} for i, a in enumerate(details["agreement"])]
    quality = [{"method": method,
                "deletion_ratio": f.num("details", "attributions", "quality", method, "deletion_ratio"),
                "deletion_auc": f.num("details", "attributions", "quality", method, "deletion_auc"),
                "random_deletion_auc": f.num("details", "attributions", "quality", method, "random_deletion_auc"),
                "infidelity": f.num("details", "attributions", "quality", method, "infidelity_median", style="g"),
                "sensitivity": f.num("details", "attributions", "quality", method, "sensitivity_median", style="g"),
                "randomisation": f.num("details", "attributions", "quality", method, "randomisation_spearman")}
               for method in details["quality"]]
    methods = [{"method": name, "output": e["output"], "baseline": e["baseline"],
                "completeness": f.num("details", "attributions", "methods", name, "completeness_p95", style="percent")
                if e.get("completeness_p95") is not None else None,
                "sampling_error": f.num("details", "attributions", "methods", name, "sampling_error_p95", style="percent")
                if e.get("sampling_error_p95") is not None else None} for name, e in details["methods"].items()]
    return {"n": f.num("details", "attributions", "n", style="int"), "output": details["output"],
            "methods": methods, "importance": importance, "agreement": agreement, "quality": quality,
            "local": _local_figure(run, details)}


def _local_figure(run, details: dict) -> str | None:
    """Top features of a few explained rows as bars (tables only), from the stored attributions."""
    if run.findings["subject"]["data"]["task"] != "tabular":
        return None
    from scrutiny.audit.plots import subplots

    stored = run.arrays("arrays/attributions.npz")
    method = next(iter(details["methods"]))
    values, rows, target = stored[method], stored["rows"], stored["target"]
    classes = run.findings["subject"]["data"]["classes"]
    shown = min(4, len(rows))
    columns = min(2, shown)
    grid = (shown + columns - 1) // columns
    fig, axes = subplots(grid, columns, figsize=(4.6 * columns, 2.6 * grid), squeeze=False)
    for ax in axes.flat[shown:]:
        ax.set_visible(False)
    for ax, i in zip(axes.flat, range(shown)):
        order = np.argsort(-np.abs(values[i]), kind="stable")[:6][::-1]
        ax.barh([details["features"][j] for j in order], values[i][order],
                color=["#b2182b" if v < 0 else "#2166ac" for v in values[i][order]])
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(f"test row {rows[i]}: explains '{classes[target[i]]}'", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"Local explanations ({method}): blue pushes toward the explained class, red away", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _robustness(f: _Reader, details: dict | None, mapping: Mapping) -> dict | None:
    if not details:
        return None
    base = ("details", "robustness")
    eps = details["eps"]
    curve = {}
    for i, point in enumerate(details["curve"]):
        curve.setdefault(point["attack"], {})[point["eps"]] = f.num(*base, "curve", i, "robust_accuracy", style="percent")
    ood = [{"eps": f.num(*base, "ood", i, "eps", style="g"), "n": f.num(*base, "ood", i, "n_adversarial", style="int"),
            "auroc": f.num(*base, "ood", i, "auroc"),
            "detected": f.num(*base, "ood", i, "detected_at_5pct_fpr", style="percent")}
           for i in range(len(details.get("ood") or []))]
    return {
        "norm": details["norm"], "eps": eps, "attacks": [*details["attacks"], "worst case"],
        "curve": curve, "gated_eps": details["gated_eps"],
        "clean": f.num(*base, "curve", 0, "clean_accuracy", style="percent"),
        "n": f.num(*base, "n", style="int"),
        "median_min_eps": f.num(*base, "median_min_eps", style="g"),
        "never_flipped": f.num(*base, "never_flipped", style="percent"),
        "search_eps": f.num(*base, "search_eps", style="g"),
        "large_eps_accuracy": f.num(*base, "large_eps_accuracy", style="percent"),
        "constraints": details["constraints"], "warnings": details["warnings"], "ood": ood,
        "examples": details["examples"][:8], "classes": None,
        "clauses": mapping.for_section("robustness_examples"),
    }


def _fairness(f: _Reader, details: dict | None) -> dict | None:
    if not details:
        return None

    def comparisons(kind: str) -> list:
        out = []
        for i, c in enumerate(details[kind]):
            path = ("details", "fairness", kind, i)
            out.append({"attribute": c["attribute"], "privileged": c["privileged"],
                        "n_privileged": f.num(*path, "n_privileged", style="int"),
                        "n_unprivileged": f.num(*path, "n_unprivileged", style="int"),
                        "metrics": [{"metric": name.replace("_", " "), "value": f.num(*path, "metrics", name, "value"),
                                     "low": f.num(*path, "metrics", name, "low"),
                                     "high": f.num(*path, "metrics", name, "high")} for name in c["metrics"]],
                        "warnings": c["warnings"]})
        return out

    impact = [{"attribute": r["attribute"], "category": r["category"],
               "n": f.num("details", "fairness", "impact_ratios", i, "n", style="int"),
               "rate": f.num("details", "fairness", "impact_ratios", i, "selection_rate"),
               "ratio": f.num("details", "fairness", "impact_ratios", i, "impact_ratio"),
               "flag": "excluded (< 2 % of rows)" if r["excluded"] else ("below 4/5" if r["below_four_fifths"] else "")}
              for i, r in enumerate(details["impact_ratios"])]
    mitigation = []
    for i, mit in enumerate(details.get("mitigation") or []):
        path = ("details", "fairness", "mitigation", i)
        mitigation.append({"method": mit["method"], "attribute": mit["attribute"], "rows": mit["rows"],
                           "n": f.num(*path, "n", style="int"),
                           "metrics": [{"metric": name.replace("_", " "),
                                        "before": f.num(*path, "before", name, "value"),
                                        "after": f.num(*path, "after", name, "value")} for name in mit["before"]]})
    consistency = f.num("details", "fairness", "consistency", "value") if details.get("consistency") else None
    return {"data_bias": comparisons("data_bias"), "model": comparisons("model"), "impact": impact,
            "mitigation": mitigation, "consistency": consistency, "warnings": details["warnings"],
            "support": _support(f)}


def _support(f: _Reader) -> list[dict]:
    """What each gated group comparison rests on (its smaller group's rows and expected favourable
    outcomes) beside the policy's minimums: where a status of insufficient data comes from."""
    out = []
    for i, finding in enumerate(f.get("findings")):
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
    if stored is None:
        return {"stored": None, "notices": [], "clauses": clauses}
    f = _Reader(run.findings, "findings")
    base = ("details", "attributions", "adverse_action")

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
            "n_unfavourable": f.num(*base, "n_unfavourable", style="int"),
            "n_cannot_issue": f.num(*base, "n_cannot_issue", style="int"),
            "n_explained": f.num(*base, "n_explained", style="int"),
            "prohibited_bases": stored.prohibited_bases, "clauses": clauses}


def _compliance(mapping: Mapping, entries: list) -> list:
    """Per framework and clause, each check that bears on it with its subjects grouped by status."""
    by_check: dict[str, list] = {}
    for entry in entries:
        by_check.setdefault(entry["check"], []).append(entry)
    out = []
    for framework, items in by_framework(mapping, list(by_check)).items():
        clauses = []
        for clause, checks in items:
            evidence = []
            for check in checks:
                groups = []
                for status in ("fail", "warn", "insufficient", "pass"):
                    subjects = [e["subject"] or "overall" for e in by_check[check] if e["status"] == status]
                    if subjects:
                        groups.append((status, subjects))
                evidence.append({"check": check, "groups": groups})
            clauses.append({"clause": clause, "checks": evidence})
        out.append({"framework": framework, "clauses": clauses})
    return out
