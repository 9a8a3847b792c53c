"""MovieLens loaders: the documented mapping, line-precise errors, format detection."""

import tfrs_youtube  # noqa: F401  (first: sets TF_USE_LEGACY_KERAS before anything loads Keras)

import os
import shutil
import time
from pathlib import Path

import pytest

from tfrs_youtube.data.movielens import load_1m, load_100k, load_movielens
from tfrs_youtube.data.movielens_files import MovieLensFormatError
from tfrs_youtube.data.schema import TABLES

from conftest import MOVIELENS_FIXTURES as FIXTURES  # noqa: E402  (laid out from *.fixture)
MINI_100K = FIXTURES / "ml-100k-mini"
MINI_1M = FIXTURES / "ml-1m-mini"
REAL_100K = Path(
    os.environ.get(
        "TFRS_YOUTUBE_MOVIELENS_100K",
        Path(__file__).resolve().parents[2] / "shared/data/movielens/ml-100k",
    )
)


def _row(table, key, value):
    rows = table[table[key] == value]
    assert len(rows) == 1, (key, value)
    return rows.iloc[0]


# ------------------------------------------------------------------------------------------
# The mapping


def test_100k_fixture_maps_as_documented():
    log = load_100k(MINI_100K)
    assert log.name == "ml-100k"
    assert (len(log.users), len(log.videos), len(log.watches)) == (4, 5, 10)

    user = _row(log.users, "user_id", "1")
    assert (user.country, user.gender, user.age, user.occupation) == ("zip1:5", "F", 31.0, "engineer")
    assert (user.language, user.device) == ("en", "unknown")
    assert _row(log.users, "user_id", "2").country == "zip1:0"  # leading zero kept
    assert _row(log.users, "user_id", "3").country == "other"  # Canadian postal code

    movie = _row(log.videos, "video_id", "1")
    assert movie.topic == "Comedy" and movie.genres == "Comedy|Romance"
    assert movie.upload_time == 788918400  # 1995-01-01T00:00:00Z
    assert (movie.language, movie.duration_s) == ("en", 6000.0)
    assert _row(log.videos, "video_id", "2").upload_time == 0  # 1962: before the clock starts
    unknown = _row(log.videos, "video_id", "3")
    assert (unknown.topic, unknown.upload_time) == ("unknown", 0)  # no genre, no date
    latin1 = _row(log.videos, "video_id", "4")
    assert latin1.title == "Café Lumière (1997)"
    assert (latin1.topic, latin1.upload_time) == ("Action", 867974400)  # "4-Jul-1997"
    assert _row(log.videos, "video_id", "5").topic == "Animation"

    watch = log.watches.iloc[0]  # file order is kept
    assert (watch.user_id, watch.video_id, watch.time) == ("1", "1", 880000100)
    assert (watch.rating, watch.watch_time_s, watch.source) == (5, 6000.0, "external")
    assert log.watches.iloc[3].watch_time_s == pytest.approx(1200.0)  # rating 1 -> 1/5 of 6000 s


def test_1m_fixture_maps_as_documented():
    log = load_1m(MINI_1M)
    assert log.name == "ml-1m"
    assert (len(log.users), len(log.videos), len(log.watches)) == (5, 5, 9)

    user = _row(log.users, "user_id", "1")
    assert (user.gender, user.age, user.occupation, user.country) == ("F", 1.0, "K-12 student", "zip1:4")
    assert _row(log.users, "user_id", "3").country == "zip1:5"  # ZIP+4
    assert _row(log.users, "user_id", "4").country == "other"
    assert _row(log.users, "user_id", "5").occupation == "occ21"  # not in the README's table

    movie = _row(log.videos, "video_id", "1")
    assert (movie.topic, movie.genres) == ("Animation", "Animation|Children's|Comedy")
    assert movie.upload_time == 788918400  # "(1995)" -> 1995-01-01
    assert _row(log.videos, "video_id", "2").upload_time == 0  # 1969
    assert _row(log.videos, "video_id", "3").upload_time == 0  # no year in the title
    latin1 = _row(log.videos, "video_id", "4")
    assert (latin1.title, latin1.upload_time) == ("Été Perdu (L') (2000)", 946684800)

    watch = log.watches.iloc[1]
    assert (watch.user_id, watch.video_id, watch.time, watch.watch_time_s) == ("1", "5", 978300800, 6000.0)


@pytest.mark.parametrize("directory", [MINI_100K, MINI_1M])
def test_absent_tables_are_empty_and_every_table_has_a_note(directory):
    log = load_movielens(directory)
    assert log.searches.empty and log.impressions.empty
    assert set(log.notes) == set(TABLES)
    assert "Absent" in log.notes["searches"] and "Absent" in log.notes["impressions"]
    log.validate()


# ------------------------------------------------------------------------------------------
# Format detection


