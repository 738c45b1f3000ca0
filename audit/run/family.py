"""What every audit family is given and what it gives back.

A family is the subpackage ``scrutiny.audit.<name>`` for each name in :data:`FAMILIES`. It
has a module ``details`` that defines its typed details (:class:`~.details.Details`, no torch
needed to read a run) as ``DETAILS``, and a module ``family`` whose ``run(context)`` returns a
:class:`FamilyResult` and writes nothing: the runner serialises and writes what it returns.
A family that can work from logged predictions alone (no model) says so with
``NEEDS_MODEL = False`` in that module; the others are recorded as not assessed in such an audit.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrutiny.errors import InputError

from .details import Details
from .findings import Finding
from .policy import CHECK_INFO

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch
    from matplotlib.figure import Figure

    from scrutiny.models import Dataset
    from scrutiny.models.predictions import Predictions

    from .config import AuditConfig
    from .executor import Executor
    from .policy import Policy

__all__ = ["FAMILIES", "AuditContext", "FamilyResult", "family_runner", "needs_model", "details_type", "details_schema",
           "upgrade_details", "validate_details", "schema_path"]

# the order a full audit runs them in, and the order findings are listed in
FAMILIES = ("performance", "attributions", "robustness", "fairness")


@dataclass
class AuditContext:
    """Everything a family may read: the model (in eval mode on ``device``), the data set, the
    encoding the model reads, the audit's config and policy. In an audit of logged predictions
    ``model`` is None and ``predictions`` holds the decisions (and scores) on the test split."""

    model: torch.nn.Module | None
    dataset: Dataset
    preprocessor: Any
    config: AuditConfig
    policy: Policy
    device: str
    predictions: Predictions | None = None
    twin: torch.nn.Module | None = None     # a PyTorch twin of a model without gradients, checked to agree with it
    no_gradients: str | None = None         # why no gradients can be taken (an ONNX model without an agreeing twin)
    executor: Executor = field(default_factory=lambda: _local())  # where chunks of per-row work run
    noise_sigma: float | None = None        # the Gaussian noise the model was trained with (train --noise-sigma)

    @property
    def gradient_model(self) -> torch.nn.Module | None:
        """The model gradients are taken through: the model itself, its twin, or None (``no_gradients`` says why)."""
        if self.no_gradients is not None:
            return None
        return self.twin if self.twin is not None else self.model

    @property
    def module(self) -> torch.nn.Module:
        """The model, for a family that needs one (``NEEDS_MODEL``; the runner never calls it without)."""
        if self.model is None:
            raise ValueError("this family needs a model and the audit has none (a bug: the runner should not run it)")
        return self.model

    def family_not_assessed(self, family: str, reason: str) -> FamilyResult:
        """The result of a family the audit could not run: a not-assessed finding per check, no details."""
        return FamilyResult(findings=[self.not_assessed(check, reason) for check, info in CHECK_INFO.items()
                                      if info.family == family and not info.opt_in], details=None)

    def not_assessed(self, check: str, reason: str, *, subject: str | None = None) -> Finding:
        """A finding of ``check`` the audit could not make, and why (status ``not_assessed``)."""
        info = CHECK_INFO[check]
        return Finding(check=check, family=info.family, value=float("nan"), metric="not measured",
                       explanation=f"Not assessed: {reason}.", subject=subject,
                       threshold=self.policy.threshold(check), not_assessed=reason)

    def finding(self, check: str, value: float, explanation: str, *, metric: str, **kwargs: Any) -> Finding:
        """A finding of ``check`` with the policy's thresholds (its status follows from them).

        Raises:
            ValueError: the finding does not have what the check's registry entry declares (a
                subject when it names one, a comparison when it compares groups) — a bug in a family.
        """
        info = CHECK_INFO[check]
        if (kwargs.get("subject") is None) != (info.subject is None):
            raise ValueError(f"{check}: a finding {'names' if info.subject else 'has no'} subject ({info.subject})")
        if (kwargs.get("comparison") is not None) != info.compares_groups:
            raise ValueError(f"{check}: a finding {'carries' if info.compares_groups else 'has no'} group comparison")
        return Finding(check=check, family=info.family, value=float(value), explanation=explanation,
                       threshold=self.policy.threshold(check), metric=metric, **kwargs)


@dataclass
class FamilyResult:
    """What one family found.

    Args:
        findings: the gated checks, in the order they are listed.
        details: the family's typed details (written under ``details.<family>`` of findings.json);
            None for a family the audit could not run (its findings say why).
        arrays: run-folder path (``arrays/<name>.npz``) -> named arrays.
        tables: run-folder path (``arrays/<name>.parquet``) -> a table.
        figures: run-folder path (``figures/<name>.png``) -> a matplotlib figure.
    """

    findings: list[Finding]
    details: Details | None
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)


def family_runner(name: str) -> Callable[[AuditContext], FamilyResult]:
    """The ``run`` function of the family ``name`` (imports the family, and with it torch)."""
    return importlib.import_module(f"scrutiny.audit.{_known(name)}.family").run


def _local() -> Executor:
    from .executor import LocalExecutor

    return LocalExecutor()


def needs_model(name: str) -> bool:
    """Whether the family ``name`` needs the model itself (its ``NEEDS_MODEL``, default True)."""
    return bool(getattr(importlib.import_module(f"scrutiny.audit.{_known(name)}.family"), "NEEDS_MODEL", True))


def details_type(name: str) -> type[Details]:
    """The details class of the family ``name`` (light: reading a run needs no torch)."""
    return importlib.import_module(f"scrutiny.audit.{_known(name)}.details").DETAILS


def schema_path(name: str) -> Path:
    """The published JSON schema of the family's details, next to ``findings.schema.json``
    (generated from the details class: ``python -m scrutiny.audit.run.family``)."""
    return Path(__file__).with_name(f"{_known(name)}.details.schema.json")


@cache
def details_schema(name: str) -> dict:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


def upgrade_details(details: dict) -> dict:
    """Each family's details as its class reads them today (:meth:`~.details.Details.upgrade`)."""
    return {name: details_type(name).upgrade(document) if name in FAMILIES else document
            for name, document in details.items()}


def validate_details(details: dict, *, where: str = "findings.json") -> None:
    """Raise InputError naming ``where`` and the first place a family's details break its schema."""
    import jsonschema

    for name, document in details.items():
        validator = jsonschema.Draft202012Validator(details_schema(name))
        error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))), None)
        if error is not None:
            place = "/".join(str(p) for p in ("details", name, *error.absolute_path))
            raise InputError(f"{where}: does not match {schema_path(name).name} at {place}: {error.message}")


def _known(name: str) -> str:
    if name not in FAMILIES:
        raise ValueError(f"family {name!r}: expected one of {', '.join(FAMILIES)}")
    return name


if __name__ == "__main__":  # regenerate the published schemas after changing a details class
    for family in FAMILIES:
        text = json.dumps(details_type(family).json_schema(), indent=2) + "\n"
        schema_path(family).write_text(text, encoding="utf-8")
        print(f"wrote {schema_path(family)}")
