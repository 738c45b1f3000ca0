"""An audit's findings do not depend on where its chunks of per-row work run: the same bytes with
the local executor (forward and reversed chunk order) and with Ray on two workers of a simulated
two-node cluster, and so are the hashes of the chunks' outputs in the manifest; the
executors report each chunk as it finishes; a Ray worker that dies is retried (and counted), and
one that dies on every try ends the audit with one error line and no run folder; the executor
options are checked before any work."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import math
import os
import pathlib
import re
import struct
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from scrutiny.audit.attributions.registry import METHOD_INFO
from scrutiny.audit.attributions.stability import REPEATS
from scrutiny.audit.run.executor import (
    Chunk,
    LocalExecutor,
    RayExecutor,
    Recorder,
    chunk_seed,
    output_sha256,
    row_chunks,
    work_chunks,
)
from scrutiny.audit.run.run_folder import to_json
from scrutiny.cli import main
from scrutiny.errors import InputError

from .audit_configs import IMAGE, TABULAR

ARCH = {"adult": "mlp", "digits": "cnn"}
explain_module = importlib.import_module("scrutiny.audit.attributions.explain")  # the package exports a function of that name


def small(text: str) -> dict:
    """The shared small config, cut further, in chunks of 8 rows: every method and attack is
    several chunks, each with its own draws."""
    config = tomllib.loads(text)
    config["attributions"].update(samples=16, quality_samples=4, n_boot=20)
    config["robustness"].update(samples=24, steps=3)
    if "fairness" in config:
        config["fairness"]["n_boot"] = 20
    return {**config, "chunk_rows": 8}


CONFIGS = {"adult": small(TABULAR), "digits": small(IMAGE)}
# the attributions family alone, two methods of two chunks each: the audits whose workers die
ATTRIBUTIONS_ONLY = {"seed": 0, "families": ["attributions"], "chunk_rows": 8,
                     "attributions": {"methods": ["integrated_gradients", "kernel_shap"], "samples": 16,
                                      "quality": False, "n_boot": 20}}


@dataclass
class Audited:
    findings: str           # findings.json, as written
    manifest: dict


def audited(trained, name: str, executor, config: dict | None = None, progress: bool = False) -> Audited:
    from scrutiny.audit.run.runner import run_audit

    dataset, _, checkpoint = trained(name, ARCH[name])
    result = run_audit(checkpoint, dataset, config=config or CONFIGS[name], executor=executor, progress=progress)
    return Audited(to_json(result.document), json.loads(to_json(result.manifest)))


@pytest.fixture(scope="module")
def local(trained):
    return {name: audited(trained, name, LocalExecutor()) for name in CONFIGS}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_chunks_run_in_reverse_give_the_same_findings_and_chunk_hashes(trained, local, name):
    reversed_run = audited(trained, name, LocalExecutor(order="reversed"))
    assert reversed_run.findings == local[name].findings
    assert reversed_run.manifest["chunks"] == local[name].manifest["chunks"]


def test_ray_on_two_workers_of_a_two_node_cluster_gives_the_same_findings(trained, local, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from scrutiny.audit.run import runner

    shown: list[tuple[str, int, int]] = []

    def record(self, label: str, done: int, total: int) -> None:
        if self.show:
            shown.append((label, done, total))

    monkeypatch.setattr(runner._Progress, "chunks", record)
    assert not ray.is_initialized()
    expected = local["adult"]
    try:
        # the Adult audit, every family (the digits one is tested in reverse order above), on two workers
        # on two nodes of one CPU each
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        try:
            cluster.add_node(num_cpus=1)
            executor = RayExecutor(address=cluster.address)
            assert len(ray.nodes()) == 2
            run = audited(trained, "adult", executor, progress=True)
            assert run.findings == expected.findings
            assert run.manifest["chunks"] == expected.manifest["chunks"]
            assert run.manifest["executor"] == {"name": "ray", "retried_tasks": 0}
        finally:
            ray.shutdown()
            cluster.shutdown()
    finally:
        ray.shutdown()
    # the audit's display (progress=True on the cluster) counted the chunks of every map one by one,
    # up to all of them, as Ray reported them done
    maps: list[tuple[str, list[tuple[int, int]]]] = []
    for label, done, total in shown:
        if done == 0:
            maps.append((label, []))
        maps[-1][1].append((done, total))
    assert {label for label, _ in maps} == {"attributions: integrated_gradients", "attributions: kernel_shap",
                                            "attributions: stability", "robustness: pgd, gaussian, smallest_eps"}
    for label, reports in maps:
        total = reports[0][1]
        assert reports == [(done, total) for done in range(total + 1)], label
    assert sum(reports[0][1] for _, reports in maps) == sum(e["chunks"] for e in expected.manifest["chunks"])


def test_the_manifest_counts_the_chunks_of_each_piece_of_work_and_hashes_each(local):
    for name, run in local.items():
        config, details = CONFIGS[name], json.loads(run.findings)["details"]
        explained, attacked = details["attributions"]["n"], details["robustness"]["n"]
        assert (explained, attacked) == (16, 24)
        methods = config["attributions"]["methods"]
        expected = [(["attributions", m], explained) for m in methods]
        stability = min(config["attributions"]["stability_rows"], explained)
        expected += [(["attributions", "stability", m, r], stability) for m in methods
                     for r in range(1, (REPEATS if METHOD_INFO[m].sampled else 1) + 1)]
        expected += [(["robustness", a, k], attacked) for a in config["robustness"]["attacks"]
                     for k in range(len(details["robustness"]["eps"]))]
        expected += [(["robustness", "smallest_eps"], attacked)]
        entries = run.manifest["chunks"]
        assert [(e["work"], e["rows"]) for e in entries] == expected, name
        for entry in entries:
            assert entry["chunks"] == math.ceil(entry["rows"] / 8) == len(entry["sha256"])
            assert all(len(h) == 64 and int(h, 16) >= 0 for h in entry["sha256"])
            assert len(set(entry["sha256"])) == entry["chunks"]  # other rows, other outputs
        assert run.manifest["executor"] == {"name": "local", "retried_tasks": 0}
        assert "chunks" not in json.loads(run.findings)  # findings.json holds the findings only


def test_a_chunk_output_is_hashed_from_its_values():
    array = np.arange(6, dtype="<f4").reshape(2, 3)
    # the documented encoding, written out: tag, then each part with its length
    reference = hashlib.sha256(b"array\0")
    for part in (b"<f4", b"(2, 3)", array.tobytes()):
        reference.update(struct.pack("<Q", len(part)) + part)
    assert output_sha256(array) == reference.hexdigest()
    assert output_sha256(array) == output_sha256(array.copy(order="F"))  # the values, not the memory layout
    assert output_sha256(array) != output_sha256(array.reshape(3, 2))    # same bytes, another shape
    assert output_sha256(array) != output_sha256(array.astype("<f8"))
    nudged = array.copy()
    nudged[1, 2] = np.nextafter(nudged[1, 2], np.float32(np.inf))
    assert output_sha256(array) != output_sha256(nudged)
    assert output_sha256({"a": 1, "b": [2.0, None]}) == output_sha256({"b": [2.0, None], "a": 1})
    assert output_sha256([1]) != output_sha256((1,)) != output_sha256(1.0)
    assert output_sha256(torch.arange(3)) == output_sha256(torch.arange(3)) != output_sha256(torch.arange(3.0))

    @dataclass
    class Part:
        values: np.ndarray
        seconds: float

    assert output_sha256(Part(array, 1.0)) == output_sha256(Part(array.copy(), 2.5))  # a wall time is no output
    assert output_sha256(Part(array, 1.0)) != output_sha256(Part(nudged, 1.0))
    with pytest.raises(TypeError, match="holds a set"):
        output_sha256({"a": {1, 2}})


def _rows(chunk: Chunk, scale: float) -> np.ndarray:
    return np.arange(chunk.rows.start, chunk.rows.stop) * scale


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_the_local_executor_reports_each_chunk_as_it_finishes_and_the_recorder_keeps_their_hashes(order):
    reports: list[tuple[int, int]] = []
    shown: list[tuple[str, int, int]] = []
    recorder = Recorder(LocalExecutor(order=order), display=lambda *report: shown.append(report))
    results = recorder.map(_rows, work_chunks(("demo", "rows"), 20, 8), 0.5,
                           progress=lambda done, total: reports.append((done, total)))
    assert [list(r) for r in results] == [[i * 0.5 for i in range(a, b)] for a, b in ((0, 8), (8, 16), (16, 20))]
    assert reports == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert shown == [("demo: rows", *r) for r in reports]
    assert recorder.chunks() == [{"work": ["demo", "rows"], "rows": 20, "chunks": 3,
                                  "sha256": [output_sha256(r) for r in results]}]
    assert recorder.retried == 0 and recorder.name == "local"


def test_the_explain_and_attack_bars_count_chunks_one_by_one(trained, monkeypatch):
    from tqdm.std import tqdm

    from scrutiny.audit.robustness.assess import assess_robustness

    counted: dict[str, list[int]] = {}
    update = tqdm.update

    def counting(bar, n=1):
        done = update(bar, n)
        counted.setdefault(bar.desc, []).append(bar.n)
        return done

    monkeypatch.setattr(tqdm, "update", counting)
    dataset, model, _ = trained("adult", "mlp")
    explain_module.explain(model.model, dataset, methods=["saliency"], samples=20, n_boot=10, chunk_rows=8,
                           progress=True)
    assess_robustness(model.model, dataset, attacks=["gaussian"], eps=[0.1, 0.2], samples=20, search_steps=0,
                      chunk_rows=8, device="cpu", progress=True)
    # 20 rows in chunks of 8: 3 chunks per method, and per attack and radius, each counted as it finished
    assert counted == {"saliency": [0, 1, 2, 3], "attacks": [0, 1, 2, 3, 4, 5, 6]}  # 0: before any chunk ran


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance of 2 CPUs for the tests that need any (each start costs seconds)."""
    import ray

    assert not ray.is_initialized()
    RayExecutor(num_cpus=2)
    yield
    ray.shutdown()


