"""Where tensors go: the one rule for a ``device`` argument, used by training and the audit."""

from __future__ import annotations

import torch
from torch import nn

from scrutiny.errors import InputError

__all__ = ["resolve_device", "model_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device: None means CUDA when present, else the CPU.

    Raises:
        InputError: not ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, or CUDA asked for and absent.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} was requested but CUDA is not available; use device='cpu'")
    return dev


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
