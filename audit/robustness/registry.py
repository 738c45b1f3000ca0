"""Every attack, with what the audit needs to know about it.

:data:`ATTACK_INFO` is the one place an attack is declared; the lists other modules use
(:data:`ATTACKS`, :data:`WHITE_BOX`, :data:`DEFAULT_ATTACKS`, :data:`REAL_ATTACKS`) follow
from it, and the contract tests iterate over it. Kinds:

- ``"white-box"``: follows the model's input gradients;
- ``"black-box"``: only reads the model's outputs, so gradient masking cannot hide a weakness
  from it;
- ``"noise"``: random directions, the baseline any real attack must beat.

The default is AutoAttack's ensemble (Croce & Hein 2020), :data:`ENSEMBLE`: APGD-CE, then
APGD-T on the rows still standing, then Square on the rows still standing, beside the Gaussian
noise baseline. Whichever members of :data:`ENSEMBLE` an evaluation names (two or more) run as
that chain, in that order; every other attack runs on every row.

Light on purpose (no torch): the CLI's ``--help`` and config checks read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from scrutiny.errors import InputError

__all__ = ["AttackInfo", "ATTACK_INFO", "ATTACKS", "KINDS", "NORMS", "WHITE_BOX", "REAL_ATTACKS", "DEFAULT_ATTACKS",
           "ENSEMBLE", "chain_of", "in_run_order", "primary_attack", "parse_attacks"]

KINDS = ("white-box", "black-box", "noise")
NORMS = ("linf", "l2")


@dataclass(frozen=True)
class AttackInfo:
    """One attack.

    Attributes:
        name: what ``assess_robustness(attacks=...)`` and configs call it.
        kind: ``white-box``, ``black-box`` or ``noise`` (see the module docstring).
        norms: the ε-balls it keeps to (``"linf"``, ``"l2"``).
        default: part of the default ensemble.
        reference: the paper it implements.
    """

    name: str
    kind: str
    reference: str
    norms: tuple[str, ...] = NORMS
    default: bool = True

    @property
    def needs_gradients(self) -> bool:
        """It differentiates the model's loss with respect to the inputs."""
        return self.kind == "white-box"


# in the order attacks run and are listed; the first real attack present is the primary one
ATTACK_INFO: dict[str, AttackInfo] = {a.name: a for a in (
    AttackInfo("pgd", "white-box", "Madry et al. 2018, projected gradient descent", default=False),
    AttackInfo("fgsm", "white-box", "Goodfellow et al. 2015, fast gradient sign method", default=False),
    AttackInfo("apgd-ce", "white-box", "Croce & Hein 2020, Auto-PGD on the cross-entropy"),
    AttackInfo("apgd-t", "white-box", "Croce & Hein 2020, Auto-PGD on the targeted DLR loss, one run per likely "
               "wrong class (fewer than four classes: the targeted margin)"),
    AttackInfo("square", "black-box", "Andriushchenko et al. 2020, Square attack (L2: inside the inscribed L∞ ball)"),
    AttackInfo("gaussian", "noise", "Gaussian noise on the ε-sphere"),
    AttackInfo("uniform", "noise", "uniform noise on the ε-sphere", default=False),
)}

ATTACKS: tuple[str, ...] = tuple(ATTACK_INFO)
WHITE_BOX: tuple[str, ...] = tuple(a.name for a in ATTACK_INFO.values() if a.kind == "white-box")
REAL_ATTACKS: tuple[str, ...] = tuple(a.name for a in ATTACK_INFO.values() if a.kind != "noise")
DEFAULT_ATTACKS: tuple[str, ...] = tuple(a.name for a in ATTACK_INFO.values() if a.default)
ENSEMBLE: tuple[str, ...] = ("apgd-ce", "apgd-t", "square")
DEFAULT_STEPS = 100      # APGD's and PGD's iterations: AutoAttack's
DEFAULT_QUERIES = 1000   # Square's queries per row: AutoAttack's
"""AutoAttack's chain, in its order: each member runs only on the rows the ones before it left standing."""


def chain_of(attacks: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The members of :data:`ENSEMBLE` among ``attacks``, in the chain's order: a chain when two or
    more (a single one runs on every row like any other attack).

    Example:
        >>> chain_of(["square", "gaussian", "apgd-ce"])
        ('apgd-ce', 'square')
    """
    return tuple(a for a in ENSEMBLE if a in attacks)


def in_run_order(attacks: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``attacks`` as an evaluation lists them: in the order given, except that the members of
    :data:`ENSEMBLE` take the places they hold in the chain's order.

    Example:
        >>> in_run_order(["square", "gaussian", "apgd-ce"])
        ('apgd-ce', 'gaussian', 'square')
    """
    chain = iter(chain_of(attacks))
    return tuple(next(chain) if a in ENSEMBLE else a for a in attacks)


def primary_attack(attacks: tuple[str, ...] | list[str]) -> str:
    """The attack whose examples are kept and scored: the first real attack of ``attacks`` in
    :data:`ATTACKS` order, else the first given.

    Example:
        >>> primary_attack(["gaussian", "square", "fgsm"])
        'fgsm'
    """
    return next((a for a in REAL_ATTACKS if a in attacks), attacks[0])


def parse_attacks(names: list[str]) -> tuple[str, ...]:
    """Attack names, lower-cased and stripped, each once, in the order given.

    Example:
        >>> parse_attacks(["PGD", " square", "pgd"])
        ('pgd', 'square')
    """
    attacks = [n.strip().lower() for n in names if n.strip()]
    unknown = [a for a in attacks if a not in ATTACK_INFO]
    if unknown or not attacks:
        raise InputError(f"unknown attack {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"expected: {', '.join(ATTACKS)}")
    return tuple(dict.fromkeys(attacks))
