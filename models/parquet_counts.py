"""A Parquet file, or a folder of them, read as its distinct rows with counts, in bounded memory.

Logged decisions can outgrow memory (a lender's or an employer's decisions over years). An audit
of them needs only the columns its spec names (label, decision, score, split, groups), and every
statistic it takes is a function of the counts of their distinct combinations
(:mod:`scrutiny.audit.row_counts`). So the files are read in record batches of a row group
(pyarrow), each batch reduced to its distinct rows and their counts, and the counts summed:
memory holds one batch and the distinct rows, whatever the number of rows.

The work is one piece per row group, mapped by the audit's executor (one Ray task per row group
with the Ray executor; the files must then be where every worker can read them); the parts merge
by summing, so the result does not depend on the batch size, the number of files or of workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scrutiny.errors import DataError
from scrutiny.limits import check_int

if TYPE_CHECKING:
    import pyarrow as pa

    from scrutiny.audit.run.executor import Executor

__all__ = ["BATCH_ROWS", "MAX_DISTINCT_ROWS", "PARQUET_SUFFIXES", "is_parquet", "parquet_files", "count_rows"]

BATCH_ROWS = 1 << 20       # rows per record batch read at a time
MAX_DISTINCT_ROWS = 5_000_000   # distinct rows kept in memory (about 100 bytes each)
PARQUET_SUFFIXES = (".parquet", ".pq")
ROWS = "__rows__"          # the count column of a part


def is_parquet(path: Path) -> bool:
    """A Parquet file, or a folder (of Parquet files)."""
    return path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files at ``path``: the file itself, or those in the folder and its subfolders
    (sorted by path)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: data file or folder not found")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES)
    if not files:
        raise DataError(f"{path}: folder holds no .parquet file")
    return files


def count_rows(path: Path, columns: list[str], *, batch_rows: int = BATCH_ROWS,
               executor: Executor | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct rows of ``columns`` over the Parquet file or folder at ``path`` (missing values
    included, as their own value), sorted, and how many rows each stands for.

    Every file must hold every column, with the same type as in the first file. The distinct rows
    must stay under :data:`MAX_DISTINCT_ROWS` (a score with a value per row would make them as
    many as the rows: round it first).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scrutiny.audit.run.executor import LocalExecutor

    check_int("batch_rows", batch_rows)
    columns = list(dict.fromkeys(columns))
    files = parquet_files(path)
    first: pa.Schema | None = None
    parts = []
    for file in files:
        try:
            reader = pq.ParquetFile(file)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{file}: cannot be read as Parquet ({str(exc).splitlines()[0]})") from None
        schema = reader.schema_arrow
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise DataError(f"{file}: column '{missing[0]}' named in the spec not found "
                            f"(columns: {', '.join(schema.names)})")
        if first is None:
            first = schema
        for column in columns:
            if schema.field(column).type != first.field(column).type:
                raise DataError(f"{file}: column '{column}' holds {schema.field(column).type} values, but "
                                f"{first.field(column).type} in {files[0]}; every file must have the same schema")
        parts += [(str(file), group) for group in range(reader.num_row_groups)]
    if not sum(pq.ParquetFile(file).metadata.num_rows for file in files):
        raise DataError(f"{path}: has a schema but no rows")
    counted = (executor or LocalExecutor()).map(_count_part, parts, columns, batch_rows)
    merged = _merge([part for part in counted if part.num_rows], columns, path)
    frame = merged.to_pandas().sort_values(columns, kind="stable", na_position="last").reset_index(drop=True)
    return frame[columns], frame[ROWS].to_numpy(dtype=np.int64)


def _count_part(part: tuple[str, int], columns: list[str], batch_rows: int) -> pa.Table:
    """The distinct rows of ``columns`` in one row group of one file, with their counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file, group = part
    found: list[pa.Table] = []
    for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns):
        table = pa.Table.from_batches([batch]).append_column(ROWS, pa.array(np.ones(batch.num_rows, dtype=np.int64)))
        found = [_merge(found + [table], columns, Path(file))]
    return found[0] if found else pa.table({c: [] for c in [*columns, ROWS]})


def _merge(tables: list[pa.Table], columns: list[str], path: Path) -> pa.Table:
    """Counted tables summed into one: a row per distinct combination of ``columns``."""
    import pyarrow as pa

    table = pa.concat_tables(tables)
    merged = table.group_by(columns, use_threads=True).aggregate([(ROWS, "sum")]).rename_columns([*columns, ROWS]) \
        if columns else table
    if merged.num_rows > MAX_DISTINCT_ROWS:
        raise DataError(f"{path}: more than {MAX_DISTINCT_ROWS:,} distinct combinations of "
                        f"{', '.join(columns)}; a streamed audit keeps one count per combination: round the score "
                        "(to 3 or 4 decimals, say) before the audit")
    return merged
