"""Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld & Kolter 2019, arXiv 1902.02918).

The smoothed classifier ``g(x) = argmax_c P(f(x + ε) = c)``, ``ε ~ N(0, σ² I)``, of a base
classifier ``f`` (the model's argmax) is robust in a ball whose radius follows from how often
``f`` picks the top class under noise (their Theorem 1): if ``P(f(x + ε) = c_A) ≥ p_A > 1/2``,
then ``g(x + δ) = c_A`` for every ``‖δ‖₂ < σ Φ⁻¹(p_A)``.

- :func:`certify` is their CERTIFY: guess the top class ``ĉ_A`` from ``n0`` noisy copies, count
  how often ``f`` returns it in ``n`` fresh ones, take the one-sided Clopper–Pearson lower bound
  ``p_A`` at level ``1 − α`` (``Beta(α; k, n − k + 1)``) and certify the radius ``σ Φ⁻¹(p_A)``;
  abstain (:data:`ABSTAIN`) when ``p_A ≤ 1/2``. A row's certificate is wrong with probability at
  most ``α``.
- :func:`predict` is their PREDICT: the top class of ``n`` noisy copies when a two-sided binomial
  test of its count against the runner-up's rejects a tie at level ``α``, else abstain. It
  returns the wrong class with probability at most ``α``.

Noise is drawn afresh for every one of the ``n0 + n`` copies (never one draw reused across the
forward passes: IBM ART's estimator did that until ART PR#1678), in canonical chunks from a
``torch.Generator`` on the model's device seeded by ``(seed, phase, row key, chunk index)``
(:func:`~scrutiny.audit.run.executor.chunk_seed`). A row's noise therefore depends on the seed,
its key (``rows``: by default its index; the CLI passes the test-row index), ``n0``, ``n`` and the
input size, never on ``batch_size`` or on the other rows certified with it; its counts are the
same up to the model's own float rounding across batch sizes. The same device type is needed for
the same bytes (CPU and CUDA generators differ). No clipping to the valid input range, as in the
paper: the theorem is about the unclipped Gaussian.

Tables: only the mutable numeric columns get noise, each scaled by its training standard
deviation (``noise_scale`` and ``mutable``; :func:`table_noise` builds both from a data set). The
noise is then ``N(0, σ² diag(s²))`` on those columns, and the certificate is an L2 ball in the
rescaled space: ``g`` cannot change for any ``δ`` that moves only mutable columns with
``‖δ / s‖₂ < R``. Radii (and σ) on tables are therefore in training standard deviations of the
mutable numeric columns; the other columns are held where they are. Images: every pixel, radii
in pixel units (the data set's range, [0, 1] for digits).

Summaries (:func:`summarize`) follow the paper: a row is certified at radius ``r`` when CERTIFY
returns its true class (not an abstention) with radius ``R ≥ r``; certified accuracy at radius 0
is the smoothed classifier's accuracy with abstentions counted as errors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from scrutiny.audit.run.executor import chunk_seed
from scrutiny.devices import resolve_device
from scrutiny.errors import CheckpointError, InputError, describe_raised
from scrutiny.limits import check_int

__all__ = ["ABSTAIN", "Certification", "CertifiedSummary", "Prediction", "abstention_rate", "certified_accuracy",
           "certified_curve", "certify", "clopper_pearson_lower", "median_certified_radius", "predict",
           "smoothed_attack", "summarize", "table_noise"]

ABSTAIN = -1
"""The class :func:`certify` and :func:`predict` return for a row they abstain on."""

NOISE_VALUES = 1 << 22
"""Noise values drawn per generator seed (16 MiB of float32): a row's copies come in chunks of
``max(1, min(count, NOISE_VALUES // input size))``, each from its own seed."""


@dataclass
class Certification:
    """What :func:`certify` returns, one entry per row.

    Attributes:
        prediction: int64 ``(N,)``: the certified class ``ĉ_A``, or :data:`ABSTAIN` (−1).
        radius: float64 ``(N,)``: ``σ Φ⁻¹(p_lower)``; 0 where abstained. In input units for images,
            in training standard deviations of the mutable numeric columns for tables.
        p_lower: float64 ``(N,)``: one-sided Clopper–Pearson lower bound at level ``1 − α`` of
            ``P(f(x + ε) = ĉ_A)``, from ``counts[ĉ_A]`` of ``n``.
        guess: int64 ``(N,)``: ``ĉ_A``, the top class of the ``n0`` selection copies (also where abstained).
        selection_counts: int64 ``(N, n_classes)``: the base classifier's classes over the ``n0`` copies.
        counts: int64 ``(N, n_classes)``: ... over the ``n`` estimation copies.
        rows: int64 ``(N,)``: the keys the rows' noise was seeded with.
        sigma, n0, n, alpha, seed, batch_size, device: the settings.
        seconds: wall-clock time.
    """

    prediction: np.ndarray
    radius: np.ndarray
    p_lower: np.ndarray
    guess: np.ndarray
    selection_counts: np.ndarray
    counts: np.ndarray
    rows: np.ndarray
    sigma: float
    n0: int
    n: int
    alpha: float
    seed: int
    batch_size: int
    device: str
    seconds: float

    @property
    def abstained(self) -> np.ndarray:
        return self.prediction == ABSTAIN

    @property
    def samples_per_second(self) -> float:
        """Noisy forward passes (copies) per second, selection and estimation together."""
        copies = len(self.prediction) * (self.n0 + self.n)
        return copies / self.seconds if self.seconds > 0 else math.inf


@dataclass
class Prediction:
    """What :func:`predict` returns, one entry per row.

    Attributes:
        prediction: int64 ``(N,)``: the top class of the ``n`` copies, or :data:`ABSTAIN`.
        p_value: float64 ``(N,)``: two-sided binomial test of ``n_A`` out of ``n_A + n_B`` against 1/2.
        counts: int64 ``(N, n_classes)``.
        rows, sigma, n, alpha, seed: as in :class:`Certification`.
    """

    prediction: np.ndarray
    p_value: np.ndarray
    counts: np.ndarray
    rows: np.ndarray
    sigma: float
    n: int
    alpha: float
    seed: int


def clopper_pearson_lower(k, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper–Pearson lower bound at level ``1 − alpha`` on a binomial proportion with
    ``k`` successes in ``n`` trials: ``Beta(alpha; k, n − k + 1)``, 0 when ``k = 0``. The same as
    statsmodels' ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]``, which Cohen
    et al.'s code uses."""
    k = np.asarray(k, dtype=np.float64)
    bound = stats.beta.ppf(alpha, np.maximum(k, 1.0), n - k + 1.0)
    return np.where(k > 0, bound, 0.0)


def certify(model: nn.Module, x, *, sigma: float, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
            batch_size: int = 1000, seed: int = 0, device: str | torch.device | None = None,
            noise_scale=None, mutable=None, rows=None, progress: bool = False) -> Certification:
    """Cohen et al.'s CERTIFY on each row of ``x``.

    Args:
        model: the base classifier (logits ``(N, n_classes)``); run in eval mode without gradients.
        x: inputs ``(N, *input_shape)`` as the model reads them.
        sigma: noise standard deviation (> 0), in the units of the radius.
        n0: noisy copies per row to choose the class ``ĉ_A``.
        n: fresh noisy copies per row to bound ``P(f(x + ε) = ĉ_A)``.
        alpha: a row's certificate is wrong with probability at most ``alpha``, in (0, 1).
        batch_size: noisy copies per forward pass.
        seed: the run's seed; each row's noise is seeded from it and the row's key.
        device: where to run: ``"cpu"``, ``"cuda"``, ``"cuda:N"``. Default: CUDA when present.
        noise_scale: one positive scale per input position (flat or in the input's shape): position
            ``j`` gets noise ``N(0, (σ s_j)²)`` and the radius is in ``‖δ / s‖₂``. Default: 1.
        mutable: one bool per input position: only these get noise, and the certificate covers
            perturbations of these only. Default: every position.
        rows: one integer key per row for its noise (default ``0..N−1``): the same key, seed and
            settings give the same noise whatever rows are certified with it.
        progress: show a progress bar over rows.

    Returns:
        Certification: per row the class or :data:`ABSTAIN`, the radius, the bound and the counts.

    Example:
        >>> cert = certify(model, x, sigma=0.25, n=10_000, seed=0)  # doctest: +SKIP
        >>> summarize(cert, y, radii=(0.0, 0.5)).certified_accuracy  # doctest: +SKIP
        array([0.83, 0.41])
    """
    setup = _Setup.of(model, x, sigma=sigma, n=n, alpha=alpha, batch_size=batch_size, seed=seed, device=device,
                      noise_scale=noise_scale, mutable=mutable, rows=rows)
    check_int("n0", n0)
    if n0 > n:
        raise InputError(f"n0 must be at most n (the selection copies are a small first sample); got n0={n0:,} "
                         f"and n={n:,}")
    start = time.perf_counter()
    selection, counts = [], []
    with setup.running(model, progress, "certify") as bar:
        for i in bar:
            selection.append(setup.counts(model, i, "select", n0))
            counts.append(setup.counts(model, i, "estimate", n))
    selection_counts, estimate_counts = _stack(selection), _stack(counts)
    width = max(selection_counts.shape[1], estimate_counts.shape[1])
    selection_counts, estimate_counts = _widen(selection_counts, width), _widen(estimate_counts, width)
    guess = selection_counts.argmax(axis=1)
    k = estimate_counts[np.arange(len(guess)), guess]
    p_lower = clopper_pearson_lower(k, n, alpha)
    certified = p_lower > 0.5
    radius = np.where(certified, setup.sigma * stats.norm.ppf(p_lower), 0.0)
    return Certification(
        prediction=np.where(certified, guess, ABSTAIN).astype(np.int64), radius=radius.astype(np.float64),
        p_lower=p_lower, guess=guess.astype(np.int64), selection_counts=selection_counts, counts=estimate_counts,
        rows=setup.rows, sigma=setup.sigma, n0=n0, n=n, alpha=setup.alpha, seed=setup.seed, batch_size=batch_size,
        device=str(setup.device), seconds=time.perf_counter() - start,
    )


def predict(model: nn.Module, x, *, sigma: float, n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
            seed: int = 0, device: str | torch.device | None = None, noise_scale=None, mutable=None, rows=None,
            progress: bool = False) -> Prediction:
    """Cohen et al.'s PREDICT on each row of ``x``: the smoothed classifier's class, or
    :data:`ABSTAIN` when the two-sided binomial test of the top count ``n_A`` against the
    runner-up's ``n_B`` (``binomtest(n_A, n_A + n_B, 1/2)``) does not reject a tie at ``alpha``.
    The arguments are those of :func:`certify`; the noise is seeded apart from CERTIFY's."""
    setup = _Setup.of(model, x, sigma=sigma, n=n, alpha=alpha, batch_size=batch_size, seed=seed, device=device,
                      noise_scale=noise_scale, mutable=mutable, rows=rows)
    counts = []
    with setup.running(model, progress, "predict") as bar:
        for i in bar:
            counts.append(setup.counts(model, i, "predict", n))
    table = _stack(counts)
    order = np.argsort(-table, axis=1, kind="stable")  # ties: the lower class first, as argmax
    top = order[:, 0]
    n_a = table[np.arange(len(table)), top]
    n_b = table[np.arange(len(table)), order[:, 1]] if table.shape[1] > 1 else np.zeros_like(n_a)
    p_value = np.array([stats.binomtest(int(a), int(a + b), 0.5).pvalue for a, b in zip(n_a, n_b)], dtype=np.float64)
    return Prediction(prediction=np.where(p_value <= alpha, top, ABSTAIN).astype(np.int64), p_value=p_value,
                      counts=table, rows=setup.rows, sigma=setup.sigma, n=n, alpha=setup.alpha, seed=setup.seed)


def smoothed_attack(model: nn.Module, x, y, radius: float, *, sigma: float, steps: int = 20, copies: int = 16,
                    seed: int = 0, device: str | torch.device | None = None, noise_scale=None, mutable=None,
                    rows=None) -> np.ndarray:
    """An L2 attack on the smoothed classifier itself: projected gradient ascent, over
    expectation over noise (Salman et al. 2019, SmoothAdv's PGD), on the cross-entropy of the mean
    softmax of ``copies`` noisy copies, fresh at every step. Where :func:`predict` at the result
    still returns the true class, no attack found at ``radius`` breaks the row: the share of such
    rows is an upper bound on the smoothed classifier's robust accuracy, as the certified
    accuracy is a lower one.

    The perturbation moves the noised positions only (``mutable``) and stays in the ball
    ``‖δ / s‖₂ ≤ radius`` of the certificate (``s``: ``noise_scale``), without clipping to the
    input range, as the certificate covers unclipped inputs. No random start; ``steps`` steps
    of ``2.5 radius / steps`` along the scaled gradient's direction. The noise of row ``i`` at
    step ``t`` is seeded by ``(seed, "smoothed-attack", rows[i], t)``, so a row's result does not
    depend on the rows attacked with it.

    Returns:
        float32 ``(N, *input_shape)``: the attacked inputs.
    """
    setup = _Setup.of(model, x, sigma=sigma, n=copies, alpha=0.5, batch_size=copies, seed=seed, device=device,
                      noise_scale=noise_scale, mutable=mutable, rows=rows)
    check_int("steps", steps)
    if not _number(radius) or not 0 < float(radius) < math.inf:
        raise InputError(f"radius must be a finite number > 0; got {radius!r}")
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long, device=setup.device)
    if labels.shape != (len(setup.x),):
        raise InputError(f"y must hold one label per row of x ({len(setup.x)}); got shape {tuple(labels.shape)}")
    # δ = s ⊙ u on the noised positions, with ‖u‖₂ ≤ radius: the certificate's ball
    scale = torch.where(setup.spread > 0, setup.spread / setup.sigma, torch.zeros_like(setup.spread))
    u = torch.zeros_like(setup.x)
    step = 2.5 * float(radius) / steps
    shape = setup.x.shape[1:]
    was_training = model.training
    model.to(setup.device).eval()
    try:
        for t in range(steps):
            noise = torch.stack([
                torch.randn((copies, *shape), generator=torch.Generator(device=setup.device).manual_seed(
                    chunk_seed(setup.seed, "smoothed-attack", int(key), t)), device=setup.device)
                for key in setup.rows])
            u.requires_grad_(True)
            moved = (setup.x + scale * u).unsqueeze(1) + noise * setup.spread
            logits = model(moved.reshape(-1, *shape)).reshape(len(setup.x), copies, -1)
            log_mean = torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=1) - math.log(copies)
            loss = nn.functional.nll_loss(log_mean, labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, u)
            with torch.no_grad():
                grad = grad * (scale > 0)
                norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * len(shape))
                u = u.detach() + step * grad / norm
                length = u.flatten(1).norm(dim=1).view(-1, *[1] * len(shape))
                u = u * torch.clamp(float(radius) / length.clamp_min(1e-12), max=1.0)
    finally:
        model.train(was_training)
    return (setup.x + scale * u.detach()).cpu().numpy().astype(np.float32)


