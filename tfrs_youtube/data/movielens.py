"""MovieLens 100K and 1M as an event log.

MovieLens records ratings, not a video service's traffic, so the loader maps each file onto the
tables of `schema.py` by fixed, documented rules, and leaves empty what MovieLens does not have.
The same sentences are stored in `EventLog.notes`, so whoever reads a log learns how it was made.

- users: `user_id` as in the file; `gender` M/F as given; `age` numeric: 100K has the exact age,
  1M only an age-group code (1, 18, 25, 35, 45, 50, 56; see `AGE_GROUPS_1M`), which is kept as
  the age because it is the group's lower bound (1 stands for "under 18"). `country` is a coarse
  region from the zip code, the paper's geography feature: "zip1:<first digit>" for a code that
  starts with five digits (a US ZIP code; its first digit is one of ten US regions), "other" for
  anything else (Canadian postal codes, malformed codes). `language` is "en" and `device`
  "unknown" because MovieLens has neither. Extra columns: `occupation` (a name; 1M's codes are
  mapped to the names of its README, `OCCUPATIONS_1M`) and the raw `zip_code`.
- videos: `video_id` = movie id; `topic` = the first listed genre (100K: the first set flag in
  `u.genre` order, which is alphabetical after "unknown"; 1M: the first genre in `movies.dat`),
  "unknown" when none is listed; all genres stay in the extra column `genres`, "|"-joined, and the
  title in `title`. `upload_time` = the release date in Unix seconds (100K: the `u.item` date at
  midnight UTC; 1M: January 1st of the year in the title), clipped to 0 for films released before
  1970 (the schema's clock starts at 0) and 0 when the date is missing. `language` is "en"
  (unknown in MovieLens) and `duration_s` a nominal `NOMINAL_DURATION_S` (6000 s, 100 minutes).
- watches: every rating is a watch of the movie by the user at the rating's Unix timestamp, with
  source "external" (MovieLens has no traffic source) and `watch_time_s` = rating / 5 x the
  nominal duration, a proxy that lets a liked movie count as watched longer, which is what the
  paper's watch-time weighting needs. The rating stays in the extra column `rating`. Rows keep
  the file's order (not sorted by time).
- searches: absent. MovieLens has no search log, so the table is empty (`empty_table`): no
  searches are invented.
- impressions: MovieLens does not record what was shown without being rated, so by default the
  table is empty too. With `impressions_per_watch=k > 0` the loaders derive them, never observe
  them, by `impressions.derive_impressions`: each rating is a clicked impression on its page (one
  user's ratings at one second t), and the page adds k unclicked impressions per rating of distinct
  other movies drawn in proportion to their ratings strictly before t, among movies released by t,
  rated by someone strictly before t and not rated by this user at or before t. Only events up to
  t are used (the ranker must not learn from the future), and `notes["impressions"]` then says
  "Derived, never observed" and spells out the rule, in place of "Absent".

Files are read as the GroupLens archives ship them: Latin-1 text, one record a line, 100K with
"|" (tab in `u.data`), 1M with "::". Any malformed line raises `MovieLensFormatError` naming the
file and the 1-based line, before a wrong value can reach a model. Parsing is vectorised (pandas'
C parser, then column-wise checks) so 100K loads in well under a second and 1M in a few.

`download_movielens` fetches the official zip, checks its SHA-256 against `ARCHIVES` and its
members with `zipfile.testzip`, and extracts it. The data may not be redistributed, so nothing
here ships it.
"""

from __future__ import annotations

import calendar
import csv
import dataclasses
import datetime
import hashlib
import io
import os
import re
import shutil
import urllib.request
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_youtube.data.impressions import derive_impressions
from tfrs_youtube.data.schema import EventLog, empty_table

NOMINAL_DURATION_S = 6000.0
LANGUAGE = "en"
DEVICE = "unknown"
WATCH_SOURCE = "external"
OTHER_REGION = "other"
UNKNOWN_TOPIC = "unknown"

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

