"""Training, prediction and evaluation on in-memory arrays.

Everything here works on NumPy arrays (``X`` float32 of shape ``(N, *input_shape)``, ``y``
int64 class labels), so it does not depend on how a data set was loaded. The data are moved
to the device once and batches are drawn by indexing with a seeded ``torch.Generator``; no
DataLoader worker processes are used, so two CPU runs with the same seed give bit-identical
weights.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Protocol

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from scrutiny.devices import model_device, resolve_device
from scrutiny.errors import CheckpointError, InputError, describe_raised
from scrutiny.limits import check_int

__all__ = [
    "DEFAULT_TRAINING",
    "TrainResult",
    "evaluate",
    "expected_calibration_error",
    "predict_proba",
    "seed_everything",
    "train",
    "train_val_split",
    "warmup_cosine",
]

DEFAULT_TRAINING: dict[str, dict] = {
    "mlp": {"epochs": 60, "batch_size": 128, "lr": 1e-3, "patience": 8},
    "cnn": {"epochs": 40, "batch_size": 64, "lr": 2e-3, "patience": 6},
    "resnet": {"epochs": 40, "batch_size": 64, "lr": 2e-3, "patience": 6},
    "transformer": {"epochs": 60, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-5, "patience": 8},
    "gru": {"epochs": 40, "batch_size": 64, "lr": 2e-3, "patience": 6},
    "autoencoder": {"epochs": 80, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "patience": 8},
}
"""Per-architecture keyword arguments for :func:`train`; callers override single keys."""


@dataclass
class TrainResult:
    r"""What :func:`train` returns.

    Attributes:
        model (nn.Module): The trained model (the same object that was passed in) with the
            best weights, in eval mode, on ``device``.
        history (list of dict): One dict per epoch with ``epoch`` (1-based), ``train_loss``,
            ``val_loss`` (None without a validation split) and ``lr`` (of the epoch's last
            step).
        best_epoch (int): Epoch whose weights were kept (lowest validation loss; the last
            epoch without a validation split).
        device (str): Device the model was trained on.
        seconds (float): Wall-clock time of the whole training loop, validation included.
        samples_per_second (float): Training samples processed per second of training
            steps (validation excluded).
    """

    model: nn.Module
    history: list[dict]
    best_epoch: int
    device: str
    seconds: float
    samples_per_second: float


def seed_everything(seed: int) -> None:
    r"""Seeds Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Args:
        seed (int): The seed.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    r"""Learning-rate multiplier: linear warm-up, then cosine decay towards zero.

    For use with ``torch.optim.lr_scheduler.LambdaLR``, stepped once per batch. Step ``s``
    (0-based) gets ``(s + 1) / warmup_steps`` during warm-up, reaching 1 on the last warm-up
    step, then ``0.5 * (1 + cos(pi * (s - warmup_steps) / (total_steps - warmup_steps)))``.

    Args:
        total_steps (int): Number of optimizer steps in the whole run.
        warmup_steps (int): Number of warm-up steps (0 for none).

    Returns:
        Callable[[int], float]: Multiplier of the base learning rate for a step.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def train_val_split(
    n: int, y: np.ndarray | None, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    r"""Seeded train/validation split of ``range(n)``, stratified by ``y`` when given.

    Each class sends ``round(val_fraction * count)`` samples to validation but keeps at
    least one for training. This is the split :func:`train` uses.

    Args:
        n (int): Number of samples.
        y (np.ndarray or None): Class labels to stratify on; None for a plain random split.
        val_fraction (float): Fraction of samples for validation.
        seed (int): Seed of the permutation.

    Returns:
        tuple of np.ndarray: Sorted training and validation indices.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if y is None else [np.flatnonzero(y == c) for c in np.unique(y)]
    val = []
    for group in groups:
        k = min(int(round(val_fraction * len(group))), len(group) - 1)
        val.append(rng.permutation(group)[:k])
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    return np.setdiff1d(np.arange(n), val_idx), val_idx


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15, *,
                               sample_weight: np.ndarray | None = None) -> float:
    r"""Expected calibration error of predicted probabilities.

    Confidence is the top probability and the prediction its class. Samples fall into
    ``n_bins`` equal-width bins ``(lo, hi]`` of confidence; ECE is the sample-weighted mean
    over bins of ``|accuracy - mean confidence|``.

    Args:
        probs (np.ndarray): Class probabilities, shape ``(N, n_classes)``.
        y (np.ndarray): True labels, shape ``(N,)``.
        n_bins (int, optional): Number of bins.
            Default: 15
        sample_weight (np.ndarray, optional): rows each sample stands for.
            Default: one each

    Returns:
        float: ECE in ``[0, 1]``.
    """
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y)
    if probs.ndim != 2 or y.shape != (len(probs),) or len(probs) == 0:
        raise InputError(f"probs must have shape (N, n_classes) and y shape (N,); got {probs.shape} and {y.shape}")
    _require(_is_int(n_bins) and n_bins >= 1, "n_bins", "a positive integer", n_bins)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence, side="left")
    # per bin: |sum(correct) - sum(confidence)| = n_bin * |accuracy - mean confidence|
    w = np.ones(len(probs)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    gap = np.abs(np.bincount(bins, correct * w, n_bins) - np.bincount(bins, confidence * w, n_bins))
    return float(gap.sum() / w.sum())


# --- helpers ------------------------------------------------------------------------------


def _is_autoencoder(model: nn.Module) -> bool:
    return getattr(model, "arch", None) == "autoencoder"


def _check_X(model: nn.Module, X) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise InputError(f"X must be a numeric array; got dtype {X.dtype}")
    expected = tuple(getattr(model, "config", {}).get("input_shape", ()))
    if X.ndim < 2 or len(X) == 0 or (expected and X.shape[1:] != expected):
        want = f"(N, {', '.join(map(str, expected))})" if expected else "(N, ...)"
        raise InputError(f"X must be a non-empty array of shape {want} for this model; got {X.shape}")
    X = X.astype(np.float32, copy=False)
    if not np.isfinite(X).all():
        raise InputError("X contains NaN or infinite values; impute or drop them first")
    return X


def _check_y(model: nn.Module, y, n: int) -> np.ndarray:
    if y is None:
        name = getattr(model, "arch", type(model).__name__)
        raise InputError(f"y is required for a classifier ('{name}'); only an autoencoder trains without labels")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"y must be a 1-D array with one label per row of X; got shape {y.shape} for {n} rows")
    if y.dtype.kind not in "iu":
        raise InputError(f"y must hold integer class labels; got dtype {y.dtype}")
    n_classes = _declared_classes(model)
    if n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(
            f"y labels must lie in 0..{n_classes - 1} for a model with n_classes={n_classes}; got {y.min()}..{y.max()}"
        )
    return y.astype(np.int64, copy=False)


