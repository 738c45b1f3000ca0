"""ONNX models: a checkpoint exported to ONNX and run by onnxruntime gives the checkpoint's
logits; the batch axis is dynamic; files that are not ONNX, inputs of the wrong width, gradients
and existing destinations are refused in one line."""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e '.[dev]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[dev]'")

from scrutiny.errors import CheckpointError, DataError, InputError  # noqa: E402
from scrutiny.models import LoadedModel, check_fits, load_model, predict_proba  # noqa: E402
from scrutiny.models.onnx_model import OnnxModel, export_onnx, load_onnx  # noqa: E402
from scrutiny.safe_write import DestinationError  # noqa: E402

# torch 2.13 calls its TorchScript-based ONNX exporter legacy; export_onnx uses it on purpose (it needs only onnx)
pytestmark = pytest.mark.filterwarnings(r"ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning",
                                        r"ignore:The feature will be removed:DeprecationWarning")

MODELS = [("adult", "mlp"), ("digits", "cnn")]


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """``exported(data, arch)``: (dataset, checkpoint, ONNX file), exported once per module."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("onnx")

    def _exported(data: str, arch: str):
        if (data, arch) not in cache:
            dataset, _, checkpoint = trained(data, arch)
            cache[data, arch] = (dataset, checkpoint, export_onnx(checkpoint, root / f"{data}-{arch}.onnx"))
        return cache[data, arch]

    return _exported


def _encoded(dataset) -> np.ndarray:
    return dataset.preprocessor.transform(dataset.test.X).astype(np.float32)


def _torch_logits(model: nn.Module, X: np.ndarray) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(X))


def _one_line(error: BaseException, path) -> str:
    message = str(error)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), "the library's own exception leaks as a cause"
    return message


@pytest.mark.parametrize(("data", "arch"), MODELS, ids=lambda v: v)
def test_onnx_model_gives_the_checkpoints_logits(exported, data, arch):
    dataset, checkpoint, path = exported(data, arch)
    X = _encoded(dataset)
    reference = load_model(checkpoint).model
    onnx_model = OnnxModel(path)
    with torch.no_grad():
        got = onnx_model(torch.from_numpy(X))
    expected = _torch_logits(reference, X)
    assert got.dtype == torch.float32 and got.shape == (len(X), dataset.spec.n_classes)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), (got - expected).abs().max()
    np.testing.assert_allclose(predict_proba(onnx_model, X), predict_proba(reference, X), rtol=0, atol=1e-5)
    assert list(onnx_model.parameters()) == []
    assert onnx_model.input_shape == tuple(dataset.preprocessor.input_shape)
    assert onnx_model.n_classes == dataset.spec.n_classes
    assert onnx_model.n_inputs == (X.shape[1] if X.ndim == 2 else None)


@pytest.mark.parametrize(("data", "arch"), MODELS, ids=lambda v: v)
def test_batch_axis_is_dynamic(exported, data, arch):
    dataset, checkpoint, path = exported(data, arch)
    batch = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # a named dimension in the graph itself
    X = _encoded(dataset)
    assert len(X) >= 300
    reference, onnx_model = load_model(checkpoint).model, OnnxModel(path)
    for rows in (X[:1], X[:300], X[7:9]):
        with torch.no_grad():
            got = onnx_model(torch.from_numpy(rows))
        assert torch.allclose(got, _torch_logits(reference, rows), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("data", "arch"), MODELS, ids=lambda v: v)
def test_load_onnx_is_a_loaded_model_that_fits_its_data(exported, data, arch):
    dataset, _, path = exported(data, arch)
    loaded = load_onnx(path)
    assert isinstance(loaded, LoadedModel) and loaded.source == "onnx" and loaded.manifest == {}
    assert loaded.weights_sha256 == loaded.model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    check_fits(loaded, dataset)  # raises unless it returns finite logits of the right shape on test rows


def test_export_writes_only_the_file(trained, tmp_path):
    _, _, checkpoint = trained("digits", "cnn")
    out = export_onnx(checkpoint, tmp_path / "model.onnx")
    assert out == tmp_path / "model.onnx" and os.listdir(tmp_path) == ["model.onnx"]  # no staging left behind
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("kind", ["random bytes", "text", "safetensors", "empty", "folder", "missing"])
def test_a_file_that_is_not_onnx_is_one_line_naming_it(trained, tmp_path, capfd, kind):
    path = tmp_path / "model.onnx"
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        path.write_text("age,income,approved\n37,50000,yes\n", encoding="utf-8")
    elif kind == "safetensors":
        path.write_bytes((trained("digits", "cnn")[2] / "weights.safetensors").read_bytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(DataError) as raised:
        OnnxModel(path)
    message = _one_line(raised.value, path)
    assert ("not found" if kind == "missing" else "folder" if kind == "folder" else "not an ONNX model") in message
    with pytest.raises(DataError):
        load_onnx(path)
    captured = capfd.readouterr()
    assert captured.out == captured.err == ""  # onnxruntime logs nothing of its own


def test_tensors_in_a_separate_file_are_refused(exported, tmp_path):
    _, _, path = exported("adult", "mlp")
    folder = tmp_path / "external"
    folder.mkdir()
    onnx.save_model(onnx.load(str(path)), str(folder / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    with pytest.raises(DataError, match="separate file") as raised:
        OnnxModel(folder / "model.onnx")
    _one_line(raised.value, folder / "model.onnx")


def _graph(inputs, outputs) -> bytes:
    nodes = [onnx.helper.make_node("Identity", [inputs[0].name], [outputs[0].name])]
    graph = onnx.helper.make_graph(nodes, "g", inputs, outputs)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString()


def _value(name, kind, shape):
    return onnx.helper.make_tensor_value_info(name, kind, shape)


FLOAT, INT64 = 1, 7  # onnx.TensorProto.FLOAT, INT64


@pytest.mark.parametrize(("inputs", "outputs", "expected"), [
    ([_value("a", FLOAT, ["N", 3]), _value("b", FLOAT, ["N", 3])], [_value("y", FLOAT, ["N", 3])], "2 inputs"),
    ([_value("x", INT64, ["N", 3])], [_value("y", INT64, ["N", 3])], "tensor(int64)"),
    ([_value("x", FLOAT, ["N"])], [_value("y", FLOAT, ["N"])], "expected (N, features)"),
    ([_value("x", FLOAT, ["N", 3, 2])], [_value("y", FLOAT, ["N", 3, 2])], "expected float logits"),
], ids=["two inputs", "integer input", "one axis", "output of rank 3"])
def test_graphs_scrutiny_cannot_feed_are_refused(tmp_path, inputs, outputs, expected):
    path = tmp_path / "graph.onnx"
    path.write_bytes(_graph(inputs, outputs))
    with pytest.raises(DataError) as raised:
        OnnxModel(path)
    assert expected in _one_line(raised.value, path)


def test_wrong_input_width_names_both_widths(exported):
    dataset, _, path = exported("adult", "mlp")
    width = dataset.preprocessor.n_encoded
    onnx_model = OnnxModel(path)
    expected = f"{path}: expects inputs of width {width}, the data has {width - 1} columns"
    with pytest.raises(DataError) as raised:
        onnx_model.check_input_shape((width - 1,))
    assert str(raised.value) == expected
    with pytest.raises(DataError) as raised, torch.no_grad():
        onnx_model(torch.zeros(5, width - 1))
    assert str(raised.value) == expected
    onnx_model.check_input_shape((width,))


def test_wrong_image_shape_names_both_shapes(exported):
    _, _, path = exported("digits", "cnn")
    with pytest.raises(DataError) as raised:
        OnnxModel(path).check_input_shape((3, 8, 8))
    assert str(raised.value) == f"{path}: expects inputs of shape (N, 1, 8, 8), the data has (N, 3, 8, 8)"


def test_gradients_are_refused_clearly(exported):
    dataset, _, path = exported("adult", "mlp")
    onnx_model = OnnxModel(path)
    x = torch.from_numpy(_encoded(dataset)[:4]).requires_grad_()
    with pytest.raises(InputError, match="an ONNX model has no gradients") as raised:
        onnx_model(x)
    _one_line(raised.value, path)
    with torch.no_grad():  # nothing asks for a gradient here
        assert onnx_model(x).shape == (4, 2)


def test_a_graph_with_a_fixed_batch_of_one_runs_row_by_row(trained, tmp_path):
    dataset, _, checkpoint = trained("digits", "cnn")
    model = load_model(checkpoint).model
    X = _encoded(dataset)[:40]
    for batch in (1, 4):
        path = tmp_path / f"batch{batch}.onnx"
        torch.onnx.export(model, (torch.from_numpy(X[:batch]),), str(path), input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)  # no dynamic axis: the batch size is fixed
        onnx_model = OnnxModel(path)
        if batch == 1:
            with torch.no_grad():
                assert torch.allclose(onnx_model(torch.from_numpy(X)), _torch_logits(model, X), rtol=0, atol=1e-5)
        else:
            with pytest.raises(DataError, match="fixes the batch size at 4, the data has 40 rows"):
                onnx_model(torch.from_numpy(X))


def test_export_refuses_an_existing_file_unless_it_is_an_onnx_model_and_overwrite_is_given(trained, tmp_path):
    _, _, checkpoint = trained("digits", "cnn")
    out = tmp_path / "model.onnx"
    out.write_text("keep me", encoding="utf-8")
    for overwrite in (False, True):
        refusal = "already exists; choose another file name" if not overwrite else "is not an ONNX model"
        with pytest.raises(DestinationError, match=refusal):
            export_onnx(checkpoint, out, overwrite=overwrite)
        assert out.read_text(encoding="utf-8") == "keep me"
    with pytest.raises(DestinationError, match="is a folder"):
        export_onnx(checkpoint, tmp_path)
    other = tmp_path / "other.onnx"
    other.write_bytes(_graph([_value("x", FLOAT, ["N", 64])], [_value("y", FLOAT, ["N", 64])]))
    export_onnx(checkpoint, other, overwrite=True)  # an earlier ONNX model is replaced
    assert OnnxModel(other).n_classes == 10
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "other.onnx"]


def test_a_forward_that_fixes_the_batch_size_is_not_exported(tmp_path):
    class FixesBatch(nn.Module):  # prepends a learned token, sized with len(x) as a Python number
        def __init__(self):
            super().__init__()
            self.token = nn.Parameter(torch.ones(1, 1))
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.cat([self.token.expand(len(x), -1), x], dim=1))

    loaded = LoadedModel(model=FixesBatch().eval(), source="factory", weights_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="nothing was written"):
        export_onnx(loaded, tmp_path / "model.onnx", example=torch.randn(3, 3))
    with pytest.raises(InputError, match="example is needed"):
        export_onnx(loaded, tmp_path / "model.onnx")
    assert os.listdir(tmp_path) == []


def test_without_onnxruntime_the_error_names_the_extra(exported, monkeypatch):
    _, _, path = exported("adult", "mlp")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(InputError, match=r'pip install "scrutiny\[onnx\]"') as raised:
        OnnxModel(path)
    assert "\n" not in str(raised.value)


def test_cuda_needs_onnxruntimes_cuda_provider(exported):
    dataset, checkpoint, path = exported("adult", "mlp")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(InputError, match="CUDA provider"):
            OnnxModel(path, device="cuda")
        return
    X = _encoded(dataset)
    with torch.no_grad():
        got = OnnxModel(path, device="cuda")(torch.from_numpy(X))
    assert torch.allclose(got, _torch_logits(load_model(checkpoint).model, X), rtol=0, atol=1e-4)


def test_wrong_argument_types_raise_type_error(tmp_path):
    with pytest.raises(TypeError):
        OnnxModel(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        load_onnx(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        export_onnx(42, tmp_path / "model.onnx")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="device must be"):
        OnnxModel(tmp_path / "model.onnx", device="tpu")


def test_an_autoencoder_is_not_exported_as_a_classifier(tmp_path):
    from scrutiny.models import build_model

    autoencoder = build_model("autoencoder", input_shape=(6,), hidden=(4,), latent=2).eval()
    loaded = LoadedModel(model=autoencoder, source="factory", weights_sha256="0" * 64)
    with pytest.raises(InputError, match="autoencoder"):
        export_onnx(loaded, tmp_path / "model.onnx", example=torch.randn(2, 6))
    assert os.listdir(tmp_path) == []
