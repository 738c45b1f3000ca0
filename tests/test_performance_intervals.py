"""The performance family's intervals: a multinomial draw over (label, prediction, confidence bin)
cells is the row bootstrap, up to Monte Carlo error and the within-bin spread of confidence it
leaves out; counted rows give the same bytes as the rows themselves."""

from __future__ import annotations

import numpy as np

from scrutiny.audit.performance.family import CALIBRATION_BINS, _bootstrap
from scrutiny.audit.row_counts import distinct


def rows(n: int = 20_000, seed: int = 3):
    rng = np.random.default_rng(seed)
    confidence = np.round(rng.uniform(0.5, 1.0, n), 3)
    pred = rng.integers(0, 2, n)
    correct = rng.random(n) < confidence ** 1.5          # over-confident: a calibration error well above 0
    y = np.where(correct, pred, 1 - pred)
    return y, pred, confidence


def row_bootstrap(y, pred, confidence, n_boot: int, seed: int):
    """Resampling rows, by hand: accuracy, balanced accuracy, calibration error per resample."""
    rng = np.random.default_rng(seed)
    bins = np.clip(np.ceil(confidence * CALIBRATION_BINS).astype(int) - 1, 0, CALIBRATION_BINS - 1)
    out = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        yy, pp, cc, bb = y[i], pred[i], confidence[i], bins[i]
        ok = (yy == pp).astype(float)
        balanced = np.mean([ok[yy == c].mean() for c in (0, 1)])
        ece = sum(abs((ok - cc)[bb == b].sum()) for b in np.unique(bb)) / len(yy)
        out.append((ok.mean(), balanced, ece))
    return np.quantile(np.array(out), [0.025, 0.975], axis=0)


def test_cell_draws_match_the_row_bootstrap():
    y, pred, confidence = rows()
    point, low, high = _bootstrap(y, pred, confidence, None, 2, np.random.default_rng(0))
    ok = (y == pred)
    assert point[0] == ok.mean()
    assert point[1] == np.mean([ok[y == c].mean() for c in (0, 1)])
    reference = row_bootstrap(y, pred, confidence, 1000, seed=1)
    for i in range(3):
        assert low[i] < point[i] < high[i]
        width = reference[1, i] - reference[0, i]
        assert abs(low[i] - reference[0, i]) < 0.15 * width and abs(high[i] - reference[1, i]) < 0.15 * width, i


def test_counted_rows_give_the_same_bytes():
    y, pred, confidence = rows(5_000)
    (cy, cp, cc), counts = distinct([y, pred, confidence])
    assert len(counts) < len(y)
    assert _bootstrap(y, pred, confidence, None, 2, np.random.default_rng(7)) == \
        _bootstrap(cy, cp, cc, counts, 2, np.random.default_rng(7))