def _declared_classes(model: nn.Module) -> int | None:
    """``n_classes`` of the model's config (set by ``build_model``); None for a model without one."""
    return getattr(model, "config", {}).get("n_classes")


def _n_classes(model: nn.Module) -> int:
    n_classes = _declared_classes(model)
    if n_classes is None:
        raise InputError("class_weights needs the model's number of classes (model.config['n_classes'], as "
                         "build_model sets it)")
    return n_classes


def _check_sample_weight(sample_weight, n: int) -> np.ndarray:
    w = np.asarray(sample_weight)
    if w.ndim != 1 or len(w) != n:
        raise InputError(
            f"sample_weight must be a 1-D array with one weight per row of X; got shape {w.shape} for {n} rows"
        )
    if w.dtype.kind not in "biuf":
        raise InputError(f"sample_weight must hold numbers; got dtype {w.dtype}")
    w = w.astype(np.float64)
    if not np.isfinite(w).all():
        raise InputError("sample_weight contains NaN or infinite values")
    if (w < 0).any():
        raise InputError(f"sample_weight must be >= 0 everywhere; got a minimum of {w.min():g}")
    return w


def _weighted_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Cross-entropy averaged with per-sample weights; 0 (no gradient) when they sum to 0."""
    losses = F.cross_entropy(logits, target, reduction="none")
    return (losses * weight).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)


def _require(ok: bool, name: str, expected: str, value) -> None:
    if not ok:
        raise InputError(f"{name} must be {expected}; got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_num(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _outputs(model: nn.Module, X: np.ndarray, device: torch.device, batch_size: int) -> Tensor:
    """Model outputs for all of X in eval mode without gradients, as float32 on the CPU.

    A model that raises on a batch (a user's model may pass the checks on a few rows and fail
    on more) is a model error: CheckpointError naming the model and the batch.
    """
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.no_grad():
            for i in range(0, len(X), batch_size):
                batch = torch.from_numpy(X[i : i + batch_size]).to(device)
                try:
                    output = model(batch)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:
                    raise CheckpointError(
                        f"model {getattr(model, 'arch', '') or type(model).__name__} raised {describe_raised(exc)} "
                        f"on a batch of {len(batch)} rows (rows {i} to {i + len(batch) - 1})"
                    ) from None
                chunks.append(output.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def _prepare(model: nn.Module, X, device, batch_size) -> tuple[np.ndarray, torch.device]:
    _require(_is_int(batch_size) and batch_size >= 1, "batch_size", "a positive integer", batch_size)
    X = _check_X(model, X)
    dev = model_device(model) if device is None else resolve_device(device)
    model.to(dev)
    return X, dev


def _split_sample_weight(
    sample_weight: np.ndarray,
    class_w: np.ndarray | None,
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    dev: torch.device,
) -> tuple[Tensor, Tensor]:
    """Per-row loss weights of the training and validation rows (empty without a validation
    split), as float32 on ``dev``."""
    w = sample_weight if class_w is None else sample_weight * class_w[y]
    if w[train_idx].sum() <= 0:
        raise InputError("sample_weight is 0 for every training row; give some training rows a positive weight")
    if len(val_idx) and w[val_idx].sum() <= 0:
        raise InputError(
            "sample_weight is 0 for every validation row, so the validation loss is undefined; "
            "give them positive weights or pass val_fraction=0"
        )
    # A weighted mean does not change when all weights are scaled; scaling by the largest
    # keeps them within float32 range whatever their magnitude.
    w = torch.tensor(w / w.max(), dtype=torch.float32, device=dev)
    return w[torch.from_numpy(train_idx).to(dev)], w[torch.from_numpy(val_idx).to(dev)]


# --- training -----------------------------------------------------------------------------


def train(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray | None,
    *,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup_fraction: float = 0.05,
    patience: int | None = 5,
    val_fraction: float = 0.15,
    class_weights: bool = False,
    sample_weight: np.ndarray | None = None,
    mixed_precision: bool | None = None,
    noise_sigma: float = 0.0,
    noise_columns: Sequence[int] | None = None,
    device: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    r"""Trains a model in place with AdamW, warm-up + cosine learning rate and early stopping.

    Classifiers minimise cross-entropy on ``y``; an autoencoder (``model.arch ==
    "autoencoder"``) minimises the mean squared reconstruction error and ignores ``y``. A
    seeded split (stratified for classifiers, see :func:`train_val_split`) holds out
    ``val_fraction`` of the samples; training stops after ``patience`` epochs without a
    lower validation loss, and the weights of the best epoch are restored. The learning
    rate follows :func:`warmup_cosine` over ``epochs`` epochs, stepped per batch. A final
    batch of a single sample is skipped (BatchNorm cannot train on it).

    Args:
        model (nn.Module): Model from :func:`~scrutiny.models.architectures.build_model`.
        X (np.ndarray): Inputs, shape ``(N, *input_shape)``; converted to float32.
        y (np.ndarray or None): Integer labels in ``0..n_classes-1``, shape ``(N,)``; may
            be None for an autoencoder.
        epochs (int, optional): Maximum number of epochs.
            Default: 30
        batch_size (int, optional): Samples per optimizer step.
            Default: 128
        lr (float, optional): Peak learning rate.
            Default: 1e-3
        weight_decay (float, optional): AdamW decoupled weight decay.
            Default: 1e-4
        warmup_fraction (float, optional): Fraction of all steps spent in linear warm-up.
            Default: 0.05
        patience (int or None, optional): Epochs without improvement of the validation
            loss before stopping; None never stops early (best weights are still
            restored).
            Default: 5
        val_fraction (float, optional): Fraction held out for validation; 0 trains on
            everything, without early stopping.
            Default: 0.15
        class_weights (bool, optional): Weight the cross-entropy (training and validation)
            by balanced class weights ``n / (n_present_classes * count_c)`` of the training
            split.
            Default: False
        sample_weight (np.ndarray or None, optional): One weight >= 0 per row of ``X``
            (classifiers only). The cross-entropy of training batches and of the validation
            split becomes the weighted mean ``sum(w_i * loss_i) / sum(w_i)`` over their rows,
            with ``w_i`` multiplied by the class weight of ``y_i`` when ``class_weights`` is
            set. A weight of 0 removes a row from the loss; it still takes part in batch
            composition and in BatchNorm's batch statistics.
            Default: None
        mixed_precision (bool or None, optional): Autocast to bfloat16 (float16 with a
            GradScaler on GPUs without bfloat16); None turns it on for CUDA only.
            Default: None
        noise_sigma (float, optional): Gaussian noise augmentation, the base classifier
            randomized smoothing needs (Cohen et al. 2019): every training batch is fed to
            the model as ``x + N(0, noise_sigma²)`` on the ``noise_columns`` positions, fresh
            noise each step (the loss target of an autoencoder stays the clean input: it
            learns to denoise). The validation split gets noise too, drawn once and the same
            every epoch, so that early stopping keeps the best model under noise. In the
            model's input units: for scrutiny's tables the numeric columns are standardised
            with training statistics, so ``noise_sigma`` is in training standard deviations
            there. 0 trains on clean inputs.
            Default: 0.0
        noise_columns (sequence of int or None, optional): Positions of the flattened input
            that get noise (for tables: the encoded columns, e.g. the mutable numeric ones
            :func:`scrutiny.audit.robustness.smoothing.table_noise` finds); None: every
            position (images).
            Default: None
        device (str or None, optional): ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; None picks
            CUDA when available.
            Default: None
        seed (int, optional): Seeds the split, the batch order, dropout and the noise.
            Default: 0
        progress (bool, optional): Show a progress bar over epochs.
            Default: True

    Returns:
        TrainResult: The trained model, per-epoch history and timing.

    Raises:
        InputError: Bad option values (``epochs``, ``batch_size`` and ``seed`` within
            :data:`~scrutiny.limits.LIMITS`), X/y of the wrong shape or length, NaN in X,
            labels outside the model's classes, bad sample weights, or an unavailable device.

    Example:
        >>> model = build_model("mlp", input_shape=(4,), n_classes=2)  # doctest: +SKIP
        >>> X, y = np.random.default_rng(0).normal(size=(256, 4)), np.arange(256) % 2  # doctest: +SKIP
        >>> result = train(model, X, y, epochs=5, progress=False)  # doctest: +SKIP
        >>> len(result.history)  # doctest: +SKIP
        5
    """
    _check_options(epochs=epochs, batch_size=batch_size, seed=seed, lr=lr, weight_decay=weight_decay,
                   warmup_fraction=warmup_fraction, val_fraction=val_fraction, patience=patience)
    autoencoder = _is_autoencoder(model)
    X, y, sample_weight = _check_data(model, X, y, sample_weight, autoencoder)
    spread = _noise_spread(noise_sigma, noise_columns, X.shape[1:])
    dev = resolve_device(device)
    seed_everything(seed)

    train_idx, val_idx = train_val_split(len(X), y, val_fraction, seed)
    if len(train_idx) < 2:
        raise InputError(f"training needs at least 2 samples after the validation split; got {len(train_idx)}")
    model.to(dev)
    X_all = torch.from_numpy(X).to(dev)
    X_train, X_val = X_all[torch.from_numpy(train_idx).to(dev)], X_all[torch.from_numpy(val_idx).to(dev)]
    del X_all
    loss = _build_loss(model, y, train_idx, val_idx, dev, class_weights=class_weights, sample_weight=sample_weight)

    n_batches = len(train_idx) // batch_size + (len(train_idx) % batch_size > 1)
    precision = _Precision(dev, mixed_precision)
    optimiser = _Optimiser(model, lr=lr, weight_decay=weight_decay, total_steps=epochs * n_batches,
                           warmup_fraction=warmup_fraction, scaler=precision.scaler)
    generator = torch.Generator().manual_seed(seed)
    noise = None if spread is None else _Noise(spread, seed, dev)
    X_val_in = X_val if noise is None else noise(X_val)  # the same noisy validation rows every epoch
    history: list[dict] = []
    best = _BestWeights(patience)
    train_seconds, samples = 0.0, 0
    start = time.perf_counter()
    desc = f"train {getattr(model, 'arch', '')}".strip()
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        epoch_run = _train_epoch(model, X_train, loss, optimiser, precision, generator, batch_size, n_batches, noise)
        train_seconds += epoch_run.seconds
        samples += epoch_run.rows
        val_loss = _validation_loss(model, X_val, loss, precision, X_val_in) if len(val_idx) else None
        history.append({"epoch": epoch, "train_loss": epoch_run.loss, "val_loss": val_loss, "lr": epoch_run.lr})
        bar.set_postfix_str(f"train {epoch_run.loss:.4f}" + ("" if val_loss is None else f" val {val_loss:.4f}"))
        if best.stop_after(model, epoch, val_loss):
            break
    bar.close()
    optimiser.optimizer.zero_grad(set_to_none=True)  # hand the model back without training gradients
    best_epoch = best.restore(model, epochs_run=len(history))
    model.eval()
    precision.sync()
    return TrainResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        device=str(dev),
        seconds=time.perf_counter() - start,
        samples_per_second=samples / train_seconds if train_seconds > 0 else math.inf,
    )


def _check_options(*, epochs, batch_size, seed, lr, weight_decay, warmup_fraction, val_fraction, patience) -> None:
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_int("seed", seed)
    _require(_is_num(lr) and lr > 0, "lr", "a number > 0", lr)
    _require(_is_num(weight_decay) and weight_decay >= 0, "weight_decay", "a number >= 0", weight_decay)
    for name, value in (("warmup_fraction", warmup_fraction), ("val_fraction", val_fraction)):
        _require(_is_num(value) and 0 <= value < 1, name, "a number in [0, 1)", value)
    ok = patience is None or (_is_int(patience) and patience >= 1)
    _require(ok, "patience", "a positive integer or None", patience)


def _check_data(model: nn.Module, X, y, sample_weight, autoencoder: bool):
    """X as float32, y as int64 (None for an autoencoder) and the checked sample weights."""
    X = _check_X(model, X)
    y = None if autoencoder else _check_y(model, y, len(X))
    if sample_weight is not None:
        if autoencoder:
            raise InputError("sample_weight weights the cross-entropy of a classifier; an autoencoder takes none")
        sample_weight = _check_sample_weight(sample_weight, len(X))
    return X, y, sample_weight


class _Loss(Protocol):
    """The objective on the training batches and the validation split."""

    def batch(self, out: Tensor, xb: Tensor, idx: Tensor) -> tuple[Tensor, int | Tensor]:
        """The batch's loss and its total loss weight (the row count unweighted)."""

    def validation(self, out: Tensor, X_val: Tensor) -> float: ...


