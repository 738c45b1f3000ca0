"""The audit: every family on one model and data set, gated by the policy.

:func:`run_audit` runs the families the config names, in order, each on the same
:class:`~.family.AuditContext`, and gathers their :class:`~.family.FamilyResult` into an
:class:`AuditResult` held in memory. :meth:`AuditResult.save` writes the run folder
(:mod:`.run_folder`): ``findings.json`` (deterministic: the same inputs and seed give the same
bytes), ``manifest.json`` (command, hashes, versions, device, timings, the executor and the
SHA-256 of every chunk of per-row work it ran), ``arrays/`` and ``figures/``. The reports and the
app read only that folder.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scrutiny.devices import resolve_device
from scrutiny.errors import InputError
from scrutiny.models.checkpoint import LoadedModel, library_versions, load_model
from scrutiny.models.datasets import Dataset, load_dataset

from .config import AuditConfig, ConfigSource, config_for
from .details import Details
from .executor import Executor, LocalExecutor, Recorder
from .family import AuditContext, FamilyResult, family_runner, needs_model
from .findings import Finding, findings_document, validate_findings
from .policy import Policy, load_policy
from .run_folder import FINDINGS, RunWriter, check_destination, to_json

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from scrutiny.models.predictions import Predictions

__all__ = ["AuditResult", "run_audit"]


@dataclass
class AuditResult:
    """An audit held in memory: what the run folder holds, before (or after) it is written.

    Args:
        findings: every family's findings, in family order.
        details: family -> its typed details.
        document: the content of ``findings.json`` (findings, verdict, counts, details, subject).
        manifest: the manifest, less the hashes of the files (added when written).
        arrays, tables, figures: every family's, by run-folder path (``figures/fairness.png``).
        path: the run folder, once written.
    """

    findings: list[Finding]
    details: dict[str, Details]
    document: dict
    manifest: dict
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    path: Path | None = None

    @property
    def verdict(self) -> str:
        """``pass``, ``warn`` or ``fail`` (see :mod:`.findings`)."""
        return self.document["verdict"]

    @property
    def counts(self) -> dict[str, int]:
        return self.document["counts"]

    @property
    def seconds(self) -> dict[str, float]:
        """Wall time per family and in total."""
        return self.manifest["seconds"]

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the run folder at ``path``, as ``scrutiny audit --out`` does, and return it.

        The folder appears complete or not at all. Without ``overwrite`` an existing ``path``
        is refused; with it, only a run folder (or an empty folder) is replaced.

        Example:
            >>> result.save("runs/adult-mlp")  # doctest: +SKIP
            PosixPath('runs/adult-mlp')
        """
        from scrutiny.audit import plots

        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        with RunWriter(path, overwrite=overwrite) as writer:
            for relative, arrays in self.arrays.items():
                writer.arrays(relative, **arrays)
            for relative, table in self.tables.items():
                table.to_parquet(writer.path(relative), index=False)
            for relative, figure in self.figures.items():
                plots.save_figure(figure, writer.path(relative))
            writer.text(FINDINGS, to_json(self.document))
            self.path = writer.commit(self.manifest)
        return self.path


