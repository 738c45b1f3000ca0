"""The performance family: :func:`run`."""

from __future__ import annotations

import numpy as np

from scrutiny.audit import row_counts
from scrutiny.audit.run.details import Estimate
from scrutiny.audit.run.family import AuditContext, FamilyResult

from .details import DATA_PROFILE, PREDICTIONS, PerformanceDetails

__all__ = ["run", "NEEDS_MODEL"]

NEEDS_MODEL = False  # logged decisions (and scores) are enough

N_BOOT = 1000
CALIBRATION_BINS = 15


def run(context: AuditContext) -> FamilyResult:
    """Balanced accuracy and calibration error on the test split, with bootstrap intervals.

    Example:
        >>> result = run(context)  # doctest: +SKIP
        >>> result.details.balanced_accuracy.value  # doctest: +SKIP
        0.781
    """
    c = context
    spec, y, weights = c.dataset.spec, c.dataset.test.y, c.dataset.test.weights
    proba, pred, score = _outputs(c)
    k = spec.n_classes
    n = len(c.dataset.test)
    rng = np.random.default_rng(c.config.seed)
    # without probabilities the calibration columns are computed on a stand-in and dropped below
    point, low, high = _bootstrap(y, pred, proba.max(axis=1) if proba is not None else np.ones(len(y)), weights, k, rng)
    if proba is None:
        point[2] = low[2] = high[2] = float("nan")
    accuracy, balanced, calibration = point
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1 if weights is None else weights)
    details = PerformanceDetails(
        n=n,
        accuracy=Estimate(accuracy, low[0], high[0]),
        balanced_accuracy=Estimate(balanced, low[1], high[1]),
        calibration_error=Estimate(calibration, low[2], high[2]),
        confidence=0.95,
        classes=list(spec.classes),
        recall=[float(confusion[i, i] / max(confusion[i].sum(), 1)) for i in range(k)],
        confusion=confusion.tolist(),
        majority_rate=float(confusion.sum(axis=1).max() / n),
    )
    if k == 2 and len(np.unique(y)) == 2 and score is not None:
        from sklearn.metrics import roc_auc_score

        (labels, scores), counts = row_counts.distinct([y, score], weights)
        details.roc_auc = float(roc_auc_score(labels, scores, sample_weight=counts))
    findings = [
        c.finding("performance.balanced_accuracy", balanced, interval=(low[1], high[1]), confidence=0.95,
                  metric="balanced accuracy (mean recall over classes)",
                  explanation=f"Mean recall over the {k} classes on {n:,} test rows is {balanced:.1%} "
                              f"(chance: {1 / k:.0%}; plain accuracy {accuracy:.1%}, majority class "
                              f"{details.majority_rate:.1%})."),
    ]
    if proba is not None:
        findings.append(c.finding(
            "performance.calibration_error", calibration, interval=(low[2], high[2]), confidence=0.95,
            metric=f"expected calibration error ({CALIBRATION_BINS} bins)",
            explanation=f"The model's stated confidence differs from its observed accuracy by {calibration:.3f} on "
                        "average over confidence bins."))
    else:
        findings.append(c.not_assessed("performance.calibration_error",
                                       "the logged predictions carry no probability (a score that is not "
                                       "declared score_is_probability, or no score)"))
    stored = {"y_true": y, "y_pred": pred}
    if proba is not None:
        stored["proba"] = proba.astype(np.float32)
    if weights is not None:
        stored["weight"] = weights
    arrays = {PREDICTIONS: stored}
    profile = data_profile(c.dataset)
    if profile is not None:
        arrays[DATA_PROFILE] = profile
    return FamilyResult(findings=findings, details=details, arrays=arrays)


