"""Safe checkpoints: round trips, manifest contents, atomic writes, corrupt files, and
bring-your-own models (factory + safetensors, TorchScript; never pickles)."""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import shutil
import sys
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from scrutiny.errors import CheckpointError, InputError
from scrutiny.models import ARCHITECTURES, DatasetSpec, build_model, load_model, save_checkpoint, train_on
from scrutiny.models.checkpoint import FORMAT_VERSION
from scrutiny.models.recipes import IMAGE_ONLY

# torch 2.13 deprecates TorchScript; scrutiny still reads it for bring-your-own models.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

CLASSIFIERS = sorted(a for a in ARCHITECTURES if a != "autoencoder")
ROUND_TRIPS = [(arch, "digits") for arch in CLASSIFIERS] + [
    (arch, "breast_cancer") for arch in CLASSIFIERS if arch not in IMAGE_ONLY
]


def _logits(model: nn.Module, X) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(X))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _leftovers(path: Path) -> list[Path]:
    """Hidden staging or trash siblings of a checkpoint folder (``.NAME.*``)."""
    return sorted(path.parent.glob(f".{path.name}*"))


def _save(path, model, dataset, **kwargs):
    return save_checkpoint(path, model=model, dataset=dataset, metrics={"accuracy": 0.5}, training={"epochs": 0},
                           seed=0, **kwargs)


def _untrained(arch, dataset, seed=0):
    torch.manual_seed(seed)
    model = build_model(arch, input_shape=tuple(dataset.preprocessor.input_shape), n_classes=dataset.spec.n_classes)
    # Move every float tensor (BatchNorm running statistics included) away from its
    # initial value, so a loader that rebuilt the model without restoring all of the
    # state could not pass.
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) * 0.1)
    return model.eval()


# ---------------------------------------------------------------- round trips


def test_trained_tabular_round_trip_is_bit_identical(trained):
    dataset, result, path = trained("breast_cancer", "mlp")
    loaded = load_model(path, dataset=dataset)
    assert loaded.source == "checkpoint"
    assert not loaded.model.training
    X = dataset.encode(dataset.test.X)
    assert torch.equal(_logits(loaded.model, X), _logits(result.model, X))
    # The preprocessing restored from the manifest encodes exactly like the fitted one.
    restored = loaded.preprocessor().transform(dataset.test.X)
    assert (restored == X).all()
    assert loaded.spec == dataset.spec


def test_trained_cnn_round_trip_is_bit_identical(load, tmp_path):
    dataset = load("digits")
    result = train_on(dataset, "cnn", epochs=1, progress=False, device="cpu")
    path = save_checkpoint(tmp_path / "cnn", model=result.model, dataset=dataset, metrics=result.metrics,
                           training=result.settings, seed=0)
    loaded = load_model(path, dataset=dataset)
    X = dataset.encode(dataset.test.X)
    assert torch.equal(_logits(loaded.model, X), _logits(result.model, X))
    assert loaded.manifest["architecture"]["name"] == "cnn"


@pytest.mark.parametrize("arch,data", ROUND_TRIPS, ids=[f"{a}-{d}" for a, d in ROUND_TRIPS])
def test_every_classifier_round_trips(arch, data, load, tmp_path):
    dataset = load(data)
    model = _untrained(arch, dataset)
    path = _save(tmp_path / arch, model, dataset)
    loaded = load_model(path, dataset=dataset)
    X = dataset.encode(dataset.test.X[:64])
    expected = _logits(model, X)
    assert torch.equal(_logits(loaded.model, X), expected)
    # Rebuilding from the manifest alone (other random weights) would not pass.
    fresh = _untrained(arch, dataset, seed=1)
    assert not torch.equal(_logits(fresh, X), expected)


# ---------------------------------------------------------------- manifest