NOTES = {
    "users": (
        "MovieLens users: gender as given, age as given (1M: the age-group code, the group's lower "
        "bound), country = 'zip1:<first digit>' of a US zip code or 'other', language 'en' and "
        "device 'unknown' because MovieLens records neither; occupation and zip_code are extra columns."
    ),
    "videos": (
        "MovieLens movies: topic = first listed genre ('unknown' if none; all in genres), "
        "upload_time = release date in Unix seconds (1M: January 1st of the title's year), 0 if "
        "missing or before 1970, language 'en' (unknown) and a nominal duration of "
        f"{NOMINAL_DURATION_S:g} s."
    ),
    "watches": (
        "Every MovieLens rating is a watch at its timestamp, source 'external' (MovieLens has no "
        f"traffic source), watch_time_s = rating / 5 x {NOMINAL_DURATION_S:g} s; the rating is "
        "kept in the rating column."
    ),
    "searches": "Absent: MovieLens has no search log, so this table is empty (no searches are invented).",
    # Replaced by `impressions.describe` when the loader is asked to derive impressions.
    "impressions": (
        "Absent: MovieLens records no impressions (what was shown but not rated), so this table "
        "is empty (no impressions are invented; load with impressions_per_watch > 0 to derive "
        "them from the ratings' past)."
    ),
}


class MovieLensFormatError(ValueError):
    """A MovieLens file is malformed; the message names the file, the 1-based line and the problem."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {problem}")


class ArchiveError(ValueError):
    """A MovieLens zip failed verification (checksum, integrity or expected members)."""


# --------------------------------------------------------------------------------------------
# Reading delimited files with line numbers


def _line_of(data: np.ndarray, offset: int) -> int:
    return int(np.count_nonzero(data[:offset] == 10)) + 1


def _read_fields(path: Path, sep: str, columns: Sequence[str], *, ascii_only: bool) -> pd.DataFrame:
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


def _fail_at(path: Path, mask: np.ndarray | pd.Series, problem: str, values: pd.Series | None = None) -> None:
    """Raises for the first row where `mask` holds, naming its line (and value, if given)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        row = int(np.flatnonzero(mask)[0])
        if values is not None:
            problem = f"{problem}, got {values.iloc[row]!r}"
        raise MovieLensFormatError(path, row + 1, problem)


def _integers(
    path: Path, frame: pd.DataFrame, column: str, valid: tuple[int, int] | None = None
) -> np.ndarray:
    """A column of non-negative integers, optionally within `valid` (inclusive bounds)."""
    values = frame[column]
    # ASCII digits only (isdigit alone accepts Latin-1's superscripts); 18 digits fit int64.
    ok = values.str.isascii() & values.str.isdigit() & (values.str.len() <= 18)
    _fail_at(path, ~ok, f"{column} must be a non-negative integer", values)
    numbers = values.astype(np.int64).to_numpy()
    if valid is not None:
        low, high = valid
        _fail_at(path, (numbers < low) | (numbers > high), f"{column} must be in {low}-{high}", values)
    return numbers


def _unique_ids(path: Path, frame: pd.DataFrame, column: str, ids: np.ndarray) -> None:
    duplicated = pd.Series(ids).duplicated().to_numpy()
    _fail_at(path, duplicated, f"duplicate {column} (already on an earlier line)", frame[column])


def _known(path: Path, frame: pd.DataFrame, column: str, ids: np.ndarray, known: np.ndarray) -> None:
    what = "users" if column == "user_id" else "movies"
    _fail_at(path, ~np.isin(ids, known), f"unknown {column} (not in the {what} file)", frame[column])


def _as_id(numbers: np.ndarray) -> pd.Series:
    # Ids are canonical decimal strings, so "007" in one file and "7" in another still match.
    return pd.Series(numbers).astype(str)


def _region(zip_codes: pd.Series) -> pd.Series:
    # The first digit of a US ZIP code is one of ten national areas: coarse enough to stand in
    # for the paper's country feature without a lookup table that MovieLens does not ship.
    us = zip_codes.str.match(r"[0-9]{5}").to_numpy(dtype=bool)
    return pd.Series(np.where(us, "zip1:" + zip_codes.str[:1], OTHER_REGION))


def _unix_day(path: Path, line: int, year: int, month: int, day: int) -> int:
    try:
        date = datetime.date(year, month, day)
    except ValueError as err:
        raise MovieLensFormatError(path, line, f"invalid date: {err}") from err
    return max(0, calendar.timegm(date.timetuple()))  # pre-1970 releases start the clock at 0


def _check_files(directory: Path, names: Sequence[str], dataset: str) -> None:
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a complete MovieLens {dataset} directory: missing {missing}"
        )


# --------------------------------------------------------------------------------------------
# Building the tables


