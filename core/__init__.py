"""scrutiny: explainability, robustness and fairness audits for PyTorch models.

The public API, importable from here::

    import scrutiny

    model = scrutiny.load_model("artifacts/adult-mlp")
    data = scrutiny.load_dataset("adult")
    result = scrutiny.run_audit(model, data)          # in memory: nothing written
    result.verdict, result.findings[0]
    result.save("runs/adult-mlp")                      # the run folder, as `scrutiny audit` writes it
    scrutiny.write_reports("runs/adult-mlp", formats=["html", "pdf"])  # what `scrutiny report` writes
    scrutiny.sign_run("runs/adult-mlp", name="A. Validator", role="validator", decision="reject", reason="…")
    scrutiny.verify_run("runs/adult-mlp").ok
    scrutiny.write_trend(["runs/2026-q1", "runs/2026-q2"], "trend/adult")  # what `scrutiny trend` writes

The names are imported on first use (PEP 562), so ``import scrutiny`` and ``scrutiny --help``
load neither torch nor pandas. Subpackages: :mod:`scrutiny.models` (data sets, architectures,
training, checkpoints), :mod:`scrutiny.audit` (the audit families and the run layer),
:mod:`scrutiny.reports`, :mod:`scrutiny.app`; :mod:`scrutiny.errors` holds the exceptions.
"""

from importlib import metadata

from scrutiny.lazy import lazy_exports

try:
    __version__ = metadata.version("scrutiny")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(["CheckpointError", "DataError", "InputError", "ScrutinyError"], "scrutiny.errors"),
    **dict.fromkeys(["Dataset", "DatasetSpec", "LoadedModel", "load_dataset", "load_model", "load_table", "train_on"],
                    "scrutiny.models"),
    **dict.fromkeys(["AuditResult", "Finding", "FamilyResult", "Policy", "AuditConfig", "load_config", "load_policy",
                     "load_run", "run_audit"], "scrutiny.audit"),
    **dict.fromkeys(["Attribution", "attribute"], "scrutiny.audit.attributions"),
    **dict.fromkeys(["sign_run", "verify_run"], "scrutiny.audit.run.signoff"),
    "write_reports": "scrutiny.reports.render",
    "write_trend": "scrutiny.reports.trend",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
