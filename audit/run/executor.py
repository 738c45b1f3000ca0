"""Where an audit's per-row work runs, and the rule that keeps its results independent of it.

The heavy parts of an audit (attributions, attacks) are independent per row. They are cut into
chunks of a fixed number of rows (:data:`CHUNK_ROWS`, the config's ``chunk_rows``: never the
number of workers), and every random draw of a chunk comes from a generator seeded by the run's
seed, the piece of work (family, method or attack, radius) and the chunk's index
(:func:`chunk_rng`, :meth:`Chunk.seed`). The results are merged in chunk order. So the findings
are the same bytes whether the chunks run one after another, in another order, or on many workers.

An :class:`Executor` runs a function over the chunks: :class:`LocalExecutor` in this process (the
default), :class:`RayExecutor` as Ray tasks (``pip install "scrutiny[ray]"``), on a local Ray
instance or an existing cluster. Either reports each chunk done to an optional ``progress``
callback as it finishes. :class:`Recorder` wraps one for an audit: it shows the chunks on the
audit's display and keeps, per piece of work, the SHA-256 of each chunk's output
(:func:`output_sha256`), which the manifest records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from scrutiny.errors import InputError

__all__ = ["CHUNK_ROWS", "EXECUTORS", "MAX_RETRIES", "Chunk", "Executor", "LocalExecutor", "Progress", "RayExecutor",
           "Recorder", "chunk_rng", "chunk_seed", "make_executor", "output_sha256", "row_chunks", "work_chunks"]

CHUNK_ROWS = 64  # rows per chunk of per-row work (the config's chunk_rows)
MAX_RETRIES = 2  # times Ray runs a task again after its worker died
ABANDON_WAIT_S = 30.0  # how long a failed map waits for its cancelled tasks to end

Item = TypeVar("Item")
Result = TypeVar("Result")
Progress = Callable[[int, int], None]  # progress(chunks done, chunks in all)


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


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One chunk of one piece of work: what an audit maps over an executor.

    ``work`` names the piece of work by the keys its draws are seeded with: the family, the method
    or attack, and for an attack at one radius the radius's index in the ε grid
    (``("attributions", "lime")``, ``("robustness", "pgd", 2)``, ``("robustness", "smallest_eps")``).
    The manifest records the chunks' outputs under the same keys.
    """

    work: tuple[str | int, ...]
    index: int      # the chunk's place in the piece of work
    rows: slice     # its rows

    def seed(self, seed: int) -> int:
        """The chunk's seed under the run's ``seed``: ``chunk_seed(seed, *work, index)``."""
        return chunk_seed(seed, *self.work, self.index)


def work_chunks(work: tuple[str | int, ...], n: int, size: int = CHUNK_ROWS) -> list[Chunk]:
    """The chunks of the piece of work ``work`` over ``n`` rows, ``size`` rows each (:func:`row_chunks`).

    Example:
        >>> [(c.index, c.rows.start, c.rows.stop) for c in work_chunks(("attributions", "lime"), 20, 8)]
        [(0, 0, 8), (1, 8, 16), (2, 16, 20)]
    """
    return [Chunk(work, index, rows) for index, rows in enumerate(row_chunks(n, size))]


WALL_TIME_FIELDS = frozenset({"seconds"})  # fields of a result that hold wall time, not output