@dataclass
class _CriterionLoss:
    """Mean squared reconstruction error (an autoencoder: no labels) or cross-entropy,
    optionally class-weighted."""

    criterion: nn.Module
    y_train: Tensor | None = None
    y_val: Tensor | None = None

    def batch(self, out: Tensor, xb: Tensor, idx: Tensor) -> tuple[Tensor, int | Tensor]:
        return self.criterion(out.float(), xb if self.y_train is None else self.y_train[idx]), len(idx)

    def validation(self, out: Tensor, X_val: Tensor) -> float:
        return self.criterion(out, X_val if self.y_val is None else self.y_val).item()


@dataclass
class _RowWeightedLoss:
    """Cross-entropy weighted per row (from ``sample_weight``)."""

    y_train: Tensor
    y_val: Tensor
    w_train: Tensor
    w_val: Tensor

    def batch(self, out: Tensor, xb: Tensor, idx: Tensor) -> tuple[Tensor, int | Tensor]:
        wb = self.w_train[idx]
        return _weighted_cross_entropy(out.float(), self.y_train[idx], wb), wb.sum()

    def validation(self, out: Tensor, X_val: Tensor) -> float:
        return _weighted_cross_entropy(out, self.y_val, self.w_val).item()


def _build_loss(model: nn.Module, y: np.ndarray | None, train_idx: np.ndarray, val_idx: np.ndarray,
                dev: torch.device, *, class_weights: bool, sample_weight: np.ndarray | None) -> _Loss:
    if y is None:  # autoencoder
        return _CriterionLoss(nn.MSELoss())
    y_all = torch.from_numpy(y).to(dev)
    y_train, y_val = y_all[torch.from_numpy(train_idx).to(dev)], y_all[torch.from_numpy(val_idx).to(dev)]
    w = _balanced_class_weights(y[train_idx], _n_classes(model)) if class_weights else None
    if sample_weight is None:
        weight = None if w is None else torch.tensor(w, dtype=torch.float32, device=dev)
        return _CriterionLoss(nn.CrossEntropyLoss(weight=weight), y_train, y_val)
    w_train, w_val = _split_sample_weight(sample_weight, w, y, train_idx, val_idx, dev)
    return _RowWeightedLoss(y_train, y_val, w_train, w_val)


