"""Model architectures, looked up by name in :data:`ARCHITECTURES`.

Every model takes keyword-only constructor arguments, ``input_shape`` (the shape of one
sample, without the batch axis) and ``n_classes`` among them, and keeps all of them in
``model.config`` as JSON-serialisable values, so that ``build_model(model.arch,
**model.config)`` rebuilds the same architecture (checkpoints rely on this). Classifiers
return logits of shape ``(N, n_classes)``; a binary task uses ``n_classes=2``.

Input shapes:
    - ``cnn``, ``resnet`` and ``gru`` need images: ``input_shape=(C, H, W)``.
    - ``mlp``, ``transformer`` and ``autoencoder`` take any sample shape and flatten it:
      ``(d,)`` for tabular data, while a ``(C, H, W)`` image becomes ``C*H*W`` columns
      (the autoencoder reshapes its output back to the input's shape).
"""

from __future__ import annotations

import inspect
import math
from numbers import Integral, Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scrutiny.errors import InputError

__all__ = [
    "ARCHITECTURES",
    "MAX_PARAMETERS",
    "AutoEncoder",
    "BasicBlock",
    "CNN",
    "MLP",
    "ResNet",
    "RowGRU",
    "Transformer",
    "build_model",
    "reconstruction_error",
]


# A model is built in memory before it can be checked against anything, so a config (a
# checkpoint manifest, say) asking for more is refused before any allocation: 2e9 float32
# parameters are 8 GB, far beyond any model scrutiny trains, and layer counts are bounded so
# that the check itself stays quick.
MAX_PARAMETERS = 2_000_000_000
MAX_LAYERS = 1_000

# --- argument checks ----------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _shape(arch: str, input_shape, image: bool) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if not shape or not all(_is_int(s) and s >= 1 for s in shape) or (image and len(shape) != 3):
        expected = "an image shape (C, H, W)" if image else "a shape of positive sizes, (d,) or (C, H, W)"
        given = shape if shape is not None else input_shape
        raise InputError(f"architecture '{arch}' needs input_shape as {expected}; got {given}")
    return tuple(int(s) for s in shape)


def _classes(n_classes) -> int:
    if not _is_int(n_classes) or n_classes < 2:
        raise InputError(f"n_classes must be an integer >= 2 (use 2 for a binary task); got {n_classes!r}")
    return int(n_classes)


def _pos_int(name: str, value, largest: int | None = None) -> int:
    if not _is_int(value) or value < 1 or (largest is not None and value > largest):
        bound = "" if largest is None else f" up to {largest:,}"
        raise InputError(f"{name} must be a positive integer{bound}; got {value!r}")
    return int(value)


def _sizes(name: str, value, allow_empty: bool = False) -> tuple[int, ...]:
    if _is_int(value):
        value = (value,)
    try:
        sizes = tuple(value)
    except TypeError:
        sizes = None
    if sizes is None or not all(_is_int(s) and s >= 1 for s in sizes) or (not sizes and not allow_empty):
        raise InputError(f"{name} must be a sequence of positive integers; got {value!r}")
    if len(sizes) > MAX_LAYERS:
        raise InputError(f"{name} must have at most {MAX_LAYERS:,} entries; got {len(sizes):,}")
    return tuple(int(s) for s in sizes)


def _rate(name: str, value) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not 0.0 <= float(value) < 1.0:
        raise InputError(f"{name} must be a number in [0, 1); got {value!r}")
    return float(value)


def _groups(value, n_columns: int) -> list[list[int]] | None:
    if value is None:
        return None
    try:
        groups = [[int(c) for c in group] for group in value]
    except (TypeError, ValueError):
        groups = None
    if not groups or sorted(c for g in groups for c in g) != list(range(n_columns)) or not all(groups):
        raise InputError(
            f"feature_groups must split the {n_columns} input columns into non-empty groups, "
            f"each column in exactly one; got {value!r}"
        )
    return groups


# --- models -------------------------------------------------------------------------------


