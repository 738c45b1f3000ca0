"""Data types (modalities): what differs between auditing tables and images, in one place.

A :class:`Modality` holds the defaults and words that depend only on the kind of input a
model reads: the architecture ``scrutiny train`` picks, the attribution methods and ε grid
of a default audit, the unit ε is measured in, the baseline of attribution methods that
take one fixed input, what an interpretable feature is, and the figures only this kind of
data gets. :func:`modality` looks one up by a data set's ``spec.task``.

Light on purpose (no torch, numpy or pandas): the CLI's ``--help`` and config checks read it.

Example:
    >>> modality("image").default_eps
    (0.05, 0.1, 0.2, 0.3)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Modality", "MODALITIES", "modality"]


@dataclass(frozen=True)
class Modality:
    """What auditing one kind of input takes by default.

    Attributes:
        name: the ``spec.task`` of its data sets (``"tabular"``, ``"image"``).
        plural: its data sets in words (``"tables"``), for help texts.
        default_arch: the architecture ``train_on`` builds when none is named.
        default_methods: attribution methods of a default audit.
        default_eps: ε grid of a default audit and of ``assess_robustness``.
        search_eps: top of the smallest-ε search (L∞): a radius that is very large here.
        eps_unit: the unit of ε in words (``"training standard deviations"``).
        radius_words: what follows a radius in a finding's sentence (pixel values are their own
            unit, so there it is a parenthetical).
        fixed_baseline: the baseline of attribution methods that take one input, not a sample
            of training rows (``"train_mean"``, ``"zeros"``).
        feature_unit: an interpretable feature in words (``"original features"``, ``"2x2 patches"``).
        figures: figures only this modality gets, beyond every modality's.
        fairness: whether its data sets can hold protected attributes as columns, which the
            group-fairness checks compare.
    """

    name: str
    plural: str
    default_arch: str
    default_methods: tuple[str, ...]
    default_eps: tuple[float, ...]
    search_eps: float
    eps_unit: str
    radius_words: str
    fixed_baseline: str
    feature_unit: str
    figures: tuple[str, ...] = ()
    fairness: bool = False


MODALITIES: dict[str, Modality] = {
    "tabular": Modality(
        name="tabular", plural="tables", default_arch="mlp",
        default_methods=("integrated_gradients", "kernel_shap", "lime"),
        default_eps=(0.1, 0.25, 0.5, 1.0), search_eps=4.0,
        eps_unit="training standard deviations", radius_words="training standard deviations",
        fixed_baseline="train_mean", feature_unit="original features", fairness=True,
    ),
    "image": Modality(
        name="image", plural="images", default_arch="cnn",
        default_methods=("integrated_gradients", "gradient_shap", "occlusion"),
        default_eps=(0.05, 0.1, 0.2, 0.3), search_eps=1.0,
        eps_unit="pixel units", radius_words="(pixel units)",
        fixed_baseline="zeros", feature_unit="2x2 patches", figures=("heatmaps", "adversarial"),
    ),
}


def modality(task: str) -> Modality:
    """The :class:`Modality` of data sets whose ``spec.task`` is ``task``.

    Raises:
        ValueError: for a task no modality describes.

    Example:
        >>> modality("tabular").default_arch
        'mlp'
    """
    try:
        return MODALITIES[task]
    except (KeyError, TypeError):
        raise ValueError(f"task {task!r}: expected one of {', '.join(MODALITIES)}") from None
