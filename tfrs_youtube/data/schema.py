"""The event log: one schema for every dataset, validated on load.

Every loader (the synthetic simulator, MovieLens) produces an `EventLog` of five pandas tables.
Ids are strings at this boundary; times are integer seconds on one clock per log (the
simulator's starts at 0, MovieLens uses Unix time). `validate` checks each table and raises one
`SchemaError` naming the table, the column and an offending row, so that a bad file is found
before it becomes a silently wrong model.
"""

from __future__ import annotations

import dataclasses
import os
import numpy as np
import pandas as pd

WATCH_SOURCES = ("home", "search", "related", "external")

# Column -> kind. Kinds: "id" (non-empty string), "str" (string, may be empty), "time"
# (integer seconds >= 0), "float>=0", "float>0", "bool" (0/1), "source" (one of WATCH_SOURCES).
SCHEMA: dict[str, dict[str, str]] = {
    "users": {
        "user_id": "id",
        "country": "str",
        "language": "str",
        "gender": "str",
        "age": "float>=0",
        "device": "str",
    },
    "videos": {
        "video_id": "id",
        "upload_time": "time",
        "language": "str",
        "duration_s": "float>0",
        "topic": "str",
    },
    "watches": {
        "user_id": "id",
        "video_id": "id",
        "time": "time",
        "watch_time_s": "float>=0",
        "source": "source",
    },
    "searches": {"user_id": "id", "time": "time", "query": "str"},
    "impressions": {
        "user_id": "id",
        "video_id": "id",
        "time": "time",
        "clicked": "bool",
        "watch_time_s": "float>=0",
    },
}
TABLES = tuple(SCHEMA)
# Times are whole seconds that a float64 (the serving request's `request_time`) holds exactly.
MAX_TIME = 2**53
# The largest number a float column may hold: examples store them as float32, where a larger
# one would become infinite.
MAX_FLOAT = float(np.finfo(np.float32).max)
# Which tables' rows must point at a known user / video.
_FOREIGN_KEYS = {
    "watches": (("user_id", "users"), ("video_id", "videos")),
    "searches": (("user_id", "users"),),
    "impressions": (("user_id", "users"), ("video_id", "videos")),
}
_PRIMARY_KEYS = {"users": "user_id", "videos": "video_id"}


def is_csv(path: str | None) -> bool:
    return bool(path) and path.endswith((".csv", ".csv.gz"))


class SchemaError(ValueError):
    """A table of the event log breaks the schema; the message names table, column and row."""

    def __init__(self, table: str, column: str | None, row: int | None, problem: str, path: str | None = None):
        self.table, self.column, self.row, self.problem, self.path = table, column, row, problem, path
        where = f"table {table!r}" + (f" (file {path})" if path else "")
        if column is not None:
            where += f", column {column!r}"
        if row is not None:
            # In a CSV file, the line a text editor shows: the header is line 1.
            where += f", line {row + 2}" if is_csv(path) else f", row {row}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # picklable, for pipeline workers
        return SchemaError, (self.table, self.column, self.row, self.problem, self.path)

    def located(self, path: str, row_offset: int = 0) -> "SchemaError":
        """The same error, found in rows `row_offset...` of the file `path`."""
        row = None if self.row is None else self.row + row_offset
        return SchemaError(self.table, self.column, row, self.problem, path)


def empty_table(name: str) -> pd.DataFrame:
    """A table with the schema's columns and no rows (for a dataset that lacks it)."""
    dtypes = {"id": object, "str": object, "source": object, "time": np.int64, "bool": np.int8}
    return pd.DataFrame(
        {col: pd.Series([], dtype=dtypes.get(kind, np.float64)) for col, kind in SCHEMA[name].items()}
    )


@dataclasses.dataclass
class EventLog:
    """The five tables of DESIGN.md, plus notes on what the loader derived or lacks.

    `notes` maps a table name to a sentence saying how it was obtained when it is not in the
    source data (e.g. MovieLens has no searches): a loader never invents data silently.
    """

    users: pd.DataFrame
    videos: pd.DataFrame
    watches: pd.DataFrame
    searches: pd.DataFrame
    impressions: pd.DataFrame
    name: str = "event_log"
    notes: dict[str, str] = dataclasses.field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in TABLES}

    def validate(self) -> "EventLog":
        validate(self)
        return self

    def to_csv(self, directory: str | os.PathLike) -> None:
        """Writes one `<table>.csv` per table (what `read_csv` reads back)."""
        os.makedirs(directory, exist_ok=True)
        for name, table in self.tables().items():
            table.to_csv(os.path.join(directory, f"{name}.csv"), index=False)

    @classmethod
    def read_csv(cls, directory: str | os.PathLike, name: str | None = None) -> "EventLog":
        """Reads the tables written by `to_csv` and validates them."""
        tables = {}
        for table in TABLES:
            path = os.path.join(directory, f"{table}.csv")
            if not os.path.exists(path):
                raise SchemaError(table, None, None, f"file {path} is missing")
            string_cols = [c for c, k in SCHEMA[table].items() if k in ("id", "str", "source")]
            try:
                frame = pd.read_csv(path, dtype={c: str for c in string_cols}, keep_default_na=False)
            except (pd.errors.ParserError, UnicodeDecodeError) as err:
                raise SchemaError(table, None, None, f"cannot parse {path}: {err}") from err
            try:
                tables[table] = _coerce(table, frame)
            except SchemaError as err:
                raise err.located(path) from None
        log = cls(**tables, name=name or os.path.basename(os.path.normpath(directory)))
        return log.validate()


