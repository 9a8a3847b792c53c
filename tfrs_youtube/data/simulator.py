"""The simulated YouTube-like service as an object: it writes an `EventLog`, and it answers how its
users would respond to any page of videos.

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
- impressions whose clicks depend on topic affinity, language, duration, popularity, freshness
  and repeated exposure, and whose watch time rises with affinity, so the ranker has something
  to learn.

A log only shows what users did with the pages they happened to get. The simulator also knows
what they would do with any other page: `Simulator.respond` gives each shown video's click
probability and expected watch time from the same two functions (`click_logit`,
`completion_logit`) that the log writer draws its impressions from, and `Simulator.best_pages` is
the oracle page with the most expected watch time. So a recommender can be scored by the watch
time its pages would earn, not only by how well it predicts the logged clicks.

Everything is vectorised with numpy (no Python loop per event; loops run over topic/language
groups and row chunks only), so a million-video corpus generates in seconds. The same config gives
the same tables: all randomness flows from one `np.random.default_rng(seed)` in a fixed order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tfrs_youtube.data.schema import WATCH_SOURCES, EventLog, validate
from tfrs_youtube.data.synthetic import (
    COUNTRIES,
    DEVICES,
    GENDERS,
    LANGUAGES,
    TOKENS_PER_TOPIC,
    SyntheticConfig,
    topic_names,
    topic_tokens,
)

# Click model (logit scale). Affinity is the user's interest share in the video's topic (0..1);
# the affinity weight dominates on purpose: it is what retrieval learns.
_CLICK_AFFINITY = 5.0
_CLICK_OTHER_LANGUAGE = -1.2
_CLICK_PER_LOG_DURATION = -0.5  # per unit of log(duration / 5 min): long videos are clicked less
_CLICK_PER_REPEAT = -0.7  # per earlier impression of the same video to the same user
_CLICK_PER_LOG_POPULARITY = 0.5  # the appeal that makes a video popular also earns it clicks
# Fresh videos draw clicks as they draw organic watches: per unit of log(floor + exp(-age/tau)),
# so a video's appeal falls by about 2.4 logits from upload to old age.
_CLICK_PER_LOG_FRESHNESS = 0.8
# Completion model: watch time = clip(round(duration x expit(mean + N(0, noise)), 0.1 s), 1 s,
# duration), the mean rising with affinity and falling with duration.
_COMPLETION_BASE = -0.5
_COMPLETION_AFFINITY = 3.0
_COMPLETION_PER_LOG_DURATION = -0.4
_COMPLETION_NOISE = 0.8
_MIN_WATCH_S = 1.0
_QUADRATURE_NODES = 40  # Gauss-Hermite nodes for E[watch time | click]
_TYPICAL_DURATION_S = 300.0
_HOME, _SEARCH, _RELATED, _EXTERNAL = (WATCH_SOURCES.index(s) for s in
                                       ("home", "search", "related", "external"))
_PAIRS_PER_CHUNK = 250_000  # (row, video) pairs scored at once by the oracle


@dataclasses.dataclass(frozen=True)
class PageResponse:
    """What the simulated users would do with pages of videos, per slot ([n, k] arrays).

    `click_probability` is the chance the slot is clicked, `watch_time_if_clicked` the expected
    seconds watched given a click, and `expected_watch_time` their product (0 when not clicked).
    Empty slots and videos not yet uploaded at the request time give 0 for both.
    """

    click_probability: np.ndarray
    watch_time_if_clicked: np.ndarray

    @property
    def expected_watch_time(self) -> np.ndarray:
        return self.click_probability * self.watch_time_if_clicked

    @property
    def page_watch_time(self) -> np.ndarray:
        """[n] expected seconds per page: the slots' sum, since slots do not interact."""
        return self.expected_watch_time.sum(axis=1)


