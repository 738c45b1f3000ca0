"""The report's executive summary, from one run (never recomputed).

Page 1 says, before any table: whether the report is a draft (the model card does not state
the intended use and the owner); the verdict on the model apart from the verdict on the
evidence (explanation methods that fail their sanity checks, an attack evaluation flagged as
weak, group comparisons too small to judge, checks not assessed); the worst findings in plain
units, each with whether it blocks use under the policy; and what to do next.

Which checks are about the model and which about the evidence is declared once, in the
policy's registry (:data:`~scrutiny.audit.run.policy.CHECK_INFO`, ``about``). A comparison with
insufficient data and a check not assessed limit the evidence, whatever check they are.

A sentence is a list of *parts*: text, or a :class:`~scrutiny.reports.content.Num` that points
at the value in ``findings.json`` (the templates render each with the ``num`` filter), so no
number reaches the page without its source.
"""

from __future__ import annotations

import math
from typing import Any

from scrutiny.audit.run.findings import STATUS_WORDS
from scrutiny.audit.run.policy import EVIDENCE, EVIDENCE_ORDER, MODEL_STATUSES, kind_of
from scrutiny.audit.run.signoff import read_signoffs
from scrutiny.reports.content import _At, _details
from scrutiny.reports.remediation import EXPLANATION_CHECKS, MODEL_FAIRNESS, attributes_of

__all__ = ["executive_summary", "MAX_WORST"]

ATTENTION_ORDER = ("fail", "warn", "insufficient", "not_assessed")  # the worst findings' order, worst first
MAX_WORST = 5
# an explanation method's own sanity checks (subject: the method); agreement compares two methods
SANITY = tuple(c for c in EXPLANATION_CHECKS if c != "attributions.agreement")

Part = Any  # str, or a Num


def executive_summary(run, rows: list[dict], card: dict) -> dict:
    """What page 1 says, from ``run`` and the findings ``rows`` of :func:`report_content`.

    Returns a dict: ``draft`` and ``missing`` (what the card does not state), ``model`` and
    ``evidence`` (each a status and a sentence), ``worst`` (the worst findings, one per check,
    each with a plain-units sentence, whether it blocks use, and an accepted exception where a
    sign-off names one) and ``next_steps`` (sentences).
    """
    f = _At(run.findings)
    findings = run.findings["findings"]
    checks = {r["index"]: findings[r["index"]]["check"] for r in rows}
    kinds = {r["index"]: kind_of(checks[r["index"]]) for r in rows}
    missing = [words for key, words in (("intended_use", "the intended use"), ("owner", "the owner"))
               if not card.get(key)]
    records = read_signoffs(run.path)
    model_rows = [r for r in rows if kinds[r["index"]] == "model" and r["status"] in MODEL_STATUSES]
    evidence_rows = [r for r in rows if kinds[r["index"]] == EVIDENCE or r["status"] not in MODEL_STATUSES]
    model_status = max((r["status"] for r in model_rows), key=MODEL_STATUSES.index, default=None)
    evidence_status = max((r["status"] for r in evidence_rows), key=EVIDENCE_ORDER.index, default=None)
    plain = _Plain(run, f)
    worst = []
    for r in _worst(rows, findings, kinds, checks):
        worst.append({
            "index": r["index"], "id": r["id"], "status": r["status"], "status_text": r["status_text"],
            "kind": kinds[r["index"]], "parts": plain.sentence(r["index"], findings[r["index"]]),
            "blocks": _blocks(r["status"], kinds[r["index"]]),
            "exceptions": _exceptions(records, findings[r["index"]]),
        })
    return {
        "draft": bool(missing), "missing": missing,
        "model": {"status": model_status or "not_assessed", "text": STATUS_WORDS[model_status or "not_assessed"],
                  "parts": _model_sentence(model_status, model_rows, checks)},
        "evidence": {"status": evidence_status or "not_assessed",
                     "text": STATUS_WORDS[evidence_status or "not_assessed"],
                     "parts": _evidence_sentence(evidence_status, evidence_rows, checks)},
        "worst": worst,
        "next_steps": _next_steps(run, f, rows, checks, kinds, missing, records),
    }


