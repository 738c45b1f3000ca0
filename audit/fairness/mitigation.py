"""Bias mitigation with AIF360: reweighing before training, equalized odds after it.

- Pre-processing: :func:`reweighing_weights` gives each training row the weight
  ``P(g) P(y) / P(g, y)`` of its (group, label) cell (Kamiran & Calders, aif360's
  ``Reweighing``), so that label and group are independent in the weighted data;
  :func:`retrain_reweighed` trains a model with them.
- Post-processing: :class:`EqualizedOddsPostprocessor` (Hardt et al., aif360's
  ``EqOddsPostprocessing``) flips thresholded predictions at random, with per-group
  probabilities chosen by a linear program, so that both groups get about the same true and
  false positive rates. It is tuned on one half of the test split and judged on the other
  (:func:`split_for_postprocessing`).

Labels are 0/1 with 1 the favourable outcome; ``privileged`` is a boolean mask per row, as
:meth:`~scrutiny.models.spec.ProtectedAttribute.is_privileged` returns it. aif360 sees only
numeric frames built here (its own data-set loaders do not work under pandas 3).
"""

from __future__ import annotations

import numpy as np

from scrutiny.errors import InputError
from scrutiny.models.datasets import Dataset
from scrutiny.models.recipes import TrainedModel, train_on

from .aif360_bridge import PRIVILEGED, UNPRIVILEGED, aif360, label_dataset

__all__ = [
    "EqualizedOddsPostprocessor",
    "privileged_mask",
    "retrain_reweighed",
    "reweighing_weights",
    "split_for_postprocessing",
]

def _labels_and_groups(y, privileged, name: str = "y") -> tuple[np.ndarray, np.ndarray]:
    y, privileged = np.asarray(y), np.asarray(privileged)
    if y.ndim != 1 or len(y) == 0 or privileged.shape != y.shape:
        raise InputError(
            f"{name} and privileged must be non-empty 1-D arrays of the same length; "
            f"got shapes {y.shape} and {privileged.shape}"
        )
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise InputError(f"{name} must hold 0/1 labels (1 = favourable); got values {np.unique(y)[:5]!r}")
    if privileged.dtype.kind not in "biuf" or not np.isin(privileged, (0, 1)).all():
        raise InputError("privileged must be a boolean mask (True = privileged group)")
    return y.astype(np.int64), privileged.astype(bool)


def privileged_mask(dataset: Dataset, attribute: str, split: str = "test") -> np.ndarray:
    """Which rows of a split belong to the privileged group of a protected attribute.

    Parameters
    ----------
    dataset : Dataset
        A loaded data set.
    attribute : str
        Name of one of ``dataset.spec.protected``.
    split : {"train", "test"}, optional
        The split. Default: ``"test"``.

    Returns
    -------
    np.ndarray
        Boolean mask, one entry per row of the split.

    Raises
    ------
    DataError
        The data set has no protected attribute of that name.
    """
    protected = dataset.spec.protected_attribute(attribute)
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test'; got {split!r}")
    return protected.is_privileged(getattr(dataset, split).groups[attribute])


def reweighing_weights(y: np.ndarray, privileged: np.ndarray) -> np.ndarray:
    """Reweighing instance weights (aif360's ``Reweighing``) for one protected attribute.

    Row weights are ``P(g) P(y) / P(g, y)`` for the row's group ``g`` and label ``y``, with
    probabilities estimated by counts: rows of (group, label) cells rarer than independence
    would make them weigh more.

    Parameters
    ----------
    y : np.ndarray
        0/1 labels, 1 the favourable outcome, shape ``(N,)``.
    privileged : np.ndarray
        Boolean mask of the privileged group, shape ``(N,)``.

    Returns
    -------
    np.ndarray
        float64 weights, shape ``(N,)``.

    Raises
    ------
    InputError
        Bad shapes or values, or only one group present.
    """
    y, privileged = _labels_and_groups(y, privileged)
    if privileged.all() or not privileged.any():
        raise InputError("reweighing needs rows of both the privileged and the unprivileged group")
    Reweighing = aif360().Reweighing
    # an empty (group, label) cell gets an infinite weight that no row uses
    with np.errstate(divide="ignore", invalid="ignore"):
        reweighed = Reweighing(unprivileged_groups=UNPRIVILEGED, privileged_groups=PRIVILEGED).fit_transform(
            label_dataset(y, privileged)
        )
    return np.asarray(reweighed.instance_weights, dtype=np.float64)


