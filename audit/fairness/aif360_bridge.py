"""The one way scrutiny hands data to aif360: its classes imported quietly, and a
``BinaryLabelDataset`` of 0/1 labels, a 0/1 privileged-group column and, optionally, features."""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd

__all__ = ["LABEL", "GROUP", "PRIVILEGED", "UNPRIVILEGED", "aif360", "label_dataset"]

LABEL, GROUP = "label", "privileged"
PRIVILEGED, UNPRIVILEGED = [{GROUP: 1.0}], [{GROUP: 0.0}]  # aif360's privileged_groups / unprivileged_groups


@functools.cache
def aif360() -> SimpleNamespace:
    """aif360's data set, metric and mitigation classes, imported on first use.

    Importing aif360's algorithms logs a warning through the root logger for each optional
    dependency it lacks (tensorflow, fairlearn, …), and that call also installs a handler on
    the root logger; both are kept away for the duration of the import.
    """
    root, quiet, disabled = logging.getLogger(), logging.NullHandler(), logging.root.manager.disable
    root.addHandler(quiet)
    logging.disable(logging.WARNING)
    try:
        from aif360.algorithms.postprocessing.eq_odds_postprocessing import EqOddsPostprocessing
        from aif360.algorithms.preprocessing.reweighing import Reweighing
        from aif360.datasets import BinaryLabelDataset
        from aif360.metrics import BinaryLabelDatasetMetric, ClassificationMetric
    finally:
        logging.disable(disabled)
        root.removeHandler(quiet)
    return SimpleNamespace(BinaryLabelDataset=BinaryLabelDataset, Reweighing=Reweighing,
                           EqOddsPostprocessing=EqOddsPostprocessing, BinaryLabelDatasetMetric=BinaryLabelDatasetMetric,
                           ClassificationMetric=ClassificationMetric)


def label_dataset(labels: np.ndarray, privileged: np.ndarray, features: np.ndarray | None = None):
    """A ``BinaryLabelDataset`` of ``labels`` (1 = favourable) and the group column (1 =
    privileged), with ``features`` as columns ``f0``, ``f1``, … when given (aif360's consistency
    reads them)."""
    columns = {GROUP: np.asarray(privileged, dtype=np.float64)}
    if features is not None:
        columns.update({f"f{i}": features[:, i] for i in range(features.shape[1])})
    frame = pd.DataFrame({**columns, LABEL: np.asarray(labels, dtype=np.float64)})
    return aif360().BinaryLabelDataset(df=frame, label_names=[LABEL], protected_attribute_names=[GROUP],
                                       favorable_label=1.0, unfavorable_label=0.0)
