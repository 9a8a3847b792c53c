"""MovieLens 100K and 1M as an event log.

MovieLens records ratings, not a video service's traffic, so the loader maps each file onto the
tables of `schema.py` by fixed, documented rules, and leaves empty what MovieLens does not have.
The same sentences are stored in `EventLog.notes`, so whoever reads a log learns how it was made.

- users: `user_id` as in the file; `gender` M/F as given; `age` numeric: 100K has the exact age,
  1M only an age-group code (1, 18, 25, 35, 45, 50, 56; see `movielens_files.AGE_GROUPS_1M`), which is kept as
  the age because it is the group's lower bound (1 stands for "under 18"). `country` is a coarse
  region from the zip code, the paper's geography feature: "zip1:<first digit>" for a code that
  starts with five digits (a US ZIP code; its first digit is one of ten US regions), "other" for
  anything else (Canadian postal codes, malformed codes). `language` is "en" and `device`
  "unknown" because MovieLens has neither. Extra columns: `occupation` (a name; 1M's codes are
  mapped to the names of its README, `movielens_files.OCCUPATIONS_1M`) and the raw `zip_code`.
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

The files are read strictly by `movielens_files` (a malformed line names its file and line), and
`movielens_download` fetches and verifies the official archives.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from tfrs_youtube.data.impressions import derive_impressions
from tfrs_youtube.data.movielens_files import (
    AGE_GROUPS_1M,
    FILES_1M,
    FILES_100K,
    OCCUPATIONS_1M,
    MovieLensFormatError,
    check_files,
    fail_at,
    genre_names_100k,
    integers,
    known_ids,
    read_fields,
    release_1m,
    release_100k,
    unique_ids,
)
from tfrs_youtube.data.schema import EventLog, empty_table

NOMINAL_DURATION_S = 6000.0
LANGUAGE = "en"
DEVICE = "unknown"
WATCH_SOURCE = "external"
OTHER_REGION = "other"
UNKNOWN_TOPIC = "unknown"

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


def _as_id(numbers: np.ndarray) -> pd.Series:
    # Ids are canonical decimal strings, so "007" in one file and "7" in another still match.
    return pd.Series(numbers).astype(str)


def _region(zip_codes: pd.Series) -> pd.Series:
    # The first digit of a US ZIP code is one of ten national areas: coarse enough to stand in
    # for the paper's country feature without a lookup table that MovieLens does not ship.
    us = zip_codes.str.match(r"[0-9]{5}").to_numpy(dtype=bool)
    return pd.Series(np.where(us, "zip1:" + zip_codes.str[:1], OTHER_REGION))


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
    users = integers(path, frame, "user_id")
    movies = integers(path, frame, "movie_id")
    rating = integers(path, frame, "rating", (1, 5))
    time = integers(path, frame, "timestamp")
    known_ids(path, frame, "user_id", users, user_ids)
    known_ids(path, frame, "movie_id", movies, movie_ids)
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


def load_100k(directory: str | os.PathLike, impressions_per_watch: int = 0, impressions_seed: int = 0) -> EventLog:
    """Loads MovieLens 100K (`u.data`, `u.item`, `u.user`, optional `u.genre`) as an `EventLog`.

    `impressions_per_watch` > 0 derives that many unclicked impressions per rating from the past
    (`derive_impressions`, seeded by `impressions_seed`); 0 leaves the impressions table empty.
    """
    directory = Path(directory)
    check_files(directory, FILES_100K, "100K")
    genre_names = genre_names_100k(directory)

    path = directory / "u.user"
    frame = read_fields(path, "|", ("user_id", "age", "gender", "occupation", "zip_code"), ascii_only=False)
    user_ids = integers(path, frame, "user_id")
    unique_ids(path, frame, "user_id", user_ids)
    users = _users_table(frame, user_ids, integers(path, frame, "age"), frame["occupation"])

    path = directory / "u.item"
    columns = ("movie_id", "title", "release_date", "video_release_date", "imdb_url", *genre_names)
    frame = read_fields(path, "|", columns, ascii_only=False)
    movie_ids = integers(path, frame, "movie_id")
    unique_ids(path, frame, "movie_id", movie_ids)
    flags = frame[list(genre_names)]
    not_flag = ~flags.isin(["0", "1"]).to_numpy()
    fail_at(path, not_flag.any(axis=1), "genre flags must be 0 or 1")
    is_genre = flags.to_numpy() == "1"
    genres = [[g for g, on in zip(genre_names, row) if on] for row in is_genre]
    upload = [
        release_100k(path, line, text) for line, text in enumerate(frame["release_date"].tolist(), start=1)
    ]
    videos = _videos_table(movie_ids, frame["title"], genres, upload)

    path = directory / "u.data"
    frame = read_fields(path, "\t", ("user_id", "movie_id", "rating", "timestamp"), ascii_only=True)
    watches = _ratings(path, frame, user_ids, movie_ids)
    return _event_log("ml-100k", users, videos, watches, impressions_per_watch, impressions_seed)


def load_1m(directory: str | os.PathLike, impressions_per_watch: int = 0, impressions_seed: int = 0) -> EventLog:
    """Loads MovieLens 1M (`ratings.dat`, `movies.dat`, `users.dat`) as an `EventLog`.

    `impressions_per_watch` and `impressions_seed` as in `load_100k`.
    """
    directory = Path(directory)
    check_files(directory, FILES_1M, "1M")

    path = directory / "users.dat"
    frame = read_fields(path, "::", ("user_id", "gender", "age", "occupation", "zip_code"), ascii_only=False)
    user_ids = integers(path, frame, "user_id")
    unique_ids(path, frame, "user_id", user_ids)
    age = integers(path, frame, "age")
    not_a_group = ~np.isin(age, list(AGE_GROUPS_1M))
    fail_at(path, not_a_group, f"age must be an age-group code {sorted(AGE_GROUPS_1M)}", frame["age"])
    codes = integers(path, frame, "occupation")
    occupation = pd.Series([OCCUPATIONS_1M.get(int(c), f"occ{c}") for c in codes])
    users = _users_table(frame, user_ids, age, occupation)

    path = directory / "movies.dat"
    frame = read_fields(path, "::", ("movie_id", "title", "genres"), ascii_only=False)
    movie_ids = integers(path, frame, "movie_id")
    unique_ids(path, frame, "movie_id", movie_ids)
    genres = [[g for g in text.split("|") if g] for text in frame["genres"].tolist()]
    upload = [release_1m(path, line, title) for line, title in enumerate(frame["title"].tolist(), start=1)]
    videos = _videos_table(movie_ids, frame["title"], genres, upload)

    path = directory / "ratings.dat"
    frame = read_fields(path, "::", ("user_id", "movie_id", "rating", "timestamp"), ascii_only=True)
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
