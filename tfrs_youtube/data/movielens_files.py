"""Reading the MovieLens files strictly: a malformed line is an error that names the file and the
1-based line (`MovieLensFormatError`), raised before a wrong value can reach a model.

The files are read as the GroupLens archives ship them: Latin-1 text, one record a line, 100K
with "|" (tab in `u.data`), 1M with "::". Parsing is vectorised (pandas' C parser, then
column-wise checks) so 100K loads in well under a second and 1M in a few.

This module knows the formats: the file names, the 100K genre order, the 1M README's age-group
and occupation codes, and how dates are written. What the fields mean in an event log is
decided in `movielens`, which reads the files with the functions here.
"""

from __future__ import annotations

import calendar
import csv
import datetime
import io
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

# u.genre's order, used only when a 100K directory lacks u.genre (the official archive has it).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
# The 1M README's tables. Code 0 is '"other" or not specified'.
AGE_GROUPS_1M = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
OCCUPATIONS_1M = {
    0: "other", 1: "academic/educator", 2: "artist", 3: "clerical/admin", 4: "college/grad student",
    5: "customer service", 6: "doctor/health care", 7: "executive/managerial", 8: "farmer",
    9: "homemaker", 10: "K-12 student", 11: "lawyer", 12: "programmer", 13: "retired",
    14: "sales/marketing", 15: "scientist", 16: "self-employed", 17: "technician/engineer",
    18: "tradesman/craftsman", 19: "unemployed", 20: "writer",
}

FILES_100K = ("u.data", "u.item", "u.user")
FILES_1M = ("ratings.dat", "movies.dat", "users.dat")


class MovieLensFormatError(ValueError):
    """A MovieLens file is malformed; the message names the file, the 1-based line and the problem."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {problem}")


def _line_of(data: np.ndarray, offset: int) -> int:
    return int(np.count_nonzero(data[:offset] == 10)) + 1


def read_fields(path: Path, sep: str, columns: Sequence[str], *, ascii_only: bool) -> pd.DataFrame:
    """Reads a header-less delimited file into string columns; row i is line i + 1.

    Field counts and encoding are checked on the raw bytes first, because pandas' fast parser
    would otherwise pad short lines with NaN or report problems without the file's name.
    """
    raw = path.read_bytes().replace(b"\r\n", b"\n").rstrip(b"\n")
    if not raw:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    data = np.frombuffer(raw, np.uint8)
    # Control bytes never occur in MovieLens text; they mean a binary, UTF-16 or damaged file.
    bad = (data < 32) & (data != 9) & (data != 10)
    if ascii_only:  # the ratings files hold digits only
        bad |= data >= 128
    if bad.any():
        offset = int(np.flatnonzero(bad)[0])
        expected = "ASCII digits and separators" if ascii_only else "Latin-1 text"
        raise MovieLensFormatError(
            path, _line_of(data, offset), f"bad encoding: byte 0x{data[offset]:02x} (expected {expected})"
        )
    if len(sep) > 1:
        # The C parser wants a one-byte separator; 0x1f cannot be in the data (rejected above).
        raw = raw.replace(sep.encode(), b"\x1f")
        sep = "\x1f"
        data = np.frombuffer(raw, np.uint8)
    newlines = np.flatnonzero(data == 10)
    n_lines = len(newlines) + 1
    separators = np.flatnonzero(data == ord(sep))
    fields = np.bincount(np.searchsorted(newlines, separators), minlength=n_lines) + 1
    wrong = fields != len(columns)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        start = 0 if row == 0 else int(newlines[row - 1]) + 1
        end = int(newlines[row]) if row < len(newlines) else len(data)
        problem = "empty line" if start == end else f"expected {len(columns)} fields, found {fields[row]}"
        raise MovieLensFormatError(path, row + 1, f"{problem} ({' | '.join(columns)})")
    frame = pd.read_csv(
        io.BytesIO(raw), sep=sep, header=None, names=list(columns), dtype=str, encoding="latin-1",
        quoting=csv.QUOTE_NONE, keep_default_na=False, na_filter=False, skip_blank_lines=False,
        engine="c",
    )
    assert len(frame) == n_lines, (path, len(frame), n_lines)
    return frame


def fail_at(path: Path, mask: np.ndarray | pd.Series, problem: str, values: pd.Series | None = None) -> None:
    """Raises for the first row where `mask` holds, naming its line (and value, if given)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        row = int(np.flatnonzero(mask)[0])
        if values is not None:
            problem = f"{problem}, got {values.iloc[row]!r}"
        raise MovieLensFormatError(path, row + 1, problem)


