"""Every attribution method, with what the audit needs to know about it.

:data:`METHOD_INFO` is the one place a method is declared; the lists other modules use
(:data:`METHODS`, :data:`ALIASES`, :data:`COMPLETENESS_METHODS`, :data:`RELIANCE_METHODS`,
:data:`REASON_METHODS`) and each method's default baseline (:func:`default_baseline`) follow
from it, and the contract tests iterate over it.

Additivity, what a method's attributions add up to:

- ``"exact"``: f(x) − E f(baseline), by construction (KernelSHAP); its error figure is
  something else (the sampling error);
- ``"checked"``: f(x) − f(baseline) in theory, in practice up to a gap that is the method's
  error figure and the completeness finding (integrated gradients: the integral's numerical
  error, kept below 1 % by refining; DeepLIFT: exact on ReLU networks, not across max-pooling);
- ``"expected"``: f(x) − E f(baseline) only in expectation over baseline draws (GradientSHAP,
  shap's expected gradients); the error figure is the gap, not gated;
- ``"none"``: no such property.

Light on purpose (no torch): the CLI's ``--help`` and config checks read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from scrutiny.errors import InputError
from scrutiny.modality import modality

__all__ = ["MethodInfo", "METHOD_INFO", "METHODS", "ALIASES", "ADDITIVITY", "COMPLETENESS_METHODS", "LIME_TARGETS",
           "RELIANCE_METHODS", "REASON_METHODS", "default_baseline", "methods_for", "resolve_methods"]

ADDITIVITY = ("exact", "checked", "expected", "none")
# what LIME's local linear model may fit: the probability (lime's own choice, the default) or the
# score the other methods explain (log-odds of a binary model, the logit of a multi-class one)
LIME_TARGETS = ("probability", "log_odds")


@dataclass(frozen=True)
class MethodInfo:
    """One attribution method.

    Attributes:
        name: what ``attribute(method=...)`` and configs call it.
        library: whose algorithm it is (``captum``, ``shap``, ``lime``).
        aliases: short names accepted in configs and on the command line.
        modalities: the data types (:data:`~scrutiny.modality.MODALITIES`) it explains.
        needs_gradients: it differentiates the model's output with respect to its inputs.
        additivity: ``exact``, ``checked``, ``expected`` or ``none`` (see the module docstring).
        error_name: the name of its own error figure, as ``Attribution.error_name``; None if none.
        sample_baseline: the modalities where its default baseline is a seeded sample of
            training rows; elsewhere it is the modality's fixed baseline.
        n_background: training rows in that sample.
        explains: ``"score"`` (the log-odds, or the logit of a multi-class model) or ``"probability"``.
        sampled: its values depend on random draws (seeded).
        reason_rank: its place when choosing the method behind adverse-action reasons (1 first):
            additive and model-agnostic methods share out the very score being explained.
    """

    name: str
    library: str
    modalities: tuple[str, ...]
    needs_gradients: bool
    additivity: str
    reason_rank: int
    aliases: tuple[str, ...] = ()
    error_name: str | None = None
    sample_baseline: tuple[str, ...] = ()
    n_background: int = 100
    explains: str = "score"
    sampled: bool = False


BOTH = ("tabular", "image")

# in the order methods are listed everywhere
METHOD_INFO: dict[str, MethodInfo] = {m.name: m for m in (
    MethodInfo("integrated_gradients", "captum", BOTH, needs_gradients=True, additivity="checked", reason_rank=2,
               aliases=("ig",), error_name="convergence_delta"),
    MethodInfo("saliency", "captum", BOTH, needs_gradients=True, additivity="none", reason_rank=9),
    MethodInfo("input_x_gradient", "captum", BOTH, needs_gradients=True, additivity="none", reason_rank=8,
               aliases=("ixg",)),
    MethodInfo("deeplift", "captum", BOTH, needs_gradients=True, additivity="checked", reason_rank=3,
               error_name="convergence_delta"),
    MethodInfo("gradient_shap", "captum", BOTH, needs_gradients=True, additivity="expected", reason_rank=5,
               error_name="convergence_delta", sample_baseline=BOTH, sampled=True),
    MethodInfo("feature_ablation", "captum", BOTH, needs_gradients=False, additivity="none", reason_rank=7),
    MethodInfo("occlusion", "captum", ("image",), needs_gradients=False, additivity="none", reason_rank=10),
    MethodInfo("kernel_shap", "shap", BOTH, needs_gradients=False, additivity="exact", reason_rank=1,
               aliases=("shap",), error_name="sampling_error", sample_baseline=("tabular",), n_background=50,
               sampled=True),
    MethodInfo("shap_gradient", "shap", BOTH, needs_gradients=True, additivity="expected", reason_rank=6,
               error_name="additivity_gap", sample_baseline=BOTH, sampled=True),
    MethodInfo("lime", "lime", BOTH, needs_gradients=False, additivity="none", reason_rank=4,
               error_name="lime_misfit", explains="probability", sampled=True),
)}

METHODS: tuple[str, ...] = tuple(METHOD_INFO)
ALIASES: dict[str, str] = {alias: m.name for m in METHOD_INFO.values() for alias in m.aliases}
# methods whose attributions must add up to f(x) - f(baseline) and may not: the completeness finding
COMPLETENESS_METHODS: tuple[str, ...] = tuple(m.name for m in METHOD_INFO.values() if m.additivity == "checked")
# the method behind adverse-action reasons: the first of these that was run
REASON_METHODS: tuple[str, ...] = tuple(sorted(METHOD_INFO, key=lambda name: METHOD_INFO[name].reason_rank))
# additive methods (their mean |attribution| shares out the explained score), preferred first
RELIANCE_METHODS: tuple[str, ...] = tuple(m for m in REASON_METHODS
                                          if METHOD_INFO[m].additivity in ("exact", "checked"))


def default_baseline(method: str, kind: str) -> str:
    """The baseline ``method`` takes on ``kind`` data unless told: ``"train_sample"`` (a seeded
    sample of training rows) where the method declares it, else the modality's fixed baseline
    (the training mean for tables, a blank image for images).

    Example:
        >>> default_baseline("kernel_shap", "tabular"), default_baseline("kernel_shap", "image")
        ('train_sample', 'zeros')
    """
    if kind in METHOD_INFO[method].sample_baseline:
        return "train_sample"
    return modality(kind).fixed_baseline


def methods_for(kind: str) -> tuple[str, ...]:
    """The methods that explain ``kind`` data, in :data:`METHODS` order."""
    return tuple(m.name for m in METHOD_INFO.values() if kind in m.modalities)


def resolve_methods(names: list[str]) -> list[str]:
    """Method names (or aliases) as canonical names, in the order given, each once.

    Example:
        >>> resolve_methods(["ig", " kernel_shap", "ig"])
        ['integrated_gradients', 'kernel_shap']
    """
    methods = [ALIASES.get(n.strip(), n.strip()) for n in names if n.strip()]
    unknown = [m for m in methods if m not in METHOD_INFO]
    if unknown or not methods:
        raise InputError(
            f"unknown attribution method {', '.join(repr(u) for u in unknown) or '(none given)'}; "
            f"expected: {', '.join(METHODS)} (or {', '.join(ALIASES)})"
        )
    return list(dict.fromkeys(methods))
