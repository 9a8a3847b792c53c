"""Tests of the synthetic YouTube simulator: schema, determinism, and each planted property.

Statistical properties are measured on a modest log (1,000 users, 1,500 videos) for three seeds,
with thresholds well inside the observed range yet far from what a simulator without the
property gives (several tests also generate that "null" log to show the measurement can fail).
"""

import functools
import json
import time

import tfrs_youtube  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything loads Keras)

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data.schema import SCHEMA, TABLES, validate
from tfrs_youtube.data.synthetic import (
    COUNTRIES,
    TOPICS,
    SyntheticConfig,
    generate,
    topic_names,
    topic_tokens,
)

SEEDS = (0, 1, 2)
DAY = 86400


def medium(seed: int, **overrides) -> SyntheticConfig:
    return SyntheticConfig(num_users=1000, num_videos=1500, seed=seed, **overrides)


@functools.lru_cache(maxsize=None)
def medium_log(seed: int):
    return generate(medium(seed))


@functools.lru_cache(maxsize=None)
def tiny_log(seed: int = 0):
    return generate(SyntheticConfig.tiny(seed))


def organic_affinity(log) -> pd.DataFrame:
    """Empirical user-topic affinity: the share of a user's non-home watches in each topic.

    Home watches are left out because clicked impressions produce them (that would be circular).
    """
    watches = log.watches[log.watches.source != "home"].merge(log.videos[["video_id", "topic"]])
    counts = watches.groupby(["user_id", "topic"]).size()
    share = counts / counts.groupby(level="user_id").transform("sum")
    return share.rename("affinity").reset_index()


def top_share(counts: np.ndarray, fraction: float = 0.1) -> float:
    ordered = np.sort(counts)[::-1]
    return ordered[: max(1, int(len(ordered) * fraction))].sum() / ordered.sum()


def gini(counts: np.ndarray) -> float:
    ordered = np.sort(counts).astype(float)
    n = len(ordered)
    return float((2 * np.arange(1, n + 1) - n - 1) @ ordered / (n * ordered.sum()))


# --- schema, ids, determinism -------------------------------------------------------------------


def test_tiny_is_fast_and_valid():
    start = time.perf_counter()
    log = generate(SyntheticConfig.tiny())
    assert time.perf_counter() - start < 1.0
    validate(log)
    assert log.name == "synthetic"
    assert set(log.notes) == set(TABLES)
    assert 150 <= len(log.users) <= 250 and 250 <= len(log.videos) <= 350
    for name, table in log.tables().items():
        assert list(table.columns) == list(SCHEMA[name]), name
        assert len(table) > 0, name
    for name in ("watches", "searches", "impressions"):
        assert log.tables()[name]["time"].dtype == np.int64
    assert log.videos.upload_time.dtype == np.int64
    assert set(log.impressions.clicked.unique()) == {0, 1}


@pytest.mark.parametrize("seed", SEEDS)
def test_ids_times_and_per_user_watches(seed):
    config = SyntheticConfig.tiny(seed)
    log = tiny_log(seed)
    assert log.users.user_id.str.fullmatch(r"u\d{3}").all()  # 200 users -> width 3
    assert log.videos.video_id.str.fullmatch(r"v\d{3}").all()
    horizon = config.days * DAY
    upload = log.videos.set_index("video_id").upload_time
    for name in ("watches", "searches", "impressions"):
        table = log.tables()[name]
        assert table.time.between(0, horizon).all(), name
        keys = list(zip(table.user_id, table.time))
        assert keys == sorted(keys), f"{name} is not sorted by (user_id, time)"
        if "video_id" in table:
            # Nothing is watched or shown before it was uploaded.
            assert (table.time.to_numpy() >= upload[table.video_id].to_numpy()).all(), name
    assert log.videos.upload_time.between(0, horizon).all()
    assert (log.videos.upload_time == 0).any()  # a back catalogue exists
    per_user = log.watches.user_id.value_counts().reindex(log.users.user_id, fill_value=0)
    assert per_user.min() >= 3
    watch = log.watches
    assert (watch.watch_time_s > 0).all()
    duration = log.videos.set_index("video_id").duration_s[watch.video_id].to_numpy()
    assert (watch.watch_time_s.to_numpy() <= duration).all()


def test_same_seed_same_tables_different_seed_different_tables():
    first, second = generate(SyntheticConfig.tiny(7)), generate(SyntheticConfig.tiny(7))
    for name in TABLES:
        pd.testing.assert_frame_equal(first.tables()[name], second.tables()[name])
    other = generate(SyntheticConfig.tiny(8))
    for name in TABLES:
        assert not first.tables()[name].equals(other.tables()[name]), name


