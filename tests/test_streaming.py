"""Audits of logged decisions streamed from Parquet: a million rows, read whole and streamed in
record batches of two sizes, from one file and from a folder of three, give the same findings;
the distinct rows and their counts are pandas' own; a folder whose files disagree on a column's
type, and a score with too many distinct values, are one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scrutiny.audit import row_counts
from scrutiny.audit.run.runner import run_audit
from scrutiny.errors import DataError
from scrutiny.models import load_predictions
from scrutiny.models.parquet_counts import count_rows

from .test_cli import assert_one_line_error
from .test_predictions_audit import cli

ROWS = 1_000_000
SPEC = """
label = "hired"
favourable = 1
score = "score"
threshold = 0.55
score_is_probability = true
missing = "drop"

[protected]
race = { reference = "White" }
sex = ["Male"]
"""
CONFIG = {"families": ["performance", "fairness"], "fairness": {"n_boot": 200}}


def decisions(n: int, seed: int = 0) -> pd.DataFrame:
    """Logged hiring scores (three decimals) with two group columns, a few unknown sexes and a few
    rows missing their label."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["White", "Black", "Asian", "Hispanic", "Other"], n, p=[0.5, 0.2, 0.1, 0.15, 0.05])
    sex = pd.Series(rng.choice(["Male", "Female"], n), dtype=object)
    sex[rng.random(n) < 0.01] = None
    score = np.round(np.clip(rng.beta(2, 2, n) + 0.05 * (race == "White") + 0.03 * (sex == "Male"), 0, 1), 3)
    hired = pd.Series((rng.random(n) < score).astype(float))
    hired[rng.random(n) < 0.001] = np.nan
    return pd.DataFrame({"hired": hired, "score": score, "race": race, "sex": sex})


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("streamed")
    frame = decisions(ROWS)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, root / "decisions.parquet", row_group_size=300_000)
    (root / "folder" / "decisions").mkdir(parents=True)
    for i, rows in enumerate(np.array_split(np.arange(ROWS), 3)):
        pq.write_table(table.take(rows), root / "folder" / "decisions" / f"part-{i}.parquet", row_group_size=150_000)
    (root / "spec.toml").write_text(SPEC)
    return root


def findings_of(path: Path, spec: Path, **reading) -> tuple[dict, object]:
    dataset, predictions = load_predictions(path, spec, **reading)
    result = run_audit(None, dataset, predictions=predictions, config=CONFIG)
    findings = json.loads(json.dumps(result.document))
    findings["subject"]["data"].pop("sha256")   # a folder's hash names its files, a file's its bytes
    return findings, dataset


@pytest.fixture(scope="module")
def in_memory(files):
    return findings_of(files / "decisions.parquet", files / "spec.toml", stream=False)


@pytest.mark.parametrize("source, batch_rows", [("decisions.parquet", 65_536), ("decisions.parquet", 1_000_003),
                                                ("folder/decisions", 40_000)])
def test_streamed_audit_equals_the_rows_read_whole(files, in_memory, source, batch_rows):
    expected, whole = in_memory
    found, streamed = findings_of(files / source, files / "spec.toml", batch_rows=batch_rows)
    assert streamed.test.weights is not None and whole.test.weights is None
    assert len(streamed.test.y) < 30_000 and len(streamed.test) == len(whole.test)   # counted rows: few entries
    assert found == expected
    checks = {f["check"] for f in found["findings"]}
    assert {"fairness.scoring_rate_impact_ratio", "fairness.disparate_impact", "performance.calibration_error"} <= checks
    assert all(f["interval"] is None or f["interval"]["low"] <= f["interval"]["high"] for f in found["findings"])


def test_counts_and_median_are_those_of_the_rows(files):
    frame = pd.read_parquet(files / "decisions.parquet")
    columns = ["hired", "score", "race", "sex"]
    counted, weights = count_rows(files / "folder", columns, batch_rows=77_777)
    assert weights.sum() == ROWS
    expected = frame.value_counts(columns, dropna=False).reset_index()
    expected = expected.sort_values(columns, na_position="last").reset_index(drop=True)
    pd.testing.assert_frame_equal(counted.assign(count=weights), expected, check_dtype=False)
    assert row_counts.median(counted["score"].to_numpy(), weights) == np.median(frame["score"])
    assert row_counts.median(np.array([3.0, 1.0, 2.0]), np.array([1, 1, 2])) == np.median([3, 1, 2, 2])


def test_a_folder_whose_files_disagree_on_a_type_is_one_line(files, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    frame = decisions(1_000)
    frame.iloc[:500].to_parquet(folder / "a.parquet")
    frame.iloc[500:].astype({"score": str}).to_parquet(folder / "b.parquet")
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "audit", "--predictions", folder, "--spec", files / "spec.toml", "--out", out)
    assert_one_line_error(code, stdout, err, "b.parquet: column 'score' holds", "every file must have the same schema",
                          out_dir=out)


def test_too_many_distinct_rows_is_refused(files, tmp_path, monkeypatch):
    from scrutiny.models import parquet_counts

    monkeypatch.setattr(parquet_counts, "MAX_DISTINCT_ROWS", 1_000)
    with pytest.raises(DataError, match="more than 1,000 distinct combinations .* round the score"):
        load_predictions(files / "decisions.parquet", files / "spec.toml")


def test_streamed_rows_run_as_ray_tasks_give_the_same_counts(files):
    ray = pytest.importorskip("ray")
    from scrutiny.audit.run.executor import RayExecutor

    columns = ["hired", "score", "race", "sex"]
    local = count_rows(files / "folder", columns, batch_rows=100_000)
    assert not ray.is_initialized()
    try:
        remote = count_rows(files / "folder", columns, batch_rows=100_000, executor=RayExecutor(num_cpus=2))
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(remote[0], local[0])
    assert (remote[1] == local[1]).all()