def output_sha256(value: Any) -> str:
    """SHA-256 of a chunk's numeric output, the same bytes wherever the chunk ran.

    The digest reads the values, never a pickle: an array (NumPy or torch) enters as its dtype, its
    shape and its bytes in C order; a number, string, bool or None as a tagged encoding of its
    value; a tuple or list item by item; a dict entry by entry, ordered by the encoded key; a
    dataclass or named tuple as its class name and its fields, less the wall times
    (:data:`WALL_TIME_FIELDS`), which change from run to run.

    Raises:
        TypeError: a value of another type (a chunk must return plain numeric results).

    Example:
        >>> output_sha256((np.zeros(2, np.float32), {"steps": 8})) == output_sha256((np.zeros(2, np.float32), {"steps": 8}))
        True
        >>> output_sha256(np.zeros(2, np.float32)) == output_sha256(np.zeros(2, np.float64))
        False
    """
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    """Add ``value``'s encoding to ``digest`` (see :func:`output_sha256`)."""
    def tag(name: str, *parts: bytes) -> None:
        digest.update(name.encode() + b"\0")
        for part in parts:
            digest.update(struct.pack("<Q", len(part)) + part)

    if isinstance(value, np.ndarray | np.generic):
        array = np.ascontiguousarray(value)
        if array.dtype.hasobject:
            raise TypeError("a chunk's output holds an array of Python objects; expected numbers")
        tag("array", array.dtype.str.encode(), repr(array.shape).encode(), array.tobytes())
    elif _is_tensor(value):
        tensor = value.detach().cpu().contiguous()
        raw = tensor.reshape(-1).view(_uint8()).numpy().tobytes() if tensor.numel() else b""
        tag("tensor", str(tensor.dtype).encode(), repr(tuple(tensor.shape)).encode(), raw)
    elif value is None or isinstance(value, bool):
        tag(repr(value))
    elif isinstance(value, int):
        tag("int", str(value).encode())
    elif isinstance(value, float):
        tag("float", struct.pack("<d", value))
    elif isinstance(value, str):
        tag("str", value.encode())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _fields(digest, tag, value, [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)])
    elif isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        _fields(digest, tag, value, list(zip(value._fields, value, strict=True)))
    elif isinstance(value, tuple | list):
        tag(type(value).__name__, str(len(value)).encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, dict):
        entries = sorted(((output_sha256(k), k, v) for k, v in value.items()), key=lambda entry: entry[0])
        tag("dict", str(len(entries)).encode())
        for key_digest, _, item in entries:
            digest.update(bytes.fromhex(key_digest))
            _feed(digest, item)
    else:
        raise TypeError(f"a chunk's output holds a {type(value).__name__}; expected arrays, numbers, strings, "
                        "and tuples, lists, dicts or dataclasses of them")


def _fields(digest, tag, value: Any, fields: list[tuple[str, Any]]) -> None:
    kept = [(name, item) for name, item in fields if name not in WALL_TIME_FIELDS]
    tag("fields", type(value).__name__.encode(), str(len(kept)).encode())
    for name, item in kept:
        tag("field", name.encode())
        _feed(digest, item)


def _is_tensor(value: Any) -> bool:
    import sys

    torch = sys.modules.get("torch")  # no tensor without torch imported: never import it here
    return torch is not None and isinstance(value, torch.Tensor)


def _uint8():
    import torch

    return torch.uint8


class Executor(Protocol):
    """Runs ``fn(item, *shared)`` for each item and returns the results in the items' order.

    ``progress``, when given, is called as ``progress(done, total)`` once before any item runs
    (``done`` 0) and again each time an item finishes, wherever it ran. ``retried`` counts the
    items this executor ran again after their worker died (None where it cannot tell).
    """

    name: str

    @property
    def retried(self) -> int | None: ...

    def map(self, fn: Callable[..., Result], items: Sequence[Item], *shared: Any,
            progress: Progress | None = None) -> list[Result]: ...


class LocalExecutor:
    """Every chunk in this process. ``order="reversed"`` runs them last to first (the results still
    come back in chunk order): a test that the order of execution cannot change an audit."""

    name = "local"
    retried = 0  # nothing runs elsewhere, so nothing is run again

    def __init__(self, order: str = "forward"):
        if order not in ("forward", "reversed"):
            raise ValueError(f"order must be 'forward' or 'reversed', got {order!r}")
        self.order = order

    def map(self, fn: Callable[..., Result], items: Sequence[Item], *shared: Any,
            progress: Progress | None = None) -> list[Result]:
        total = len(items)
        if progress is not None:
            progress(0, total)
        indices = range(total) if self.order == "forward" else range(total - 1, -1, -1)
        results: dict[int, Result] = {}
        for i in indices:
            results[i] = fn(items[i], *shared)
            if progress is not None:
                progress(len(results), total)
        return [results[i] for i in range(total)]