# ------------------------------------------------------------------ summaries


@dataclass
class CertifiedSummary:
    """Certified accuracy at chosen radii and the figures around it (see :func:`summarize`)."""

    radii: np.ndarray                # float64, as asked
    certified_accuracy: np.ndarray   # share of rows certified correct at each radius
    smoothed_accuracy: float         # certified accuracy at radius 0: abstentions count as errors
    abstention_rate: float
    median_radius: float             # over all rows, 0 for abstained and wrong rows
    median_radius_correct: float     # over the rows certified correct (NaN when none)
    n: int


def _certified_correct(cert: Certification, y) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != cert.prediction.shape:
        raise InputError(f"y must hold one label per certified row ({len(cert.prediction)}); got shape {y.shape}")
    return (cert.prediction == y) & (cert.prediction != ABSTAIN)


def certified_accuracy(cert: Certification, y, radii: Sequence[float] | np.ndarray) -> np.ndarray:
    """Share of rows certified correct at each radius ``r``: CERTIFY returned the true class
    (not an abstention) with radius ``R ≥ r`` (Cohen et al.'s "approximate certified accuracy")."""
    correct = _certified_correct(cert, y)
    r = np.asarray(radii, dtype=np.float64)
    return np.array([np.mean(correct & (cert.radius >= radius)) for radius in r], dtype=np.float64)


