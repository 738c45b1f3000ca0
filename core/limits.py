"""Bounds on the numbers a user gives: seeds and counts.

One table, read by the CLI (its options' ranges and help), the audit config loader and the
library functions, so that a seed NumPy cannot take or a count that would allocate the
machine's memory is refused up front, naming the value, instead of failing deep inside a
library.
"""

from __future__ import annotations

from numbers import Integral

from scrutiny.errors import InputError

__all__ = ["LIMITS", "check_int"]

# name -> (smallest, largest) accepted value, both included
LIMITS: dict[str, tuple[int, int]] = {
    "seed": (0, 2**32 - 1),          # numpy.random.seed and SeedSequence-derived generators take 32-bit seeds
    "epochs": (1, 100_000),
    "batch_size": (1, 1_048_576),
    "samples": (1, 10_000_000),      # rows to explain or attack (capped at the test split anyway)
    "quality_samples": (1, 10_000_000),
    "stability_rows": (1, 10_000_000),
    "top_k": (1, 100_000),
    "top": (1, 100_000),
    "steps": (1, 100_000),           # PGD iterations
    "restarts": (1, 1_000),
    "queries": (1, 10_000_000),      # Square attack queries per row
    "n_boot": (0, 100_000),          # bootstrap resamples (0: no interval)
    "importance_boot": (1, 100_000), # resamples of the attribution importance intervals (always drawn)
    "boot": (0, 100_000),
    "chunk_rows": (1, 1_000_000),    # rows per unit of per-row work (audit/run/executor.py)
    "batch_rows": (1, 1 << 24),      # rows per record batch of a streamed Parquet file (models/parquet_counts.py)
    "n0": (1, 10_000_000),           # randomized smoothing: noisy copies per row that choose the class
    "n": (1, 100_000_000),           # ... and that bound its probability (audit/robustness/smoothing.py)
}


def check_int(name: str, value, *, where: str | None = None, limit: str | None = None) -> int:
    """``value`` as an int within ``LIMITS[limit or name]``; InputError naming ``name`` otherwise.

    Args:
        name: how the caller's user knows the value (a key, an argument name).
        value: the value given.
        where: what holds it (a file), put before the name in the message.
        limit: the LIMITS entry to use when it differs from ``name`` (e.g. ``"samples"`` for
            ``"robustness.samples"``).
    """
    low, high = LIMITS[limit or name.rsplit(".", 1)[-1]]
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(f"{prefix}'{name}' must be a whole number from {low:,} to {high:,}, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise InputError(f"{prefix}'{name}' must be from {low:,} to {high:,}, got {number:,}")
    return number
