"""Counting earlier events of a (user, video) pair: how often a video was already shown to, or
watched by, a user before a given time.

Repeated exposure is part of the simulated user model (each earlier impression of a video lowers
its click logit), so the same count is needed where the log is drawn and wherever a request is
asked about after a log (`Simulator.shown_before`, the online experiment). `earlier_occurrences`
counts within one table of events, as the log writer does (events at the same second count in
row order); `count_before` counts a table's events strictly before each request's time.
"""

from __future__ import annotations

import numpy as np


def count_before(event_users, event_videos, event_times, users, times, videos) -> np.ndarray:
    """How many events of (users[i], videos[i, ...]) happened strictly before times[i].

    All in indices (a video of -1 counts 0). With a log's impressions as the events this is
    `Simulator.respond`'s shown_before, with its watches how often each video was already watched.
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


def earlier_occurrences(key: np.ndarray, time: np.ndarray) -> np.ndarray:
    """For each row, how many rows with the same key come earlier in time (ties: in row order)."""
    order = np.lexsort((time, key))
    sorted_key = key[order]
    starts = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    position = np.arange(len(key))
    count = np.empty(len(key), np.int64)
    count[order] = position - np.maximum.accumulate(np.where(starts, position, 0))
    return count