def _coerce(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Converts numeric columns read from text, naming the first value that is not a number."""
    frame = frame.copy()
    for column, kind in SCHEMA[table].items():
        if column not in frame.columns or kind in ("id", "str", "source"):
            continue
        as_number = pd.to_numeric(frame[column].replace("", np.nan), errors="coerce")
        bad = as_number.isna() & (frame[column].astype(str) != "") & frame[column].notna()
        bad &= frame[column].astype(str).str.lower() != "nan"
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise SchemaError(table, column, row, f"{frame[column].iloc[row]!r} is not a number")
        frame[column] = as_number
    return frame


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_column(table: str, column: str, kind: str, values: pd.Series) -> None:
    array = values.to_numpy()
    if kind in ("id", "str", "source"):
        # infer_dtype scans in C; the per-row loop only runs to name the offending row.
        if len(array) and pd.api.types.infer_dtype(array, skipna=False) != "string":
            is_str = np.fromiter((isinstance(v, str) for v in array), bool, len(array))
            row = _first(~is_str)
            raise SchemaError(table, column, row, f"expected a string, got {array[row]!r}")
        if kind == "id":
            empty = values.str.len().to_numpy() == 0
            if empty.any():
                raise SchemaError(table, column, _first(empty), "empty id")
        if kind == "source":
            unknown = ~values.isin(WATCH_SOURCES).to_numpy()
            if unknown.any():
                row = _first(unknown)
                raise SchemaError(
                    table, column, row, f"unknown source {array[row]!r} (expected one of {WATCH_SOURCES})"
                )
        return
    if values.dtype == object or not (
        pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    ):
        numeric = np.fromiter(
            (isinstance(v, (int, float, np.integer, np.floating, bool)) for v in array), bool, len(array)
        )
        row = _first(~numeric) if (~numeric).any() else 0
        raise SchemaError(table, column, row, f"expected a number, got {array[row]!r} ({values.dtype})")
    numbers = array.astype(np.float64)
    nan = np.isnan(numbers)
    if nan.any():
        raise SchemaError(table, column, _first(nan), "NaN (missing value)")
    infinite = np.isinf(numbers)
    if infinite.any():
        raise SchemaError(table, column, _first(infinite), "infinite value")
    if kind == "time":
        fractional = numbers != np.floor(numbers)
        if fractional.any():
            row = _first(fractional)
            raise SchemaError(table, column, row, f"time must be whole seconds, got {numbers[row]}")
    if kind.startswith("float") and (np.abs(numbers) > MAX_FLOAT).any():
        row = _first(np.abs(numbers) > MAX_FLOAT)
        raise SchemaError(table, column, row, f"{numbers[row]:g} is out of range (at most {MAX_FLOAT:.3g}, a "
                                              "float32)")
    if kind == "time" and (numbers > MAX_TIME).any():
        row = _first(numbers > MAX_TIME)
        raise SchemaError(table, column, row, f"time {array[row]} is beyond the clock's range (at most 2^53 s, "
                                              "exact as a float64 request time)")
    if kind in ("time", "float>=0") and (numbers < 0).any():
        row = _first(numbers < 0)
        what = "negative time" if kind == "time" else "negative value"
        raise SchemaError(table, column, row, f"{what} {numbers[row]}")
    if kind == "float>0" and (numbers <= 0).any():
        row = _first(numbers <= 0)
        raise SchemaError(table, column, row, f"must be > 0, got {numbers[row]}")
    if kind == "bool" and not np.isin(numbers, (0, 1)).all():
        row = _first(~np.isin(numbers, (0, 1)))
        raise SchemaError(table, column, row, f"must be 0 or 1, got {numbers[row]}")


def validate_table(name: str, table: pd.DataFrame) -> None:
    """Checks one table's columns, types and values (not its foreign keys)."""
    if not isinstance(table, pd.DataFrame):
        raise SchemaError(name, None, None, f"expected a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in SCHEMA[name] if c not in table.columns]
    if missing:
        raise SchemaError(name, missing[0], None, f"missing column (has {list(table.columns)})")
    for column, kind in SCHEMA[name].items():
        _check_column(name, column, kind, table[column].reset_index(drop=True))
    key = _PRIMARY_KEYS.get(name)
    if key is not None:
        duplicated = table[key].duplicated().to_numpy()
        if duplicated.any():
            row = _first(duplicated)
            raise SchemaError(name, key, row, f"duplicate id {table[key].iloc[row]!r}")


def validate(log: EventLog) -> None:
    """Validates every table and every foreign key; raises the first `SchemaError` found."""
    tables = log.tables()
    for name in TABLES:
        validate_table(name, tables[name])
    for name, keys in _FOREIGN_KEYS.items():
        for column, target in keys:
            known = tables[target][_PRIMARY_KEYS[target]]
            unknown = ~tables[name][column].isin(known).to_numpy()
            if unknown.any():
                row = _first(unknown)
                raise SchemaError(
                    name, column, row, f"unknown {column} {tables[name][column].iloc[row]!r} (not in {target})"
                )
