"""ONNX models: export a scrutiny model to ONNX, and run an ONNX file as a black-box module.

:func:`export_onnx` writes a checkpoint (or any loaded model, given an example input) as an ONNX
file whose input is what the model reads (the preprocessed float32 matrix, or images of shape
``(N, C, H, W)``) and whose output is the logits, with a dynamic batch axis. It uses PyTorch's
TorchScript-based exporter (``dynamo=False``): it needs only the ``onnx`` package (the dynamo
exporter also needs ``onnxscript`` and ``onnx-ir``) and works with every torch scrutiny supports.
The file is checked with onnxruntime against the model's own logits at two other batch sizes
before it is written, and written atomically.

:class:`OnnxModel` runs an ONNX file with onnxruntime inside an ``nn.Module``: no parameters, no
gradients. The file is read once into memory; its SHA-256 is that of the bytes the session runs.
Files that keep tensors in separate files (ONNX "external data") are refused, because the hash
would not cover those tensors.

onnxruntime and onnx are an optional extra: ``pip install "scrutiny[onnx]"``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from scrutiny.errors import CheckpointError, DataError, InputError, describe_raised
from scrutiny.models.checkpoint import LoadedModel, load_model
from scrutiny.safe_write import DestinationError, shown, write_file

__all__ = ["OPSET", "OnnxModel", "load_onnx", "export_onnx", "check_onnx_destination"]

OPSET = 17  # LayerNormalization is a native operator from 17; every onnxruntime the extra allows runs it
EXTRA = 'pip install "scrutiny[onnx]"'
MAX_PROTOBUF = 2**31 - 1  # a single-file ONNX model is one protobuf message, at most 2 GiB
EXPORT_RTOL, EXPORT_ATOL = 1e-4, 1e-5  # exported graph vs torch model, float32
_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
_QUIET = 4  # onnxruntime log level FATAL: its failures come back as exceptions, reported in one line


def _require(module: str) -> Any:
    """Import ``onnxruntime`` or ``onnx``, or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"ONNX models need the packages onnxruntime and onnx ({module} is missing): {EXTRA}") from None


