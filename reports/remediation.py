"""What to do about each failed or warned check, from one run (issue 18).

:func:`remediation` gives each failed or warned finding a block: what the check means in plain
words, its likely causes, and the options the tool itself offers where it offers one (the fairness
family's mitigation with its before/after, a decision-threshold what-if computed from the stored
probabilities, retraining without a protected input, other audit or training settings), and for
explanation methods that failed a sanity check which explanations must not be relied on. Checks of
one kind share a block (the model's fairness checks of every attribute, every method's explanation checks).

Texts are lists of parts: plain strings and :class:`~scrutiny.reports.content.Num` numbers, so that
every number a block shows points into findings.json or is recomputed from the run's arrays. A
threshold what-if's numbers name their recipe in the path::

    threshold_whatif(arrays/predictions.npz, arrays/fairness_groups.npz#model_0, reference=0.5, compared=0.095).accuracy

which reads: decide favourable where P(favourable) (``proba[:, 1]``) is above ``reference`` for
the reference group of comparison 0 (and rows in neither group), above ``compared`` for its
compared group; then the quantity after the dot (``selection_rate_reference``,
``selection_rate_compared``, ``disparate_impact``, ``equal_opportunity_difference``,
``accuracy`` over every row; rows counted by ``weight`` where stored).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scrutiny.audit.fairness.whatif import decide
from scrutiny.audit.fairness.whatif import whatif_values as _whatif_values
from scrutiny.audit.performance.details import PREDICTIONS
from scrutiny.audit.run.policy import CHECK_INFO, CHECKS, EVIDENCE
from scrutiny.reports.content import Num, _At, _details

__all__ = ["remediation", "whatif_path", "WHATIF_STEP"]

WHATIF_STEP = 0.005            # the thresholds a what-if tries: multiples of this in (0, 1)
ARGMAX_RULE = "argmax (P(favourable) > 0.5)"

# from the policy's registry: the explanation methods' own checks (evidence checks of the attributions
# family: sanity checks and agreement), and the checks of the model's decisions by group
EXPLANATION_CHECKS = tuple(c for c, family in CHECKS.items() if family == "attributions" and CHECK_INFO[c].about == EVIDENCE)
MODEL_FAIRNESS = tuple(c for c, family in CHECKS.items() if family == "fairness" and not c.startswith("fairness.data."))

_EXPLANATION_WORDS = {
    "attributions.completeness": "its attributions do not add up to the change of the output they explain",
    "attributions.sampling_error": "its sampling noise is large enough that another seed would reorder the features",
    "attributions.randomisation": "its explanations barely change when the model's weights are re-initialised: "
                                  "they describe the input, not the model",
    "attributions.deletion": "deleting features in its order lowers the explained probability no faster (or barely "
                             "faster) than deleting them at random: its order is not what the model relies on",
    "attributions.stability": "its feature ranking changes when the same rows are explained again with other seeds: "
                              "what it shows depends on the random draw, not on the model",
    "attributions.reason_stability": "the principal reasons it gives for unfavourable decisions change when the rows "
                                     "are explained again with other seeds",
    "attributions.first_step": "the weight it puts on a sequence's first time step comes from its baseline: explained "
                               "again from the row's own time steps in a shuffled order, the first step loses it",
}


def _num(value, path: str, style: str = "fixed", source: str = "arrays") -> Num:
    """A what-if number: computed from the run's arrays, its path names the computation (values read
    from findings.json come through :class:`~scrutiny.reports.content._At`, value and pointer together)."""
    return Num(None if value is None else float(value), source, path, style)


def whatif_path(groups: str, comparison: int, reference: float, compared: float, quantity: str) -> str:
    """The path of a what-if number (see the module docstring)."""
    return (f"threshold_whatif({PREDICTIONS}, {groups}#model_{comparison}, reference={reference!r}, "
            f"compared={compared!r}).{quantity}")


def remediation(run, rows: list[dict]) -> dict[int, dict]:
    """Finding index -> its remediation block, for the rows that failed or warned (rows of one
    block share the same dict; its ``first`` is the index of the row it is shown after)."""
    findings = run.findings["findings"]
    flagged = [r for r in rows if r["status"] in ("fail", "warn")]
    groups: dict[str, list[dict]] = {}
    for r in flagged:
        groups.setdefault(_block_key(findings[r["index"]]), []).append(r)
    out: dict[int, dict] = {}
    for key, members in groups.items():
        block = _block(run, key, members, findings)
        if block is None:
            continue
        block.update(key=key, anchor="remedy-" + "".join(ch if ch.isalnum() else "-" for ch in key),
                     first=min(r["index"] for r in members), ids=[r["id"] for r in members],
                     status="fail" if any(r["status"] == "fail" for r in members) else "warn")
        for r in members:
            out[r["index"]] = block
    return out


def attributes_of(run, indices: list[int]) -> list[str]:
    """The single attributes the fairness findings at ``indices`` compare (an intersection's two), in order,
    from the comparisons' recorded levels."""
    details = run.details("fairness")
    findings = run.findings["findings"]
    comparisons = [*details.data_bias, *details.model] if details is not None else []
    out: list[str] = []
    for i in indices:
        subject = findings[i].get("subject")
        found = next((c for c in comparisons if c.subject == subject), None)
        if found is not None:
            out.extend(found.attributes)
    return list(dict.fromkeys(out))


def _block_key(finding: dict) -> str:
    check = finding["check"]
    if check in EXPLANATION_CHECKS:
        return "explanations"
    if check in ("attributions.protected_reliance", "attributions.prohibited_basis_notices"):
        return "protected inputs"
    if check == "fairness.data.disparate_impact":
        return "training labels"
    if check in MODEL_FAIRNESS:
        return "decisions"
    return check


def _block(run, key: str, members: list[dict], findings: list[dict]) -> dict | None:
    if key == "explanations":
        return _explanations(run, findings)
    if key == "protected inputs":
        return _protected_inputs(run, members, findings)
    if key == "training labels":
        return _training_labels(run, members)
    if key == "decisions":
        return _decisions(run, members, findings)
    maker = _SINGLE.get(key)
    return maker(run, members, findings) if maker else _generic(members)


def _value(r: dict) -> Any:
    return r["value"]


def _share(r: dict) -> Any:
    """A finding's value that is a share, as the findings table shows it (one pointer, one text)."""
    return r["value"]


# ------------------------------------------------------------------ performance


def _balanced_accuracy(run, members, findings) -> dict:
    r = members[0]
    return {
        "title": "The model is not accurate enough",
        "means": ["Mean recall over the classes is ", _value(r), ": for at least one class the model is right too "
                  "rarely for its decisions to be used."],
        "causes": ["too little, or unrepresentative, training data",
                   "an architecture or a training run too weak for the task (stopped early, wrong learning rate)",
                   "class imbalance the loss does not correct: the model favours the majority class"],
        "options": [
            {"text": ["Retrain with the loss weighted by inverse class frequency, and audit again:"],
             "command": "scrutiny train --data DATA --class-weights --out CHECKPOINT"},
            {"text": ["Try another architecture or more epochs:"],
             "command": "scrutiny train --data DATA --arch ARCH --epochs N --out CHECKPOINT"},
            {"text": ["Collect more training data for the classes with the lowest recall (the model card lists "
                      "each class's recall)."], "command": None},
        ],
    }


def _calibration(run, members, findings) -> dict:
    r = members[0]
    return {
        "title": "The model's probabilities do not mean what they say",
        "means": ["Stated confidence and observed accuracy differ by ", _value(r), " on average: a cut-off or a "
                  "risk band set on these probabilities does not select the share of cases it appears to."],
        "causes": ["over-confident training (many epochs, little regularisation)",
                   "loss weighting (class weights) or resampling, which shifts the probabilities",
                   "a test population that differs from the training population"],
        "options": [
            {"text": ["Recalibrate on held-out data (temperature scaling, Platt or isotonic regression) and audit "
                      "the recalibrated model. scrutiny does not recalibrate models itself; until then, do not "
                      "read the probabilities as risks."], "command": None},
        ],
    }


def _twin(run, members, findings) -> dict:
    r = members[0]
    return {
        "title": "The PyTorch twin is another model",
        "means": ["The twin's class probabilities differ from the ONNX model's by up to ", _value(r),
                  ": the gradient methods did not run on it (not assessed)."],
        "causes": ["the twin's weights or preprocessing are not those of the exported model",
                   "the export changed the computation (an operator, dropout left on)"],
        "options": [{"text": ["Export the twin's own weights again and pass that file as the MODEL:"],
                     "command": "scrutiny export CHECKPOINT --out model.onnx"}],
    }


# ------------------------------------------------------------------ explanations


def _explanations(run, findings) -> dict | None:
    details = run.details("attributions")
    methods = list(details.methods) if details is not None else []
    flagged: dict[str, list[tuple[str, str]]] = {}   # method -> (check, status) it failed or warned
    checked: set[str] = set()
    agreement = []
    for i, f in enumerate(findings):
        if f["check"] not in EXPLANATION_CHECKS:
            continue
        if f["check"] == "attributions.agreement":
            if f["status"] in ("fail", "warn"):
                agreement.append((i, f))
            continue
        checked.add(f["subject"])
        if f["status"] in ("fail", "warn"):
            flagged.setdefault(f["subject"], []).append((f["check"], f["status"]))
    passed = [m for m in methods if m in checked and m not in flagged]
    unreliable = [{"method": m, "reasons": [f"{check.split('.', 1)[1]} ({'fails' if status == 'fail' else 'warns'}): "
                                            f"{_EXPLANATION_WORDS[check]}" for check, status in checks]}
                  for m, checks in flagged.items()]
    means = ["Some explanation method failed a sanity check: its feature rankings and heat maps are not evidence "
             "of what the model relies on."] if unreliable else \
        ["Two explanation methods rank the features differently: each tells a reviewer a different story."]
    causes = []
    checks = {check for entries in flagged.values() for check, _ in entries}
    if "attributions.randomisation" in checks:
        causes.append("a method dominated by the input itself (gradient times input, edges of an image) rather than by "
                      "the weights")
    if "attributions.deletion" in checks:
        causes.append("a method whose order misses interactions or correlated features the model uses")
    if checks & {"attributions.stability", "attributions.reason_stability"}:
        causes.append("too few samples or coalitions per row, or a background sample too small to stand for the "
                      "data: each seed draws another")
    if "attributions.first_step" in checks:
        causes.append("a baseline no real sequence resembles (a blank input) that drives a recurrent model's state "
                      "through values real inputs never produce: a train_mean baseline avoids it")
    if "attributions.completeness" in checks:
        causes.append("too few integration steps for a sharply curved model (integrated gradients)")
    if "attributions.sampling_error" in checks:
        causes.append("too few sampled coalitions for the number of features (KernelSHAP)")
    if agreement:
        causes.append("methods that answer different questions (another baseline, local against global)")
    options: list[dict[str, Any]] = []
    if passed:
        options.append({"text": ["Rely on the explanations of " + ", ".join(passed) + ", which passed every sanity "
                                 "check they were given."], "command": None})
    else:
        options.append({"text": ["No method passed every sanity check: no explanation of this run should be relied "
                                 "on."], "command": None})
    kept = [m for m in methods if m not in flagged]
    if unreliable and kept:
        options.append({"text": ["Leave the failing methods out of the audit config and audit again:"],
                        "command": "[attributions]\nmethods = [" + ", ".join(f'"{m}"' for m in kept) + "]"})
    if details is not None and details.adverse_action is not None and details.adverse_action.method in flagged:
        options.append({"text": [f"The adverse-action notices state reasons from {details.adverse_action.method}, "
                                 "which is among the methods not to rely on: their reasons are not evidence either."],
                        "command": None})
    return {"title": "Explanations that must not be relied on" if unreliable else "Explanation methods disagree",
            "means": means, "causes": causes, "options": options, "unreliable": unreliable, "reliable": passed,
            "disagree": [f["subject"] for _, f in agreement]}


def _protected_inputs(run, members, findings) -> dict:
    details = run.details("attributions")
    summary = details.adverse_action if details is not None else None
    reliance = [(r, findings[r["index"]]["subject"]) for r in members
                if findings[r["index"]]["check"] == "attributions.protected_reliance"]
    means: list = []
    for r, subject in reliance:
        means += [f"The model reads the protected attribute {subject} as an input and it carries a share of ", _share(r),
                  " of the attribution. "]
    proxies: list[str] = []
    by_basis: list = []
    if summary is not None and any(findings[r["index"]]["check"] == "attributions.prohibited_basis_notices"
                                   for r in members):
        notice = next(r for r in members if findings[r["index"]]["check"] == "attributions.prohibited_basis_notices")
        means += [notice["value"], " unfavourable decisions cannot get an adverse-action notice: their principal "
                  "reasons include a prohibited basis."]
        counts = _details(run, "attributions").at("adverse_action", "cannot_issue_by_basis")
        for basis, count in summary.cannot_issue_by_basis.items():
            if not count:
                continue
            by_basis += [f"{basis} ", counts.num(basis, style="int"), " notices"]
            by_basis.append("; ")
        by_basis = by_basis[:-1]
        proxies = list(summary.prohibited_inputs)
    names = list(dict.fromkeys([s for _, s in reliance] + proxies))
    causes: list[Any] = ["the protected attribute is itself an input of the model",
              "other inputs stand in for it (proxies, such as relationship or marital status for sex)"]
    if by_basis:
        causes.append(["notices blocked by basis: ", *by_basis])
    options = [
        {"text": ["Retrain without the protected and prohibited inputs the model reads (" + ", ".join(names) + "), "
                  "and audit again (fairness too: proxies left in the "
                  "data can carry the same disparity). For your own table, list them in the spec's drop (its "
                  "[protected] columns stay the groups the fairness checks compare); the built-in data sets read "
                  "every feature their spec declares, and scrutiny has no option to leave one out of them."],
         "command": "drop = [" + ", ".join(f'"{n}"' for n in names) + "]\n"
                    "scrutiny train --data FILE.csv --spec SPEC.toml --out CHECKPOINT"},
    ]
    return {"title": "Decisions that rest on protected attributes", "means": means, "causes": causes,
            "options": options, "drop": names}


# ------------------------------------------------------------------ robustness


def _robust_accuracy(run, members, findings) -> dict:
    r = members[0]
    details = run.details("robustness")
    radius: list = ["the gated radius"] if details is None else \
        ["radius ", _details(run, "robustness").num("gated_eps", style="g"), f" ({details.norm})"]
    return {
        "title": "Small perturbations change the model's decisions",
        "means": ["Under the audit's attacks at ", *radius, " only a share of ", _share(r), " of the attacked rows stay "
                  "correctly classified: inputs a little off the test data flip the decision."],
        "causes": ["standard training leaves small margins around the training points",
                   "a few inputs the model is very sensitive to"],
        "options": [
            {"text": ["Train on noisy inputs (also the base classifier randomized smoothing certifies), then audit "
                      "again:"], "command": "scrutiny train --data DATA --noise-sigma SIGMA --out CHECKPOINT"},
            {"text": ["Adversarial training (PGD, TRADES) is not offered by scrutiny: train such a model elsewhere and "
                      "audit it here."], "command": None},
        ],
    }


def _weak_evaluation(run, members, findings) -> dict:
    r = members[0]
    details = run.details("robustness")
    current: list = []
    if details is not None and {"steps", "restarts"} <= set(details.settings):  # written together
        settings = _details(run, "robustness").at("settings")
        current = [" (this run: ", settings.num("steps", style="int"), " steps, ", settings.num("restarts", style="int"),
                   " restart(s))"]
    return {
        "title": "The attack evaluation is weak",
        "means": [r["value"], " sign(s) that the attacks had not converged: the robust accuracy is an upper bound, "
                  "not a measurement to rely on."],
        "causes": ["too few attack steps or restarts", "masked or vanishing gradients, which gradient attacks cannot "
                   "follow"],
        "options": [
            {"text": ["Attack harder in the audit config: AutoAttack's number of steps and more restarts", *current,
                      "; keep the gradient-free square attack in the list against masked gradients:"],
             "command": "[robustness]\nsteps = 100\nrestarts = 3\nattacks = [\"apgd-ce\", \"apgd-t\", \"square\", "
                        "\"gaussian\"]"},
        ],
    }


def _certified(run, members, findings) -> dict:
    r = members[0]
    details = run.details("robustness")
    cert = details.certification if details is not None else None
    means = ["Randomized smoothing certifies a share of ", _share(r), " of the certified rows correct within the gated radius",
             *([" (interval from ", r["low"], ")"] if r["low"] else []),
             ": too few, or too few rows to be sure, for the policy."]
    causes = ["a base model not trained on noise of the smoothing's sigma: it misclassifies its noisy copies"]
    command = "scrutiny train --data DATA --noise-sigma SIGMA --out CHECKPOINT"
    text: list = ["Train the base model with noise of the smoothing's sigma, then audit again:"]
    if cert is not None:
        sigma = _details(run, "robustness").num("certification", "sigma", style="g")
        text = ["Train the base model with noise of the smoothing's sigma (this run: ", sigma,
                ") and audit again with the same sigma; certifying more rows narrows the interval:"]
        if cert.trained_sigma is None:
            causes[0] = "the base model was trained without noise, so it misclassifies many of its noisy copies"
    causes.append("too few noisy copies (n), which loosens each row's bound")
    return {"title": "Too few rows are certified robust", "means": means, "causes": causes,
            "options": [{"text": text, "command": command}]}


# ------------------------------------------------------------------ fairness


def _mitigate_option(run, attributes: list[str]) -> tuple[list[dict], list[dict]]:
    """The mitigation option for ``attributes`` and, where the run has them, its before/after tables."""
    details = run.details("fairness")
    tables = []
    attribute = attributes[0]
    for k, mit in enumerate((details.mitigation or []) if details is not None else []):
        if mit.attribute not in attributes:
            continue
        attribute = mit.attribute
        at = _details(run, "fairness").at("mitigation", k)
        tables.append({"method": mit.method, "rows": mit.rows, "n": at.num("n", style="int"), "metrics": [
            {"metric": name.replace("_", " "), "before": at.num("before", name, "value"),
             "after": at.num("after", name, "value")}
            for name in ("disparate_impact", "statistical_parity_difference", "equal_opportunity_difference",
                         "average_odds_difference", "accuracy") if name in mit.before and name in mit.after]})
    if tables:
        text = [f"The run measured two mitigations for {attribute} (reweighing retrains the model; equalized-odds "
                "post-processing adjusts its decisions); their before and after are below."]
        return [{"text": text, "command": None}], tables
    named = " or ".join(attributes)
    return [{"text": [f"Measure two mitigations for {named} (one attribute per audit), reweighing (retrains the "
                      "same architecture) and equalized-odds post-processing, with their before and after: add to "
                      "the audit config and audit again, or run"],
             "command": f"[fairness]\nmitigate = \"{attribute}\"\n\nscrutiny fairness CHECKPOINT --data DATA "
                        f"--mitigate {attribute}"}], []


def _training_labels(run, members) -> dict:
    attributes = attributes_of(run, [r["index"] for r in members])
    options, _ = _mitigate_option(run, attributes)
    return {
        "title": "The training labels favour some groups",
        "means": ["In the training data some groups carry the favourable label far less often than others. A model "
                  "fitted to these labels learns the gap; it is a warning about the data, not a failure by itself."],
        "causes": ["historical decisions recorded as labels", "a sample that under-represents some groups",
                   "real differences in the outcome, which a policy may or may not accept"],
        "options": [*options,
                    {"text": ["Examine how the labels were made and, where they encode past bias, relabel or collect "
                              "more representative data (EU AI Act Art. 10(2)(f))."], "command": None}],
    }


def _decisions(run, members: list[dict], findings: list[dict]) -> dict:
    """One block for every attribute (and intersection) whose decisions fail or warn: what each shows,
    the shared causes and options, and a threshold what-if per comparison."""
    details = run.details("fairness")
    checks = {findings[r["index"]]["check"] for r in members}
    by_attribute: dict[str, list[dict]] = {}
    for r in members:
        by_attribute.setdefault(str(findings[r["index"]].get("subject") or "").split("=", 1)[0], []).append(r)
    attributes = list(by_attribute)
    means: list = [f"The model's decisions differ by {', '.join(attributes)}: "]
    for rows in by_attribute.values():
        for r in rows[:2]:
            means += [r["id"], " is ", r["value"], "; "]
    means[-1] = "."
    causes = ["the training labels' own gap by these attributes, which the model learnt",
              "the attributes or their proxies among the model's inputs"]
    if "fairness.equal_opportunity_difference" in checks or "fairness.average_odds_difference" in checks:
        causes.append("different error rates by group: among people with the favourable outcome, one group is "
                      "recognised less often")
    single = attributes_of(run, [r["index"] for r in members])
    options: list[dict] = []
    tables: list[dict] = []
    options, tables = _mitigate_option(run, single)
    whatifs = []
    if details is not None:
        for i, comparison in enumerate(details.model):
            if comparison.attribute not in by_attribute:
                continue
            found = next((f for f in findings if f["check"] == "fairness.disparate_impact"
                          and f["subject"] == comparison.subject), None)
            if found is None or found["status"] not in ("fail", "warn"):
                continue
            whatif = _threshold_whatif(run, i, comparison, found, findings.index(found))
            if whatif is not None:
                whatifs.append(whatif)
    if whatifs:
        options.append({"text": ["Change the decision threshold (computed from the stored probabilities, below). A "
                                 "threshold that differs by group uses the protected attribute at decision time, "
                                 "which US credit and employment law forbid (ECOA / Regulation B, Title VII "
                                 "§703(l)); it is shown to size the gap, not as a recommendation."],
                        "command": None})
    if "fairness.scoring_rate_impact_ratio" in checks:
        options.append({"text": ["A threshold does not change the scores: the scoring-rate impact ratio only moves "
                                 "with a retrained model."], "command": None})
    reliance = [f for f in findings if f["check"] == "attributions.protected_reliance" and f["subject"] in single
                and f["status"] in ("fail", "warn")]
    if reliance:
        options.append({"text": [f"The model reads {', '.join(f['subject'] for f in reliance)} as an input: "
                                 "retraining without it (see its block) removes the direct use, not the proxies."],
                        "command": None})
    return {"title": f"Decisions differ by {', '.join(attributes)}", "means": means, "causes": causes, "options": options,
            "mitigation": tables, "whatifs": whatifs}


def _threshold_whatif(run, i: int, comparison, found: dict, index: int) -> dict | None:
    """Thresholds that would bring comparison ``i``'s disparate impact to the policy's fail bound:
    one for everyone, and one for the compared group only (the reference group's kept at 0.5)."""
    from scrutiny.audit.fairness.details import GROUPS

    details = run.details("fairness")
    if details.settings.get("threshold") != ARGMAX_RULE or not run.has(GROUPS) or not run.has(PREDICTIONS):
        return None
    stored = run.arrays(PREDICTIONS)
    groups = run.arrays(GROUPS)
    if "proba" not in stored or stored["proba"].ndim != 2 or stored["proba"].shape[1] != 2 \
            or f"model_{i}" not in groups:
        return None
    score = stored["proba"][:, 1].astype(np.float64)
    y = stored["y_true"].astype(np.int64)
    w = stored["weight"].astype(np.float64) if "weight" in stored else np.ones(len(y))
    code = groups[f"model_{i}"]
    bounds = found["threshold"]
    value = found["value"]
    if value is None:
        return None
    low, high = bounds.get("fail_below"), bounds.get("fail_above")
    if low is not None and value < low:
        target, key = low, "fail_below"
    elif high is not None and value > high:
        target, key = high, "fail_above"
    else:  # a warning: aim for the warn bound it crossed
        target, key = (bounds["warn_below"], "warn_below") if "warn_below" in bounds and value < bounds["warn_below"] \
            else (bounds.get("warn_above"), "warn_above")
        if target is None:
            return None
    raising = key.endswith("below")  # the compared group must be selected more often

    def rates(reference: float, compared: float) -> float:
        decided = decide(score, code, reference, compared)
        sel = [float(w[(code == g)] @ decided[code == g] / w[code == g].sum()) for g in (1, 0)]
        return sel[1] / sel[0] if sel[0] > 0 else float("nan")

    def meets(di: float) -> bool:
        return bool(np.isfinite(di) and (di >= target if raising else di <= target))

    steps = int(round(0.5 / WHATIF_STEP))
    grid = [round(0.5 - k * WHATIF_STEP, 3) for k in range(1, steps)] if raising else \
        [round(0.5 + k * WHATIF_STEP, 3) for k in range(1, steps)]
    compared_t = next((t for t in grid if meets(rates(0.5, t))), None)
    global_t = next((t for t in grid if meets(rates(t, t))), None)
    groups_file = GROUPS
    at = _details(run, "fairness").at("model", i)

    def row(label: str, reference: float, compared: float) -> dict:
        values = _whatif_values(score, y, w, code, reference, compared)
        cells = {name: _num(values[name], whatif_path(groups_file, i, reference, compared, name),
                            "percent" if name.startswith("selection") or name == "accuracy" else "fixed", "arrays")
                 for name in values}
        return {"label": label,
                "reference_threshold": _num(reference, whatif_path(groups_file, i, reference, compared,
                                                                     "reference_threshold"), "fixed", "arrays"),
                "compared_threshold": _num(compared, whatif_path(groups_file, i, reference, compared,
                                                                   "compared_threshold"), "fixed", "arrays"),
                **cells}

    audited = {"label": "as audited (argmax)",
               "reference_threshold": _num(0.5, whatif_path(groups_file, i, 0.5, 0.5, "reference_threshold"),
                                           "fixed", "arrays"),
               "compared_threshold": _num(0.5, whatif_path(groups_file, i, 0.5, 0.5, "compared_threshold"),
                                          "fixed", "arrays"),
               "selection_rate_reference": at.num("per_group", "privileged", "selection_rate", style="percent"),
               "selection_rate_compared": at.num("per_group", "unprivileged", "selection_rate", style="percent"),
               "disparate_impact": at.num("metrics", "disparate_impact", "value"),
               "equal_opportunity_difference": at.num("metrics", "equal_opportunity_difference", "value"),
               "accuracy": _details(run, "performance").num("accuracy", "value", style="percent")
               if run.details("performance") is not None
               else _whatif_row_accuracy(score, y, w, code, groups_file, i)}
    table = [audited]
    lowest = grid[-1]
    if global_t is not None:
        table.append(row("one for everyone", global_t, global_t))
    else:
        table.append(row(f"one for everyone, the {'lowest' if raising else 'highest'} tried (none reaches the bound)",
                         lowest, lowest))
    if compared_t is not None:
        table.append(row("compared group only", 0.5, compared_t))
    reference_name, compared_name = comparison.privileged, comparison.compared or "all others"
    return {"subject": comparison.subject, "reference": reference_name, "compared": compared_name,
            "target": _At(run.findings).num("findings", index, "threshold", key), "id": found["id"],
            "reached_globally": global_t is not None, "reached_by_group": compared_t is not None,
            "direction": "lowered" if raising else "raised", "table": table}


def _whatif_row_accuracy(score, y, w, code, groups_file, i):
    values = _whatif_values(score, y, w, code, 0.5, 0.5)
    return _num(values["accuracy"], whatif_path(groups_file, i, 0.5, 0.5, "accuracy"), "percent", "arrays")


# ------------------------------------------------------------------ anything else


def _generic(members) -> dict:
    r = members[0]
    return {"title": f"{r['id']} {'fails' if r['status'] == 'fail' else 'warns'}",
            "means": [r["explanation"]], "causes": [],
            "options": [{"text": ["Read the check's policy comment (scrutiny's default_policy.toml) and audit again "
                                  "once its cause is addressed."], "command": None}]}


_SINGLE = {
    "performance.balanced_accuracy": _balanced_accuracy,
    "performance.calibration_error": _calibration,
    "performance.twin_difference": _twin,
    "robustness.robust_accuracy": _robust_accuracy,
    "robustness.weak_evaluation": _weak_evaluation,
    "robustness.certified_accuracy": _certified,
}
