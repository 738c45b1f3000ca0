"""An audit's findings do not depend on where its chunks of per-row work run: the same bytes with
the local executor (forward and reversed chunk order), with Ray on one and on two workers, and on a
simulated two-node Ray cluster; and the executor options are checked before any work."""

from __future__ import annotations

import contextlib
import io
import tomllib

import pytest

from scrutiny.audit.run.executor import LocalExecutor, RayExecutor, chunk_seed, row_chunks
from scrutiny.audit.run.run_folder import to_json
from scrutiny.cli import main

from .audit_configs import IMAGE, TABULAR

ARCH = {"adult": "mlp", "digits": "cnn"}


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


def findings_bytes(trained, name: str, executor) -> str:
    from scrutiny.audit.run.runner import run_audit

    dataset, _, checkpoint = trained(name, ARCH[name])
    result = run_audit(checkpoint, dataset, config=CONFIGS[name], executor=executor, progress=False)
    return to_json(result.document)


@pytest.fixture(scope="module")
def local(trained):
    return {name: findings_bytes(trained, name, LocalExecutor()) for name in CONFIGS}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_chunks_run_in_reverse_give_the_same_findings(trained, local, name):
    assert findings_bytes(trained, name, LocalExecutor(order="reversed")) == local[name]


def test_ray_on_one_and_two_workers_and_a_two_node_cluster_gives_the_same_findings(trained, local):
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    try:
        for cpus in (1, 2):  # the Adult audit: every family (the digits one is tested in reverse order above)
            executor = RayExecutor(num_cpus=cpus)
            assert findings_bytes(trained, "adult", executor) == local["adult"], cpus
            ray.shutdown()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        try:
            cluster.add_node(num_cpus=1)
            executor = RayExecutor(address=cluster.address)
            assert len(ray.nodes()) == 2
            assert findings_bytes(trained, "adult", executor) == local["adult"]
        finally:
            ray.shutdown()
            cluster.shutdown()
    finally:
        ray.shutdown()


def test_chunk_seeds_name_the_work_not_the_worker():
    assert chunk_seed(0, "attributions", "lime", 3) == chunk_seed(0, "attributions", "lime", 3)
    seeds = {chunk_seed(0, "attributions", "lime", i) for i in range(100)}
    assert len(seeds) == 100
    assert chunk_seed(0, "attributions", "lime", 3) != chunk_seed(1, "attributions", "lime", 3)
    assert chunk_seed(0, "robustness", "pgd", 0, 3) != chunk_seed(0, "robustness", "square", 0, 3)
    assert [(c.start, c.stop) for c in row_chunks(20, 8)] == [(0, 8), (8, 16), (16, 20)]


def run_cli(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, err.getvalue()


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
