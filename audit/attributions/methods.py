"""Attributions: why the model decides as it does, per sample and overall.

One entry point, :func:`attribute`, runs any of the methods in :data:`METHODS` and returns
one result type, :class:`Attribution`. Each method is declared once, with its library,
data types, need for gradients, additivity and error figure, in :mod:`.registry`:

========================  =========  ====================================================
method                    library    error figure recorded per sample
========================  =========  ====================================================
``integrated_gradients``  captum [+]_ convergence delta: Σ attributions − (f(x) − f(b))
``saliency``              captum     —
``input_x_gradient``      captum     —
``deeplift``              captum     convergence delta
``gradient_shap``         captum     convergence delta (expected over baseline draws)
``feature_ablation``      captum     — (one original feature / image patch at a time)
``occlusion``             captum     — (images: sliding 2×2 window)
``kernel_shap``           shap [*]_  sampling error: estimated largest error over features /
                                      largest |value| (0 when all coalitions are enumerated)
``shap_gradient``         shap       additivity gap (expected gradients)
``lime``                  lime [#]_  1 − R² of LIME's local linear fit
========================  =========  ====================================================

.. [+] captum's Gauss–Legendre integrated gradients, computed in one batched pass per chunk
   in :mod:`.integrated_gradients` (tested equal to captum).
.. [*] KernelSHAP batched across rows in :mod:`.kernel_shap`, by default solving each
   background row's game over the features where it and the row differ
   (``estimator="per_background"``, more accurate per model evaluation), or with one coalition
   design for every row: paired leverage-score sampling without replacement
   (``estimator="leverage"``) or shap's own sampler (``estimator="stock"``); tested equal to
   shap's values where both enumerate all coalitions,
   and as accurate where both sample. Its values add up to
   f(x) − E f(background) by construction, so their error figure is how far the sampled
   coalitions may leave them from the exact Shapley values: the posterior spread
   (``per_background``) or a bootstrap over the sampler's draws, no extra model evaluations
   (:mod:`.kernel_shap`). NaN for a row whose largest
   |value| is below ``ATTRIBUTION_FLOOR`` (nothing to be wrong about).
.. [#] tabular LIME is batched across rows in :mod:`.lime_tabular`: lime's own sampler
   draws each row's perturbations (the same draws as ``explain_instance``), one model call
   scores a chunk of rows, and a closed-form weighted ridge replaces sklearn's per row;
   tested equal to ``explain_instance`` row by row.

What is explained: for a binary model the log-odds of the target class (z_t − z_other),
for more classes the target class's logit; LIME explains probabilities, lime's own choice,
or that score with ``lime_target="log_odds"``. The result records which (``output``). The target defaults to the predicted class.

Baselines are explicit and recorded: ``"zeros"``, ``"train_mean"`` (mean of the training
inputs) or ``"train_sample"`` (a seeded sample of training rows, for the SHAP methods), or an
array. Tabular KernelSHAP and LIME perturb original features (a categorical feature takes
another row's category, never a fraction of a one-hot block); image KernelSHAP and LIME
switch 2×2 patches to the baseline.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from scrutiny.audit.attributions.feature_space import FeatureSpace
from scrutiny.audit.attributions.kernel_shap import ESTIMATORS as KERNEL_SHAP_ESTIMATORS
from scrutiny.audit.attributions.registry import LIME_TARGETS, METHOD_INFO, METHODS, default_baseline, methods_for
from scrutiny.audit.run.executor import chunk_seed
from scrutiny.errors import InputError
from scrutiny.modality import modality

__all__ = ["METHODS", "PER_ROW_BASELINES", "Attribution", "attribute", "ExplainedOutput", "batched_outputs",
           "check_request", "default_baseline", "resolve_baseline", "to_device"]

# below this largest |attribution| (in the explained output's units) a row has nothing to explain
ATTRIBUTION_FLOOR = 1e-4
# methods that read a baseline array of one row per input row that way (the others: a distribution)
PER_ROW_BASELINES = ("integrated_gradients", "deeplift", "feature_ablation", "occlusion")


@dataclass
class Attribution:
    """Attributions of one method for a batch of inputs.

    Attributes:
        method: one of :data:`METHODS`.
        values: array shaped like the inputs.
        target: class explained for each sample, shape (N,).
        output: ``"log_odds"``, ``"logit"`` or ``"probability"``.
        baseline: how the baseline was chosen (``"train_mean"``, ``"train_sample(k=50)"``, …).
        baseline_values: the baseline input(s), shape (k, *input_shape).
        error: the method's own error figure per sample (None where it has none).
        error_name: what ``error`` is.
        output_change: f(x) − f(baseline) per sample (mean over baseline rows), what the
            attributions of completeness-type methods should add up to; None otherwise.
        seconds: wall time.
        settings: method settings (steps, samples, seed, …).
        local_intercept: LIME only: its local linear model's intercept per sample, (N,).
        local_terms: LIME only: that model's terms at the explained input, weight × the input as
            the model reads it, per interpretable feature, (N, n_features): the intercept plus the
            terms is LIME's own prediction at x (``local_pred``), which misses f(x) by its misfit.
    """

    method: str
    values: np.ndarray
    target: np.ndarray
    output: str
    baseline: str
    baseline_values: np.ndarray
    error: np.ndarray | None
    error_name: str | None
    output_change: np.ndarray | None
    seconds: float
    settings: dict = field(default_factory=dict)
    local_intercept: np.ndarray | None = None
    local_terms: np.ndarray | None = None

    @property
    def relative_error(self) -> np.ndarray | None:
        """|error| / |f(x) − f(baseline)| per sample, for completeness-type methods."""
        if self.error is None or self.output_change is None:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(self.error) / np.abs(self.output_change)

    def by_feature(self, space: FeatureSpace) -> np.ndarray:
        """Attributions per interpretable feature, (N, n_features): summed over each
        original feature's one-hot columns or each patch."""
        return space.sum_by_feature(self.values)


