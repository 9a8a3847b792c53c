"""Label and context selection for one user (paper 3.4): the one definition the pipeline runs.

The Beam pipeline groups the event log by user and hands each user's events here; everything
about which watch is a label, which split it belongs to and what context its example sees is
decided in this module, per user, with numpy. Nothing here depends on other users except the
cuts in time, which the pipeline finds first (`config.CUT_RESOLUTION_S`), so any runner with any
number of workers produces the same examples.

Ids arrive as vocabulary indices (1..V; the pipeline never passes an unknown one) and times as
integer seconds. Each of the user's tables is sorted by (time, position in the log), so "what
happened before t" is a `searchsorted`, and ties in time keep the log's order.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from tfrs_youtube.features.contract import RequestContract
from tfrs_youtube.pipeline.config import ExampleConfig

TRAIN, VALIDATION, TEST, UNUSED = 0, 1, 2, 3
RETRIEVAL_SPLITS = ("train", "validation", "test")
RANKING_SPLITS = ("fit", "calibration", "test")


def stable_hash(text: str) -> int:
    """A 63-bit hash of a string that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def page_id(user_id: str, time: int) -> int:
    """The id of a page: one user's impressions at one request (the same second)."""
    return stable_hash(f"{user_id}\x00{int(time)}")


@dataclasses.dataclass
class Cuts:
    """The moments that split the log, found over all users before any user is processed.

    Args:
      watch_cutoff: with the "time" split, watches from here on are held out (else None).
      impression_cutoff: impressions from here on test the ranker.
      calibration_cutoff: training impressions from here on form the calibration slice.
    """

    watch_cutoff: int | None
    impression_cutoff: int
    calibration_cutoff: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class UserEvents:
    """One user's events, each table sorted by (time, position in the log)."""

    user_id: str
    fields: dict
    watch_video: np.ndarray
    watch_time: np.ndarray
    watch_seconds: np.ndarray
    token: np.ndarray
    token_time: np.ndarray
    impression_video: np.ndarray
    impression_time: np.ndarray
    impression_clicked: np.ndarray
    impression_seconds: np.ndarray

    @classmethod
    def from_unsorted(cls, user_id: str, fields: dict, watches: dict, tokens: dict, impressions: dict
                      ) -> "UserEvents":
        """Sorts each table (dicts of equal-length arrays with "time" and "seq") by (time, seq);
        the sort is stable, so the tokens of one query keep their order."""
        def ordered(table: dict, names: tuple[str, ...], dtypes: tuple) -> list[np.ndarray]:
            if len(table.get("time", ())) == 0:
                return [np.zeros(0, dtype) for dtype in dtypes]
            order = np.lexsort((table["seq"], table["time"]))
            return [np.asarray(table[name], dtype)[order] for name, dtype in zip(names, dtypes)]

        w = ordered(watches, ("video", "time", "seconds"), (np.int64, np.int64, np.float32))
        t = ordered(tokens, ("token", "time"), (np.int64, np.int64))
        i = ordered(impressions, ("video", "time", "clicked", "seconds"), (np.int64, np.int64, np.int8, np.float32))
        return cls(user_id, fields, *w, *t, *i)


def _last_n(end: np.ndarray, n: int) -> np.ndarray:
    """Positions end-1, end-2, ... (n of them, most recent first) per query; -1 where none."""
    positions = np.asarray(end, np.int64)[:, None] - 1 - np.arange(n)[None, :]
    return np.where(positions >= 0, positions, -1)


def _take(values: np.ndarray, positions: np.ndarray, pad=0) -> np.ndarray:
    if len(values) == 0:
        return np.full(positions.shape, pad, dtype=values.dtype)
    return np.where(positions >= 0, values[np.maximum(positions, 0)], pad)


