"""``scrutiny trend RUN_A RUN_B … --out DIR``: monitoring over time, from several run folders.

The runs are audits of one model lineage (successive versions of a model) or of one model on
successive windows of data. They are taken **in the order given** (run 1 first; not sorted by
date: an alert says when the finishing times go backwards) and labelled by folder name and the
date the audit finished. Nothing is recomputed from an audit: the gated metrics, their
intervals, thresholds and statuses are read from each run's ``findings.json``; the only
numbers computed here are the drift statistics, from the runs' stored arrays
(:mod:`scrutiny.reports.drift`).

The report shows, in HTML, PDF and Markdown:

- **alerts** first: a status that turns to warn or fail, a major (PSI ≥ 0.25) or moderate
  (PSI ≥ 0.1) shift of a feature or the score, a KS test with p < 0.01 *and* a statistic of at
  least 0.1, a changed model (weights' SHA-256) or policy (its checks and group minimums) between
  consecutive runs, and runs given out of time order;
- the **runs**: name, finishing time, model and data hashes, test rows, verdict, counts;
- **status transitions** between consecutive runs (a finding missing from a run is "not in run");
- the **gated metrics**: one row per finding id present in any run, its value, interval and
  status in each run, and the policy bands (from the findings' thresholds, per run where they
  changed); small-multiples figures per family, one panel per metric, with the intervals and the
  fail (red) and warn (amber) bands shaded;
- **data drift** between consecutive runs and from the first to the last: PSI and KS per
  feature (tables, from ``arrays/data_profile.npz``; features one run lacks are listed as
  skipped) and on the score (P(favourable) for two classes, the top class probability otherwise,
  from ``arrays/predictions.npz``), PSI on the predicted and the true class; for images the
  score and classes only;
- the **monitoring clauses** of the compliance mapping (section ``monitoring``).

Every number is a :class:`RunNum`: the HTML carries ``data-source`` (``findings``, ``manifest``
or ``arrays``), ``data-path`` (a JSON pointer, or for a drift statistic ``FILE#ARRAY - FILE#ARRAY``,
the reference's array then the compared one's), ``data-run`` (the 1-based run number(s) in the
order given: one for a value of a run, ``"A B"`` for a drift from run A to run B),
``data-measure`` for a drift statistic (``psi``, ``ks``, ``ks_p``) and ``data-value``.
A score path is ``arrays/predictions.npz#proba[:,1]`` (P(favourable)) or ``#proba[:,max]``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scrutiny.audit.performance.details import DATA_PROFILE, PREDICTIONS, read_profile
from scrutiny.audit.run.findings import STATUS_WORDS
from scrutiny.audit.run.run_folder import Run, RunError, load_run, to_json
from scrutiny.errors import InputError
from scrutiny.reports import drift
from scrutiny.reports.compliance import Mapping, load_mapping
from scrutiny.reports.content import _BOUND_WORDS, Num
from scrutiny.reports.render import _environment, check_formats, rendered_folder, write_formats
from scrutiny.safe_write import DestinationError, check_destination, shown

__all__ = ["RunNum", "TrendContent", "trend_content", "write_trend", "check_trend_folder", "TREND_FOLDER",
           "render_trend_html", "render_trend_markdown"]

NOT_IN_RUN = "not in run"
# how bad a status is, for the alerts: a move up to warn or fail is an alert
_SEVERITY = {"pass": 0, "not_assessed": 1, "insufficient": 1, "absent": 1, "warn": 2, "fail": 3}


@dataclass(frozen=True)
class RunNum(Num):
    """A :class:`~scrutiny.reports.content.Num` of one run (``runs = (i,)``), or a drift statistic
    computed from two runs' arrays (``runs = (reference, compared)``, ``measure`` psi, ks or ks_p)."""

    runs: tuple[int, ...] = ()
    measure: str = ""


@dataclass
class TrendContent:
    title: str
    runs: list[dict]
    alerts: list[dict]
    transitions: list[dict]
    metrics: list[dict]
    figures: list[dict]
    drift: list[dict]
    drift_notes: list[str]
    clauses: list
    why: str | None
    thresholds: dict = field(default_factory=dict)


