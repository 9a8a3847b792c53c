"""The event log's tables on disk: which files hold each table, read in validated chunks.

A table is one file or many: `<table>.csv`, `<table>.csv.gz`, `<table>.parquet`, shards such as
`<table>-00003.parquet`, or a folder `<table>/` of such files; a log that is too big for one
file is written as many, and the pipeline reads its files in parallel. Every chunk is checked
against the schema (`data.schema`) as it is read, and an error names the file and the row in
it. Searches and impressions may be missing (a log without them says so); users, videos and
watches may not.
"""

from __future__ import annotations

import glob
import os
from typing import Iterator

import pandas as pd

from tfrs_youtube.data.schema import SCHEMA, TABLES, SchemaError, _coerce, validate_table

SUFFIXES = (".csv", ".csv.gz", ".parquet")
REQUIRED = ("users", "videos", "watches")
CHUNK_ROWS = 200_000


def _is_table_file(path: str) -> bool:
    return os.path.isfile(path) and path.endswith(SUFFIXES)


def table_files(directory: str) -> dict[str, list[str]]:
    """Each table's files, sorted by path (their order numbers the rows for ties in time)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"data directory {directory} does not exist")
    found = {}
    for table in TABLES:
        paths = [os.path.join(directory, table + suffix) for suffix in SUFFIXES]
        paths += glob.glob(os.path.join(directory, f"{table}-*"))
        paths += glob.glob(os.path.join(directory, table, "*"))
        found[table] = sorted({os.path.abspath(p) for p in paths if _is_table_file(p)})
    missing = [t for t in REQUIRED if not found[t]]
    if missing:
        raise SchemaError(missing[0], None, None, f"no file for it in {directory} (expected {missing[0]}.csv, "
                                                  f"{missing[0]}.parquet, {missing[0]}-*.csv or {missing[0]}/*.parquet)")
    return found


def has_tables(directory: str) -> bool:
    """Whether `directory` holds an event log's table files (a users table at least)."""
    return os.path.isdir(directory) and any(
        _is_table_file(p) for p in [os.path.join(directory, "users" + s) for s in SUFFIXES]
        + glob.glob(os.path.join(directory, "users-*")) + glob.glob(os.path.join(directory, "users", "*")))


def _string_columns(table: str) -> list[str]:
    return [c for c, kind in SCHEMA[table].items() if kind in ("id", "str", "source")]


def read_chunks(table: str, path: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, pd.DataFrame]]:
    """(first row, chunk) of a table file, each chunk converted and validated; a problem raises
    `SchemaError` naming the file and its row (0-based, header not counted; its message says the
    line of a CSV file)."""
    offset = 0
    try:
        for frame in _raw_chunks(table, path, chunk_rows):
            try:
                frame = _coerce(table, frame)
                validate_table(table, frame.reset_index(drop=True))
            except SchemaError as err:
                raise err.located(path, offset) from None
            frame.index = pd.RangeIndex(offset, offset + len(frame))
            yield offset, frame
            offset += len(frame)
    except SchemaError:
        raise
    except pd.errors.EmptyDataError as err:
        columns = ",".join(SCHEMA[table])
        raise SchemaError(table, None, None, f"the file is empty (expected at least its header line: {columns})",
                          path) from err
    except UnicodeDecodeError as err:
        raise SchemaError(table, None, None, f"not a text file in UTF-8 (byte {err.start}: {err.reason})",
                          path) from err
    except (pd.errors.ParserError, OSError, ValueError) as err:
        raise SchemaError(table, None, None, f"cannot read it: {' '.join(str(err).split())}", path) from err


def _raw_chunks(table: str, path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    strings = _string_columns(table)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            for column in strings:
                if column in frame.columns:
                    frame[column] = frame[column].astype(object)
            yield frame
        return
    reader = pd.read_csv(path, dtype={c: str for c in strings}, keep_default_na=False, chunksize=chunk_rows)
    with reader:
        yield from reader


def read_table(table: str, paths: list[str]) -> pd.DataFrame:
    """A whole (small) table from its files, validated; empty with the schema's columns if none."""
    from tfrs_youtube.data.schema import empty_table

    frames = [frame for path in paths for _, frame in read_chunks(table, path)]
    if not frames:
        return empty_table(table)
    return pd.concat(frames, ignore_index=True)


def write_tables(tables: dict[str, pd.DataFrame], directory: str, shards: int = 1, format: str = "csv") -> None:
    """Writes each table as one file or `shards` files (`<table>-00000-of-00004.<format>`)."""
    if format not in ("csv", "parquet"):
        raise ValueError(f"table format must be 'csv' or 'parquet', got {format!r}")
    os.makedirs(directory, exist_ok=True)
    for name, frame in tables.items():
        parts = [frame] if shards <= 1 else [frame.iloc[a:b] for a, b in _row_ranges(len(frame), shards)]
        for i, part in enumerate(parts):
            stem = name if shards <= 1 else f"{name}-{i:05d}-of-{shards:05d}"
            path = os.path.join(directory, f"{stem}.{format}")
            if format == "csv":
                part.to_csv(path, index=False)
            else:
                part.to_parquet(path, index=False)


def _row_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    bounds = [n * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))