def retrain_reweighed(
    dataset: Dataset,
    attribute: str,
    arch: str | None = None,
    *,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
    **overrides,
) -> TrainedModel:
    """Train a model on the training split reweighed for one protected attribute.

    The weights (:func:`reweighing_weights`) come from the training labels and the
    attribute's privileged mask; everything else is :func:`~scrutiny.models.recipes.train_on`,
    so a model trained with the same ``arch``, ``seed`` and ``overrides`` but no weights is
    the unmitigated baseline.

    Parameters
    ----------
    dataset : Dataset
        A binary tabular data set.
    attribute : str
        Name of one of ``dataset.spec.protected``.
    arch : str or None, optional
        Architecture; None takes the data set's default.
    seed : int, optional
        Training seed. Default: 0.
    device : str or None, optional
        Training device; None picks CUDA when available.
    progress : bool, optional
        Show a progress bar. Default: False.
    **overrides
        Training settings (``epochs``, ``lr``, …), as for ``train_on``.

    Returns
    -------
    TrainedModel
        The model, its test metrics, and its settings with ``"reweighing": attribute``.
    """
    if not dataset.spec.is_binary:
        raise InputError(f"reweighing needs a binary task; data set '{dataset.spec.name}' has {dataset.spec.n_classes} classes")
    weights = reweighing_weights(dataset.train.y, privileged_mask(dataset, attribute, "train"))
    trained = train_on(dataset, arch, seed=seed, device=device, progress=progress, sample_weight=weights, **overrides)
    trained.settings["reweighing"] = attribute
    return trained