def test_config_round_trips_through_json():
    config = SyntheticConfig(num_users=123, popularity_sigma=1.5, seed=9)
    assert SyntheticConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert SyntheticConfig.from_dict(SyntheticConfig.tiny().to_dict()) == SyntheticConfig.tiny()
    with pytest.raises(TypeError):
        SyntheticConfig.from_dict({"num_userz": 3})
    with pytest.raises(ValueError):
        SyntheticConfig(search_fraction=0.6, related_fraction=0.6)


def test_topic_names_and_disjoint_vocabularies():
    assert TOPICS[:5] == ("music", "gaming", "news", "sports", "cooking")
    names = topic_names(25)
    assert names[:20] == list(TOPICS) and names[20:] == [f"topic{k}" for k in range(21, 26)]
    vocabularies = [set(topic_tokens(name)) for name in names]
    assert all(len(v) == 12 for v in vocabularies)
    assert len(set().union(*vocabularies)) == sum(map(len, vocabularies))  # pairwise disjoint
    assert all(" " not in token for v in vocabularies for token in v)


def test_more_topics_than_named_and_long_windows_are_stable():
    # 30 topics (10 generic), a 5-year window and a 6-hour half-life: exp(upload / tau) would
    # overflow float64 by far if it were not kept in log space.
    config = SyntheticConfig(num_users=150, num_videos=400, num_topics=30, days=1825.0,
                             freshness_half_life_days=0.25, watches_per_user=10, seed=3)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        log = generate(config)
    validate(log)
    assert log.videos.topic.str.startswith("topic").any()


def test_scales_to_a_large_sparse_corpus():
    config = SyntheticConfig(num_users=2000, num_videos=200_000, watches_per_user=10,
                             impression_pages_per_user=2, seed=0)
    start = time.perf_counter()
    log = generate(config)
    assert time.perf_counter() - start < 15.0
    assert len(log.videos) == 200_000 and log.videos.video_id.iloc[-1] == "v199999"


# --- planted properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_popularity_is_heavy_tailed(seed):
    log = medium_log(seed)
    counts = log.watches.video_id.value_counts().reindex(log.videos.video_id, fill_value=0).to_numpy()
    # Uniform popularity would give the top 10% of videos 0.1 of the watches.
    assert top_share(counts) > 0.38  # observed 0.41-0.47 (re-watches are rare, so hits spread less)
    assert gini(counts) > 0.55
    if seed == 0:  # the same measurement without the popularity tail
        flat = generate(medium(seed, popularity_sigma=0.0))
        flat_counts = flat.watches.video_id.value_counts().reindex(flat.videos.video_id, fill_value=0)
        assert top_share(flat_counts.to_numpy()) < top_share(counts) - 0.1  # observed 0.29 vs 0.44


@pytest.mark.parametrize("seed", SEEDS)
def test_users_have_few_topics_and_watch_their_language(seed):
    log = medium_log(seed)
    language_of = {country: language for country, language, _ in COUNTRIES}
    assert (log.users.country.map(language_of) == log.users.language).all()
    sizes = log.users.country.value_counts()
    assert len(sizes) == len(COUNTRIES) and sizes.iloc[0] > 3 * sizes.iloc[-1]

    affinity = organic_affinity(log)
    heavy = log.watches[log.watches.source != "home"].user_id.value_counts()
    heavy = heavy[heavy >= 20].index
    top3 = affinity[affinity.user_id.isin(heavy)].groupby("user_id").affinity.apply(
        lambda s: s.nlargest(3).sum())
    topic_share = log.watches.merge(log.videos[["video_id", "topic"]]).topic.value_counts(normalize=True)
    assert top3.mean() > 0.7  # observed 0.82
    assert topic_share.nlargest(3).sum() < 0.4  # the population is spread over topics (0.19)

    watched = log.watches.merge(log.videos[["video_id", "language"]]).merge(
        log.users[["user_id", "language"]], on="user_id", suffixes=("_video", "_user"))
    # Below own_language_prob: a user who has seen the few videos of a small language's topic
    # finds new ones in other languages. By chance it would be about 0.45 (English's share).
    assert (watched.language_video == watched.language_user).mean() > 0.68  # observed 0.74-0.76


@pytest.mark.parametrize("seed", SEEDS)
def test_searches_precede_search_watches_with_the_watched_topic(seed):
    log = medium_log(seed)
    led = log.watches[log.watches.source == "search"].merge(log.videos[["video_id", "topic"]])
    previous = pd.merge_asof(
        led.sort_values("time"), log.searches.rename(columns={"time": "search_time"}).sort_values("search_time"),
        left_on="time", right_on="search_time", by="user_id", direction="backward")
    assert previous["query"].notna().all()
    gap = previous.time - previous.search_time
    assert gap.between(10, 120).mean() > 0.95
    vocab = {topic: set(topic_tokens(topic)) for topic in log.videos.topic.unique()}
    agree = np.mean([set(q.split()) <= vocab[t] for q, t in zip(previous["query"], previous.topic)])
    assert agree > 0.9  # observed 0.999; by chance about 1 / num_topics
    # Some searches lead nowhere, so search history is informative but not a copy of the watches.
    assert len(log.searches) > 1.1 * len(led)


