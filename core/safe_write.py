"""Writing folders that appear complete or not at all, and never where they would destroy data.

Every folder a scrutiny command writes (a checkpoint, a run folder, a report folder) goes
through this module.

**Destinations.** :func:`check_destination`, called before any work, refuses a path that
cannot be written as UTF-8, the root folder, the current or the home folder or a folder
containing one of them, a path that is or contains one of the command's inputs (a folder
inside an input, such as a run inside a checkpoint folder, is allowed), a symbolic link, an
existing file, and a place that cannot be written (read-only file system, no permission, a
file where a parent folder should be). An existing folder is refused too, unless ``overwrite``
is given and the folder is empty or of the right :class:`Kind`, recognised by its manifest (a
run folder, a checkpoint). Paths are compared resolved (links and ``..`` followed).

**Commits.** :class:`Staging` builds the folder under a hidden name beside its destination and
moves it into place with one rename:

- without ``overwrite``, a no-replace rename (Linux ``renameat2(RENAME_NOREPLACE)``) that
  fails if the destination appeared meanwhile (say, another process's run);
- with ``overwrite``, an atomic exchange (``renameat2(RENAME_EXCHANGE)``): at every instant the
  destination holds the old or the new folder. The folder swapped out is checked once more
  (swapped back if it is no longer of the right kind) and removed.

Where ``renameat2`` is missing (other systems, some file systems) the fallbacks are: for a new
folder, a check and then ``rename``, which fails onto a file or a non-empty folder but would
replace an empty folder created in the instant between the two; for a replacement, the old
folder is renamed to a hidden ``.old`` name and kept until the new one is in place. A crash
between those two renames leaves the destination missing but the old folder whole; the next
write to that parent renames it back.

**Hidden names and clean-up.** Staging is ``.<name>.<host>.<pid>.<token>.partial`` (files
replaced one by one use the same pattern), a folder being replaced ``….old``; ``host`` tags
the host name and PID namespace, ``pid`` is the writing process. Before each write the parent
folder is swept: entries of exactly this pattern, with this machine's tag, whose process no
longer exists (a crash, SIGKILL) are removed, and a ``.old`` whose destination is missing is
renamed back instead. Nothing else is touched: not other hidden entries, not the staging of
a live process, not another machine's.

**Permissions.** One rule for everything written: folders get mode :data:`FOLDER_MODE` and
files :data:`FILE_MODE`, less the umask, as ``mkdir`` and ``open`` give them (0o755 / 0o644
under the usual umask 022). :func:`set_permissions` applies it to a whole staging folder just
before its commit, because some writers (safetensors) make files readable by their owner only.

**Errors.** An ``OSError`` at write time (read-only file system, disk full, no permission) and
text that cannot be encoded become an :class:`~scrutiny.errors.InputError` naming the
destination and the reason; the staging folder, and parent folders made for it, are removed.
Ctrl-C and SIGTERM (which the CLI turns into ``KeyboardInterrupt``) are held back during the
few renames of a commit and delivered right after it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from scrutiny.errors import InputError

__all__ = ["FOLDER_MODE", "FILE_MODE", "Kind", "DestinationError", "check_destination", "Staging", "write_file",
           "write_error", "set_permissions", "umask", "sweep", "shown", "read_manifest"]

FOLDER_MODE = 0o777  # less the umask, as mkdir(1) does
FILE_MODE = 0o666    # less the umask, as open() does
MANIFEST = "manifest.json"

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})\.(?P<pid>[0-9]{1,10})\.[0-9a-f]{8}\.(?P<what>partial|old)$")


@dataclass(frozen=True)
class Kind:
    """What a command writes: ``name`` for messages, ``recognise(folder)`` true for one of them."""

    name: str
    recognise: Callable[[Path], bool]


class DestinationError(InputError):
    """A destination that is refused; ``exists`` when only overwriting would allow it."""

    def __init__(self, path: str | os.PathLike, reason: str, *, exists: bool = False):
        self.shown, self.reason, self.exists = shown(path), reason, exists
        hint = "; choose another folder or allow overwriting it" if exists else ""
        super().__init__(f"{self.shown}: {reason}{hint}")


class _Raced(Exception):
    """The destination appeared between the check and the rename."""


def shown(path: str | os.PathLike) -> str:
    """A path as text that can always be printed: bytes that are not UTF-8 as ``\\xff``."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


