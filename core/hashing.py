"""SHA-256 of files: how a run names the weights, data and files it was made from."""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file", "sha256_path"]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, or of a folder: of the lines "relative path, tab, the file's SHA-256"
    of every file under it, sorted by path (so it names the folder's content, not its listing order)."""
    from pathlib import Path

    root = Path(path)
    if not root.is_dir():
        return sha256_file(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    lines = "".join(f"{p.relative_to(root).as_posix()}\t{sha256_file(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()
