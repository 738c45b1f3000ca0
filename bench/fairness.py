"""Group fairness metrics at scale: scrutiny's confusion-count metrics against aif360 itself.

What is measured, in one run, on the same synthetic rows for both sides:

- Data: N rows (``--rows``, default 1,000,000) with two protected attributes, ``sex`` (0/1,
  privileged 1) and ``race`` (4 categories, privileged 0), true labels and predictions drawn
  with group-dependent base rates, true-positive and false-positive rates (seeded by ``--seed``).
- The full group-metric set the audit reports, for 3 comparisons as the audit forms them:
  sex, race, and sex × race (privileged = privileged on both). Each comparison is the model
  metrics (``gm.MODEL_METRICS``: selection rates, statistical parity, disparate impact, equal
  opportunity, average / equalised odds, predictive parity, FNR / FPR ratios, accuracy
  difference, Theil index, ...) and the data-set metrics of the true labels
  (``gm.DATA_METRICS``: base rates, statistical parity, disparate impact).
  * ours: ``gm.metrics_from_counts(gm.confusion_counts(y, y_pred, mask))`` plus
    ``gm.metrics_from_counts(gm.confusion_counts(y, None, mask), model=False)``;
  * aif360: ``scrutiny.audit.fairness.aif360_metrics(y, y_pred, mask)`` plus
    ``aif360_metrics(y, None, mask)``, i.e. aif360's ``BinaryLabelDataset``,
    ``ClassificationMetric`` and ``BinaryLabelDatasetMetric`` on the same arrays.
  Consistency (aif360's k-NN metric) needs features and is left out of both sides.
  The protected masks are built once, before anything is measured, and given to both sides.
- Both sides first compute the set once and their values are compared (max absolute
  difference over metrics finite on both sides, and the non-finite ones must match);
  timing only starts if the difference is at most 1e-9.
- Time: best of ``--repeats`` wall-clock runs of the full set, each side in its own
  subprocess (fresh interpreter, imports and data generation not timed).
- Memory: in a first, untimed run in the same subprocess (after the imports and the data),
  the peak of Python/NumPy allocations during the metric set, by ``tracemalloc``; the growth
  of the subprocess's peak resident set over that run (``resource.getrusage`` maxrss after −
  before) is printed beside it.
- Extra line: our bootstrap intervals, 1000 resamples of the counts of all 6 count sets
  (``gm.metrics_from_counts(gm.bootstrap_counts(counts, 1000, rng))``, the counts included);
  aif360 has no intervals, so this has no aif360 side.

Usage::

    python bench/fairness.py [--rows 1000000] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from _common import versions

LIBRARIES = ("numpy", "pandas", "aif360")
TARGET = 1 / 20          # our time / aif360's
TOLERANCE = 1e-9
N_BOOT = 1000
MARKER = "@@RESULT@@ "


# ------------------------------------------------------------------ data


def synthetic(rows: int, seed: int):
    """y, y_pred and the privileged masks {name: mask} of the three comparisons."""
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, 2, rows)                                   # privileged: 1
    race = rng.choice(4, size=rows, p=[0.6, 0.2, 0.12, 0.08])        # privileged: 0
    base = 0.30 + 0.10 * sex + np.array([0.10, 0.0, -0.05, -0.10])[race]
    y = (rng.random(rows) < base).astype(np.int64)
    tpr = 0.70 + 0.10 * sex + np.array([0.08, 0.0, -0.04, -0.06])[race]
    fpr = 0.10 + 0.04 * sex + np.array([0.03, 0.0, -0.02, 0.01])[race]
    y_pred = (rng.random(rows) < np.where(y == 1, tpr, fpr)).astype(np.int64)
    masks = {"sex": sex == 1, "race": race == 0}
    masks["sex × race"] = masks["sex"] & masks["race"]
    return y, y_pred, masks


# ------------------------------------------------------------------ the two sides


def ours(y, y_pred, masks):
    from scrutiny.audit import group_metrics as gm

    out = {}
    for name, mask in masks.items():
        out[f"{name} / model"] = gm.metrics_from_counts(gm.confusion_counts(y, y_pred, mask))
        out[f"{name} / data"] = gm.metrics_from_counts(gm.confusion_counts(y, None, mask), model=False)
    return out


def theirs(y, y_pred, masks):
    from scrutiny.audit.fairness import aif360_metrics

    out = {}
    for name, mask in masks.items():
        out[f"{name} / model"] = aif360_metrics(y, y_pred, mask)
        out[f"{name} / data"] = aif360_metrics(y, None, mask)
    return out


def bootstrap(y, y_pred, masks, seed):
    from scrutiny.audit import group_metrics as gm

    rng = np.random.default_rng(seed)
    out = {}
    for name, mask in masks.items():
        for kind, pred, model in (("model", y_pred, True), ("data", None, False)):
            counts = gm.confusion_counts(y, pred, mask)
            out[f"{name} / {kind}"] = gm.metrics_from_counts(gm.bootstrap_counts(counts, N_BOOT, rng), model=model)
    return out


SIDES = {"ours": ours, "aif360": theirs, "bootstrap": None}


def maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024   # KiB on Linux


def worker(args) -> None:
    """One side in this process: values (check phase) or memory and timings (time phase)."""
    y, y_pred, masks = synthetic(args.rows, args.seed)
    if args.side == "bootstrap":
        def fn():
            return bootstrap(y, y_pred, masks, args.seed)
    else:
        def fn():
            return SIDES[args.side](y, y_pred, masks)
    result = {}
    if args.phase == "check":
        values = fn()
        result["values"] = {group: {k: float(v) for k, v in metrics.items()} for group, metrics in values.items()}
    else:
        import scrutiny.audit.fairness  # noqa: F401 - imports outside every measurement (torch, pandas)
        if args.side == "aif360":
            import aif360.datasets  # noqa: F401
            import aif360.metrics  # noqa: F401
        before = maxrss_bytes()
        tracemalloc.start()
        fn()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result["tracemalloc_peak"] = peak
        result["rss_growth"] = maxrss_bytes() - before
        best = math.inf
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        result["seconds"] = best
    print(MARKER + json.dumps(result), flush=True)


def run_side(side: str, phase: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", side, "--phase", phase,
               "--rows", str(args.rows), "--repeats", str(args.repeats), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{side} ({phase}) failed:\n{done.stderr[-4000:]}")
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith(MARKER))
    return json.loads(line[len(MARKER):])


# ------------------------------------------------------------------ report


def compare(a: dict, b: dict) -> tuple[float, int, list[str]]:
    """Max |a − b| over metrics finite on both sides, how many, and any mismatch otherwise."""
    worst, n, problems = 0.0, 0, []
    for group in a:
        if set(a[group]) != set(b.get(group, {})):
            problems.append(f"{group}: metric names differ")
            continue
        for name, x in a[group].items():
            z = b[group][name]
            if math.isfinite(x) and math.isfinite(z):
                worst, n = max(worst, abs(x - z)), n + 1
            elif not (x == z or (math.isnan(x) and math.isnan(z))):
                problems.append(f"{group} {name}: {x} vs {z}")
    return worst, n, problems


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows (default: 1000000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side; the best counts (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data and the bootstrap (default: 0)")
    parser.add_argument("--worker", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["check", "time"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rows < 100 or args.repeats < 1:
        parser.error("--rows must be at least 100 and --repeats at least 1")
    if args.worker:
        args.side = args.worker
        worker(args)
        return

    total = time.perf_counter()
    print(f"Python {platform.python_version()}, {versions(LIBRARIES)}; {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} CPU cores")
    y, y_pred, masks = synthetic(args.rows, args.seed)
    print(f"{args.rows:,} synthetic rows, seed {args.seed}: sex (privileged 1, {masks['sex'].mean():.1%}), "
          f"race of 4 categories (privileged 0, {masks['race'].mean():.1%}), sex × race privileged on both "
          f"({masks['sex × race'].mean():.1%}); base rate {y.mean():.3f}, selection rate {y_pred.mean():.3f}")
    from scrutiny.audit import group_metrics as gm

    n_model, n_data = len(gm.MODEL_METRICS), len(gm.DATA_METRICS)
    print(f"metric set per comparison: {n_model} model metrics (ClassificationMetric) + {n_data} data-set metrics "
          f"(BinaryLabelDatasetMetric); {len(masks)} comparisons = {len(masks) * (n_model + n_data)} values")
    print("consistency (aif360's k-NN metric, needs features) is left out of both sides")
    del y, y_pred, masks

    print("\n== check: same values on both sides before timing")
    mine, reference = run_side("ours", "check", args)["values"], run_side("aif360", "check", args)["values"]
    worst, n, problems = compare(mine, reference)
    print(f"max |ours − aif360| over {n} finite metrics: {worst:.3e} (must be ≤ {TOLERANCE:g})")
    for problem in problems:
        print(f"  mismatch: {problem}")
    if problems or worst > TOLERANCE:
        sys.exit("values differ: not timing")

    print(f"\n== time (best of {args.repeats}, each side in its own subprocess) and memory (first, untimed run)")
    timed = {side: run_side(side, "time", args) for side in ("ours", "aif360", "bootstrap")}
    ratio = timed["ours"]["seconds"] / timed["aif360"]["seconds"]
    rows = [
        ("aif360: full metric set", timed["aif360"], "-", "reference"),
        ("ours: full metric set", timed["ours"], f"{ratio:.4f} (1/{1 / ratio:,.0f})",
         f"≤ {TARGET:.3f} (1/{1 / TARGET:.0f}): {'met' if ratio <= TARGET else 'MISSED'}"),
        (f"ours: bootstrap, {N_BOOT} resamples x 6", timed["bootstrap"], "- (aif360 has no intervals)", "-"),
    ]
    header = ("run", "best time", "ours / aif360", "peak tracemalloc", "peak RSS growth", "target")
    table = [header] + [(name, f"{r['seconds'] * 1e3:,.2f} ms", rel, mib(r["tracemalloc_peak"]), mib(r["rss_growth"]), target)
                        for name, r, rel, target in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("peak tracemalloc: Python/NumPy allocations during one run of the set (tracemalloc peak, data "
          "excluded); peak RSS growth: getrusage maxrss after − before that run in the side's subprocess "
          "(0 when the run fits under the peak the data generation left)")
    print(f"\ntotal {time.perf_counter() - total:.1f} s")


if __name__ == "__main__":
    main()
