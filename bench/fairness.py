"""The fairness family at scale, and scrutiny's confusion-count metrics against aif360 itself.

Two sections (``--sections``, default both), each run once per size in ``--rows``:

``family``: the whole fairness family of an audit (``assess_fairness`` with the audit's 1000
bootstrap resamples: data-set bias, model metrics with intervals, per-group figures, impact
ratios and k-NN consistency) on a synthetic user-like table (``user_table``: four integer or
rounded numeric columns, two categorical, protected sex and race; 70 % train / 30 % test, so
the test split holds 30 % of ``--rows``) and a fixed seeded MLP over its encoded columns
(6 categorical levels + 5 + sex + 4 races + 4 numeric = 20 columns). Timed twice:

- now: consistency exact over every test row up to ``CONSISTENCY_EXACT_ROWS``, a seeded
  sample above (``scrutiny.audit.fairness.assess``);
- before: the previous approach, brute-force k-NN over every test row (quadratic) and a
  row-resampling bootstrap of its mean (n_boot × rows random indices). Skipped above
  ``--before-max-rows`` test rows (default 30,000: 3 minutes and more at 300,000), where its
  time is extrapolated quadratically from the largest size run and marked as such.

``metrics``: scrutiny's group metrics against aif360's, as follows.

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
  * aif360: ``scrutiny.audit.fairness.assess.aif360_metrics(y, y_pred, mask)`` plus
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

    python bench/fairness.py --sections family --rows 10000,100000,1000000
    python bench/fairness.py --sections metrics [--rows 1000000] [--repeats 3] [--seed 0]
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
    from scrutiny.audit.fairness import group_metrics as gm

    out = {}
    for name, mask in masks.items():
        out[f"{name} / model"] = gm.metrics_from_counts(gm.confusion_counts(y, y_pred, mask))
        out[f"{name} / data"] = gm.metrics_from_counts(gm.confusion_counts(y, None, mask), model=False)
    return out


def theirs(y, y_pred, masks):
    from scrutiny.audit.fairness.assess import aif360_metrics

    out = {}
    for name, mask in masks.items():
        out[f"{name} / model"] = aif360_metrics(y, y_pred, mask)
        out[f"{name} / data"] = aif360_metrics(y, None, mask)
    return out


def bootstrap(y, y_pred, masks, seed):
    from scrutiny.audit.fairness import group_metrics as gm

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
        import scrutiny.audit.fairness.assess  # noqa: F401 - imports outside every measurement (torch, pandas)
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


# ------------------------------------------------------------------ the fairness family of an audit


def user_table(rows: int, seed: int):
    """A Dataset like a user's CSV: integer and rounded columns (ties), categories, two protected attributes."""
    import pandas as pd

    from scrutiny.models import DatasetSpec, Feature, ProtectedAttribute
    from scrutiny.models.datasets import tabular_dataset

    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], rows)
    race = rng.choice(["white", "black", "asian", "other"], rows, p=[0.6, 0.2, 0.12, 0.08])
    age = rng.integers(18, 71, rows)
    hours = rng.integers(10, 61, rows)
    income = np.round(rng.lognormal(10, 0.6, rows), -2)
    tenure = rng.integers(0, 30, rows)
    region = rng.choice(list("abcdef"), rows)
    education = rng.choice(["none", "school", "college", "degree", "higher"], rows)
    z = (np.log(income) - 10) / 0.6 + (age - 44) / 15 + 0.3 * (sex == "male") + 0.2 * (race == "white")
    label = np.where(rng.random(rows) < 1 / (1 + np.exp(-z)), "yes", "no")
    frame = pd.DataFrame({"age": age, "hours": hours, "income": income, "tenure": tenure, "region": region,
                          "education": education, "sex": sex, "race": race, "label": label})
    spec = DatasetSpec(
        name="user-like", task="tabular", label="label", classes=("no", "yes"), favourable_label="yes",
        features=tuple(Feature(c, "numeric") for c in ("age", "hours", "income", "tenure"))
        + (Feature("region", "categorical"), Feature("education", "categorical"), Feature("sex", "binary"),
           Feature("race", "categorical")),
        protected=(ProtectedAttribute("sex", ("male",)), ProtectedAttribute("race", ("white",))))
    cut = int(rows * 0.7)
    return tabular_dataset(spec, frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True),
                           f"synthetic-{rows}-{seed}")


