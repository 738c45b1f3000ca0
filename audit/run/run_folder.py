"""The run folder: written by the audit runner, read by reports and the app.

::

    <run>/
      manifest.json    command, config, policy, seed, model and data hashes, library versions,
                       device, wall time per family, and the SHA-256 of every other file
      findings.json    the findings and each family's details (schema: findings.schema.json)
      arrays/          per-sample arrays (.npz, no pickled objects) and tables (.parquet)
      figures/         PNG plots

A run is built in a hidden staging folder beside its destination and renamed into place
only when every file is written (:class:`scrutiny.safe_write.Staging`: no-replace
unless overwriting, an atomic swap when overwriting, and only a folder recognised as a run is
replaced), so an interrupted audit leaves no run folder; staging left by a killed process is
removed by the next write to the same parent. Readers check the manifest's hashes, so a file
changed or truncated afterwards is reported, naming it, and refuse a file whose real path
leaves the run folder (a symbolic link out).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from scrutiny.audit.run.findings import validate_findings
from scrutiny.errors import InputError
from scrutiny.hashing import sha256_file
from scrutiny.safe_write import Kind, Staging, read_manifest, shown
from scrutiny.safe_write import check_destination as _check_destination

__all__ = ["RunError", "RunWriter", "RUN", "check_destination", "Run", "load_run", "list_runs", "to_json", "MANIFEST",
           "FINDINGS", "RUN_FORMAT"]

MANIFEST, FINDINGS = "manifest.json", "findings.json"
RUN_FORMAT = 1


class RunError(InputError):
    """A run folder that is missing, incomplete or corrupt."""


def to_json(document) -> str:
    """Stable JSON: sorted keys, NaN and infinity as null, numpy scalars as numbers."""
    return json.dumps(_plain(document), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (str, Path)):
        return _text(str(value))
    return value


def _text(text: str) -> str:
    """Text JSON can hold: a file name whose bytes are not UTF-8 (surrogate escapes) is written
    with those bytes as ``\\xff``, as :func:`~scrutiny.safe_write.shown` prints it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return shown(text)


def _is_run(folder: Path) -> bool:
    manifest = read_manifest(folder)
    return manifest is not None and "format_version" in manifest and isinstance(manifest.get("files"), dict)


RUN = Kind("scrutiny run folder", _is_run)


def check_destination(destination: str | os.PathLike, *, overwrite: bool, inputs=()) -> Path:
    """InputError unless a run may be written to ``destination``; callers check it before any work
    (see :func:`scrutiny.safe_write.check_destination`)."""
    return _check_destination(destination, kind=RUN, overwrite=overwrite, inputs=inputs)


class RunWriter:
    """Builds a run in a staging folder; :meth:`commit` moves it into place.

    Use as a context manager: leaving the block with an exception (Ctrl-C included) removes
    the staging folder, so nothing half-written remains; a failure to write (read-only, disk
    full) becomes an InputError naming the destination.
    """

    def __init__(self, destination: str | os.PathLike[str], *, overwrite: bool = False, inputs=()):
        self._staging = Staging(destination, kind=RUN, overwrite=overwrite, inputs=inputs,
                                subfolders=("arrays", "figures"))
        self.destination = self._staging.destination
        self.overwrite = overwrite

    @property
    def staging(self) -> Path:
        """The staging folder while the run is built (inside the with-block only)."""
        return self._staging.folder

    def __enter__(self) -> RunWriter:
        self._staging.__enter__()
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self._staging.__exit__(kind, exc, tb)

    def path(self, relative: str) -> Path:
        """Where a file of the run goes while it is being built."""
        return self.staging / relative

    def text(self, relative: str, content: str) -> Path:
        target = self.path(relative)
        target.write_text(content, encoding="utf-8")
        return target

    def arrays(self, relative: str, **arrays: np.ndarray) -> Path:
        target = self.path(relative)
        for name, array in arrays.items():
            if np.asarray(array).dtype == object:
                raise TypeError(f"{relative}: array {name} holds Python objects; runs store plain arrays only")
        with open(target, "wb") as handle:
            np.savez_compressed(handle, **cast(dict[str, Any], arrays))
        return target

    def files(self) -> dict[str, str]:
        """SHA-256 of every file written so far (but the manifest), by relative path."""
        return {
            p.relative_to(self.staging).as_posix(): sha256_file(p)
            for p in sorted(self.staging.rglob("*")) if p.is_file() and p.name != MANIFEST
        }

    def commit(self, manifest: dict) -> Path:
        """Write the manifest (with every file's hash) and move the run into place."""
        manifest = {**manifest, "format_version": RUN_FORMAT, "files": self.files()}
        self.text(MANIFEST, to_json(manifest))
        return self._staging.commit()


