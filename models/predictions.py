"""Logged decisions and scores, without the model: a CSV or Parquet file and a small TOML spec.

An independent auditor (a NYC Local Law 144 bias audit) or a validator given a vendor's output
holds a table of outcomes, decisions or scores, and group columns, not the model. Example
``compas.toml`` for ProPublica's ``compas-scores-two-years.csv``::

    label = "two_year_recid"      # the true outcome (required)
    favourable = 0                # its favourable value (required): no reoffence
    score = "decile_score"        # the model's score (optional if there is a decision column)
    higher_is_favourable = false  # a high decile is high risk; default true
    threshold = 5                 # decision from the score: favourable below 5 here (at or above
                                  #   it where higher is favourable), "medium or high" risk is 5+
    # prediction = "decision"     # or a column of logged decisions, coded as the label
    # prediction_favourable = 1   #   with its own favourable value when coded otherwise
    # score_is_probability = true # the score is P(favourable): calibration is then measured
    # split = "fold"              # a column of "train" / "test": the labels of "train" rows are
                                  #   the data-set reference, "test" rows are audited; default:
                                  #   every row is both (the file is already held-out data)
    missing = "error"             # or "drop": rows missing the label, decision, score or split
                                  #   (a missing group value is the unknown category: kept, left out
                                  #   of that attribute's comparisons, counted apart in the tables)
    description = "COMPAS decile scores"

    [protected]                   # as in a table spec: privileged values, { min = N } or
    race = { reference = "Caucasian" }   # a reference category each other one is compared with
    sex = ["Female"]

A logged decision wins over one derived from the score where both are given. Other columns
are ignored: without the model there is nothing to explain or attack.

A CSV file is read whole. A Parquet file, or a folder of them, is streamed in record batches
and kept as its distinct rows with counts (:mod:`scrutiny.models.parquet_counts`): an audit
of more rows than memory holds, with the same findings as the rows read whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scrutiny.errors import DataError
from scrutiny.hashing import sha256_path
from scrutiny.models.datasets import Dataset, Split
from scrutiny.models.parquet_counts import BATCH_ROWS, count_rows, is_parquet
from scrutiny.models.preprocessing import TabularPreprocessor
from scrutiny.models.spec import DatasetSpec
from scrutiny.models.user_data import check_reference, match_value, protected_attribute, read_frame, read_spec_file

if TYPE_CHECKING:
    from scrutiny.audit.run.executor import Executor

__all__ = ["Predictions", "load_predictions", "PREDICTION_KEYS"]

PREDICTION_KEYS = {"label", "favourable", "prediction", "prediction_favourable", "score", "higher_is_favourable",
                   "threshold", "score_is_probability", "split", "missing", "protected", "description"}
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Predictions:
    """A model's output on the rows of a data set's test split, logged rather than computed.

    Args:
        decisions: 1 where the decision is the favourable outcome, else 0.
        scores: the raw score of each row, or None.
        higher_is_favourable: whether a higher score leans to the favourable outcome.
        scores_are_probabilities: whether the score is the probability of its side's outcome.
        rule: how the decisions were made, in words (a column, or a threshold on the score).
        score_name: the score's column, for display.
    """

    decisions: np.ndarray
    scores: np.ndarray | None = None
    higher_is_favourable: bool = True
    scores_are_probabilities: bool = False
    rule: str = ""
    score_name: str = "score"

    @property
    def favourable_scores(self) -> np.ndarray | None:
        """The score oriented so that higher leans favourable (for ROC AUC)."""
        if self.scores is None:
            return None
        return self.scores if self.higher_is_favourable else -self.scores

    @property
    def probability(self) -> np.ndarray | None:
        """P(favourable) per row, where the score is a probability."""
        if self.scores is None or not self.scores_are_probabilities:
            return None
        return self.scores if self.higher_is_favourable else 1.0 - self.scores


def load_predictions(path: str | os.PathLike, spec_path: str | os.PathLike, *, stream: bool | None = None,
                     batch_rows: int = BATCH_ROWS, executor: Executor | None = None) -> tuple[Dataset, Predictions]:
    """Read a file of outcomes, decisions or scores and group columns, described by the TOML spec
    at ``spec_path`` (see the module docstring): the data set (labels and groups; its training
    split is the data-set reference, its test split the audited rows) and the predictions on its
    test split.

    Args:
        path: a .csv or .parquet file, or a folder of .parquet files.
        stream: read a Parquet file or folder in record batches of ``batch_rows`` rows into its
            distinct rows with counts (the splits' ``weights``), in memory bounded by the distinct
            rows; default: Parquet is streamed, CSV read whole. ``False`` reads a Parquet file whole.
        executor: runs the streamed row groups (default: one after another, here).

    Example:
        >>> data, predictions = load_predictions("compas.csv", "compas.toml")  # doctest: +SKIP
        >>> predictions.rule  # doctest: +SKIP
        'favourable where decile_score < 5'
    """
    for name, value in (("path", path), ("spec_path", spec_path)):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")
    path, spec_path = Path(path), Path(spec_path)
    options = _read_spec(spec_path)
    named = [options[key] for key in ("label", "prediction", "score", "split") if key in options]
    if stream is None:
        stream = is_parquet(path)
    if stream and not is_parquet(path):
        raise DataError(f"{path}: only a Parquet file or a folder of them can be streamed")
    weights: np.ndarray | None = None
    if stream:
        frame, weights = count_rows(path, named + list(options["protected"]), batch_rows=batch_rows, executor=executor)
    else:
        frame = read_frame(path, used=named + list(options["protected"]))
    every = np.ones(len(frame), dtype=np.int64) if weights is None else weights

    def column(key: str) -> str | None:
        name = options.get(key)
        if name is not None and name not in frame.columns:
            raise DataError(f"{path}: {key} column {name!r} named in {spec_path} not found "
                            f"(columns: {', '.join(map(str, frame.columns))})")
        return name

    label, decision, score, split = column("label"), column("prediction"), column("score"), column("split")
    assert label is not None
    protected = [protected_attribute(name, privileged, spec_path) for name, privileged in options.get("protected", {}).items()]
    for attribute in protected:
        if attribute.name not in frame.columns:
            raise DataError(f"{path}: protected column '{attribute.name}' not found "
                            f"(columns: {', '.join(map(str, frame.columns))})")
        check_reference(attribute, frame[attribute.name], f"{path} (reference named in {spec_path})")
    # a protected value may be unknown (LL144 counts such rows apart): only the outcome's columns must be whole
    used = list(dict.fromkeys(c for c in (label, decision, score, split) if c))
    gaps = frame[used].isna().any(axis=1).to_numpy()
    dropped = int(every[gaps].sum())
    if gaps.any():
        if options.get("missing", "error") == "error":
            missing = {c: int(every[frame[c].isna().to_numpy()].sum()) for c in used}
            worst = max(missing, key=lambda c: missing[c])
            raise DataError(f"{path}: column '{worst}' has {missing[worst]} missing value(s); "
                            f"drop those rows first, or set missing = \"drop\" in {spec_path}")
        frame, every = frame[~gaps].reset_index(drop=True), every[~gaps]
        if weights is not None:
            weights = every
        if frame.empty:
            raise DataError(f"{path}: every row misses a value of {', '.join(used)}")

    labels = frame[label].unique()
    if len(labels) != 2:
        shown = ", ".join(map(str, labels[:5])) + (", …" if len(labels) > 5 else "")
        raise DataError(f"{path}: label column '{label}' has {len(labels)} distinct value(s) ({shown}); "
                        "an audit of decisions needs exactly two")
    favourable = match_value(options["favourable"], labels)
    if favourable is None:
        raise DataError(f"{path}: favourable value {options['favourable']!r} is not in label column '{label}' "
                        f"(values: {', '.join(map(str, labels))})")
    y = (frame[label] == favourable).to_numpy().astype(np.int64)

    scores = None
    if score is not None:
        if not pd.api.types.is_numeric_dtype(frame[score]) or pd.api.types.is_bool_dtype(frame[score]):
            raise DataError(f"{path}: score column '{score}' must hold numbers, found {frame[score].dtype} values "
                            f"such as {frame[score].iloc[0]!r}")
        scores = frame[score].to_numpy(dtype=np.float64)
        if not np.isfinite(scores).all():
            raise DataError(f"{path}: score column '{score}' holds infinite values")
        if options.get("score_is_probability") and not ((scores >= 0) & (scores <= 1)).all():
            raise DataError(f"{spec_path}: score_is_probability is true but score column '{score}' has values "
                            f"outside [0, 1] (from {scores.min():g} to {scores.max():g})")
    higher = options.get("higher_is_favourable", True)
    if decision is not None:
        coded = options.get("prediction_favourable", options["favourable"])
        values = frame[decision].unique()
        matched = match_value(coded, values)
        if matched is None or len(values) > 2:
            raise DataError(f"{path}: prediction column '{decision}' must hold two values, one of them the "
                            f"favourable {coded!r} (values: {', '.join(map(str, values[:5]))})")
        decisions = (frame[decision] == matched).to_numpy().astype(np.int64)
        rule = f"logged decisions: {decision} = {matched}"
    else:
        assert scores is not None  # _read_spec asks for a threshold with a score when no decision column
        threshold = float(options["threshold"])
        decisions = ((scores >= threshold) if higher else (scores < threshold)).astype(np.int64)
        rule = f"favourable where {score} {'>=' if higher else '<'} {threshold:g}"

    if split is not None:
        values = set(frame[split].astype(str))
        if not values <= set(SPLITS) or "test" not in values:
            raise DataError(f"{path}: split column '{split}' must hold 'train' and 'test' (found "
                            f"{', '.join(sorted(values))})")
        test = (frame[split].astype(str) == "test").to_numpy()
        train = ~test if (~test).any() else test
    else:
        train = test = np.ones(len(frame), dtype=bool)
    spec = DatasetSpec(
        name=path.stem, task="tabular", label=label,
        classes=(str(next(v for v in labels if v != favourable)), str(favourable)),
        favourable_label=favourable.item() if hasattr(favourable, "item") else favourable,
        protected=tuple(protected),
        description=options.get("description", f"logged predictions {path.name}"),
        extra={"source": path.name, "predictions": rule, "missing": options.get("missing", "error"),
               "dropped_rows": dropped},
    )
    groups = frame[[p.name for p in protected]]

    def part(rows: np.ndarray) -> Split:
        return Split(X=pd.DataFrame(index=range(int(rows.sum()))), y=y[rows], groups=groups[rows].reset_index(drop=True),
                     weights=None if weights is None else weights[rows])

    audited = part(test)
    dataset = Dataset(spec=spec, train=audited if train is test else part(train), test=audited,
                      preprocessor=TabularPreprocessor(spec).fit(pd.DataFrame()), sha256=sha256_path(path))
    predictions = Predictions(decisions=decisions[test], scores=None if scores is None else scores[test],
                              higher_is_favourable=higher, scores_are_probabilities=bool(options.get("score_is_probability")),
                              rule=rule, score_name=score or "score")
    return dataset, predictions


def _read_spec(path: Path) -> dict:
    """Read and check a predictions spec; errors name the file and the key."""
    spec = read_spec_file(path, PREDICTION_KEYS)
    for key in ("label", "prediction", "score", "split", "description"):
        if key in spec and not isinstance(spec[key], str):
            raise DataError(f"{path}: '{key}' must be a column name (text), got {spec[key]!r}")
    for key in ("higher_is_favourable", "score_is_probability"):
        if not isinstance(spec.get(key, False), bool):
            raise DataError(f"{path}: '{key}' must be true or false, got {spec[key]!r}")
    if "prediction" not in spec and "score" not in spec:
        raise DataError(f"{path}: name a 'prediction' column (logged decisions) or a 'score' column with a "
                        "'threshold'; the audit needs the model's output")
    if "prediction" not in spec and "threshold" not in spec:
        raise DataError(f"{path}: 'threshold' is needed to turn score column {spec['score']!r} into decisions "
                        "(or name a 'prediction' column)")
    threshold = spec.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not np.isfinite(threshold)):
        raise DataError(f"{path}: 'threshold' must be a number, got {threshold!r}")
    if spec.get("missing", "error") not in ("error", "drop"):
        raise DataError(f"{path}: 'missing' must be 'error' or 'drop', got {spec['missing']!r}")
    if not isinstance(spec.get("protected", {}), dict) or not spec.get("protected"):
        raise DataError(f"{path}: [protected] must name at least one group column (column = privileged values, "
                        "{ min = N } or { reference = CATEGORY })")
    if spec["label"] in spec["protected"]:
        raise DataError(f"{path}: [protected] lists the label column '{spec['label']}'")
    return spec