# ------------------------------------------------------------------ the two verdicts


def _ids(rows: list[dict], status: str) -> str:
    return ", ".join(r["id"] for r in rows if r["status"] == status)


def _model_sentence(status: str | None, rows: list[dict], checks: dict[int, str]) -> list[Part]:
    if status is None:
        return ["No check of the model itself was assessed."]
    if status == "fail":
        failing = list(dict.fromkeys(checks[r["index"]] for r in rows if r["status"] == "fail"))
        return [f"The model fails the policy on {', '.join(failing)}."]
    if status == "warn":
        return [f"The model passes the policy's fail bounds, with warnings to review: {_ids(rows, 'warn')}."]
    return ["The model passes every check of the policy that was assessed."]


def _evidence_sentence(status: str | None, rows: list[dict], checks: dict[int, str]) -> list[Part]:
    if status is None:
        return ["The run holds no check of its own evidence."]
    if status == "pass":
        return ["The evidence holds: the explanation methods pass their sanity checks and the attack evaluation "
                "shows no sign of weakness."]
    gaps = []
    for bad, words in (("fail", "must not be relied on"), ("warn", "are to be read with care")):
        methods = list(dict.fromkeys(r["subject"] for r in rows if checks[r["index"]] in SANITY and r["status"] == bad))
        if methods:
            failed = ", ".join(r["id"] for r in rows if checks[r["index"]] in SANITY and r["status"] == bad)
            gaps.append(f"the explanations of {', '.join(methods)} {words} ({failed}: {bad})")
    pairs = [r["id"] for r in rows if checks[r["index"]] == "attributions.agreement" and r["status"] in ("warn", "fail")]
    if pairs:
        gaps.append(f"explanation methods disagree on which features matter ({', '.join(pairs)})")
    weak = [r for r in rows if checks[r["index"]] == "robustness.weak_evaluation" and r["status"] in ("warn", "fail")]
    if weak:
        gaps.append("the attack evaluation is flagged as weak, so robust accuracy may be overstated "
                    "(robustness.weak_evaluation)")
    twin = [r for r in rows if checks[r["index"]] == "performance.twin_difference" and r["status"] in ("warn", "fail")]
    if twin:
        gaps.append("the twin the gradient methods ran on differs from the model (performance.twin_difference)")
    small = _ids(rows, "insufficient")
    if small:
        gaps.append(f"some group comparisons have too few rows or favourable outcomes to judge ({small})")
    absent = _ids(rows, "not_assessed")
    if absent:
        gaps.append(f"some checks could not be made ({absent})")
    head = "The evidence fails" if status == "fail" else "The evidence has gaps"
    return [f"{head}: {'; '.join(gaps)}."]


# ------------------------------------------------------------------ the worst findings


def _excess(finding: dict) -> float:
    """How far the value lies past the fail bound (negative: inside it), relative to the bound's
    distance from "no difference" for a comparison of groups (0.8 from 1 for a ratio, 0.1 from 0
    for a difference, so that ratios and differences weigh alike), else to the bound itself."""
    value, threshold = finding.get("value"), finding.get("threshold") or {}
    if value is None or not math.isfinite(value):
        return -math.inf
    neutral = (finding.get("comparison") or {}).get("no_difference")
    out = -math.inf
    for key, sign in (("fail_below", -1.0), ("fail_above", 1.0)):
        if key in threshold:
            bound = float(threshold[key])
            scale = abs(bound - neutral) if neutral is not None else abs(bound)
            out = max(out, sign * (value - bound) / (scale or 1.0))
    return out