class ExplainedOutput(nn.Module):
    """Wraps a classifier so that output ``t`` is what is explained for target ``t``: the
    log-odds of class ``t`` for a binary model, the logit otherwise (see module docstring)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if logits.shape[1] == 2:
            margin = logits[:, 1] - logits[:, 0]
            return torch.stack([-margin, margin], dim=1)
        return logits

    @staticmethod
    def name(n_classes: int) -> str:
        return "log_odds" if n_classes == 2 else "logit"


def attribute(
    model: nn.Module,
    inputs: np.ndarray,
    *,
    method: str,
    space: FeatureSpace,
    background: np.ndarray,
    target: np.ndarray | None = None,
    baselines: str | np.ndarray | None = None,
    n_steps: int = 64,
    max_steps: int = 1024,
    tolerance: float = 0.01,
    n_samples: int | None = None,
    n_background: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    estimator: str = "per_background",
    lime_target: str = "probability",
) -> Attribution:
    r"""Attributions of ``model``'s decisions on ``inputs`` by ``method``.

    Args:
        model: a classifier returning logits (N, n_classes), on the CPU or a GPU (inputs
            follow it). Put in eval mode for the call; its ``.grad`` are left untouched.
        inputs: encoded inputs, (N, *input_shape).
        method: one of :data:`METHODS`.
        space: the interpretable features (original features or image patches).
        background: encoded training inputs, for baselines and the SHAP/LIME background.
        target: class to explain per sample. Default: the predicted class.
        baselines: ``"zeros"``, ``"train_mean"``, ``"train_sample"`` or an array
            (1 or k, *input_shape). Default: :func:`default_baseline`.
        n_steps: integration steps of integrated gradients (Gauss–Legendre).
            Default: 64
        max_steps: integrated gradients doubles the steps of each sample whose completeness
            gap exceeds ``tolerance`` × |f(x) − f(baseline)|, up to this many.
            Default: 1024
        tolerance: the relative completeness gap integrated gradients aims for.
            Default: 0.01
        n_samples: samples per explanation: baseline draws of GradientSHAP (default 32),
            shap's expected-gradients samples (200), KernelSHAP coalitions (shap's "auto"),
            LIME perturbations (lime's 5000).
        n_background: background rows for the sample baselines. Default: the method's
            ``n_background`` in :mod:`.registry` (50 for KernelSHAP, 100 otherwise).
        batch_size: samples per chunk, so that memory stays bounded on large inputs.
            Default: 256
        seed: seeds every random draw: each row's own for GradientSHAP and shap's expected
            gradients (from ``seed`` and the row's place), the call's coalition design for
            KernelSHAP, the call's sampler for LIME (rows drawn one after another). So a row's draws
            depend on ``seed`` and the rows of the call, never on ``batch_size``.
            Default: 0
        progress: show a progress bar over chunks / samples.
        estimator: KernelSHAP's estimator: ``"per_background"`` (each background row's game
            over the features where it and the row differ, sampled by paired leverage scores
            without replacement and solved as the posterior mean under a prior on the game's
            Walsh coefficients; on the German credit MLP at shap's default budget 5.3 times
            closer to exact Shapley values than shap's ``KernelExplainer``, with fewer model
            evaluations: :mod:`.kernel_shap`), ``"leverage"`` (the same sampling, one design
            over all features) or ``"stock"`` (shap's sampler: shap's coalitions for a seed).
            Other methods ignore it.
            Default: "per_background"
        lime_target: what LIME's local linear model fits: ``"probability"`` (lime's own choice,
            the target class's probability) or ``"log_odds"`` (the score the other methods
            explain: the log-odds of a binary model, the logit of a multi-class one), so that its
            weights are on their scale. Recorded as the attribution's ``output``. Other methods
            ignore it.
            Default: "probability"

    Example:
        >>> data = load_dataset("breast_cancer")  # doctest: +SKIP
        >>> model = train_on(data, progress=False).model  # doctest: +SKIP
        >>> x = data.preprocessor.transform(data.test.X[:8])  # doctest: +SKIP
        >>> background = data.preprocessor.transform(data.train.X)  # doctest: +SKIP
        >>> a = attribute(model, x, method="integrated_gradients", space=tabular_space(data.preprocessor),
        ...               background=background)  # doctest: +SKIP
        >>> a.values.shape, float(abs(a.relative_error).max()) < 0.01  # doctest: +SKIP
        ((8, 30), True)
    """
    check_request(model, inputs, method=method, space=space, gradients=False)
    probability = lime_target == "probability" if method == "lime" else METHOD_INFO[method].explains == "probability"
    if method == "lime" and lime_target not in LIME_TARGETS:
        raise InputError(f"lime_target must be one of {', '.join(map(repr, LIME_TARGETS))}; got {lime_target!r}")
    if method == "kernel_shap" and estimator not in KERNEL_SHAP_ESTIMATORS:
        raise InputError(f"estimator must be one of {', '.join(map(repr, KERNEL_SHAP_ESTIMATORS))} for kernel_shap; "
                         f"got {estimator!r}")
    info = METHOD_INFO[method]
    inputs = np.asarray(inputs, dtype=np.float32)
    background = np.asarray(background, dtype=np.float32)
    was_training = model.training
    wrapped = ExplainedOutput(model).eval()
    try:
        logits = batched_outputs(wrapped, inputs, batch_size)
        n_classes = logits.shape[1]
        if target is None:
            target = logits.argmax(axis=1)
        else:
            target = np.broadcast_to(np.asarray(target, dtype=np.int64), (len(inputs),)).copy()
            if target.min() < 0 or target.max() >= n_classes:
                raise InputError(f"target classes must lie in 0..{n_classes - 1}; got {sorted(set(target.tolist()))[:5]}")
        if info.needs_gradients:
            _check_input_gradients(wrapped, inputs, method, space.kind)
        baseline_name, base = resolve_baseline(method, space, background, baselines, n_background=n_background,
                                               seed=seed)
        start = time.perf_counter()
        runner = _RUNNERS[method]
        with warnings.catch_warnings(), _global_generators_kept(wrapped):
            # captum announces the hooks DeepLift sets on activations at every call
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
            values, error, error_name, settings, *local = runner(
                wrapped, inputs, target, base, space=space, background=background, n_steps=n_steps,
                max_steps=max_steps, tolerance=tolerance, n_samples=n_samples, batch_size=batch_size, seed=seed,
                progress=progress, estimator=estimator, lime_target=lime_target,
            )  # LIME adds its local models' intercepts and terms
        seconds = time.perf_counter() - start
        output_change = None
        if info.additivity in ("checked", "expected"):
            reference = batched_outputs(wrapped, base, batch_size).mean(axis=0)
            output_change = logits[np.arange(len(inputs)), target] - reference[target]
    finally:
        model.train(was_training)
    return Attribution(
        method=method,
        values=np.asarray(values, dtype=np.float64).reshape(inputs.shape),
        target=target,
        output="probability" if probability else ExplainedOutput.name(n_classes),
        baseline=baseline_name,
        baseline_values=base,
        error=None if error is None else np.asarray(error, dtype=np.float64),
        error_name=error_name,
        output_change=output_change,
        seconds=seconds,
        settings={"seed": seed, **settings},
        local_intercept=local[0] if local else None,
        local_terms=local[1] if local else None,
    )


def check_request(model: nn.Module, inputs: np.ndarray, *, method: str, space: FeatureSpace,
                  gradients: bool = True) -> None:
    """Refuse, before any work, what :func:`attribute` cannot do: ``model`` not a module, an
    unknown ``method``, one that does not explain ``space``'s data, inputs of another shape, and
    (with ``gradients``) a model without input gradients for a method that needs them.

    Example:
        >>> check_request(model, x, method="occlusion", space=tabular_space(pre))  # doctest: +SKIP
        Traceback (most recent call last):
        scrutiny.errors.InputError: occlusion explains image data only; for tabular data use one of: ...
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if method not in METHODS:
        raise InputError(f"unknown attribution method '{method}'; expected one of: {', '.join(METHODS)}")
    info = METHOD_INFO[method]
    if space.kind not in info.modalities:
        raise InputError(f"{method} explains {' and '.join(info.modalities)} data only; for {space.kind} data use "
                         f"one of: {', '.join(methods_for(space.kind))}")
    shape = np.shape(inputs)
    if tuple(shape[1:]) != tuple(space.input_shape):
        raise InputError(f"inputs have shape {tuple(shape[1:])}, the model reads {tuple(space.input_shape)}")
    if gradients and info.needs_gradients and len(inputs):
        was_training = model.training
        try:
            _check_input_gradients(ExplainedOutput(model).eval(), np.asarray(inputs[:1], dtype=np.float32), method,
                                   space.kind)
        finally:
            model.train(was_training)