def certified_curve(cert: Certification, y) -> tuple[np.ndarray, np.ndarray]:
    """The whole certified-accuracy curve as a step function: radii ``0`` then each row's certified
    radius in increasing order, and the certified accuracy at each (constant up to the next radius,
    0 beyond the last)."""
    correct = _certified_correct(cert, y)
    radii = np.unique(np.concatenate([[0.0], cert.radius[correct]]))
    return radii, certified_accuracy(cert, y, radii)


def median_certified_radius(cert: Certification, y, *, correct_only: bool = False) -> float:
    """The median certified radius. By default over every row, with abstained and wrongly
    predicted rows counted at radius 0 (they are certified at no radius; the convention of
    "average certified radius", Zhai et al. 2020): the largest radius where certified accuracy is
    still at least one half, 0 when the smoothed accuracy is below one half. ``correct_only``:
    over the rows certified correct only (NaN when there are none)."""
    correct = _certified_correct(cert, y)
    if correct_only:
        return float(np.median(cert.radius[correct])) if correct.any() else math.nan
    return float(np.median(np.where(correct, cert.radius, 0.0)))


def abstention_rate(cert: Certification | Prediction) -> float:
    """Share of rows abstained on."""
    return float(np.mean(cert.prediction == ABSTAIN))


def summarize(cert: Certification, y, radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> CertifiedSummary:
    """Certified accuracy at ``radii``, the smoothed accuracy, abstentions and the median radii."""
    r = np.asarray(radii, dtype=np.float64)
    if r.ndim != 1 or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise InputError(f"radii must be finite numbers >= 0; got {list(radii)}")
    return CertifiedSummary(
        radii=r, certified_accuracy=certified_accuracy(cert, y, r),
        smoothed_accuracy=float(certified_accuracy(cert, y, [0.0])[0]), abstention_rate=abstention_rate(cert),
        median_radius=median_certified_radius(cert, y),
        median_radius_correct=median_certified_radius(cert, y, correct_only=True), n=len(cert.prediction),
    )


def table_noise(dataset, preprocessor=None, *, immutable=(), mutable=()) -> tuple[np.ndarray, np.ndarray]:
    """Where smoothing puts noise on a table, and its scale: the mutable numeric columns (those an
    attack may move, :func:`~scrutiny.audit.robustness.attacks.tabular_constraints`: numeric
    features other than the protected attributes and the data set's ``immutable`` columns, with
    ``mutable`` freed and ``immutable`` held), each scaled by its standard deviation over the
    encoded training split (1 for scrutiny's standardised columns). A column constant in training
    gets no noise.

    Returns:
        (mask, scale): bool and float64 arrays over the encoded columns.
    """
    from scrutiny.audit.robustness.attacks import tabular_constraints

    preprocessor = preprocessor or dataset.preprocessor
    encoded = np.asarray(preprocessor.transform(dataset.train.X), dtype=np.float64)
    movable = np.array(tabular_constraints(preprocessor, encoded, immutable=immutable, mutable=mutable,
                                           spec=dataset.spec).mutable, dtype=bool)
    scale = encoded.std(axis=0)
    movable &= scale > 0
    if not movable.any():
        raise InputError(f"{preprocessor.spec.name}: no numeric feature is left mutable (protected attributes and immutable "
                         "columns are held, and the others are constant in training); nothing to put noise on")
    return movable, np.where(movable, scale, 1.0)


# ------------------------------------------------------------------ sampling


@dataclass
class _Setup:
    x: Tensor             # (N, *shape) on the device
    spread: Tensor        # σ s ⊙ mask, in the input's shape
    rows: np.ndarray
    sigma: float
    alpha: float
    seed: int
    batch_size: int
    device: torch.device

    @classmethod
    def of(cls, model: nn.Module, x, *, sigma, n, alpha, batch_size, seed, device, noise_scale, mutable, rows) -> _Setup:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not _number(sigma) or not 0 < float(sigma) < math.inf:
            raise InputError(f"sigma must be a finite number > 0; got {sigma!r}")
        if not _number(alpha) or not 0 < float(alpha) < 1:
            raise InputError(f"alpha must be a number in (0, 1); got {alpha!r}")
        check_int("n", n)
        check_int("batch_size", batch_size)
        check_int("seed", seed)
        dev = resolve_device(device)
        x_arr = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x)
        if x_arr.dtype.kind not in "biuf" or x_arr.ndim < 2 or len(x_arr) == 0:
            raise InputError(f"x must be a non-empty numeric array of shape (N, ...); got {x_arr.dtype} {x_arr.shape}")
        if not np.isfinite(x_arr).all():
            raise InputError("x contains NaN or infinite values")
        shape, size = x_arr.shape[1:], int(np.prod(x_arr.shape[1:]))
        scale = np.ones(size) if noise_scale is None else np.asarray(noise_scale, dtype=np.float64).reshape(-1)
        mask = np.ones(size, dtype=bool) if mutable is None else np.asarray(mutable).reshape(-1)
        if scale.shape != (size,) or mask.shape != (size,):
            raise InputError(f"noise_scale and mutable must hold one value per input position ({size}); got "
                             f"{scale.size} and {mask.size}")
        if mask.dtype != bool or not mask.any():
            raise InputError("mutable must be a boolean mask with at least one True position")
        if not (np.isfinite(scale[mask]).all() and (scale[mask] > 0).all()):
            raise InputError("noise_scale must be finite and > 0 at every mutable position")
        keys = np.arange(len(x_arr)) if rows is None else np.asarray(rows)
        if keys.shape != (len(x_arr),) or keys.dtype.kind not in "iu" or (keys < 0).any():
            raise InputError(f"rows must hold one integer key >= 0 per row of x ({len(x_arr)}); got {keys.shape}")
        spread = torch.as_tensor(float(sigma) * scale * mask, dtype=torch.float32).reshape(shape)
        return cls(x=torch.as_tensor(x_arr, dtype=torch.float32).to(dev), spread=spread.to(dev),
                   rows=keys.astype(np.int64), sigma=float(sigma), alpha=float(alpha), seed=int(seed),
                   batch_size=batch_size, device=dev)

    def running(self, model: nn.Module, progress: bool, desc: str):
        return _Running(model, self, progress, desc)

    def counts(self, model: nn.Module, i: int, phase: str, count: int) -> np.ndarray:
        """How often the model returns each class over ``count`` noisy copies of row ``i``."""
        x = self.x[i]
        stream = _NoiseStream(x.shape, count, self.seed, ("smoothing", phase, int(self.rows[i])), self.device)
        total: Tensor | None = None
        done = 0
        while done < count:
            size = min(self.batch_size, count - done)
            batch = x + stream.take(size) * self.spread
            try:
                logits = model(batch)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                raise CheckpointError(f"model {getattr(model, 'arch', '') or type(model).__name__} raised "
                                      f"{describe_raised(exc)} on {size} noisy copies of row {int(self.rows[i])}") from None
            if logits.ndim != 2 or len(logits) != size:
                raise CheckpointError(f"model must return logits of shape ({size}, n_classes) for {size} inputs; "
                                      f"got {tuple(logits.shape)}")
            found = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1])
            total = found if total is None else _add(total, found)
            done += size
        assert total is not None
        return total.cpu().numpy().astype(np.int64)


