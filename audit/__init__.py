"""The audit: four families of checks and the run layer that gates and records them.

- :mod:`.performance`: accuracy, balanced accuracy and calibration, with bootstrap intervals;
- :mod:`.attributions`: feature attributions (captum, shap, lime), their quality checks and
  adverse-action reasons;
- :mod:`.robustness`: adversarial attacks within an ε-ball and the smallest ε that flips a row;
- :mod:`.fairness`: group fairness metrics (aif360), impact ratios and mitigation;
- :mod:`.run`: config, policy, findings, the runner and the run folder.

The names below are imported on first use (PEP 562), so that the CLI starts without torch.
"""

from scrutiny.lazy import lazy_exports

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(["AuditResult", "run_audit"], "scrutiny.audit.run.runner"),
    **dict.fromkeys(["AuditConfig", "load_config"], "scrutiny.audit.run.config"),
    **dict.fromkeys(["Policy", "load_policy"], "scrutiny.audit.run.policy"),
    **dict.fromkeys(["Finding"], "scrutiny.audit.run.findings"),
    **dict.fromkeys(["FamilyResult"], "scrutiny.audit.run.family"),
    **dict.fromkeys(["Run", "load_run"], "scrutiny.audit.run.run_folder"),
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