def _slow_first(chunk: Chunk) -> int:
    time.sleep(1.5 if chunk.index == 0 else 0.0)  # the first chunk finishes last
    return chunk.index


def test_ray_reports_chunks_as_they_finish_and_returns_them_in_order(ray_instance):
    executor = RayExecutor(task_cpus=1)  # two at a time on the 2 CPUs
    reports: list[tuple[int, int, float]] = []
    start = time.perf_counter()
    results = executor.map(_slow_first, work_chunks(("demo", "wait"), 4, 1),
                           progress=lambda done, total: reports.append((done, total, time.perf_counter() - start)))
    assert results == [0, 1, 2, 3]
    assert [(d, t) for d, t, _ in reports] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    # three chunks were reported done while the slow one still ran: not all at once at the end
    assert reports[3][2] < reports[4][2] - 0.5
    assert executor.retried == 0


def test_a_ray_worker_that_dies_once_is_retried_and_the_audit_is_the_same(trained, tmp_path, monkeypatch,
                                                                         ray_instance):
    local_run = audited(trained, "adult", LocalExecutor(), ATTRIBUTIONS_ONLY)
    real = explain_module._attribute_chunk
    marker = str(tmp_path / "died")

    def dies_on_the_first_try(chunk, *shared):
        try:  # the first task to get here makes the marker and kills its worker; every later try runs
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return real(chunk, *shared)
        os._exit(1)

    monkeypatch.setattr(explain_module, "_attribute_chunk", dies_on_the_first_try)
    run = audited(trained, "adult", RayExecutor(num_cpus=2, task_cpus=1), ATTRIBUTIONS_ONLY, progress=True)  # the live display too
    assert os.path.exists(marker)  # a worker did die
    assert run.findings == local_run.findings
    assert run.manifest["chunks"] == local_run.manifest["chunks"]
    assert [e["chunks"] for e in run.manifest["chunks"]] == [2, 2]
    assert run.manifest["executor"] == {"name": "ray", "retried_tasks": 1}


