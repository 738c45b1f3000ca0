"""Reading the TOML files users hand to scrutiny (config, policy, model card, compliance mapping)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from scrutiny.errors import InputError

__all__ = ["read_toml"]


def read_toml(path: str | Path, what: str) -> dict:
    """The document in ``path``; InputError, one line naming ``what`` and the file, if it is
    missing or not valid TOML."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path}: no such file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{what} {path}: not valid TOML ({reason})") from None
