"""Derived impressions: clicks are the watches, unclicked ones come from the past only."""

import tfrs_youtube  # noqa: F401, I001  (first: sets TF_USE_LEGACY_KERAS before anything loads Keras)

import dataclasses
import time

import numpy as np
import pandas as pd
import pytest

from conftest import MOVIELENS_100K, MOVIELENS_FIXTURES
from tfrs_youtube.data.impressions import DAY_S, derive_impressions
from tfrs_youtube.data.movielens import load_movielens
from tfrs_youtube.data.schema import SCHEMA, EventLog, empty_table
from tfrs_youtube.inputs import arrays
from tfrs_youtube.pipeline import ExampleConfig, build_examples
from tfrs_youtube.data.synthetic import SyntheticConfig, generate

MINI_100K = MOVIELENS_FIXTURES / "ml-100k-mini"
MINI_1M = MOVIELENS_FIXTURES / "ml-1m-mini"
needs_real_100k = pytest.mark.skipif(
    not (MOVIELENS_100K / "u.data").is_file(),
    reason=f"MovieLens 100K not found at {MOVIELENS_100K} (set TFRS_YOUTUBE_MOVIELENS_100K to its folder)",
)


@pytest.fixture(scope="module")
def watch_log() -> EventLog:
    """The tiny simulated log without its impressions: a MovieLens-like log (30 days, ~5k watches)."""
    log = generate(SyntheticConfig.tiny(seed=3))
    return dataclasses.replace(log, impressions=empty_table("impressions"), notes={})


