"""The simulated YouTube-like service as an object: a world of users and videos, and the user
model that says how those users would respond to any page of videos.

The paper's methods exist because real logs have particular shapes, so the simulator plants each
of them, and tests measure them. The world and the user model here plant:

- heavy-tailed popularity (a lognormal base popularity per video), which is why the retrieval
  loss needs the log Q correction and sampled negatives;
- users with a few dominant topics (a sparse Dirichlet mixture, tilted by a demographic segment
  so that demographics help new users) and a country with its language, so watch history,
  geography and language are all informative;
- clicks that depend on topic affinity, language, duration, popularity, freshness and repeated
  exposure, and a watch time that rises with affinity, so the ranker has something to learn.

The log writer (`simulated_log`, which `Simulator.event_log` runs) plants the rest: searches whose
tokens predict the next watch, and fresh uploads whose attention decays with age.

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

from tfrs_youtube.data.event_counts import count_before, earlier_occurrences
from tfrs_youtube.data.schema import EventLog
from tfrs_youtube.data.synthetic import (
    COUNTRIES,
    DEVICES,
    GENDERS,
    LANGUAGES,
    SyntheticConfig,
    topic_names,
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
        self.language_share = lang_share / lang_share.sum()
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
        self.video_language = rng.choice(num_langs, size=n_videos, p=self.language_share)
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
        return earlier_occurrences(key, impressions.time.to_numpy())

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
        from tfrs_youtube.data.simulated_log import draw_event_log  # which imports this module

        rng = np.random.default_rng(0)
        rng.bit_generator.state = self._events_state
        return draw_event_log(self, rng)


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