class _Running:
    """Eval mode without gradients for the loop (the model's mode restored after), the model on
    the device, and the rows to go through (a progress bar when asked)."""

    def __init__(self, model: nn.Module, setup: _Setup, progress: bool, desc: str):
        self.model, self.setup, self.progress, self.desc = model, setup, progress, desc

    def __enter__(self) -> Iterator[int]:
        from tqdm.auto import tqdm

        self.was_training = self.model.training
        self.model.to(self.setup.device).eval()
        self.grad = torch.no_grad()
        self.grad.__enter__()
        self.bar = tqdm(range(len(self.setup.x)), desc=self.desc, unit="row", disable=not self.progress)
        return iter(self.bar)

    def __exit__(self, *exc) -> None:
        self.bar.close()
        self.grad.__exit__(*exc)
        self.model.train(self.was_training)


class _NoiseStream:
    """``count`` standard normal draws of ``shape``, taken in order: chunk ``k`` of
    ``max(1, min(count, NOISE_VALUES // size))`` draws comes from its own generator, seeded by
    ``chunk_seed(seed, *keys, k)``, so the draws do not depend on how they are taken."""

    def __init__(self, shape: torch.Size, count: int, seed: int, keys: tuple, device: torch.device):
        self.shape, self.count, self.seed, self.keys, self.device = shape, count, seed, keys, device
        self.per_chunk = max(1, min(count, NOISE_VALUES // max(1, int(np.prod(shape)))))
        self.chunk: Tensor | None = None
        self.index, self.used = 0, 0  # the next chunk's index; draws taken from the current one

    def take(self, size: int) -> Tensor:
        pieces = []
        while size > 0:
            if self.chunk is None or self.used == len(self.chunk):
                self.chunk = self._draw(self.index)
                self.index, self.used = self.index + 1, 0
            piece = self.chunk[self.used:self.used + size]
            pieces.append(piece)
            self.used += len(piece)
            size -= len(piece)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _draw(self, k: int) -> Tensor:
        left = self.count - k * self.per_chunk
        if left <= 0:
            raise ValueError(f"noise stream of {self.count} draws exhausted")
        generator = torch.Generator(device=self.device).manual_seed(chunk_seed(self.seed, *self.keys, k))
        return torch.randn((min(self.per_chunk, left), *self.shape), generator=generator, device=self.device)


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _add(total: Tensor, found: Tensor) -> Tensor:
    if len(found) > len(total):
        total, found = found, total
    total[: len(found)] += found
    return total


def _widen(counts: np.ndarray, width: int) -> np.ndarray:
    return np.pad(counts, ((0, 0), (0, width - counts.shape[1])))


def _stack(counts: list[np.ndarray]) -> np.ndarray:
    width = max(len(c) for c in counts)
    return np.stack([np.pad(c, (0, width - len(c))) for c in counts])
