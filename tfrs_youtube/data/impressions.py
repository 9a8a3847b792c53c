"""Impressions derived, from the past only, for event logs that record none (MovieLens).

The ranker learns from impressions: what a page showed, clicked or not. MovieLens records only
what was rated, so for it the impressions must be made up, and made up without peeking at the
future: a derived impression that used later events would hand the ranker information no
recommender of that day had, and its offline scores would flatter it.

The rule (`describe` puts it into `EventLog.notes`): a page is one user's watches at one second t.
It shows each of those watches' videos as a clicked impression (with the watch's watch_time_s),
plus `shown_per_watch` unclicked impressions per watch (clicked 0, watch_time_s 0) of distinct
other videos. An unclicked video is drawn, without replacement, with probability proportional to
its number of watches strictly before t (popularity to date: what a recommender of that day would
show), among the videos that are *available* at t: uploaded at or before t and watched by someone
strictly before t (in the catalogue), and not watched by this user at or before t (so a page never
shows a video both clicked and unclicked, nor one the user already saw). When fewer videos
qualify, the page shows fewer (possibly none).

How it stays exact and fast (no table of popularity per second is ever built):

- Drawing a video in proportion to its watches strictly before t is drawing one of those watches
  uniformly and taking its video: a random index below `searchsorted(watch_times, t)` in the
  watches sorted by time.
- Draws that break a condition (uploaded later, watched by the user, already on the page) are
  rejected; the first accepted distinct draws of a page are exactly successive sampling without
  replacement from the restricted distribution.
- A page still short after a few rounds (its pool is small, or mostly watched by the user) is
  finished exactly: the weights of every video at t are computed and the rest of the page is drawn
  with exponential keys (the Efraimidis-Spirakis race), which continues the same sampling and
  leaves a page short only when no other video qualifies.
- Randomness: one generator per day, `np.random.default_rng([seed, time // 86400])`, consumed
  only by that day's pages in a fixed order. A day's impressions therefore depend on the seed and
  on events up to that day, never later ones: cutting the log at a day boundary leaves every
  earlier impression unchanged (tests/test_impressions.py checks it).

Ids are ranked by their sorted string values, so the output does not depend on the order of the
rows of the users, videos and watches tables. MovieLens 100K derives in under a second, a log of
1M watches in about 8 s (about half of it validating the 5M-row result).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tfrs_youtube.data.schema import EventLog, SchemaError, empty_table

DAY_S = 86_400
# Rejection rounds: a page draws (slots still empty x factor) candidates per round. Most pages
# fill in the first round; the growing factors serve heavy users, whose own history holds most
# of the popular mass. Whatever is still empty afterwards goes to the exact pass.
_DRAW_FACTORS = (2, 4, 16, 64)
# Pages handled together (whole days; only memory depends on it, never the result).
_BLOCK_PAGES = 50_000
# Size of a (pages x videos) weight grid in the exact pass.
_EXACT_CELLS = 4_000_000


def describe(shown_per_watch: int, seed: int) -> str:
    """The `notes["impressions"]` sentence: how the impressions were derived, never observed."""
    return (
        "Derived, never observed (the source records no impressions): a page is one user's watches "
        "at one second t; each watch is a clicked impression with its watch_time_s, and the page "
        f"adds {shown_per_watch} unclicked impressions per watch (clicked 0, watch_time_s 0) of "
        "distinct other videos, drawn without replacement with probability proportional to their "
        "number of watches strictly before t, among videos uploaded at or before t, watched by "
        "someone strictly before t and not watched by this user at or before t (fewer when fewer "
        f"qualify); only events up to t are used, randomness seeded by (seed={seed}, day of t)."
    )


@dataclasses.dataclass
class _Past:
    """The watches, indexed so that every "what happened strictly before t" is a searchsorted.

    Videos and users are codes (ranks of their sorted ids); `num_videos` is the videos table's size.
    """

    times: np.ndarray  # watch times, sorted by (time, user, video)
    videos: np.ndarray  # the video of each sorted watch
    pair_keys: np.ndarray  # sorted unique user * num_videos + video
    pair_first: np.ndarray  # first watch time of each pair
    video_keys: np.ndarray  # sorted video * span + (time - t0): each video's watch times
    t0: int
    span: int
    upload: np.ndarray  # upload_time per video code
    num_videos: int

    @classmethod
    def index(cls, users: np.ndarray, videos: np.ndarray, times: np.ndarray, upload: np.ndarray) -> _Past:
        num_videos = len(upload)
        order = np.lexsort((videos, users, times))
        pairs = users * num_videos + videos
        by_pair = np.lexsort((times, pairs))
        first = np.r_[True, pairs[by_pair][1:] != pairs[by_pair][:-1]]
        t0 = int(times.min())
        span = int(times.max()) - t0 + 2
        return cls(
            times=times[order], videos=videos[order],
            pair_keys=pairs[by_pair][first], pair_first=times[by_pair][first],
            video_keys=np.sort(videos * span + (times - t0)), t0=t0, span=span,
            upload=upload, num_videos=num_videos,
        )

    def watched_by(self, users: np.ndarray, videos: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Whether each user watched each video at or before each time (arrays broadcast)."""
        keys = np.asarray(users, np.int64) * self.num_videos + videos
        at = np.minimum(np.searchsorted(self.pair_keys, keys), len(self.pair_keys) - 1)
        return (self.pair_keys[at] == keys) & (self.pair_first[at] <= times)

    def weights(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(pages x videos) watches strictly before each page's time, 0 where not available."""
        grid = np.arange(self.num_videos, dtype=np.int64)
        start = np.searchsorted(self.video_keys, grid * self.span)
        before = np.searchsorted(self.video_keys, grid[None, :] * self.span + (times[:, None] - self.t0))
        counts = (before - start[None, :]).astype(np.float64)
        counts[self.upload[None, :] > times[:, None]] = 0.0
        counts[self.watched_by(users[:, None], grid[None, :], times[:, None])] = 0.0
        return counts


class _DayStreams:
    """One random generator per day, created on first use from (seed, day).

    Each day's generator is drawn from only for that day's pages, in page order, so what a day
    gets does not depend on which other days are in the log (or in the same block).
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._generators: dict[int, np.random.Generator] = {}

    def __call__(self, day: int) -> np.random.Generator:
        if day not in self._generators:
            self._generators[day] = np.random.default_rng([self.seed, day])
        return self._generators[day]

    def uniforms(self, days: np.ndarray) -> np.ndarray:
        """One uniform per entry of a non-decreasing array of days, each from its day's stream."""
        if len(days) == 0:
            return np.zeros(0)
        starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
        counts = np.diff(np.r_[starts, len(days)])
        return np.concatenate([self(int(days[s])).random(c) for s, c in zip(starts, counts)])


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal values in an array sorted by them."""
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if len(values) else np.zeros(0, int)
    return list(zip(starts.tolist(), np.r_[starts[1:], len(values)].tolist()))


def _blocks(days: np.ndarray, max_pages: int) -> list[tuple[int, int]]:
    """Consecutive whole days grouped into blocks of about `max_pages` pages (for memory only)."""
    blocks: list[tuple[int, int]] = []
    for start, stop in _runs(days):
        if blocks and stop - blocks[-1][0] <= max_pages:
            blocks[-1] = (blocks[-1][0], stop)
        else:
            blocks.append((start, stop))
    return blocks


def _first_new(old_keys: np.ndarray, new_keys: np.ndarray) -> np.ndarray:
    """For each new key, whether it is its first occurrence and not among the old keys."""
    keys = np.concatenate([old_keys, new_keys])
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return (first[inverse.ravel()] == np.arange(len(keys)))[len(old_keys):]


def _rank_in_page(pages: np.ndarray) -> np.ndarray:
    """Position of each entry among the entries of its page (pages sorted, non-decreasing)."""
    return np.arange(len(pages)) - np.searchsorted(pages, pages, side="left")


@dataclasses.dataclass
class _Block:
    """The pages of one block of whole days and what has been drawn for them so far."""

    users: np.ndarray
    times: np.ndarray
    days: np.ndarray
    remaining: np.ndarray  # unclicked slots still empty
    available: np.ndarray  # watches strictly before each page's time
    chosen_page: np.ndarray
    chosen_video: np.ndarray

    def add(self, pages: np.ndarray, videos: np.ndarray) -> None:
        self.chosen_page = np.concatenate([self.chosen_page, pages])
        self.chosen_video = np.concatenate([self.chosen_video, videos])
        self.remaining -= np.bincount(pages, minlength=len(self.remaining))


def _rejection_round(past: _Past, block: _Block, streams: _DayStreams, factor: int) -> None:
    """Draws `factor` candidates per empty slot from the watches before each page; keeps, in draw
    order, the distinct ones that pass the conditions, up to the page's empty slots."""
    active = np.flatnonzero(block.remaining > 0)
    page = np.repeat(active, block.remaining[active] * factor)
    draw = (streams.uniforms(block.days[page]) * block.available[page]).astype(np.int64)
    video = past.videos[np.minimum(draw, block.available[page] - 1)]
    time = block.times[page]
    ok = (past.upload[video] <= time) & ~past.watched_by(block.users[page], video, time)
    page, video = page[ok], video[ok]
    old = block.chosen_page * past.num_videos + block.chosen_video
    new = _first_new(old, page * past.num_videos + video)
    page, video = page[new], video[new]
    keep = _rank_in_page(page) < block.remaining[page]
    block.add(page[keep], video[keep])


def _exact_pass(past: _Past, block: _Block, pages: np.ndarray, rng: np.random.Generator) -> None:
    """Fills the given pages (all of one day) from their full weights: exponential keys
    E / weight, smallest first, are successive sampling without replacement in proportion to the
    weight, so this continues what the rejection rounds started."""
    weights = past.weights(block.users[pages], block.times[pages])
    local = np.full(len(block.remaining), -1)
    local[pages] = np.arange(len(pages))
    mine = local[block.chosen_page] >= 0
    weights[local[block.chosen_page[mine]], block.chosen_video[mine]] = 0.0  # already on the page
    with np.errstate(divide="ignore"):
        keys = rng.exponential(size=weights.shape) / weights  # inf where not available
    take = np.minimum(block.remaining[pages], np.count_nonzero(weights > 0, axis=1))
    most = int(take.max(initial=0))
    if most == 0:
        return
    smallest = np.argpartition(keys, most - 1, axis=1)[:, :most] if most < keys.shape[1] else (
        np.broadcast_to(np.arange(keys.shape[1]), keys.shape))
    smallest = np.take_along_axis(smallest, np.argsort(np.take_along_axis(keys, smallest, 1), 1), 1)
    rows = np.repeat(np.arange(len(pages)), take)
    block.add(pages[rows], smallest[rows, _rank_in_page(rows)])


def _fill_block(past: _Past, block: _Block, streams: _DayStreams) -> None:
    for factor in _DRAW_FACTORS:
        if not (block.remaining > 0).any():
            return
        _rejection_round(past, block, streams, factor)
    short = np.flatnonzero(block.remaining > 0)
    per_chunk = max(1, _EXACT_CELLS // max(past.num_videos, 1))
    for start, stop in _runs(block.days[short]):
        for chunk in range(start, stop, per_chunk):
            pages = short[chunk:min(chunk + per_chunk, stop)]
            _exact_pass(past, block, pages, streams(int(block.days[pages[0]])))


def _sample_unclicked(past: _Past, users: np.ndarray, times: np.ndarray, need: np.ndarray,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(page, video) of every unclicked impression, pages sorted by (time, user), each page's
    videos in draw order."""
    days = times // DAY_S
    streams = _DayStreams(seed)
    pages, videos = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start, stop in _blocks(days, _BLOCK_PAGES):
        available = np.searchsorted(past.times, times[start:stop], side="left")
        block = _Block(users[start:stop], times[start:stop], days[start:stop],
                       remaining=np.where(available > 0, need[start:stop], 0), available=available,
                       chosen_page=np.zeros(0, np.int64), chosen_video=np.zeros(0, np.int64))
        _fill_block(past, block, streams)
        # Stable sort by page keeps each page's draw order (rounds first, then the exact pass).
        order = np.argsort(block.chosen_page, kind="stable")
        pages.append(block.chosen_page[order] + start)
        videos.append(block.chosen_video[order])
    return np.concatenate(pages), np.concatenate(videos)


def _codes(ids: pd.Series) -> pd.Index:
    """The ids sorted: their positions are codes that do not depend on the table's row order."""
    return pd.Index(np.sort(ids.to_numpy(dtype=object)))


def _impressions_table(watches: pd.DataFrame, users: pd.Index, videos: pd.Index, upload: np.ndarray,
                       shown_per_watch: int, seed: int) -> pd.DataFrame:
    user = users.get_indexer(watches["user_id"]).astype(np.int64)
    video = videos.get_indexer(watches["video_id"]).astype(np.int64)
    time = watches["time"].to_numpy(np.int64)
    watch_time = watches["watch_time_s"].to_numpy(np.float64)
    # Sorted by content, not file order (watch time only breaks ties between duplicate watches).
    order = np.lexsort((watch_time, video, user, time))
    user, video, time, watch_time = user[order], video[order], time[order], watch_time[order]
    # A page: one user's watches at one second (the ranking examples' definition).
    page_start = np.flatnonzero(np.r_[True, (time[1:] != time[:-1]) | (user[1:] != user[:-1])])
    page_of_watch = np.searchsorted(page_start, np.arange(len(time)), side="right") - 1
    need = np.diff(np.r_[page_start, len(time)]) * shown_per_watch
    past = _Past.index(user, video, time, upload)
    page, shown = _sample_unclicked(past, user[page_start], time[page_start], need, seed)

    # Rows sorted by page, clicked first (in video order), then the unclicked in draw order.
    row_page = np.r_[page_of_watch, page]
    clicked = np.r_[np.ones(len(time), np.int8), np.zeros(len(page), np.int8)]
    row_order = np.argsort(row_page, kind="stable")
    return pd.DataFrame({
        "user_id": users.to_numpy()[np.r_[user, user[page_start][page]]][row_order],
        "video_id": videos.to_numpy()[np.r_[video, shown]][row_order],
        "time": np.r_[time, time[page_start][page]][row_order].astype(np.int64),
        "clicked": clicked[row_order],
        "watch_time_s": np.r_[watch_time, np.zeros(len(page))][row_order],
    })


def derive_impressions(log: EventLog, shown_per_watch: int = 4, seed: int = 0, *,
                       replace_observed: bool = False) -> EventLog:
    """A new `EventLog` whose impressions are derived from its watches by the module's rule.

    Users, videos, watches and searches are copies of the input's (which is never modified);
    `notes["impressions"]` says how the impressions were made (`describe`); the name is kept.

    Args:
      log: a valid event log, normally one without impressions (MovieLens).
      shown_per_watch: unclicked impressions per watch (fewer when fewer videos qualify).
      seed: with the day of each page, seeds its draws; the same seed gives the same table.
      replace_observed: allow replacing impressions the log already has. Off by default:
        overwriting observed impressions with invented ones should never happen by accident.
    """
    if isinstance(shown_per_watch, bool) or not isinstance(shown_per_watch, (int, np.integer)) \
            or shown_per_watch < 0:
        raise ValueError(f"shown_per_watch must be an integer >= 0, got {shown_per_watch!r}")
    if len(log.impressions) and not replace_observed:
        raise ValueError(f"log {log.name!r} already has {len(log.impressions)} impressions; pass "
                         "replace_observed=True to replace them with derived ones")
    users, videos = _codes(log.users["user_id"]), _codes(log.videos["video_id"])
    for column, known in (("user_id", users), ("video_id", videos)):
        unknown = known.get_indexer(log.watches[column]) < 0
        if unknown.any():  # the full `validate` would do, but costs more than the derivation
            raise SchemaError("watches", column, int(np.flatnonzero(unknown)[0]), "unknown id")
    upload = log.videos.set_index("video_id")["upload_time"].reindex(videos).to_numpy(np.int64)
    if len(log.watches):
        impressions = _impressions_table(log.watches, users, videos, upload, int(shown_per_watch), seed)
        impressions = impressions.astype({"user_id": object, "video_id": object})
    else:
        impressions = empty_table("impressions")
    derived = EventLog(
        users=log.users.copy(), videos=log.videos.copy(), watches=log.watches.copy(),
        searches=log.searches.copy(), impressions=impressions, name=log.name,
        notes={**log.notes, "impressions": describe(int(shown_per_watch), seed)},
    )
    return derived.validate()