class OnnxModel(nn.Module):
    """An ONNX classifier run by onnxruntime, as a black-box ``nn.Module``.

    ``forward(x)`` feeds ``x`` (detached, float32, on the CPU) to the session and returns the
    first output as a float32 tensor on ``x``'s device. The model has no parameters and no
    gradients: called on an input that requires a gradient while autograd is on, it raises.

    Args:
        source: the ``.onnx`` file, or its bytes.
        name: how messages name the model. Default: the path (``"ONNX model"`` for bytes).
        device: ``"cpu"``, or ``"cuda"`` for onnxruntime's CUDA provider (onnxruntime-gpu).
            Default: ``"cpu"``

    Attributes:
        sha256: SHA-256 of the file's bytes.
        input_shape: shape of one sample as the graph declares it; ``None`` for a named
            (symbolic) or unknown dimension.
        n_inputs: the width of a ``(N, d)`` input; ``None`` for images or an unknown width.
        n_classes: the width of the ``(N, k)`` output; ``None`` when the graph leaves it open.

    Raises:
        DataError: the file is missing, unreadable, not an ONNX model onnxruntime can run, or
            not one input tensor of floats and a float output of shape ``(N, k)``.

    Example:
        >>> model = OnnxModel("model.onnx")  # doctest: +SKIP
        >>> model.n_inputs, model.sha256[:12]  # doctest: +SKIP
        (108, '3f0c5a2e9b1d')
        >>> model(torch.zeros(2, 108)).shape  # doctest: +SKIP
        torch.Size([2, 2])
    """

    def __init__(self, source: str | os.PathLike | bytes, *, name: str | None = None, device: str = "cpu"):
        super().__init__()
        if not isinstance(device, str) or device not in _PROVIDERS:
            raise InputError(f"device must be 'cpu' or 'cuda' for an ONNX model; got {device!r}")
        if isinstance(source, bytes):
            data, self.path = source, None
            self.name = name or "ONNX model"
        elif isinstance(source, (str, os.PathLike)):
            self.path = Path(source)
            self.name = name or shown(source)
            data = _read(self.path, self.name)
        else:
            raise TypeError(f"source must be a path or bytes, got {type(source).__name__}")
        self.sha256 = hashlib.sha256(data).hexdigest()
        self._data, self._device = data, device  # to rebuild the session where the model is unpickled (a Ray worker)
        _check_single_file(data, self.name)
        ort = _require("onnxruntime")
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InputError(f"{self.name}: device 'cuda' needs onnxruntime's CUDA provider, which this onnxruntime "
                             f"lacks (install onnxruntime-gpu), or use device='cpu'")
        options = ort.SessionOptions()
        options.log_severity_level = _QUIET
        options.intra_op_num_threads = torch.get_num_threads()  # the thread budget scrutiny gives torch
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(data, options, providers=_PROVIDERS[device])
        except Exception as exc:  # onnxruntime's own error types, one per status code
            raise DataError(f"{self.name}: onnxruntime cannot load this ONNX model ({_ort_reason(exc)})") from None
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = _QUIET
        self._input, dims = self._graph_input()
        self._batch, self.input_shape = dims[0], dims[1:]
        self._output, self.n_classes = self._graph_output()
        self.n_inputs = self.input_shape[0] if len(self.input_shape) == 1 else None

    def __reduce__(self):
        """An onnxruntime session cannot be pickled: the model travels as its bytes and is rebuilt."""
        return (_rebuilt, (self._data, self.name, self._device))

    def _graph_input(self) -> tuple[str, tuple[int | None, ...]]:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs)
            raise DataError(f"{self.name}: the graph has {len(inputs)} inputs ({names}); scrutiny runs models "
                            f"with one input, the feature matrix or the batch of images")
        given = inputs[0]
        if given.type != "tensor(float)":
            raise DataError(f"{self.name}: input {given.name!r} is {given.type}; scrutiny feeds float32 tensors")
        dims = _dims(given.shape)
        if dims is None or len(dims) < 2:
            raise DataError(f"{self.name}: input {given.name!r} has shape {given.shape}; expected (N, features) "
                            f"or (N, C, H, W)")
        return given.name, dims

    def _graph_output(self) -> tuple[str, int | None]:
        first = self._session.get_outputs()[0]  # a model may also return, say, probabilities after the logits
        dims = _dims(first.shape)
        if first.type != "tensor(float)" or (dims is not None and len(dims) != 2):
            raise DataError(f"{self.name}: the first output {first.name!r} is {first.type} of shape {first.shape}; "
                            f"expected float logits of shape (N, classes)")
        return first.name, dims[1] if dims is not None else None

    def check_input_shape(self, shape: tuple[int, ...]) -> None:
        """Raise :class:`DataError` unless samples of ``shape`` (without the batch axis) fit
        the graph's input.

        Example:
            >>> OnnxModel("model.onnx").check_input_shape((107,))  # doctest: +SKIP
            Traceback (most recent call last):
            scrutiny.errors.DataError: model.onnx: expects inputs of width 108, the data has 107 columns
        """
        shape = tuple(int(d) for d in shape)
        expected = self.input_shape
        fits = len(shape) == len(expected) and all(e is None or e == d for e, d in zip(expected, shape))
        if fits:
            return
        if len(shape) == len(expected) == 1:
            raise DataError(f"{self.name}: expects inputs of width {expected[0]}, the data has {shape[0]} columns")
        raise DataError(f"{self.name}: expects inputs of shape {_shown_shape(expected)}, "
                        f"the data has {_shown_shape(shape)}")

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise InputError(f"{self.name}: an ONNX model has no gradients; methods that need them (integrated "
                             f"gradients, saliency, PGD, …) need a PyTorch twin of the model")
        self.check_input_shape(tuple(x.shape[1:]))
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        if self._batch is None or self._batch == len(array):
            logits = self._run(array)
        elif self._batch == 1:  # a graph exported for one row at a time
            logits = np.concatenate([self._run(array[i : i + 1]) for i in range(len(array))])
        else:
            raise DataError(f"{self.name}: the graph fixes the batch size at {self._batch}, the data has "
                            f"{len(array)} rows; export it with a dynamic batch axis")
        return torch.from_numpy(logits).to(device=x.device, dtype=torch.float32)

    def _run(self, array: np.ndarray) -> np.ndarray:
        try:
            return self._session.run([self._output], {self._input: array}, self._run_options)[0]
        except Exception as exc:
            raise CheckpointError(f"{self.name}: onnxruntime failed on a batch of size {len(array)} "
                                  f"({_ort_reason(exc)})") from None


def _rebuilt(data: bytes, name: str, device: str) -> OnnxModel:
    return OnnxModel(data, name=name, device=device).eval()


