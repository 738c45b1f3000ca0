"""Shared fixtures: raw data files from ../shared/datasets, and models trained once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


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
def data_dir(tmp_path_factory) -> Path:
    """A data directory filled by ``fetch(..., source=../shared/datasets)``, also set as
    ``SCRUTINY_DATA_DIR`` so the CLI finds it."""
    from scrutiny.models import RAW_FILES, fetch

    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} not present")
    folder = tmp_path_factory.mktemp("data")
    for name in RAW_FILES:
        fetch(name, directory=folder, source=SHARED_DATASETS)
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


@pytest.fixture(scope="session")
def trained(load, tmp_path_factory):
    """``trained(data, arch)``: (dataset, TrainedModel, checkpoint path), trained once per
    session with the default settings and seed 0, as ``scrutiny train`` does."""
    from scrutiny.models import save_checkpoint, train_on

    cache = {}
    root = tmp_path_factory.mktemp("checkpoints")

    def _trained(data: str, arch: str):
        if (data, arch) not in cache:
            dataset = load(data)
            result = train_on(dataset, arch, seed=0, progress=False)
            path = save_checkpoint(root / f"{data}-{arch}", model=result.model, dataset=dataset,
                                   metrics=result.metrics, training=result.settings, seed=0)
            cache[data, arch] = (dataset, result, path)
        return cache[data, arch]

    return _trained