class Simulator:
    """A YouTube-like service whose users respond to pages of recommendations, and the log it writes.

    The user model: a user u shown video v at time t clicks with probability
    expit(`click_logit`), which rises with u's interest in v's topic, a language match, v's
    popularity and freshness, and falls with v's duration and with how often v was already shown
    to u; given a click u watches duration x expit(`completion_logit` + N(0, 0.8)) seconds (at
    least 1 s), more for topics u likes. Each slot of a page is answered on its own: the position
    and the other videos on the page do not matter, so a page's expected watch time is the sum of
    its slots' (the assumption `best_pages` relies on).

    `Simulator(config)` draws the world (users: country, language, demographics, activity, topic
    interests; videos: topic, language, upload time, log popularity, duration), available as
    arrays indexed by user and video (`user_ids[i]`, `video_ids[j]` name them). `event_log()`
    then draws the events from the rng state the world left, so it gives the same tables every
    time, identical to `synthetic.generate(config)`. `respond` and `best_pages` answer queries
    with user and video indices (`user_index`, `video_index` map ids to them).
    """

    def __init__(self, config: SyntheticConfig):
        self.config = config
        rng = np.random.default_rng(config.seed)
        self.horizon = int(round(config.days * 86400))
        self.topics = topic_names(config.num_topics)
        num_topics, num_langs = config.num_topics, len(LANGUAGES)

        # Users: country -> language; demographics tilt the topic mixture (a prior per segment).
        n_users = config.num_users
        country_share = np.array([share for _, _, share in COUNTRIES])
        self.user_country = rng.choice(len(COUNTRIES), size=n_users, p=country_share / country_share.sum())
        country_lang = np.array([LANGUAGES.index(lang) for _, lang, _ in COUNTRIES])
        self.user_language = country_lang[self.user_country]
        lang_share = np.bincount(country_lang, weights=country_share, minlength=num_langs)
        self._lang_share = lang_share / lang_share.sum()
        self.user_gender = rng.choice(len(GENDERS), size=n_users, p=[0.46, 0.46, 0.08])
        self.user_age = np.clip(np.round(rng.normal(31.0, 12.0, n_users)), 13, 80)
        self.user_device = rng.choice(len(DEVICES), size=n_users, p=[0.6, 0.25, 0.1, 0.05])
        self.user_activity = rng.lognormal(-config.activity_sigma**2 / 2, config.activity_sigma, n_users)
        segment = self.user_gender * 3 + np.digitize(self.user_age, [25, 40])
        segment_pref = rng.dirichlet(np.ones(num_topics), size=len(GENDERS) * 3)
        alpha = config.topic_concentration * num_topics * (0.5 / num_topics + 0.5 * segment_pref[segment])
        interests = rng.gamma(alpha) + 1e-12  # Dirichlet rows; the epsilon avoids an all-zero row
        self.interests = interests / interests.sum(axis=1, keepdims=True)  # [users, topics]

        # Videos: unequal topic sizes, language like the audience, a back catalogue at time 0.
        n_videos = config.num_videos
        topic_share = rng.dirichlet(np.full(num_topics, 2.0))
        self.video_topic = rng.choice(num_topics, size=n_videos, p=topic_share)
        self.video_language = rng.choice(num_langs, size=n_videos, p=self._lang_share)
        back = rng.random(n_videos) < config.back_catalogue_fraction
        back[rng.integers(n_videos)] = True  # something is always available, even at t = 0
        self.upload_time = np.where(back, 0, rng.integers(1, self.horizon + 1, n_videos)).astype(np.int64)
        self.log_popularity = rng.normal(0.0, config.popularity_sigma, n_videos)
        topic_log_duration = rng.normal(0.0, 0.4, num_topics)  # music is short, lectures are long
        self.duration = np.clip(np.round(_TYPICAL_DURATION_S * np.exp(
            topic_log_duration[self.video_topic] + rng.normal(0.0, 0.8, n_videos))), 10, 4 * 3600
        ).astype(np.float64)
        self._events_state = rng.bit_generator.state  # event_log() starts every time from here

        self.tau = config.freshness_half_life_days * 86400 / np.log(2)
        upload, log_pop, floor = self.upload_time, self.log_popularity, config.freshness_floor
        self._samplers = [  # (topic, language), then any language of the topic, then anything
            _VideoSampler(self.video_topic * num_langs + self.video_language, num_topics * num_langs,
                          upload, log_pop, self.tau, floor),
            _VideoSampler(self.video_topic, num_topics, upload, log_pop, self.tau, floor),
            _VideoSampler(np.zeros(n_videos, np.int64), 1, upload, log_pop, self.tau, floor),
        ]
        self.user_ids, self.video_ids = _ids("u", n_users), _ids("v", n_videos)
        self._user_lookup, self._video_lookup = pd.Index(self.user_ids), pd.Index(self.video_ids)

    @property
    def num_users(self) -> int:
        return self.config.num_users

    @property
    def num_videos(self) -> int:
        return self.config.num_videos

    def user_index(self, user_ids) -> np.ndarray:
        """Indices of user ids; -1 for an unknown id (and for "")."""
        return _lookup(self._user_lookup, user_ids)

    def video_index(self, video_ids) -> np.ndarray:
        """Indices of video ids; -1 for an unknown id (and for "")."""
        return _lookup(self._video_lookup, video_ids)

    # --- the user model: one function per logit, used by the log writer and by respond ---------

    def click_logit(self, users: np.ndarray, times: np.ndarray, videos: np.ndarray,
                    shown_before: np.ndarray) -> np.ndarray:
        """Click logit of each (user, time, video, earlier impressions of it to the user); the
        arguments broadcast together, and every video must be uploaded by its time."""
        c = self.config
        return (c.base_click_logit
                + _CLICK_AFFINITY * self.interests[users, self.video_topic[videos]]
                + _CLICK_OTHER_LANGUAGE * (self.video_language[videos] != self.user_language[users])
                + _CLICK_PER_LOG_DURATION * np.log(self.duration[videos] / _TYPICAL_DURATION_S)
                + _CLICK_PER_REPEAT * shown_before
                + _CLICK_PER_LOG_POPULARITY * self.log_popularity[videos]
                + _CLICK_PER_LOG_FRESHNESS * np.log(c.freshness_floor
                                                    + np.exp(-(times - self.upload_time[videos]) / self.tau)))

    def completion_logit(self, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """Mean logit of the fraction of a clicked video watched; the draw adds N(0, 0.8) noise."""
        affinity = self.interests[users, self.video_topic[videos]]
        return (_COMPLETION_BASE + _COMPLETION_AFFINITY * affinity
                + _COMPLETION_PER_LOG_DURATION * np.log(self.duration[videos] / _TYPICAL_DURATION_S))

    def watch_time_if_clicked(self, users: np.ndarray, videos: np.ndarray, moment: int = 1) -> np.ndarray:
        """E[seconds watched | click] = E[max(1, duration x expit(m + 0.8 Z))], Z ~ N(0, 1), with m
        the `completion_logit`, by Gauss-Hermite quadrature (40 nodes) over Z; `moment=2` gives
        E[seconds^2 | click] (for variances).

        This is the expectation of what the log draws, clip(round(duration x expit(...), 0.1 s),
        1 s, duration), except for the rounding to 0.1 s, which is ignored (it moves a mean by far
        less than 0.05 s); the clip at the duration never binds, since expit < 1.
        """
        users, videos = np.broadcast_arrays(users, videos)
        mean, duration = self.completion_logit(users, videos).ravel(), self.duration[videos].ravel()
        nodes, weights = np.polynomial.hermite_e.hermegauss(_QUADRATURE_NODES)
        weights = weights / weights.sum()
        out = np.empty(len(mean))
        step = 8192  # pairs at a time: the [pairs, nodes] block stays in cache
        for start in range(0, len(mean), step):
            part = slice(start, start + step)
            # duration x expit(x) = d/2 + d/2 tanh(x/2), computed in place.
            half = 0.5 * duration[part, None]
            watched = np.add.outer(0.5 * mean[part], (0.5 * _COMPLETION_NOISE) * nodes)
            np.tanh(watched, out=watched)
            watched *= half
            watched += half
            np.maximum(watched, _MIN_WATCH_S, out=watched)
            out[part] = (watched if moment == 1 else watched**moment) @ weights
        return out.reshape(users.shape)

    def _draw_watch_time(self, rng: np.random.Generator, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """Seconds watched: the duration times a completion fraction that rises with affinity."""
        duration = self.duration[videos]
        logit = self.completion_logit(users, videos) + rng.normal(0.0, _COMPLETION_NOISE, len(videos))
        return np.clip(np.round(duration * _expit(logit), 1), _MIN_WATCH_S, duration)

    # --- answering pages ---------------------------------------------------------------------------

    def respond(self, users, times, pages, shown_before=None) -> PageResponse:
        """How users would respond to pages: users [n] and times [n] (seconds) index the requests,
        pages [n, k] holds video indices (-1 for an empty slot), shown_before [n, k] how many
        times each video was already shown to the user before (0 when omitted; see
        `shown_before`). A video uploaded after the request time cannot be watched: 0 and 0."""
        users, times, pages = self._requests(users, times, pages)
        if shown_before is None:
            shown_before = np.zeros(pages.shape, np.int64)
        shown_before = np.broadcast_to(np.asarray(shown_before), pages.shape)
        videos = np.maximum(pages, 0)
        live = (pages >= 0) & (self.upload_time[videos] <= times[:, None])
        at = np.where(live, times[:, None], self.upload_time[videos])  # no overflow where not live
        row_users = np.broadcast_to(users[:, None], pages.shape)
        click = np.where(live, _expit(self.click_logit(row_users, at, videos, shown_before)), 0.0)
        watch = np.where(live, self.watch_time_if_clicked(row_users, videos), 0.0)
        return PageResponse(click, watch)

    def best_pages(self, users, times, candidates, k: int, shown_before=None, exclude=None) -> np.ndarray:
        """The oracle: per request, the k candidates with the most expected watch time, best first.

        candidates [n, m] holds video indices (-1 for padding; repeats count once), or None for
        the whole corpus (m = num_videos, candidates[i] = 0..m-1). shown_before is [n, m] like
        `respond`'s. exclude is an optional pair (rows, videos) of index arrays: request rows[j]
        must not get videos[j] (e.g. `watched_before`'s pairs). Since slots do not interact, the
        k best single videos make the best page. Slots left without a candidate (uploaded by the
        time, not excluded) hold -1. Rows are scored in chunks, so memory stays bounded.
        """
        users = np.asarray(users, np.int64).ravel()
        times = np.asarray(times, np.int64).ravel()
        corpus = candidates is None
        m = self.num_videos if corpus else np.shape(candidates)[1]
        excluded_keys = None
        if exclude is not None:
            rows, videos = (np.asarray(a, np.int64).ravel() for a in exclude)
            excluded_keys = np.unique(rows * self.num_videos + videos)
            if len(excluded_keys) == 0:
                excluded_keys = None
        out = np.full((len(users), k), -1, np.int64)
        step = max(1, _PAIRS_PER_CHUNK // max(m, 1))
        for start in range(0, len(users), step):
            rows = np.arange(start, min(start + step, len(users)))
            if corpus:
                cand = np.broadcast_to(np.arange(m), (len(rows), m))
            else:
                cand = _first_occurrences(np.asarray(candidates, np.int64)[rows])
            seen = None if shown_before is None else np.asarray(shown_before)[rows]
            score = self.respond(users[rows], times[rows], cand, seen).expected_watch_time
            ok = (cand >= 0) & (self.upload_time[np.maximum(cand, 0)] <= times[rows, None])
            if excluded_keys is not None:
                keys = rows[:, None] * self.num_videos + cand
                pos = np.minimum(np.searchsorted(excluded_keys, keys), len(excluded_keys) - 1)
                ok &= excluded_keys[pos] != keys
            score = np.where(ok, score, -np.inf)
            best = np.argsort(-score, axis=1, kind="stable") if k >= m else (
                np.argpartition(-score, k - 1, axis=1)[:, :k])
            best = np.take_along_axis(best, np.argsort(-np.take_along_axis(score, best, 1), 1, kind="stable"), 1)
            best = best[:, :k]
            picked = np.take_along_axis(np.asarray(cand), best, 1)
            out[rows, :best.shape[1]] = np.where(np.take_along_axis(ok, best, 1), picked, -1)
        return out

    def _requests(self, users, times, pages) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        users = np.asarray(users, np.int64).ravel()
        times = np.asarray(times).ravel()
        pages = np.asarray(pages, np.int64)
        if pages.ndim != 2 or pages.shape[0] != len(users) or len(times) != len(users):
            raise ValueError(f"users [n], times [n] and pages [n, k] disagree: {len(users)}, "
                             f"{len(times)}, {pages.shape}")
        if len(users) and (users.min() < 0 or users.max() >= self.num_users):
            raise ValueError("user indices must be in [0, num_users)")
        if pages.size and (pages.min() < -1 or pages.max() >= self.num_videos):
            raise ValueError("video indices must be in [0, num_videos), or -1 for an empty slot")
        return users, times, pages

    # --- what a log says about a request -----------------------------------------------------------

    def shown_before(self, impressions: pd.DataFrame, users, times, pages) -> np.ndarray:
        """[n, k] counts of `impressions` rows of (users[i], pages[i, j]) strictly before times[i]:
        the `shown_before` of `respond` for requests after (or inside) a log."""
        return count_before(self.user_index(impressions.user_id), self.video_index(impressions.video_id),
                            impressions.time.to_numpy(), users, times, pages)

    def log_shown_before(self, impressions: pd.DataFrame) -> np.ndarray:
        """Per row of a log's impressions table, the earlier impressions of its (user, video), as
        the log writer counted them: rows at the same second count in table order (which keeps
        the order they were drawn in), so `respond` on the log's own rows uses exactly these."""
        key = self.user_index(impressions.user_id) * self.num_videos + self.video_index(impressions.video_id)
        return _earlier_occurrences(key, impressions.time.to_numpy())

    def watched_before(self, watches: pd.DataFrame, users, times) -> tuple[np.ndarray, np.ndarray]:
        """(rows, videos): every video request row i's user watched strictly before times[i],
        in the form `best_pages(exclude=...)` takes."""
        users = np.asarray(users, np.int64).ravel()
        times = np.asarray(times).ravel()
        w_user, w_video = self.user_index(watches.user_id), self.video_index(watches.video_id)
        order = np.argsort(w_user, kind="stable")
        w_user, w_video, w_time = w_user[order], w_video[order], watches.time.to_numpy()[order]
        start, end = np.searchsorted(w_user, users, "left"), np.searchsorted(w_user, users, "right")
        rows = np.repeat(np.arange(len(users)), end - start)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(end - start) - (end - start), end - start)
        events = start[rows] + offsets
        before = w_time[events] < times[rows]
        return rows[before], w_video[events[before]]

    # --- the log ---------------------------------------------------------------------------------

    def event_log(self) -> EventLog:
        """Draws the events (the same tables on every call) and returns the validated log."""
        rng = np.random.default_rng(0)
        rng.bit_generator.state = self._events_state
        config, n_users, n_videos = self.config, self.num_users, self.num_videos

        # Organic watches: per event a topic from the user's mixture, then a video by _pick().
        n_watch = np.maximum(config.min_watches_per_user,
                             rng.poisson(config.watches_per_user * self.user_activity))
        w_user = np.repeat(np.arange(n_users), n_watch)
        w_time = rng.integers(0, self.horizon + 1, len(w_user))
        w_time = w_time[np.lexsort((w_time, w_user))]  # users are already in order; sort time within
        source_p = np.zeros(len(WATCH_SOURCES))
        source_p[[_SEARCH, _RELATED, _EXTERNAL]] = (config.search_fraction, config.related_fraction,
                                                    config.external_fraction)
        source_p[_HOME] = max(0.0, 1.0 - source_p.sum())
        w_source = rng.choice(len(WATCH_SOURCES), size=len(w_user), p=source_p / source_p.sum())
        w_topic = _draw_rows(self.interests, w_user, rng)
        # A "related" watch continues the topic of the user's last watch that was not itself related.
        anchor = np.maximum.accumulate(np.where(w_source != _RELATED, np.arange(len(w_user)), -1))
        follows = (w_source == _RELATED) & (anchor >= 0) & (w_user[np.maximum(anchor, 0)] == w_user)
        w_topic[follows] = w_topic[anchor[follows]]
        w_video = self._pick(rng, w_user, w_topic, w_time)
        # People rarely watch the same video twice (and a recommender does not offer it again):
        # redraw repeats for a few rounds, keeping a `rewatch_prob` share as genuine re-watches.
        keep_repeat = rng.random(len(w_user)) < config.rewatch_prob
        for _ in range(5):
            again = (_earlier_occurrences(w_user * n_videos + w_video, w_time) > 0) & ~keep_repeat
            if not again.any():
                break
            w_video[again] = self._pick(rng, w_user[again], w_topic[again], w_time[again])
        first_watch = pd.Series(w_time).groupby(w_user * n_videos + w_video).min()
        w_watch_time = self._draw_watch_time(rng, w_user, w_video)

        # Searches: one 10-120 s before each search-led watch, with tokens of the watched video's
        # topic; plus unanswered searches on the user's interests at random times.
        led = np.flatnonzero(w_source == _SEARCH)
        s_led_time = np.maximum(0, w_time[led] - rng.integers(10, 121, len(led)))
        extra_rate = config.unanswered_search_fraction / (1.0 - config.unanswered_search_fraction)
        extra_user = w_user[led][rng.random(len(led)) < extra_rate]
        s_user = np.concatenate([w_user[led], extra_user])
        s_time = np.concatenate([s_led_time, rng.integers(0, self.horizon + 1, len(extra_user))])
        s_topic = np.concatenate([self.video_topic[w_video[led]], _draw_rows(self.interests, extra_user, rng)])
        s_query = _queries(self.topics, s_topic, rng)

        # Impressions: pages of page_size distinct videos from the user's mixture plus exploration,
        # answered by the user model (click_logit, then a watch time drawn for every row).
        i_user, i_time, i_video = self._impression_slots(rng, first_watch)
        shown_before = _earlier_occurrences(i_user * n_videos + i_video, i_time)
        clicked = rng.random(len(i_user)) < _expit(self.click_logit(i_user, i_time, i_video, shown_before))
        i_watch_time = np.where(clicked, self._draw_watch_time(rng, i_user, i_video), 0.0)

        # Organic watches that still repeat an earlier watch (organic, or a home click) are dropped,
        # but for the genuine re-watches...
        repeat = _earlier_occurrences(np.concatenate([w_user * n_videos + w_video,
                                                      i_user[clicked] * n_videos + i_video[clicked]]),
                                      np.concatenate([w_time, i_time[clicked]]))[: len(w_user)] > 0
        kept = ~repeat | keep_repeat
        # ...unless that would leave a user below the minimum history the splits rely on.
        short = np.bincount(w_user[kept], minlength=n_users) < config.min_watches_per_user
        kept |= short[w_user]
        w_user, w_time, w_video, w_watch_time, w_source = (
            w_user[kept], w_time[kept], w_video[kept], w_watch_time[kept], w_source[kept])

        # Every clicked impression is also a home watch at the same time.
        user_ids, video_ids = self.user_ids, self.video_ids
        watches = _by_user_time(
            user_ids, np.concatenate([w_user, i_user[clicked]]), np.concatenate([w_time, i_time[clicked]]),
            video_id=video_ids[np.concatenate([w_video, i_video[clicked]])],
            watch_time_s=np.concatenate([w_watch_time, i_watch_time[clicked]]),
            source=np.array(WATCH_SOURCES)[np.concatenate([w_source, np.full(clicked.sum(), _HOME)])],
        )
        searches = _by_user_time(user_ids, s_user, s_time, query=s_query)
        impressions = _by_user_time(user_ids, i_user, i_time, video_id=video_ids[i_video],
                                    clicked=clicked.astype(np.int8), watch_time_s=i_watch_time)
        log = EventLog(self._users_table(), self._videos_table(), watches, searches, impressions,
                       name="synthetic", notes=dict(_NOTES))
        validate(log)
        return log

    def _impression_slots(self, rng: np.random.Generator, first_watch: pd.Series
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user, time, video) per shown slot: pages of distinct videos not watched before."""
        config, n_videos = self.config, self.num_videos
        n_pages = rng.poisson(config.impression_pages_per_user * self.user_activity)
        p_user = np.repeat(np.arange(self.num_users), n_pages)
        p_time = rng.integers(0, self.horizon + 1, len(p_user))
        i_page = np.repeat(np.arange(len(p_user)), config.page_size)
        i_user, i_time = p_user[i_page], p_time[i_page]
        slot_probs = (1 - config.explore_fraction) * self.interests + config.explore_fraction / config.num_topics
        i_video = self._pick(rng, i_user, _draw_rows(slot_probs, i_user, rng), i_time)
        for _ in range(3):  # redraw videos repeated within a page or already watched; drop the few left
            dup = pd.Series(i_page * n_videos + i_video).duplicated().to_numpy().copy()
            dup |= first_watch.reindex(i_user * n_videos + i_video).to_numpy() < i_time
            if not dup.any():
                break
            i_video[dup] = self._pick(rng, i_user[dup], _draw_rows(slot_probs, i_user[dup], rng), i_time[dup])
        keep = ~pd.Series(i_page * n_videos + i_video).duplicated().to_numpy().copy()
        keep &= ~(first_watch.reindex(i_user * n_videos + i_video).to_numpy() < i_time)
        return i_user[keep], i_time[keep], i_video[keep]

    def _pick(self, rng: np.random.Generator, user: np.ndarray, topic: np.ndarray, t: np.ndarray) -> np.ndarray:
        """A video of `topic` in the user's language (usually), popular and fresh at time t."""
        num_langs = len(LANGUAGES)
        own = rng.random(len(user)) < self.config.own_language_prob
        lang = np.where(own, self.user_language[user], rng.choice(num_langs, size=len(user), p=self._lang_share))
        u = 1.0 - rng.random((2, len(user)))
        video = self._samplers[0].sample(topic * num_langs + lang, t, u)
        for sampler, group in ((self._samplers[1], topic), (self._samplers[2], np.zeros_like(topic))):
            miss = video < 0
            if miss.any():
                video[miss] = sampler.sample(group[miss], t[miss], u[:, miss])
        return video

    def _users_table(self) -> pd.DataFrame:
        return pd.DataFrame({
            "user_id": self.user_ids, "country": np.array([c for c, _, _ in COUNTRIES])[self.user_country],
            "language": np.array(LANGUAGES)[self.user_language], "gender": np.array(GENDERS)[self.user_gender],
            "age": self.user_age.astype(np.float64), "device": np.array(DEVICES)[self.user_device],
        })

    def _videos_table(self) -> pd.DataFrame:
        return pd.DataFrame({
            "video_id": self.video_ids, "upload_time": self.upload_time,
            "language": np.array(LANGUAGES)[self.video_language], "duration_s": self.duration,
            "topic": np.array(self.topics)[self.video_topic],
        })


_NOTES = {
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
                   "duration and repeated exposure; clicked rows carry the watch time. The simulator's "
                   "user model (data.simulator.Simulator.respond) gives each row's click probability "
                   "and expected watch time.",
}


def count_before(event_users, event_videos, event_times, users, times, videos) -> np.ndarray:
    """How many events of (users[i], videos[i, ...]) happened strictly before times[i].

    All in indices (a video of -1 counts 0). With a log's impressions as the events this is
    `respond`'s shown_before, with its watches how often each video was already watched.
    """
    event_users, event_videos = np.asarray(event_users, np.int64), np.asarray(event_videos, np.int64)
    event_times = np.asarray(event_times, np.int64)
    users = np.asarray(users, np.int64).ravel()
    times = np.asarray(times, np.int64).ravel()
    shape = np.shape(videos)
    videos = np.asarray(videos, np.int64).reshape(len(users), -1)
    counts = np.zeros(videos.shape, np.int64)
    if len(event_users) == 0:
        return counts.reshape(shape)
    width = int(max(event_videos.max(), videos.max(), 0)) + 1
    order = np.lexsort((event_times, event_users * width + event_videos))
    keys, first = np.unique((event_users * width + event_videos)[order], return_index=True)
    t0 = event_times.min()
    span = int(event_times.max() - t0) + 2  # an event's offset is < span - 1
    group = np.repeat(np.arange(len(keys)), np.diff(np.r_[first, len(order)]))
    sorted_events = group * span + (event_times[order] - t0)
    query = users[:, None] * width + videos
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    found = (videos >= 0) & (keys[pos] == query)
    offset = np.clip(times[:, None] - t0, 0, span - 1)
    below = np.searchsorted(sorted_events, pos * span + offset, side="left") - first[pos]
    counts[found] = below[found]
    return counts.reshape(shape)


def _lookup(index: pd.Index, ids) -> np.ndarray:
    """Positions of ids in an index of ids, in the ids' shape; -1 for an unknown id."""
    return index.get_indexer(np.asarray(ids, dtype=object).ravel()).reshape(np.shape(ids))


def _first_occurrences(videos: np.ndarray) -> np.ndarray:
    """The rows with repeats of a video replaced by -1 (the first occurrence stays)."""
    order = np.argsort(videos, axis=1, kind="stable")
    ordered = np.take_along_axis(videos, order, 1)
    repeat = np.zeros(videos.shape, bool)
    repeat[:, 1:] = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    out = videos.copy()
    np.put_along_axis(out, order, np.where(repeat, -1, ordered), 1)
    return out


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
    """For each row, how many rows with the same key come earlier in time (ties: in row order)."""
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