def _balanced_class_weights(y_train: np.ndarray, n_classes: int) -> np.ndarray:
    """``n / (n_present_classes * count_c)``; 0 for a class absent from the training split."""
    counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    present = counts > 0
    return np.where(present, len(y_train) / (present.sum() * np.maximum(counts, 1)), 0.0)


class _Precision:
    """Autocast to bfloat16 (float16 with a gradient scaler where the GPU lacks bfloat16) when
    mixed precision is on; None turns it on for CUDA only."""

    def __init__(self, dev: torch.device, mixed_precision: bool | None):
        self.dev = dev
        self.enabled = dev.type == "cuda" if mixed_precision is None else bool(mixed_precision)
        self.dtype = torch.float16 if dev.type == "cuda" and not torch.cuda.is_bf16_supported() else torch.bfloat16
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.dev.type, dtype=self.dtype, enabled=self.enabled)

    def sync(self) -> None:
        """Wait for the GPU, so that wall-clock timings cover its work."""
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)


class _Optimiser:
    """AdamW with the warm-up + cosine learning rate of :func:`warmup_cosine`, stepped per batch."""

    def __init__(self, model: nn.Module, *, lr: float, weight_decay: float, total_steps: int, warmup_fraction: float,
                 scaler: torch.amp.GradScaler):
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total_steps, int(round(warmup_fraction * total_steps)))
        )
        self.scaler = scaler

    def step(self, loss: Tensor) -> float:
        """One update on ``loss``; returns the learning rate it used."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = float(self.scheduler.get_last_lr()[0])  # a float: AdamW was given one
        self.scheduler.step()
        return lr


@dataclass
class _Epoch:
    loss: float     # weighted mean training loss
    lr: float       # of the epoch's last step
    rows: int       # training rows seen
    seconds: float  # wall-clock time of the training steps


def _train_epoch(model: nn.Module, X_train: Tensor, loss: _Loss, optimiser: _Optimiser, precision: _Precision,
                 generator: torch.Generator, batch_size: int, n_batches: int, noise: _Noise | None = None) -> _Epoch:
    """One pass over the training rows in a seeded order (with fresh noise on each batch's
    inputs when ``noise`` is given; the loss target stays the clean batch)."""
    model.train()
    precision.sync()
    t0 = time.perf_counter()
    order = torch.randperm(len(X_train), generator=generator).to(X_train.device)
    loss_sum = torch.zeros((), device=X_train.device)
    seen = 0  # rows
    weight_sum: int | Tensor = 0  # their total loss weight (the row count unweighted)
    for b in range(n_batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        xb = X_train[idx]
        with precision.autocast():
            out = model(xb if noise is None else noise(xb))
        batch_loss, batch_weight = loss.batch(out, xb, idx)
        lr = optimiser.step(batch_loss)
        loss_sum += batch_loss.detach() * batch_weight
        seen += len(idx)
        weight_sum += batch_weight
    total_weight = float(weight_sum)
    mean = loss_sum.item() / total_weight if total_weight > 0 else math.nan
    precision.sync()
    return _Epoch(loss=mean, lr=lr, rows=seen, seconds=time.perf_counter() - t0)


def _validation_loss(model: nn.Module, X_val: Tensor, loss: _Loss, precision: _Precision,
                     X_in: Tensor | None = None) -> float:
    """The loss on the validation rows, fed to the model as ``X_in`` (noisy copies) when given."""
    X_in = X_val if X_in is None else X_in
    model.eval()
    with torch.no_grad(), precision.autocast():
        out = torch.cat([model(X_in[i : i + 1024]).float() for i in range(0, len(X_in), 1024)])
    return loss.validation(out, X_val)


NOISE_KEY = 0x6E6F697365  # "noise": the noise generator's seed is drawn from (seed, NOISE_KEY)


def _noise_spread(noise_sigma, noise_columns, shape: tuple[int, ...]) -> np.ndarray | None:
    """The noise standard deviation of each input position (``shape``); None without noise."""
    _require(_is_num(noise_sigma) and noise_sigma >= 0, "noise_sigma", "a finite number >= 0", noise_sigma)
    size = int(np.prod(shape))
    if noise_columns is None:
        mask = np.ones(size, dtype=bool)
    else:
        columns = list(noise_columns)
        ok = bool(columns) and all(_is_int(c) and 0 <= c < size for c in columns) and len(set(columns)) == len(columns)
        _require(ok, "noise_columns", f"distinct positions from 0 to {size - 1} (at least one), or None for all",
                 noise_columns)
        mask = np.zeros(size, dtype=bool)
        mask[columns] = True
    if noise_sigma == 0:
        return None
    return (float(noise_sigma) * mask).astype(np.float32).reshape(shape)


class _Noise:
    """Adds ``N(0, spread²)`` noise, fresh on every call, from a generator on the device
    seeded from the training seed (apart from the batch order's, so that the batches are the
    same with and without noise)."""

    def __init__(self, spread: np.ndarray, seed: int, dev: torch.device):
        self.spread = torch.from_numpy(spread).to(dev)
        self.generator = torch.Generator(device=dev).manual_seed(
            int(np.random.SeedSequence([seed, NOISE_KEY]).generate_state(1)[0]))

    def __call__(self, x: Tensor) -> Tensor:
        draw = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return x + draw * self.spread


class _BestWeights:
    """Early stopping on the validation loss, keeping the weights of the best epoch."""

    def __init__(self, patience: int | None):
        self.patience = patience
        self.loss, self.epoch, self.stale = math.inf, 0, 0
        self.state: dict[str, Tensor] | None = None  # the best epoch's weights

    def stop_after(self, model: nn.Module, epoch: int, val_loss: float | None) -> bool:
        """Record the epoch; True when ``patience`` epochs in a row brought no lower loss."""
        if val_loss is None:
            return False
        if val_loss < self.loss:
            self.loss, self.epoch, self.stale = val_loss, epoch, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def restore(self, model: nn.Module, *, epochs_run: int) -> int:
        """Load the best weights into ``model``; returns the epoch they come from."""
        if self.state is None:  # no validation split, or no finite validation loss: keep the last weights
            return epochs_run
        model.load_state_dict(self.state)
        return self.epoch


# --- prediction and evaluation ------------------------------------------------------------


def predict_proba(model: nn.Module, X: np.ndarray, *, batch_size: int = 1024, device: str | None = None) -> np.ndarray:
    r"""Class probabilities (softmax of the logits) in eval mode, without gradients.

    The model's training mode is restored afterwards.

    Args:
        model (nn.Module): A classifier.
        X (np.ndarray): Inputs, shape ``(N, *input_shape)``.
        batch_size (int, optional): Samples per forward pass.
            Default: 1024
        device (str or None, optional): Device to run on (the model is moved there); None
            keeps the model where it is.
            Default: None

    Returns:
        np.ndarray: float64 probabilities of shape ``(N, n_classes)``.

    Example:
        >>> data = load_dataset("breast_cancer")  # doctest: +SKIP
        >>> proba = predict_proba(train_on(data).model, data.preprocessor.transform(data.test.X))  # doctest: +SKIP
        >>> proba.shape, bool(np.allclose(proba.sum(axis=1), 1.0))  # doctest: +SKIP
        ((143, 2), True)
    """
    if _is_autoencoder(model):
        raise InputError("predict_proba needs a classifier; got an autoencoder (use evaluate or reconstruction_error)")
    X, dev = _prepare(model, X, device, batch_size)
    return torch.softmax(_outputs(model, X, dev, batch_size).double(), dim=1).numpy()


def evaluate(
    model: nn.Module, X: np.ndarray, y: np.ndarray | None = None, *, batch_size: int = 1024, device: str | None = None
) -> dict:
    r"""Evaluates a classifier or an autoencoder on arrays.

    Args:
        model (nn.Module): A classifier or an autoencoder.
        X (np.ndarray): Inputs, shape ``(N, *input_shape)``.
        y (np.ndarray or None, optional): Integer labels; required for classifiers, ignored
            for autoencoders.
            Default: None
        batch_size (int, optional): Samples per forward pass.
            Default: 1024
        device (str or None, optional): Device to run on; None keeps the model where it is.
            Default: None

    Returns:
        dict: ``n`` (int, sample count) and plain floats: for classifiers ``accuracy``,
        ``ece`` (see :func:`expected_calibration_error`) and, for binary models only,
        ``roc_auc`` of P(class 1) (NaN when ``y`` holds a single class); for autoencoders
        ``reconstruction_mse`` (mean over samples of the per-sample MSE).

    Example:
        >>> data = load_dataset("breast_cancer")  # doctest: +SKIP
        >>> evaluate(train_on(data).model, data.preprocessor.transform(data.test.X), data.test.y)  # doctest: +SKIP
        {'accuracy': 0.958, 'ece': 0.035, 'n': 143, 'roc_auc': 0.994}
    """
    if _is_autoencoder(model):
        X, dev = _prepare(model, X, device, batch_size)
        recon = _outputs(model, X, dev, batch_size)
        mse = (recon - torch.from_numpy(X)).pow(2).flatten(1).mean(dim=1)
        return {"reconstruction_mse": float(mse.mean()), "n": len(X)}
    probs = predict_proba(model, X, batch_size=batch_size, device=device)
    y = _check_y(model, y, len(probs))
    metrics = {
        "accuracy": float((probs.argmax(axis=1) == y).mean()),
        "ece": expected_calibration_error(probs, y),
        "n": len(y),
    }
    if probs.shape[1] == 2:
        metrics["roc_auc"] = float(roc_auc_score(y, probs[:, 1])) if len(np.unique(y)) == 2 else math.nan
    return metrics
