"""Drawing a simulated event log: the watches, searches and impressions that a `Simulator`'s
users produce over the window, as the tables of `schema.py`.

The world (users, videos) and the user model live in `simulator`; this is the log writer that
`Simulator.event_log` runs, and it plants the shapes of traffic the paper's features exist for:

- organic watches: per event a topic from the user's mixture ("related" watches keep the topic
  of the user's last other watch), usually in the user's language, and a video uploaded before
  the event with probability popularity x (floor + exp(-age / tau)) (`_VideoSampler`): fresh
  uploads draw attention that decays with age, which the paper's "example age" feature exists
  to model;
- searches whose tokens come from the topic the user then watches, so search history predicts;
- impressions: pages of distinct videos from the user's topics plus exploration, clicked and
  watched as the user model says (`Simulator.click_logit`, `Simulator._draw_watch_time`); every
  clicked impression is also a home watch.

All randomness comes from the generator in the state the world left it, drawn in a fixed order,
so the same config gives the same tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfrs_youtube.data.event_counts import earlier_occurrences
from tfrs_youtube.data.schema import WATCH_SOURCES, EventLog, validate
from tfrs_youtube.data.simulator import Simulator, _expit
from tfrs_youtube.data.synthetic import COUNTRIES, DEVICES, GENDERS, LANGUAGES, TOKENS_PER_TOPIC, topic_tokens

_HOME, _SEARCH, _RELATED, _EXTERNAL = (WATCH_SOURCES.index(s) for s in
                                       ("home", "search", "related", "external"))


def draw_event_log(sim: Simulator, rng: np.random.Generator) -> EventLog:
    """Draws the events of `sim`'s world with `rng` (the generator in the state the world left)
    and returns the validated log."""
    config, n_users, n_videos = sim.config, sim.num_users, sim.num_videos
    pick = _VideoPicker(sim)

    # Organic watches: per event a topic from the user's mixture, then a video by pick().
    n_watch = np.maximum(config.min_watches_per_user,
                         rng.poisson(config.watches_per_user * sim.user_activity))
    w_user = np.repeat(np.arange(n_users), n_watch)
    w_time = rng.integers(0, sim.horizon + 1, len(w_user))
    w_time = w_time[np.lexsort((w_time, w_user))]  # users are already in order; sort time within
    source_p = np.zeros(len(WATCH_SOURCES))
    source_p[[_SEARCH, _RELATED, _EXTERNAL]] = (config.search_fraction, config.related_fraction,
                                                config.external_fraction)
    source_p[_HOME] = max(0.0, 1.0 - source_p.sum())
    w_source = rng.choice(len(WATCH_SOURCES), size=len(w_user), p=source_p / source_p.sum())
    w_topic = _draw_rows(sim.interests, w_user, rng)
    # A "related" watch continues the topic of the user's last watch that was not itself related.
    anchor = np.maximum.accumulate(np.where(w_source != _RELATED, np.arange(len(w_user)), -1))
    follows = (w_source == _RELATED) & (anchor >= 0) & (w_user[np.maximum(anchor, 0)] == w_user)
    w_topic[follows] = w_topic[anchor[follows]]
    w_video = pick(rng, w_user, w_topic, w_time)
    # People rarely watch the same video twice (and a recommender does not offer it again):
    # redraw repeats for a few rounds, keeping a `rewatch_prob` share as genuine re-watches.
    keep_repeat = rng.random(len(w_user)) < config.rewatch_prob
    for _ in range(5):
        again = (earlier_occurrences(w_user * n_videos + w_video, w_time) > 0) & ~keep_repeat
        if not again.any():
            break
        w_video[again] = pick(rng, w_user[again], w_topic[again], w_time[again])
    first_watch = pd.Series(w_time).groupby(w_user * n_videos + w_video).min()
    w_watch_time = sim._draw_watch_time(rng, w_user, w_video)

    # Searches: one 10-120 s before each search-led watch, with tokens of the watched video's
    # topic; plus unanswered searches on the user's interests at random times.
    led = np.flatnonzero(w_source == _SEARCH)
    s_led_time = np.maximum(0, w_time[led] - rng.integers(10, 121, len(led)))
    extra_rate = config.unanswered_search_fraction / (1.0 - config.unanswered_search_fraction)
    extra_user = w_user[led][rng.random(len(led)) < extra_rate]
    s_user = np.concatenate([w_user[led], extra_user])
    s_time = np.concatenate([s_led_time, rng.integers(0, sim.horizon + 1, len(extra_user))])
    s_topic = np.concatenate([sim.video_topic[w_video[led]], _draw_rows(sim.interests, extra_user, rng)])
    s_query = _queries(sim.topics, s_topic, rng)

    # Impressions: pages of page_size distinct videos from the user's mixture plus exploration,
    # answered by the user model (click_logit, then a watch time drawn for every row).
    i_user, i_time, i_video = _impression_slots(sim, pick, rng, first_watch)
    shown_before = earlier_occurrences(i_user * n_videos + i_video, i_time)
    clicked = rng.random(len(i_user)) < _expit(sim.click_logit(i_user, i_time, i_video, shown_before))
    i_watch_time = np.where(clicked, sim._draw_watch_time(rng, i_user, i_video), 0.0)

    # Organic watches that still repeat an earlier watch (organic, or a home click) are dropped,
    # but for the genuine re-watches...
    repeat = earlier_occurrences(np.concatenate([w_user * n_videos + w_video,
                                                 i_user[clicked] * n_videos + i_video[clicked]]),
                                 np.concatenate([w_time, i_time[clicked]]))[: len(w_user)] > 0
    kept = ~repeat | keep_repeat
    # ...unless that would leave a user below the minimum history the splits rely on.
    short = np.bincount(w_user[kept], minlength=n_users) < config.min_watches_per_user
    kept |= short[w_user]
    w_user, w_time, w_video, w_watch_time, w_source = (
        w_user[kept], w_time[kept], w_video[kept], w_watch_time[kept], w_source[kept])

    # Every clicked impression is also a home watch at the same time.
    user_ids, video_ids = sim.user_ids, sim.video_ids
    watches = _by_user_time(
        user_ids, np.concatenate([w_user, i_user[clicked]]), np.concatenate([w_time, i_time[clicked]]),
        video_id=video_ids[np.concatenate([w_video, i_video[clicked]])],
        watch_time_s=np.concatenate([w_watch_time, i_watch_time[clicked]]),
        source=np.array(WATCH_SOURCES)[np.concatenate([w_source, np.full(clicked.sum(), _HOME)])],
    )
    searches = _by_user_time(user_ids, s_user, s_time, query=s_query)
    impressions = _by_user_time(user_ids, i_user, i_time, video_id=video_ids[i_video],
                                clicked=clicked.astype(np.int8), watch_time_s=i_watch_time)
    log = EventLog(_users_table(sim), _videos_table(sim), watches, searches, impressions,
                   name="synthetic", notes=dict(_NOTES))
    validate(log)
    return log


def _impression_slots(sim: Simulator, pick: _VideoPicker, rng: np.random.Generator,
                      first_watch: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, time, video) per shown slot: pages of distinct videos not watched before."""
    config, n_videos = sim.config, sim.num_videos
    n_pages = rng.poisson(config.impression_pages_per_user * sim.user_activity)
    p_user = np.repeat(np.arange(sim.num_users), n_pages)
    p_time = rng.integers(0, sim.horizon + 1, len(p_user))
    i_page = np.repeat(np.arange(len(p_user)), config.page_size)
    i_user, i_time = p_user[i_page], p_time[i_page]
    slot_probs = (1 - config.explore_fraction) * sim.interests + config.explore_fraction / config.num_topics
    i_video = pick(rng, i_user, _draw_rows(slot_probs, i_user, rng), i_time)
    for _ in range(3):  # redraw videos repeated within a page or already watched; drop the few left
        dup = pd.Series(i_page * n_videos + i_video).duplicated().to_numpy().copy()
        dup |= first_watch.reindex(i_user * n_videos + i_video).to_numpy() < i_time
        if not dup.any():
            break
        i_video[dup] = pick(rng, i_user[dup], _draw_rows(slot_probs, i_user[dup], rng), i_time[dup])
    keep = ~pd.Series(i_page * n_videos + i_video).duplicated().to_numpy().copy()
    keep &= ~(first_watch.reindex(i_user * n_videos + i_video).to_numpy() < i_time)
    return i_user[keep], i_time[keep], i_video[keep]