def test_manifest_records_provenance(trained):
    dataset, result, path = trained("breast_cancer", "mlp")
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "weights.safetensors"]
    manifest = json.loads((path / "manifest.json").read_text())

    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest["architecture"] == {"name": "mlp", "config": result.model.config}
    rebuilt = build_model(manifest["architecture"]["name"], **manifest["architecture"]["config"])
    assert [tuple(t.shape) for t in rebuilt.state_dict().values()] == [
        tuple(t.shape) for t in result.model.state_dict().values()
    ]
    assert manifest["dataset"]["name"] == "breast_cancer"
    assert manifest["dataset"]["sha256"] == dataset.sha256
    assert len(dataset.sha256) == 64
    assert DatasetSpec.from_dict(manifest["dataset"]["spec"]) == dataset.spec
    assert manifest["preprocessing"] == json.loads(json.dumps(dataset.preprocessor.to_dict()))
    assert manifest["preprocessing"]["encoded_feature_names"] == dataset.preprocessor.encoded_feature_names
    assert len(manifest["preprocessing"]["encoded_feature_names"]) == 30
    assert manifest["input_shape"] == [30]
    assert manifest["metrics"] == result.metrics
    assert manifest["training"]["epochs"] == result.settings["epochs"]
    assert manifest["seed"] == 0
    assert manifest["libraries"]["torch"] == torch.__version__
    assert "python" in manifest["libraries"]
    assert manifest["weights_sha256"] == _sha256(path / "weights.safetensors")


def test_loading_never_unpickles(trained, monkeypatch):
    dataset, result, path = trained("breast_cancer", "mlp")
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("unpickling during load_model")

    class RefusingUnpickler:
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.serialization, "load", refuse)
    loaded = load_model(path, dataset=dataset)
    X = dataset.encode(dataset.test.X)
    assert torch.equal(_logits(loaded.model, X), _logits(result.model, X))
    assert calls == []


# ---------------------------------------------------------------- atomic writes


