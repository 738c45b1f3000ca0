"""Statistics of rows given as distinct values with counts.

A table of logged decisions larger than memory is streamed and kept as its distinct rows, each
with the number of rows it stands for (:func:`~scrutiny.models.load_predictions`). The
performance and fairness families take every statistic through :func:`distinct` (a canonical
table of cells: the distinct value combinations in sorted order, with their counts), from rows
or from counted rows alike, so that both give the same cells and therefore the same bytes: the
point values, the exact median, and the bootstrap, which is a multinomial draw of the total
over the cells (equal in distribution to resampling rows, at a cost that does not grow with the
number of rows).
"""

from __future__ import annotations

import numpy as np

__all__ = ["distinct", "median", "resample"]


def distinct(columns: list[np.ndarray], weights: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct combinations of ``columns`` (equal-length 1-D numeric arrays), in lexicographic
    order, and the rows (summed ``weights``; default one per row) of each.

    Example:
        >>> distinct([np.array([1, 0, 1]), np.array([0.5, 0.2, 0.5])])
        ([array([0, 1]), array([0.2, 0.5])], array([1, 2]))
    """
    arrays = [np.asarray(c) for c in columns]
    order = np.lexsort(arrays[::-1])
    sorted_columns = [a[order] for a in arrays]
    n = len(order)
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
        for a in sorted_columns:
            change[1:] |= a[1:] != a[:-1]
    starts = np.flatnonzero(change)
    counts = (np.diff(np.append(starts, n)) if weights is None
              else np.add.reduceat(np.asarray(weights, dtype=np.int64)[order], starts) if n else np.zeros(0, np.int64))
    return [a[starts] for a in sorted_columns], np.asarray(counts, dtype=np.int64)


def median(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The median of the rows (``values`` each repeated ``weights`` times), as ``np.median`` of
    those rows gives it: the middle value, or the mean of the two middle values."""
    (sorted_values,), counts = distinct([np.asarray(values, dtype=np.float64)], weights)
    n = int(counts.sum())
    if not n:
        raise ValueError("median of no rows")
    ends = np.cumsum(counts)
    lower = sorted_values[np.searchsorted(ends, (n - 1) // 2, side="right")]
    upper = sorted_values[np.searchsorted(ends, n // 2, side="right")]
    return float(np.mean([lower, upper]))


def resample(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` bootstrap resamples of the rows behind ``counts`` (one per cell), as counts per
    cell: a multinomial draw of the total over the cells, shaped (size, cells)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    return rng.multinomial(total, counts / total, size=size)