# ------------------------------------------------------------------ reading the runs


def _load_runs(paths) -> list[Run]:
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise InputError(f"RUNS: a trend needs at least two run folders, got {len(paths)}")
    seen: dict[Path, Path] = {}
    for path in paths:
        real = path.resolve()
        if real in seen:
            raise InputError(f"RUNS: {path} is given twice (as {seen[real]} before); give each run once")
        seen[real] = path
    runs = [load_run(p) for p in paths]
    first = runs[0].findings["subject"]["data"]
    for run in runs[1:]:
        data = run.findings["subject"]["data"]
        if data["task"] != first["task"] or list(data["classes"]) != list(first["classes"]):
            raise InputError(f"RUNS: {run.path} audits {data['task']} data with classes {', '.join(map(str, data['classes']))}"
                             f"; {runs[0].path} audits {first['task']} data with classes "
                             f"{', '.join(map(str, first['classes']))}: a trend compares runs of one task")
    return runs


def _policy_digest(manifest: dict) -> str:
    """SHA-256 of the policy's checks and group minimums as the run recorded them (not its file name)."""
    policy = manifest.get("policy") or {}
    text = to_json({"checks": policy.get("checks"), "groups": policy.get("groups")})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _run_info(index: int, run: Run) -> dict:
    manifest, findings = run.manifest, run.findings
    model = manifest.get("model") or {}

    def f(*path, style="int") -> RunNum:
        node = findings
        pointer = ""
        for key in path:
            node = node[key]
            pointer += "/" + str(key)
        return RunNum(None if node is None else float(node), "findings", pointer, style, runs=(index,))

    finished = str(manifest.get("finished") or "")
    return {
        "index": index, "name": run.name, "path": str(run.path), "finished": finished,
        "label": f"{index}. {run.name} ({finished[:10] or 'no date'})",
        "model": findings["subject"]["model"].get("architecture") or model.get("source"),
        "weights_sha256": model.get("weights_sha256"), "data_name": findings["subject"]["data"]["name"],
        "data_sha256": findings["subject"]["data"]["sha256"], "n_test": f("subject", "data", "n_test"),
        "verdict": findings["verdict"],
        "counts": [(STATUS_WORDS[k], f("counts", k)) for k in STATUS_WORDS if k in findings["counts"]],
        "policy_source": (manifest.get("policy") or {}).get("source"), "policy_sha256": _policy_digest(manifest),
    }


# ------------------------------------------------------------------ gated metrics and transitions