def _worst(rows: list[dict], findings: list[dict], kinds: dict[int, str], checks: dict[int, str]) -> list[dict]:
    """The worst finding of each check that needs attention, worst first: fails before warnings
    (then insufficient data, then not assessed), model before evidence, then by how far past the
    fail bound the value lies; at most :data:`MAX_WORST`."""
    attention = [r for r in rows if r["status"] in ATTENTION_ORDER]
    attention.sort(key=lambda r: (ATTENTION_ORDER.index(r["status"]), kinds[r["index"]] != "model",
                                  -_excess(findings[r["index"]]), r["index"]))
    out, seen = [], set()
    for r in attention:
        if checks[r["index"]] in seen:
            continue
        seen.add(checks[r["index"]])
        out.append(r)
    return out[:MAX_WORST]


def _blocks(status: str, kind: str) -> str:
    if status == "fail":
        return ("Blocks use under the policy" if kind == "model" else
                "Blocks use under the policy: the audit's evidence fails, not the model")
    if status == "warn":
        return "Does not block use; review"
    if status == "insufficient":
        return "Does not block use; too few rows to judge"
    return "Does not block use; not assessed"


def _exceptions(records: list[dict], finding: dict) -> list[str]:
    out = []
    for record in records:
        named = record.get("accepted_exceptions") or []
        if finding["check"] in named or finding["id"] in named:
            out.append(f"accepted as an exception by {record.get('name')} ({record.get('role')}) on "
                       f"{str(record.get('time') or '')[:10]}")
    return out