@dataclass
class Run:
    """A complete run folder, its manifest and findings read and checked."""

    path: Path
    manifest: dict
    findings: dict
    _typed: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # family -> its Details

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, relative: str) -> Path:
        """A file of the run, checked against the manifest's hash."""
        expected = self.manifest["files"].get(relative)
        target = self.path / relative
        if expected is None:
            raise RunError(f"{target}: not part of this run (not listed in {self.path / MANIFEST})")
        try:
            real = target.resolve()
        except (OSError, RuntimeError) as exc:  # a loop of symbolic links
            raise RunError(f"{target}: cannot be resolved ({exc})") from None
        if self.path.resolve() not in real.parents:
            raise RunError(f"{target}: leads out of the run folder (to {real}); a run holds its own files")
        if not target.is_file():
            raise RunError(f"{target}: missing; the run folder is incomplete")
        if sha256_file(target) != expected:
            raise RunError(f"{target}: changed or corrupt since the audit wrote it (SHA-256 differs from the manifest)")
        return target

    def arrays(self, relative: str) -> dict[str, np.ndarray]:
        """An .npz file of the run, loaded without unpickling."""
        try:
            with np.load(self.file(relative), allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (ValueError, OSError) as exc:
            raise RunError(f"{self.path / relative}: cannot be read as arrays ({exc})") from None

    def has(self, relative: str) -> bool:
        return relative in self.manifest["files"]

    @property
    def families(self) -> list[str]:
        """The families this run holds details of, in audit order."""
        from .family import FAMILIES

        return [f for f in FAMILIES if f in self.findings["details"]]

    def absent(self, family: str) -> str:
        """Why the run holds no details of ``family``: the reason its not-assessed findings give (an
        audit of logged predictions has no model to explain or attack), else that it was left out."""
        reasons = [f["explanation"] for f in self.findings["findings"]
                   if f["family"] == family and f["status"] == "not_assessed"]
        return reasons[0] if reasons else "Not part of this audit (its config left the family out)."

    def details(self, family: str):
        """The typed details of ``family`` (e.g. :class:`~scrutiny.audit.robustness.RobustnessDetails`),
        or None when the run did not include it; read once per run, then shared by every reader."""
        from .family import details_type

        document = self.findings["details"].get(family)
        if document is None:
            return None
        if family not in self._typed:
            try:
                self._typed[family] = details_type(family).from_dict(document)
            except ValueError as exc:
                raise RunError(f"{self.path / FINDINGS}: details of {family}: {exc}") from None
        return self._typed[family]


def load_run(path: str | Path) -> Run:
    """Open a run folder; RunError (one line, naming the file) if it is incomplete or corrupt.

    Example:
        >>> run = load_run("runs/adult-mlp")  # doctest: +SKIP
        >>> run.findings["verdict"], run.details("robustness").gated_eps  # doctest: +SKIP
        ('fail', 0.1)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run folder")
    manifest_path, findings_path = path / MANIFEST, path / FINDINGS
    if not manifest_path.is_file():
        raise RunError(f"{manifest_path}: missing; {path} is not a complete run folder")
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise RunError(f"{manifest_path}: not a scrutiny run manifest (no 'files' table)")
    if manifest.get("format_version") != RUN_FORMAT:
        raise RunError(f"{manifest_path}: run format {manifest.get('format_version')!r} is not supported; expected {RUN_FORMAT}")
    if not findings_path.is_file():
        raise RunError(f"{findings_path}: missing; the run folder is incomplete")
    findings = _read_json(findings_path)
    if isinstance(findings, dict) and isinstance(findings.get("details"), dict):
        from .family import upgrade_details

        findings["details"] = upgrade_details(findings["details"])
    try:
        validate_findings(findings, where=str(findings_path))
    except InputError as exc:
        raise RunError(str(exc)) from None
    run = Run(path=path, manifest=manifest, findings=findings)
    run.file(FINDINGS)  # edited by hand after the audit: its hash no longer matches
    return run


def list_runs(folder: str | Path) -> list[Path]:
    """Run folders directly under ``folder`` (those with a manifest), by name; staging folders skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder}: no such folder of runs")
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists())


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None
