"""Safe checkpoints: a folder with ``weights.safetensors`` and ``manifest.json``.

Loading never unpickles: weights are safetensors, everything else is JSON, and the model is
rebuilt from the architecture registry. The manifest records the architecture and its
hyper-parameters, the data-set spec and SHA-256, the fitted preprocessing, test metrics,
training settings, seed and library versions.

Bring-your-own models load through :func:`load_model` too:

- ``package.module:factory`` plus a safetensors file: ``factory()`` returns the ``nn.Module``;
- a TorchScript file (``.pt`` / ``.ts``, written by ``torch.jit.save``), read by TorchScript's
  own loader, which restores tensors and TorchScript code but no Python objects.

External models read the encoded matrix of the data set's preprocessing
(``TabularPreprocessor.encoded_feature_names`` order) or the image tensor, and return logits
of shape (N, n_classes).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from scrutiny.errors import CheckpointError, InputError, ScrutinyError, describe_raised
from scrutiny.hashing import sha256_file
from scrutiny.models.architectures import build_model
from scrutiny.models.datasets import Dataset
from scrutiny.models.preprocessing import preprocessor_from_dict
from scrutiny.models.spec import DatasetSpec, short_repr
from scrutiny.safe_write import Kind, Staging, read_manifest, shown

__all__ = ["FORMAT_VERSION", "CHECKPOINT", "LoadedModel", "save_checkpoint", "load_model", "check_fits", "library_versions"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
PROBE_ROWS = 8  # test rows check_fits runs through a model before it is audited


@dataclass
class LoadedModel:
    """A model ready for auditing, with what is known about where it came from.

    Args:
        model: the module, in eval mode on the CPU.
        source: ``"checkpoint"``, ``"factory"``, ``"torchscript"`` or ``"onnx"``.
        weights_sha256: SHA-256 of the weights file.
        manifest: the checkpoint manifest (empty for external models).
    """

    model: nn.Module
    source: str
    weights_sha256: str
    manifest: dict = field(default_factory=dict)

    @property
    def spec(self) -> DatasetSpec | None:
        return DatasetSpec.from_dict(self.manifest["dataset"]["spec"]) if self.manifest else None

    def preprocessor(self):
        """The preprocessing the model was trained with (checkpoints only)."""
        return preprocessor_from_dict(self.manifest["preprocessing"], self.spec)


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries an audit's numbers depend on, for the manifest.

    Example:
        >>> sorted(library_versions())[:3]  # doctest: +SKIP
        ['aif360', 'captum', 'lime']
    """
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("scrutiny", "torch", "numpy", "pandas", "scikit-learn", "safetensors", "captum",
                 "shap", "lime", "aif360"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def _is_checkpoint(folder: Path) -> bool:
    manifest = read_manifest(folder)
    return manifest is not None and "architecture" in manifest and "weights_sha256" in manifest


CHECKPOINT = Kind("scrutiny checkpoint", _is_checkpoint)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    dataset: Dataset,
    metrics: dict,
    training: dict,
    seed: int,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint folder atomically: it appears complete or not at all.

    Args:
        path: the checkpoint folder to create.
        model: a model built by :func:`~scrutiny.models.architectures.build_model`.
        dataset: the data set it was trained on.
        metrics: test metrics to record.
        training: the training settings used (epochs, learning rate, …).
        seed: the training seed.
        overwrite: replace an existing checkpoint (only a folder recognised as one, or an empty
            folder; see :mod:`scrutiny.safe_write`). Default: False.

    Example:
        >>> data = load_dataset("breast_cancer")  # doctest: +SKIP
        >>> trained = train_on(data, progress=False)  # doctest: +SKIP
        >>> save_checkpoint("artifacts/cancer-mlp", model=trained.model, dataset=data, metrics=trained.metrics,
        ...                 training=trained.settings, seed=0)  # doctest: +SKIP
        PosixPath('artifacts/cancer-mlp')
    """
    path = Path(path)
    staging = Staging(path, kind=CHECKPOINT, overwrite=overwrite)  # refuses before any work
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    manifest = {
        "format_version": FORMAT_VERSION,
        "architecture": {"name": model.arch, "config": model.config},
        "dataset": {"name": dataset.spec.name, "sha256": dataset.sha256, "spec": dataset.spec.to_dict()},
        "preprocessing": dataset.preprocessor.to_dict(),
        "input_shape": list(dataset.preprocessor.input_shape),
        "metrics": metrics,
        "training": training,
        "seed": seed,
        "libraries": library_versions(),
    }
    with staging:
        _write_weights(state, staging.path / WEIGHTS, destination=path)
        manifest["weights_sha256"] = sha256_file(staging.path / WEIGHTS)
        (staging.path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        staging.commit()
    return path


def _write_weights(state: dict, target: Path, *, destination: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(state, str(target), metadata={"format": "pt", "scrutiny_format": str(FORMAT_VERSION)})
    except SafetensorError as exc:  # its I/O errors (disk full, read-only) carry the system's message
        found = re.search(r'message: "([^"]+)"', str(exc))
        raise InputError(f"{shown(destination)}: cannot write ({found[1] if found else exc})") from None


def load_model(
    source: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    dataset: Dataset | None = None,
) -> LoadedModel:
    """Load a checkpoint folder, a TorchScript file, an ONNX file (run by onnxruntime, without
    gradients; ``pip install "scrutiny[onnx]"``), or ``package.module:factory`` + weights.

    With ``dataset`` given, also check that the model fits it (:func:`check_fits`). A
    checkpoint's weights are safetensors and its manifest JSON: nothing is unpickled.

    Example:
        >>> loaded = load_model("artifacts/adult-mlp", dataset=load_dataset("adult"))  # doctest: +SKIP
        >>> loaded.source, loaded.weights_sha256[:12]  # doctest: +SKIP
        ('checkpoint', '5d0c7e1f3a2b')
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or package.module:factory string, got {type(source).__name__}")
    text = str(source)
    path = Path(source)
    if path.is_dir():
        loaded = _load_checkpoint(path)
    elif path.is_file():
        if weights is not None:
            raise InputError(f"a weights file goes only with a package.module:factory model, not with the file {path}")
        if path.suffix.lower() == ".onnx":
            from scrutiny.models.onnx_model import load_onnx  # onnxruntime: an optional extra

            loaded = load_onnx(path)
        else:
            loaded = _load_torchscript(path)
    elif ":" in text and os.sep not in text.split(":")[0]:
        if weights is None:
            raise InputError(f"model factory '{text}' needs a weights file (.safetensors)")
        loaded = _load_factory(text, Path(weights))
    else:
        raise CheckpointError(
            f"{text}: not found; expected a checkpoint folder, a TorchScript or ONNX file, or package.module:factory"
        )
    loaded.model.eval()
    if dataset is not None:
        try:
            check_fits(loaded, dataset)
        except CheckpointError as exc:  # name the model the user gave
            raise CheckpointError(f"{text}: {exc}") from None
    return loaded


def check_fits(loaded: LoadedModel, dataset: Dataset) -> None:
    """Raise :class:`CheckpointError` if the model was made for other features or shapes, or
    if it fails or returns non-finite logits on a few real rows of the test split.

    Example:
        >>> check_fits(load_model("artifacts/adult-mlp"), load_dataset("german"))  # doctest: +SKIP
        Traceback (most recent call last):
        scrutiny.errors.CheckpointError: ...
    """
    if loaded.manifest:
        _check_same_features(loaded.manifest, dataset)
    shape = tuple(dataset.preprocessor.input_shape)
    name = dataset.spec.name
    preprocessor = loaded.preprocessor() if loaded.manifest else dataset.preprocessor
    test_X = dataset.test.X
    rows = test_X.iloc[:PROBE_ROWS] if hasattr(test_X, "iloc") else test_X[:PROBE_ROWS]
    probe = torch.as_tensor(preprocessor.transform(rows), dtype=torch.float32)
    n = len(probe)
    try:
        with torch.no_grad():
            output = loaded.model(probe)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the model's own code: anything it raises means it cannot be audited
        raise CheckpointError(
            f"model raised {describe_raised(exc)} on {n} test rows of data set '{name}' "
            f"(inputs of shape (N, {', '.join(map(str, shape))}))"
        ) from None
    expected = (n, dataset.spec.n_classes)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        given = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise CheckpointError(
            f"model returns {given} for {n} inputs; expected logits of shape {expected} "
            f"({dataset.spec.n_classes} classes of data set '{name}')"
        )
    finite = torch.isfinite(output)
    if not finite.all():
        kinds = " and ".join(k for k, bad in (("NaN", output.isnan()), ("inf", output.isinf())) if bad.any())
        raise CheckpointError(
            f"model returns non-finite logits ({kinds}) on {int((~finite).any(dim=1).sum())} of {n} test rows "
            f"of data set '{name}'; an audit needs finite logits"
        )


def _check_same_features(manifest: dict, dataset: Dataset) -> None:
    trained = DatasetSpec.from_dict(manifest["dataset"]["spec"])
    given = dataset.spec
    name = manifest["dataset"]["name"]
    if trained.task != given.task or trained.classes != given.classes:
        raise CheckpointError(
            f"checkpoint was trained on '{name}' ({trained.task}, classes {list(trained.classes)}); "
            f"data set '{given.name}' is {given.task} with classes {list(given.classes)}"
        )
    if trained.task == "image":
        if trained.image_shape != given.image_shape:
            raise CheckpointError(
                f"checkpoint expects images of shape {trained.image_shape}, data set '{given.name}' has {given.image_shape}"
            )
        return
    ours = [(f.name, f.kind) for f in trained.features]
    theirs = [(f.name, f.kind) for f in given.features]
    if ours != theirs:
        missing = [n for n, _ in ours if n not in dict(theirs)]
        extra = [n for n, _ in theirs if n not in dict(ours)]
        detail = f"missing {missing}, unexpected {extra}" if missing or extra else "same names, different order or kinds"
        raise CheckpointError(
            f"checkpoint features do not match data set '{given.name}' ({detail}); "
            f"the manifest was written for '{name}'"
        )
    encoded = manifest["preprocessing"].get("encoded_feature_names")
    if encoded != dataset.preprocessor.encoded_feature_names:
        raise CheckpointError(
            f"checkpoint's encoded columns ({len(encoded or [])}) differ from data set '{given.name}' "
            f"({dataset.preprocessor.n_encoded}): the categories seen in training differ"
        )


def _load_checkpoint(path: Path) -> LoadedModel:
    manifest_path, weights_path = path / MANIFEST, path / WEIGHTS
    for required in (manifest_path, weights_path):
        if not required.is_file():
            raise CheckpointError(f"{required}: missing; a checkpoint folder holds {MANIFEST} and {WEIGHTS}")
    manifest = _read_manifest(manifest_path)
    digest = sha256_file(weights_path)
    if manifest["weights_sha256"] != digest:
        raise CheckpointError(f"{weights_path}: SHA-256 does not match the manifest: the file is corrupt, truncated or was replaced")
    architecture = manifest["architecture"]
    try:
        model = build_model(architecture["name"], **architecture["config"])
    except ScrutinyError as exc:
        raise CheckpointError(f"{manifest_path}: 'architecture': {exc}") from None
    _load_weights(model, weights_path)
    return LoadedModel(model=model, source="checkpoint", weights_sha256=digest, manifest=manifest)


def _read_manifest(manifest_path: Path) -> dict:
    """The manifest, with every part the loader reads checked before a model is built."""
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{manifest_path}: cannot be read ({exc.strerror})") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(
            f"{manifest_path}: not a checkpoint manifest: expected a JSON object, got a JSON {_json_kind(manifest)}"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise CheckpointError(f"{manifest_path}: format_version {version!r}, this scrutiny reads {FORMAT_VERSION}")
    for key, kind in (("architecture", dict), ("dataset", dict), ("preprocessing", dict), ("weights_sha256", str)):
        if key not in manifest:
            raise CheckpointError(f"{manifest_path}: missing entry '{key}'")
        if not isinstance(manifest[key], kind):
            raise CheckpointError(f"{manifest_path}: '{key}' must be a JSON {_json_kind(kind())}, "
                                  f"got a JSON {_json_kind(manifest[key])}")
    config = manifest["architecture"].get("config")
    if not isinstance(manifest["architecture"].get("name"), str) or not isinstance(config, dict) \
            or "input_shape" not in config:
        raise CheckpointError(f"{manifest_path}: 'architecture' must be {{\"name\": text, \"config\": "
                              f"{{\"input_shape\": …, …}}}}, got {short_repr(manifest['architecture'])}")
    if not isinstance(manifest["dataset"].get("name"), str):
        raise CheckpointError(f"{manifest_path}: 'dataset.name' must be text, "
                              f"got {short_repr(manifest['dataset'].get('name'))}")
    try:
        spec = DatasetSpec.from_dict(manifest["dataset"].get("spec"))
    except ScrutinyError as exc:
        raise CheckpointError(f"{manifest_path}: 'dataset.spec': {exc}") from None
    try:
        preprocessor = preprocessor_from_dict(manifest["preprocessing"], spec)
    except ScrutinyError as exc:
        raise CheckpointError(f"{manifest_path}: 'preprocessing': {exc}") from None
    encoded = manifest["preprocessing"].get("encoded_feature_names")
    if spec.task == "tabular" and encoded is not None and encoded != preprocessor.encoded_feature_names:
        raise CheckpointError(f"{manifest_path}: 'preprocessing.encoded_feature_names' does not match the "
                              f"categories recorded beside it")
    return manifest


def _json_kind(value) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _load_factory(spec: str, weights: Path) -> LoadedModel:
    module_name, _, attribute = spec.partition(":")
    # the module's top-level code and the factory are the user's: whatever they raise (even
    # SystemExit, which would otherwise end the process with its own exit code) is a model error
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckpointError(f"cannot import model factory '{spec}' ({exc})") from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise CheckpointError(
            f"model factory '{spec}': importing '{module_name}' raised {describe_raised(exc)}"
        ) from None
    if not hasattr(module, attribute):
        raise CheckpointError(f"cannot import model factory '{spec}' (module '{module_name}' has no attribute "
                              f"'{attribute}')")
    try:
        model = getattr(module, attribute)()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise CheckpointError(f"model factory '{spec}' raised {describe_raised(exc)}") from None
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"model factory '{spec}' returned {type(model).__name__}, expected a torch.nn.Module")
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file not found")
    _load_weights(model, weights)
    return LoadedModel(model=model, source="factory", weights_sha256=sha256_file(weights))


def _load_torchscript(path: Path) -> LoadedModel:
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError or its own C++ error types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a TorchScript file ({first}); pickled models are never loaded") from None
    return LoadedModel(model=model, source="torchscript", weights_sha256=sha256_file(path))


def _load_weights(model: nn.Module, weights: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: corrupt or truncated safetensors file ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: tensor names do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{weights}: tensor '{name}' has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=True)