class _Plain:
    """A finding's value in plain units, as parts: text and Nums pointing into findings.json."""

    def __init__(self, run, f):
        self.run, self.f = run, f
        self.task = run.findings["subject"]["data"]["task"]

    def details(self, family: str):
        return _details(self.run, family)

    def sentence(self, i: int, finding: dict) -> list[Part]:
        if finding["status"] == "not_assessed" or finding.get("value") is None:
            return [finding["explanation"]]
        check = finding["check"]
        builder = {
            "performance.balanced_accuracy": self._balanced_accuracy,
            "performance.calibration_error": self._calibration,
            "robustness.robust_accuracy": self._robust_accuracy,
            "robustness.certified_accuracy": self._certified,
            "attributions.protected_reliance": self._reliance,
            "attributions.prohibited_basis_notices": self._notices,
            "attributions.randomisation": self._randomisation,
            "attributions.agreement": self._agreement,
            "attributions.completeness": self._completeness,
            "attributions.sampling_error": self._sampling_error,
            "attributions.deletion": self._deletion,
            "attributions.stability": self._stability,
            "attributions.reason_stability": self._reason_stability,
            "attributions.first_step": self._first_step,
            "fairness.impact_ratio": self._impact_ratio,
            "fairness.scoring_rate_impact_ratio": self._impact_ratio,
        }.get(check)
        if builder is None and check.startswith("fairness."):
            builder = self._comparison
        parts = builder(i, finding) if builder is not None else None
        return parts if parts is not None else self._generic(i, finding)

    def value(self, i: int, style: str):
        return self.f.num("findings", i, "value", style=style)

    def interval(self, i: int, finding: dict, style: str) -> list[Part]:
        if not finding.get("interval"):
            return []
        return [" (95 % interval ", self.f.num("findings", i, "interval", "low", style=style), " to ",
                self.f.num("findings", i, "interval", "high", style=style), ")"]

    def bound(self, i: int, finding: dict, style: str, before: str = " (", after: str = ")") -> list[Part]:
        """The policy's bound the value crossed (a fail bound where it fails, else a warn bound), as
        " (fail above 0.500)"; nothing where it crossed none."""
        value, threshold = finding["value"], finding.get("threshold") or {}
        for level in ("fail", "warn") if finding["status"] == "fail" else ("warn", "fail"):
            for side in ("below", "above"):
                key = f"{level}_{side}"
                if key in threshold and (value < threshold[key] if side == "below" else value > threshold[key]):
                    return [f"{before}{level} {side} ", self.f.num("findings", i, "threshold", key, style=style), after]
        return []

    def _generic(self, i: int, finding: dict) -> list[Part]:
        return [_capital(finding["metric"]), ": ", self.value(i, "g"), *self.interval(i, finding, "g"),
                *self.bound(i, finding, "g"), "."]

    def _agreement(self, i, finding):
        pair = finding["subject"] or ""
        return [f"The methods {pair.replace(' vs ', ' and ')} rank the features alike with a median per-row Spearman "
                "correlation of only ", self.value(i, "fixed"), *self.bound(i, finding, "fixed"),
                ": at least one of them does not describe what the model does."]

    def _completeness(self, i, finding):
        return [f"For 95 % of the explained rows, {finding['subject']}'s attributions miss the output change they "
                "explain by up to ", self.value(i, "percent"), *self.bound(i, finding, "percent"), "."]

    def _sampling_error(self, i, finding):
        return [f"For 95 % of the explained rows, {finding['subject']}'s sampling error is up to ",
                self.value(i, "percent"), " of the row's largest attribution", *self.bound(i, finding, "percent"), "."]

    def _deletion(self, i, finding):
        return [f"Deleting features in {finding['subject']}'s order lowers the explained class's probability hardly "
                "faster than random orders do (area ratio ", self.value(i, "fixed"),
                *self.bound(i, finding, "fixed", before="; ", after=""), ")."]

    def _stability(self, i, finding):
        return [f"Explained again with other seeds, {finding['subject']}'s feature rankings keep a median Spearman "
                "correlation of only ", self.value(i, "fixed"), " with the audit's", *self.bound(i, finding, "fixed"),
                ": what they show depends on the random draw."]

    def _reason_stability(self, i, finding):
        return [f"Explained again with other seeds, {finding['subject']} gives the same principal reasons for only ",
                self.value(i, "percent"), " of the re-explained rows decided unfavourably",
                *self.bound(i, finding, "percent"), "."]

    def _first_step(self, i, finding):
        return [f"{finding['subject']} puts ", self.value(i, "percent"), " of its explanations on a sequence's first "
                "time step that it does not put there when the rows are explained again from their own time steps in "
                "a shuffled order", *self.bound(i, finding, "percent"), ": that weight comes from the baseline, not "
                "from the model."]

    def _balanced_accuracy(self, i, finding):
        return ["Balanced accuracy (the mean of the recalls of the classes) is ", self.value(i, "percent"),
                *self.interval(i, finding, "percent"), "."]

    def _calibration(self, i, finding):
        return ["The model's stated confidence differs from its observed accuracy by ", self.value(i, "percent"),
                " on average", *self.interval(i, finding, "percent"), "."]

    def _robust_accuracy(self, i, finding):
        from scrutiny.modality import MODALITIES

        attacked = self.details("robustness")
        if attacked is None or not attacked.node.curve:
            return None
        unit = MODALITIES[self.task].eps_unit if self.task in MODALITIES else "input units"
        return ["Under attacks of ", attacked.node.norm, " radius ", attacked.num("gated_eps", style="g"),
                f" ({unit}), accuracy on ", attacked.num("n", style="int"), " test rows falls from ",
                attacked.num("curve", 0, "clean_accuracy", style="percent"), " to ", self.value(i, "percent"),
                *self.interval(i, finding, "percent"), "."]

    def _certified(self, i, finding):
        attacked = self.details("robustness")
        if attacked is None or attacked.node.certification is None:
            return None
        c = attacked.at("certification")
        return ["Randomized smoothing certifies ", self.value(i, "percent"), *self.interval(i, finding, "percent"),
                " of the test rows correct within L2 radius ", c.num("gated_radius", style="g"),
                f" ({c.node.units}): a lower bound on the smoothed model's robust accuracy."]

    def _reliance(self, i, finding):
        return [f"The protected attribute {finding['subject']} carries ", self.value(i, "percent"),
                " of the total weight of the model's explanations (mean |attribution|)."]

    def _notices(self, i, finding):
        explained = self.details("attributions")
        if explained is None or explained.node.adverse_action is None:
            return None
        at = explained.at("adverse_action")
        return [self.value(i, "int"), " of the ", at.num("n_unfavourable", style="int"),
                " explained rows decided unfavourably cannot get an adverse-action notice: their principal "
                "reasons include a prohibited basis."]

    def _randomisation(self, i, finding):
        return [f"With the model's weights re-initialised, {finding['subject']}'s feature rankings keep a median "
                "Spearman correlation of ", self.value(i, "fixed"), " with the trained model's",
                *self.bound(i, finding, "fixed"), ": they barely depend on what the model learned."]

    def _comparison(self, i, finding):
        """A fairness metric of one comparison of two groups, with the groups' rates behind it."""
        compared = self.details("fairness")
        if compared is None:
            return None
        data = finding["check"].startswith("fairness.data.")
        metric = finding["check"].rsplit(".", 1)[1]
        kind = "data_bias" if data else "model"
        where = next((j for j, c in enumerate(getattr(compared.node, kind)) if c.subject == finding["subject"]
                      and metric in c.metrics), None)
        if where is None:
            return None
        c = getattr(compared.node, kind)[where]
        at = compared.at(kind, where)
        them, us = c.groups_in_words
        if metric == "disparate_impact":
            if data:
                return ["In the training labels, ", them, " carry the favourable label at ", self.value(i, "percent"),
                        *self.interval(i, finding, "percent"), " of the rate of ", us, ": ",
                        at.num("metrics", "base_rate_unprivileged", "value", style="percent"), " against ",
                        at.num("metrics", "base_rate_privileged", "value", style="percent"), "."]
            return [_capital(them), " are selected at ", self.value(i, "percent"),
                    *self.interval(i, finding, "percent"), " of the rate of ", us, ": ",
                    at.num("per_group", "unprivileged", "selection_rate", style="percent"), " against ",
                    at.num("per_group", "privileged", "selection_rate", style="percent"), "."]
        rates = {"statistical_parity_difference": ("selection_rate", "are selected at a rate of"),
                 "equal_opportunity_difference": ("true_positive_rate",
                                                  "with a favourable true label are given the favourable outcome at a "
                                                  "rate of")}
        if metric in rates and "unprivileged" in c.per_group:
            rate, words = rates[metric]
            return [_capital(them), f" {words} ",
                    at.num("per_group", "unprivileged", rate, style="percent"), ", against ",
                    at.num("per_group", "privileged", rate, style="percent"), " for ", us,
                    ": a difference of ", self.value(i, "signed"), *self.interval(i, finding, "signed"), "."]
        if metric == "average_odds_difference" and "unprivileged" in c.per_group:
            return ["Averaged over true- and false-positive rates, ", them, " get the favourable outcome ",
                    self.value(i, "signed"), *self.interval(i, finding, "signed"), " more often than ", us,
                    " (true-positive rates ", at.num("per_group", "unprivileged", "true_positive_rate", style="percent"),
                    " against ", at.num("per_group", "privileged", "true_positive_rate", style="percent"),
                    "; false-positive rates ",
                    at.num("per_group", "unprivileged", "false_positive_rate", style="percent"), " against ",
                    at.num("per_group", "privileged", "false_positive_rate", style="percent"), ")."]
        return None

    def _impact_ratio(self, i, finding):
        """The least-selected category against the most-selected, as the LL144 table has them."""
        compared = self.details("fairness")
        scoring = finding["check"] == "fairness.scoring_rate_impact_ratio"
        kind, rate = ("scoring_rates", "scoring_rate") if scoring else ("impact_ratios", "selection_rate")
        if compared is None or getattr(compared.node, kind) is None:
            return None
        entries = [(j, e) for j, e in enumerate(getattr(compared.node, kind))
                   if e.attribute == finding["subject"] and not e.excluded]
        lowest = [(j, e) for j, e in entries if math.isclose(e.impact_ratio, finding["value"], rel_tol=1e-9)]
        if not lowest or not entries:
            return None
        low, _ = lowest[0]
        high, high_entry = max(entries, key=lambda item: getattr(item[1], rate))
        doing = (["scored above the median P(favourable) (", compared.num("median_score", style="g"), ")"]
                 if scoring else ["selected"])
        return [f"Of the categories of {finding['subject']}, {lowest[0][1].category} is ", *doing, " at ",
                self.value(i, "percent"), f" of the rate of {high_entry.category}, the highest: ",
                compared.num(kind, low, rate, style="percent"), " against ",
                compared.num(kind, high, rate, style="percent"), "."]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# ------------------------------------------------------------------ what to do next


