"""A data set on disk: an event log's table files plus `dataset.json`, or a raw MovieLens folder.

The tables are CSV or Parquet files, one per table or many (`data.tables`); the log's notes (what
a loader derived rather than observed) must travel with the data, so `write_dataset` adds them,
with where the log came from, in `dataset.json`. `read_dataset` reads either layout into memory
(the example pipeline reads the files itself, in parallel), so every command takes an event log
written by `tfrs-youtube data ...` or an official MovieLens folder.
"""

from __future__ import annotations

import json
import os

from tfrs_youtube.data.schema import TABLES, EventLog
from tfrs_youtube.data.tables import has_tables, read_table, table_files, write_tables
from tfrs_youtube.files import new_dir

INFO_FILE = "dataset.json"


def is_event_log(directory: str) -> bool:
    return has_tables(directory)


def write_dataset(log: EventLog, directory: str, info: dict, replace: bool = False, shards: int = 1,
                  format: str = "csv") -> None:
    """Writes the log's tables (each as `shards` files of `format`) and `dataset.json` (its name,
    notes and `info`) atomically."""
    with new_dir(directory, replace=replace) as tmp:
        write_tables(log.tables(), tmp, shards=shards, format=format)
        with open(os.path.join(tmp, INFO_FILE), "w") as f:
            json.dump(dict(info, name=log.name, notes=log.notes), f, indent=2, sort_keys=True, default=str)


def read_info(directory: str) -> dict:
    """`dataset.json` of an event log written by `write_dataset` ({} when absent)."""
    path = os.path.join(directory, INFO_FILE)
    if not os.path.exists(path):
        return {}
    from tfrs_youtube.files import read_json

    info = read_json(path, "the data set's description")
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object (the data set's description), got {type(info).__name__}")
    return info


def read_dataset(directory: str) -> EventLog:
    """An event log directory (with its notes) or a MovieLens 100K/1M folder, validated."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"data directory {directory} does not exist")
    if is_event_log(directory):
        info = read_info(directory)
        files = table_files(directory)
        log = EventLog(**{table: read_table(table, files[table]) for table in TABLES},
                       name=info.get("name") or os.path.basename(os.path.normpath(directory)))
        log.notes.update(info.get("notes", {}))
        return log.validate()
    from tfrs_youtube.data.movielens import load_movielens

    return load_movielens(directory)


def say_notes(log: EventLog, say=print) -> None:
    """Says what the data set lacks or derived rather than observed (its searches and impressions
    notes): every command that loads a data set says it, so no one mistakes them for observations."""
    for table in ("searches", "impressions"):
        if table in log.notes:
            say(f"{log.name} {table}: {log.notes[table]}")


def is_movielens(directory: str) -> bool:
    """A raw MovieLens folder, or an event log converted from one by `data movielens`."""
    return not is_event_log(directory) or read_info(directory).get("source") == "movielens"