def resolve_baseline(method: str, space: FeatureSpace, background: np.ndarray,
                     baselines: str | np.ndarray | None = None, *, n_background: int | None = None,
                     seed: int = 0) -> tuple[str, np.ndarray]:
    """The baseline :func:`attribute` gives ``method`` (its name and inputs, (k, *input_shape)):
    ``baselines`` as :func:`attribute` reads it, the sample baseline drawn with ``seed``.
    Computed once and passed to every chunk of a run, it is the same for every row.

    Example:
        >>> name, base = resolve_baseline("kernel_shap", space, background, seed=0)  # doctest: +SKIP
        >>> name, base.shape  # doctest: +SKIP
        ('train_sample(k=50)', (50, 102))
    """
    spec = baselines if baselines is not None else default_baseline(method, space.kind)
    background = np.asarray(background, dtype=np.float32)
    return _baseline(spec, background, space, n_background or METHOD_INFO[method].n_background, seed)


# ------------------------------------------------------------------ helpers


@contextmanager
def _global_generators_kept(model: nn.Module):
    """NumPy's and torch's global generators as they were before: captum's GradientShap and shap's
    GradientExplainer draw from them, seeded per row here, and the caller's streams stay theirs."""
    state = np.random.get_state()
    parameter = next(model.parameters(), None)
    devices = [parameter.device] if parameter is not None and parameter.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(state)