def _next_steps(run, f, rows: list[dict], checks: dict[int, str], kinds: dict[int, str], missing: list[str],
                records: list[dict]) -> list[list[Part]]:
    steps: list[list[Part]] = []
    failing = [r for r in rows if r["status"] == "fail"]
    fairness_fails = [r for r in failing if checks[r["index"]] in MODEL_FAIRNESS]
    if fairness_fails:
        details = run.details("fairness")
        mitigated = list(dict.fromkeys(m.attribute for m in (details.mitigation or []))) if details else []
        attribute = (attributes_of(run, [fairness_fails[0]["index"]]) or ["ATTRIBUTE"])[0]
        if mitigated:
            steps.append([f"Fairness fails: the Fairness section shows what reweighing and equalized-odds "
                          f"post-processing change for {', '.join(mitigated)}; retrain with one and audit again."])
        else:
            steps.append([f"Fairness fails: audit again with mitigate = \"{attribute}\" in the audit config's "
                          "[fairness] table (scrutiny audit --config) to measure what reweighing and equalized-odds "
                          "post-processing change."])
    sanity = [r for r in rows if checks[r["index"]] in SANITY and r["status"] in ("fail", "warn")]
    if sanity:
        explained = run.details("attributions")
        methods = list(explained.methods) if explained is not None else []
        bad = list(dict.fromkeys(r["subject"] for r in sanity if r["status"] == "fail"))
        doubtful = {r["subject"] for r in sanity}
        good = [m for m in methods if m not in doubtful]
        if bad:
            steps.append([f"Do not rely on the explanations of {', '.join(bad)}: they fail a sanity check. "
                          + (f"Use {', '.join(good)}, which pass{'es' if len(good) == 1 else ''} every sanity check."
                             if good else "No method of this run passes every sanity check: add others to "
                             "methods in the [attributions] table of the audit config and audit again.")])
    weak = [r for r in rows if checks[r["index"]] == "robustness.weak_evaluation" and r["status"] in ("fail", "warn")]
    attacked = _details(run, "robustness")
    if weak and attacked is not None and "steps" in attacked.node.settings:
        steps.append(["Strengthen the attack evaluation before trusting robust accuracy: raise steps (now ",
                      attacked.num("settings", "steps", style="int"),
                      ") or restarts in the [robustness] table of the audit config and audit again."])
    small = [r["id"] for r in rows if r["status"] == "insufficient"]
    if small:
        steps.append([f"Judge the comparisons with too little data ({', '.join(small)}) on more rows: audit on a "
                      "larger test split or pool data until the smaller group meets the policy's [groups] minimums."])
    if missing:
        steps.append([f"State {' and '.join(missing)} in a model card (scrutiny report --card CARD.toml with "
                      "intended_use and owner); until then this report is a draft."])
    signed = {r.get("role") for r in records}
    unsigned = [role for role in ("validator", "approver") if role not in signed]
    if unsigned:
        steps.append([f"Sign-off by the {' and the '.join(unsigned)} (scrutiny sign RUN --role …)"
                      + ("; a failed check is accepted only by naming it (--accept-exception)." if failing else ".")])
    return steps
