"""Both bounds of the smoothed classifier's robust accuracy, for the robustness family.

:func:`assess_certification` certifies a seeded subset of the attacked rows by randomized
smoothing (:func:`~scrutiny.audit.robustness.smoothing.certify`: the **lower bound**, each row's
certificate wrong with probability at most ``alpha``) and attacks the same smoothed classifier
at each radius (:func:`~scrutiny.audit.robustness.smoothing.smoothed_attack`, then
:func:`~scrutiny.audit.robustness.smoothing.predict` at the attacked input: the **upper
bound**). A row certified at the radius or more is not attacked there: it counts as robust in
both bounds, so the upper bound is never below the lower one. The gap between them is what the
evaluation leaves open about the smoothed classifier.

The rows go in chunks of ``chunk_rows`` through the audit's executor (the work
``("robustness", "certification")``); every draw is seeded by the run's seed and the row's index
in the test split, so the results depend on neither the chunks nor the executor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from scrutiny.audit.run.executor import CHUNK_ROWS, Chunk, Executor, LocalExecutor, chunk_rng, work_chunks
from scrutiny.devices import resolve_device

from .smoothing import ABSTAIN, Certification, certified_curve, certify, predict, smoothed_attack, summarize

__all__ = ["ATTACK_COPIES", "ATTACK_STEPS", "Certified", "assess_certification"]

ATTACK_STEPS = 20   # the smoothed classifier's attack: PGD steps (Salman et al. 2019 use 10-20),
ATTACK_COPIES = 16  # and noisy copies per step whose mean softmax it differentiates
WORK = ("robustness", "certification")


@dataclass
class Certified:
    """What :func:`assess_certification` returns.

    Attributes:
        rows: int64 ``(N,)``: the certified rows (indices in the test split).
        certification: CERTIFY's per-row result.
        radii: the L2 radii of the table, ascending (0 first).
        certified_accuracy, attacked_accuracy: per radius, the lower and the upper bound (the
            upper bound NaN where no attack ran: no gradients).
        curve_radius, curve_accuracy: the whole certified-accuracy step curve.
        smoothed_accuracy, abstention_rate, median_radius, median_radius_correct: as in
            :class:`~scrutiny.audit.robustness.smoothing.CertifiedSummary`.
        base_accuracy: the base classifier's accuracy on these rows without noise.
        robust_upper: bool ``(N, len(radii))``: the rows no attack broke at each radius.
        seconds: wall time of the certification and of the attacks.
    """

    rows: np.ndarray
    certification: Certification
    radii: np.ndarray
    certified_accuracy: np.ndarray
    attacked_accuracy: np.ndarray
    curve_radius: np.ndarray
    curve_accuracy: np.ndarray
    smoothed_accuracy: float
    abstention_rate: float
    median_radius: float
    median_radius_correct: float
    base_accuracy: float
    robust_upper: np.ndarray | None
    seconds: dict[str, float]


class _Part(NamedTuple):
    certification: Certification
    robust_upper: np.ndarray | None   # (rows, radii) or None without an attack
    attack_seconds: float


@dataclass(frozen=True)
class _Setup:
    sigma: float
    n0: int
    n: int
    alpha: float
    radii: tuple[float, ...]
    seed: int
    batch_size: int
    device: str
    threads: int
    noise_scale: np.ndarray | None
    mutable: np.ndarray | None


def assess_certification(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, *, sigma: float,
                         radii: Sequence[float], n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                         samples: int = 100, seed: int = 0, device: str | torch.device | None = None,
                         noise_scale=None, mutable=None, attack: bool = True,
                         gradient_model: nn.Module | None = None, batch_size: int = 1000, executor: Executor | None = None,
                         chunk_rows: int = CHUNK_ROWS) -> Certified:
    """Certify ``samples`` of the rows ``x`` (their test-split indices ``rows``), seeded, and
    attack the smoothed classifier at each of ``radii`` on the rows not certified there.

    Args:
        model: the base classifier (logits).
        attack: attack the smoothed classifier for the upper bound (it needs gradients);
            ``gradient_model``: the model it differentiates when ``model`` has none (a PyTorch
            twin of an ONNX file). Default: ``model``.
        x, y, rows: the attacked rows as the model reads them, their labels and test-split indices.
        sigma, n0, n, alpha, batch_size, noise_scale, mutable: as in
            :func:`~scrutiny.audit.robustness.smoothing.certify`.
        radii: L2 radii of the table (0 is added).
        samples: rows to certify, a seeded subset of ``rows`` (all when fewer).
    """
    pick = np.sort(chunk_rng(seed, *WORK).choice(len(rows), size=min(samples, len(rows)), replace=False))
    keys, xs, ys = np.asarray(rows)[pick], x[pick], y[pick]
    dev = resolve_device(device)
    setup = _Setup(sigma=float(sigma), n0=n0, n=n, alpha=float(alpha), radii=tuple(sorted({0.0, *map(float, radii)})),
                   seed=seed, batch_size=batch_size, device=str(dev), threads=torch.get_num_threads(),
                   noise_scale=noise_scale, mutable=mutable)
    attacker = (gradient_model if gradient_model is not None else model) if attack else None
    executor = executor if executor is not None else LocalExecutor()
    parts = executor.map(_certify_chunk, work_chunks(WORK, len(keys), chunk_rows), model, attacker, xs, ys, keys,
                         setup)
    cert = _joined([p.certification for p in parts])
    labels = ys.numpy()
    summary = summarize(cert, labels, setup.radii)
    upper = None if attacker is None else np.concatenate([p.robust_upper for p in parts if p.robust_upper is not None])
    curve_radius, curve_accuracy = certified_curve(cert, labels)
    with torch.no_grad():
        model.to(dev).eval()
        base = float((model(xs.to(dev)).argmax(dim=1).cpu() == ys).float().mean())
    return Certified(
        rows=keys.astype(np.int64), certification=cert, radii=summary.radii,
        certified_accuracy=summary.certified_accuracy,
        attacked_accuracy=upper.mean(axis=0) if upper is not None else np.full(len(summary.radii), np.nan),
        curve_radius=curve_radius, curve_accuracy=curve_accuracy, smoothed_accuracy=summary.smoothed_accuracy,
        abstention_rate=summary.abstention_rate, median_radius=summary.median_radius,
        median_radius_correct=summary.median_radius_correct, base_accuracy=base, robust_upper=upper,
        seconds={"certification": cert.seconds, "smoothed_attack": sum(p.attack_seconds for p in parts)},
    )


def _certify_chunk(chunk: Chunk, model: nn.Module, attacker: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                   keys: np.ndarray, setup: _Setup) -> _Part:
    """CERTIFY on one chunk, then the attack at each radius on its rows not certified there."""
    from .assess import _threads

    rows = chunk.rows
    xb, yb, kb = x[rows], y[rows].numpy(), keys[rows]
    noise = dict(sigma=setup.sigma, seed=setup.seed, device=setup.device, noise_scale=setup.noise_scale,
                 mutable=setup.mutable, rows=kb)
    with _threads(setup.threads):
        cert = certify(model, xb, n0=setup.n0, n=setup.n, alpha=setup.alpha, batch_size=setup.batch_size, **noise)
        if attacker is None:
            return _Part(cert, None, 0.0)
        start = time.perf_counter()
        certified = (cert.prediction == yb) & (cert.prediction != ABSTAIN)
        upper = np.zeros((len(kb), len(setup.radii)), dtype=bool)
        for k, radius in enumerate(setup.radii):
            held = certified & (cert.radius >= radius)
            upper[held, k] = True
            todo = np.flatnonzero(~held)
            if not len(todo):
                continue
            if radius == 0:
                attacked = xb[todo].numpy()
            else:
                attacked = smoothed_attack(attacker, xb[todo], yb[todo], radius, steps=ATTACK_STEPS,
                                           copies=ATTACK_COPIES, **_subset(noise, todo))
            judged = predict(model, attacked, n=setup.n, alpha=setup.alpha, batch_size=setup.batch_size,
                             **_subset(noise, todo))
            upper[todo, k] = judged.prediction == yb[todo]
    return _Part(cert, upper, time.perf_counter() - start)


def _subset(noise: dict[str, Any], todo: np.ndarray) -> dict[str, Any]:
    return {**noise, "rows": noise["rows"][todo]}


def _joined(parts: list[Certification]) -> Certification:
    """The chunks' certifications as one, in chunk order (class counts padded to the widest)."""
    width = max(p.counts.shape[1] for p in parts)

    def stack(name: str) -> np.ndarray:
        arrays = [getattr(p, name) for p in parts]
        if arrays[0].ndim == 2:
            arrays = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays]
        return np.concatenate(arrays)

    first = parts[0]
    return Certification(
        prediction=stack("prediction"), radius=stack("radius"), p_lower=stack("p_lower"), guess=stack("guess"),
        selection_counts=stack("selection_counts"), counts=stack("counts"), rows=stack("rows"), sigma=first.sigma,
        n0=first.n0, n=first.n, alpha=first.alpha, seed=first.seed, batch_size=first.batch_size, device=first.device,
        seconds=sum(p.seconds for p in parts),
    )