def run_cli(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, err.getvalue()


def test_a_ray_worker_that_dies_on_every_try_ends_the_audit_with_one_error_and_no_run(trained, tmp_path,
                                                                                       monkeypatch, ray_instance):
    def always_dies(chunk, *shared):
        os._exit(1)

    _, _, checkpoint = trained("adult", "mlp")
    config = tmp_path / "audit.toml"
    config.write_text('seed = 0\nfamilies = ["attributions"]\nchunk_rows = 8\n[attributions]\n'
                      'methods = ["integrated_gradients"]\nsamples = 8\nquality = false\nn_boot = 20\n')
    monkeypatch.setattr(explain_module, "_attribute_chunk", always_dies)
    out = tmp_path / "run"
    code, err = run_cli("audit", checkpoint, "--data", "adult", "--out", out, "--config", config,
                        "--executor", "ray")
    errors = err.splitlines()
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith("error: executor ray: chunk 0 of attributions/integrated_gradients (sampled rows 0 "
                                "to 7) could not be run (a task whose worker dies is retried 2 times): The worker "
                                "died unexpectedly"), err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.toml"]  # no staging folder left either


def _interval(chunk: Chunk, meeting: str, wait: float) -> tuple[float, float]:
    """The task's start and end: it marks its start in ``meeting`` and ends once every task of
    the map has started there (tasks that run together) or after ``wait`` seconds (one at a time;
    also long enough for Ray to start a second worker when it may)."""
    start = time.time()
    folder = pathlib.Path(meeting)
    (folder / str(chunk.index)).touch()
    while len(list(folder.iterdir())) < 2 and time.time() - start < wait:
        time.sleep(0.05)
    return start, time.time()


def _overlaps(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:]))