class RayExecutor:
    """Every chunk as a Ray task: ``shared`` (the model, the inputs) goes through the object store
    once. ``address=None`` starts a local Ray instance (``num_cpus`` of its CPUs); an address
    (``ray://host:10001``, ``host:6379`` or ``auto``) joins a running cluster.

    Each task asks Ray for ``task_cpus`` CPUs: by default the caller's torch threads when the map
    starts, the count every unit of work runs at (so that its float reductions, and the findings,
    are the same bytes), capped at the largest node's CPUs. Ray then runs no more tasks on a
    node than its cores hold at that count: two tasks of two threads on two cores would each run
    several times slower. On ``device="cuda"`` each task also asks for one GPU, which Ray makes
    the task's ``cuda`` device (``cuda:N`` cannot name it: an InputError), and a cluster without
    a GPU is an InputError rather than tasks that wait forever.

    A task whose worker dies (the process killed, its node lost) runs again, up to
    :data:`MAX_RETRIES` times; :attr:`retried` counts the tasks that needed it. A task Ray cannot
    run (its worker died on every try) ends the map with an InputError naming the chunk; the tasks
    not yet done are cancelled.
    An exception the function itself raises is raised as it is, as the local executor would.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, task_cpus: int | None = None,
                 device: str | None = None):
        try:
            import ray
        except ImportError:
            raise InputError('the Ray executor needs Ray: pip install "scrutiny[ray]"') from None
        self._ray = ray
        self.address = address
        self._retried: int | None = 0
        self.task_cpus = task_cpus
        self.gpu = str(device or "cpu").startswith("cuda")
        if self.gpu and str(device) != "cuda":
            raise InputError(f"device {device}: with the Ray executor use cuda; Ray gives each task a GPU of its own "
                             "and makes it that task's cuda device")
        if address is not None:
            _check_reachable(address)
        if not ray.is_initialized():
            # Ray's notice that its default token authentication is on goes to stderr through Python's
            # last-resort handler; stderr is the CLI's, for at most one error line
            notice = logging.getLogger("ray._private.authentication")
            level = notice.level
            notice.setLevel(logging.ERROR)
            try:
                ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise InputError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}") from None
            finally:
                notice.setLevel(level)
        if self.gpu and ray.cluster_resources().get("GPU", 0) < 1:
            raise InputError("device cuda: the Ray cluster has no GPU; run on cpu or join a cluster with GPU nodes")

    def task_resources(self) -> dict[str, int]:
        """What each task of a map starting now asks Ray for (see the class)."""
        import sys

        torch = sys.modules.get("torch")  # a unit of work imports it; never import it here
        threads = self.task_cpus or (torch.get_num_threads() if torch is not None else 1)
        largest = max((int(node["Resources"].get("CPU", 0)) for node in self._ray.nodes() if node["Alive"]),
                      default=1)
        return {"num_cpus": max(1, min(threads, largest)), "num_gpus": int(self.gpu)}

    @property
    def retried(self) -> int | None:
        """Tasks run again after their worker died, over every map so far (None: this Ray does not say)."""
        return self._retried

    def map(self, fn: Callable[..., Result], items: Sequence[Item], *shared: Any,
            progress: Progress | None = None) -> list[Result]:
        ray = self._ray
        total = len(items)
        if progress is not None:
            progress(0, total)
        if not total:
            return []
        shared_refs = [ray.put(value) for value in shared]
        task = ray.remote(max_retries=MAX_RETRIES, **self.task_resources())(_attempted)
        function = ray.put(fn)
        place = {task.remote(function, item, *shared_refs): i for i, item in enumerate(items)}
        results: list[Any] = [None] * total
        attempts: list[int | None] = []
        pending = list(place)
        try:
            while pending:  # each chunk as it finishes, wherever it ran: the progress is the cluster's
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        attempt, results[place[ref]] = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # the function's own exception
                        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                        raise cause from None
                    except ray.exceptions.RayError as exc:
                        raise InputError(f"executor ray: {_named(items[place[ref]], place[ref], total)} could not be "
                                         f"run (a task whose worker dies is retried {MAX_RETRIES} times): "
                                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
                    attempts.append(attempt)
                if progress is not None:
                    progress(total - len(pending), total)
        finally:
            if pending:
                _abandon(ray, pending)
        if self._retried is not None:
            self._retried = None if None in attempts else self._retried + sum(a > 0 for a in attempts if a is not None)
        return results


def _abandon(ray: Any, refs: list[Any]) -> None:
    """After a failed map: cancel what is still running, then read every result, failed or
    cancelled. Ray logs each task error nobody read when its reference is collected, later and
    wherever stderr then goes (a traceback after the CLI's one error line)."""
    for ref in refs:
        try:
            ray.cancel(ref)
        except (ray.exceptions.RayError, ValueError, TypeError):
            pass  # done or gone meanwhile
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=ABANDON_WAIT_S)
    for ref in done:
        try:
            ray.get(ref)
        except ray.exceptions.RayError:
            pass  # the map has already raised its first failure