def _users_table(
    frame: pd.DataFrame, ids: np.ndarray, age: np.ndarray, occupation: pd.Series
) -> pd.DataFrame:
    """`frame` is the users file as read (for gender and zip code)."""
    return pd.DataFrame(
        {
            "user_id": _as_id(ids),
            "country": _region(frame["zip_code"]),
            "language": LANGUAGE,
            "gender": frame["gender"].to_numpy(),
            "age": age.astype(np.float64),
            "device": DEVICE,
            "occupation": occupation.to_numpy(),
            "zip_code": frame["zip_code"].to_numpy(),
        }
    )


def _videos_table(
    ids: np.ndarray, titles: pd.Series, genres: list[list[str]], upload: list[int]
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "video_id": _as_id(ids),
            "upload_time": np.asarray(upload, dtype=np.int64),
            "language": LANGUAGE,
            "duration_s": NOMINAL_DURATION_S,
            "topic": [g[0] if g else UNKNOWN_TOPIC for g in genres],
            "genres": ["|".join(g) for g in genres],
            "title": titles.to_numpy(),
        }
    )


def _ratings(path: Path, frame: pd.DataFrame, user_ids: np.ndarray, movie_ids: np.ndarray) -> pd.DataFrame:
    users = _integers(path, frame, "user_id")
    movies = _integers(path, frame, "movie_id")
    rating = _integers(path, frame, "rating", (1, 5))
    time = _integers(path, frame, "timestamp")
    _known(path, frame, "user_id", users, user_ids)
    _known(path, frame, "movie_id", movies, movie_ids)
    return pd.DataFrame(
        {
            "user_id": _as_id(users),
            "video_id": _as_id(movies),
            "time": time,
            "watch_time_s": rating / 5.0 * NOMINAL_DURATION_S,
            "source": WATCH_SOURCE,
            "rating": rating.astype(np.int8),
        }
    )


def _event_log(name: str, users: pd.DataFrame, videos: pd.DataFrame, watches: pd.DataFrame,
               impressions_per_watch: int = 0, impressions_seed: int = 0) -> EventLog:
    # One string dtype throughout, object, as `empty_table` uses (pandas 3 would otherwise mix
    # its own string dtype into some columns, depending on how each was built).
    users, videos, watches = (
        t.astype({c: object for c in t.columns if not pd.api.types.is_numeric_dtype(t[c])})
        for t in (users, videos, watches)
    )
    log = EventLog(
        users=users, videos=videos, watches=watches, searches=empty_table("searches"),
        impressions=empty_table("impressions"), name=name, notes=dict(NOTES),
    )
    log.validate()
    if impressions_per_watch < 0:
        raise ValueError(f"impressions_per_watch must be >= 0, got {impressions_per_watch}")
    if impressions_per_watch > 0:  # derive_impressions validates the log it returns
        log = derive_impressions(log, impressions_per_watch, impressions_seed)
    return log


def _genre_names_100k(directory: Path) -> list[str]:
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


def load_100k(directory: str | os.PathLike, impressions_per_watch: int = 0, impressions_seed: int = 0) -> EventLog:
    """Loads MovieLens 100K (`u.data`, `u.item`, `u.user`, optional `u.genre`) as an `EventLog`.

    `impressions_per_watch` > 0 derives that many unclicked impressions per rating from the past
    (`derive_impressions`, seeded by `impressions_seed`); 0 leaves the impressions table empty.
    """
    directory = Path(directory)
    _check_files(directory, FILES_100K, "100K")
    genre_names = _genre_names_100k(directory)

    path = directory / "u.user"
    frame = _read_fields(path, "|", ("user_id", "age", "gender", "occupation", "zip_code"), ascii_only=False)
    user_ids = _integers(path, frame, "user_id")
    _unique_ids(path, frame, "user_id", user_ids)
    users = _users_table(frame, user_ids, _integers(path, frame, "age"), frame["occupation"])

    path = directory / "u.item"
    columns = ("movie_id", "title", "release_date", "video_release_date", "imdb_url", *genre_names)
    frame = _read_fields(path, "|", columns, ascii_only=False)
    movie_ids = _integers(path, frame, "movie_id")
    _unique_ids(path, frame, "movie_id", movie_ids)
    flags = frame[list(genre_names)]
    not_flag = ~flags.isin(["0", "1"]).to_numpy()
    _fail_at(path, not_flag.any(axis=1), "genre flags must be 0 or 1")
    is_genre = flags.to_numpy() == "1"
    genres = [[g for g, on in zip(genre_names, row) if on] for row in is_genre]
    upload = [
        _release_100k(path, line, text) for line, text in enumerate(frame["release_date"].tolist(), start=1)
    ]
    videos = _videos_table(movie_ids, frame["title"], genres, upload)

    path = directory / "u.data"
    frame = _read_fields(path, "\t", ("user_id", "movie_id", "rating", "timestamp"), ascii_only=True)
    watches = _ratings(path, frame, user_ids, movie_ids)
    return _event_log("ml-100k", users, videos, watches, impressions_per_watch, impressions_seed)


