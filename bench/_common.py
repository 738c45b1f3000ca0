"""Pieces every benchmark uses: counting model rows, waiting for the GPU, naming versions and the CPU.

The benchmarks run as scripts (``python bench/NAME.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import platform
from importlib import metadata


class RowCounter:
    """Counts the rows that go through a model's forward (a forward pre-hook) until removed."""

    def __init__(self, model):
        self.rows = 0
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, _module, args):
        self.rows += int(args[0].shape[0])

    def take(self) -> int:
        rows, self.rows = self.rows, 0
        return rows


def sync(device) -> None:
    """Wait for queued GPU work, so that a timer stops when the work does."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def versions(libraries) -> str:
    """"name version, …" of each library: a distribution name, or (label, distribution)."""
    found = []
    for library in libraries:
        label, distribution = library if isinstance(library, tuple) else (library, library)
        try:
            found.append(f"{label} {metadata.version(distribution)}")
        except metadata.PackageNotFoundError:
            found.append(f"{label} (not installed)")
    return ", ".join(found)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
