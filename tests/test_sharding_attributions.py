"""Deterministic sharding of the attributions (issue 16, step 1): every method's values depend on
the seed and the row's chunk only, never on the executor, the order the chunks run in, the batch
size or the other rows of the run; Ray gives the same bytes as the local executor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from scrutiny.audit.attributions.explain import attribute_in_chunks, explain
from scrutiny.audit.attributions.feature_space import patch_groups, tabular_space
from scrutiny.audit.attributions.methods import METHODS, attribute, resolve_baseline
from scrutiny.audit.attributions.registry import METHOD_INFO
from scrutiny.audit.run.executor import LocalExecutor, RayExecutor, chunk_seed
from scrutiny.errors import InputError
from scrutiny.models import DatasetSpec, Feature, TabularPreprocessor, build_model, train_on

CASES = [(m, kind) for m in METHODS for kind in ("tabular", "image") if kind in METHOD_INFO[m].modalities]
SAMPLED = {m for m in METHODS if METHOD_INFO[m].sampled}
# few samples (KernelSHAP: fewer coalitions than the 2^11 - 2 and 2^16 - 2 there are, so it samples)
FEW = {"gradient_shap": 8, "kernel_shap": 200, "shap_gradient": 8, "lime": 300}
ROWS, CHUNK = 20, 8  # three chunks, the last one short
SEED = 5


@pytest.fixture(scope="module")
def cases():
    """A random MLP on a table of 10 numeric and one 3-category feature (13 encoded columns), and
    a random CNN on 8x8 images (16 patches): inputs, background and feature space of each."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.normal(loc=i, scale=1 + i / 3, size=200) for i in range(10)})
    frame["colour"] = rng.choice(["blue", "green", "red"], size=200)
    spec = DatasetSpec(name="toy", task="tabular", label="y", classes=("no", "yes"), favourable_label="yes",
                       features=tuple(Feature(f"x{i}", "numeric") for i in range(10))
                       + (Feature("colour", "categorical"),))
    preprocessor = TabularPreprocessor(spec).fit(frame)
    encoded = preprocessor.transform(frame).astype(np.float32)
    torch.manual_seed(0)
    mlp = build_model("mlp", input_shape=(encoded.shape[1],), n_classes=2, hidden=(32,), dropout=0.0).eval()
    cnn = build_model("cnn", input_shape=(1, 8, 8), n_classes=10).eval()
    images = rng.uniform(0, 1, size=(120, 1, 8, 8)).astype(np.float32)
    return {
        "tabular": (mlp, tabular_space(preprocessor), encoded[:ROWS], encoded[ROWS:]),
        "image": (cnn, patch_groups((1, 8, 8)), images[:ROWS], images[ROWS:]),
    }


def _run(cases, method, kind, X=None, **kwargs):
    model, space, inputs, background = cases[kind]
    settings = {"n_samples": FEW.get(method), "n_steps": 16, "seed": SEED, "chunk_rows": CHUNK, **kwargs}
    return attribute_in_chunks(model, inputs if X is None else X, method=method, space=space, background=background,
                               **settings)


def _assert_same(a, b, rows=slice(None)):
    """Every per-row array of ``b`` equal, to the bit, to ``a``'s ``rows``; the same baseline."""
    np.testing.assert_array_equal(b.values, a.values[rows])
    np.testing.assert_array_equal(b.target, a.target[rows])
    for name in ("error", "output_change"):
        got, want = getattr(b, name), getattr(a, name)
        assert (got is None) == (want is None), name
        if got is not None:
            np.testing.assert_array_equal(got, want[rows])
    np.testing.assert_array_equal(b.baseline_values, a.baseline_values)