# English month abbreviations, spelled out: calendar.month_abbr would follow the machine's locale.
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
_RELEASE_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_TITLE_YEAR = re.compile(r"\(([0-9]{4})\)\s*$")


def _release_100k(path: Path, line: int, text: str) -> int:
    """'01-Jan-1995' -> Unix seconds at midnight UTC; '' (unknown) -> 0."""
    if not text:
        return 0
    date = _RELEASE_DATE.fullmatch(text)
    if date is None or date.group(2).lower() not in _MONTHS:
        raise MovieLensFormatError(path, line, f"release_date must look like 01-Jan-1995, got {text!r}")
    day, month, year = date.groups()
    return _unix_day(path, line, int(year), _MONTHS[month.lower()], int(day))


def load_1m(directory: str | os.PathLike, impressions_per_watch: int = 0, impressions_seed: int = 0) -> EventLog:
    """Loads MovieLens 1M (`ratings.dat`, `movies.dat`, `users.dat`) as an `EventLog`.

    `impressions_per_watch` and `impressions_seed` as in `load_100k`.
    """
    directory = Path(directory)
    _check_files(directory, FILES_1M, "1M")

    path = directory / "users.dat"
    frame = _read_fields(path, "::", ("user_id", "gender", "age", "occupation", "zip_code"), ascii_only=False)
    user_ids = _integers(path, frame, "user_id")
    _unique_ids(path, frame, "user_id", user_ids)
    age = _integers(path, frame, "age")
    not_a_group = ~np.isin(age, list(AGE_GROUPS_1M))
    _fail_at(path, not_a_group, f"age must be an age-group code {sorted(AGE_GROUPS_1M)}", frame["age"])
    codes = _integers(path, frame, "occupation")
    occupation = pd.Series([OCCUPATIONS_1M.get(int(c), f"occ{c}") for c in codes])
    users = _users_table(frame, user_ids, age, occupation)

    path = directory / "movies.dat"
    frame = _read_fields(path, "::", ("movie_id", "title", "genres"), ascii_only=False)
    movie_ids = _integers(path, frame, "movie_id")
    _unique_ids(path, frame, "movie_id", movie_ids)
    genres = [[g for g in text.split("|") if g] for text in frame["genres"].tolist()]
    upload = []
    for line, title in enumerate(frame["title"].tolist(), start=1):
        year = _TITLE_YEAR.search(title)
        upload.append(_unix_day(path, line, int(year.group(1)), 1, 1) if year else 0)
    videos = _videos_table(movie_ids, frame["title"], genres, upload)

    path = directory / "ratings.dat"
    frame = _read_fields(path, "::", ("user_id", "movie_id", "rating", "timestamp"), ascii_only=True)
    watches = _ratings(path, frame, user_ids, movie_ids)
    return _event_log("ml-1m", users, videos, watches, impressions_per_watch, impressions_seed)


