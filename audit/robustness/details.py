"""What the robustness family records beside its findings."""

from __future__ import annotations

from dataclasses import dataclass

from scrutiny.audit.run.details import Details

__all__ = ["RobustnessDetails", "CurveEntry", "ContributionEntry", "ExampleEntry", "OodEntry", "DETAILS", "ARRAYS",
           "CURVE_FIGURE", "MIN_EPS_FIGURE", "EXAMPLES_FIGURE"]

Setting = int | float | str | bool

# the run-folder files the family writes
ARRAYS = "arrays/robustness.npz"                  # rows, min_eps, robust__<attack>, examples_x, examples_x_adv
                                                  # (robust__<attack> of a later member of the chain: under the
                                                  # chain up to it, as its curve entries)
CURVE_FIGURE = "figures/robustness.png"
MIN_EPS_FIGURE = "figures/min_eps.png"
EXAMPLES_FIGURE = "figures/adversarial.png"       # images with an adversarial example only


@dataclass
class CurveEntry(Details):
    """Accuracy under one attack (or ``"worst case"``: the worst over all) at one radius. For a
    later member of the chain (APGD-T, Square after APGD-CE), the accuracy after the chain up to and
    including it (AutoAttack's "robust accuracy after each attack"): it ran on the rows still standing."""

    attack: str
    eps: float
    clean_accuracy: float
    robust_accuracy: float
    success_rate: float  # of the rows the model got right, the share the attack flipped
    n: int


@dataclass
class ContributionEntry(Details):
    """What one attack added to the ensemble at one radius.

    Args:
        attacked: the rows the model gets right that the attacks before it (the chain's members in
            its order, then the other attacks as listed) left standing.
        broken: of those, the rows it broke. Over the attacks at one radius they add up to the
            rows the model gets right less those the worst case leaves.
        chained: it is a later member of the chain, so it ran on the ``attacked`` rows only
            (else it ran on every row).
    """

    attack: str
    eps: float
    attacked: int
    broken: int
    chained: bool


@dataclass
class ExampleEntry(Details):
    """One adversarial example (its inputs are in :data:`ARRAYS`).

    Args:
        row: index in the test split; ``label``, ``before``, ``after``: true class and the
            predictions before and after the attack; ``attack``: the attack that made it (the
            chain's member that broke the row).
        changes: tables only: ``[feature, before, after]`` as text, for each changed feature.
    """

    row: int
    attack: str
    eps: float
    label: int
    before: int
    after: int
    changes: list[list[str]]


@dataclass
class OodEntry(Details):
    """How well an autoencoder's reconstruction error tells successful adversarial rows from clean ones."""

    attack: str
    eps: float
    clean_error: float
    adversarial_error: float
    auroc: float
    detected_at_5pct_fpr: float
    n_adversarial: int


@dataclass
class RobustnessDetails(Details):
    """Robust accuracy on a sample of the test split.

    Args:
        n: attacked rows; ``norm``: ``linf`` or ``l2``; ``eps``: the radii; ``gated_eps``: the
            radius the policy gates; ``attacks``: the attacks, in the order they ran.
        curve: one entry per attack (and the worst case) and radius.
        contributions: per radius, the rows each attack broke that the ones before it left
            standing (:class:`ContributionEntry`).
        median_min_eps, never_flipped: the smallest radius that flips a row (median), and the
            share of rows no radius up to ``search_eps`` flipped.
        large_eps_accuracy: PGD accuracy at ``search_eps`` (a sanity check: it should be low).
        constraints: the input constraints the attacks kept, in words.
        warnings: signs that the evaluation is weak.
        gradient: shares of rows with all-zero or non-finite input gradients.
        ood: one entry per radius when the detector ran.
    """

    n: int
    norm: str
    eps: list[float]
    gated_eps: float
    attacks: list[str]
    curve: list[CurveEntry]
    contributions: list[ContributionEntry]
    median_min_eps: float
    never_flipped: float
    search_eps: float
    large_eps_accuracy: float
    constraints: list[str]
    warnings: list[str]
    gradient: dict[str, float]
    ood: list[OodEntry] | None
    examples: list[ExampleEntry]
    settings: dict[str, Setting]

    @classmethod
    def upgrade(cls, data: dict) -> dict:
        """Details written before the contributions were recorded: none (a run folder keeps its
        format; they cannot be derived from the curve of attacks that each ran on every row)."""
        return {**data, "contributions": []} if isinstance(data, dict) and "contributions" not in data else data


DETAILS = RobustnessDetails