def _row_seeds(seed: int, n: int) -> list[int]:
    """A 32-bit seed per row, from the call's ``seed`` and the row's place: a row's draws do not
    depend on how many rows share a batch with it."""
    return [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(n)]


def to_device(array: np.ndarray, model: nn.Module) -> torch.Tensor:
    """``array`` as a tensor on the model's device (the GPU when the model is there)."""
    parameter = next(model.parameters(), None)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor if parameter is None else tensor.to(parameter.device)


def batched_outputs(model: nn.Module, inputs: np.ndarray, batch_size: int, *, probabilities: bool = False) -> np.ndarray:
    """Model outputs (softmax probabilities with ``probabilities``) of numpy inputs, in
    batches on the model's device, without gradients; float64."""
    with torch.no_grad():
        chunks = []
        for i in range(0, len(inputs), batch_size):
            out = model(to_device(np.asarray(inputs[i:i + batch_size], dtype=np.float32), model))
            chunks.append((torch.softmax(out, dim=1) if probabilities else out).double().cpu().numpy())
    return np.concatenate(chunks)


def _check_input_gradients(wrapped: nn.Module, inputs: np.ndarray, method: str, kind: str) -> None:
    """Refuse, before any work, a model whose outputs carry no gradient to its inputs (its
    forward runs under ``torch.no_grad``, detaches, or leaves torch): ``method`` needs one."""
    x = to_device(inputs[:1], wrapped).requires_grad_()
    with torch.enable_grad():
        carried = wrapped(x).requires_grad
    if not carried:
        gradient_free = [m for m in methods_for(kind) if not METHOD_INFO[m].needs_gradients]
        raise InputError(f"{method} needs the gradient of the model's outputs with respect to its inputs, and this "
                         f"model's outputs carry none (its forward runs under torch.no_grad, detaches or leaves "
                         f"torch); use a method that needs no gradients: {', '.join(gradient_free)}")