def _attempted(fn: Callable[..., Result], item: Any, *shared: Any) -> tuple[int | None, Result]:
    """A Ray task: ``fn(item, *shared)``, with the task's attempt number (0 on the first try)."""
    return _attempt_number(), fn(item, *shared)


def _attempt_number() -> int | None:
    """This Ray task's attempt number, from Ray's core worker (no public API gives it); None where
    this version of Ray does not have it."""
    try:
        from ray._private.worker import global_worker

        return int(global_worker.core_worker.get_current_task_attempt_number())  # type: ignore[attr-defined]
    except (ImportError, AttributeError, TypeError, ValueError):
        return None


def _named(item: Any, position: int, total: int) -> str:
    """How an error names an item: a chunk by its piece of work."""
    if isinstance(item, Chunk):
        return (f"chunk {item.index} of {'/'.join(map(str, item.work))} "
                f"(sampled rows {item.rows.start} to {item.rows.stop - 1})")
    return f"task {position + 1} of {total}"


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


class Recorder:
    """The executor of one audit: every map runs on ``executor``; its chunks are shown on
    ``display`` as they finish (``display(label, done, total)``, the label naming the work), and
    the SHA-256 of each :class:`Chunk`'s output (:func:`output_sha256`) is kept, per piece of work,
    for the manifest (:meth:`chunks`). Items that are not chunks run and show, unrecorded.

    Example:
        >>> recorder = Recorder(LocalExecutor())
        >>> recorder.map(lambda chunk: chunk.rows.stop - chunk.rows.start, work_chunks(("demo", "rows"), 5, 2))
        [2, 2, 1]
        >>> [(entry["work"], entry["chunks"]) for entry in recorder.chunks()]
        [(['demo', 'rows'], 3)]
    """

    def __init__(self, executor: Executor, display: Callable[[str, int, int], None] | None = None):
        self.executor = executor
        self.name = executor.name
        self.display = display
        self._retried_before = executor.retried
        self._entries: list[dict[str, Any]] = []

    @property
    def retried(self) -> int | None:
        """Tasks run again after their worker died, in this audit (None: the executor cannot tell)."""
        now = self.executor.retried
        return None if now is None or self._retried_before is None else now - self._retried_before

    def map(self, fn: Callable[..., Result], items: Sequence[Item], *shared: Any,
            progress: Progress | None = None) -> list[Result]:
        label = _label(items)

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(done, total)
            if self.display is not None:
                self.display(label, done, total)

        results = self.executor.map(fn, items, *shared, progress=report)
        pieces: dict[tuple[str | int, ...], list[tuple[Chunk, str]]] = {}
        for item, result in zip(items, results, strict=True):
            if isinstance(item, Chunk):
                pieces.setdefault(item.work, []).append((item, output_sha256(result)))
        for work, chunks in pieces.items():
            chunks.sort(key=lambda pair: pair[0].index)
            self._entries.append({"work": list(work), "rows": sum(c.rows.stop - c.rows.start for c, _ in chunks),
                                  "chunks": len(chunks), "sha256": [digest for _, digest in chunks]})
        return results

    def chunks(self) -> list[dict[str, Any]]:
        """Each piece of work mapped, in the order it ran: ``work`` (its keys, as :attr:`Chunk.work`),
        ``rows``, ``chunks`` (how many) and ``sha256`` (each chunk's output, in chunk order)."""
        return [dict(entry, work=list(entry["work"]), sha256=list(entry["sha256"])) for entry in self._entries]


def _label(items: Sequence[Any]) -> str:
    """What a map works on, for the display: ``attributions: lime`` or ``robustness: pgd, square``."""
    works = [item.work for item in items if isinstance(item, Chunk)]
    if not works:
        return "chunks"
    families = dict.fromkeys(str(w[0]) for w in works)
    names = dict.fromkeys(str(w[1]) for w in works if len(w) > 1)
    return f"{', '.join(families)}: {', '.join(names)}" if names else ", ".join(families)


EXECUTORS = ("local", "ray")


def make_executor(name: str = "local", *, address: str | None = None, device: str | None = None) -> Executor:
    """The executor called ``name`` (:data:`EXECUTORS`); ``device``: the audit's (Ray: a GPU per task on cuda)."""
    if name == "local":
        if address is not None:
            raise InputError("a Ray address goes with the ray executor")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, device=device)
    raise InputError(f"executor {name!r}: expected one of {', '.join(EXECUTORS)}")