def _metrics(runs: list[Run]) -> tuple[list[dict], list[dict]]:
    """One row per finding id in any run (first seen first), and the status transitions."""
    where: list[dict[str, int]] = [{f["id"]: k for k, f in enumerate(run.findings["findings"])} for run in runs]
    ids = list(dict.fromkeys(i for w in where for i in w))
    rows, transitions = [], []
    for finding_id in ids:
        cells: list[dict | None] = []
        for r, (run, place) in enumerate(zip(runs, where), start=1):
            k = place.get(finding_id)
            if k is None:
                cells.append(None)
                continue
            entry = run.findings["findings"][k]
            base = f"/findings/{k}"
            interval = entry.get("interval")
            cells.append({
                "run": r, "entry": entry, "status": entry["status"], "status_text": STATUS_WORDS[entry["status"]],
                "value": RunNum(_number(entry["value"]), "findings", f"{base}/value", "g", runs=(r,)),
                "low": RunNum(_number(interval["low"]), "findings", f"{base}/interval/low", "g", runs=(r,))
                if interval else None,
                "high": RunNum(_number(interval["high"]), "findings", f"{base}/interval/high", "g", runs=(r,))
                if interval else None,
                "threshold": [(_BOUND_WORDS[b], RunNum(_number(v), "findings", f"{base}/threshold/{b}", "g", runs=(r,)))
                              for b, v in entry["threshold"].items()],
            })
        present = [c for c in cells if c is not None]
        latest = present[-1]["entry"]
        bands: list[dict] = []
        for cell in present:
            if bands and bands[-1]["threshold_raw"] == cell["entry"]["threshold"]:
                bands[-1]["runs"].append(cell["run"])
            else:
                bands.append({"runs": [cell["run"]], "threshold": cell["threshold"],
                              "threshold_raw": cell["entry"]["threshold"]})
        for band in bands:
            band["label"] = _run_list(band["runs"])
        rows.append({"id": finding_id, "check": latest["check"], "family": latest["family"], "metric": latest["metric"],
                     "cells": cells, "bands": bands, "bands_changed": len(bands) > 1})
        for r in range(1, len(runs)):
            before, after = cells[r - 1], cells[r]
            status_before = before["status"] if before else "absent"
            status_after = after["status"] if after else "absent"
            if status_before == status_after:
                continue
            transitions.append({
                "id": finding_id, "from_run": r, "to_run": r + 1, "from": status_before, "to": status_after,
                "from_text": STATUS_WORDS.get(status_before, NOT_IN_RUN),
                "to_text": STATUS_WORDS.get(status_after, NOT_IN_RUN),
                "from_value": before["value"] if before else None, "to_value": after["value"] if after else None,
                "worse": status_after in ("warn", "fail") and _SEVERITY[status_after] > _SEVERITY[status_before],
                "bands_changed": bool(before and after and before["entry"]["threshold"] != after["entry"]["threshold"]),
            })
    return rows, transitions


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _run_list(numbers: list[int]) -> str:
    """``runs 1–3, 5`` for [1, 2, 3, 5]."""
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(start) if start == n else f"{start}–{n}")
            start = None
    return ("run " if len(numbers) == 1 else "runs ") + ", ".join(parts)


