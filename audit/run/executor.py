"""Where an audit's per-row work runs, and the rule that keeps its results independent of it.

The heavy parts of an audit (attributions, attacks) are independent per row. They are cut into
chunks of a fixed number of rows (:data:`CHUNK_ROWS`, the config's ``chunk_rows``: never the
number of workers), and every random draw of a chunk comes from a generator seeded by the run's
seed, the piece of work (family, method or attack, radius) and the chunk's index
(:func:`chunk_rng`). The results are merged in chunk order. So the findings are the same bytes
whether the chunks run one after another, in another order, or on many workers.

An :class:`Executor` runs a function over the chunks: :class:`LocalExecutor` in this process (the
default), :class:`RayExecutor` as Ray tasks (``pip install "scrutiny[ray]"``), on a local Ray
instance or an existing cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from scrutiny.errors import InputError

__all__ = ["CHUNK_ROWS", "Executor", "LocalExecutor", "RayExecutor", "chunk_rng", "chunk_seed", "row_chunks",
           "EXECUTORS", "make_executor"]

CHUNK_ROWS = 64  # rows per chunk of per-row work (the config's chunk_rows)

Item = TypeVar("Item")
Result = TypeVar("Result")


def chunk_seed(seed: int, *keys: str | int) -> int:
    """A 32-bit seed for one piece of work: the run's ``seed`` and the keys naming the piece
    (family, method or attack, radius index, chunk index), through NumPy's ``SeedSequence``. Text
    keys enter by their SHA-256, so the seed does not depend on Python's string hashing."""
    entropy = [int(seed)] + [k if isinstance(k, int) else int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "little")
                             for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def chunk_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """NumPy's generator of one piece of work (see :func:`chunk_seed`)."""
    return np.random.default_rng(chunk_seed(seed, *keys))


def row_chunks(n: int, size: int = CHUNK_ROWS) -> list[slice]:
    """``n`` rows as consecutive chunks of ``size`` rows (the last one shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


class Executor(Protocol):
    """Runs ``fn(item, *shared)`` for each item and returns the results in the items' order."""

    name: str

    def map(self, fn: Callable[..., Result], items: Sequence[Item], *shared: Any) -> list[Result]: ...


class LocalExecutor:
    """Every chunk in this process. ``order="reversed"`` runs them last to first (the results still
    come back in chunk order): a test that the order of execution cannot change an audit."""

    name = "local"

    def __init__(self, order: str = "forward"):
        if order not in ("forward", "reversed"):
            raise ValueError(f"order must be 'forward' or 'reversed', got {order!r}")
        self.order = order

    def map(self, fn: Callable[..., Result], items: Sequence[Item], *shared: Any) -> list[Result]:
        indices = range(len(items)) if self.order == "forward" else range(len(items) - 1, -1, -1)
        results: dict[int, Result] = {i: fn(items[i], *shared) for i in indices}
        return [results[i] for i in range(len(items))]


class RayExecutor:
    """Every chunk as a Ray task: ``shared`` (the model, the inputs) goes through the object store
    once. ``address=None`` starts a local Ray instance (``num_cpus`` of its CPUs); an address
    (``ray://host:10001``, ``host:6379`` or ``auto``) joins a running cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise InputError('the Ray executor needs Ray: pip install "scrutiny[ray]"') from None
        self._ray = ray
        self.address = address
        if address is not None:
            _check_reachable(address)
        if not ray.is_initialized():
            try:
                ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise InputError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}") from None

    def map(self, fn: Callable[..., Result], items: Sequence[Item], *shared: Any) -> list[Result]:
        ray = self._ray
        refs = [ray.put(value) for value in shared]
        task = ray.remote(max_retries=2)(fn)
        try:
            return list(ray.get([task.remote(item, *refs) for item in items]))
        except ray.exceptions.RayError as exc:
            raise InputError(f"a Ray task failed after its retries: {str(exc).splitlines()[0]}") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A host:port (or ray://host:port) address must accept a connection within ``timeout``
    seconds: Ray itself retries an unreachable address for minutes."""
    import socket

    target = address.removeprefix("ray://")
    if target == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot start or reach the Ray cluster at {address}: {exc}") from None


EXECUTORS = ("local", "ray")


def make_executor(name: str = "local", *, address: str | None = None) -> Executor:
    """The executor called ``name`` (:data:`EXECUTORS`)."""
    if name == "local":
        if address is not None:
            raise InputError("a Ray address goes with the ray executor")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise InputError(f"executor {name!r}: expected one of {', '.join(EXECUTORS)}")
