"""Attributions: which features each decision rests on, and whether those explanations hold up.

Methods from captum (Integrated Gradients, DeepLIFT, GradientSHAP, occlusion, saliency), shap
(KernelSHAP, batched; GradientExplainer) and lime (tabular, batched), each through
:func:`attribute` with one :class:`Attribution` result; global importance with bootstrap
intervals; agreement between methods; quality checks (deletion curves, infidelity, model
randomisation); adverse-action reasons. Entry point: :func:`.family.run`; details:
:class:`AttributionsDetails`.
"""

from scrutiny.lazy import lazy_exports

_EXPORTS = {
    "run": "scrutiny.audit.attributions.family",
    **dict.fromkeys(["Attribution", "attribute", "METHODS"], "scrutiny.audit.attributions.methods"),
    **dict.fromkeys(["AttributionsDetails"], "scrutiny.audit.attributions.details"),
    **dict.fromkeys(["explain", "Explanations"], "scrutiny.audit.attributions.explain"),
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