def _figures(rows: list[dict], runs: list[dict]) -> list[dict]:
    """Small multiples per family: one panel per gated metric with a value in some run."""
    from scrutiny.audit.plots import TEXT_WIDTH, policy_bands, subplots

    colours = {"pass": "#1b7a2f", "warn": "#9a6700", "fail": "#b3261e", "insufficient": "#1f5f8b",
               "not_assessed": "#6b4c9a"}
    out = []
    families = list(dict.fromkeys(r["family"] for r in rows))
    for family in families:
        plotted = [r for r in rows if r["family"] == family
                   and any(c is not None and c["value"].value is not None for c in r["cells"])]
        if not plotted:
            continue
        columns = min(3, len(plotted))
        grid = (len(plotted) + columns - 1) // columns
        fig, axes = subplots(grid, columns, figsize=(TEXT_WIDTH, 1.9 * grid + 0.5), squeeze=False)
        for ax in axes.flat[len(plotted):]:
            ax.set_visible(False)
        x_all = np.arange(1, len(runs) + 1)
        for ax, row in zip(axes.flat, plotted):
            shown = [c for c in row["cells"] if c is not None and c["value"].value is not None]
            xs = np.array([c["run"] for c in shown])
            values = np.array([c["value"].value for c in shown])
            lows = np.array([c["low"].value if c["low"] is not None and c["low"].value is not None else v
                             for c, v in zip(shown, values)])
            highs = np.array([c["high"].value if c["high"] is not None and c["high"].value is not None else v
                              for c, v in zip(shown, values)])
            bounds = [float(v) for c in row["cells"] if c is not None for v in c["entry"]["threshold"].values()
                      if v is not None]
            span = np.concatenate([values, lows, highs, bounds])
            low, high = float(span.min()), float(span.max())
            pad = 0.12 * (high - low) if high > low else max(abs(high) * 0.1, 0.05)
            low, high = low - pad, high + pad
            for cell in row["cells"]:
                if cell is None:
                    continue
                for key, a, b in policy_bands(cell["entry"]["threshold"], low, high):
                    ax.fill_between([cell["run"] - 0.5, cell["run"] + 0.5], a, b, linewidth=0,
                                    color="#b3261e" if key.startswith("fail") else "#e0a800",
                                    alpha=0.16 if key.startswith("fail") else 0.2)
            ax.plot(xs, values, color="#555555", linewidth=0.8, zorder=2)
            ax.errorbar(xs, values, yerr=np.vstack([values - lows, highs - values]).clip(min=0), fmt="none",
                        ecolor="#333333", capsize=2, linewidth=0.8, zorder=3)
            ax.scatter(xs, values, c=[colours.get(c["status"], "#333333") for c in shown], s=16, zorder=4)
            ax.set_xlim(0.5, len(runs) + 0.5)
            ax.set_ylim(low, high)
            ax.set_xticks(x_all, [str(i) for i in x_all])
            ax.tick_params(labelsize=7)
            title = row["id"].split(".", 1)[-1]
            ax.set_title(title if len(title) <= 42 else title[:40] + "…", fontsize=7.5)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{family}: value per run (x: run number) with its interval; shaded: the policy's fail (red) "
                     "and warn (amber) bands", fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        out.append({"family": family, "panels": len(plotted),
                    "data_uri": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")})
    return out


# ------------------------------------------------------------------ drift


@dataclass
class _Sample:
    """What one run offers the drift: its stored features, score and classes, and the rows' weights."""

    features: dict[str, tuple[str, object, str]]   # name -> (kind, values, array name)
    score: np.ndarray | None
    score_path: str | None
    y_pred: list[str] | None                       # None: the run holds no predictions
    y_true: list[str] | None
    weight: np.ndarray | None
    profiled: bool


def _sample(run: Run) -> _Sample:
    if not run.has(PREDICTIONS):  # an audit that left the performance family out
        return _Sample(features={}, score=None, score_path=None, y_pred=None, y_true=None, weight=None, profiled=False)
    stored = run.arrays(PREDICTIONS)
    classes = [str(c) for c in run.findings["subject"]["data"]["classes"]]
    score, score_path = None, None
    if "proba" in stored:
        proba = np.asarray(stored["proba"], dtype=np.float64)
        if proba.shape[1] == 2:
            score, score_path = proba[:, 1], f"{PREDICTIONS}#proba[:,1]"
        else:
            score, score_path = proba.max(axis=1), f"{PREDICTIONS}#proba[:,max]"
    features: dict[str, tuple[str, object, str]] = {}
    profiled = run.has(DATA_PROFILE)
    if profiled:
        try:
            for feature in read_profile(run.arrays(DATA_PROFILE)):
                features[feature.name] = (feature.kind, feature.values, feature.array)
        except ValueError as exc:
            raise RunError(f"{run.path / DATA_PROFILE}: {exc}") from None
    weight = np.asarray(stored["weight"], dtype=np.float64) if "weight" in stored else None
    return _Sample(features=features, score=score, score_path=score_path,
                   y_pred=[classes[i] for i in stored["y_pred"].tolist()],
                   y_true=[classes[i] for i in stored["y_true"].tolist()], weight=weight, profiled=profiled)


def _pairs(n: int) -> list[tuple[int, int]]:
    """Consecutive runs, then the first against the last (with three runs or more)."""
    pairs = [(i, i + 1) for i in range(1, n)]
    return pairs + [(1, n)] if n > 2 else pairs


def _drift_row(name: str, kind: str, result: drift.Drift, a: int, b: int, path: str) -> dict:
    def num(value, measure, style):
        return RunNum(value, "arrays", path, style, runs=(a, b), measure=measure)

    return {"name": name, "kind": kind, "bins": num(result.bins, "bins", "int"), "psi": num(result.psi, "psi", "fixed"),
            "level": drift.psi_level(result.psi),
            "ks": num(result.ks, "ks", "fixed") if result.ks is not None else None,
            "ks_p": num(result.ks_p, "ks_p", "g") if result.ks_p is not None else None,
            "ks_alert": result.ks is not None and result.ks_p is not None and result.ks_p < drift.KS_ALPHA
            and result.ks >= drift.KS_MIN_STATISTIC}


def _drift(runs: list[Run], task: str) -> tuple[list[dict], list[str]]:
    samples = [_sample(run) for run in runs]
    notes = []
    unpredicted = [i for i, s in enumerate(samples, start=1) if s.y_pred is None]
    if unpredicted:
        notes.append(f"{_run_list(unpredicted).capitalize()} stored no predictions (its audit left the performance "
                     "family out): no drift is measured in the comparisons with it.")
    if task != "tabular":
        notes.append(f"{task.capitalize()} data: the inputs are not profiled, so drift is measured on the score and "
                     "the classes only.")
    else:
        unprofiled = [i for i, s in enumerate(samples, start=1) if not s.profiled and s.y_pred is not None]
        if unprofiled:
            notes.append(f"{_run_list(unprofiled).capitalize()} stored no feature values (audited before they were "
                         f"stored, or logged decisions without feature columns): drift on the features is left out of "
                         f"every comparison with {'it' if len(unprofiled) == 1 else 'them'}.")
    out = []
    for a, b in _pairs(len(runs)):
        ref, cmp = samples[a - 1], samples[b - 1]
        w = {"reference_weights": ref.weight, "compared_weights": cmp.weight}
        features = []
        shared = [n for n in ref.features if n in cmp.features]
        skipped = [n for n in ref.features if n not in cmp.features] + [n for n in cmp.features if n not in ref.features]
        for name in shared:
            kind_a, values_a, array_a = ref.features[name]
            kind_b, values_b, array_b = cmp.features[name]
            path = f"{DATA_PROFILE}#{array_a} - {DATA_PROFILE}#{array_b}"
            if kind_a != kind_b:
                skipped.append(name)
                continue
            result = drift.numeric_drift(values_a, values_b, **w) if kind_a == "numeric" \
                else drift.categorical_drift(values_a, values_b, **w)
            features.append(_drift_row(name, kind_a, result, a, b, path))
        outputs = []
        if ref.score is not None and cmp.score is not None:
            label = "score: P(favourable)" if ref.score_path and ref.score_path.endswith("[:,1]") \
                else "score: top class probability"
            outputs.append(_drift_row(label, "numeric", drift.numeric_drift(ref.score, cmp.score, **w), a, b,
                                      f"{ref.score_path} - {cmp.score_path}"))
        for name, key in (("predicted class", "y_pred"), ("true class", "y_true")):
            if getattr(ref, key) is None or getattr(cmp, key) is None:
                continue
            outputs.append(_drift_row(name, "categorical",
                                      drift.categorical_drift(getattr(ref, key), getattr(cmp, key), **w), a, b,
                                      f"{PREDICTIONS}#{key} - {PREDICTIONS}#{key}"))
        no_score = [i for i, s in ((a, ref), (b, cmp)) if s.score is None and s.y_pred is not None]
        out.append({"from": a, "to": b, "label": f"run {a} → run {b}", "first_last": (a, b) == (1, len(runs)) and
                    len(runs) > 2, "features": features, "outputs": outputs, "skipped": skipped,
                    "no_score": no_score})
    return out, notes


# ------------------------------------------------------------------ alerts


def _alerts(infos: list[dict], transitions: list[dict], drifts: list[dict]) -> list[dict]:
    alerts: list[dict] = []
    for t in transitions:
        if t["worse"]:
            alerts.append({"type": "status", "severity": t["to"], **t})
    for before, after in zip(infos, infos[1:]):
        a, b = before["index"], after["index"]
        if before["weights_sha256"] != after["weights_sha256"]:
            alerts.append({"type": "model", "severity": "info", "from_run": a, "to_run": b,
                           "from_sha": before["weights_sha256"] or "none (logged decisions)",
                           "to_sha": after["weights_sha256"] or "none (logged decisions)"})
        if before["policy_sha256"] != after["policy_sha256"]:
            alerts.append({"type": "policy", "severity": "info", "from_run": a, "to_run": b,
                           "from_source": before["policy_source"], "to_source": after["policy_source"]})
        if before["data_name"] != after["data_name"]:
            alerts.append({"type": "data", "severity": "info", "from_run": a, "to_run": b,
                           "from_name": before["data_name"], "to_name": after["data_name"]})
        if before["finished"] and after["finished"] and after["finished"] < before["finished"]:
            alerts.append({"type": "order", "severity": "info", "from_run": a, "to_run": b,
                           "from_time": before["finished"], "to_time": after["finished"]})
    for pair in drifts:
        for row in pair["features"] + pair["outputs"]:
            if row["level"] != "none":
                alerts.append({"type": "psi", "severity": "fail" if row["level"] == "major" else "warn",
                               "pair": pair["label"], "row": row})
            if row["ks_alert"]:
                alerts.append({"type": "ks", "severity": "warn", "pair": pair["label"], "row": row})
    order = {"fail": 0, "warn": 1, "info": 2}
    return sorted(alerts, key=lambda x: order[x["severity"]])  # stable: in the order found within a severity


# ------------------------------------------------------------------ content, rendering, writing


def trend_content(runs: list[Run], mapping: Mapping) -> TrendContent:
    """Everything the trend report shows, from ``runs`` (in the order given) and ``mapping``."""
    infos = [_run_info(i, run) for i, run in enumerate(runs, start=1)]
    metrics, transitions = _metrics(runs)
    task = runs[0].findings["subject"]["data"]["task"]
    drifts, notes = _drift(runs, task)
    last = infos[-1]
    return TrendContent(
        title=f"Trend of {last['model'] or 'the model'} on {last['data_name']} over {len(runs)} runs",
        runs=infos, alerts=_alerts(infos, transitions, drifts), transitions=transitions, metrics=metrics,
        figures=_figures(metrics, infos), drift=drifts, drift_notes=notes,
        clauses=mapping.for_section("monitoring"), why=mapping.why.get("monitoring"),
        thresholds={"moderate": drift.MODERATE_PSI, "major": drift.MAJOR_PSI, "ks_alpha": drift.KS_ALPHA,
                    "ks_min": drift.KS_MIN_STATISTIC, "epsilon": drift.PSI_EPSILON},
    )


def render_trend_html(content: TrendContent) -> str:
    return _environment(False).get_template("trend.html.j2").render(c=content)


def render_trend_markdown(content: TrendContent) -> str:
    return _environment(True).get_template("trend.md.j2").render(c=content)


TREND_FOLDER = rendered_folder("trend", "trend report folder")  # one holding only trend.html, .pdf, .md


def check_trend_folder(folder: str | os.PathLike, *, inputs=()) -> Path:
    """InputError unless trend reports may be written into ``folder``: a new or empty folder, or one
    holding only earlier trend reports (whose files are replaced); never a run folder, nor inside one."""
    target = Path(folder)
    resolved = target.resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if source.is_dir() and source in resolved.parents:
            raise DestinationError(folder, f"is inside the input {shown(given)}; write the trend report outside the runs")
    return check_destination(folder, kind=TREND_FOLDER, overwrite=True, inputs=inputs)


def write_trend(runs: Sequence[str | os.PathLike], out: str | os.PathLike, *, formats: Sequence[str] = ("html",),
                mapping: str | os.PathLike | None = None) -> list[Path]:
    """Render the trend over the run folders ``runs`` (in the order given) into ``out`` as
    ``trend.html``, ``trend.pdf``, ``trend.md``; returns the files written.

    Raises:
        InputError: fewer than two runs, a run given twice, a folder that is not a complete run,
            runs of different tasks or classes, an unknown format, a bad mapping, or an ``out``
            that may not be written (it is, holds or lies inside a run; it holds other files).

    Example:
        >>> write_trend(["runs/2024-q1", "runs/2024-q2", "runs/2024-q3"], "trend", formats=["html", "md"])  # doctest: +SKIP
        [PosixPath('trend/trend.html'), PosixPath('trend/trend.md')]
    """
    if isinstance(runs, (str, os.PathLike)):
        raise TypeError("runs must be a list of run folders, not one path")
    runs = list(runs)
    formats = check_formats(formats)
    inputs = (*runs, mapping)
    folder = check_trend_folder(out, inputs=inputs)
    loaded = _load_runs(runs)
    content = trend_content(loaded, load_mapping(mapping))
    return write_formats(folder, "trend", TREND_FOLDER, formats, lambda: render_trend_html(content),
                         lambda: render_trend_markdown(content))