def _baseline(spec, background, space: FeatureSpace, k: int, seed: int) -> tuple[str, np.ndarray]:
    shape = tuple(space.input_shape)
    if isinstance(spec, np.ndarray):
        if spec.shape == shape:
            spec = spec[None]
        if spec.ndim != len(shape) + 1 or spec.shape[1:] != shape or len(spec) == 0:
            raise InputError(f"baseline array has shape {spec.shape}; expected {shape} or (k, {', '.join(map(str, shape))})")
        base = spec.astype(np.float32)
        return f"given(k={len(base)})", base
    if spec == "zeros":
        return "zeros", np.zeros((1, *shape), dtype=np.float32)
    if spec == "train_mean":
        return "train_mean", background.mean(axis=0, keepdims=True).astype(np.float32)
    if spec == "train_sample":
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(background), size=min(k, len(background)), replace=False)
        return f"train_sample(k={len(rows)})", background[np.sort(rows)]
    raise InputError(f"unknown baseline '{spec}'; expected zeros, train_mean, train_sample or an array")


def _chunks(n: int, size: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    starts = range(0, n, size)
    return tqdm(starts, desc=desc, unit="chunk", disable=not progress or len(starts) < 2)


def _captum(algorithm_cls, wrapped, inputs, target, base, *, batch_size, progress, kwargs, delta: bool):
    if "baselines" in kwargs and len(base) not in (1, len(inputs)):
        raise InputError(f"{algorithm_cls.__name__} takes one baseline or one per input row; "
                         f"got {len(base)} for {len(inputs)} rows")
    algorithm = algorithm_cls(wrapped)
    values = np.empty(inputs.shape, dtype=np.float64)  # filled chunk by chunk: one copy of the result
    deltas = np.empty(len(inputs)) if delta else None
    for i in _chunks(len(inputs), batch_size, progress, algorithm_cls.__name__):
        x = to_device(inputs[i:i + batch_size], wrapped).requires_grad_()
        t = to_device(target[i:i + batch_size], wrapped)
        call = dict(kwargs)
        if "baselines" in call and call["baselines"] is None:
            call["baselines"] = to_device(base if len(base) == 1 else base[i:i + batch_size], wrapped).expand_as(x)
        out = algorithm.attribute(x, target=t, return_convergence_delta=delta, **call) if delta else algorithm.attribute(x, target=t, **call)
        if deltas is not None:
            out, d = out
            deltas[i:i + len(x)] = d.detach().double().cpu().numpy().reshape(len(x), -1).mean(axis=1)
        values[i:i + len(x)] = out.detach().cpu().numpy()
    return values, deltas


def _integrated_gradients(wrapped, inputs, target, base, *, n_steps, max_steps, tolerance, batch_size, progress, **_):
    """Integrated gradients (batched, :mod:`.integrated_gradients`), refined where the integral
    has not converged: rows whose completeness gap exceeds ``tolerance`` × |f(x) − f(b)| are
    recomputed with twice the steps, up to ``max_steps`` (ReLU kinks slow quadrature down)."""
    from tqdm.auto import tqdm

    from scrutiny.audit.attributions.integrated_gradients import integrated_gradients

    if len(base) not in (1, len(inputs)):
        raise InputError(f"integrated gradients takes one baseline or one per input row; got {len(base)} for {len(inputs)} rows")
    fx = batched_outputs(wrapped, inputs, batch_size)[np.arange(len(inputs)), target]
    fb_all = batched_outputs(wrapped, base, batch_size)
    fb = fb_all[np.zeros(len(inputs), dtype=int) if len(base) == 1 else np.arange(len(inputs)), target]
    change = fx - fb
    values = np.empty(inputs.shape, dtype=np.float64)
    delta = np.empty(len(inputs))

    def run(rows: np.ndarray, steps: int) -> None:
        for i in tqdm(range(0, len(rows), batch_size), desc=f"IG {steps} steps", disable=not progress or len(rows) <= batch_size):
            chunk = rows[i:i + batch_size]
            b = base if len(base) == 1 else base[chunk]
            attr = integrated_gradients(wrapped, to_device(inputs[chunk], wrapped), to_device(b, wrapped),
                                        to_device(target[chunk], wrapped), n_steps=steps).double().cpu().numpy()
            values[chunk] = attr
            delta[chunk] = attr.reshape(len(chunk), -1).sum(axis=1) - change[chunk]

    rows = np.arange(len(inputs))
    run(rows, n_steps)
    steps = np.full(len(inputs), n_steps)
    level = n_steps
    while level < max_steps:
        # only the rows refined last round can still fail, all at the same level;
        # float32 sums cannot get much below 1e-5, however many steps are taken
        todo = rows[np.abs(delta) > np.maximum(tolerance * np.abs(change), 1e-5)]
        if not len(todo):
            break
        level = min(level * 2, max_steps)
        run(todo, level)
        steps[todo] = level
    settings = {"n_steps": n_steps, "max_steps": max_steps, "tolerance": tolerance, "integration": "gausslegendre",
                "steps_used": {int(k): int(v) for k, v in zip(*np.unique(steps, return_counts=True))}}
    return values, delta, "convergence_delta", settings


def _deeplift(wrapped, inputs, target, base, *, batch_size, progress, **_):
    from captum.attr import DeepLift

    values, delta = _captum(DeepLift, wrapped, inputs, target, base, batch_size=batch_size, progress=progress,
                            kwargs={"baselines": None}, delta=True)
    return values, delta, "convergence_delta", {}


def _gradient_only(cls_name):
    def run(wrapped, inputs, target, base, *, batch_size, progress, **_):
        import captum.attr

        kwargs = {"abs": False} if cls_name == "Saliency" else {}
        values, _ = _captum(getattr(captum.attr, cls_name), wrapped, inputs, target, base, batch_size=batch_size,
                            progress=progress, kwargs=kwargs, delta=False)
        return values, None, None, {}
    return run


def _gradient_shap(wrapped, inputs, target, base, *, n_samples, seed, progress, **_):
    from captum.attr import GradientShap
    from tqdm.auto import tqdm

    samples = n_samples or 32
    algorithm = GradientShap(wrapped)
    baselines = to_device(base, wrapped)
    values = np.empty(inputs.shape, dtype=np.float64)
    deltas = np.empty(len(inputs))
    # one row per call, its generators seeded for it: captum draws a batch's baseline choices and
    # interpolation points in one go from NumPy's global generator, so a row's draws would depend
    # on the rows batched with it (the row's n_samples points are still one batch)
    for i, row_seed in enumerate(tqdm(_row_seeds(seed, len(inputs)), desc="GradientShap", disable=not progress)):
        torch.manual_seed(row_seed)
        np.random.seed(row_seed)
        attr, d = algorithm.attribute(to_device(inputs[i:i + 1], wrapped), baselines=baselines,
                                      target=to_device(target[i:i + 1], wrapped), n_samples=samples, stdevs=0.0,
                                      return_convergence_delta=True)
        values[i] = attr.detach().double().cpu().numpy()[0]
        deltas[i] = d.detach().double().cpu().numpy().mean()
    return values, deltas, "convergence_delta", {"n_samples": samples}


def _feature_ablation(wrapped, inputs, target, base, *, space, batch_size, progress, **_):
    from captum.attr import FeatureAblation

    mask = to_device(space.mask(), wrapped).unsqueeze(0)
    values, _ = _captum(FeatureAblation, wrapped, inputs, target, base, batch_size=batch_size, progress=progress,
                        kwargs={"baselines": None, "feature_mask": mask}, delta=False)
    # captum gives every position of a group the group's effect; keep the group total once
    per_feature = space.sum_by_feature(values) / np.array([len(g) for g in space.groups])
    return space.spread(per_feature, inputs), None, None, {"features": space.kind}


def _occlusion(wrapped, inputs, target, base, *, space, batch_size, progress, **_):
    from captum.attr import Occlusion

    channels = space.input_shape[0]
    values, _ = _captum(Occlusion, wrapped, inputs, target, base, batch_size=batch_size, progress=progress,
                        kwargs={"baselines": None, "sliding_window_shapes": (channels, 2, 2), "strides": (channels, 1, 1)},
                        delta=False)
    return values, None, None, {"window": [channels, 2, 2], "stride": [channels, 1, 1]}


def _kernel_shap(wrapped, inputs, target, base, *, space, n_samples, batch_size, seed, estimator="per_background",
                 **_):
    """KernelSHAP over original features (tables) or patches (images), batched across rows
    (:mod:`.kernel_shap`); absent tabular features take each background row's values, absent
    patches the baseline image. The error figure is the estimated sampling error of each row's
    values as a share of its largest |value| (NaN where that is below ``ATTRIBUTION_FLOOR``).

    Without ``n_samples`` the budget follows a target error, as integrated gradients' steps do:
    every row starts at shap's default 2M + 2048 coalitions, and a row whose estimated error is
    above :data:`~.kernel_shap.TARGET_ERROR` of its largest |value| is explained again with twice
    the budget (its own seed per doubling), up to :data:`~.kernel_shap.MAX_DOUBLINGS` times
    (``"per_background"``: while the budget stays within its posterior's, :func:`.refinable`);
    ``coalitions_used`` counts the rows at each budget, ``rows_refined`` those above the first."""
    from scrutiny.audit.attributions.kernel_shap import MAX_DOUBLINGS, TARGET_ERROR, kernel_shap, refinable

    def predict(flat: np.ndarray) -> np.ndarray:
        return batched_outputs(wrapped, flat.reshape((-1, *space.input_shape)), max(batch_size, 8192))

    def share_of(result) -> np.ndarray:
        largest = np.abs(result.values).max(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(largest >= ATTRIBUTION_FLOOR, result.sampling_error / largest, np.nan)

    background = base.reshape(len(base), -1) if space.kind == "tabular" else base.mean(axis=0).reshape(1, -1)
    flat, groups = inputs.reshape(len(inputs), -1), [list(g) for g in space.groups]
    result = kernel_shap(predict, flat, background, groups, target, nsamples=n_samples, seed=seed, estimator=estimator)
    values, share = result.values.copy(), share_of(result)
    budget = np.full(len(inputs), result.coalitions)
    for doubling in range(1, MAX_DOUBLINGS + 1 if n_samples is None and not result.exact else 1):
        again = np.flatnonzero(share > TARGET_ERROR)  # NaN (nothing to explain) is never above it
        if not len(again) or not refinable(estimator, result.coalitions * 2**doubling):
            break
        refined = kernel_shap(predict, flat[again], background, groups, target[again],
                              nsamples=result.coalitions * 2**doubling, seed=chunk_seed(seed, "refine", doubling),
                              estimator=estimator)
        values[again], share[again], budget[again] = refined.values, share_of(refined), refined.coalitions
        if refined.exact:
            break
    settings = {"nsamples": n_samples or "2M+2048", "unit": modality(space.kind).feature_unit,
                "coalitions": result.coalitions, "exact": result.exact, "estimator": estimator,
                "coalitions_used": {int(k): int(v) for k, v in zip(*np.unique(budget, return_counts=True))},
                "rows_refined": int((budget > result.coalitions).sum())}
    return space.spread(values, inputs), share, "sampling_error", settings


def _shap_gradient(wrapped, inputs, target, base, *, n_samples, batch_size, seed, progress, **_):
    import shap
    from tqdm.auto import tqdm

    samples = n_samples or 200
    explainer = shap.GradientExplainer(wrapped, to_device(base, wrapped))
    values = np.empty(inputs.shape, dtype=np.float64)
    # one row per call with its own seed: shap draws the rows of a call one after another from one
    # seed, so a row's draws would depend on the rows before it (shap loops over rows anyway)
    for i, row_seed in enumerate(tqdm(_row_seeds(seed, len(inputs)), desc="GradientExplainer", disable=not progress)):
        with torch.enable_grad():  # captum's sensitivity_max calls explanations under no_grad
            out = explainer.shap_values(to_device(inputs[i:i + 1], wrapped), nsamples=samples, rseed=row_seed)
        out = np.asarray(out)  # (1, *input_shape, n_outputs)
        values[i] = out[0, ..., int(target[i])]

    def predict(X: np.ndarray) -> np.ndarray:
        return batched_outputs(wrapped, X, max(batch_size, 4096))

    expected = predict(base).mean(axis=0)
    fx = predict(inputs)[np.arange(len(inputs)), target]
    gaps = values.reshape(len(inputs), -1).sum(axis=1) - (fx - expected[target])
    return values, gaps, "additivity_gap", {"n_samples": samples}


def _lime(wrapped, inputs, target, base, *, space, background, n_samples, batch_size, seed, progress,
          lime_target="probability", **_):
    from tqdm.auto import tqdm

    samples = n_samples or 5000
    model = wrapped.model

    def proba(X: np.ndarray) -> np.ndarray:  # what the local model fits: probabilities, or the explained score
        if lime_target == "probability":
            return batched_outputs(model, X, 4096, probabilities=True)
        return batched_outputs(wrapped, X, 4096)

    values = np.zeros((len(inputs), space.n_features))
    misfit, intercept = np.zeros(len(inputs)), np.zeros(len(inputs))
    if space.kind == "tabular":
        from lime.lime_tabular import LimeTabularExplainer

        from scrutiny.audit.attributions.lime_tabular import explain_rows

        Z_train = space.to_codes(background)
        # a binary feature must stay 0/1: LIME samples it as a category, not a number
        categorical = [g for g in range(space.n_features) if space.categorical[g] or space.binary[g]]
        explainer = LimeTabularExplainer(
            Z_train, mode="classification", feature_names=list(space.names), categorical_features=categorical,
            discretize_continuous=False, random_state=seed,
        )
        # explain_instance per row, batched across rows (lime's draws, one model call per chunk)
        fit = explain_rows(explainer, space.to_codes(inputs), lambda z: proba(space.from_codes(z)), target,
                           num_samples=samples, progress=progress)
        values, misfit, intercept = fit.weights, 1.0 - fit.scores, fit.intercepts
        terms = fit.weights * fit.instances
    else:
        import functools
        from unittest import mock

        import lime.lime_image
        from lime.lime_image import LimeImageExplainer

        segments = space.mask()[0]
        explainer = LimeImageExplainer(random_state=seed)
        # lime_image shows a bar per image with no way to turn it off; this one loop shows progress
        quiet = mock.patch.object(lime.lime_image, "tqdm", functools.partial(lime.lime_image.tqdm, disable=True))
        for i in tqdm(range(len(inputs)), desc="LIME", disable=not progress):
            rgb = np.repeat(inputs[i][0][..., None], 3, axis=2).astype(np.float64)
            with quiet:
                explanation = explainer.explain_instance(
                    rgb, lambda images: proba(np.ascontiguousarray(images[..., :1].transpose(0, 3, 1, 2), dtype=np.float32)),
                    labels=(int(target[i]),), top_labels=None, hide_color=float(base[0].mean()),
                    num_features=space.n_features, num_samples=samples, segmentation_fn=lambda _: segments,
                    random_seed=seed, batch_size=1000,
                )
            for g, weight in explanation.local_exp[int(target[i])]:
                values[i, g] = weight
            misfit[i] = 1.0 - _score(explanation, int(target[i]))
            intercept[i] = explanation.intercept[int(target[i])]
        terms = values  # the explained image shows every superpixel: the local model reads it as all ones
    return (space.spread(values, inputs), misfit, "lime_misfit", {"num_samples": samples, "target": lime_target},
            intercept, terms)


def _score(explanation, label: int) -> float:
    """R² of LIME's local fit (a float for tabular explanations, a dict per label for images)."""
    score = explanation.score
    return float(score[label] if isinstance(score, dict) else score)


_RUNNERS = {
    "integrated_gradients": _integrated_gradients,
    "saliency": _gradient_only("Saliency"),
    "input_x_gradient": _gradient_only("InputXGradient"),
    "deeplift": _deeplift,
    "gradient_shap": _gradient_shap,
    "feature_ablation": _feature_ablation,
    "occlusion": _occlusion,
    "kernel_shap": _kernel_shap,
    "shap_gradient": _shap_gradient,
    "lime": _lime,
}