class _Model(nn.Module):
    """Base class: keeps the constructor arguments in ``self.config``."""

    arch: str = ""

    def _set_config(self, **kwargs) -> None:
        self.config = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


class MLP(_Model):
    r"""Multi-layer perceptron for tabular data.

    Each hidden layer is Linear -> BatchNorm1d -> ReLU -> Dropout, followed by a linear head.
    Samples are flattened, so ``(d,)`` and ``(C, H, W)`` inputs both work. Linear weights use
    He (Kaiming normal, fan-in) initialisation.

    Args:
        input_shape (tuple of int): Shape of one sample.
        n_classes (int): Number of output logits (2 for a binary task).
        hidden (tuple of int, optional): Width of each hidden layer; empty gives a linear
            model.
            Default: ``(128, 64)``
        dropout (float, optional): Dropout probability after each hidden layer.
            Default: 0.1
    """

    arch = "mlp"

    def __init__(self, *, input_shape, n_classes, hidden=(128, 64), dropout=0.1):
        super().__init__()
        shape = _shape(self.arch, input_shape, image=False)
        n_classes = _classes(n_classes)
        hidden = _sizes("hidden", hidden, allow_empty=True)
        dropout = _rate("dropout", dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(shape)
        for size in hidden:
            linear = nn.Linear(width, size, bias=False)  # BatchNorm supplies the shift
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            layers += [linear, nn.BatchNorm1d(size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)
        nn.init.kaiming_normal_(self.head.weight, nonlinearity="linear")
        nn.init.zeros_(self.head.bias)
        self._set_config(input_shape=shape, n_classes=n_classes, hidden=hidden, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU())


class CNN(_Model):
    r"""Small convolutional network for small images such as 1x8x8 digits.

    Each stage is two 3x3 conv -> BatchNorm -> ReLU layers, then 2x2 max pooling while the
    feature map is at least 2x2. Adaptive average pooling before the dropout + linear head
    makes it work for any image size.

    Args:
        input_shape (tuple of int): Image shape ``(C, H, W)``.
        n_classes (int): Number of output logits (2 for a binary task).
        channels (tuple of int, optional): Output channels of each stage.
            Default: ``(32, 64)``
        dropout (float, optional): Dropout probability before the head.
            Default: 0.1
    """

    arch = "cnn"

    def __init__(self, *, input_shape, n_classes, channels=(32, 64), dropout=0.1):
        super().__init__()
        shape = _shape(self.arch, input_shape, image=True)
        n_classes = _classes(n_classes)
        channels = _sizes("channels", channels)
        dropout = _rate("dropout", dropout)
        c, h, w = shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += [_conv_bn_relu(c, out), _conv_bn_relu(out, out)]
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, n_classes)]
        self.net = nn.Sequential(*layers)
        self._set_config(input_shape=shape, n_classes=n_classes, channels=channels, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    r"""Residual basic block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    The shortcut is the identity, or a 1x1 convolution + BatchNorm projection when the
    channel count or the stride changes.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int, optional): Stride of the first convolution (and of the projection).
            Default: 1
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(_Model):
    r"""Small ResNet built from :class:`BasicBlock` stages.

    A 3x3 conv stem is followed by one stage per entry of ``channels``; every stage after
    the first halves the spatial size (while it is at least 2x2). Global average pooling and
    a dropout + linear head give the logits.

    Args:
        input_shape (tuple of int): Image shape ``(C, H, W)``.
        n_classes (int): Number of output logits (2 for a binary task).
        channels (tuple of int, optional): Channels of each stage.
            Default: ``(16, 32, 64)``
        blocks (int, optional): Residual blocks per stage.
            Default: 1
        dropout (float, optional): Dropout probability before the head.
            Default: 0.0
    """

    arch = "resnet"

    def __init__(self, *, input_shape, n_classes, channels=(16, 32, 64), blocks=1, dropout=0.0):
        super().__init__()
        shape = _shape(self.arch, input_shape, image=True)
        n_classes = _classes(n_classes)
        channels = _sizes("channels", channels)
        blocks = _pos_int("blocks", blocks, MAX_LAYERS)
        dropout = _rate("dropout", dropout)
        c, h, w = shape
        layers: list[nn.Module] = [_conv_bn_relu(c, channels[0])]
        c = channels[0]
        for i, out in enumerate(channels):
            stride = 2 if i > 0 and min(h, w) >= 2 else 1
            if stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
            for j in range(blocks):
                layers.append(BasicBlock(c, out, stride if j == 0 else 1))
                c = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, n_classes)]
        self.net = nn.Sequential(*layers)
        self._set_config(
            input_shape=shape, n_classes=n_classes, channels=channels, blocks=blocks, dropout=dropout
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class RowGRU(_Model):
    r"""GRU that reads an image row by row.

    A ``(C, H, W)`` image is a sequence of ``H`` steps of ``C*W`` features (row ``i`` of
    every channel); the head reads the last hidden state of the top layer.

    Args:
        input_shape (tuple of int): Image shape ``(C, H, W)``.
        n_classes (int): Number of output logits (2 for a binary task).
        hidden_size (int, optional): GRU hidden state size.
            Default: 128
        num_layers (int, optional): Stacked GRU layers.
            Default: 1
        dropout (float, optional): Dropout before the head (and between GRU layers).
            Default: 0.1
    """

    arch = "gru"

    def __init__(self, *, input_shape, n_classes, hidden_size=128, num_layers=1, dropout=0.1):
        super().__init__()
        shape = _shape(self.arch, input_shape, image=True)
        n_classes = _classes(n_classes)
        hidden_size = _pos_int("hidden_size", hidden_size)
        num_layers = _pos_int("num_layers", num_layers, MAX_LAYERS)
        dropout = _rate("dropout", dropout)
        c, _, w = shape
        self.gru = nn.GRU(
            c * w, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, n_classes))
        self._set_config(
            input_shape=shape,
            n_classes=n_classes,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout,
        )

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 1, 3).reshape(n, h, c * w)
        out, _ = self.gru(rows)
        return self.head(out[:, -1])


class Transformer(_Model):
    r"""FT-Transformer for tabular data.

    Column ``j`` of a sample becomes the token ``x_j * W_j + b_j``; a learned CLS token is
    prepended, a pre-norm ``nn.TransformerEncoder`` mixes the tokens, and the head
    (LayerNorm -> ReLU -> Linear) reads the CLS token. Images are flattened to columns.

    With ``feature_groups`` (the one-hot columns of each original feature, as
    ``TabularPreprocessor.feature_groups`` gives them), each original feature is one token,
    ``sum_{j in group} x_j * W_j + b_group``: for a one-hot block that is the category's
    embedding, as in FT-Transformer, and Adult needs 13 tokens instead of 102.

    Args:
        input_shape (tuple of int): Shape of one sample; ``prod(input_shape)`` columns.
        n_classes (int): Number of output logits (2 for a binary task).
        d_model (int, optional): Token size; must be divisible by ``n_heads``.
            Default: 32
        n_layers (int, optional): Encoder layers.
            Default: 2
        n_heads (int, optional): Attention heads.
            Default: 4
        dim_feedforward (int, optional): Hidden size of each feed-forward block.
            Default: 64
        dropout (float, optional): Dropout of the feed-forward blocks and residual branches.
            Default: 0.1
        attention_dropout (float, optional): Dropout of the attention weights (off by
            default: it makes CPU training about 1.6x slower).
            Default: 0.0
        feature_groups (list of list of int, optional): Column indices of each token; they
            must cover every column exactly once.
            Default: None (one token per column)
    """

    arch = "transformer"

    def __init__(
        self,
        *,
        input_shape,
        n_classes,
        d_model=32,
        n_layers=2,
        n_heads=4,
        dim_feedforward=64,
        dropout=0.1,
        attention_dropout=0.0,
        feature_groups=None,
    ):
        super().__init__()
        shape = _shape(self.arch, input_shape, image=False)
        n_classes = _classes(n_classes)
        d_model = _pos_int("d_model", d_model)
        n_layers = _pos_int("n_layers", n_layers, MAX_LAYERS)
        n_heads = _pos_int("n_heads", n_heads)
        dim_feedforward = _pos_int("dim_feedforward", dim_feedforward)
        dropout = _rate("dropout", dropout)
        attention_dropout = _rate("attention_dropout", attention_dropout)
        if d_model % n_heads:
            raise InputError(f"d_model must be divisible by n_heads; got d_model={d_model}, n_heads={n_heads}")
        n_columns = math.prod(shape)
        groups = _groups(feature_groups, n_columns)
        n_tokens = n_columns if groups is None else len(groups)
        bound = d_model**-0.5
        self.feature_weight = nn.Parameter(torch.empty(n_columns, d_model).uniform_(-bound, bound))
        self.feature_bias = nn.Parameter(torch.empty(n_tokens, d_model).uniform_(-bound, bound))
        membership = None
        if groups is not None:
            membership = torch.zeros(len(groups), n_columns)
            for token, columns in enumerate(groups):
                membership[token, columns] = 1.0
        self.register_buffer("membership", membership, persistent=False)
        self.cls_token = nn.Parameter(torch.empty(1, 1, d_model).uniform_(-bound, bound))
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        layer.self_attn.dropout = attention_dropout  # the dropout_p MultiheadAttention applies
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.ReLU(), nn.Linear(d_model, n_classes))
        self._set_config(
            input_shape=shape,
            n_classes=n_classes,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            attention_dropout=attention_dropout,
            feature_groups=groups,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        tokens = x.unsqueeze(-1) * self.feature_weight
        if self.membership is not None:
            tokens = torch.einsum("gc,ncd->ngd", self.membership, tokens)
        tokens = tokens + self.feature_bias
        # x.shape[0], not len(x): an ONNX export keeps the batch axis dynamic
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens)[:, 0])


class AutoEncoder(_Model):
    r"""Fully connected autoencoder; the output has the same shape as the input.

    Samples are flattened, encoded by Linear -> ReLU layers down to a linear bottleneck,
    decoded by the mirror image, and reshaped back to ``input_shape``. Train it to minimise
    reconstruction error; :func:`reconstruction_error` then scores out-of-distribution
    inputs.

    Args:
        input_shape (tuple of int): Shape of one sample.
        n_classes (int or None, optional): Ignored (kept in ``config`` so every model is
            built the same way).
            Default: None
        hidden (tuple of int, optional): Encoder hidden widths (the decoder mirrors them).
            Default: ``(128,)``
        latent (int, optional): Bottleneck size.
            Default: 16
    """

    arch = "autoencoder"

    def __init__(self, *, input_shape, n_classes=None, hidden=(128,), latent=16):
        super().__init__()
        shape = _shape(self.arch, input_shape, image=False)
        if n_classes is not None and not _is_int(n_classes):
            raise InputError(f"n_classes must be an integer or None for an autoencoder; got {n_classes!r}")
        hidden = _sizes("hidden", hidden, allow_empty=True)
        latent = _pos_int("latent", latent)
        widths = [math.prod(shape), *hidden]
        encoder: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths, widths[1:]):
            encoder += [nn.Linear(a, b), nn.ReLU()]
        encoder.append(nn.Linear(widths[-1], latent))
        decoder: list[nn.Module] = []
        for a, b in zip([latent, *widths[:0:-1]], widths[:0:-1]):
            decoder += [nn.Linear(a, b), nn.ReLU()]
        decoder += [nn.Linear(widths[1] if hidden else latent, widths[0]), nn.Unflatten(1, shape)]
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
        self._set_config(
            input_shape=shape,
            n_classes=None if n_classes is None else int(n_classes),
            hidden=hidden,
            latent=latent,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    cls.arch: cls for cls in (MLP, CNN, ResNet, Transformer, RowGRU, AutoEncoder)
}


def build_model(arch: str, *, input_shape: tuple[int, ...], n_classes: int | None = None, **hparams: Any) -> nn.Module:
    r"""Builds a model from the registry.

    Args:
        arch (str): Registry key: one of ``autoencoder``, ``cnn``, ``gru``, ``mlp``,
            ``resnet``, ``transformer``.
        input_shape (tuple of int): Shape of one sample (``(C, H, W)`` for ``cnn``,
            ``resnet`` and ``gru``).
        n_classes (int or None, optional): Number of classes; required for classifiers,
            ignored by ``autoencoder``.
            Default: None
        **hparams: Architecture hyperparameters (see each class).

    Returns:
        nn.Module: The model, with ``model.arch`` and ``model.config`` set;
        ``build_model(model.arch, **model.config)`` rebuilds the same architecture.

    Raises:
        InputError: Unknown architecture or hyperparameter, a bad value, an
            ``input_shape`` the architecture cannot read, or sizes that would give more than
            :data:`MAX_PARAMETERS` parameters.

    Example:
        >>> model = build_model("mlp", input_shape=(30,), n_classes=2)
        >>> model(torch.zeros(4, 30)).shape, model.arch
        (torch.Size([4, 2]), 'mlp')
    """
    cls = ARCHITECTURES.get(arch) if isinstance(arch, str) else None
    if cls is None:
        raise InputError(f"unknown architecture {arch!r}; expected one of: {', '.join(sorted(ARCHITECTURES))}")
    allowed = sorted(set(inspect.signature(cls.__init__).parameters) - {"self", "input_shape", "n_classes"})
    for name in hparams:
        if name not in allowed:
            raise InputError(
                f"unknown hyperparameter {name!r} for architecture '{arch}'; expected one of: {', '.join(allowed)}"
            )
    _check_size(cls, arch, dict(input_shape=input_shape, n_classes=n_classes, **hparams))
    return cls(input_shape=input_shape, n_classes=n_classes, **hparams)


def _check_size(cls: type[nn.Module], arch: str, arguments: dict) -> None:
    """Refuse a model of more than MAX_PARAMETERS parameters, counted on the meta device
    (shapes only, no memory), before it is built for real."""
    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in cls(**arguments).parameters())
    except RuntimeError as exc:  # torch cannot even compute the storage size of a tensor
        if "overflow" not in str(exc).lower():
            raise
        count = None
    if count is None or count > MAX_PARAMETERS:
        given = "" if count is None else f" ({count:,})"
        sizes = {k: v for k, v in arguments.items() if k != "feature_groups"}
        raise InputError(
            f"architecture '{arch}' with {sizes} would have more than {MAX_PARAMETERS:,} parameters{given}; "
            "check input_shape and the layer sizes"
        )


def reconstruction_error(model: nn.Module, x: Tensor) -> Tensor:
    r"""Per-sample mean squared reconstruction error of an autoencoder.

    Runs in eval mode without gradients on the model's device, then restores the model's
    training mode. Higher values mean the input looks less like the training data, so this
    serves as an out-of-distribution score.

    Args:
        model (nn.Module): An autoencoder (``model.arch == "autoencoder"``).
        x (Tensor): Inputs of shape ``(N, *input_shape)``.

    Returns:
        Tensor: Shape ``(N,)``, on the device of ``x``.

    Example:
        >>> detector = build_model("autoencoder", input_shape=(30,))
        >>> reconstruction_error(detector, torch.zeros(4, 30)).shape
        torch.Size([4])
    """
    if getattr(model, "arch", None) != "autoencoder":
        name = getattr(model, "arch", type(model).__name__)
        raise InputError(f"reconstruction_error needs an autoencoder; got {name!r}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            inputs = x.to(device=device, dtype=torch.float32)
            errors = (model(inputs) - inputs).pow(2).flatten(1).mean(dim=1)
    finally:
        model.train(was_training)
    return errors.to(x.device)
