"""Names a package exports but imports on first use (PEP 562), so that ``import scrutiny`` and
``scrutiny --help`` load neither torch nor pandas."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose public ``name`` is defined in the
    module ``exports[name]`` (an absolute module name).

    Example:
        >>> _EXPORTS = {"load_model": "scrutiny.models.checkpoint"}  # doctest: +SKIP
        >>> __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # doctest: +SKIP
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
