"""Scale past one machine (issue 16): Ray against the local executor, and a streaming audit of logged decisions.

Two parts (``--part``, default both):

``executors``: the audit time of one family of the default Adult audit, the attributions family
and the robustness family separately, with each executor setting:

- local: :class:`~scrutiny.audit.run.executor.LocalExecutor` (the default; every chunk in this process);
- Ray, 1 worker: ``RayExecutor(num_cpus=1)``, a local Ray instance of 1 CPU;
- Ray, 2 workers: ``RayExecutor(num_cpus=2)``;
- Ray cluster: a simulated two-node cluster on this machine (``ray.cluster_utils.Cluster``, a head
  node and a second node of 1 CPU each), joined by ``RayExecutor(cluster.address)``.

Ray is shut down between settings. The model is the default Adult MLP (``scrutiny train --data
adult --out TMP/adult-mlp --device DEVICE`` as a subprocess, seed 0), unless ``--model`` names a
checkpoint; it is loaded once, with the Adult data set (default sizes: the whole test split), and
each run is ``scrutiny.run_audit(model, data, config={"families": [FAMILY]}, executor=..., device=...)``
in this process: the family's default settings (200 rows explained, 1000 bootstrap resamples; 500
rows attacked, 40 PGD steps, ...), in chunks of the config's ``chunk_rows`` (64). What is timed is
the ``run_audit`` call, from the call to its result (the families, the findings and their
validation; nothing is written). Per setting, the time to start it (``ray.init`` or the cluster)
is shown apart; then per family a first run, shown as "cold" (Ray starts its worker processes and
they import torch on their first tasks), and ``--repeats`` more, the least of which is "warm". The
ratio is Ray's warm time over the local warm time; the target: Ray on 1 worker at most 1.2× local
on the attributions family. The findings (``findings.json`` as ``run_audit`` would write it, the
stable JSON of ``result.document``) must be the same bytes in every run of a family, whatever the
setting: the benchmark ends with exit code 1 where they are not.

``streaming``: an audit of logged decisions too large for memory. Synthetic logged decisions are
written, for each size of ``--rows`` (default 1e7 and 1e8 rows), as a folder of Parquet files
(at least 4 files, at most 1e7 rows each, row groups of at most 1e6 rows; written chunk by chunk,
one row group at a time, so the generator holds one chunk in memory) with columns ``label``
(0/1, 1 favourable), ``score`` (a calibrated probability of the favourable label, rounded to 3
decimals: at most 1001 distinct values), ``sex`` (female, male; privileged male) and ``race``
(white, the reference, black, hispanic, asian, other), with group-dependent score shifts, and a
predictions spec beside it (``score`` with ``threshold = 0.5``, ``score_is_probability = true``,
``[protected] race = { reference = "white" }, sex = ["male"]``). Each measurement runs in a
subprocess of its own, waited for with ``os.wait4``: its wall time (start of the subprocess to its
exit), CPU time (user + system) and peak resident set (``ru_maxrss``) are that tool's alone.

- scrutiny: ``scrutiny audit --predictions FOLDER --spec SPEC.toml --out RUN --config CFG``, the
  config ``families = ["performance", "fairness"]``, ``fairness.n_boot = 1000``,
  ``fairness.intersections = true``: the whole command, with Python's start-up, the imports, the
  streaming read of the files (the loader reads record batches and keeps counts) and the run folder;
  ``--stream-repeats`` runs (default 2), the one with the least wall time shown, with the seconds
  of its ``run_audit`` (from the run's manifest; the rest is start-up, imports and reading).
  Targets: peak RSS under 1 GiB at 1e8 rows, and at least 2e6 rows/s per core (rows / wall time /
  CPU cores of this machine; rows per CPU-second is shown too). The cost of the 1000 bootstrap
  replicates: the same audit with ``n_boot = 0`` at two sizes (the two smallest of ``--rows``, or
  a tenth of the one size and that size), the difference in process wall time and in the fairness
  family's seconds (from the run's manifest) at each. The streaming loader is
  ``scrutiny.models.load_predictions(path, spec, batch_rows=...)``: where that function has no
  ``batch_rows`` parameter, the loader is missing, this part says so and runs the references only.
- references, each on the largest size it can hold, one subprocess per size, sizes 1e6, 1e7, ...
  (powers of ten up to the largest of ``--rows``; from 1e4 for Fairlearn's bootstrap), under an
  address-space cap (``RLIMIT_AS``, ``--memory-cap`` GiB, default 16) and a wall-time limit
  (``--time-limit`` s, default 600), stopping at the first size that fails or runs out of time, or
  that is predicted to (the seconds of the size before, grown in proportion to rows, over the
  limit). Each reads the folder into pandas (``pyarrow.parquet.read_table`` with the group columns
  as dictionaries: categorical columns, its cheapest form), and computes:
  * fairlearn: ``MetricFrame`` of selection rate, true and false positive rate per sex × race
    group (the 10 groups);
  * fairlearn-bootstrap: the same ``MetricFrame`` with ``n_boot=1000`` and 95 % ``ci_quantiles``
    (Fairlearn's row-resampling bootstrap);
  * aif360: a ``BinaryLabelDataset`` built directly from the frame (aif360's ``StandardDataset``
    loaders fail under pandas 3), its predicted copy, and ``ClassificationMetric``'s disparate
    impact, statistical parity difference, equal opportunity difference and average odds
    difference for sex (female against male) and for each race against white.
  The process's wall time, the reading and the computing seconds (measured inside), and its peak
  RSS are shown at the largest size that worked. Where scrutiny ran at the same size, the
  reference's values are compared with the run's (``findings.json`` details): the largest absolute
  difference.

Adult's raw files must be in place for the executors part: ``scrutiny data fetch adult`` (or
``scrutiny data fetch adult --from FOLDER --data-dir DIR`` and ``--data-dir DIR`` here). The data
written for the streaming part goes to a temporary folder (``--work``; removed at the end unless
``--keep``; a ``--work`` folder kept from an earlier run is reused): about 2 bytes a row, 180 MiB
at 1e8 rows. The machine is shared: run it under ``nice``.

Usage::

    python bench/scale.py [--part executors|streaming|all] [--device cpu|cuda] [--rows 1e7,1e8]
                          [--repeats N] [--model CHECKPOINT] [--data-dir DIR] [--quick]
                          [--stream-repeats N] [--memory-cap GIB] [--time-limit S]
                          [--references fairlearn,fairlearn-bootstrap,aif360] [--seed N] [--work DIR] [--keep]
    python bench/scale.py --part streaming --rows 1e6 --time-limit 120   # a quick check
    python bench/scale.py --part executors --quick --repeats 1           # the same, cut sizes
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _common import cpu_name, versions

LIBRARIES = (("scrutiny", "scrutiny"), "torch", "ray", "pyarrow", "pandas", "numpy", "fairlearn", "aif360")
MARKER = "@@RESULT@@ "
CORES = len(os.sched_getaffinity(0))

# executors
FAMILIES = ("attributions", "robustness")
RAY_TARGET = 1.2                 # Ray on 1 worker / local, warm, attributions family
SETTINGS = ("local", "ray, 1 worker", "ray, 2 workers", "ray cluster, 2 nodes x 1 CPU")
QUICK = {"chunk_rows": 8, "attributions": {"samples": 16, "quality_samples": 4, "n_boot": 20},  # --quick: a check
         "robustness": {"samples": 24, "steps": 3, "queries": 50, "detector": False}}           # that the bench runs

# streaming
SEXES = ("female", "male")                                   # privileged: male
RACES = ("white", "black", "hispanic", "asian", "other")      # reference: white
RACE_SHARES = (0.6, 0.15, 0.12, 0.08, 0.05)
SEX_SHIFT = (-0.2, 0.2)                                      # logit shift of the score, per sex
RACE_SHIFT = (0.3, -0.4, -0.2, 0.1, -0.3)                    # and per race
THRESHOLD = 0.5
CHUNK_ROWS = 1_000_000           # generator chunk = one Parquet row group
FILE_ROWS = 10_000_000           # rows per file, at most
MIN_FILES = 4
N_BOOT = 1000
RSS_TARGET = 2**30               # bytes, at RSS_TARGET_ROWS
RSS_TARGET_ROWS = 100_000_000
RATE_TARGET = 2e6                # rows / s / core
REFERENCES = ("fairlearn", "fairlearn-bootstrap", "aif360")
LADDER_FROM = {"fairlearn": 1_000_000, "fairlearn-bootstrap": 10_000, "aif360": 1_000_000}
RATES = ("selection_rate", "true_positive_rate", "false_positive_rate")
COMPARISONS = ("disparate_impact", "statistical_parity_difference", "equal_opportunity_difference",
               "average_odds_difference")


# ------------------------------------------------------------------ helpers


def cli(*arguments: str) -> list[str]:
    """The ``scrutiny`` command line, run by this interpreter."""
    return [sys.executable, "-m", "scrutiny.cli", *arguments]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: int = 1) -> None:
    """Print rows under a header; columns from index ``right`` on are right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row) -> str:
        return "  ".join(c.ljust(w) if i < right else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    print(line(header))
    print("-" * len(line(header)))
    for row in rows:
        print(line(row))


def gib(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def parse_rows(text: str) -> list[int]:
    """'1e7,1e8' -> [10000000, 100000000]."""
    rows = []
    for part in text.split(","):
        value = float(part)
        if not value.is_integer():
            raise ValueError(part)
        rows.append(int(value))
    return sorted(set(rows))


def measure(command: list[str], logs: Path, *, limit: float | None = None) -> dict:
    """Run ``command`` in a subprocess of its own (a new session) under a wall-time limit of
    ``limit`` s (then its whole session is killed); its exit code, wall and CPU seconds, peak RSS
    (bytes) from ``os.wait4``, and stdout and stderr."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout.txt", logs / "stderr.txt"

    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(limit, kill) if limit else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            if timer:
                timer.cancel()
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return {"code": process.returncode, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss": usage.ru_maxrss * 1024, "timed_out": timed_out.is_set(),
            "stdout": out_path.read_text(errors="replace"), "stderr": err_path.read_text(errors="replace")}


def last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def marker(stdout: str) -> dict | None:
    line = next((line for line in reversed(stdout.splitlines()) if line.startswith(MARKER)), None)
    return json.loads(line[len(MARKER):]) if line else None


# ------------------------------------------------------------------ part (a): executors


def train(args, work: Path) -> str:
    """The checkpoint to audit: ``--model``, or the default Adult MLP trained now."""
    if args.model:
        print(f"model: {args.model} (given)")
        return args.model
    out = work / "adult-mlp"
    command = cli("train", "--data", "adult", "--out", str(out), "--device", args.device, *args.data_dir_option)
    print(f"training the default MLP: scrutiny train --data adult --out {out} --device {args.device}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"training failed with exit code {done.returncode}: {' '.join(command)}\n{done.stderr[-4000:]}")
    print(f"trained in {time.perf_counter() - start:.1f} s (not part of the figures)")
    return str(out)


class Setting:
    """An executor setting: opened (timed), used for every family, closed (Ray shut down)."""

    def __init__(self, name: str):
        self.name = name
        self.cluster: Any = None

    def open(self):
        from scrutiny.audit.run.executor import LocalExecutor, RayExecutor

        if self.name == "local":
            return LocalExecutor()
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.name == "ray, 1 worker":
            return RayExecutor(num_cpus=1)
        if self.name == "ray, 2 workers":
            return RayExecutor(num_cpus=2)
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        self.cluster.add_node(num_cpus=1)
        executor = RayExecutor(self.cluster.address)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) != 2:
            raise RuntimeError(f"the simulated cluster has {len(nodes)} live node(s), expected 2")
        return executor

    def close(self) -> None:
        if self.name == "local":
            return
        import ray

        ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None


def executors_part(args, work: Path) -> bool:
    """Times every (setting, family); True when the findings of each family are the same bytes everywhere."""
    print(f"\n== part (a): executors, the default Adult audit's attributions and robustness families, "
          f"device {args.device}")
    try:
        import ray  # noqa: F401
    except ImportError:
        print('Ray is not installed (pip install "scrutiny[ray]"): only the local executor is timed')
        settings: tuple[str, ...] = SETTINGS[:1]
    else:
        settings = SETTINGS
    import torch

    import scrutiny
    from scrutiny.audit.run.run_folder import to_json

    checkpoint = train(args, work)
    dataset = scrutiny.load_dataset("adult", data_dir=args.data_dir)
    model = scrutiny.load_model(checkpoint, dataset=dataset)
    if args.quick:
        print(f"--quick: sizes cut to {json.dumps(QUICK)}, a check that the benchmark runs; NOT the issue's figures")
    print(f"Adult: {len(dataset.train):,} training rows, {len(dataset.test):,} test rows; torch threads "
          f"{torch.get_num_threads()}; {args.repeats} warm repeat(s) after a first (cold) run per family and setting",
          flush=True)

    results: dict[tuple[str, str], dict] = {}
    startup: dict[str, float] = {}
    failed: dict[str, str] = {}
    for name in settings:
        setting = Setting(name)
        start = time.perf_counter()
        try:
            executor = setting.open()
            startup[name] = time.perf_counter() - start
            print(f"{name}: started in {startup[name]:.1f} s", flush=True)
            for family in args.families:
                runs, documents = [], set()
                for repeat in range(args.repeats + 1):
                    start = time.perf_counter()
                    config = {"families": [family], **(QUICK if args.quick else {})}
                    result = scrutiny.run_audit(model, dataset, config=config, executor=executor,
                                                device=args.device, progress=False)
                    runs.append(time.perf_counter() - start)
                    documents.add(to_json(result.document))
                    print(f"  {family} {'cold' if repeat == 0 else f'warm {repeat}/{args.repeats}'}: "
                          f"{runs[-1]:.2f} s (families {', '.join(f'{k} {v:.2f}' for k, v in result.seconds.items())})",
                          flush=True)
                results[name, family] = {"cold": runs[0], "warm": min(runs[1:]), "documents": documents}
        except Exception as exc:  # a setting that cannot start or run is reported, the others still run
            if name == "local":
                raise
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            print(f"{name}: FAILED ({failed[name]})", flush=True)
        finally:
            setting.close()

    print()
    rows: list[tuple[str, ...]] = []
    same = not failed
    for family in args.families:
        local = results["local", family]
        reference = next(iter(local["documents"]))
        for name in settings:
            if (name, family) not in results:
                rows.append((family, name, f"{startup[name]:.1f}" if name in startup else "", "failed", "", "", "",
                             failed.get(name, "")[:80]))
                continue
            r = results[name, family]
            identical = r["documents"] == {reference}
            same &= identical
            ratio = r["warm"] / local["warm"]
            target = ""
            if name == "ray, 1 worker" and family == "attributions":
                target = f"<= {RAY_TARGET}x: {'met' if ratio <= RAY_TARGET else 'MISSED'}"
            rows.append((family, name, f"{startup[name]:.1f}", f"{r['cold']:.2f}", f"{r['warm']:.2f}",
                         f"{ratio:.2f}x", "yes" if identical else f"NO ({len(r['documents'])} versions)", target))
    table(("family", "executor", "start-up s", "cold s", "warm s", "warm / local", "same findings", "target"),
          rows, right=2)
    for family in args.families:
        digest = hashlib.sha256(next(iter(results["local", family]["documents"])).encode()).hexdigest()[:16]
        print(f"{family}: findings.json SHA-256 {digest}… (local)")
    print("notes: cold = the first run_audit of the family after the setting started (Ray starts worker processes "
          "that import torch); warm = the least of the runs after it. Every setting runs on this machine "
          f"({CORES} CPU cores), the cluster's two nodes included; chunks run at the caller's torch thread count.")
    if failed:
        print(f"SETTINGS FAILED: {', '.join(failed)}")
    elif not same:
        print("FINDINGS DIFFER between settings: the executor changed the audit's result")
    return same


# ------------------------------------------------------------------ part (b): data


def generate(folder: Path, rows: int, seed: int) -> None:
    """``rows`` synthetic logged decisions as Parquet files in ``folder``, one chunk at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = max(MIN_FILES, math.ceil(rows / FILE_ROWS))
    per_file = math.ceil(rows / files)
    group = min(CHUNK_ROWS, per_file)
    sexes, races = pa.array(SEXES), pa.array(RACES)
    schema = pa.schema([("label", pa.int8()), ("score", pa.float64()), ("sex", pa.string()), ("race", pa.string())])
    folder.mkdir(parents=True)
    chunk, done = 0, 0
    for index in range(files):
        in_file = min(per_file, rows - done)
        if in_file <= 0:
            break
        with pq.ParquetWriter(folder / f"part-{index:05d}.parquet", schema) as writer:
            written = 0
            while written < in_file:
                n = min(group, in_file - written)
                rng = np.random.default_rng([seed, rows, chunk])
                sex = rng.integers(0, 2, n, dtype=np.int8)
                race = rng.choice(len(RACES), size=n, p=RACE_SHARES).astype(np.int8)
                logit = np.asarray(SEX_SHIFT)[sex] + np.asarray(RACE_SHIFT)[race] + 1.3 * rng.standard_normal(n)
                score = np.round(1.0 / (1.0 + np.exp(-logit)), 3)
                label = (rng.random(n) < score).astype(np.int8)   # calibrated: P(label = 1 | score) = score
                writer.write_table(pa.table({
                    "label": label, "score": score,
                    "sex": pa.DictionaryArray.from_arrays(pa.array(sex), sexes).cast(pa.string()),
                    "race": pa.DictionaryArray.from_arrays(pa.array(race), races).cast(pa.string()),
                }, schema=schema), row_group_size=group)
                written += n
                chunk += 1
        done += in_file


SPEC = f"""\
label = "label"
favourable = 1
score = "score"
threshold = {THRESHOLD}
score_is_probability = true
description = "synthetic logged decisions (bench/scale.py)"

[protected]
race = {{ reference = "{RACES[0]}" }}
sex = ["{SEXES[1]}"]
"""


class Data:
    """The generated folders, one per size, made on first use, with their spec beside them."""

    def __init__(self, work: Path, seed: int):
        self.work, self.seed = work, seed
        self.spec = work / "predictions.toml"
        self.spec.write_text(SPEC)
        self.folders: dict[int, Path] = {}

    def folder(self, rows: int) -> Path:
        """The folder of ``rows`` rows: written now, or kept from an earlier run in the same
        ``--work`` folder (a ``.done`` file beside it says it was written whole)."""
        if rows not in self.folders:
            folder = self.work / f"decisions-{rows}-seed{self.seed}"
            done = folder.with_suffix(".done")
            if done.is_file():
                print(f"  {rows:,} rows: kept from an earlier run in {folder}", flush=True)
            else:
                shutil.rmtree(folder, ignore_errors=True)
                start = time.perf_counter()
                generate(folder, rows, self.seed)
                done.touch()
                files = sorted(folder.glob("*.parquet"))
                size = sum(f.stat().st_size for f in files)
                print(f"  wrote {rows:,} rows in {len(files)} Parquet files ({gib(size)}) to {folder} in "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
            self.folders[rows] = folder
        return self.folders[rows]


# ------------------------------------------------------------------ part (b): the references (worker side)


def reference_worker(tool: str, folder: str, seed: int, cap: float) -> None:
    """One reference on one folder, in this process, its address space capped at ``cap`` GiB
    first; prints its seconds and values."""
    resource.setrlimit(resource.RLIMIT_AS, (int(cap * 2**30), int(cap * 2**30)))
    started = time.perf_counter()
    import pandas as pd
    import pyarrow.parquet as pq

    if tool.startswith("fairlearn"):
        from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
    else:
        from aif360.datasets import BinaryLabelDataset
        from aif360.metrics import ClassificationMetric
    imports = time.perf_counter() - started
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    start = time.perf_counter()
    frame = pq.read_table(folder, columns=["label", "score", "sex", "race"],
                          read_dictionary=["sex", "race"]).to_pandas()
    y = frame["label"].to_numpy()
    y_pred = (frame["score"].to_numpy() >= THRESHOLD).astype(np.int8)
    reading = time.perf_counter() - start

    start = time.perf_counter()
    values: dict[str, dict[str, float]] = {}
    if tool.startswith("fairlearn"):
        boot = ({"n_boot": N_BOOT, "ci_quantiles": [0.025, 0.975], "random_state": seed}
                if tool.endswith("bootstrap") else {})
        metrics = dict(zip(RATES, (selection_rate, true_positive_rate, false_positive_rate)))
        result = MetricFrame(metrics=metrics, y_true=y, y_pred=y_pred, sensitive_features=frame[["sex", "race"]],
                             **boot)
        for (sex, race), row in result.by_group.iterrows():
            values[f"{sex} {race}"] = {k: float(row[k]) for k in RATES}
        if boot:
            low, high = result.by_group_ci
            for (sex, race), row in low.iterrows():
                values[f"{sex} {race}"].update({f"{k} low": float(row[k]) for k in RATES})
            for (sex, race), row in high.iterrows():
                values[f"{sex} {race}"].update({f"{k} high": float(row[k]) for k in RATES})
    else:
        codes = {name: {level: i for i, level in enumerate(frame[name].cat.categories)} for name in ("sex", "race")}
        table_ = pd.DataFrame({"label": y.astype(np.float64),
                               "sex": frame["sex"].cat.codes.to_numpy(np.float64),
                               "race": frame["race"].cat.codes.to_numpy(np.float64)})
        del frame
        truth = BinaryLabelDataset(df=table_, label_names=["label"], protected_attribute_names=["sex", "race"],
                                   favorable_label=1, unfavorable_label=0)
        del table_
        predicted = truth.copy(deepcopy=True)
        predicted.labels = y_pred.astype(np.float64).reshape(-1, 1)
        pairs = [("sex", SEXES[0], SEXES[1])] + [("race", race, RACES[0]) for race in RACES[1:]]
        for attribute, compared, privileged in pairs:
            metric = ClassificationMetric(truth, predicted,
                                          unprivileged_groups=[{attribute: codes[attribute][compared]}],
                                          privileged_groups=[{attribute: codes[attribute][privileged]}])
            values[f"{attribute}: {compared} vs {privileged}"] = {
                "disparate_impact": float(metric.disparate_impact()),
                "statistical_parity_difference": float(metric.statistical_parity_difference()),
                "equal_opportunity_difference": float(metric.equal_opportunity_difference()),
                "average_odds_difference": float(metric.average_odds_difference()),
            }
    computing = time.perf_counter() - start
    print(MARKER + json.dumps({"imports": imports, "reading": reading, "computing": computing, "rows": len(y),
                               "rss_imports": rss_imports, "values": values}), flush=True)


# ------------------------------------------------------------------ part (b): scrutiny's values, for the comparison


def scrutiny_values(findings: dict) -> dict[str, dict[str, float]]:
    """The run's per-group rates (sex × race groups) and comparisons (sex, each race against white),
    keyed as the references key theirs."""
    values: dict[str, dict[str, float]] = {}

    def level(levels: list[dict]) -> dict[str, str]:
        named = {}
        for item in levels:
            if item["attribute"] == "sex":  # a privileged-values attribute: "sex in {male}" / "sex not in {male}"
                named["sex"] = SEXES[1] if item["value"].startswith("sex in ") else SEXES[0]
            else:
                named[item["attribute"]] = item["value"]
        return named

    for entry in findings["details"]["fairness"]["model"]:
        privileged = level(entry["privileged_levels"])
        compared = level(entry["compared_levels"]) if "compared_levels" in entry else None
        if set(privileged) == {"sex", "race"} and compared is not None:
            for side, group in (("privileged", privileged), ("unprivileged", compared)):
                values[f"{group['sex']} {group['race']}"] = {k: entry["per_group"][side][k] for k in RATES}
        elif set(privileged) == {"sex"}:
            values[f"sex: {SEXES[0]} vs {SEXES[1]}"] = {k: entry["metrics"][k]["value"] for k in COMPARISONS}
        elif set(privileged) == {"race"} and compared is not None:
            values[f"race: {compared['race']} vs {privileged['race']}"] = {
                k: entry["metrics"][k]["value"] for k in COMPARISONS}
    return values


def largest_difference(theirs: dict, ours: dict) -> tuple[float, int, list[str]]:
    """Max |theirs − ours| over the values both have, how many, and the keys only one side has."""
    worst, n, missing = 0.0, 0, []
    for key, metrics in theirs.items():
        for name, value in metrics.items():
            if name.endswith((" low", " high")):
                continue
            mine = ours.get(key, {}).get(name)
            if mine is None or value is None:
                missing.append(f"{key} {name}")
            elif math.isfinite(value) and math.isfinite(mine):
                worst, n = max(worst, abs(value - mine)), n + 1
    return worst, n, missing


# ------------------------------------------------------------------ part (b): the measurements


def streaming_loader() -> str | None:
    """None where the streaming loader is in place, else why not."""
    try:
        from scrutiny.models import load_predictions
    except ImportError as exc:
        return f"scrutiny.models.load_predictions cannot be imported ({exc})"
    if "batch_rows" not in inspect.signature(load_predictions).parameters:
        return "scrutiny.models.load_predictions has no batch_rows parameter"
    return None


def run_scrutiny(args, data: Data, rows: int, n_boot: int) -> dict:
    """``scrutiny audit --predictions`` on ``rows`` rows, ``--stream-repeats`` times: the run with
    the least wall time (or the first failure)."""
    config = args.work / f"audit-boot{n_boot}.toml"
    config.write_text(f'families = ["performance", "fairness"]\n\n[fairness]\nn_boot = {n_boot}\n'
                      'intersections = true\n')
    folder = data.folder(rows)
    out = args.work / f"run-{rows}-boot{n_boot}"
    command = cli("audit", "--predictions", str(folder), "--spec", str(data.spec), "--out", str(out),
                  "--config", str(config))
    print(f"  scrutiny audit --predictions {folder.name}/ --spec {data.spec.name} --out {out.name} --config "
          f"{config.name} ({rows:,} rows, n_boot {n_boot})", flush=True)
    best: dict | None = None
    for _ in range(args.stream_repeats):
        shutil.rmtree(out, ignore_errors=True)  # the repeat before, or a run kept (--keep) in the same --work
        run = measure(command, args.work / "logs" / out.name, limit=args.time_limit)
        run.update(rows=rows, n_boot=n_boot)
        if run["code"] not in (0, 1) or not (out / "manifest.json").is_file():
            why = f"timed out after {args.time_limit:.0f} s" if run["timed_out"] else f"exit code {run['code']}"
            run["failed"] = f"{why}: {last_lines(run['stderr'])}"
            print(f"    FAILED ({run['failed']})", flush=True)
            best = run
            break
        manifest = json.loads((out / "manifest.json").read_text())
        run["seconds"] = manifest["seconds"]
        run["values"] = scrutiny_values(json.loads((out / "findings.json").read_text()))
        print(f"    exit code {run['code']}; wall {run['wall']:.1f} s, CPU {run['cpu']:.1f} s, peak RSS "
              f"{gib(run['rss'])}; run_audit {manifest['seconds']['total']:.1f} s", flush=True)
        if best is None or run["wall"] < best["wall"]:
            best = run
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    assert best is not None
    return best


def run_reference(args, data: Data, tool: str, rows: int) -> dict:
    folder = data.folder(rows)
    command = [sys.executable, __file__, "--worker", tool, "--folder", str(folder), "--seed", str(args.seed),
               "--memory-cap", str(args.memory_cap)]
    print(f"  {tool} on {rows:,} rows (cap {args.memory_cap:g} GiB, limit {args.time_limit:.0f} s)", flush=True)
    run = measure(command, args.work / "logs" / f"{tool}-{rows}", limit=args.time_limit)
    run["rows"] = rows
    result = marker(run["stdout"])
    if run["code"] != 0 or result is None:
        memory = any(sign in run["stderr"] for sign in ("MemoryError", "std::bad_alloc", "Unable to allocate"))
        why = (f"timed out after {args.time_limit:.0f} s" if run["timed_out"]
               else f"out of memory under the {args.memory_cap:g} GiB cap" if memory
               else f"exit code {run['code']}: {last_lines(run['stderr'])}")
        run["failed"] = why
        print(f"    failed: {why} (wall {run['wall']:.1f} s, peak RSS {gib(run['rss'])})", flush=True)
    else:
        run.update(result)
        print(f"    wall {run['wall']:.1f} s (imports {run['imports']:.1f}, reading {run['reading']:.1f}, computing "
              f"{run['computing']:.1f}), peak RSS {gib(run['rss'])}", flush=True)
    return run


def ladder(args, data: Data, tool: str) -> list[dict]:
    """The tool on 10^k rows, k rising, until a size fails, runs out of time or is predicted to."""
    runs: list[dict] = []
    rows = LADDER_FROM[tool]
    top = max(args.rows[-1], rows)
    while rows <= top:
        if runs:
            last = runs[-1]
            predicted = last["wall"] * rows / last["rows"]
            if predicted > args.time_limit:
                runs.append({"rows": rows, "skipped": f"predicted ~{predicted:,.0f} s > the {args.time_limit:.0f} s "
                                                      f"limit (from {last['rows']:,} rows in proportion)"})
                print(f"  {tool} on {rows:,} rows: not run, {runs[-1]['skipped']}", flush=True)
                break
        runs.append(run_reference(args, data, tool, rows))
        if "failed" in runs[-1]:
            break
        rows *= 10
    return runs


def streaming_part(args) -> None:
    print(f"\n== part (b): streaming audit of logged decisions, {', '.join(f'{r:,}' for r in args.rows)} rows; "
          f"{CORES} CPU cores")
    data = Data(args.work, args.seed)
    missing = streaming_loader()
    runs: dict[tuple[int, int], dict] = {}
    lines: list[tuple[str, ...]]
    if missing:
        print(f"THE STREAMING LOADER IS MISSING: {missing}; scrutiny's streaming audit is not measured, "
              "the references are")
    else:
        boot_sizes = args.rows[:2] if len(args.rows) > 1 else [max(args.rows[0] // 10, 1000), args.rows[0]]
        for rows in sorted(set(args.rows) | set(boot_sizes)):
            for n_boot in (N_BOOT, 0) if rows in boot_sizes else (N_BOOT,):
                runs[rows, n_boot] = run_scrutiny(args, data, rows, n_boot)
    references = {tool: ladder(args, data, tool) for tool in args.references}

    if not missing:
        print("\nscrutiny audit --predictions (families performance and fairness, intersections, whole process)")
        lines = []
        for (rows, n_boot), run in sorted(runs.items()):
            if "failed" in run:
                lines.append((f"{rows:,}", str(n_boot), "failed", "", "", "", "", "", "", run["failed"][:80]))
                continue
            rate = rows / run["wall"]
            notes = [f"per core {'>=' if rate / CORES >= RATE_TARGET else '<'} {RATE_TARGET:.0e}: "
                     f"{'met' if rate / CORES >= RATE_TARGET else 'MISSED'}"]
            if rows == RSS_TARGET_ROWS:
                notes.append(f"RSS < 1 GiB: {'met' if run['rss'] < RSS_TARGET else 'MISSED'}")
            lines.append((f"{rows:,}", str(n_boot), f"{run['wall']:.1f}", f"{run['seconds']['total']:.1f}",
                          f"{run['cpu']:.1f}", f"{rate:,.0f}",
                          f"{rate / CORES:,.0f}", f"{rows / run['cpu']:,.0f}", gib(run["rss"]), "; ".join(notes)))
        table(("rows", "n_boot", "wall s", "run_audit s", "CPU s", "rows/s", "rows/s/core", "rows/CPU-s", "peak RSS",
               "targets"), lines, right=1)
        print(f"targets: peak RSS under 1 GiB at {RSS_TARGET_ROWS:,} rows; at least {RATE_TARGET:,.0f} rows/s per core "
              f"(rows / process wall time / {CORES} cores)")
        pairs = [(rows, runs[rows, N_BOOT], runs[rows, 0]) for rows in sorted({r for r, b in runs if b == 0})
                 if "failed" not in runs[rows, N_BOOT] and "failed" not in runs[rows, 0]]
        if pairs:
            print(f"\ncost of the {N_BOOT} interval replicates (n_boot {N_BOOT} minus n_boot 0):")
            for rows, boot, plain in pairs:
                family = boot["seconds"].get("fairness", math.nan) - plain["seconds"].get("fairness", math.nan)
                print(f"  {rows:>13,} rows: process wall {boot['wall'] - plain['wall']:+.2f} s, "
                      f"fairness family {family:+.2f} s")
            if len(pairs) == 2:
                (small, b1, p1), (large, b2, p2) = pairs
                d1 = b1["seconds"]["fairness"] - p1["seconds"]["fairness"]
                d2 = b2["seconds"]["fairness"] - p2["seconds"]["fairness"]
                grows = d2 > 2 * max(d1, 0.0) + 0.5
                print(f"  {large / small:.0f}x the rows: the replicates' fairness-family seconds go from {d1:.2f} to "
                      f"{d2:.2f} s: {'they GROW with the rows' if grows else 'they do not grow with the rows'} "
                      "(grow: more than twice the smaller size's plus 0.5 s)")

    print(f"\nreferences, each in its own process under a {args.memory_cap:g} GiB address-space cap and a "
          f"{args.time_limit:.0f} s limit")
    lines = []
    for tool, attempts in references.items():
        for run in attempts:
            if "skipped" in run:
                lines.append((tool, f"{run['rows']:,}", "not run", "", "", "", "", "", run["skipped"]))
            elif "failed" in run:
                lines.append((tool, f"{run['rows']:,}", "failed", "", "", "", "", gib(run["rss"]), run["failed"][:90]))
            else:
                lines.append((tool, f"{run['rows']:,}", f"{run['wall']:.1f}", f"{run['reading']:.1f}",
                              f"{run['computing']:.1f}", f"{run['rows'] / run['wall']:,.0f}",
                              f"{run['rows'] / run['wall'] / CORES:,.0f}", gib(run["rss"]), ""))
    table(("reference", "rows", "wall s", "reading s", "computing s", "rows/s", "rows/s/core", "peak RSS", "note"),
          lines, right=2)
    print("\nlargest size each held, against scrutiny:")
    for tool, attempts in references.items():
        held = [r for r in attempts if "computing" in r]
        if not held:
            print(f"  {tool}: no size worked")
            continue
        best = held[-1]
        mine = runs.get((best["rows"], N_BOOT))
        versus = ""
        if mine and "failed" not in mine:
            versus = f"; scrutiny on the same rows: wall {mine['wall']:.1f} s, peak RSS {gib(mine['rss'])}"
        print(f"  {tool}: {best['rows']:,} rows, wall {best['wall']:.1f} s (computing {best['computing']:.1f} s), "
              f"peak RSS {gib(best['rss'])} ({gib(best['rss_imports'])} after its imports){versus}")
        checked = [(r, runs[r["rows"], N_BOOT]) for r in held
                   if (r["rows"], N_BOOT) in runs and "values" in runs[r["rows"], N_BOOT]]
        if checked:
            run, mine = checked[-1]
            worst, n, absent = largest_difference(run["values"], mine["values"])
            print(f"    same values as scrutiny on {run['rows']:,} rows: max |difference| {worst:.2e} over {n} values"
                  + (f"; not in scrutiny's run: {', '.join(absent[:4])}" if absent else ""))
    if "fairlearn-bootstrap" in references:
        print(f"  fairlearn-bootstrap is Fairlearn's own: MetricFrame(n_boot={N_BOOT}) resamples rows, each "
              "replicate a MetricFrame over every row")


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["executors", "streaming", "all"], default="all",
                        help="executors (Ray against local), streaming (logged decisions in Parquet), "
                             "or both (default)")
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        help="executors: the audit's device (default: cuda when available)")
    parser.add_argument("--rows", default="1e7,1e8",
                        help="streaming: sizes of the synthetic data, comma-separated (default: 1e7,1e8)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="executors: warm runs per family and setting after the cold one; the least counts "
                             "(default: 3)")
    parser.add_argument("--model", help="executors: an Adult checkpoint to audit (default: train the default MLP)")
    parser.add_argument("--families", type=lambda text: tuple(text.split(",")), default=FAMILIES,
                        help=f"executors: the families to time, comma-separated (default: {','.join(FAMILIES)})")
    parser.add_argument("--quick", action="store_true",
                        help="executors: cut sizes (16 rows explained, 24 attacked, no detector, chunks of 8 rows), "
                             "a check that the benchmark runs, not the issue's figures")
    parser.add_argument("--data-dir", help="executors: folder with Adult's raw files (default: the CLI's)")
    parser.add_argument("--stream-repeats", type=int, default=2,
                        help="streaming: runs of each scrutiny measurement; the least wall time counts (default: 2)")
    parser.add_argument("--memory-cap", type=float, default=16.0,
                        help="streaming: address-space cap of each reference's process, GiB (default: 16)")
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="streaming: wall-time limit of each measurement, s (default: 600)")
    parser.add_argument("--references", default=",".join(REFERENCES),
                        help=f"streaming: the references to run (default: {','.join(REFERENCES)}; '' for none)")
    parser.add_argument("--seed", type=int, default=0, help="streaming: seeds the data (default: 0)")
    parser.add_argument("--work", help="folder for the data, runs and logs (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (data, model, run folders)")
    parser.add_argument("--worker", choices=REFERENCES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        reference_worker(args.worker, args.folder, args.seed, args.memory_cap)
        return
    try:
        args.rows = parse_rows(args.rows)
    except ValueError:
        parser.error(f"--rows {args.rows!r}: expected whole numbers such as 1e7,1e8 separated by commas")
    if min(args.rows) < 1000:
        parser.error("--rows: every size must be at least 1000")
    args.references = [r.strip() for r in args.references.split(",") if r.strip()]
    if set(args.references) - set(REFERENCES):
        parser.error(f"--references: expected some of {', '.join(REFERENCES)}, got {', '.join(args.references)}")
    if args.repeats < 1 or args.stream_repeats < 1 or args.memory_cap <= 0 or args.time_limit <= 0:
        parser.error("--repeats and --stream-repeats must be at least 1, --memory-cap and --time-limit positive")
    if args.model and not Path(args.model).exists():
        parser.error(f"--model {args.model}: no such file or folder")
    args.data_dir_option = ["--data-dir", args.data_dir] if args.data_dir else []
    if args.part in ("executors", "all"):
        import torch

        if args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        elif args.device == "cuda" and not torch.cuda.is_available():
            print("CUDA is not available here: running on CPU")
            args.device = "cpu"
        hardware = torch.cuda.get_device_name(0) if args.device == "cuda" else ""
    else:
        hardware = ""

    print(f"Python {platform.python_version()}, {versions(LIBRARIES)}")
    print(f"{cpu_name()}, {CORES} CPU cores{f'; {hardware}' if hardware else ''}; "
          f"niceness {os.nice(0)}; load average before: {load()}", flush=True)
    if os.getloadavg()[0] >= 0.5:
        print("note: the machine looks busy (other work is running): the times below may be inflated")
    args.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="scrutiny-bench-scale-"))
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    same = True
    try:
        if args.part in ("executors", "all"):
            same = executors_part(args, args.work)
        if args.part in ("streaming", "all"):
            streaming_part(args)
    finally:
        if args.keep:
            print(f"\nkept: {args.work}")
        else:
            shutil.rmtree(args.work, ignore_errors=True)
    print(f"\nload average after: {load()} (this benchmark's own runs included)")
    print(f"benchmark wall time {time.perf_counter() - started:.0f} s")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