def integers(
    path: Path, frame: pd.DataFrame, column: str, valid: tuple[int, int] | None = None
) -> np.ndarray:
    """A column of non-negative integers, optionally within `valid` (inclusive bounds)."""
    values = frame[column]
    # ASCII digits only (isdigit alone accepts Latin-1's superscripts); 18 digits fit int64.
    ok = values.str.isascii() & values.str.isdigit() & (values.str.len() <= 18)
    fail_at(path, ~ok, f"{column} must be a non-negative integer", values)
    numbers = values.astype(np.int64).to_numpy()
    if valid is not None:
        low, high = valid
        fail_at(path, (numbers < low) | (numbers > high), f"{column} must be in {low}-{high}", values)
    return numbers


def unique_ids(path: Path, frame: pd.DataFrame, column: str, ids: np.ndarray) -> None:
    """Raises for the first id that repeats an earlier line's."""
    duplicated = pd.Series(ids).duplicated().to_numpy()
    fail_at(path, duplicated, f"duplicate {column} (already on an earlier line)", frame[column])


def known_ids(path: Path, frame: pd.DataFrame, column: str, ids: np.ndarray, known: np.ndarray) -> None:
    """Raises for the first id that is not in `known` (the users or movies file's ids)."""
    what = "users" if column == "user_id" else "movies"
    fail_at(path, ~np.isin(ids, known), f"unknown {column} (not in the {what} file)", frame[column])


def unix_day(path: Path, line: int, year: int, month: int, day: int) -> int:
    """Unix seconds at midnight UTC of a date, 0 before 1970; an impossible date is a format error."""
    try:
        date = datetime.date(year, month, day)
    except ValueError as err:
        raise MovieLensFormatError(path, line, f"invalid date: {err}") from err
    return max(0, calendar.timegm(date.timetuple()))  # pre-1970 releases start the clock at 0


def check_files(directory: Path, names: Sequence[str], dataset: str) -> None:
    """Raises FileNotFoundError unless every named file is in the directory."""
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a complete MovieLens {dataset} directory: missing {missing}"
        )


def genre_names_100k(directory: Path) -> list[str]:
    """The 100K genres in the order of `u.item`'s flags: from `u.genre`, else `GENRES_100K`."""
    path = directory / "u.genre"
    if not path.is_file():
        return list(GENRES_100K)
    names: list[str] = []
    for line, text in enumerate(path.read_bytes().decode("latin-1").split("\n"), start=1):
        text = text.strip()
        if not text:  # the official file ends with a blank line
            continue
        name, _, index = text.rpartition("|")
        if not name or index != str(len(names)):
            raise MovieLensFormatError(path, line, f"expected 'name|{len(names)}', got {text!r}")
        names.append(name)
    return names


# English month abbreviations, spelled out: calendar.month_abbr would follow the machine's locale.
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
_RELEASE_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_TITLE_YEAR = re.compile(r"\(([0-9]{4})\)\s*$")


def release_100k(path: Path, line: int, text: str) -> int:
    """'01-Jan-1995' -> Unix seconds at midnight UTC; '' (unknown) -> 0."""
    if not text:
        return 0
    date = _RELEASE_DATE.fullmatch(text)
    if date is None or date.group(2).lower() not in _MONTHS:
        raise MovieLensFormatError(path, line, f"release_date must look like 01-Jan-1995, got {text!r}")
    day, month, year = date.groups()
    return unix_day(path, line, int(year), _MONTHS[month.lower()], int(day))


def release_1m(path: Path, line: int, title: str) -> int:
    """'Toy Story (1995)' -> January 1st of the title's year in Unix seconds; no year -> 0."""
    year = _TITLE_YEAR.search(title)
    return unix_day(path, line, int(year.group(1)), 1, 1) if year else 0