@pytest.fixture(scope="module")
def real_100k() -> EventLog:
    if not (MOVIELENS_100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {MOVIELENS_100K} (set TFRS_YOUTUBE_MOVIELENS_100K)")
    return load_movielens(MOVIELENS_100K)


def _log(watches: list[tuple[str, str, int]], upload: dict[str, int] | None = None) -> EventLog:
    """A hand-made log from (user, video, time) watches; every video uploaded at 0 unless given."""
    upload = upload or {}
    users = sorted({u for u, _, _ in watches})
    videos = sorted({v for _, v, _ in watches} | set(upload))
    return EventLog(
        users=pd.DataFrame({"user_id": users, "country": "", "language": "", "gender": "", "age": 30.0,
                            "device": ""}),
        videos=pd.DataFrame({"video_id": videos, "upload_time": [upload.get(v, 0) for v in videos],
                             "language": "", "duration_s": 60.0, "topic": ""}),
        watches=pd.DataFrame({"user_id": [u for u, _, _ in watches], "video_id": [v for _, v, _ in watches],
                              "time": [t for _, _, t in watches], "watch_time_s": 30.0, "source": "external"}),
        searches=empty_table("searches"), impressions=empty_table("impressions"), name="hand",
    ).validate()


def _check_no_future(log: EventLog, impressions: pd.DataFrame) -> None:
    """Every unclicked impression at t: uploaded by t, watched by someone strictly before t, not
    watched by this user at or before t (brute force over the watches)."""
    shown = impressions[impressions.clicked == 0]
    first_watch = log.watches.groupby("video_id")["time"].min()
    first_pair = log.watches.groupby(["user_id", "video_id"])["time"].min()
    upload = log.videos.set_index("video_id")["upload_time"]
    assert (upload.reindex(shown.video_id).to_numpy() <= shown.time.to_numpy()).all()
    assert (first_watch.reindex(shown.video_id).to_numpy() < shown.time.to_numpy()).all()
    own = first_pair.reindex(pd.MultiIndex.from_arrays([shown.user_id, shown.video_id])).to_numpy()
    assert not (own <= shown.time.to_numpy()).any()  # NaN (never watched) compares False


def _pages(impressions: pd.DataFrame) -> pd.core.groupby.DataFrameGroupBy:
    return impressions.groupby(["user_id", "time"])


# ------------------------------------------------------------------------------------------
# The rule, on the tiny simulated log and on the MovieLens fixtures


@pytest.mark.parametrize("shown", [1, 4])
def test_clicked_impressions_are_exactly_the_watches(watch_log, shown):
    impressions = derive_impressions(watch_log, shown).impressions
    clicked = impressions[impressions.clicked == 1][["user_id", "video_id", "time", "watch_time_s"]]
    watches = watch_log.watches[["user_id", "video_id", "time", "watch_time_s"]]
    key = ["user_id", "video_id", "time", "watch_time_s"]
    pd.testing.assert_frame_equal(clicked.sort_values(key).reset_index(drop=True),
                                  watches.sort_values(key).reset_index(drop=True), check_dtype=False)
    assert (impressions[impressions.clicked == 0].watch_time_s == 0).all()


@pytest.mark.parametrize("shown", [1, 4])
def test_unclicked_impressions_use_no_future(watch_log, shown):
    derived = derive_impressions(watch_log, shown)
    assert (derived.impressions.clicked == 0).sum() > 0
    _check_no_future(watch_log, derived.impressions)


def test_pages_hold_distinct_videos_and_at_most_shown_per_watch(watch_log):
    impressions = derive_impressions(watch_log, 4).impressions
    pages = _pages(impressions)
    assert (pages["video_id"].nunique() == pages.size()).all()
    clicked, size = pages["clicked"].sum(), pages.size()
    assert ((size - clicked) <= 4 * clicked).all()
    # The simulator's catalogue is large, so after the first day nearly every page is full.
    later = clicked.index.get_level_values("time") >= DAY_S
    assert ((size - clicked)[later] == 4 * clicked[later]).mean() > 0.99


def test_truncation_at_a_day_boundary_changes_no_earlier_impression(watch_log):
    """The strongest "no future" check: events after T cannot move any impression before T."""
    full = derive_impressions(watch_log, 4, seed=5).impressions
    for day in (3, 11, 20):
        cut = day * DAY_S
        truncated_log = dataclasses.replace(
            watch_log, watches=watch_log.watches[watch_log.watches.time < cut],
            searches=watch_log.searches[watch_log.searches.time < cut])
        truncated = derive_impressions(truncated_log, 4, seed=5).impressions
        before = full[full.time < cut].reset_index(drop=True)
        assert len(before) > 0 and len(truncated) == len(before)
        pd.testing.assert_frame_equal(truncated.reset_index(drop=True), before)


def test_same_seed_same_impressions_other_seed_other_ones(watch_log):
    first, again = derive_impressions(watch_log, 3, seed=1), derive_impressions(watch_log, 3, seed=1)
    pd.testing.assert_frame_equal(first.impressions, again.impressions)
    other = derive_impressions(watch_log, 3, seed=2).impressions
    assert len(other) == len(first.impressions)  # same pages, same availability...
    assert not other.video_id.equals(first.impressions.video_id)  # ...different draws


def test_result_is_independent_of_row_order(watch_log):
    shuffled = dataclasses.replace(
        watch_log, watches=watch_log.watches.sample(frac=1.0, random_state=0).reset_index(drop=True),
        videos=watch_log.videos.sample(frac=1.0, random_state=1).reset_index(drop=True))
    pd.testing.assert_frame_equal(derive_impressions(shuffled, 2).impressions,
                                  derive_impressions(watch_log, 2).impressions)


def test_input_is_not_mutated_and_output_validates(watch_log):
    before = {name: table.copy() for name, table in watch_log.tables().items()}
    notes = dict(watch_log.notes)
    derived = derive_impressions(watch_log, 4)
    for name, table in watch_log.tables().items():
        pd.testing.assert_frame_equal(table, before[name])
    assert watch_log.notes == notes and watch_log.impressions.empty
    derived.validate()
    assert list(derived.impressions.columns) == list(SCHEMA["impressions"])
    assert derived.name == watch_log.name
    for name in ("users", "videos", "watches", "searches"):
        pd.testing.assert_frame_equal(getattr(derived, name), getattr(watch_log, name))
        assert getattr(derived, name) is not getattr(watch_log, name)


def test_notes_say_derived_and_observed_impressions_are_not_overwritten_silently(watch_log):
    derived = derive_impressions(watch_log, 4, seed=7)
    note = derived.notes["impressions"]
    assert note.startswith("Derived, never observed") and "strictly before t" in note and "seed=7" in note
    simulated = generate(SyntheticConfig.tiny(seed=3))
    with pytest.raises(ValueError, match="already has"):
        derive_impressions(simulated, 4)
    assert len(derive_impressions(simulated, 1, replace_observed=True).impressions) > 0
    with pytest.raises(ValueError, match="shown_per_watch"):
        derive_impressions(watch_log, -1)


# ------------------------------------------------------------------------------------------
# Hand-made logs: the exact semantics


def test_popularity_to_date_weights_and_availability():
    # Before t=100: A watched 3 times, B once, C once but uploaded only at 1000 (a rating before
    # the release date, as MovieLens has); D and E are watched only at t=100 (not strictly before).
    background = [("b1", "A", 10), ("b2", "A", 11), ("b3", "A", 12), ("b4", "B", 13), ("b5", "C", 14)]
    targets = [(f"t{i:04d}", "DE"[i % 2], 100) for i in range(4000)]
    log = _log(background + targets, upload={"C": 1000})
    one = derive_impressions(log, 1).impressions
    shown = one[(one.clicked == 0) & (one.time == 100)].video_id
    assert len(shown) == 4000 and set(shown) == {"A", "B"}
    assert (shown == "A").mean() == pytest.approx(0.75, abs=0.03)  # 3 watches of A to 1 of B
    many = derive_impressions(log, 4).impressions
    page = many[(many.user_id == "t0000")]  # watched D
    assert sorted(page.video_id) == ["A", "B", "D"]  # only two qualify: the page shows fewer
    # The first watch of the log has no past at all: its page shows nothing else.
    assert len(many[many.time == 10]) == 1


def test_same_second_watches_form_one_page_without_clicked_videos_unclicked():
    past = [("b1", "A", 1), ("b2", "B", 2), ("b3", "C", 3), ("b4", "D", 4), ("b5", "E", 5), ("b6", "F", 6)]
    # u watches A and B in the same second, C earlier: none of them may be shown unclicked.
    log = _log(past + [("u", "C", 50), ("u", "A", 100), ("u", "B", 100)])
    impressions = derive_impressions(log, 4).impressions
    page = impressions[(impressions.user_id == "u") & (impressions.time == 100)]
    assert sorted(page[page.clicked == 1].video_id) == ["A", "B"]
    assert sorted(page[page.clicked == 0].video_id) == ["D", "E", "F"]  # 8 asked, 3 qualify
    assert page.video_id.is_unique


def test_zero_shown_gives_only_clicks_and_an_empty_log_gives_an_empty_table():
    log = _log([("a", "A", 1), ("b", "A", 2)])
    impressions = derive_impressions(log, 0).impressions
    assert len(impressions) == 2 and (impressions.clicked == 1).all()
    empty = dataclasses.replace(log, watches=log.watches.iloc[:0])
    assert derive_impressions(empty, 4).impressions.empty


# ------------------------------------------------------------------------------------------
# Through the MovieLens loaders


@pytest.mark.parametrize("directory", [MINI_100K, MINI_1M])
def test_loader_derives_on_request_and_keeps_absent_by_default(directory):
    plain = load_movielens(directory)
    assert plain.impressions.empty and plain.notes["impressions"].startswith("Absent")
    derived = load_movielens(directory, impressions_per_watch=2)
    assert derived.notes["impressions"].startswith("Derived, never observed")
    assert derived.name == plain.name and (derived.impressions.clicked == 1).sum() == len(plain.watches)
    _check_no_future(plain, derived.impressions)
    pd.testing.assert_frame_equal(derived.impressions, derive_impressions(plain, 2).impressions)
    with pytest.raises(ValueError, match="impressions_per_watch"):
        load_movielens(directory, impressions_per_watch=-1)


# ------------------------------------------------------------------------------------------
# The real MovieLens 100K (read from a path; never copied into the repository)


@pytest.mark.slow
@needs_real_100k
def test_real_100k_derives_fast_without_future_and_feeds_the_ranker(real_100k, tmp_path):
    start = time.perf_counter()
    derived = derive_impressions(real_100k, 4, seed=0)
    seconds = time.perf_counter() - start
    assert seconds < 10, f"deriving took {seconds:.1f} s"
    impressions = derived.impressions
    assert (impressions.clicked == 1).sum() == 100_000
    # A few pages at the very start of the log have (almost) no past; all others are full.
    assert impressions.clicked.mean() == pytest.approx(1 / 5, abs=0.005)
    _check_no_future(real_100k, impressions)
    pages = _pages(impressions)
    assert (pages["video_id"].nunique() == pages.size()).all()

    examples = build_examples(derived, str(tmp_path / "examples"), ExampleConfig(), say=None)
    splits = ("fit", "calibration", "test")
    assert sum(examples.num_impressions(split) for split in splits) == len(impressions)
    pages = [arrays(examples, "ranking", split, ("clicked", "impression_mask")) for split in splits]
    clicked = np.concatenate([p["clicked"][p["impression_mask"]] for p in pages])
    assert clicked.mean() == pytest.approx(1 / 5, abs=0.005)
    # Pages as the ranker sees them: one user at one second, one click per watch in it.
    for p in pages:
        assert (p["impression_mask"].sum(axis=1) <= 5 * p["clicked"].sum(axis=1)).all()


@needs_real_100k
def test_real_100k_truncation_changes_no_earlier_impression(real_100k):
    full = derive_impressions(real_100k, 4, seed=1).impressions
    days = real_100k.watches.time // DAY_S
    cut = int(days.quantile(0.5)) * DAY_S
    truncated_log = dataclasses.replace(real_100k, watches=real_100k.watches[real_100k.watches.time < cut])
    truncated = derive_impressions(truncated_log, 4, seed=1).impressions
    pd.testing.assert_frame_equal(truncated.reset_index(drop=True), full[full.time < cut].reset_index(drop=True))