def run_audit(
    model: torch.nn.Module | LoadedModel | str | os.PathLike[str] | None,
    data: Dataset | str,
    *,
    predictions: Predictions | None = None,
    twin: torch.nn.Module | LoadedModel | str | os.PathLike[str] | None = None,
    twin_source: str | None = None,
    executor: Executor | None = None,
    config: ConfigSource = None,
    policy: Policy | str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
    source: str | None = None,
    command: list[str] | None = None,
) -> AuditResult:
    """Audit ``model`` on ``data``: every family the config names, gated by the policy.

    Args:
        model: a checkpoint folder (``scrutiny train --out``), a model loaded by
            :func:`~scrutiny.models.load_model`, or a plain ``nn.Module`` that reads the data
            set's own encoding (``data.preprocessor``).
            None for an audit of logged ``predictions``.
        data: a :class:`~scrutiny.models.Dataset` or the name of a built-in one (``"adult"``);
            its test split is audited, its training split is the reference.
        predictions: without a model, its decisions (and scores) on the test split
            (:func:`~scrutiny.models.load_predictions`): performance and fairness run on them,
            the families that need the model are recorded as not assessed.
        twin: for an ONNX ``model`` (no gradients), a PyTorch twin of it (a checkpoint folder, a
            loaded model or a module). Its class probabilities are compared with the ONNX
            model's on the test split (the finding ``performance.twin_difference``); where they
            agree within the policy's bound, the methods that need gradients run on the twin,
            else (and without a twin) they are recorded as not assessed.
        twin_source: how the twin is named in the manifest. Default: the path, or its kind.
        executor: where the chunks of per-row work run (:mod:`.executor`): a
            :class:`~.executor.LocalExecutor` (the default) or a :class:`~.executor.RayExecutor`.
            The findings are the same bytes either way, and so are the chunks' hashes in the
            manifest (``chunks``); the manifest's ``executor`` says which ran them and how many of
            its tasks ran again after their worker died (``retried_tasks``).
        config: a dict (``{"attributions": {"samples": 50}}``), a TOML file with the same keys, or
            an :class:`~.config.AuditConfig`. Default: the complete audit for the data type
            (:func:`~.config.config_for`).
        policy: a :class:`~.policy.Policy` or a TOML file. Default: the shipped policy.
        out: write the run folder there too (as :meth:`AuditResult.save`). Default: nothing is
            written.
        overwrite: with ``out``, replace an existing run folder.
        device: ``"cpu"`` or ``"cuda"``. Default: cuda when present.
        progress: show a progress display: the families done, and the current one's chunks of
            per-row work as they finish, wherever they run.
        source: how the model is named in the manifest. Default: the path, or the class name.
        command: the command line to record in the manifest. Default: none.

    Returns:
        The findings, typed details, arrays and figures, in memory.

    Example:
        >>> result = run_audit("artifacts/adult-mlp", "adult")  # doctest: +SKIP
        >>> result.verdict, result.counts["fail"]  # doctest: +SKIP
        ('fail', 9)
    """
    if isinstance(data, str):
        data = load_dataset(data)
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a Dataset or the name of a built-in data set, got {type(data).__name__}")
    if (model is None) == (predictions is None):
        raise InputError("give a model or its logged predictions (one of them)")
    files = [p for p in (model, twin, config, policy) if isinstance(p, (str, os.PathLike))]  # the run must not hold them
    loaded = _loaded(model, data) if model is not None else None
    twin_loaded = _loaded(twin, data) if twin is not None else None
    if twin_loaded is not None and (loaded is None or loaded.source != "onnx"):
        raise InputError("a twin lends its gradients to an ONNX model; this model has its own")
    if twin_loaded is not None and twin_loaded.source == "onnx":
        raise InputError("twin: an ONNX model has no gradients to lend; give a PyTorch twin (a checkpoint folder, a "
                         "TorchScript file or package.module:factory)")
    if source is None:
        source = str(model) if isinstance(model, (str, os.PathLike)) else \
            (type(loaded.model).__name__ if loaded else "logged predictions")
    config = config_for(data, config)
    if not isinstance(policy, Policy):
        if policy is not None and not isinstance(policy, (str, os.PathLike)):
            raise TypeError(f"policy must be a Policy or a path, got {type(policy).__name__}")
        policy = load_policy(policy)
    if "robustness" in config.families:
        policy.robust_eps(data.spec.task)  # a policy without a radius for this data type fails before any work
    _preflight(config, loaded)
    if out is not None:
        check_destination(out, overwrite=overwrite, inputs=files)  # before the work, not after it
    started = datetime.now(UTC)
    wall = time.perf_counter()
    run_device = resolve_device(device)
    with _callers_state_kept(run_device):
        torch.use_deterministic_algorithms(True, warn_only=True)
        results, seconds, twin_check, recorder = _run(
            loaded, data, predictions, twin_loaded, config=config, policy=policy, device=run_device, progress=progress,
            executor=executor if executor is not None else LocalExecutor())
    seconds["total"] = round(time.perf_counter() - wall, 3)
    findings = [*twin_check, *(f for r in results.values() for f in r.findings)]
    details = {family: r.details for family, r in results.items() if r.details is not None}
    document = findings_document(findings, details={k: v.to_dict() for k, v in details.items()},
                                 subject=_subject(loaded, data))
    validate_findings(document)
    result = AuditResult(
        findings=findings, details=details, document=document,
        manifest=_manifest(loaded, data, predictions, config, policy, source=source, command=command,
                           executor=recorder,
                           device=run_device, started=started, seconds=seconds, document=document,
                           twin=None if twin_loaded is None else {
                               "source": twin_source or (str(twin) if isinstance(twin, (str, os.PathLike))
                                                         else twin_loaded.source),
                               "weights_sha256": twin_loaded.weights_sha256}),
        arrays={k: v for r in results.values() for k, v in r.arrays.items()},
        tables={k: v for r in results.values() for k, v in r.tables.items()},
        figures={k: v for r in results.values() for k, v in r.figures.items()},
    )
    if out is not None:
        result.save(out, overwrite=overwrite)
    return result


