"""Tests for scrutiny.models.architectures: shapes, rebuilding from config, init, blocks."""

import json

import pytest
import torch
from torch import nn

from scrutiny.errors import InputError
from scrutiny.models.architectures import (
    ARCHITECTURES,
    AutoEncoder,
    BasicBlock,
    build_model,
    reconstruction_error,
)

IMAGE_ARCHS = ["cnn", "resnet", "gru"]


def _build(arch, input_shape, n_classes=3, seed=0, **hparams):
    torch.manual_seed(seed)
    return build_model(arch, input_shape=input_shape, n_classes=n_classes, **hparams).eval()


def test_registry_keys():
    assert sorted(ARCHITECTURES) == ["autoencoder", "cnn", "gru", "mlp", "resnet", "transformer"]
    for name, cls in ARCHITECTURES.items():
        assert cls.arch == name


SHAPE_CASES = [
    (arch, shape)
    for arch in sorted(ARCHITECTURES)
    for shape in [(10,), (1, 8, 8), (3, 5, 7), (2, 1, 1)]
    if arch not in IMAGE_ARCHS or len(shape) == 3
]


@pytest.mark.parametrize("arch, input_shape", SHAPE_CASES)
def test_output_shapes(arch, input_shape):
    model = _build(arch, input_shape, n_classes=4)
    out = model(torch.randn(5, *input_shape))
    expected = (5, *input_shape) if arch == "autoencoder" else (5, 4)
    assert out.shape == expected
    assert torch.isfinite(out).all()
    assert model.arch == arch


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_image_archs_reject_flat_shape(arch):
    with pytest.raises(InputError, match=r"\(C, H, W\); got \(64,\)"):
        build_model(arch, input_shape=(64,), n_classes=2)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_rebuild_from_config(arch):
    shape = (1, 8, 8) if arch in IMAGE_ARCHS else (12,)
    model = _build(arch, shape, n_classes=5)
    config = json.loads(json.dumps(model.config))  # what a checkpoint manifest stores
    assert config["input_shape"] == list(shape)
    rebuilt = build_model(arch, **config)
    assert type(rebuilt) is type(model)
    assert rebuilt.config == model.config
    want = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == want
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(3, *shape)
    assert torch.equal(rebuilt.eval()(x), model(x))


def test_rebuild_keeps_hyperparameters():
    model = _build("mlp", (7,), hidden=(32, 16, 8), dropout=0.3)
    rebuilt = build_model("mlp", **model.config)
    assert rebuilt.config["hidden"] == [32, 16, 8] and rebuilt.config["dropout"] == 0.3
    assert [m.out_features for m in rebuilt.modules() if isinstance(m, nn.Linear)] == [32, 16, 8, 3]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_same_seed_same_weights(arch):
    shape = (1, 8, 8) if arch in IMAGE_ARCHS else (12,)
    a, b, c = _build(arch, shape), _build(arch, shape), _build(arch, shape, seed=1)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert not all(torch.equal(a.state_dict()[k], v) for k, v in c.state_dict().items())


def test_unknown_architecture_message():
    with pytest.raises(InputError) as err:
        build_model("foo", input_shape=(4,), n_classes=2)
    assert str(err.value) == (
        "unknown architecture 'foo'; expected one of: autoencoder, cnn, gru, mlp, resnet, transformer"
    )


def test_unknown_hyperparameter_is_named():
    with pytest.raises(InputError, match=r"unknown hyperparameter 'hiden' for architecture 'mlp'.*hidden"):
        build_model("mlp", input_shape=(4,), n_classes=2, hiden=(8,))


@pytest.mark.parametrize(
    "arch, shape, kwargs, option",
    [
        ("mlp", (4,), {"dropout": 1.5}, "dropout"),
        ("mlp", (4,), {"hidden": (8, 0)}, "hidden"),
        ("mlp", (4,), {"n_classes": 1}, "n_classes"),
        ("cnn", (1, 8, 8), {"channels": "wide"}, "channels"),
        ("transformer", (4,), {"d_model": 30, "n_heads": 4}, "d_model"),
        ("gru", (1, 8, 8), {"hidden_size": 0}, "hidden_size"),
        ("mlp", (4, -1), {}, "input_shape"),
    ],
)
def test_bad_values_name_the_option(arch, shape, kwargs, option):
    kwargs = {"n_classes": 2, **kwargs}
    with pytest.raises(InputError, match=option):
        build_model(arch, input_shape=shape, **kwargs)


def test_classifier_needs_n_classes_but_autoencoder_does_not():
    with pytest.raises(InputError, match="n_classes"):
        build_model("cnn", input_shape=(1, 8, 8))
    assert build_model("autoencoder", input_shape=(1, 8, 8)).config["n_classes"] is None


def test_mlp_he_init_variance():
    fan_in = 400
    model = _build("mlp", (fan_in,), hidden=(2000, 1000))
    linears = [m for m in model.body if isinstance(m, nn.Linear)]
    assert [lin.in_features for lin in linears] == [400, 2000]
    for lin in linears:
        expected = 2.0 / lin.in_features
        assert lin.weight.var().item() == pytest.approx(expected, rel=0.03)
        assert lin.weight.mean().abs().item() < 0.01 * expected**0.5


def test_mlp_layer_order_has_batchnorm_relu_dropout():
    model = _build("mlp", (6,), hidden=(8,), dropout=0.25)
    kinds = [type(m) for m in model.body]
    assert kinds == [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]
    assert model.body[4].p == 0.25


def _zero_convs(block):
    for conv in (block.conv1, block.conv2):
        nn.init.zeros_(conv.weight)