def read_manifest(folder: Path) -> dict | None:
    """``folder/manifest.json`` as a dict; None when it is missing, unreadable or not an object."""
    try:
        document = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


# ---------------------------------------------------------------- destinations


def check_destination(path: str | os.PathLike, *, kind: Kind, overwrite: bool,
                      inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Refuse (:class:`DestinationError`) a destination a command must not write; see the module
    docstring for the rules. Reads only; returns ``path`` as a Path."""
    path = Path(path)
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise DestinationError(path, "the name is not valid UTF-8; choose a name that is") from None
    target = _resolved(path)
    if target == Path(target.anchor):
        raise DestinationError(path, "is the root folder")
    for folder, what in ((_current(), "current"), (_home(), "home")):
        if folder is None:
            continue
        folder = _resolved(folder)
        if target == folder or target in folder.parents:
            relation = "is" if target == folder else "contains"
            raise DestinationError(path, f"{relation} the {what} folder; name a folder of its own")
    for given in inputs:
        if given is None or not os.path.lexists(given):
            continue
        source = _resolved(Path(given))
        if target == source or target in source.parents:
            relation = "is" if target == source else "contains"
            raise DestinationError(path, f"{relation} the input {shown(given)}")
    if path.is_symlink():
        raise DestinationError(path, "is a symbolic link; name the folder itself")
    if path.exists():
        if not path.is_dir():
            raise DestinationError(path, "is a file; expected a folder")
        if not overwrite:
            raise DestinationError(path, "already exists", exists=True)
        if not _replaceable(path, kind):
            raise DestinationError(path, f"is not a {kind.name} and not empty; only a new or empty folder or an "
                                         f"earlier {kind.name} is written to")
    _check_writable(path)
    return path


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a loop of symbolic links
        raise DestinationError(path, f"cannot be resolved ({exc})") from None


def _current() -> Path | None:
    try:
        return Path.cwd()
    except OSError:  # the current folder was removed
        return None


def _home() -> Path | None:
    try:
        return Path.home()
    except (RuntimeError, KeyError):  # no HOME and no password entry
        return None


def _replaceable(path: Path, kind: Kind) -> bool:
    """An empty folder, or a folder of ``kind`` (not a link to one)."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        with os.scandir(path) as entries:
            if next(entries, None) is None:
                return True
        return bool(kind.recognise(path))
    except Exception:  # unreadable: not recognised
        return False


def _check_writable(path: Path) -> None:
    """The nearest existing folder above ``path`` must be a folder we can write in."""
    above = path.parent
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise DestinationError(path, f"cannot be created: {shown(above)} is a file")
    if hasattr(os, "statvfs") and os.statvfs(above).f_flag & os.ST_RDONLY:
        raise DestinationError(path, f"cannot write ({os.strerror(errno.EROFS)})")
    if not os.access(above, os.W_OK | os.X_OK):
        raise DestinationError(path, f"cannot write in {shown(above)} ({os.strerror(errno.EACCES)})")


# ---------------------------------------------------------------- staging and commits


class Staging:
    """A folder built beside ``destination`` and moved into place by :meth:`commit`.

    Use as a context manager; leaving the block without a commit (an exception, Ctrl-C)
    removes the staging folder and any parent folder made for it, and turns write errors into
    an InputError naming ``destination``.

    Args:
        destination: the folder to create (or to replace, with ``overwrite``).
        kind: what it is, to recognise a folder that may be replaced.
        overwrite: replace an existing folder of this kind. Default: False.
        inputs: paths the destination must not be or contain. Default: none.
        subfolders: folders to create inside the staging folder. Default: none.
    """

    def __init__(self, destination: str | os.PathLike, *, kind: Kind, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike | None] = (), subfolders: Iterable[str] = ()):
        self.destination = check_destination(destination, kind=kind, overwrite=overwrite, inputs=inputs)
        self.kind, self.overwrite, self.subfolders = kind, overwrite, tuple(subfolders)
        self.path: Path | None = None
        self._made: list[Path] = []

    def __enter__(self) -> Staging:
        try:
            self._made = _make_parents(self.destination.parent)
            sweep(self.destination.parent)
            self.path = _hidden(self.destination, "partial")
            os.mkdir(self.path, FOLDER_MODE)
            for name in self.subfolders:
                os.mkdir(self.path / name, FOLDER_MODE)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        for folder in reversed(self._made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty: another writer may have used it meanwhile
        self._made = []
        error = write_error(self.destination, exc) if exc is not None else None
        if error is not None:
            raise error from None

    def commit(self) -> Path:
        """Move the staging folder to the destination (see the module docstring); return it."""
        staging = self.folder
        set_permissions(staging)
        with _signals_held():
            try:
                if self.overwrite and os.path.lexists(self.destination):
                    self._replace(staging)
                else:
                    _rename_new(staging, self.destination)
            except _Raced:
                raise DestinationError(self.destination, "was written by another process meanwhile; "
                                       "nothing was replaced") from None
            self.path, self._made = None, []
        return self.destination

    @property
    def folder(self) -> Path:
        """The staging folder (``path``), which exists only inside the with-block."""
        if self.path is None:
            raise RuntimeError("the staging folder is used outside its with-block")
        return self.path

    def _replace(self, new: Path) -> None:
        destination = self.destination
        try:
            exchanged = _renameat2(new, destination, RENAME_EXCHANGE)
        except FileNotFoundError:  # removed since the check: nothing to replace
            _rename_new(new, destination)
            return
        if exchanged:
            if not _replaceable(new, self.kind):  # `new` now holds what was at the destination
                _renameat2(new, destination, RENAME_EXCHANGE)
                raise DestinationError(destination, f"changed meanwhile and is no longer a {self.kind.name}; "
                                       "nothing was replaced")
            shutil.rmtree(new, ignore_errors=True)
            return
        old = _hidden(destination, "old")
        _rename_new(destination, old)
        if not _replaceable(old, self.kind):
            _rename_new(old, destination)
            raise DestinationError(destination, f"changed meanwhile and is no longer a {self.kind.name}; "
                                   "nothing was replaced")
        try:
            _rename_new(new, destination)
        except BaseException:
            with contextlib.suppress(OSError, _Raced):
                _rename_new(old, destination)  # else the next sweep puts it back
            raise
        self.path = old  # what is left to remove; __exit__ removes it if this is interrupted
        shutil.rmtree(old, ignore_errors=True)


def umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back at once
    os.umask(mask)
    return mask


def set_permissions(folder: Path) -> None:
    """Give every folder and file under ``folder`` (itself included) the one permission rule:
    :data:`FOLDER_MODE` / :data:`FILE_MODE` less the umask. Some writers (safetensors,
    ``tempfile``) create files readable by their owner only."""
    mask = umask()
    os.chmod(folder, FOLDER_MODE & ~mask)
    for root, folders, files in os.walk(folder):
        for name, mode in [(f, FOLDER_MODE) for f in folders] + [(f, FILE_MODE) for f in files]:
            path = os.path.join(root, name)
            if not os.path.islink(path):  # never change what a link points to
                os.chmod(path, mode & ~mask)


def write_file(target: str | os.PathLike, data: bytes, *, replace: bool = True) -> Path:
    """Write ``target`` through a hidden file beside it and one rename: a reader sees the old or
    the new content, never a part. Write errors become an InputError naming ``target``. With
    ``replace=False`` the rename never replaces a file: one that appeared meanwhile is a
    DestinationError, and stays as it was."""
    target = Path(target)
    sweep(target.parent)
    temporary = _hidden(target, "partial")
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        if replace:
            os.replace(temporary, target)
        else:
            _rename_new(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, _Raced):
            raise DestinationError(target, "was written by another process meanwhile; nothing was replaced") from None
        error = write_error(target, exc)
        if error is not None:
            raise error from None
        raise
    return target


def write_error(destination: Path, exc: BaseException) -> InputError | None:
    """The InputError for a failure to write ``destination``; None if ``exc`` is not one: an
    OSError of a kind only writing causes, or about the destination, a folder above it or one
    of its hidden staging entries, and text that cannot be encoded."""
    if isinstance(exc, InputError):
        return None
    if isinstance(exc, UnicodeEncodeError):
        return InputError(f"{shown(destination)}: cannot write (a name or text in it is not valid UTF-8)")
    if not isinstance(exc, OSError):
        return None
    marker = f".{destination.name[:100]}.{_HOST}."
    if exc.errno not in _WRITE_ERRNOS and not _concerns(exc.filename, destination, marker) and marker not in str(exc):
        return None
    reason = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return InputError(f"{shown(destination)}: cannot write ({reason})")


def _concerns(filename, destination: Path, marker: str) -> bool:
    if not isinstance(filename, (str, bytes, os.PathLike)):
        return False
    path, destination = Path(os.path.abspath(os.fsdecode(filename))), destination.absolute()
    if path == destination or path in destination.parents:
        return True
    if destination.parent not in path.parents:
        return False
    first = path.relative_to(destination.parent).parts[0]
    return first == destination.name or first.startswith(marker)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing folders above it; return the ones made, outermost first."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made: list[Path] = []
    for path in reversed(missing):
        try:
            os.mkdir(path, FOLDER_MODE)
        except FileExistsError:
            continue
        except BaseException:
            for done in reversed(made):
                with contextlib.suppress(OSError):
                    done.rmdir()
            raise
        made.append(path)
    return made


def _hidden(destination: Path, what: str) -> Path:
    # the name is cut so that the hidden name stays within the file system's 255 bytes
    return destination.parent / f".{destination.name[:100]}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.{what}"


def _rename_new(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; :class:`_Raced` if ``target`` exists (see the fallback above)."""
    try:
        if _renameat2(source, target, RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise _Raced from None
    if os.path.lexists(target):
        raise _Raced
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise _Raced from None
        raise


def _load_renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library older than glibc 2.28
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """``renameat2``; False where the system or the file system does not offer it."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(source), None, os.fspath(target))


@contextlib.contextmanager
def _signals_held():
    """Hold Ctrl-C and SIGTERM back while the block runs, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    names = [s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None))
             if s is not None and signal.getsignal(s) is not None]  # None: set outside Python, cannot be restored
    previous = {s: signal.signal(s, lambda number, frame: caught.append(number)) for s in names}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(caught):
            signal.raise_signal(number)


# ---------------------------------------------------------------- stale staging


def _host_tag() -> str:
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return hashlib.sha256(f"{socket.gethostname()}|{namespace}".encode()).hexdigest()[:6]


_HOST = _host_tag()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True  # another user's process, or a number we cannot ask about: leave it alone
    return True


def sweep(parent: str | os.PathLike) -> None:
    """Remove the staging left in ``parent`` by processes of this machine that are gone."""
    parent = Path(parent)
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])) or entry.is_symlink():
            continue
        path = Path(entry.path)
        if match["what"] == "old":
            home = parent / match["name"]
            if not os.path.lexists(home):
                with contextlib.suppress(OSError, _Raced):
                    _rename_new(path, home)  # a replacement that crashed halfway: the old folder goes back
                continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