def fixed_model(inputs: int, seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(inputs, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).eval()


def previous_consistency():
    """The approach before: brute-force k-NN over every row, and a row bootstrap of the mean."""
    from sklearn.neighbors import NearestNeighbors

    from scrutiny.audit.fairness.assess import Estimate

    def deviations(features, y_pred, n_neighbors=5, *, rows=None):
        _, neighbours = NearestNeighbors(n_neighbors=n_neighbors, algorithm="brute").fit(features).kneighbors(features)
        y_pred = np.asarray(y_pred, dtype=np.float64)
        return np.abs(y_pred - y_pred[neighbours].mean(axis=1))

    def estimate(deviations, n_boot, confidence, rng, chunk=50):
        terms = 1.0 - deviations
        value = float(terms.mean())
        means = np.concatenate([terms[rng.integers(0, len(terms), (min(chunk, n_boot - i), len(terms)))].mean(axis=1)
                                for i in range(0, n_boot, chunk)])
        low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
        return Estimate(value, float(min(low, value)), float(max(high, value)))

    return deviations, estimate


def family_seconds(rows: int, seed: int, approach: str) -> dict:
    """Seconds of assess_fairness, its consistency with interval, and the test rows, for one approach;
    the data and the model are made outside the timing."""
    from scrutiny.audit.fairness import assess as fairness
    from scrutiny.audit.fairness import group_metrics as gm

    dataset = user_table(rows, seed)
    model = fixed_model(len(dataset.preprocessor.encoded_feature_names), seed)
    if approach == "before":
        gm.consistency_deviations, fairness._consistency_estimate = previous_consistency()
        fairness.CONSISTENCY_EXACT_ROWS = float("inf")
    start = time.perf_counter()
    result = fairness.assess_fairness(model, dataset, n_boot=N_BOOT, seed=seed, minimums={"min_rows": 30,
                                                                                       "min_expected_positives": 5})
    seconds = time.perf_counter() - start
    c = result.consistency
    return {"seconds": seconds, "consistency": c.value, "low": c.low, "high": c.high, "test_rows": len(dataset.test)}


def family(args) -> None:
    print(f"\n== fairness family of an audit on a synthetic user-like table ({N_BOOT} bootstrap resamples, seed {args.seed})")
    header = ("rows", "test rows", "now", "consistency [95 % interval]", "before", "consistency", "before / now")
    table, last_before = [header], None
    for rows in args.rows:
        now = run_family(rows, "now", args)
        before_rows = int(rows * 0.3)
        if before_rows <= args.before_max_rows:
            before = run_family(rows, "before", args)
            last_before = (before_rows, before["seconds"])
            shown, ratio = f"{before['seconds']:.1f} s", f"{before['seconds'] / now['seconds']:.1f}"
            shown_value = f"{before['consistency']:.4f}"
        elif last_before:
            guess = last_before[1] * (now["test_rows"] / last_before[0]) ** 2
            shown, ratio, shown_value = f"~{guess:,.0f} s (extrapolated)", f"~{guess / now['seconds']:,.0f}", "-"
        else:
            shown, ratio, shown_value = "not run", "-", "-"
        table.append((f"{rows:,}", f"{now['test_rows']:,}", f"{now['seconds']:.1f} s",
                      f"{now['consistency']:.4f} [{now['low']:.4f}, {now['high']:.4f}]",
                       shown, shown_value, ratio))
        print("  " + "  ".join(table[-1]), flush=True)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print()
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("now: consistency over every test row up to CONSISTENCY_EXACT_ROWS (aif360's value), a seeded sample "
          "of CONSISTENCY_SAMPLE rows above; before: brute-force k-NN over every row and a row bootstrap")


def run_family(rows: int, approach: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", "family", "--phase", approach, "--rows", str(rows),
               "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"family ({approach}, {rows} rows) failed:\n{done.stderr[-4000:]}")
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
    parser.add_argument("--rows", default="1000000", help="synthetic rows, one size or a comma-separated list "
                                                           "(default: 1000000)")
    parser.add_argument("--sections", default="family,metrics", help="family, metrics or both (default: both)")
    parser.add_argument("--repeats", type=int, default=3, help="metrics: timed runs of each side; the best counts (default: 3)")
    parser.add_argument("--before-max-rows", type=int, default=30_000,
                        help="family: run the previous approach up to this many test rows (default: 30000)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data and the bootstrap (default: 0)")
    parser.add_argument("--worker", choices=[*SIDES, "family"], help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["check", "time", "now", "before"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        args.rows = [int(r) for r in args.rows.split(",")]
    except ValueError:
        parser.error(f"--rows {args.rows!r}: expected whole numbers separated by commas")
    sections = [s.strip() for s in args.sections.split(",")]
    if set(sections) - {"family", "metrics"} or min(args.rows) < 100 or args.repeats < 1:
        parser.error("--sections takes family and/or metrics; --rows must be at least 100 and --repeats at least 1")
    if args.worker == "family":
        print(MARKER + json.dumps(family_seconds(args.rows[0], args.seed, args.phase)), flush=True)
        return
    if args.worker:
        args.side, args.rows = args.worker, args.rows[0]
        worker(args)
        return

    total = time.perf_counter()
    print(f"Python {platform.python_version()}, {versions(LIBRARIES)}; {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} CPU cores")
    if "family" in sections:
        family(args)
    if "metrics" in sections:
        for rows in args.rows:
            metrics_section(argparse.Namespace(**{**vars(args), "rows": rows}))
    print(f"\ntotal {time.perf_counter() - total:.1f} s")


def metrics_section(args) -> None:
    print(f"\n== group metrics, ours against aif360, {args.rows:,} rows")
    y, y_pred, masks = synthetic(args.rows, args.seed)
    print(f"{args.rows:,} synthetic rows, seed {args.seed}: sex (privileged 1, {masks['sex'].mean():.1%}), "
          f"race of 4 categories (privileged 0, {masks['race'].mean():.1%}), sex × race privileged on both "
          f"({masks['sex × race'].mean():.1%}); base rate {y.mean():.3f}, selection rate {y_pred.mean():.3f}")
    from scrutiny.audit.fairness import group_metrics as gm

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


if __name__ == "__main__":
    main()
