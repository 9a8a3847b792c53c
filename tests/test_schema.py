"""Schema validation: every kind of bad table gives one error naming table, column and row."""

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data.schema import EventLog, SchemaError, empty_table, validate


def _log(tiny_log, **changes):
    tables = {name: table.copy() for name, table in tiny_log.tables().items()}
    tables.update(changes)
    return EventLog(**tables)


def test_synthetic_log_is_valid(tiny_log):
    validate(tiny_log)


def test_empty_tables_are_valid():
    EventLog(**{n: empty_table(n) for n in ("users", "videos", "watches", "searches", "impressions")}).validate()


@pytest.mark.parametrize(
    "table, column, mutate, expected",
    [
        ("watches", "video_id", lambda t: t.drop(columns=["video_id"]), "missing column"),
        ("users", "age", lambda t: t.assign(age=t.age.astype(object).where(t.index != 3, "old")), "expected a number"),
        ("videos", "duration_s", lambda t: t.assign(duration_s=t.duration_s.where(t.index != 2, np.nan)), "NaN"),
        ("watches", "time", lambda t: t.assign(time=t.time.where(t.index != 5, -10)), "negative time"),
        ("watches", "user_id", lambda t: t.assign(user_id=t.user_id.where(t.index != 7, "nobody")), "unknown user_id"),
        ("impressions", "video_id", lambda t: t.assign(video_id=t.video_id.where(t.index != 4, "v?")),
         "unknown video_id"),
        ("impressions", "clicked", lambda t: t.assign(clicked=t.clicked.where(t.index != 1, 2)), "0 or 1"),
        ("watches", "source", lambda t: t.assign(source=t.source.where(t.index != 6, "tv")), "unknown source"),
        ("users", "user_id", lambda t: t.assign(user_id=t.user_id.where(t.index != 8, t.user_id[0])), "duplicate"),
        ("searches", "user_id", lambda t: t.assign(user_id=t.user_id.where(t.index != 0, 7)), "expected a string"),
    ],
)
def test_errors_name_table_column_and_row(tiny_log, table, column, mutate, expected):
    bad = mutate(tiny_log.tables()[table].copy())
    with pytest.raises(SchemaError) as info:
        _log(tiny_log, **{table: bad}).validate()
    err = info.value
    assert (err.table, err.column) == (table, column)
    assert expected in str(err)
    assert f"table '{table}'" in str(err) and f"column '{column}'" in str(err)
    if expected != "missing column":
        # The named row really is the offending one.
        assert err.row is not None
        assert not bad.iloc[[err.row]].equals(tiny_log.tables()[table].iloc[[err.row]]) or expected == "duplicate"


def test_csv_round_trip_and_malformed_file(tiny_log, tmp_path):
    tiny_log.to_csv(tmp_path)
    back = EventLog.read_csv(tmp_path)
    for name, table in tiny_log.tables().items():
        pd.testing.assert_frame_equal(back.tables()[name][table.columns].reset_index(drop=True),
                                      table.reset_index(drop=True), check_dtype=False)
    lines = (tmp_path / "watches.csv").read_text().splitlines()
    fields = lines[3].split(",")
    fields[2] = "yesterday"  # the time column
    lines[3] = ",".join(fields)
    (tmp_path / "watches.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SchemaError, match=r"table 'watches' \(file .*watches\.csv\), column 'time', line 4: "
                                         r"'yesterday' is not a number"):
        EventLog.read_csv(tmp_path)
