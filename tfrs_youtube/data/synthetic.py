"""A seeded simulator of a YouTube-like service, producing an `EventLog`.

The paper's methods exist because real logs have particular shapes, so the simulator plants each
of them, and tests measure them:

- heavy-tailed popularity (a lognormal base popularity per video), which is why the retrieval
  loss needs the log Q correction and sampled negatives;
- users with a few dominant topics (a sparse Dirichlet mixture, tilted by a demographic segment
  so that demographics help new users) and a country with its language, so watch history,
  geography and language are all informative;
- searches whose tokens come from the topic the user then watches, so search history predicts;
- fresh uploads that draw attention which decays with age (weight popularity x (floor +
  exp(-age / tau))), which the paper's "example age" feature exists to model;
- impressions whose clicks depend on topic affinity, language, duration and repeated exposure,
  and whose watch time rises with affinity, so the ranker has something to learn.

Everything is vectorised with numpy (no Python loop per event; loops run over topic/language
groups only), so a million-video corpus generates in seconds. The same config gives the same
tables: all randomness flows from one `np.random.default_rng(seed)` in a fixed order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from tfrs_youtube.data.schema import WATCH_SOURCES, EventLog, validate

# (country, language, share of users). Unequal sizes on purpose, several countries per language.
COUNTRIES: tuple[tuple[str, str, float], ...] = (
    ("US", "en", 0.30), ("IN", "en", 0.16), ("GB", "en", 0.06), ("BR", "pt", 0.10),
    ("MX", "es", 0.08), ("ES", "es", 0.04), ("DE", "de", 0.08), ("FR", "fr", 0.07),
    ("JP", "ja", 0.11),
)
LANGUAGES: tuple[str, ...] = tuple(dict.fromkeys(lang for _, lang, _ in COUNTRIES))
GENDERS: tuple[str, ...] = ("female", "male", "unknown")
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tv", "tablet")

# Search vocabulary per topic: 12 tokens each, disjoint across topics (the first is the name).
_VOCABULARY: dict[str, str] = {
    "music": "music song guitar lyrics concert album piano remix singer band drums playlist",
    "gaming": "gaming gameplay minecraft speedrun walkthrough esports console fortnite boss rpg multiplayer streamer",
    "news": "news election politics breaking president economy report interview parliament headlines debate journalist",
    "sports": "sports football soccer basketball tennis highlights goal olympics cricket baseball match league",
    "cooking": "cooking recipe baking pasta dinner chef bread vegan dessert kitchen curry grill",
    "comedy": "comedy funny prank standup sketch parody jokes bloopers sitcom meme satire improv",
    "education": "education lecture tutorial lesson exam university math grammar course homework study teacher",
    "science": "science physics chemistry biology space nasa experiment quantum astronomy evolution atoms research",
    "technology": "technology smartphone unboxing laptop review gadget android iphone coding software ai robot",
    "travel": "travel vlog beach hotel flight tour backpacking island city roadtrip mountains camping",
    "fitness": "fitness workout yoga gym running cardio abs stretching pilates squat marathon hiit",
    "fashion": "fashion outfit haul style dress sneakers runway streetwear thrift lookbook jeans designer",
    "beauty": "beauty makeup skincare hair nails lipstick eyeliner contour perfume manicure foundation hairstyle",
    "cars": "cars engine supercar drift motorcycle racing tesla repair offroad truck horsepower dashcam",
    "animals": "animals cats dogs puppy kitten wildlife birds zoo horse safari aquarium pets",
    "movies": "movies trailer film cinema marvel actor oscars scene director sequel netflix anime",
    "diy": "diy crafts woodworking renovation gardening knitting sewing tools painting pottery upcycling plumbing",
    "finance": "finance stocks crypto bitcoin investing budget money taxes trading mortgage savings retirement",
    "kids": "kids cartoon nursery toys lego peppa baby rhymes alphabet slime disney storytime",
    "history": "history war ancient medieval documentary empire rome egypt castle revolution ww2 archaeology",
}
TOPICS: tuple[str, ...] = tuple(_VOCABULARY)
TOKENS_PER_TOPIC = 12

# Click model (logit scale) and completion model. Affinity is the user's interest share in the
# video's topic (0..1); the affinity weight dominates on purpose: it is what retrieval learns.
_CLICK_AFFINITY = 5.0
_CLICK_OTHER_LANGUAGE = -1.2
_CLICK_PER_LOG_DURATION = -0.5  # per unit of log(duration / 5 min): long videos are clicked less
_CLICK_PER_REPEAT = -0.7  # per earlier impression of the same video to the same user
_CLICK_PER_LOG_POPULARITY = 0.5  # the appeal that makes a video popular also earns it clicks
# Fresh videos draw clicks as they draw organic watches: per unit of log(floor + exp(-age/tau)),
# so a video's appeal falls by about 2.4 logits from upload to old age.
_CLICK_PER_LOG_FRESHNESS = 0.8
_TYPICAL_DURATION_S = 300.0
_HOME, _SEARCH, _RELATED, _EXTERNAL = (WATCH_SOURCES.index(s) for s in
                                       ("home", "search", "related", "external"))


def topic_names(num_topics: int) -> list[str]:
    """The readable topics first, then "topic21", "topic22", ... beyond the list."""
    return list(TOPICS[:num_topics]) + [f"topic{k + 1}" for k in range(len(TOPICS), num_topics)]


def topic_tokens(topic: str) -> list[str]:
    """The search vocabulary of a topic; vocabularies of different topics are disjoint."""
    if topic in _VOCABULARY:
        return _VOCABULARY[topic].split()
    return [topic] + [f"{topic}_{k}" for k in range(1, TOKENS_PER_TOPIC)]


@dataclasses.dataclass
class SyntheticConfig:
    """Sizes and behaviour of the simulated service; round-trips through JSON via to_dict/from_dict.

    `watches_per_user` is the mean number of watches a user starts on their own (search, related,
    external, home outside the logged pages); clicked impressions add home watches on top.
    Per-user activity is lognormal with mean 1 and `activity_sigma`, and scales both watches and
    impression pages, so heavy users are heavy everywhere.
    """

    num_users: int = 5000
    num_videos: int = 5000
    num_topics: int = 20
    days: float = 60.0
    watches_per_user: float = 40.0
    impression_pages_per_user: float = 8.0
    page_size: int = 10
    seed: int = 0
    min_watches_per_user: int = 3  # so per-user held-out splits always have something to hold out
    activity_sigma: float = 1.0
    popularity_sigma: float = 2.0  # lognormal sigma of base popularity: the head/tail contrast
    topic_concentration: float = 0.15  # Dirichlet alpha per topic: small -> 2-4 dominant topics
    own_language_prob: float = 0.9
    back_catalogue_fraction: float = 0.3  # videos already uploaded at time 0
    freshness_half_life_days: float = 2.0
    freshness_floor: float = 0.05  # attention an old video keeps, relative to a brand-new one
    search_fraction: float = 0.25  # shares of organic watches by source; "home" gets the rest
    related_fraction: float = 0.35
    external_fraction: float = 0.1
    unanswered_search_fraction: float = 0.2  # searches that lead to no watch
    explore_fraction: float = 0.3  # impression slots drawn from any topic, not the user's mixture
    rewatch_prob: float = 0.05  # share of organic watches allowed to repeat an earlier one
    base_click_logit: float = -2.5

    def __post_init__(self) -> None:
        for name in ("num_users", "num_videos", "num_topics", "page_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.days <= 0 or self.freshness_half_life_days <= 0:
            raise ValueError("SyntheticConfig.days and freshness_half_life_days must be > 0")
        fractions = (self.search_fraction, self.related_fraction, self.external_fraction)
        if min(fractions) < 0 or sum(fractions) > 1:
            raise ValueError(f"source fractions must be >= 0 and sum to <= 1, got {fractions}")
        if not 0 <= self.unanswered_search_fraction < 1:
            raise ValueError("SyntheticConfig.unanswered_search_fraction must be in [0, 1)")

    @classmethod
    def tiny(cls, seed: int = 0) -> "SyntheticConfig":
        """A log for unit tests: 200 users, 300 videos, 8 topics; generates in milliseconds."""
        return cls(num_users=200, num_videos=300, num_topics=8, days=30.0, watches_per_user=20.0,
                   impression_pages_per_user=4.0, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SyntheticConfig":
        return cls(**values)  # unknown keys raise TypeError: a typo should not pass silently


def _expit(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function, without overflow warnings


def _ids(prefix: str, count: int) -> np.ndarray:
    """"u0042"-style ids, zero-padded to the width of the count so they sort like the indices."""
    return np.char.add(prefix, np.char.zfill(np.arange(count).astype(str), len(str(count))))


def _draw_rows(probs: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category per event from row `rows[i]` of `probs`, without an events x categories array.

    Each row's cumulative distribution, normalised to end at exactly 1, is shifted by its row
    number, so all rows form one increasing array that a single searchsorted can query.
    """
    cum = np.cumsum(probs, axis=1)
    cum = cum / cum[:, -1:] + np.arange(len(probs))[:, None]
    k = probs.shape[1]
    found = np.searchsorted(cum.ravel(), rows + rng.random(len(rows)), side="right") - rows * k
    return np.clip(found, 0, k - 1)