@pytest.mark.parametrize(("method", "kind"), CASES)
def test_a_rows_values_depend_on_its_chunk_and_the_seed_only(cases, method, kind):
    model, space, X, background = cases[kind]
    before = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    forward = _run(cases, method, kind, executor=LocalExecutor())
    assert np.array_equal(np.random.get_state()[1], before[0]) and torch.equal(torch.get_rng_state(), before[1])
    reversed_ = _run(cases, method, kind, executor=LocalExecutor(order="reversed"))
    _assert_same(forward, reversed_)
    assert (reversed_.baseline, reversed_.settings) == (forward.baseline, forward.settings)
    # the first two chunks explained alone: the third one's rows change nothing
    _assert_same(forward, _run(cases, method, kind, X=X[:2 * CHUNK]), slice(0, 2 * CHUNK))
    assert forward.settings["seed"] == SEED and forward.settings["chunk_rows"] == CHUNK
    assert forward.values.shape == X.shape and len(forward.target) == ROWS

    # the rule itself: chunk 1 is attribute() of its rows, seeded by chunk_seed(seed, family,
    # method, 1), with the baseline drawn once from the run's seed
    _, base = resolve_baseline(method, space, background, seed=SEED)
    chunk = attribute(model, X[CHUNK:2 * CHUNK], method=method, space=space, background=background, baselines=base,
                      seed=chunk_seed(SEED, "attributions", method, 1), n_samples=FEW.get(method), n_steps=16)
    _assert_same(forward, chunk, slice(CHUNK, 2 * CHUNK))
    if method in SAMPLED:  # not vacuous: the same rows in two chunks get other draws
        twice = _run(cases, method, kind, X=np.concatenate([X[:CHUNK], X[:CHUNK]]))
        assert not np.array_equal(twice.values[:CHUNK], twice.values[CHUNK:])
        np.testing.assert_array_equal(twice.values[:CHUNK], forward.values[:CHUNK])


@pytest.mark.parametrize(("method", "kind"), CASES)
def test_batch_size_changes_no_draw(cases, method, kind):
    small = _run(cases, method, kind, batch_size=3)
    large = _run(cases, method, kind, batch_size=512)
    if method in SAMPLED:  # the draws: to the bit
        np.testing.assert_array_equal(small.values, large.values)
        if small.error is not None:
            np.testing.assert_array_equal(small.error, large.error)
    else:  # no draws; float32 sums over batches of 3 and of 8 rows may round apart
        np.testing.assert_allclose(small.values, large.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(small.target, large.target)
    if small.output_change is not None:
        np.testing.assert_allclose(small.output_change, large.output_change, rtol=1e-5, atol=1e-6)


def test_settings_of_the_chunks_are_joined(cases):
    ig = _run(cases, "integrated_gradients", "tabular", n_steps=4, max_steps=64, tolerance=1e-4)
    assert sum(ig.settings["steps_used"].values()) == ROWS and set(ig.settings["steps_used"]) <= {4, 8, 16, 32, 64}
    assert len(ig.settings["steps_used"]) > 1  # rows refined to different step counts in different chunks
    whole = attribute(cases["tabular"][0], cases["tabular"][2], method="integrated_gradients",
                      space=cases["tabular"][1], background=cases["tabular"][3], n_steps=4, max_steps=64,
                      tolerance=1e-4, seed=SEED)
    assert ig.settings["steps_used"] == whole.settings["steps_used"]  # no draws: chunking refines the same rows
    shap = _run(cases, "kernel_shap", "tabular")
    assert shap.settings["coalitions"] == 200 and shap.settings["exact"] is False
    exact = _run(cases, "kernel_shap", "tabular", n_samples=2**11)
    assert exact.settings["exact"] is True and np.all(exact.error == 0)


def _threads() -> tuple[int, int]:
    """torch's threads, and the most threads of a BLAS library NumPy or SciPy loaded."""
    return torch.get_num_threads(), max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")


class _OtherThreads:
    """An executor whose 'worker' runs torch and BLAS with other thread counts than the caller, as
    a Ray worker does."""

    name = "other-threads"

    def __init__(self, torch_threads: int, blas_threads: int):
        self.threads = torch_threads, blas_threads
        self.after = []

    def map(self, fn, items, *shared, progress=None):
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads[0])
        try:
            with threadpool_limits(limits=self.threads[1], user_api="blas"):
                results = []
                for item in items:
                    results.append(fn(item, *shared))
                    self.after.append(_threads())
                return results
        finally:
            torch.set_num_threads(previous)


def test_a_chunk_runs_with_the_callers_thread_counts(cases):
    mlp, space, X, background = cases["tabular"]
    seen = []

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = mlp

        def forward(self, x):
            seen.append(_threads())
            return self.inner(x)

    here = _threads()
    other = (here[0] + 1, 1 if here[1] > 1 else 2)
    executor = _OtherThreads(*other)
    attribute_in_chunks(Recording(), X, method="kernel_shap", space=space, background=background, chunk_rows=CHUNK,
                        n_samples=50, executor=executor)
    assert seen and set(seen) == {here}
    assert executor.after == [other] * 3  # the worker's own settings back after each chunk
    assert _threads() == here


class _Refuses:
    name = "refuses"

    def map(self, fn, items, *shared, progress=None):
        raise AssertionError("a request that cannot be explained reached the executor")


