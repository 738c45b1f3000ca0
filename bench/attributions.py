"""Attribution cost and accuracy: scrutiny's :func:`attribute` against what it is built on.

Two measurements, in one run, on the same model and the same samples for both sides:

1. Integrated gradients overhead. ``attribute(method="integrated_gradients")`` on N seeded
   Adult test rows (the Adult MLP of ``train_on(load_dataset("adult"), "mlp", seed=0)``),
   divided by the time of the bare batched forward + backward passes it needs: exactly the
   interpolated rows it ran (``settings["steps_used"]``, refinement re-runs included: a
   sample that ended at 256 steps was also run at 64 and 128), in the batches captum forms,
   through ``ExplainedOutput(model)`` and ``torch.autograd.grad`` w.r.t. the inputs. captum's
   ``IntegratedGradients`` alone on the same rows and steps is timed too, to tell captum's
   share of the overhead from scrutiny's.
2. KernelSHAP and LIME as the audit runs them against the stock library calls as their docs
   show them (one instance at a time, default settings: ``shap.KernelExplainer`` over
   ``shap.kmeans(background, 10)``, ``LimeTabularExplainer.explain_instance``), on a small
   synthetic table (8 numeric + 2 categorical features of 3 categories: 10 original
   features), scored against exact interventional Shapley values from a full enumeration of
   all 2**10 coalitions over each side's own background rows, and over a plain seeded sample
   of training rows (``--reference-rows``) to show what each background choice costs. Stock
   KernelSHAP also runs over ours' own background rows (the same work and the same exact
   target, so the ratio is per unit of work). Stock LIME also runs row by row with ``attribute``'s own settings (``discretize_continuous=False``):
   the same work, which must give the same weights.

3. (``--part estimators``, only when asked) KernelSHAP estimators: mean absolute error against
   exact Shapley values as a function of model evaluations per row, for shap's
   ``KernelExplainer`` (``l1_reg=False``, an nsamples grid including its default 2M + 2048; and
   its default l1_reg at 2M + 2048) and ``attribute(kernel_shap)`` with each ``estimator``, on
   ``--estimator-data``: the German credit MLP (default; M = 20), the Adult MLP (M = 13), both
   ``train_on(load_dataset(name), "mlp", seed=0)``, or a seeded synthetic MLP with 16 features.
   German's raw file comes from ``scrutiny data fetch german`` (the bench says so and exits 2
   when it is missing). The exact values enumerate, for each background row, the 2^m_b
   coalitions of the m_b features where it and the row differ (the others are null players of
   that row's game: the same model inputs as all 2^M); ``--exact-check-rows`` rows are also
   enumerated over all 2^M coalitions as a check. Trained models and exact values are cached
   under ``$SCRUTINY_BENCH_CACHE`` (default /tmp/scrutiny-bench), keyed by data and weights.
   It prints the evaluations each needs to reach stock shap's error at its default budget, the
   ratios, the wall times, and how often each scrutiny estimator's error estimate lies within
   a factor 2 of the true largest error.

Times are the best of ``--repeats`` runs, the runs being compared taking turns (other work
on the machine only ever adds time, and falls on both sides alike).

Usage::

    python bench/attributions.py [--device cpu|cuda] [--samples N] [--threads N] [--part ig|shap|estimators]
        [--estimator-data german|adult|synthetic16]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from _common import RowCounter, sync, versions
from scrutiny.audit.attributions.explain import feature_space_for, sample_test_rows
from scrutiny.audit.attributions.feature_space import FeatureSpace
from scrutiny.audit.attributions.methods import ExplainedOutput, attribute, batched_outputs
from scrutiny.errors import DataError
from scrutiny.models import DatasetSpec, Feature, load_dataset, load_model, save_checkpoint, train_on
from scrutiny.models.datasets import tabular_dataset

LIBRARIES = ("torch", "captum", "shap", "lime")


# ------------------------------------------------------------------ helpers


def interleaved(repeats: int, runs: dict, counter: RowCounter | None = None):
    """Times each of ``runs`` (name → callable) ``repeats`` times, taking turns so that any
    other load on the machine falls on all of them alike. Returns the best wall seconds of
    each, the result of its first call, and the model rows its first call used."""
    best = dict.fromkeys(runs, math.inf)
    first, rows = {}, {}
    for round_ in range(repeats):
        for name, fn in runs.items():
            if counter:
                counter.take()
            start = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - start)
            if round_ == 0:
                first[name] = out
                rows[name] = counter.take() if counter else None
    return best, first, rows


def attribute_device(model: torch.nn.Module, inputs: np.ndarray, space: FeatureSpace, background: np.ndarray,
                     requested: str) -> torch.device:
    """The device :func:`attribute` can run on: ``requested`` if a trial call with the model
    there succeeds, else the CPU (the model is left on the device returned)."""
    if requested != "cuda":
        return torch.device("cpu")
    model.to("cuda")
    try:
        attribute(model, inputs[:2], method="integrated_gradients", space=space, background=background[:16])
    except Exception as error:  # noqa: BLE001 - any failure means it cannot run there
        print(f"attribute() runs on CPU ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
        model.cpu()
        return torch.device("cpu")
    return torch.device("cuda")


def explained_rows(model: torch.nn.Module, dataset, samples: int, seed: int, device_request: str):
    """The feature space, ``samples`` seeded test rows and the training rows, encoded, as
    ``explain()`` takes them, and the device ``attribute()`` runs on (the model is moved there)."""
    space = feature_space_for(dataset)
    _, test_X = sample_test_rows(dataset, samples, seed)
    inputs = dataset.encode(test_X)
    background = dataset.encode(dataset.train.X)
    device = attribute_device(model, inputs, space, background, device_request)
    model.to(device)
    return space, inputs, background, device


# ------------------------------------------------------------------ 1. integrated gradients


def ig_batches(steps_used: dict[int, int], *, n_steps: int, max_steps: int, batch_size: int):
    """The (samples, step range, level) batches ``attribute`` runs through captum for a
    ``steps_used`` histogram: every level from ``n_steps`` up to each sample's final level,
    chunks of ``batch_size`` samples, and within a chunk captum's internal batches of
    ``internal_batch_size // n`` steps (``internal_batch_size = batch_size * min(level, 64)``)."""
    batches, level = [], n_steps
    while True:
        n_level = sum(count for steps, count in steps_used.items() if steps >= level)
        if not n_level:
            break
        internal = batch_size * min(level, 64)
        for start in range(0, n_level, batch_size):
            n = min(batch_size, n_level - start)
            step_count = max(1, internal // n)
            for s0 in range(0, level, step_count):
                batches.append((start, n, s0, min(s0 + step_count, level), level))
        if level >= max_steps:
            break
        level = min(level * 2, max_steps)
    return batches


def build_ig_rows(batches, inputs: np.ndarray, target: np.ndarray, baseline: np.ndarray, device: torch.device):
    """Interpolated rows (Gauss–Legendre alphas, as captum's) and targets of each batch."""
    built = []
    for start, n, s0, s1, level in batches:
        nodes, _ = np.polynomial.legendre.leggauss(level)
        alphas = (nodes[s0:s1] + 1.0) / 2.0
        x = inputs[start:start + n]
        rows = np.concatenate([baseline + a * (x - baseline) for a in alphas]).astype(np.float32)
        t = np.tile(target[start:start + n], len(alphas))
        built.append((torch.from_numpy(rows).to(device).requires_grad_(), torch.from_numpy(t).to(device)[:, None]))
    return built


def raw_passes(wrapped: torch.nn.Module, built, device: torch.device) -> None:
    for x, t in built:
        out = wrapped(x).gather(1, t)
        torch.autograd.grad(out.sum(), x)
    sync(device)


def captum_passes(wrapped: torch.nn.Module, inputs: np.ndarray, target: np.ndarray, baseline: np.ndarray,
                  steps_used: dict[int, int], *, n_steps: int, max_steps: int, batch_size: int,
                  device: torch.device) -> None:
    """captum's IntegratedGradients alone on the same rows, levels and batches as
    :func:`ig_batches` (no convergence delta, no refinement decisions)."""
    from captum.attr import IntegratedGradients

    algorithm = IntegratedGradients(wrapped)
    level = n_steps
    while True:
        n_level = sum(count for steps, count in steps_used.items() if steps >= level)
        if not n_level:
            break
        for start in range(0, n_level, batch_size):
            x = torch.from_numpy(inputs[start:min(start + batch_size, n_level)]).to(device).requires_grad_()
            t = torch.from_numpy(target[start:start + len(x)]).to(device)
            b = torch.from_numpy(baseline[None]).to(device).expand_as(x)
            algorithm.attribute(x, baselines=b, target=t, n_steps=level, method="gausslegendre",
                                internal_batch_size=batch_size * min(level, 64))
        if level >= max_steps:
            break
        level = min(level * 2, max_steps)
    sync(device)


def bench_integrated_gradients(args, device: torch.device) -> dict | None:
    print("\n== 1. integrated gradients: attribute() vs the bare forward+backward passes it needs")
    try:
        dataset = load_dataset("adult")
    except DataError as error:
        print(f"skipped: {error}")
        print("Fetch the raw Adult files first: `scrutiny data fetch adult` "
              "(or `scrutiny data fetch adult --from FOLDER` with a folder holding adult.data and adult.test).")
        return None
    start = time.perf_counter()
    trained = train_on(dataset, "mlp", seed=0, progress=False, device=args.device)
    print(f"Adult MLP trained in {time.perf_counter() - start:.1f} s on {trained.settings['device']} "
          f"(test accuracy {trained.metrics['accuracy']:.3f})")
    model = trained.model.eval()
    space, inputs, background, device = explained_rows(model, dataset, args.samples, args.seed, args.device)

    def ours():
        return attribute(model, inputs, method="integrated_gradients", space=space, background=background,
                         batch_size=args.batch_size, seed=args.seed)

    result = ours()  # warm-up, and the step counts the bare passes need
    settings = result.settings
    batches = ig_batches(settings["steps_used"], n_steps=settings["n_steps"], max_steps=settings["max_steps"],
                         batch_size=args.batch_size)
    wrapped = ExplainedOutput(model).eval()
    built = build_ig_rows(batches, inputs, result.target, result.baseline_values[0], device)
    n_rows = sum(int(x.shape[0]) for x, _ in built)

    def stock():
        captum_passes(wrapped, inputs, result.target, result.baseline_values[0], settings["steps_used"],
                      n_steps=settings["n_steps"], max_steps=settings["max_steps"], batch_size=args.batch_size,
                      device=device)

    def bare():
        raw_passes(wrapped, built, device)

    bare(), stock()  # warm-up
    best, first, _ = interleaved(args.repeats, {"ours": ours, "captum": stock, "bare": bare})
    assert first["ours"].settings["steps_used"] == settings["steps_used"]
    ours_seconds, captum_seconds, raw_seconds = best["ours"], best["captum"], best["bare"]
    within = float(np.mean(result.relative_error <= settings["tolerance"]))
    return {
        "samples": len(inputs), "device": str(device), "steps_used": settings["steps_used"],
        "rows": n_rows, "batches": len(batches), "ours": ours_seconds, "raw": raw_seconds, "captum": captum_seconds,
        "ratio": ours_seconds / raw_seconds, "within": within, "tolerance": settings["tolerance"],
        "max_rel_gap": float(np.nanmax(result.relative_error)),
    }


# ------------------------------------------------------------------ 2. KernelSHAP and LIME


def synthetic_dataset(rows: int, test_rows: int, seed: int):
    """8 standard-normal numeric features and 2 categorical ones (3 categories each); the
    label is drawn from a logistic model with interactions, so the MLP has something to learn."""
    rng = np.random.default_rng(seed)
    n = rows + test_rows
    num = rng.standard_normal((n, 8))
    c1 = rng.choice(["a", "b", "c"], n)
    c2 = rng.choice(["x", "y", "z"], n)
    logit = (1.5 * num[:, 0] - num[:, 1] + 0.8 * num[:, 2] * num[:, 3] + np.sin(2 * num[:, 4])
             + 0.5 * np.abs(num[:, 5]) + np.select([c1 == "a", c1 == "b"], [1.0, -0.5], 0.0)
             + 0.7 * (c2 == "z") * num[:, 6])
    label = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame = pd.DataFrame(num, columns=[f"x{i}" for i in range(8)])
    frame["c1"], frame["c2"], frame["label"] = c1, c2, label
    spec = DatasetSpec(
        name="synthetic", task="tabular", label="label", classes=("no", "yes"), favourable_label="yes",
        features=tuple(Feature(f"x{i}", "numeric") for i in range(8))
        + (Feature("c1", "categorical"), Feature("c2", "categorical")),
        description="synthetic: 8 numeric + 2 categorical features",
    )
    train, test = frame.iloc[:rows].reset_index(drop=True), frame.iloc[rows:].reset_index(drop=True)
    return tabular_dataset(spec, train, test, sha256="synthetic")


def make_logits(model: torch.nn.Module, space: FeatureSpace, device: torch.device, chunk: int = 65536):
    """Codes Z → logits (float64), through the model on ``device``."""
    def logits(Z: np.ndarray) -> np.ndarray:
        X = space.from_codes(np.asarray(Z, dtype=np.float64))
        with torch.no_grad():
            return np.concatenate([
                model(torch.from_numpy(X[i:i + chunk]).to(device)).double().cpu().numpy()
                for i in range(0, len(X), chunk)
            ])
    return logits


def explained(logits: np.ndarray) -> np.ndarray:
    """ExplainedOutput's columns from logits: log-odds of each class (binary), else logits."""
    if logits.shape[1] == 2:
        margin = logits[:, 1] - logits[:, 0]
        return np.stack([-margin, margin], axis=1)
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def exact_shapley(logits_fn, Z: np.ndarray, target: np.ndarray, Z_background: np.ndarray,
                  weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Interventional Shapley values by enumerating every coalition of the M features:
    v(S) = Σ_k w_k f(x_S, b_k,¬S) / Σ_k w_k over the background rows b_k. Returns the values
    for the explained output (log-odds / logit of the target) and for the target's
    probability, each (N, M)."""
    n, M = Z.shape
    K = len(Z_background)
    weights = np.ones(K) if weights is None else np.asarray(weights, dtype=np.float64)
    weights = weights / weights.sum()
    masks = ((np.arange(2 ** M)[:, None] >> np.arange(M)) & 1).astype(bool)
    sizes = masks.sum(axis=1)
    kernel = np.array([math.factorial(s) * math.factorial(M - s - 1) / math.factorial(M) for s in range(M)])
    without = [np.flatnonzero(~masks[:, j]) for j in range(M)]
    phi_out, phi_prob = np.zeros((n, M)), np.zeros((n, M))
    for i in range(n):
        mixed = np.where(masks[:, None, :], Z[i], Z_background[None, :, :]).reshape(-1, M)
        logits = logits_fn(mixed)
        t = int(target[i])
        for phi, values in ((phi_out, explained(logits)[:, t]), (phi_prob, softmax(logits)[:, t])):
            v = values.reshape(2 ** M, K) @ weights
            for j in range(M):
                off = without[j]
                phi[i, j] = np.sum(kernel[sizes[off]] * (v[off + (1 << j)] - v[off]))
    return phi_out, phi_prob


def mean_spearman(a: np.ndarray, b: np.ndarray) -> float:
    rhos = []
    for x, y in zip(a, b):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        rhos.append(spearmanr(x, y).statistic)
    return float(np.mean(rhos)) if rhos else float("nan")


def bench_kernel_shap_lime(args, device_request: str) -> dict:
    import lime.lime_tabular
    import shap

    print(f"\n== 2. KernelSHAP and LIME: attribute() vs the stock per-instance calls, {args.explain_rows} rows")
    dataset = synthetic_dataset(args.rows, max(args.explain_rows, 1000), args.seed)
    start = time.perf_counter()
    trained = train_on(dataset, "mlp", seed=0, progress=False, device=args.device, epochs=args.epochs)
    print(f"synthetic MLP ({args.rows} training rows, 10 original features, "
          f"{dataset.preprocessor.n_encoded} encoded columns) trained in {time.perf_counter() - start:.1f} s "
          f"(test accuracy {trained.metrics['accuracy']:.3f})")
    model = trained.model.eval()
    space, inputs, background, device = explained_rows(model, dataset, args.explain_rows, args.seed, device_request)
    counter = RowCounter(model)
    logits_fn = make_logits(model, space, device)
    Z, Z_train = space.to_codes(inputs), space.to_codes(background)
    M = space.n_features
    categorical = [g for g in range(M) if space.categorical[g] or space.binary[g]]
    out: dict = {"rows": len(inputs), "features": M}

    target = explained(logits_fn(Z)).argmax(axis=1)  # attribute()'s default: the predicted class

    # ---- ours
    def ours(method):
        return attribute(model, inputs, method=method, space=space, background=background, seed=args.seed)

    # ours' background rows (its seeded "train_sample"), for the stock run doing the same work
    Z_ours_background = space.to_codes(ours("kernel_shap").baseline_values)

    # ---- stock shap: the docs' KernelExplainer over a k-means summary, one row at a time
    def stock_shap(background_rows=None):
        def f(z):  # both ExplainedOutput columns, as a model's outputs
            return explained(logits_fn(z))

        summary = shap.kmeans(Z_train, 10) if background_rows is None else background_rows
        explainer = shap.KernelExplainer(f, summary)
        values = np.zeros((len(Z), M))
        for i in range(len(Z)):
            phi = explainer.shap_values(Z[i])
            phi = phi[target[i]] if isinstance(phi, list) else np.asarray(phi)[:, target[i]]
            values[i] = phi
        return values, summary

    # ---- stock LIME: LimeTabularExplainer with its defaults, explain_instance per row
    def proba(z):
        return softmax(logits_fn(z))

    def stock_lime(predict, **settings):
        explainer = lime.lime_tabular.LimeTabularExplainer(
            Z_train, mode="classification", feature_names=list(space.names), categorical_features=categorical,
            class_names=list(dataset.spec.classes), random_state=args.seed, **settings,
        )
        values = np.zeros((len(Z), M))
        for i in range(len(Z)):
            explanation = explainer.explain_instance(Z[i], predict, labels=(int(target[i]),), num_features=M)
            for g, weight in explanation.local_exp[int(target[i])]:
                values[i, g] = weight
        return values

    # the same work as attribute(lime): its settings, and its model call per batch of perturbations
    def attribute_proba(z):
        return batched_outputs(model, space.from_codes(z), 4096, probabilities=True)

    best, first, rows = interleaved(args.repeats, {
        "ours_shap": lambda: ours("kernel_shap"), "stock_shap": stock_shap,
        "stock_shap_same": lambda: stock_shap(Z_ours_background),
        "ours_lime": lambda: ours("lime"), "stock_lime": lambda: stock_lime(proba),
        "stock_lime_same": lambda: stock_lime(attribute_proba, discretize_continuous=False),
    }, counter)
    for name in best:
        out[f"{name}_s"], out[f"{name}_rows"] = best[name], rows[name]
    shap_result, lime_result = first["ours_shap"], first["ours_lime"]
    stock_shap_values, summary = first["stock_shap"]
    stock_lime_values = first["stock_lime"]
    assert np.array_equal(target, shap_result.target) and np.array_equal(target, lime_result.target)
    ours_shap = shap_result.by_feature(space)
    ours_lime = lime_result.by_feature(space)
    # batching must not change lime's numbers: explain_instance per row with attribute()'s settings
    out["lime_same_gap"] = float(np.max(np.abs(ours_lime - first["stock_lime_same"])) / np.max(np.abs(ours_lime)))

    # ---- exact Shapley values over each side's background, and over plain training rows
    Z_ours = space.to_codes(shap_result.baseline_values)
    w_ours = getattr(shap_result, "baseline_weights", None)
    counter.take()
    start = time.perf_counter()
    exact_ours, _ = exact_shapley(logits_fn, Z, target, Z_ours, w_ours)
    out["exact_ours_s"] = time.perf_counter() - start
    out["exact_ours_rows"] = counter.take()
    start = time.perf_counter()
    exact_stock, _ = exact_shapley(logits_fn, Z, target, summary.data, summary.weights)
    out["exact_stock_s"] = time.perf_counter() - start
    out["exact_stock_rows"] = counter.take()
    # reference: the same seeded sample of training rows that attribute()'s "train_sample" draws, no summary
    reference_rows = np.sort(np.random.default_rng(args.seed).choice(
        len(Z_train), size=min(args.reference_rows, len(Z_train)), replace=False))
    Z_reference = Z_train[reference_rows]
    start = time.perf_counter()
    exact_reference, exact_reference_prob = exact_shapley(logits_fn, Z, target, Z_reference)
    out["exact_reference_s"] = time.perf_counter() - start
    out["exact_reference_rows"] = counter.take()
    counter.handle.remove()

    # additivity of the enumeration itself: Σφ = f(x) − E_b f(b) (a check of this benchmark)
    fx = explained(logits_fn(Z))[np.arange(len(Z)), target]
    fb = np.average(explained(logits_fn(Z_ours)), axis=0, weights=w_ours)[target]
    out["exact_additivity"] = float(np.max(np.abs(exact_ours.sum(axis=1) - (fx - fb))))

    out["scale_ours"] = float(np.mean(np.abs(exact_ours)))
    out["scale_stock"] = float(np.mean(np.abs(exact_stock)))
    out["scale_reference"] = float(np.mean(np.abs(exact_reference)))
    out["ours_shap_mae"] = float(np.mean(np.abs(ours_shap - exact_ours)))
    out["stock_shap_mae"] = float(np.mean(np.abs(stock_shap_values - exact_stock)))
    out["stock_shap_same_mae"] = float(np.mean(np.abs(first["stock_shap_same"][0] - exact_ours)))
    is_cat = np.array([space.categorical[g] or space.binary[g] for g in range(M)])
    for side, values in (("ours", ours_shap), ("stock", stock_shap_values)):
        gap = np.abs(values - exact_reference)
        out[f"{side}_reference_mae"] = float(gap.mean())
        out[f"{side}_reference_mae_kinds"] = (float(gap[:, ~is_cat].mean()), float(gap[:, is_cat].mean()))
    out["ours_lime_rho"] = mean_spearman(np.abs(ours_lime), np.abs(exact_reference_prob))
    out["stock_lime_rho"] = mean_spearman(np.abs(stock_lime_values), np.abs(exact_reference_prob))
    out["reference"] = len(Z_reference)
    out["summary_categories"] = [
        f"{space.names[g]} {len(np.unique(summary.data[:, g]))} of {len(space.groups[g])}"
        for g in range(M) if space.categorical[g]
    ]
    ours_summary = [
        f"{space.names[g]} {len(np.unique(Z_ours[:, g]))} of {len(space.groups[g])}"
        for g in range(M) if space.categorical[g]
    ]
    out["ours_categories"] = ours_summary
    out["background_ours"] = shap_result.baseline
    out["nsamples_ours"] = shap_result.settings.get("nsamples")
    out["device"] = str(device)
    return out


# ------------------------------------------------------------------ 3. KernelSHAP estimators


def wide_synthetic_dataset(rows: int, test_rows: int, seed: int):
    """12 standard-normal numeric features and 4 categorical ones (3 categories each): 16
    original features, so that exact enumeration (2^16 coalitions) stays cheap. The label is
    drawn from a logistic model with pairwise and three-way interactions."""
    rng = np.random.default_rng(seed)
    n = rows + test_rows
    num = rng.standard_normal((n, 12))
    cats = [rng.choice(["a", "b", "c"], n) for _ in range(4)]
    logit = (1.2 * num[:, 0] - num[:, 1] + 0.8 * num[:, 2] * num[:, 3] + np.sin(2 * num[:, 4])
             + 0.5 * np.abs(num[:, 5]) + 0.6 * num[:, 6] * num[:, 7] * num[:, 8] - 0.4 * num[:, 9] ** 2
             + 0.3 * num[:, 10] + np.select([cats[0] == "a", cats[0] == "b"], [1.0, -0.5], 0.0)
             + 0.7 * (cats[1] == "c") * num[:, 11] - 0.5 * (cats[2] == cats[3]))
    label = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame = pd.DataFrame(num, columns=[f"x{i}" for i in range(12)])
    for i, values in enumerate(cats):
        frame[f"c{i}"] = values
    frame["label"] = label
    spec = DatasetSpec(
        name="synthetic16", task="tabular", label="label", classes=("no", "yes"), favourable_label="yes",
        features=tuple(Feature(f"x{i}", "numeric") for i in range(12))
        + tuple(Feature(f"c{i}", "categorical") for i in range(4)),
        description="synthetic: 12 numeric + 4 categorical features",
    )
    train, test = frame.iloc[:rows].reset_index(drop=True), frame.iloc[rows:].reset_index(drop=True)
    return tabular_dataset(spec, train, test, sha256="synthetic16")


def evaluations_to_reach(evaluations: list[float], errors: list[float], target: float) -> float | None:
    """Model evaluations per row at which ``errors`` (falling with ``evaluations``) first reach
    ``target``, interpolated linearly in log-log between the grid points around it; None when
    the grid never reaches it. Below the grid's first point: that point (an upper bound)."""
    points = sorted(zip(evaluations, errors))
    for i, (x, e) in enumerate(points):
        if e <= target:
            if i == 0:
                return x
            (x0, e0) = points[i - 1]
            t = (math.log(e0) - math.log(target)) / (math.log(e0) - math.log(e))
            return math.exp(math.log(x0) + t * (math.log(x) - math.log(x0)))
    return None


ESTIMATOR_DATA = ("german", "adult", "synthetic16")
CACHE_DIR = Path(os.environ.get("SCRUTINY_BENCH_CACHE", "/tmp/scrutiny-bench"))


def estimator_model(args):
    """The data set and MLP of the estimators part: ``train_on(data, "mlp", seed=0)``, the trained
    module cached under ``CACHE_DIR`` keyed by data set hash and settings (Adult's takes minutes)."""
    if args.estimator_data == "synthetic16":
        dataset = wide_synthetic_dataset(args.rows, 1000, args.seed)
        overrides = {"epochs": args.epochs}
    else:
        try:
            dataset = load_dataset(args.estimator_data)
        except DataError as error:
            print(f"error: --estimator-data {args.estimator_data}: {error}")
            sys.exit(2)
        overrides = {}
    key = hashlib.sha256(f"{dataset.sha256}|mlp|seed=0|{sorted(overrides.items())}|{torch.__version__}".encode()).hexdigest()[:16]
    path = CACHE_DIR / f"{args.estimator_data}-mlp-{key}"
    start = time.perf_counter()
    if path.exists():  # a safetensors + JSON checkpoint: nothing in the cache is unpickled
        loaded = load_model(path, dataset=dataset)
        model, accuracy = loaded.model, float(loaded.manifest["metrics"]["accuracy"])
        how = f"loaded from {path}"
    else:
        trained = train_on(dataset, "mlp", seed=0, progress=False, device=args.device, **overrides)
        model, accuracy = trained.model.cpu().eval(), trained.metrics["accuracy"]
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, model=model, dataset=dataset, metrics=trained.metrics, training=overrides, seed=0)
        how = f"trained through train_on (cached in {path})"
    print(f"{args.estimator_data} MLP ({len(dataset.train.X)} training rows, {dataset.preprocessor.n_encoded} encoded "
          f"columns): {how} in {time.perf_counter() - start:.1f} s (test accuracy {accuracy:.3f})")
    return dataset, model.eval()


def reduced_exact_shapley(logits_fn, Z: np.ndarray, target: np.ndarray, Z_background: np.ndarray) -> np.ndarray:
    """Interventional Shapley values (explained output) by enumeration, each background row's
    game over the features where it and the row differ: the others are null players of
    v_b(S) = f(x_S, b_¬S) (adding one leaves the model input as it was), so enumerating the
    2^m_b coalitions of the m_b differing features gives the same values as all 2^M (checked
    against :func:`exact_shapley` on ``--exact-check-rows`` rows)."""
    n, M = Z.shape
    K = len(Z_background)
    phi = np.zeros((n, M))
    for i in range(n):
        t = int(target[i])
        for b in range(K):
            differ = np.flatnonzero(Z[i] != Z_background[b])
            m = len(differ)
            if m == 0:
                continue
            masks = ((np.arange(2 ** m)[:, None] >> np.arange(m)) & 1).astype(bool)
            rows = np.repeat(Z_background[b][None], 2 ** m, axis=0)
            rows[:, differ] = np.where(masks, Z[i, differ], Z_background[b, differ])
            v = explained(logits_fn(rows))[:, t]
            sizes = masks.sum(axis=1)
            kernel = np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)])
            for q, j in enumerate(differ):
                off = np.flatnonzero(~masks[:, q])
                phi[i, j] += np.sum(kernel[sizes[off]] * (v[off + (1 << q)] - v[off])) / K
    return phi


