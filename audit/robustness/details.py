"""What the robustness family records beside its findings."""

from __future__ import annotations

from dataclasses import dataclass

from scrutiny.audit.run.details import Details, optional

__all__ = ["RobustnessDetails", "CurveEntry", "ContributionEntry", "ExampleEntry", "OodEntry", "CertifiedEntry",
           "CertificationDetails", "DETAILS", "ARRAYS", "CURVE_FIGURE", "MIN_EPS_FIGURE", "EXAMPLES_FIGURE",
           "CERTIFIED_FIGURE"]

Setting = int | float | str | bool

# the run-folder files the family writes
ARRAYS = "arrays/robustness.npz"                  # rows, min_eps, robust__<attack>, examples_x, examples_x_adv
                                                  # (robust__<attack> of a later member of the chain: under the
                                                  # chain up to it, as its curve entries); with
                                                  # certification: certified_rows, certified_radius
                                                  # (0 where abstained), certified_prediction
                                                  # (-1: abstained), certified_p_lower, robust_upper
                                                  # (rows x the table's radii)
CURVE_FIGURE = "figures/robustness.png"
MIN_EPS_FIGURE = "figures/min_eps.png"
EXAMPLES_FIGURE = "figures/adversarial.png"       # images with an adversarial example only
CERTIFIED_FIGURE = "figures/certified.png"        # with certification: both bounds against the L2 radius


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
class CertifiedEntry(Details):
    """Both bounds of the smoothed classifier's robust accuracy at one L2 radius.

    Args:
        certified_accuracy: rows certified correct at ``radius`` or more (the lower bound).
        attacked_accuracy: rows the smoothed classifier still gets right under the attack at
            ``radius`` (the upper bound; rows certified there are not attacked and count); NaN
            when no attack ran (a model without gradients).
        certified: the rows behind ``certified_accuracy``; ``n``: rows certified.
    """

    radius: float
    certified_accuracy: float
    attacked_accuracy: float
    certified: int
    n: int


@dataclass
class CertificationDetails(Details):
    """Certified L2 robustness by randomized smoothing (Cohen et al. 2019) on a seeded subset of
    the attacked rows, with an attack on the same smoothed classifier for the upper bound.

    Args:
        sigma, n0, n, alpha: the noise and the sample sizes of CERTIFY (and of PREDICT, which
            judges the attacked inputs, with ``n`` copies).
        units: what the radii and σ are measured in; ``noised``: tables: the columns that get
            noise (the certificate covers moves of these only); empty for images.
        gated_radius: the radius the policy gates.
        table: both bounds per radius (radius 0: the smoothed classifier's accuracy).
        curve_radius, curve_accuracy: the certified-accuracy step curve.
        smoothed_accuracy: certified accuracy at radius 0 (abstentions as errors);
            ``base_accuracy``: the base classifier's on the same rows without noise.
        abstention_rate: share of rows CERTIFY abstained on.
        median_radius: over all rows (abstained and wrong ones at 0); ``median_radius_correct``:
            over the rows certified correct (NaN when none).
        trained_sigma: the σ the model was trained with (``scrutiny train --noise-sigma``), when known.
        attack: the upper bound's attack, in words (empty when none ran).
    """

    sigma: float
    n0: int
    n: int
    alpha: float
    units: str
    noised: list[str]
    gated_radius: float
    table: list[CertifiedEntry]
    curve_radius: list[float]
    curve_accuracy: list[float]
    smoothed_accuracy: float
    base_accuracy: float
    abstention_rate: float
    median_radius: float
    median_radius_correct: float
    attack: str
    trained_sigma: float | None = optional()


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
        examples: adversarial examples, their inputs ``examples_x`` and ``examples_x_adv`` of
            :data:`ARRAYS` in the same order: up to
            :data:`~scrutiny.audit.robustness.family.EXAMPLES_PER_POINT` per attack and radius, from
            every attack, by attack (as run) then radius (runs written before: up to 16 of the first
            attack, or the chain, spread over the radii).
        certification: when the config asks for it (:class:`CertificationDetails`).
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
    certification: CertificationDetails | None = optional()

    @classmethod
    def upgrade(cls, data: dict) -> dict:
        """Details written before the contributions were recorded: none (a run folder keeps its
        format; they cannot be derived from the curve of attacks that each ran on every row)."""
        return {**data, "contributions": []} if isinstance(data, dict) and "contributions" not in data else data


DETAILS = RobustnessDetails
