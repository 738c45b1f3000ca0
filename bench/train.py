"""Training throughput of every architecture, in samples per second.

Runs :func:`scrutiny.models.training.train` itself (no validation split, so no early
stopping; mixed precision on CUDA as by default) with each architecture's default batch
size and learning rate on:

- sklearn's 8x8 digits: images for cnn, resnet, gru and autoencoder, 64 flattened columns
  for mlp and transformer;
- a synthetic tabular set (100,000 rows x 100 columns by default) for mlp, transformer and
  autoencoder.

Usage::

    python bench/train.py [--device cpu|cuda] [--epochs N] [--rows N] [--archs mlp,cnn] [--threads N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits

from scrutiny.models.architectures import ARCHITECTURES, build_model
from scrutiny.models.training import DEFAULT_TRAINING, train

IMAGE_ARCHS = {"cnn", "resnet", "gru", "autoencoder"}
TABULAR_ARCHS = ("mlp", "transformer", "autoencoder")


def digits(arch: str) -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    X = (data.images / 16.0).astype(np.float32)[:, None]
    if arch not in IMAGE_ARCHS:
        X = X.reshape(len(X), -1)
    return X, data.target.astype(np.int64)


def tabular(rows: int, cols: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, cols), dtype=np.float32)
    y = (X @ rng.standard_normal(cols) > 0).astype(np.int64)
    return X, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default: 3)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic tabular set (default: 100000)")
    parser.add_argument("--archs", default=",".join(ARCHITECTURES), help="comma-separated architectures (default: all)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    archs = [a for a in args.archs.split(",") if a]
    unknown = sorted(set(archs) - set(ARCHITECTURES))
    if unknown:
        parser.error(f"unknown architecture(s): {', '.join(unknown)}")

    if args.device == "cuda":
        hardware = torch.cuda.get_device_name()
    else:
        hardware = f"{torch.get_num_threads()} CPU threads"
    print(f"torch {torch.__version__}, {hardware}, {args.epochs} epochs per run")
    header = f"{'arch':<12} {'data':<20} {'device':<7} {'samples/s':>11} {'seconds':>8}"
    print(header)
    print("-" * len(header))

    runs = [(arch, "digits") for arch in archs] + [(a, "tabular") for a in TABULAR_ARCHS if a in archs]
    table = tabular(args.rows) if any(data == "tabular" for _, data in runs) else None
    for arch, data in runs:
        X, y = digits(arch) if data == "digits" else table
        label = f"digits {'x'.join(map(str, X.shape[1:]))}" if data == "digits" else f"tabular {len(X)}x{X.shape[1]}"
        torch.manual_seed(0)
        model = build_model(arch, input_shape=X.shape[1:], n_classes=int(y.max()) + 1)
        defaults = DEFAULT_TRAINING[arch]
        result = train(
            model,
            X,
            y,
            epochs=args.epochs,
            batch_size=defaults["batch_size"],
            lr=defaults["lr"],
            val_fraction=0.0,
            patience=None,
            device=args.device,
            progress=False,
        )
        speed = f"{result.samples_per_second:>11,.0f}"
        print(f"{arch:<12} {label:<20} {result.device:<7} {speed} {result.seconds:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
