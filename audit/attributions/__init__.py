"""Attributions: which features each decision rests on, and whether those explanations hold up.

Methods from captum (Integrated Gradients, DeepLIFT, GradientSHAP, occlusion, saliency), shap
(KernelSHAP, batched; GradientExplainer) and lime (tabular, batched), each through
:func:`attribute` with one :class:`Attribution` result; global importance with bootstrap
intervals; agreement between methods; quality checks (deletion curves, infidelity, model
randomisation); adverse-action reasons. Entry point: :func:`.family.run`; details:
:class:`AttributionsDetails`.
"""

import importlib

_EXPORTS = {
    **dict.fromkeys(["Attribution", "attribute", "METHODS"], "scrutiny.audit.attributions.methods"),
    **dict.fromkeys(["AttributionsDetails"], "scrutiny.audit.attributions.details"),
    **dict.fromkeys(["explain", "Explanations"], "scrutiny.audit.attributions.explain"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