def test_basic_block_identity_skip_adds_input():
    torch.manual_seed(0)
    block = BasicBlock(4, 4).eval()
    assert isinstance(block.shortcut, nn.Identity)
    x = torch.randn(2, 4, 6, 6)
    _zero_convs(block)
    assert torch.allclose(block(x), torch.relu(x))
    # with the residual branch active the output differs, but the skip still contributes x
    torch.manual_seed(1)
    live = BasicBlock(4, 4).eval()
    residual = live.bn2(live.conv2(torch.relu(live.bn1(live.conv1(x)))))
    assert torch.allclose(live(x), torch.relu(residual + x), atol=1e-6)


def test_basic_block_projection_when_shape_changes():
    torch.manual_seed(0)
    block = BasicBlock(3, 8, stride=2).eval()
    conv = block.shortcut[0]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (2, 2)
    x = torch.randn(2, 3, 8, 8)
    _zero_convs(block)
    out = block(x)
    assert out.shape == (2, 8, 4, 4)
    assert torch.allclose(out, torch.relu(block.shortcut(x)))


def test_resnet_uses_blocks_per_stage():
    model = _build("resnet", (1, 8, 8), channels=(8, 16), blocks=2)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 4
    assert [b.conv1.stride for b in blocks] == [(1, 1), (1, 1), (2, 2), (1, 1)]


def test_gru_reads_rows_as_sequence():
    model = _build("gru", (2, 5, 3), hidden_size=16)
    assert model.gru.input_size == 2 * 3
    seen = {}
    model.gru.register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    x = torch.randn(4, 2, 5, 3)
    model(x)
    assert seen["x"].shape == (4, 5, 6)
    # step t holds row t of channel 0 followed by row t of channel 1
    assert torch.equal(seen["x"][:, 2], torch.cat([x[:, 0, 2], x[:, 1, 2]], dim=1))


def test_transformer_tokens_are_per_column_embeddings_plus_cls():
    model = _build("transformer", (6,), d_model=8, n_heads=2)
    seen = {}
    model.encoder.register_forward_hook(lambda mod, args, out: seen.update(tokens=args[0]))
    x = torch.randn(3, 6)
    model(x)
    tokens = seen["tokens"]
    assert tokens.shape == (3, 7, 8)
    assert torch.equal(tokens[:, 0], model.cls_token[0].expand(3, -1))
    j = 4
    assert torch.allclose(tokens[:, j + 1], x[:, j : j + 1] * model.feature_weight[j] + model.feature_bias[j])
    assert len(model.encoder.layers) == 2 and model.encoder.layers[0].self_attn.num_heads == 2


def test_transformer_attention_dropout_is_separate():
    model = _build("transformer", (6,), dropout=0.2, attention_dropout=0.3)
    for layer in model.encoder.layers:
        assert layer.self_attn.dropout == 0.3
        assert layer.dropout1.p == layer.dropout2.p == layer.dropout.p == 0.2
    assert all(layer.self_attn.dropout == 0.0 for layer in _build("transformer", (6,)).encoder.layers)
    # only the attention dropout is random here, and it does act in training mode
    x = torch.randn(4, 6)
    noisy = _build("transformer", (6,), dropout=0.0, attention_dropout=0.5).train()
    quiet = _build("transformer", (6,), dropout=0.0, attention_dropout=0.0).train()
    assert not torch.equal(noisy(x), noisy(x))
    assert torch.equal(quiet(x), quiet(x))


def test_transformer_flattens_images():
    model = _build("transformer", (1, 4, 4))
    assert model.feature_weight.shape[0] == 16
    flat = _build("transformer", (16,), seed=1)
    flat.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 4, 4)
    assert torch.allclose(model(x), flat(x.reshape(2, 16)))


def test_reconstruction_error_is_per_sample_mse():
    model = _build("autoencoder", (1, 4, 4), latent=3)
    assert isinstance(model, AutoEncoder)
    model.train()
    x = torch.randn(6, 1, 4, 4)
    err = reconstruction_error(model, x)
    assert err.shape == (6,)
    assert model.training  # mode restored
    with torch.no_grad():
        expected = ((model.eval()(x) - x) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(err, expected)


def test_reconstruction_error_needs_autoencoder():
    with pytest.raises(InputError, match="autoencoder"):
        reconstruction_error(_build("mlp", (4,)), torch.randn(2, 4))


def test_transformer_groups_one_hot_columns_into_one_token():
    groups = [[0], [1, 2, 3], [4, 5]]
    model = _build("transformer", (6,), d_model=8, n_heads=2, feature_groups=groups)
    x = torch.tensor([[0.5, 0.0, 1.0, 0.0, 1.0, 0.0]])
    captured = {}
    model.encoder.register_forward_pre_hook(lambda _, args: captured.setdefault("tokens", args[0]))
    model.eval()(x)
    tokens = captured["tokens"][0, 1:]  # drop CLS
    W, b = model.feature_weight.detach(), model.feature_bias.detach()
    assert tokens.shape == (3, 8)
    torch.testing.assert_close(tokens[0], 0.5 * W[0] + b[0])
    torch.testing.assert_close(tokens[1], W[2] + b[1])  # the active category's embedding
    torch.testing.assert_close(tokens[2], W[4] + b[2])
    again = build_model("transformer", **json.loads(json.dumps(model.config)))
    assert again.config["feature_groups"] == groups
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.eval()(x), model(x))


@pytest.mark.parametrize("groups", [[[0, 1], [1, 2]], [[0, 1]], [[0, 1, 2], []], "abc"])
def test_transformer_rejects_groups_that_do_not_partition_columns(groups):
    with pytest.raises(InputError, match="feature_groups must split the 3 input columns"):
        build_model("transformer", input_shape=(3,), n_classes=2, feature_groups=groups)