def split_for_postprocessing(
    n: int, y: np.ndarray, privileged: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded 50/50 split of ``range(n)``, stratified by (group, label).

    A post-processor is tuned on the first half and its effect reported on the second, so
    the reported figures are not measured on the rows it was fitted to. Each of the four
    (group, label) cells sends ``floor(count / 2)`` rows to the tuning half.

    Parameters
    ----------
    n : int
        Number of rows.
    y : np.ndarray
        0/1 labels, shape ``(n,)``.
    privileged : np.ndarray
        Boolean privileged mask, shape ``(n,)``.
    seed : int, optional
        Seed of the permutation. Default: 0.

    Returns
    -------
    tuple of np.ndarray
        Sorted int64 indices of the tuning half and of the evaluation half.
    """
    y, privileged = _labels_and_groups(y, privileged)
    if len(y) != n:
        raise InputError(f"y and privileged must have n = {n} entries; got {len(y)}")
    rng = np.random.default_rng(seed)
    tune = []
    for group in (True, False):
        for label in (0, 1):
            cell = np.flatnonzero((privileged == group) & (y == label))
            tune.append(rng.permutation(cell)[: len(cell) // 2])
    tune_idx = np.sort(np.concatenate(tune)).astype(np.int64)
    return tune_idx, np.setdiff1d(np.arange(n), tune_idx)


class EqualizedOddsPostprocessor:
    """Equalized-odds post-processing of a binary classifier's scores.

    Scores above ``threshold`` are predicted favourable; :meth:`fit` then solves aif360's
    ``EqOddsPostprocessing`` linear program for the probabilities, per group, that a
    predicted favourable or unfavourable label ends up favourable, such that both groups get
    the same true and false positive rates on the tuning rows at the least expected error.
    :meth:`predict` applies them by flipping randomly chosen labels, seeded.

    Parameters
    ----------
    threshold : float, optional
        Decision threshold on the scores. Default: 0.5 (the argmax of two probabilities).

    Attributes
    ----------
    mixing_rates : dict
        After :meth:`fit`: for ``"privileged"`` and ``"unprivileged"``, the pair
        ``(P(favourable | predicted favourable), P(favourable | predicted unfavourable))``.
    """

    def __init__(self, threshold: float = 0.5):
        if not 0.0 < threshold < 1.0:
            raise InputError(f"threshold must lie in (0, 1); got {threshold!r}")
        self.threshold = float(threshold)
        self.mixing_rates: dict[str, tuple[float, float]] | None = None
        self._model = None

    def _predicted(self, scores: np.ndarray, privileged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Thresholded scores and the privileged mask, checked."""
        scores = np.asarray(scores)
        if scores.dtype.kind not in "biuf" or not np.isfinite(scores).all():
            raise InputError("scores must be finite probabilities of the favourable label")
        return _labels_and_groups((scores > self.threshold).astype(np.int64), privileged, "scores")

    def fit(self, scores: np.ndarray, y: np.ndarray, privileged: np.ndarray, seed: int = 0) -> EqualizedOddsPostprocessor:
        """Learn the mixing rates from tuning rows.

        Parameters
        ----------
        scores : np.ndarray
            Model probability of the favourable label, shape ``(N,)``.
        y : np.ndarray
            True 0/1 labels, shape ``(N,)``.
        privileged : np.ndarray
            Boolean privileged mask, shape ``(N,)``.
        seed : int, optional
            Seeds the random flips of every later :meth:`predict`. Default: 0.

        Returns
        -------
        EqualizedOddsPostprocessor
            self.

        Raises
        ------
        InputError
            Bad shapes or values, or a group without both labels (its true or false positive
            rate is undefined).
        """
        y, privileged = _labels_and_groups(y, privileged)
        predicted, _ = self._predicted(scores, privileged)
        for group, name in ((True, "privileged"), (False, "unprivileged")):
            if len(np.unique(y[privileged == group])) < 2:
                raise InputError(f"the {name} group needs rows of both labels to fit equalized odds")
        EqOddsPostprocessing = aif360().EqOddsPostprocessing
        truth = label_dataset(y, privileged)
        prediction = truth.copy(deepcopy=True)
        prediction.labels = predicted.astype(np.float64).reshape(-1, 1)
        model = EqOddsPostprocessing(unprivileged_groups=UNPRIVILEGED, privileged_groups=PRIVILEGED, seed=seed)
        model.fit(truth, prediction)
        if not model.model_params.success:
            raise InputError(f"the equalized-odds linear program found no solution: {model.model_params.message}")
        self._model = model
        p_pos, p_neg, u_pos, u_neg = (float(v) for v in model.model_params.x)
        self.mixing_rates = {"privileged": (p_pos, p_neg), "unprivileged": (u_pos, u_neg)}
        return self

    def predict(self, scores: np.ndarray, privileged: np.ndarray) -> np.ndarray:
        """Post-processed 0/1 labels.

        The same scores, mask and fitting seed give the same labels; NumPy's global random
        state, which aif360 reseeds, is restored afterwards.

        Parameters
        ----------
        scores : np.ndarray
            Model probability of the favourable label, shape ``(N,)``.
        privileged : np.ndarray
            Boolean privileged mask, shape ``(N,)``.

        Returns
        -------
        np.ndarray
            int64 labels, shape ``(N,)``.
        """
        if self._model is None:
            raise InputError("call fit before predict")
        predicted, privileged = self._predicted(scores, privileged)
        state = np.random.get_state()
        try:
            result = self._model.predict(label_dataset(predicted, privileged))
        finally:
            np.random.set_state(state)
        return result.labels.ravel().astype(np.int64)