def load_onnx(path: str | os.PathLike, *, device: str = "cpu") -> LoadedModel:
    """An ONNX file as a :class:`~scrutiny.models.checkpoint.LoadedModel` (source ``"onnx"``,
    the file's SHA-256, no manifest).

    Example:
        >>> loaded = load_onnx("model.onnx")  # doctest: +SKIP
        >>> loaded.source, loaded.weights_sha256 == loaded.model.sha256  # doctest: +SKIP
        ('onnx', True)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path, got {type(path).__name__}")
    model = OnnxModel(path, device=device)
    return LoadedModel(model=model.eval(), source="onnx", weights_sha256=model.sha256)


def export_onnx(
    model: LoadedModel | str | os.PathLike,
    out: str | os.PathLike,
    *,
    example: Tensor | np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a model as an ONNX file: input the model's input, output its logits, dynamic batch.

    The exported graph is run with onnxruntime at two batch sizes other than the example's and
    must give the model's logits (``rtol`` 1e-4, ``atol`` 1e-5) before anything is written; the
    file then appears complete or not at all.

    Args:
        model: a checkpoint folder (anything :func:`~scrutiny.models.checkpoint.load_model`
            loads), or a loaded model.
        out: the file to write, such as ``model.onnx``.
        example: a few input rows, shape ``(N, *input_shape)``; needed for a model without a
            checkpoint manifest. Default: seeded random rows of the manifest's input shape.
        overwrite: replace ``out`` if it is an ONNX model. Default: False.

    Raises:
        DestinationError: ``out`` is refused (see :func:`check_onnx_destination`), before any work.
        CheckpointError: the model cannot be exported, or the exported graph does not reproduce it.

    Example:
        >>> export_onnx("artifacts/adult-mlp", "adult-mlp.onnx")  # doctest: +SKIP
        PosixPath('adult-mlp.onnx')
    """
    if not isinstance(model, (LoadedModel, str, os.PathLike)):
        raise TypeError(f"model must be a LoadedModel or a checkpoint path, got {type(model).__name__}")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path, got {type(out).__name__}")
    given = None if isinstance(model, LoadedModel) else model
    out = check_onnx_destination(out, overwrite=overwrite, inputs=[given])
    _require("onnx")
    _require("onnxruntime")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    module = loaded.model
    if getattr(module, "arch", None) == "autoencoder":
        raise InputError("model is an autoencoder; only classifiers, whose output is logits, are exported to ONNX")
    inputs = _example(loaded, example)
    was_training = module.training
    module.eval()
    try:
        data = _export(module, inputs, "model" if given is None else shown(given))
        _check_export(module, data, inputs, shown(out))
    finally:
        module.train(was_training)
    if overwrite and os.path.lexists(out):
        write_file(out, data)  # one rename over the old file: a reader sees the old or the new model
    else:
        write_file(out, data, replace=False)
    return out