def test_failed_save_leaves_no_folder(load, tmp_path, monkeypatch):
    import safetensors.torch

    dataset = load("breast_cancer")

    def half_written(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 100)
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    target = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="disk full"):
        _save(target, _untrained("mlp", dataset), dataset)
    assert not target.exists()
    assert _leftovers(target) == []
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_checkpoint(load, tmp_path, monkeypatch):
    import safetensors.torch

    dataset = load("breast_cancer")
    target = _save(tmp_path / "ckpt", _untrained("mlp", dataset), dataset)
    before = _snapshot(target)

    def failing(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    with pytest.raises(RuntimeError):
        _save(target, _untrained("mlp", dataset, seed=1), dataset, overwrite=True)
    assert _snapshot(target) == before
    assert _leftovers(target) == []


def test_existing_folder_needs_overwrite(load, tmp_path):
    dataset = load("breast_cancer")
    target = _save(tmp_path / "ckpt", _untrained("mlp", dataset, seed=0), dataset)
    before = _snapshot(target)
    with pytest.raises(InputError, match="already exists"):
        _save(target, _untrained("mlp", dataset, seed=1), dataset)
    assert _snapshot(target) == before

    replacement = _untrained("mlp", dataset, seed=1)
    _save(target, replacement, dataset, overwrite=True)
    assert _snapshot(target) != before
    assert _leftovers(target) == []
    loaded = load_model(target, dataset=dataset)
    X = dataset.encode(dataset.test.X)
    assert torch.equal(_logits(loaded.model, X), _logits(replacement, X))


def test_existing_file_at_target_needs_overwrite(load, tmp_path):
    dataset = load("breast_cancer")
    target = tmp_path / "ckpt"
    target.write_text("not a checkpoint")
    with pytest.raises(InputError):
        _save(target, _untrained("mlp", dataset), dataset)
    assert target.read_text() == "not a checkpoint"


# ---------------------------------------------------------------- corrupt checkpoints


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\xff\x13 this is not a safetensors file" * 50)


def _rehash(folder: Path) -> None:
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["weights_sha256"] = _sha256(folder / "weights.safetensors")
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", [_truncate, _garbage], ids=["truncated", "garbage"])
@pytest.mark.parametrize("rehash", [False, True], ids=["hash-check", "parser"])
def test_corrupt_weights_raise_checkpoint_error(trained, tmp_path, damage, rehash):
    _, _, path = trained("breast_cancer", "mlp")
    folder = _copy(path, tmp_path)
    damage(folder / "weights.safetensors")
    if rehash:  # the hash matches, so the safetensors parser itself meets the damage
        _rehash(folder)
    with pytest.raises(CheckpointError, match="weights.safetensors") as info:
        load_model(folder)
    message = str(info.value)
    assert str(folder / "weights.safetensors") in message
    assert ("corrupt or truncated safetensors" in message) == rehash
    assert "\n" not in message


def test_weights_of_another_model_raise_checkpoint_error(trained, load, tmp_path):
    _, _, path = trained("breast_cancer", "mlp")
    folder = _copy(path, tmp_path)
    dataset = load("breast_cancer")
    other = _save(tmp_path / "other", build_model("mlp", input_shape=(30,), n_classes=2, hidden=(8,)), dataset)
    shutil.copy(other / "weights.safetensors", folder / "weights.safetensors")
    _rehash(folder)
    with pytest.raises(CheckpointError, match="weights.safetensors"):
        load_model(folder)


def test_missing_manifest(trained, tmp_path):
    folder = _copy(trained("breast_cancer", "mlp")[2], tmp_path)
    (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json"):
        load_model(folder)


def test_missing_weights(trained, tmp_path):
    folder = _copy(trained("breast_cancer", "mlp")[2], tmp_path)
    (folder / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights.safetensors"):
        load_model(folder)


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '{"format_version": 1}'],
                         ids=["invalid", "empty", "list", "incomplete"])
def test_bad_manifest(trained, tmp_path, text):
    folder = _copy(trained("breast_cancer", "mlp")[2], tmp_path)
    (folder / "manifest.json").write_text(text)
    with pytest.raises(CheckpointError, match="manifest.json"):
        load_model(folder)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_wrong_format_version(trained, tmp_path, version):
    folder = _copy(trained("breast_cancer", "mlp")[2], tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = version
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="format_version"):
        load_model(folder)


def test_missing_path():
    with pytest.raises(CheckpointError, match="not found"):
        load_model("/nonexistent/checkpoint-folder")


# ---------------------------------------------------------------- wrong data set


def test_checkpoint_for_other_data_set(trained, load):
    _, _, path = trained("breast_cancer", "mlp")
    with pytest.raises(CheckpointError, match="breast_cancer"):
        load_model(path, dataset=load("german"))
    with pytest.raises(CheckpointError):
        load_model(path, dataset=load("digits"))


def test_manifest_with_edited_feature(trained, tmp_path):
    dataset, _, path = trained("breast_cancer", "mlp")
    folder = _copy(path, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["dataset"]["spec"]["features"][3]["name"] = "tumour colour"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    # the weights hash is still valid, but the spec no longer fits the preprocessing beside it
    with pytest.raises(CheckpointError, match="'preprocessing': 'means' has no entry for feature.*'tumour colour'"):
        load_model(folder)
    manifest["preprocessing"]["means"]["tumour colour"] = manifest["preprocessing"]["means"][dataset.spec.feature_names[3]]
    manifest["preprocessing"]["scales"]["tumour colour"] = manifest["preprocessing"]["scales"][dataset.spec.feature_names[3]]
    manifest["preprocessing"]["encoded_feature_names"][3] = "tumour colour"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    load_model(folder)  # consistent in itself: the file loads
    with pytest.raises(CheckpointError, match="tumour colour") as info:
        load_model(folder, dataset=dataset)
    assert dataset.spec.feature_names[3] in str(info.value)


# ---------------------------------------------------------------- bring your own model

FACTORY_SOURCE = """
from torch import nn

def net():
    return nn.Sequential(nn.Linear({width}, 16), nn.ReLU(), nn.Linear(16, 2))

def narrow():
    return nn.Sequential(nn.Linear({narrow}, 16), nn.ReLU(), nn.Linear(16, 2))

def three_classes():
    return nn.Sequential(nn.Linear({width}, 16), nn.ReLU(), nn.Linear(16, 3))

def not_a_module():
    return "hello"
"""


@pytest.fixture
def factories(tmp_path, monkeypatch, load):
    """A package ``byo_<id>`` with module ``nets`` of model factories for breast_cancer."""
    width = load("breast_cancer").preprocessor.n_encoded
    name = f"byo_{uuid.uuid4().hex[:10]}"
    package = tmp_path / "site" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(FACTORY_SOURCE.format(width=width, narrow=width - 20))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield f"{name}.nets"
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def _save_weights(model: nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_factory_with_safetensors(factories, load, tmp_path):
    dataset = load("breast_cancer")
    torch.manual_seed(0)
    original = importlib.import_module(factories).net().eval()
    weights = _save_weights(original, tmp_path / "net.safetensors")

    loaded = load_model(f"{factories}:net", weights=weights, dataset=dataset)
    assert loaded.source == "factory"
    assert loaded.manifest == {}
    assert loaded.weights_sha256 == _sha256(weights)
    X = dataset.encode(dataset.test.X)
    assert torch.equal(_logits(loaded.model, X), _logits(original, X))
    torch.manual_seed(1)
    fresh = importlib.import_module(factories).net()
    assert not torch.equal(_logits(fresh, X), _logits(original, X))


def test_factory_state_dict_of_wrong_shape(factories, tmp_path):
    other = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 2))  # first layer reads 20, not 30
    weights = _save_weights(other, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_model(f"{factories}:net", weights=weights)
    message = str(info.value)
    assert "(16, 20)" in message and "(16, 30)" in message
    assert "other.safetensors" in message


def test_factory_with_wrong_input_width(factories, load, tmp_path):
    dataset = load("breast_cancer")
    weights = _save_weights(importlib.import_module(factories).narrow(), tmp_path / "narrow.safetensors")
    load_model(f"{factories}:narrow", weights=weights)  # fine without data
    with pytest.raises(CheckpointError, match=r"\(N, 30\)"):
        load_model(f"{factories}:narrow", weights=weights, dataset=dataset)


def test_factory_with_wrong_class_count(factories, load, tmp_path):
    dataset = load("breast_cancer")
    weights = _save_weights(importlib.import_module(factories).three_classes(), tmp_path / "three.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_model(f"{factories}:three_classes", weights=weights, dataset=dataset)
    assert "(8, 3)" in str(info.value) and "(8, 2)" in str(info.value)  # a probe of 8 test rows


def test_factory_needs_weights(factories):
    with pytest.raises(InputError, match="needs a weights file"):
        load_model(f"{factories}:net")


def test_factory_errors(factories, tmp_path):
    weights = _save_weights(importlib.import_module(factories).net(), tmp_path / "net.safetensors")
    with pytest.raises(CheckpointError, match="not_a_module"):
        load_model(f"{factories}:not_a_module", weights=weights)
    with pytest.raises(CheckpointError, match="no_such_factory"):
        load_model(f"{factories}:no_such_factory", weights=weights)
    with pytest.raises(CheckpointError, match="no_such_package"):
        load_model("no_such_package.nets:net", weights=weights)
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        load_model(f"{factories}:net", weights=tmp_path / "missing.safetensors")


def test_torchscript_file(factories, load, tmp_path):
    dataset = load("breast_cancer")
    torch.manual_seed(0)
    original = importlib.import_module(factories).net().eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(original), str(path))

    loaded = load_model(path, dataset=dataset)
    assert loaded.source == "torchscript"
    X = dataset.encode(dataset.test.X)
    assert torch.equal(_logits(loaded.model, X), _logits(original, X))
    with pytest.raises(InputError, match="weights file goes only with a package.module:factory model"):
        load_model(path, weights=tmp_path / "w.safetensors")


class _Payload:
    """Unpickling this creates ``marker`` (pickle calls ``open(marker, "w")``)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_dump(marker: Path, path: Path) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"model": _Payload(marker)}, handle)


def _torch_save(marker: Path, path: Path) -> None:
    torch.save({"model": _Payload(marker)}, str(path))


def _unpickle(path: Path) -> None:
    with open(path, "rb") as handle:
        obj = pickle.load(handle)
    obj["model"].close()


def _torch_load(path: Path) -> None:
    torch.load(str(path), weights_only=False)["model"].close()


@pytest.mark.parametrize(
    "write,control,suffix",
    [(_pickle_dump, _unpickle, ".pkl"), (_torch_save, _torch_load, ".pt"), (_pickle_dump, _unpickle, ".pt")],
    ids=["pickle.dump", "torch.save", "pickle-named-pt"],
)
def test_pickled_model_is_refused_and_never_executed(tmp_path, write, control, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    write(marker, path)
    with pytest.raises(CheckpointError, match=path.name):
        load_model(path)
    assert not marker.exists()
    # Control: the payload does run when unpickled, so the check above can fail.
    control(path)
    assert marker.exists()


def test_whole_module_saved_with_torch_save_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(nn.Linear(30, 2), str(path))
    with pytest.raises(CheckpointError, match="whole.pt"):
        load_model(path)