def cached_exact(model, logits_fn, Z, target, Z_background, check_rows: int):
    """Exact values, cached in ``CACHE_DIR`` as .npz keyed by the model's weights and the rows."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    for array in (Z, target, Z_background):
        digest.update(np.ascontiguousarray(array).tobytes())
    path = CACHE_DIR / f"exact-{digest.hexdigest()[:20]}.npz"
    if path.exists():
        cached = np.load(path)
        return cached["phi"], f"loaded from {path} (computed in {float(cached['seconds']):.0f} s; {cached['check']})"
    start = time.perf_counter()
    phi = reduced_exact_shapley(logits_fn, Z, target, Z_background)
    seconds = time.perf_counter() - start
    check = "no full 2^M check"
    if check_rows:
        start = time.perf_counter()
        full, _ = exact_shapley(logits_fn, Z[:check_rows], target[:check_rows], Z_background)
        gap = float(np.abs(full - phi[:check_rows]).max())
        check = (f"full 2^{Z.shape[1]} enumeration of {check_rows} row(s) agrees to {gap:.1e} "
                 f"({time.perf_counter() - start:.0f} s)")
        if gap > 1e-6 * (1 + np.abs(full).max()):
            print(f"error: reduced and full enumerations disagree by {gap:.2e}")
            sys.exit(1)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(path, phi=phi, seconds=seconds, check=check)
    return phi, f"computed in {seconds:.0f} s, cached in {path}; {check}"


def bench_estimators(args, device_request: str) -> dict:
    """Error against exact Shapley values as a function of model evaluations per row: shap's
    KernelExplainer (l1_reg=False), attribute(kernel_shap) with each estimator, on the same rows,
    the same background rows and the same explained output (log-odds of the predicted class),
    over an nsamples grid and ``--estimator-seeds`` seeds."""
    import shap

    rows_wanted = args.estimator_rows or (40 if args.estimator_data == "synthetic16" else 20)
    background_wanted = args.estimator_background or (20 if args.estimator_data == "synthetic16" else 10)
    print(f"\n== 3. KernelSHAP estimators on {args.estimator_data}: error vs model evaluations, {rows_wanted} rows")
    dataset, model = estimator_model(args)
    space, inputs, train_rows, device = explained_rows(model, dataset, rows_wanted, args.seed, device_request)
    M = space.n_features
    picked = np.sort(np.random.default_rng(args.seed).choice(len(train_rows), background_wanted, replace=False))
    background = train_rows[picked]
    logits_fn = make_logits(model, space, device)
    Z, Z_background = space.to_codes(inputs), space.to_codes(background)
    target = explained(logits_fn(Z)).argmax(axis=1)
    differing = (Z[:, None, :] != Z_background[None]).sum(axis=2)
    exact, exact_how = cached_exact(model, logits_fn, Z, target, Z_background, args.exact_check_rows)
    print(f"exact Shapley values over {len(background)} background rows ({M} features; a row and a background row "
          f"differ in {differing.min()}-{differing.max()}, median {np.median(differing):.0f}): {exact_how}")
    counter = RowCounter(model)

    def f(z):  # both ExplainedOutput columns, as a model's outputs
        return explained(logits_fn(z))

    explainer = shap.KernelExplainer(f, Z_background)

    def stock_shap(budget: int, seed: int, **l1_reg) -> tuple[np.ndarray, np.ndarray | None]:
        values = np.zeros((len(Z), M))
        for i in range(len(Z)):
            np.random.seed(seed * 100_003 + i)  # shap draws from numpy's global generator
            with warnings.catch_warnings():  # shap warns of a singular regression at the smallest budgets
                warnings.simplefilter("ignore")
                phi = explainer.shap_values(Z[i:i + 1], nsamples=budget, silent=True, **l1_reg)
            values[i] = np.asarray(phi)[0, :, target[i]] if not isinstance(phi, list) else phi[target[i]][0]
        return values, None

    def ours(budget: int, seed: int, estimator: str) -> tuple[np.ndarray, np.ndarray | None]:
        result = attribute(model, inputs, method="kernel_shap", space=space, background=train_rows,
                           baselines=background, target=target, n_samples=budget, seed=seed, estimator=estimator)
        values = result.by_feature(space)
        assert result.error is not None
        return values, np.nan_to_num(result.error) * np.abs(values).max(axis=1)  # the sampling error, in value units

    runs: dict[str, Callable[[int, int], tuple[np.ndarray, np.ndarray | None]]] = {
        "shap KernelExplainer(l1_reg=False)": lambda b, s: stock_shap(b, s, l1_reg=False)}
    for name in args.estimators:
        runs[f"scrutiny estimator='{name}'"] = functools.partial(ours, estimator=name)
    default = 2 * M + 2048
    grid = sorted({b for b in (2 * M + 2, 64, 128, 256, 512, 1024, default, 4096, 8192, 16384) if b < 2**M - 2})
    curves: dict[str, list[tuple[int, float, float, float]]] = {name: [] for name in runs}
    bracket: dict[str, float] = {}
    for budget in grid:
        for name, run in runs.items():
            errors, evaluations, seconds, shares = [], [], [], []  # type: list[float], list[float], list[float], list[float]
            for seed in range(args.estimator_seeds):
                counter.take()
                start = time.perf_counter()
                values, estimated = run(budget, seed)
                seconds.append(time.perf_counter() - start)
                evaluations.append(counter.take() / len(Z))
                errors.append(float(np.mean(np.abs(values - exact))))
                if estimated is not None:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        ratio = np.abs(values - exact).max(axis=1) / estimated
                    shares.append(float(np.mean((ratio >= 0.5) & (ratio <= 2.0))))
            curves[name].append((budget, float(np.mean(evaluations)), float(np.mean(errors)), float(np.mean(seconds))))
            if budget == default and shares:
                bracket[name] = float(np.mean(shares))
        print(f"  nsamples {budget:>5}: " + "  ".join(f"{name.split()[-1]} {curves[name][-1][2]:.2e}" for name in runs),
              flush=True)
    counter.take()
    start = time.perf_counter()
    auto = [float(np.mean(np.abs(stock_shap(default, s)[0] - exact))) for s in range(args.estimator_seeds)]  # its default l1_reg
    auto_s = (time.perf_counter() - start) / args.estimator_seeds
    counter.handle.remove()
    return {"curves": curves, "default": default, "scale": float(np.mean(np.abs(exact))), "features": M,
            "rows": len(Z), "background": len(background), "seeds": args.estimator_seeds, "data": args.estimator_data,
            "shap_auto_mae": float(np.mean(auto)), "shap_auto_s": auto_s, "bracket": bracket, "device": str(device)}


def report_estimators(out: dict) -> None:
    print(f"\nKernelSHAP estimators on {out['rows']} {out['data']} test rows, {out['features']} original features, "
          f"{out['background']} background rows ({out['device']}); mean absolute error per feature against exact "
          f"Shapley values (mean |phi| {out['scale']:.3f}), mean over {out['seeds']} seeds")
    names = list(out["curves"])
    header = f"{'nsamples':>8}  " + "  ".join(f"{name:>36}" for name in names)
    print(header)
    print(f"{'':>8}  " + "  ".join(f"{'evals/row':>12} {'MAE':>10} {'seconds':>12}" for _ in names))
    print("-" * len(header))
    for i, (budget, *_) in enumerate(out["curves"][names[0]]):
        print(f"{budget:>8}  " + "  ".join(
            f"{out['curves'][n][i][1]:>12,.0f} {out['curves'][n][i][2]:>10.2e} {out['curves'][n][i][3]:>12.2f}"
            for n in names))
    stock = out["curves"][names[0]]
    at_default = next(row for row in stock if row[0] == out["default"])
    target_error = at_default[2]
    print(f"\nstock shap at its default nsamples = 2M + 2048 = {out['default']}: MAE {target_error:.2e} "
          f"({at_default[1]:,.0f} model evaluations per row, {at_default[3]:.2f} s); with its default "
          f"l1_reg='num_features(10)' instead: MAE {out['shap_auto_mae']:.2e} ({out['shap_auto_s']:.2f} s)")
    same_budget = {n: next(row for row in out["curves"][n] if row[0] == out["default"]) for n in names}
    for name in names:
        curve = out["curves"][name]
        needed = evaluations_to_reach([r[1] for r in curve], [r[2] for r in curve], target_error)
        seconds = None
        if needed is not None:
            seconds = math.exp(np.interp(math.log(needed), np.log([r[1] for r in curve]), np.log([r[3] for r in curve])))
        ratio = "" if needed is None else f", {at_default[1] / needed:.2f}x fewer than stock shap"
        time_text = "" if seconds is None else f", about {seconds:.2f} s for the {out['rows']} rows"
        reach = "not reached on the grid" if needed is None else f"{needed:,.0f} evaluations per row"
        bracket = out["bracket"].get(name)
        bracket_text = "" if bracket is None else (f"; its error estimate within a factor 2 of the true largest "
                                                   f"error for {bracket:.0%} of rows")
        print(f"- {name}: reaches that error at {reach}{ratio}{time_text}; at the same nsamples its MAE is "
              f"{same_budget[name][2]:.2e} ({target_error / same_budget[name][2]:.2f}x lower than stock shap, "
              f"{same_budget[name][1]:,.0f} evaluations per row, {same_budget[name][3]:.2f} s){bracket_text}")
    print("notes: evaluations per row are the rows the model's forward saw (coalitions x background rows, plus "
          "the explained row and, for scrutiny, the background once per call), divided by the rows explained; "
          "the crossing is interpolated in log-log between grid points (the first grid point when already below). "
          "Times are wall seconds per call for all the rows (shap: row by row).")


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=500, help="Adult test rows for integrated gradients (default: 500)")
    parser.add_argument("--explain-rows", type=int, default=50,
                        help="synthetic test rows explained by KernelSHAP and LIME (default: 50)")
    parser.add_argument("--rows", type=int, default=4000, help="training rows of the synthetic table (default: 4000)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs for the synthetic MLP (default: 20)")
    parser.add_argument("--reference-rows", type=int, default=50,
                        help="plain training rows of the reference exact Shapley values (default: 50)")
    parser.add_argument("--batch-size", type=int, default=256, help="attribute()'s batch_size (default: 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side; the best counts (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the row samples and the methods (default: 0)")
    parser.add_argument("--skip", choices=["ig", "shap"], action="append", default=[], help="leave out a part")
    parser.add_argument("--part", choices=["ig", "shap", "estimators"], action="append",
                        help="run only these parts (default: ig and shap; 'estimators' runs only when asked)")
    parser.add_argument("--estimator-data", choices=ESTIMATOR_DATA, default="german",
                        help="model of the estimators part: the German credit or Adult MLP, or a synthetic "
                             "16-feature MLP (default: german)")
    parser.add_argument("--estimators", nargs="+", choices=["stock", "leverage", "per_background"],
                        default=["stock", "leverage", "per_background"],
                        help="scrutiny estimators compared (default: all)")
    parser.add_argument("--estimator-rows", type=int,
                        help="test rows of the estimators part (default: 20; synthetic16: 40)")
    parser.add_argument("--estimator-background", type=int,
                        help="background rows of the estimators part (default: 10; synthetic16: 20)")
    parser.add_argument("--exact-check-rows", type=int, default=1,
                        help="rows whose exact values are also enumerated over all 2^M coalitions, as a check "
                             "(default: 1; 0: none)")
    parser.add_argument("--estimator-seeds", type=int, default=3,
                        help="seeds per budget in the estimators part (default: 3)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here: running on CPU (attribute() runs on CPU)")
        args.device = "cpu"
    for name in ("samples", "explain_rows", "rows", "epochs", "batch_size", "repeats", "reference_rows",
                 "estimator_rows", "estimator_background", "estimator_seeds"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    hardware = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"{versions(LIBRARIES)}; {hardware}; best of {args.repeats} runs per timing")
    total = time.perf_counter()

    parts = set(args.part or ["ig", "shap"]) - set(args.skip)
    ig = bench_integrated_gradients(args, args.device) if "ig" in parts else None
    ks = bench_kernel_shap_lime(args, args.device) if "shap" in parts else None
    estimators = bench_estimators(args, args.device) if "estimators" in parts else None

    if ig:
        print(f"\nIntegrated gradients on {ig['samples']} Adult test rows ({ig['device']}); steps used "
              f"(final level: samples) {ig['steps_used']}")
        print(f"the passes: {ig['rows']:,} interpolated rows in {ig['batches']} batches "
              f"(every refinement level a sample went through)")
        header = f"{'run':<58} {'seconds':>8} {'/ bare':>8} {'target':>8}"
        print(header)
        print("-" * len(header))
        print(f"{'ours: attribute(method=integrated_gradients)':<58} {ig['ours']:>8.3f} {ig['ratio']:>7.2f}x {'<= 1.15':>8}")
        print(f"{'stock: captum IntegratedGradients, same rows/steps/batches':<58} {ig['captum']:>8.3f} "
              f"{ig['captum'] / ig['raw']:>7.2f}x")
        print(f"{'bare: forward + autograd.grad, same rows/batches':<58} {ig['raw']:>8.3f} {1:>7.2f}x")
        print(f"samples within {ig['tolerance']:.0%} completeness: {ig['within']:.1%} "
              f"(largest relative gap {ig['max_rel_gap']:.2g})")

    if ks:
        print(f"\nKernelSHAP and LIME on {ks['rows']} synthetic test rows, {ks['features']} original features "
              f"({ks['device']})")
        header = (f"{'method':<11} {'run':<44} {'seconds':>8} {'ms/row':>7} {'stock/ours':>10} "
                  f"{'model rows':>11}  error vs exact Shapley")
        print(header)
        print("-" * len(header))

        def line(method, label, seconds, rows, ratio, error):
            ratio_text = f"{ratio:>9.2f}x" if ratio is not None else f"{'':>10}"
            print(f"{method:<11} {label:<44} {seconds:>8.3f} {1000 * seconds / ks['rows']:>7.1f} {ratio_text} "
                  f"{rows:>11,}  {error}")

        line("KernelSHAP", f"ours: attribute(kernel_shap), {ks['background_ours']}", ks["ours_shap_s"],
             ks["ours_shap_rows"], None,
             f"MAE {ks['ours_shap_mae']:.2e} (mean |phi| {ks['scale_ours']:.3f})")
        line("KernelSHAP", "stock: KernelExplainer(kmeans(train, 10)) per row", ks["stock_shap_s"],
             ks["stock_shap_rows"], ks["stock_shap_s"] / ks["ours_shap_s"],
             f"MAE {ks['stock_shap_mae']:.2e} (mean |phi| {ks['scale_stock']:.3f})")
        line("KernelSHAP", "stock: KernelExplainer(ours' background) per row", ks["stock_shap_same_s"],
             ks["stock_shap_same_rows"], ks["stock_shap_same_s"] / ks["ours_shap_s"],
             f"MAE {ks['stock_shap_same_mae']:.2e} (same work as ours)")
        line("LIME", "ours: attribute(lime)", ks["ours_lime_s"], ks["ours_lime_rows"], None,
             f"Spearman rho {ks['ours_lime_rho']:.3f}")
        line("LIME", "stock: LimeTabularExplainer.explain_instance", ks["stock_lime_s"], ks["stock_lime_rows"],
             ks["stock_lime_s"] / ks["ours_lime_s"], f"Spearman rho {ks['stock_lime_rho']:.3f}")
        line("LIME", "stock: explain_instance, ours' settings", ks["stock_lime_same_s"], ks["stock_lime_same_rows"],
             ks["stock_lime_same_s"] / ks["ours_lime_s"], f"(same weights as ours: max gap {ks['lime_same_gap']:.1e})")
        line("exact", f"enumeration, 2^{ks['features']} coalitions x ours' background", ks["exact_ours_s"],
             ks["exact_ours_rows"], None, f"(check: |sum phi - (f(x) - E f(b))| <= {ks['exact_additivity']:.1e})")
        line("exact", f"enumeration, 2^{ks['features']} coalitions x kmeans(10) summary", ks["exact_stock_s"],
             ks["exact_stock_rows"], None, "")
        line("exact", f"enumeration, 2^{ks['features']} coalitions x {ks['reference']} train rows",
             ks["exact_reference_s"], ks["exact_reference_rows"], None, "(reference, no summary)")
        print("target: stock/ours >= 10x")
        print("notes:")
        print(f"- KernelSHAP explains the log-odds of the predicted class; its MAE is per feature, against exact "
              f"interventional Shapley values over that run's own background (ours: {ks['background_ours']}; "
              f"stock: shap.kmeans(train codes, 10), weighted).")
        print(f"- against exact values over {ks['reference']} plain training rows (mean |phi| "
              f"{ks['scale_reference']:.3f}) the MAE is ours {ks['ours_reference_mae']:.2e} (numeric features "
              f"{ks['ours_reference_mae_kinds'][0]:.2e}, categorical {ks['ours_reference_mae_kinds'][1]:.2e}), stock "
              f"{ks['stock_reference_mae']:.2e} (numeric {ks['stock_reference_mae_kinds'][0]:.2e}, categorical "
              f"{ks['stock_reference_mae_kinds'][1]:.2e}): what each run's background choice costs. Categories of each "
              f"categorical feature present in the background: ours {', '.join(ks['ours_categories'])}; stock "
              f"{', '.join(ks['summary_categories'])} (k-means centres are snapped to values seen in the data).")
        print(f"- LIME is not an estimator of Shapley values: it fits a local linear surrogate of the predicted "
              f"class's probability. Its figure is the mean per-row Spearman rank correlation of |LIME weights| "
              f"with |exact Shapley values of that probability| over the {ks['reference']} plain training rows: "
              f"agreement of feature rankings, not an error.")
        print("- stock LIME runs with its defaults (quartile-discretised numeric features); ours with "
              "discretize_continuous=False. Both draw 5000 perturbations per row. 'ours' settings' is the same work as "
              "ours, row by row: LimeTabularExplainer(discretize_continuous=False, binary features categorical, same "
              "random_state) with attribute()'s model call; its gap is max |weight difference| / max |weight|.")
        print("- 'model rows' counts the rows fed to the model's forward (per run).")
    if estimators:
        report_estimators(estimators)
    print(f"\ntotal wall time {time.perf_counter() - total:.0f} s")
    if ig is None and "ig" in parts:
        sys.exit(1)


if __name__ == "__main__":
    main()