def test_ray_tasks_ask_for_the_callers_threads_so_a_machine_is_never_oversubscribed(ray_instance, tmp_path):
    """Each unit runs at the caller's torch threads: on 2 CPUs, tasks of 2 threads run one at a
    time (Ray would otherwise run two, four threads on two cores); tasks of 1 thread run two at once."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        # tasks of one thread meet, however long a loaded machine takes to start the second worker
        (tmp_path / "one").mkdir()
        assert _overlaps(RayExecutor(task_cpus=1).map(_interval, work_chunks(("demo", "threads"), 2, 1),
                                                      str(tmp_path / "one"), 60.0))
        executor = RayExecutor()
        assert executor.task_resources() == {"num_cpus": 2, "num_gpus": 0}
        (tmp_path / "two").mkdir()
        assert not _overlaps(executor.map(_interval, work_chunks(("demo", "threads"), 2, 1), str(tmp_path / "two"), 2.0))
        assert RayExecutor(task_cpus=8).task_resources()["num_cpus"] == 2  # capped at the largest node: it fits
    finally:
        torch.set_num_threads(threads)


def test_ray_on_cuda_asks_a_gpu_per_task_and_refuses_what_cannot_run(ray_instance):
    with pytest.raises(InputError, match="with the Ray executor use cuda"):
        RayExecutor(device="cuda:1")
    with pytest.raises(InputError, match="the Ray cluster has no GPU"):
        RayExecutor(device="cuda")


def test_an_exception_in_a_ray_task_is_raised_as_it_is(ray_instance):
    def refuses(chunk: Chunk) -> None:
        raise InputError(f"chunk {chunk.index}: refused")

    with pytest.raises(InputError, match=r"^chunk \d: refused$"):
        RayExecutor(num_cpus=2).map(refuses, work_chunks(("demo", "refuse"), 2, 1))


_FAILED_MAPS = """
import gc, sys, time
from scrutiny.audit.run.executor import RayExecutor, work_chunks
from scrutiny.errors import InputError

def refuses(chunk):
    time.sleep(0.5)
    raise InputError(f"chunk {chunk.index}: refused")

executor = RayExecutor(num_cpus=2)
for _ in range(3):
    try:
        executor.map(refuses, work_chunks(("demo", "refuse"), 8, 1))
    except InputError as exc:
        print(exc, file=sys.stderr)
    gc.collect()
time.sleep(2)
gc.collect()
"""


def test_a_failed_ray_map_reads_every_task_error_so_none_is_logged_later():
    """Ray logs a failed task's error when its unread reference is collected: after a CLI's one
    error line, or in the middle of a later run. A failed map reads them all before it raises.
    (Its own process: Ray's logging under pytest does not show what a user's stderr gets.)"""
    done = subprocess.run([sys.executable, "-c", _FAILED_MAPS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 3 and all(re.fullmatch(r"chunk \d: refused", line) for line in lines), done.stderr


def test_chunk_seeds_name_the_work_not_the_worker():
    assert chunk_seed(0, "attributions", "lime", 3) == chunk_seed(0, "attributions", "lime", 3)
    seeds = {chunk_seed(0, "attributions", "lime", i) for i in range(100)}
    assert len(seeds) == 100
    assert chunk_seed(0, "attributions", "lime", 3) != chunk_seed(1, "attributions", "lime", 3)
    assert chunk_seed(0, "robustness", "pgd", 0, 3) != chunk_seed(0, "robustness", "square", 0, 3)
    assert [(c.start, c.stop) for c in row_chunks(20, 8)] == [(0, 8), (8, 16), (16, 20)]


@pytest.mark.parametrize("args,fragment", [
    (["--executor", "spark"], "--executor spark: expected one of local, ray"),
    (["--ray-address", "localhost:1"], "--ray-address goes with --executor ray"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "cannot start or reach the Ray cluster at 127.0.0.1:1"),
])
def test_bad_executor_options_are_one_line_and_write_nothing(trained, tmp_path, args, fragment):
    _, _, checkpoint = trained("adult", "mlp")
    out = tmp_path / "run"
    code, err = run_cli("audit", checkpoint, "--data", "adult", "--out", out, *args)
    assert code == 2 and err.startswith("error: ") and fragment in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_chunk_size_out_of_range_is_refused(trained):
    from scrutiny.audit.run.runner import run_audit
    from scrutiny.errors import InputError

    dataset, _, checkpoint = trained("adult", "mlp")
    with pytest.raises(InputError, match="chunk_rows"):
        run_audit(checkpoint, dataset, config={"chunk_rows": 0}, progress=False)