def _loaded(model, dataset: Dataset) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, dataset=dataset)
    if isinstance(model, torch.nn.Module):
        return LoadedModel(model=model.cpu().eval(), source="module", weights_sha256=_state_sha256(model))
    raise TypeError(f"model must be an nn.Module, a LoadedModel or a checkpoint path, got {type(model).__name__}")


def _state_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over the module's parameters and buffers (names, dtypes, shapes, bytes), in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@contextmanager
def _callers_state_kept(device: torch.device):
    """The families seed Python's, NumPy's and torch's global generators (captum and aif360 draw
    from them) and switch torch to deterministic algorithms; the caller gets all of it back."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _run(loaded: LoadedModel | None, dataset: Dataset, predictions: Predictions | None, twin: LoadedModel | None, *,
         config: AuditConfig, policy: Policy, device: torch.device, progress: bool,
         executor: Executor) -> tuple[dict[str, FamilyResult], dict[str, float], list[Finding], Recorder]:
    """Each family's result and wall time, in config order, the twin check (an ONNX model's) and
    the record of the chunks ``executor`` ran; without a model, the families that need one give a
    not-assessed finding per check and no details."""
    twin_check: list[Finding] = []
    recorder = Recorder(executor)
    if loaded is None:
        context = AuditContext(model=None, dataset=dataset, preprocessor=dataset.preprocessor, config=config,
                               policy=policy, device=str(device), predictions=predictions, executor=recorder)
    else:
        preprocessor = loaded.preprocessor() if loaded.manifest else dataset.preprocessor
        context = AuditContext(model=loaded.model.to(device).eval(), dataset=dataset, preprocessor=preprocessor,
                               config=config, policy=policy, device=str(device), executor=recorder,
                               noise_sigma=(loaded.manifest or {}).get("training", {}).get("noise_sigma"))
        if loaded.source == "onnx":
            twin_check = _lend_gradients(context, twin)
    results: dict[str, FamilyResult] = {}
    seconds: dict[str, float] = {}
    with _Progress(progress, config.families) as shown:
        recorder.display = shown.chunks
        for family in config.families:
            shown.start(family)
            start = time.perf_counter()
            torch.manual_seed(config.seed)
            if context.model is None and needs_model(family):
                results[family] = context.family_not_assessed(
                    family, "no model: the audit reads logged predictions, and this check needs the model itself")
            else:
                results[family] = family_runner(family)(context)
            seconds[family] = round(time.perf_counter() - start, 3)
            shown.done(family, seconds[family])
    return results, seconds, twin_check, recorder


def _lend_gradients(context: AuditContext, twin: LoadedModel | None) -> list[Finding]:
    """For an ONNX model: check that ``twin`` computes its function on the test split (the finding
    ``performance.twin_difference``) and lend the families its gradients if so; say why not otherwise."""
    if twin is None:
        context.no_gradients = "an ONNX model has no gradients or weights of its own, and no PyTorch twin of it was given"
        return []
    from scrutiny.models.training import predict_proba

    features = context.preprocessor.transform(context.dataset.test.X)
    model = context.model
    assert model is not None
    ours = predict_proba(model, features, device=context.device)
    theirs = predict_proba(twin.model.to(context.device).eval(), features, device=context.device)
    if ours.shape != theirs.shape:
        raise InputError(f"twin: gives {theirs.shape[1]} class probabilities per row, the ONNX model "
                         f"{ours.shape[1]}; a twin computes the same function")
    difference = float(np.abs(ours - theirs).max())  # NaN where the twin's outputs are not finite
    finding = context.finding(
        "performance.twin_difference", difference,
        metric="largest |P(class) of the ONNX model - P(class) of its PyTorch twin| over the test split",
        explanation=f"Over the {len(features):,} test rows, the PyTorch twin's class probabilities differ from the "
                    f"ONNX model's by at most {difference:.3g}.")
    if finding.status == "fail" or not math.isfinite(difference):
        bound = context.policy.threshold("performance.twin_difference").get("fail_above")
        context.no_gradients = (f"the PyTorch twin given for the ONNX model differs from it (probabilities apart by "
                                f"up to {difference:.3g} on the test split, policy bound {bound:g})")
    else:
        context.twin = twin.model.to(context.device).eval()
    return [finding]


def _manifest(loaded: LoadedModel | None, dataset: Dataset, predictions: Predictions | None, config: AuditConfig,
              policy: Policy, *, source: str, command: list[str] | None, device: torch.device, started: datetime,
              seconds: dict, document: dict, executor: Recorder, twin: dict | None = None) -> dict[str, Any]:
    if loaded is None:
        assert predictions is not None
        model = {"source": source, "kind": "predictions", "weights_sha256": None, "architecture": None,
                 "trained_on": None, "decisions": predictions.rule}
    else:
        model = {"source": source, "kind": loaded.source, "weights_sha256": loaded.weights_sha256,
                 "architecture": loaded.manifest.get("architecture") if loaded.manifest else None,
                 "trained_on": loaded.manifest.get("dataset", {}).get("sha256") if loaded.manifest else None}
        if twin is not None:
            model["twin"] = twin
    return {
        "command": command,
        "model": model,
        "data": {"name": dataset.spec.name, "sha256": dataset.sha256, "n_train": len(dataset.train),
                 "n_test": len(dataset.test), **_missing_values(dataset)},
        "config": config.to_dict(),
        "policy": {"source": policy.source, "checks": policy.checks, "groups": policy.groups},
        "seed": config.seed,
        "executor": {"name": executor.name, "retried_tasks": executor.retried},
        "chunks": executor.chunks(),
        "device": _device_name(device),
        "libraries": library_versions(),
        "platform": platform.platform(),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": seconds,
        "verdict": document["verdict"],
        "counts": document["counts"],
    }


def _missing_values(dataset: Dataset) -> dict[str, Any]:
    """How a user's table handled missing values (its spec's ``missing`` and ``dropped_rows``);
    nothing for data sets that do not record it (the built-in ones)."""
    extra = dataset.spec.extra
    return {"missing": {"mode": extra["missing"], "dropped_rows": extra.get("dropped_rows", 0)}} \
        if "missing" in extra else {}


def _preflight(config: AuditConfig, loaded: LoadedModel | None) -> None:
    """What the config asks of this model, checked before any work (the data's side is
    checked when the config is loaded)."""
    if "fairness" not in config.families or not config.fairness.mitigate:
        return
    if loaded is None:
        raise InputError("audit config: 'fairness.mitigate' retrains the model, and an audit of logged predictions "
                         "has none; leave mitigate out")
    if getattr(loaded.model, "arch", None) is None:
        raise InputError("audit config: 'fairness.mitigate' retrains the model's architecture, which only a scrutiny "
                         "checkpoint records; leave mitigate out for this model")


class _Progress:
    """One display for the whole audit: a bar over the families, the current one named, and under
    it a bar over the chunks of per-row work the family has mapped, each counted as it finishes,
    wherever it ran (:meth:`chunks`, the executor's progress)."""

    def __init__(self, show: bool, families: list[str]):
        self.show, self.families = show, families

    def __enter__(self):
        if self.show:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TimeElapsedColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("audit", total=len(self.families))
            self.chunk_task = self.bar.add_task("chunks", total=None, visible=False)
        return self

    def start(self, family: str) -> None:
        if self.show:
            self.bar.update(self.task, description=f"audit: {family}…")

    def chunks(self, label: str, done: int, total: int) -> None:
        """``done`` of the ``total`` chunks of the work ``label`` have finished."""
        if self.show:
            self.bar.update(self.chunk_task, description=f"  chunks of {label}", completed=done, total=total,
                            visible=True)

    def done(self, family: str, seconds: float) -> None:
        if self.show:
            self.bar.update(self.chunk_task, visible=False)
            self.bar.console.print(f"  {family} done in {seconds:.1f} s")
            self.bar.advance(self.task)

    def __exit__(self, *exc):
        if self.show:
            self.bar.update(self.task, description="audit")
            self.bar.stop()


def _subject(loaded: LoadedModel | None, dataset: Dataset) -> dict:
    if loaded is None:
        model = {"source": "predictions", "architecture": None, "weights_sha256": None}
    else:
        architecture = loaded.manifest.get("architecture", {}).get("name") if loaded.manifest else None
        model = {"source": loaded.source, "architecture": architecture, "weights_sha256": loaded.weights_sha256}
    return {
        "model": model,
        "data": {"name": dataset.spec.name, "task": dataset.spec.task, "sha256": dataset.sha256,
                 "n_train": len(dataset.train), "n_test": len(dataset.test), "classes": list(dataset.spec.classes)},
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