def data_profile(dataset) -> dict[str, np.ndarray] | None:
    """The audited rows' features in original units (:data:`~.details.DATA_PROFILE`), for the drift
    between runs; None for images and for logged decisions without feature columns."""
    import pandas as pd

    X = dataset.test.X
    if not isinstance(X, pd.DataFrame):
        return None
    features = [f for f in dataset.spec.features if f.name in X.columns]
    if not features:
        return None
    arrays: dict[str, np.ndarray] = {"feature": np.array([f.name for f in features], dtype=str),
                                     "kind": np.array([f.kind for f in features], dtype=str)}
    for i, feature in enumerate(features):
        column = X[feature.name]
        if feature.kind == "numeric":
            arrays[f"f{i}"] = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            continue
        missing = column.isna().to_numpy()
        text = [None if gone else str(v) for v, gone in zip(column.astype(object).tolist(), missing, strict=True)]
        categories = sorted({v for v in text if v is not None})
        index = {c: j for j, c in enumerate(categories)}
        arrays[f"f{i}"] = np.array([-1 if v is None else index[v] for v in text], dtype=np.int32)
        arrays[f"f{i}_categories"] = np.array(categories, dtype=str) if categories else np.array([], dtype="<U1")
    return arrays


def _outputs(c: AuditContext) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Class probabilities (None where only decisions or a score are known), predicted classes,
    and a score that leans favourable (two classes; None without one)."""
    if c.model is None:
        predictions = c.predictions
        assert predictions is not None  # the runner gives a model or predictions
        p = predictions.probability
        proba = None if p is None else np.column_stack([1 - p, p])
        return proba, predictions.decisions, predictions.favourable_scores
    from scrutiny.models.training import predict_proba

    proba = predict_proba(c.model, c.preprocessor.transform(c.dataset.test.X), device=c.device)
    return proba, proba.argmax(axis=1), proba[:, 1] if proba.shape[1] == 2 else None


def _bootstrap(y: np.ndarray, pred: np.ndarray, confidence: np.ndarray, weights: np.ndarray | None, k: int,
               rng: np.random.Generator):
    """Accuracy, balanced accuracy and calibration error: point values and 95 % percentile-bootstrap
    bounds.

    The rows (each entry ``weights`` times) are taken as their distinct (label, prediction,
    confidence) cells, in sorted order, so that rows and counted rows give the same bytes. A
    resample is a multinomial draw over the (label, prediction, confidence bin) cells, each with its
    rows' summed confidence scaled by the draw: the within-bin spread of confidence (a bin is 1/15
    wide) is left out of the interval, tiny next to that of the outcomes, and the interval does not
    move with a confidence's last bits (an ONNX export of the same weights gives the same one).
    """
    (y, pred, confidence), counts = row_counts.distinct([y, pred, confidence], weights)
    bins = np.clip(np.ceil(confidence * CALIBRATION_BINS).astype(int) - 1, 0, CALIBRATION_BINS - 1)  # (lo, hi]
    # the (label, prediction, bin) cells: sorted by (label, prediction, confidence), so a cell's rows are consecutive
    starts = np.flatnonzero(np.r_[True, (y[1:] != y[:-1]) | (pred[1:] != pred[:-1]) | (bins[1:] != bins[:-1])])
    cell_y, cell_pred, cell_bin = y[starts], pred[starts], bins[starts]
    cell_rows = np.add.reduceat(counts, starts)
    cell_confidence = np.add.reduceat(counts * confidence, starts)   # summed over the cell's rows
    correct = (cell_pred == cell_y).astype(np.float64)

    def stats(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """accuracy, balanced accuracy, calibration error with each cell's rows scaled by w (B, cells)."""
        rows = w * cell_rows
        total = rows.sum(axis=1)
        accuracy = rows @ correct / total
        recalls = [(rows @ (correct * (cell_y == cls))) / np.maximum(rows @ (cell_y == cls).astype(np.float64), 1e-12)
                   for cls in range(k) if (cell_y == cls).any()]
        gap = np.zeros(len(w))
        for b in np.unique(cell_bin):
            in_bin = (cell_bin == b).astype(np.float64)
            gap += np.abs(rows @ (in_bin * correct) - w @ (in_bin * cell_confidence))
        return accuracy, np.mean(recalls, axis=0), gap / total

    # w scales each cell: 1 for the rows themselves, draws / rows for a resample
    point = [float(s[0]) for s in stats(np.ones((1, len(cell_rows))))]
    scaled = (row_counts.resample(cell_rows, min(100, N_BOOT - start), rng) / cell_rows for start in range(0, N_BOOT, 100))
    boot = [np.concatenate(parts) for parts in zip(*(stats(w) for w in scaled))]
    low = [float(np.quantile(b, 0.025)) for b in boot]
    high = [float(np.quantile(b, 0.975)) for b in boot]
    return point, low, high