def test_format_is_detected_by_file_names(tmp_path):
    assert load_movielens(MINI_100K).name == "ml-100k"
    assert load_movielens(str(MINI_1M)).name == "ml-1m"
    with pytest.raises(MovieLensFormatError, match=r"u\.data.*ratings\.dat"):
        load_movielens(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_movielens(tmp_path / "nowhere")


def test_missing_companion_file_is_named(tmp_path):
    copy = shutil.copytree(MINI_1M, tmp_path / "ml-1m")
    (copy / "users.dat").unlink()
    with pytest.raises(FileNotFoundError, match="users.dat"):
        load_movielens(copy)


# ------------------------------------------------------------------------------------------
# Malformed lines: each case replaces one line of a fixture file


def _with_line(tmp_path, source, file, line, content: bytes):
    copy = shutil.copytree(source, tmp_path / source.name)
    lines = (copy / file).read_bytes().split(b"\n")
    lines[line - 1] = content
    (copy / file).write_bytes(b"\n".join(lines))
    return copy


MALFORMED = [
    (MINI_100K, "u.data", 2, b"1\t4\t3", "expected 4 fields, found 3"),
    (MINI_100K, "u.data", 3, b"2\t2\tfour\t879999000", "rating must be a non-negative integer, got 'four'"),
    (MINI_100K, "u.data", 4, b"2\t5\t6\t880100000", "rating must be in 1-5, got '6'"),
    (MINI_100K, "u.data", 5, b"3\t1\t2\t88100000x", "timestamp must be a non-negative integer"),
    (MINI_100K, "u.data", 6, b"3\t3\t3\t-881000500", "timestamp must be a non-negative integer"),
    (MINI_100K, "u.data", 7, b"99\t5\t5\t881000900", "unknown user_id (not in the users file), got '99'"),
    (MINI_100K, "u.data", 8, b"4\t77\t4\t882000000", "unknown movie_id (not in the movies file), got '77'"),
    (MINI_100K, "u.data", 9, b"4\t2\t1\t88200\x000300", "bad encoding: byte 0x00"),
    (MINI_100K, "u.data", 10, b"1\t5\t\xe9\t880000300", "bad encoding: byte 0xe9"),
    (MINI_100K, "u.data", 2, b"", "empty line"),
    (MINI_100K, "u.user", 2, b"2|sixty|M|retired|02134", "age must be a non-negative integer"),
    (MINI_100K, "u.user", 3, b"1|19|F|student|K1A0B1", "duplicate user_id"),
    (MINI_100K, "u.item", 2, b"2|Night Train (1962)|15-Mar-1962", "expected 24 fields, found 3"),
    (MINI_100K, "u.item", 5, b"5|X (1998)|20-Feb-1998||u|0|0|0|2" + b"|0" * 15, "genre flags"),
    (MINI_100K, "u.item", 1, b"1|X (1995)|1995-01-01||u" + b"|0" * 19, "release_date must look like"),
    (MINI_100K, "u.item", 1, b"1|X (1995)|31-Feb-1995||u" + b"|0" * 19, "invalid date"),
    (MINI_1M, "ratings.dat", 2, b"1::5::5", "expected 4 fields, found 3"),
    (MINI_1M, "ratings.dat", 3, b"2::2::0::978298000", "rating must be in 1-5, got '0'"),
    (MINI_1M, "ratings.dat", 4, b"2::4::2.5::978302000", "rating must be a non-negative integer, got '2.5'"),
    (MINI_1M, "ratings.dat", 5, b"3::30::1::978310000", "unknown movie_id"),
    (MINI_1M, "users.dat", 2, b"2::M::30::16::70072", "age must be an age-group code"),
    (MINI_1M, "movies.dat", 3, b"3::Untitled Project", "expected 3 fields, found 2"),
    (MINI_1M, "movies.dat", 4, b"x4::Ete (2000)::Drama", "movie_id must be a non-negative integer"),
]


@pytest.mark.parametrize(
    "source, file, line, content, problem", MALFORMED, ids=[f"{c[1]}:{c[2]}:{c[4][:24]}" for c in MALFORMED]
)
def test_malformed_line_names_file_and_line(tmp_path, source, file, line, content, problem):
    directory = _with_line(tmp_path, source, file, line, content)
    with pytest.raises(MovieLensFormatError) as caught:
        load_movielens(directory)
    error = caught.value
    assert Path(error.path) == directory / file
    assert error.line == line
    assert f"{file}, line {line}: " in str(error)
    assert problem in str(error)


def test_crlf_line_endings_and_a_missing_final_newline_are_accepted(tmp_path):
    copy = shutil.copytree(MINI_1M, tmp_path / "ml-1m")
    for path in copy.iterdir():
        path.write_bytes(path.read_bytes().rstrip(b"\n").replace(b"\n", b"\r\n"))
    assert load_movielens(copy).watches.equals(load_movielens(MINI_1M).watches)


# ------------------------------------------------------------------------------------------
# The real MovieLens 100K (read from a path; never copied into the repository)


@pytest.mark.skipif(
    not (REAL_100K / "u.data").is_file(),
    reason=f"MovieLens 100K not found at {REAL_100K} (set TFRS_YOUTUBE_MOVIELENS_100K to its folder)",
)
def test_real_100k_loads_and_validates():
    start = time.perf_counter()
    log = load_movielens(REAL_100K)
    seconds = time.perf_counter() - start
    assert (len(log.users), len(log.videos), len(log.watches)) == (943, 1682, 100000)
    log.validate()
    assert log.watches.source.eq("external").all()
    assert set(log.watches.rating) == {1, 2, 3, 4, 5}
    assert seconds < 10, f"loading took {seconds:.1f} s"