class _VideoSampler:
    """Draws, per event (group, t), a video of that group uploaded by t with probability
    proportional to popularity x (floor + exp(-(t - upload) / tau)).

    Within a group, videos sorted by upload time make "available at t" a prefix. The weight splits
    into floor * pop (prefix sums) plus exp(-t / tau) * pop * exp(upload / tau) (prefix sums too);
    both are kept as log-sum-exp prefixes so long windows neither overflow nor underflow. An event
    picks a part in proportion to the two prefix totals, then a video in it by searchsorted.
    """

    def __init__(self, group: np.ndarray, num_groups: int, upload: np.ndarray, log_pop: np.ndarray,
                 tau: float, floor: float):
        self.tau, self.log_floor = tau, np.log(floor)
        order = np.lexsort((upload, group))
        bounds = np.searchsorted(group[order], np.arange(num_groups + 1))
        self.groups = []
        for g in range(num_groups):
            videos = order[bounds[g]:bounds[g + 1]]
            up = upload[videos].astype(np.float64)
            self.groups.append((
                videos, up,
                np.logaddexp.accumulate(log_pop[videos]),
                np.logaddexp.accumulate(log_pop[videos] + up / tau),
            ))

    def sample(self, group: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Video indices (-1 where the group has nothing uploaded by t); `u` is (2, n) in (0, 1]."""
        out = np.full(len(t), -1, dtype=np.int64)
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(len(self.groups) + 1))
        for g, (videos, up, log_cum_pop, log_cum_fresh) in enumerate(self.groups):
            events = order[bounds[g]:bounds[g + 1]]
            if len(events) == 0 or len(videos) == 0:
                continue
            last = np.searchsorted(up, t[events], side="right") - 1  # last video available
            events, last = events[last >= 0], last[last >= 0]
            log_floor_mass = self.log_floor + log_cum_pop[last]
            log_fresh_mass = log_cum_fresh[last] - t[events] / self.tau
            fresh = u[0, events] < _expit(log_fresh_mass - log_floor_mass)
            for part, cum in ((fresh, log_cum_fresh), (~fresh, log_cum_pop)):
                target = np.log(u[1, events[part]]) + cum[last[part]]
                pos = np.minimum(np.searchsorted(cum, target, side="left"), last[part])
                out[events[part]] = videos[pos]
        return out


def generate(config: SyntheticConfig) -> EventLog:
    """Simulates the service described by `config`; the same config gives identical tables."""
    rng = np.random.default_rng(config.seed)
    horizon = int(round(config.days * 86400))
    topics = topic_names(config.num_topics)
    num_topics, num_langs = config.num_topics, len(LANGUAGES)

    # Users: country -> language; demographics tilt the topic mixture (a prior per segment).
    n_users = config.num_users
    country_share = np.array([share for _, _, share in COUNTRIES])
    country = rng.choice(len(COUNTRIES), size=n_users, p=country_share / country_share.sum())
    country_lang = np.array([LANGUAGES.index(lang) for _, lang, _ in COUNTRIES])
    user_lang = country_lang[country]
    lang_share = np.bincount(country_lang, weights=country_share, minlength=num_langs)
    lang_share /= lang_share.sum()
    gender = rng.choice(len(GENDERS), size=n_users, p=[0.46, 0.46, 0.08])
    age = np.clip(np.round(rng.normal(31.0, 12.0, n_users)), 13, 80)
    device = rng.choice(len(DEVICES), size=n_users, p=[0.6, 0.25, 0.1, 0.05])
    activity = rng.lognormal(-config.activity_sigma**2 / 2, config.activity_sigma, n_users)
    segment = gender * 3 + np.digitize(age, [25, 40])
    segment_pref = rng.dirichlet(np.ones(num_topics), size=len(GENDERS) * 3)
    alpha = config.topic_concentration * num_topics * (0.5 / num_topics + 0.5 * segment_pref[segment])
    interests = rng.gamma(alpha) + 1e-12  # Dirichlet rows; the epsilon avoids an all-zero row
    interests /= interests.sum(axis=1, keepdims=True)

    # Videos: unequal topic sizes, language like the audience, a back catalogue at time 0.
    n_videos = config.num_videos
    topic_share = rng.dirichlet(np.full(num_topics, 2.0))
    v_topic = rng.choice(num_topics, size=n_videos, p=topic_share)
    v_lang = rng.choice(num_langs, size=n_videos, p=lang_share)
    back = rng.random(n_videos) < config.back_catalogue_fraction
    back[rng.integers(n_videos)] = True  # something is always available, even at t = 0
    upload = np.where(back, 0, rng.integers(1, horizon + 1, n_videos)).astype(np.int64)
    log_pop = rng.normal(0.0, config.popularity_sigma, n_videos)
    topic_log_duration = rng.normal(0.0, 0.4, num_topics)  # music is short, lectures are long
    duration = np.clip(np.round(_TYPICAL_DURATION_S * np.exp(
        topic_log_duration[v_topic] + rng.normal(0.0, 0.8, n_videos))), 10, 4 * 3600).astype(np.float64)

    tau = config.freshness_half_life_days * 86400 / np.log(2)
    samplers = [  # (topic, language), then any language of the topic, then anything available
        _VideoSampler(v_topic * num_langs + v_lang, num_topics * num_langs, upload, log_pop, tau,
                      config.freshness_floor),
        _VideoSampler(v_topic, num_topics, upload, log_pop, tau, config.freshness_floor),
        _VideoSampler(np.zeros(n_videos, np.int64), 1, upload, log_pop, tau, config.freshness_floor),
    ]

    def pick(user: np.ndarray, topic: np.ndarray, t: np.ndarray) -> np.ndarray:
        """A video of `topic` in the user's language (usually), popular and fresh at time t."""
        own = rng.random(len(user)) < config.own_language_prob
        lang = np.where(own, user_lang[user], rng.choice(num_langs, size=len(user), p=lang_share))
        u = 1.0 - rng.random((2, len(user)))
        video = samplers[0].sample(topic * num_langs + lang, t, u)
        for sampler, group in ((samplers[1], topic), (samplers[2], np.zeros_like(topic))):
            miss = video < 0
            if miss.any():
                video[miss] = sampler.sample(group[miss], t[miss], u[:, miss])
        return video

    def watch_time(user: np.ndarray, video: np.ndarray) -> np.ndarray:
        """Seconds watched: the duration times a completion fraction that rises with affinity."""
        affinity = interests[user, v_topic[video]]
        logit = (-0.5 + 3.0 * affinity - 0.4 * np.log(duration[video] / _TYPICAL_DURATION_S)
                 + rng.normal(0.0, 0.8, len(video)))
        return np.clip(np.round(duration[video] * _expit(logit), 1), 1.0, duration[video])

    # Organic watches: per event a topic from the user's mixture, then a video by pick().
    n_watch = np.maximum(config.min_watches_per_user, rng.poisson(config.watches_per_user * activity))
    w_user = np.repeat(np.arange(n_users), n_watch)
    w_time = rng.integers(0, horizon + 1, len(w_user))
    w_time = w_time[np.lexsort((w_time, w_user))]  # users are already in order; sort time within
    source_p = np.zeros(len(WATCH_SOURCES))
    source_p[[_SEARCH, _RELATED, _EXTERNAL]] = (config.search_fraction, config.related_fraction,
                                                config.external_fraction)
    source_p[_HOME] = max(0.0, 1.0 - source_p.sum())
    w_source = rng.choice(len(WATCH_SOURCES), size=len(w_user), p=source_p / source_p.sum())
    w_topic = _draw_rows(interests, w_user, rng)
    # A "related" watch continues the topic of the user's last watch that was not itself related.
    anchor = np.maximum.accumulate(np.where(w_source != _RELATED, np.arange(len(w_user)), -1))
    follows = (w_source == _RELATED) & (anchor >= 0) & (w_user[np.maximum(anchor, 0)] == w_user)
    w_topic[follows] = w_topic[anchor[follows]]
    w_video = pick(w_user, w_topic, w_time)
    # People rarely watch the same video twice (and a recommender does not offer it again):
    # redraw repeats for a few rounds, keeping a `rewatch_prob` share as genuine re-watches.
    keep_repeat = rng.random(len(w_user)) < config.rewatch_prob
    for _ in range(5):
        again = (_earlier_occurrences(w_user * n_videos + w_video, w_time) > 0) & ~keep_repeat
        if not again.any():
            break
        w_video[again] = pick(w_user[again], w_topic[again], w_time[again])
    first_watch = pd.Series(w_time).groupby(w_user * n_videos + w_video).min()
    w_watch_time = watch_time(w_user, w_video)

    # Searches: one 10-120 s before each search-led watch, with tokens of the watched video's
    # topic; plus unanswered searches on the user's interests at random times.
    led = np.flatnonzero(w_source == _SEARCH)
    s_led_time = np.maximum(0, w_time[led] - rng.integers(10, 121, len(led)))
    extra_rate = config.unanswered_search_fraction / (1.0 - config.unanswered_search_fraction)
    extra_user = w_user[led][rng.random(len(led)) < extra_rate]
    s_user = np.concatenate([w_user[led], extra_user])
    s_time = np.concatenate([s_led_time, rng.integers(0, horizon + 1, len(extra_user))])
    s_topic = np.concatenate([v_topic[w_video[led]], _draw_rows(interests, extra_user, rng)])
    s_query = _queries(topics, s_topic, rng)

    # Impressions: pages of page_size distinct videos from the user's mixture plus exploration.
    n_pages = rng.poisson(config.impression_pages_per_user * activity)
    p_user = np.repeat(np.arange(n_users), n_pages)
    p_time = rng.integers(0, horizon + 1, len(p_user))
    i_page = np.repeat(np.arange(len(p_user)), config.page_size)
    i_user, i_time = p_user[i_page], p_time[i_page]
    slot_probs = (1 - config.explore_fraction) * interests + config.explore_fraction / num_topics
    i_video = pick(i_user, _draw_rows(slot_probs, i_user, rng), i_time)
    for _ in range(3):  # redraw videos repeated within a page or already watched; drop the few left
        dup = pd.Series(i_page * n_videos + i_video).duplicated().to_numpy().copy()
        dup |= first_watch.reindex(i_user * n_videos + i_video).to_numpy() < i_time
        if not dup.any():
            break
        i_video[dup] = pick(i_user[dup], _draw_rows(slot_probs, i_user[dup], rng), i_time[dup])
    keep = ~pd.Series(i_page * n_videos + i_video).duplicated().to_numpy().copy()
    keep &= ~(first_watch.reindex(i_user * n_videos + i_video).to_numpy() < i_time)
    i_user, i_time, i_video = i_user[keep], i_time[keep], i_video[keep]
    shown_before = _earlier_occurrences(i_user * n_videos + i_video, i_time)
    click_logit = (config.base_click_logit
                   + _CLICK_AFFINITY * interests[i_user, v_topic[i_video]]
                   + _CLICK_OTHER_LANGUAGE * (v_lang[i_video] != user_lang[i_user])
                   + _CLICK_PER_LOG_DURATION * np.log(duration[i_video] / _TYPICAL_DURATION_S)
                   + _CLICK_PER_REPEAT * shown_before
                   + _CLICK_PER_LOG_POPULARITY * log_pop[i_video]
                   + _CLICK_PER_LOG_FRESHNESS * np.log(config.freshness_floor
                                                       + np.exp(-(i_time - upload[i_video]) / tau)))
    clicked = rng.random(len(i_user)) < _expit(click_logit)
    i_watch_time = np.where(clicked, watch_time(i_user, i_video), 0.0)

    # Organic watches that still repeat an earlier watch (organic, or a home click) are dropped,
    # but for the genuine re-watches.
    repeat = _earlier_occurrences(np.concatenate([w_user * n_videos + w_video, i_user[clicked] * n_videos
                                                  + i_video[clicked]]),
                                  np.concatenate([w_time, i_time[clicked]]))[: len(w_user)] > 0
    kept = ~repeat | keep_repeat
    # ...unless that would leave a user below the minimum history the splits rely on.
    short = np.bincount(w_user[kept], minlength=n_users) < config.min_watches_per_user
    kept |= short[w_user]
    w_user, w_time, w_video, w_watch_time, w_source = (
        w_user[kept], w_time[kept], w_video[kept], w_watch_time[kept], w_source[kept])

    # Every clicked impression is also a home watch at the same time.
    user_ids, video_ids = _ids("u", n_users), _ids("v", n_videos)
    watches = _by_user_time(
        user_ids, np.concatenate([w_user, i_user[clicked]]), np.concatenate([w_time, i_time[clicked]]),
        video_id=video_ids[np.concatenate([w_video, i_video[clicked]])],
        watch_time_s=np.concatenate([w_watch_time, i_watch_time[clicked]]),
        source=np.array(WATCH_SOURCES)[np.concatenate([w_source, np.full(clicked.sum(), _HOME)])],
    )
    searches = _by_user_time(user_ids, s_user, s_time, query=s_query)
    impressions = _by_user_time(user_ids, i_user, i_time, video_id=video_ids[i_video],
                                clicked=clicked.astype(np.int8), watch_time_s=i_watch_time)
    users = pd.DataFrame({
        "user_id": user_ids, "country": np.array([c for c, _, _ in COUNTRIES])[country],
        "language": np.array(LANGUAGES)[user_lang], "gender": np.array(GENDERS)[gender],
        "age": age.astype(np.float64), "device": np.array(DEVICES)[device],
    })
    videos = pd.DataFrame({
        "video_id": video_ids, "upload_time": upload, "language": np.array(LANGUAGES)[v_lang],
        "duration_s": duration, "topic": np.array(topics)[v_topic],
    })
    log = EventLog(users, videos, watches, searches, impressions, name="synthetic", notes={
        "users": "Simulated: country drawn with unequal shares, language from the country; a sparse "
                 "Dirichlet topic mixture tilted by the gender x age segment; lognormal activity.",
        "videos": "Simulated: lognormal base popularity, unequal topic sizes, language like the "
                  "audience, lognormal duration per topic, uploads spread over the window after a "
                  "back catalogue at time 0.",
        "watches": "Simulated: per event a topic from the user's mixture (related watches keep the "
                   "previous topic), usually the user's language, and a video uploaded before t with "
                   "probability popularity x (floor + exp(-age/tau)); clicked impressions add home "
                   "watches; watch time is duration x a completion that rises with affinity.",
        "searches": "Simulated: 10-120 s before each search-led watch, 1-3 tokens of the watched "
                    "video's topic; plus unanswered searches on the user's interests.",
        "impressions": "Simulated: pages of distinct popular/fresh videos from the user's topics and "
                       "exploration; clicks rise with topic affinity, language match and freshness and fall with "
                       "duration and repeated exposure; clicked rows carry the watch time.",
    })
    validate(log)
    return log


def _queries(topics: list[str], topic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Queries of 1-3 distinct tokens from each event's topic vocabulary."""
    vocab = np.array([topic_tokens(name)[:TOKENS_PER_TOPIC] for name in topics])
    picks = np.argsort(rng.random((len(topic), vocab.shape[1])), axis=1)[:, :3]
    n_tokens = rng.choice(3, size=len(topic), p=[0.35, 0.45, 0.2]) + 1
    words = vocab[topic[:, None], picks]
    query = words[:, 0]
    for k in (1, 2):
        query = np.where(n_tokens > k, np.char.add(np.char.add(query, " "), words[:, k]), query)
    return query


def _earlier_occurrences(key: np.ndarray, time: np.ndarray) -> np.ndarray:
    """For each row, how many rows with the same key come earlier in time."""
    order = np.lexsort((time, key))
    sorted_key = key[order]
    starts = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    position = np.arange(len(key))
    count = np.empty(len(key), np.int64)
    count[order] = position - np.maximum.accumulate(np.where(starts, position, 0))
    return count


def _by_user_time(user_ids: np.ndarray, user: np.ndarray, time: np.ndarray, **columns: np.ndarray
                  ) -> pd.DataFrame:
    """An event table with user_id, video_id (if any), time, then the rest, sorted by (user, time)."""
    order = np.lexsort((time, user))  # stable: ties keep their generation order
    table = {"user_id": user_ids[user[order]]}
    if "video_id" in columns:
        table["video_id"] = columns.pop("video_id")[order]
    table["time"] = time[order].astype(np.int64)
    table.update({name: values[order] for name, values in columns.items()})
    return pd.DataFrame(table)