def test_bad_requests_are_refused_before_any_chunk_runs(cases):
    mlp, space, X, background = cases["tabular"]
    with pytest.raises(InputError, match="occlusion explains image data only"):
        attribute_in_chunks(mlp, X, method="occlusion", space=space, background=background, executor=_Refuses())
    with pytest.raises(InputError, match="one baseline or one per input row; got 3 for 20 rows"):
        attribute_in_chunks(mlp, X, method="integrated_gradients", space=space, background=background,
                            baselines=X[:3], executor=_Refuses())
    with pytest.raises(InputError, match="'chunk_rows' must be from 1 to"):
        attribute_in_chunks(mlp, X, method="saliency", space=space, background=background, chunk_rows=0)


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift", "feature_ablation"])
def test_one_baseline_per_row_goes_to_its_rows_chunk(cases, method):
    mlp, space, X, background = cases["tabular"]
    per_row = background[:ROWS]
    chunked = attribute_in_chunks(mlp, X, method=method, space=space, background=background, baselines=per_row,
                                  chunk_rows=CHUNK)
    whole = attribute(mlp, X, method=method, space=space, background=background, baselines=per_row)
    np.testing.assert_allclose(chunked.values, whole.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(chunked.baseline_values, per_row)


# ------------------------------------------------------------------ the whole family, and Ray


@pytest.fixture(scope="module")
def breast_cancer(load):
    dataset = load("breast_cancer")
    return dataset, train_on(dataset, "mlp", seed=0, epochs=2, progress=False).model


# every method's default samples: KernelSHAP's 2M + 2048 coalitions make solves large enough for
# NumPy's BLAS to split them over its threads (a Ray worker's count would change their last bits)
EXPLAIN = {"methods": ["integrated_gradients", "gradient_shap", "kernel_shap", "lime"], "samples": 20, "seed": 3,
           "n_boot": 50, "chunk_rows": CHUNK, "quality": True, "quality_samples": 4}


def _assert_same_explanations(a, b):
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.attributions.keys() == b.attributions.keys()
    for method in a.attributions:
        _assert_same(a.attributions[method], b.attributions[method])
        assert a.attributions[method].settings == b.attributions[method].settings
        np.testing.assert_array_equal(a.per_feature[method], b.per_feature[method])
        for name in ("mean", "low", "high"):
            np.testing.assert_array_equal(getattr(a.importance[method], name), getattr(b.importance[method], name))
    assert len(a.agreements) == len(b.agreements) == 6
    for x, y in zip(a.agreements, b.agreements):
        assert (x.methods, x.spearman_global, x.top_k_global) == (y.methods, y.spearman_global, y.top_k_global)
        np.testing.assert_array_equal(x.spearman_per_sample, y.spearman_per_sample)
        np.testing.assert_array_equal(x.top_k_per_sample, y.top_k_per_sample)
    assert a.quality is not None and b.quality is not None
    for method, q in a.quality.items():
        other = b.quality[method]
        np.testing.assert_array_equal(q.infidelity, other.infidelity)
        np.testing.assert_array_equal(q.sensitivity, other.sensitivity)
        for curve in dataclasses.fields(q.deletion):
            np.testing.assert_array_equal(getattr(q.deletion, curve.name), getattr(other.deletion, curve.name))
        assert q.randomisation.spearman_median == other.randomisation.spearman_median


@pytest.fixture(scope="module")
def forward(breast_cancer):
    """explain() with the local executor, chunks in order: what the other orders and Ray must equal."""
    dataset, model = breast_cancer
    return explain(model, dataset, executor=LocalExecutor(), **EXPLAIN)


def test_explain_is_the_same_whatever_order_the_chunks_run_in(breast_cancer, forward):
    dataset, model = breast_cancer
    _assert_same_explanations(forward, explain(model, dataset, executor=LocalExecutor(order="reversed"), **EXPLAIN))
    assert all(a.settings["chunk_rows"] == CHUNK and a.settings["seed"] == 3 for a in forward.attributions.values())


@pytest.fixture(scope="module")
def ray_executor():
    import ray

    executor = RayExecutor(num_cpus=2, task_cpus=1)  # two tasks at once, each at the caller's threads
    yield executor
    ray.shutdown()


def test_ray_gives_the_same_bytes(ray_executor, cases, breast_cancer, forward):
    for method, kind in CASES:
        local = _run(cases, method, kind, executor=LocalExecutor())
        remote = _run(cases, method, kind, executor=ray_executor)
        _assert_same(local, remote)
        assert local.settings == remote.settings, method
    dataset, model = breast_cancer
    _assert_same_explanations(forward, explain(model, dataset, executor=ray_executor, **EXPLAIN))