def freshness_ratio(log, config) -> float:
    """Watch rate in a video's first 3 days over its rate afterwards (videos with >= 15 days)."""
    horizon = config.days * DAY
    videos = log.videos[(log.videos.upload_time > 0) & (horizon - log.videos.upload_time >= 15 * DAY)]
    watched = log.watches.merge(videos[["video_id", "upload_time"]])
    age = watched.time - watched.upload_time
    early_rate = (age < 3 * DAY).sum() / (3 * DAY * len(videos))
    late_rate = (age >= 3 * DAY).sum() / (horizon - videos.upload_time - 3 * DAY).sum()
    return early_rate / late_rate


@pytest.mark.parametrize("seed", SEEDS)
def test_fresh_uploads_draw_attention_that_decays(seed):
    log = medium_log(seed)
    ratio = freshness_ratio(log, medium(seed))
    assert ratio > 2.5  # observed 3.5-3.7; 1 would be uniform
    # The rate per day of age falls: day 0 well above day 7.
    horizon = medium(seed).days * DAY
    young = log.videos[(log.videos.upload_time > 0) & (horizon - log.videos.upload_time >= 8 * DAY)]
    watched = log.watches.merge(young[["video_id", "upload_time"]])
    per_day = ((watched.time - watched.upload_time) // DAY).value_counts()
    assert per_day[0] > 1.8 * per_day[7]  # observed 2.6-2.7
    if seed == 0:
        # Without the freshness term the ratio is about 1.4 (new uploads still compete with fewer
        # videos early on, so some decay remains); the freshness term multiplies it.
        stale = medium(seed, freshness_half_life_days=1e-4)
        assert ratio > 2 * freshness_ratio(generate(stale), stale)


@pytest.mark.parametrize("seed", SEEDS)
def test_clicks_follow_affinity_language_duration_and_repeats(seed):
    log = medium_log(seed)
    shown = (log.impressions
             .merge(log.videos[["video_id", "topic", "language", "duration_s"]])
             .merge(log.users[["user_id", "language"]], on="user_id", suffixes=("_video", "_user"))
             .merge(organic_affinity(log), how="left").fillna({"affinity": 0.0})
             .sort_values(["user_id", "video_id", "time"], kind="stable"))
    shown["shown_before"] = shown.groupby(["user_id", "video_id"]).cumcount()
    # Repeats concentrate on the user's own-language pools, so compare first showings.
    first = shown[shown.shown_before == 0]

    def tercile(values: pd.Series) -> np.ndarray:
        return pd.qcut(values.rank(method="first"), 3, labels=False).to_numpy()

    by_affinity = first.clicked.groupby(tercile(first.affinity)).mean()
    assert by_affinity[2] > 1.8 * by_affinity[0]  # observed about 3x
    same = first.language_video == first.language_user
    assert first.clicked[same].mean() > 1.3 * first.clicked[~same].mean()  # observed 1.6-1.8x
    by_duration = first.clicked.groupby(tercile(first.duration_s)).mean()
    assert by_duration[0] > 1.4 * by_duration[2]  # short over long, observed about 2x
    assert shown.clicked[shown.shown_before > 0].mean() < 0.75 * first.clicked.mean()

    clicks = shown[shown.clicked == 1]
    completion = (clicks.watch_time_s / clicks.duration_s).groupby(tercile(clicks.affinity)).mean()
    assert completion[2] > completion[0] + 0.15  # observed +0.28
    watch_time = clicks.watch_time_s.groupby(tercile(clicks.affinity)).mean()
    assert watch_time[2] > 1.3 * watch_time[0]  # observed about 2x


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_clicked_impressions_are_home_watches(seed):
    log = medium_log(seed)
    impressions = log.impressions
    assert (impressions.watch_time_s[impressions.clicked == 0] == 0).all()
    assert (impressions.watch_time_s[impressions.clicked == 1] > 0).all()
    keys = ["user_id", "video_id", "time", "watch_time_s"]
    clicked = impressions.loc[impressions.clicked == 1, keys]
    found = clicked.merge(log.watches[log.watches.source == "home"][keys], how="left", indicator=True)
    assert (found["_merge"] == "both").all()
    # A page never shows the same video twice.
    assert not impressions.duplicated(["user_id", "time", "video_id"]).any()
    assert set(log.watches.source.unique()) == {"home", "search", "related", "external"}
