"""Train a standard architecture on a data set with the defaults that suit it.

This is what ``scrutiny train`` runs: pick the architecture (MLP for tables, CNN for images
unless told otherwise), encode the splits with the data set's fitted preprocessing, train
with the architecture's defaults (overridable), and score the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from scrutiny.errors import InputError
from scrutiny.limits import check_int
from scrutiny.modality import MODALITIES, modality
from scrutiny.models.architectures import build_model
from scrutiny.models.datasets import Dataset
from scrutiny.models.training import DEFAULT_TRAINING, evaluate, train

__all__ = ["DEFAULT_ARCH", "TrainedModel", "train_on"]

DEFAULT_ARCH = {name: m.default_arch for name, m in MODALITIES.items()}
IMAGE_ONLY = {"cnn", "resnet", "gru"}

# A few hundred rows (German credit, breast cancer) give only a handful of batches per epoch
# at the usual batch size: smaller batches and more epochs give the optimiser enough steps.
SMALL_DATA_ROWS = 2_000
SMALL_DATA_TRAINING = {"batch_size": 32, "epochs": 100, "patience": 15}


@dataclass
class TrainedModel:
    model: nn.Module
    metrics: dict
    settings: dict
    seed: int


def train_on(
    dataset: Dataset,
    arch: str | None = None,
    *,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    sample_weight: np.ndarray | None = None,
    **overrides: Any,
) -> TrainedModel:
    """Build ``arch`` for ``dataset``, train it on the training split, score the test split.

    Args:
        dataset: a loaded data set.
        arch: architecture name. Default: the data type's (``DEFAULT_ARCH``: mlp for tables, cnn for images).
        seed: seeds weight initialisation, the validation split and shuffling.
        device: ``"cpu"``, ``"cuda"``, … Default: CUDA when present.
        progress: show a progress bar.
        sample_weight: one loss weight >= 0 per row of ``dataset.train``, in its order
            (see :func:`~scrutiny.models.training.train`). Default: unweighted.
        **overrides: training settings that replace the architecture's defaults
            (``epochs``, ``batch_size``, ``lr``, ``class_weights``, …).

    Example:
        >>> trained = train_on(load_dataset("breast_cancer"), epochs=20, progress=False)  # doctest: +SKIP
        >>> trained.metrics["accuracy"] > 0.9, type(trained.model).__name__  # doctest: +SKIP
        (True, 'MLP')
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a Dataset, got {type(dataset).__name__}")
    arch = arch or modality(dataset.spec.task).default_arch
    if arch in IMAGE_ONLY and dataset.spec.task != "image":
        raise InputError(f"architecture '{arch}' reads images; data set '{dataset.spec.name}' is tabular "
                         "(try mlp or transformer)")
    if arch == "autoencoder":
        raise InputError("architecture 'autoencoder' is an out-of-distribution scorer, not a classifier; "
                         "train a classifier here")
    check_int("seed", seed)
    if overrides.get("epochs") is not None:
        check_int("epochs", overrides["epochs"])
    import torch

    torch.manual_seed(seed)
    hparams = {}
    if arch == "transformer" and dataset.spec.task == "tabular":
        hparams["feature_groups"] = list(dataset.preprocessor.feature_groups.values())
    model = build_model(
        arch, input_shape=tuple(dataset.preprocessor.input_shape), n_classes=dataset.spec.n_classes, **hparams
    )
    settings = dict(DEFAULT_TRAINING.get(arch, {}))
    if len(dataset.train) < SMALL_DATA_ROWS:
        settings.update(SMALL_DATA_TRAINING)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    result = train(
        model,
        dataset.encode(dataset.train.X),
        dataset.train.y,
        sample_weight=sample_weight,
        seed=seed,
        device=device,
        progress=progress,
        **settings,
    )
    metrics = evaluate(result.model, dataset.encode(dataset.test.X), dataset.test.y, device=result.device)
    result.model.cpu().eval()
    settings = {**settings, "best_epoch": result.best_epoch, "device": result.device,
                "samples_per_second": round(result.samples_per_second, 1)}
    return TrainedModel(model=result.model, metrics=metrics, settings=settings, seed=seed)