def check_onnx_destination(path: str | os.PathLike, *, overwrite: bool = False,
                           inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Refuse (:class:`~scrutiny.safe_write.DestinationError`) a file :func:`export_onnx` must not
    write: a name that is not UTF-8, a symbolic link, a folder, one of ``inputs``, an existing
    file (unless ``overwrite`` and it is an ONNX model), or a place that cannot be written.
    Reads only; returns ``path`` as a Path.

    Example:
        >>> check_onnx_destination("model.onnx")  # doctest: +SKIP
        PosixPath('model.onnx')
    """
    path = Path(path)
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise DestinationError(path, "the name is not valid UTF-8; choose a name that is") from None
    for source in inputs:
        if source is not None and os.path.lexists(source) and os.path.realpath(source) == os.path.realpath(path):
            raise DestinationError(path, f"is the input {shown(source)}")
    if path.is_symlink():
        raise DestinationError(path, "is a symbolic link; name the file itself")
    if path.is_dir():
        raise DestinationError(path, "is a folder; expected a file name such as model.onnx")
    if path.exists():
        if not overwrite:
            refused = DestinationError(path, "already exists", exists=True)
            refused.args = (f"{refused.shown}: already exists; choose another file name or allow overwriting it",)
            raise refused
        if not _is_onnx_file(path):
            raise DestinationError(path, "is not an ONNX model; only a new file or an earlier ONNX model is replaced")
    parent = path.parent
    if not parent.is_dir():
        what = "is a file" if parent.exists() else "does not exist"
        raise DestinationError(path, f"cannot be created: the folder {shown(parent)} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DestinationError(path, f"cannot write in {shown(parent)} (permission denied)")
    return path


# ---------------------------------------------------------------- reading


def _read(path: Path, name: str) -> bytes:
    if path.is_dir():
        raise DataError(f"{name}: is a folder; expected an ONNX file")
    try:
        if path.stat().st_size > MAX_PROTOBUF:
            raise DataError(f"{name}: larger than 2 GiB, so not a single-file ONNX model; scrutiny does not load "
                            f"models whose tensors are in separate files")
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: not found") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot be read ({exc.strerror or exc})") from None


def _check_single_file(data: bytes, name: str) -> None:
    """Refuse bytes that are not an ONNX ModelProto with a graph, or whose tensors live in
    separate files: onnxruntime resolves those against the working folder when it reads bytes,
    and the SHA-256 would not cover them."""
    onnx = _require("onnx")
    try:
        proto = onnx.load_model_from_string(data)
    except Exception:  # protobuf's DecodeError, and whatever a malformed message raises
        raise DataError(f"{name}: not an ONNX model (the file is not an ONNX protobuf message)") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise DataError(f"{name}: not an ONNX model (it holds no graph)")
    external = next((t.name for t in _tensors(proto.graph) if t.data_location == onnx.TensorProto.EXTERNAL), None)
    if external is not None:
        raise DataError(f"{name}: tensor {external!r} is stored in a separate file (ONNX external data); scrutiny "
                        f"loads single-file models only, so that the SHA-256 it records covers every weight")


def _tensors(graph) -> list:
    """Every tensor of ``graph`` and of its subgraphs: initializers and constant attributes."""
    found = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
    for node in graph.node:
        for attribute in node.attribute:
            found += ([attribute.t] if attribute.HasField("t") else []) + list(attribute.tensors)
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                found += _tensors(sub)
    return found


def _is_onnx_file(path: Path) -> bool:
    try:
        _check_single_file(_read(path, shown(path)), shown(path))
    except DataError:
        return False
    return True


def _dims(shape) -> tuple[int | None, ...] | None:
    """onnxruntime's shape (ints, names of symbolic dimensions, None) with every unknown as
    None; None when the rank itself is unknown."""
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def _shown_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join(["N", *("?" if d is None else str(d) for d in shape)]) + ")"


def _ort_reason(exc: Exception) -> str:
    """onnxruntime's message without its ``[ONNXRuntimeError] : 7 : INVALID_PROTOBUF :`` prefix, one line."""
    text = str(exc).strip()
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(" : ", 3)[-1]
    return (text.splitlines() or [type(exc).__name__])[0].strip()


# ---------------------------------------------------------------- exporting


def _example(loaded: LoadedModel, example: Tensor | np.ndarray | None) -> Tensor:
    if example is None:
        if "input_shape" not in loaded.manifest:
            raise InputError("example is needed to export a model without a checkpoint manifest (its input shape)")
        shape = tuple(int(d) for d in loaded.manifest["input_shape"])
        generator = torch.Generator().manual_seed(0)
        return torch.randn(2, *shape, generator=generator)
    inputs = torch.as_tensor(example, dtype=torch.float32)
    if inputs.ndim < 2 or len(inputs) == 0:
        raise InputError(f"example must hold input rows, shape (N, *input_shape) with N >= 1; got {tuple(inputs.shape)}")
    return inputs


def _export(module: nn.Module, inputs: Tensor, label: str) -> bytes:
    options: dict[str, Any] = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    device = next(module.parameters(), torch.empty(0)).device
    with tempfile.TemporaryDirectory(prefix="scrutiny-onnx-") as folder:
        target = Path(folder) / "model.onnx"
        try:
            with warnings.catch_warnings():
                # the exporter warns that it is the legacy one, and warns of traced Python values;
                # _check_export tests what those warnings guess at
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (inputs.to(device),), target, input_names=["input"],
                                  output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                                  opset_version=OPSET, do_constant_folding=True, **options)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            raise CheckpointError(f"{label}: cannot be exported to ONNX ({describe_raised(exc)})") from None
        return target.read_bytes()


def _check_export(module: nn.Module, data: bytes, inputs: Tensor, name: str) -> None:
    """The exported graph must give the model's logits at batch sizes other than the traced one:
    a forward that reads the batch size as a Python number (``len(x)``) bakes it into the graph."""
    onnx_model = OnnxModel(data, name=name)
    device = next(module.parameters(), torch.empty(0)).device
    for batch in (inputs[:1], torch.cat([inputs, inputs[:1]])):
        with torch.no_grad():
            expected = module(batch.to(device)).float().cpu()
            try:
                got = onnx_model(batch)
            except CheckpointError as exc:
                raise CheckpointError(f"{exc}; nothing was written: the exported graph runs only at the example's "
                                      f"batch size (does the model's forward read it as a number, e.g. len(x)?)") from None
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=EXPORT_RTOL, atol=EXPORT_ATOL):
            gap = (got - expected).abs().max().item() if got.shape == expected.shape else "shapes differ"
            raise CheckpointError(f"{name}: the exported graph does not reproduce the model's logits on a batch of "
                                  f"size {len(batch)} (largest difference {gap}); nothing was written")