def _history(values: np.ndarray, times: np.ndarray, positions: np.ndarray, at: np.ndarray,
             absolute: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Ids and ages (at - event time, float32) at `positions`; 0 where a position is -1."""
    ids = _take(values, positions, 0)
    ages = at[:, None] - _take(times, positions, 0)
    ages = np.where(positions >= 0, np.abs(ages) if absolute else ages, 0).astype(np.float32)
    return ids, ages


def context(events: UserEvents, times: np.ndarray, contract: RequestContract, watch_end: np.ndarray | None = None,
            impressions: bool = False, search_end_time: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What a request of this user at each of `times` carries: the last watches strictly before
    it (or before the sorted position `watch_end`) with their ages, the last search tokens, with
    `impressions` the last impressions with their ages, the user's fields and the time itself.

    Histories are [n, length] arrays, 0-padded at the end (ids) with ages 0 there.
    """
    times = np.asarray(times, np.int64)
    end = np.searchsorted(events.watch_time, times, side="left") if watch_end is None else watch_end
    out = {}
    out["watch_history"], out["watch_ages_s"] = _history(
        events.watch_video, events.watch_time, _last_n(end, contract.watch_history_length), times)
    token_times = times if search_end_time is None else search_end_time
    token_end = np.searchsorted(events.token_time, token_times, side="left")
    out["search_tokens"] = _take(events.token, _last_n(token_end, contract.search_history_length), 0)
    if impressions:
        shown_end = np.searchsorted(events.impression_time, times, side="left")
        out["impression_history"], out["impression_ages_s"] = _history(
            events.impression_video, events.impression_time, _last_n(shown_end, contract.impression_history_length),
            times)
    out["request_time"] = times
    return out


def watch_splits(watch_time: np.ndarray, config: ExampleConfig, cutoff: int | None) -> np.ndarray:
    """TRAIN, VALIDATION, TEST or UNUSED for each of the user's watches (sorted by time)."""
    n = len(watch_time)
    if config.split == "user_last":
        from_end = n - 1 - np.arange(n)
        return np.where(from_end < config.num_test, TEST,
                        np.where(from_end < config.num_test + config.num_validation, VALIDATION, TRAIN)).astype(np.int8)
    after = np.asarray(watch_time) >= cutoff
    split = np.where(after, UNUSED, TRAIN).astype(np.int8)
    if after.any():
        split[np.argmax(after)] = TEST
    if (~after).any():
        split[n - 1 - np.argmax(~after[::-1])] = VALIDATION
    return split


def capped(rows: np.ndarray, cap: int | None, seed: int, user_id: str) -> np.ndarray:
    """A uniform sample of at most `cap` of the user's training rows, seeded per user (the same
    rows whichever worker, and in whichever order, processes the user)."""
    if cap is None or len(rows) <= cap:
        return rows
    rng = np.random.default_rng([seed, stable_hash(user_id)])
    return np.sort(rows[rng.permutation(len(rows))[:cap]])


@dataclasses.dataclass
class UserExamples:
    """One user's examples, by kind and split, as dicts of arrays (one row per example)."""

    retrieval: dict[str, dict[str, np.ndarray]]
    ranking: dict[str, dict[str, np.ndarray]]
    labels: np.ndarray  # the training labels' video indices (for log Q)
    ranker_videos: np.ndarray  # videos the ranker's fitted pages show or have in their histories
    last_train_time: int | None  # the user's latest training watch (the window's end, per user)


def _surrounding(events: UserEvents, rows: np.ndarray, split: np.ndarray, contract: RequestContract
                 ) -> dict[str, np.ndarray]:
    """Training labels whose history is the user's whole training period, the label left out
    (`ExampleConfig.train_context="surrounding"`); nothing held out enters it."""
    times = events.watch_time[rows]
    train_positions = np.flatnonzero(split == TRAIN)
    train_end = train_positions.max() + 1
    held_out = events.watch_time[split != TRAIN]
    # Searches up to the first held-out watch (all of them when nothing is held out).
    search_end = np.full(len(rows), held_out.min() if len(held_out) else np.iinfo(np.int64).max // 2, np.int64)
    out = context(events, times, contract, watch_end=np.full(len(rows), train_end), search_end_time=search_end)
    L = contract.watch_history_length
    positions = _last_n(np.full(len(rows), train_end), L + 1)
    positions = np.where(positions == rows[:, None], -1, positions)
    # Close the gap the label leaves (a stable sort keeps most-recent-first order), keep L.
    positions = np.take_along_axis(positions, np.argsort(positions < 0, axis=1, kind="stable"), axis=1)[:, :L]
    out["watch_history"], out["watch_ages_s"] = _history(events.watch_video, events.watch_time, positions, times,
                                                         absolute=True)
    return out


def _watched_before(events: UserEvents, end: np.ndarray) -> list[np.ndarray]:
    """Every video the user watched before each sorted position `end`, most recent first."""
    return [events.watch_video[:e][::-1] for e in end]


def select(events: UserEvents, config: ExampleConfig, cuts: Cuts, seed: int) -> UserExamples:
    """All of one user's retrieval examples and ranking pages (see the module docstring)."""
    contract = config.contract()
    split = watch_splits(events.watch_time, config, cuts.watch_cutoff)
    retrieval = {}
    labels = np.zeros(0, np.int64)
    for code, name in ((TRAIN, "train"), (VALIDATION, "validation"), (TEST, "test")):
        rows = np.flatnonzero(split == code)
        if code == TRAIN:
            rows = capped(rows, config.max_examples_per_user, seed, events.user_id)
            labels = events.watch_video[rows]
        if len(rows) == 0:
            continue
        times = events.watch_time[rows]
        # With ties in file order, a label's own position bounds its history; else its time.
        end = rows if config.ties == "file_order" else np.searchsorted(events.watch_time, times, side="left")
        if code == TRAIN and config.train_context == "surrounding":
            examples = _surrounding(events, rows, split, contract)
        else:
            examples = context(events, times, contract, watch_end=end, impressions=code == TEST)
        examples["video_id"] = events.watch_video[rows]
        if code != TRAIN:
            examples["watched"] = _watched_before(events, end)
        if code == TEST:
            # The user's whole future from the request on: what a served list is judged against.
            start = np.searchsorted(events.watch_time, times, side="left")
            examples["future_videos"] = [events.watch_video[s:] for s in start]
            examples["future_watch_time_s"] = [events.watch_seconds[s:] for s in start]
        retrieval[name] = examples

    ranking, ranker_videos = _pages(events, contract, cuts)
    train_times = events.watch_time[split == TRAIN]
    return UserExamples(retrieval, ranking, labels, ranker_videos,
                        int(train_times.max()) if len(train_times) else None)


def _pages(events: UserEvents, contract: RequestContract, cuts: Cuts) -> tuple[dict, np.ndarray]:
    """The user's impressions as pages (same second), each with the context of its request,
    split by the cuts; and the videos the fitted pages show or have in their watch histories."""
    times = events.impression_time
    if len(times) == 0:
        return {}, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, times[1:] != times[:-1]])
    stops = np.r_[starts[1:], len(times)]
    page_times = times[starts]
    page_split = np.where(page_times >= cuts.impression_cutoff, 2, np.where(page_times >= cuts.calibration_cutoff, 1, 0))
    ranking = {}
    ranker_videos = []
    for code, name in enumerate(RANKING_SPLITS):
        chosen = np.flatnonzero(page_split == code)
        if len(chosen) == 0:
            continue
        pages = context(events, page_times[chosen], contract, impressions=True)
        slices = [slice(starts[c], stops[c]) for c in chosen]
        pages["video_id"] = [events.impression_video[s] for s in slices]
        pages["clicked"] = [events.impression_clicked[s] for s in slices]
        pages["watch_time_s"] = [events.impression_seconds[s] for s in slices]
        pages["page"] = np.array([page_id(events.user_id, t) for t in page_times[chosen]], np.int64)
        ranking[name] = pages
        if name == "fit":
            ranker_videos = [np.concatenate(pages["video_id"]), pages["watch_history"].ravel()]
    known = np.unique(np.concatenate(ranker_videos)) if ranker_videos else np.zeros(0, np.int64)
    return ranking, known[known > 0]