class _VideoPicker:
    """Picks organic videos: from the (topic, language) group, else any language of the topic,
    else anything uploaded by the time."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        num_topics, num_langs, n_videos = sim.config.num_topics, len(LANGUAGES), sim.num_videos
        upload, log_pop, floor = sim.upload_time, sim.log_popularity, sim.config.freshness_floor
        self._samplers = [  # (topic, language), then any language of the topic, then anything
            _VideoSampler(sim.video_topic * num_langs + sim.video_language, num_topics * num_langs,
                          upload, log_pop, sim.tau, floor),
            _VideoSampler(sim.video_topic, num_topics, upload, log_pop, sim.tau, floor),
            _VideoSampler(np.zeros(n_videos, np.int64), 1, upload, log_pop, sim.tau, floor),
        ]

    def __call__(self, rng: np.random.Generator, user: np.ndarray, topic: np.ndarray, t: np.ndarray) -> np.ndarray:
        """A video of `topic` in the user's language (usually), popular and fresh at time t."""
        num_langs = len(LANGUAGES)
        sim = self.sim
        own = rng.random(len(user)) < sim.config.own_language_prob
        lang = np.where(own, sim.user_language[user], rng.choice(num_langs, size=len(user), p=sim.language_share))
        u = 1.0 - rng.random((2, len(user)))
        video = self._samplers[0].sample(topic * num_langs + lang, t, u)
        for sampler, group in ((self._samplers[1], topic), (self._samplers[2], np.zeros_like(topic))):
            miss = video < 0
            if miss.any():
                video[miss] = sampler.sample(group[miss], t[miss], u[:, miss])
        return video


def _users_table(sim: Simulator) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": sim.user_ids, "country": np.array([c for c, _, _ in COUNTRIES])[sim.user_country],
        "language": np.array(LANGUAGES)[sim.user_language], "gender": np.array(GENDERS)[sim.user_gender],
        "age": sim.user_age.astype(np.float64), "device": np.array(DEVICES)[sim.user_device],
    })


def _videos_table(sim: Simulator) -> pd.DataFrame:
    return pd.DataFrame({
        "video_id": sim.video_ids, "upload_time": sim.upload_time,
        "language": np.array(LANGUAGES)[sim.video_language], "duration_s": sim.duration,
        "topic": np.array(sim.topics)[sim.video_topic],
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