def load_movielens(directory: str | os.PathLike, impressions_per_watch: int = 0,
                   impressions_seed: int = 0) -> EventLog:
    """Loads MovieLens 100K or 1M, telling them apart by their file names.

    Args:
      directory: the extracted archive's folder.
      impressions_per_watch: 0 (default) leaves the impressions table empty, as MovieLens has
        none; k > 0 derives, from the past only, k unclicked impressions per rating around each
        rating's clicked one (`impressions.derive_impressions`; the notes say so).
      impressions_seed: seeds that derivation (with each page's day).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"MovieLens directory {directory} does not exist")
    is_100k, is_1m = (directory / "u.data").is_file(), (directory / "ratings.dat").is_file()
    if is_100k and is_1m:
        raise MovieLensFormatError(
            directory, None, "holds both u.data (100K) and ratings.dat (1M); use load_100k or load_1m"
        )
    if is_100k:
        return load_100k(directory, impressions_per_watch, impressions_seed)
    if is_1m:
        return load_1m(directory, impressions_per_watch, impressions_seed)
    raise MovieLensFormatError(
        directory, None,
        f"not a MovieLens directory: expected 100K files {list(FILES_100K)} (+ u.genre) "
        f"or 1M files {list(FILES_1M)}",
    )


# --------------------------------------------------------------------------------------------
# Downloading the official archives


@dataclasses.dataclass(frozen=True)
class MovieLensArchive:
    """Where an official archive lives, its checksums and the members the loader needs."""

    url: str
    sha256: str
    md5: str  # as GroupLens publishes it (<url>.md5); kept for reference, SHA-256 is checked
    members: tuple[str, ...]


# MD5s: GroupLens' published <zip>.md5 files. SHA-256s: not published by GroupLens; these are the
# values pinned by independent public projects (e.g. TensorFlow's on-device recommendation example
# and keras-rs for ml-1m, several dataset loaders for ml-100k), and the ml-100k archive's u.data
# matches the SHA-256 those projects also record.
ARCHIVES = {
    "ml-100k": MovieLensArchive(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        md5="0e33842e24a9c977be4e0107933c0723",
        members=(*FILES_100K, "u.genre"),
    ),
    "ml-1m": MovieLensArchive(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        md5="c4d9eecfca2ab87c1945afe126590906",
        members=FILES_1M,
    ),
}


def _archive(name: str) -> MovieLensArchive:
    if name not in ARCHIVES:
        raise ValueError(f"unknown MovieLens archive {name!r}; expected one of {list(ARCHIVES)}")
    return ARCHIVES[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_archive(zip_path: str | os.PathLike, name: str) -> None:
    """Checks a downloaded zip: SHA-256 as pinned in `ARCHIVES`, CRCs, and the needed members."""
    archive, zip_path = _archive(name), Path(zip_path)
    actual = _sha256(zip_path)
    if actual != archive.sha256:
        raise ArchiveError(
            f"{zip_path}: SHA-256 {actual} does not match the expected {archive.sha256} for {name}"
        )
    try:
        with zipfile.ZipFile(zip_path) as zf:
            damaged = zf.testzip()
            names = set(zf.namelist())
    except zipfile.BadZipFile as err:
        raise ArchiveError(f"{zip_path}: not a valid zip archive ({err})") from err
    if damaged is not None:
        raise ArchiveError(f"{zip_path}: member {damaged!r} is damaged (CRC mismatch)")
    missing = [m for m in archive.members if f"{name}/{m}" not in names]
    if missing:
        raise ArchiveError(f"{zip_path}: missing members {[f'{name}/{m}' for m in missing]}")


def _fetch(url: str, destination: Path) -> None:
    """Downloads `url` to `destination` (tests replace this: the machine may be offline)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as file:
        shutil.copyfileobj(response, file)


def _extract(zip_path: Path, name: str, target: Path) -> Path:
    # Extract only the dataset's own folder, into a scratch folder first, so that an interrupted
    # extraction never looks like a complete dataset; zipfile drops ".." and absolute paths.
    scratch = target / f".{name}.extracting"
    shutil.rmtree(scratch, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as zf:
        for member in zf.namelist():
            if member.startswith(f"{name}/") and ".." not in Path(member).parts:
                zf.extract(member, scratch)
    final = target / name
    shutil.rmtree(final, ignore_errors=True)
    (scratch / name).replace(final)
    shutil.rmtree(scratch, ignore_errors=True)
    return final


def download_movielens(name: str, target_dir: str | os.PathLike) -> Path:
    """Downloads, verifies and extracts an official MovieLens zip; returns the extracted folder.

    Does nothing when `target_dir/<name>` already holds the dataset. A zip already at
    `target_dir/<name>.zip` (e.g. fetched by hand on an offline machine) is verified and used;
    a downloaded zip that fails verification is deleted.

    Args:
      name: "ml-100k" or "ml-1m".
      target_dir: where `<name>.zip` and the folder `<name>/` go.
    """
    archive, target = _archive(name), Path(target_dir)
    folder = target / name
    if all((folder / m).is_file() for m in archive.members):
        return folder
    target.mkdir(parents=True, exist_ok=True)
    zip_path = target / f"{name}.zip"
    if zip_path.exists():
        verify_archive(zip_path, name)
    else:
        partial = target / f"{name}.zip.part"
        try:
            _fetch(archive.url, partial)
        except OSError as err:  # urllib.error.URLError is an OSError
            partial.unlink(missing_ok=True)
            raise OSError(
                f"could not download {archive.url} ({err}); without internet, fetch it elsewhere and "
                f"put it at {zip_path}"
            ) from err
        try:
            verify_archive(partial, name)
        except ArchiveError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(zip_path)
    return _extract(zip_path, name, target)
