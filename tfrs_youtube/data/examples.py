"""Label and context selection (paper 3.4): turning an event log into training examples.

Every watch is a label; the example for a watch at time t sees only events strictly before t
("rollback"), so the model learns to predict the future rather than to fill in a random hole.
Held-out watches are always later ones (each user's latest, or those after a cut in time), never
a random watch, and a per-user cap keeps heavy users from dominating the loss. Ranking examples
are one per impression, with the user's context as of that impression.

Everything is vectorised over numpy arrays: each table is sorted once by (group, time) and every
"what happened before t" question is a `searchsorted` into it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tfrs_youtube.data.schema import EventLog

DAY_S = 86_400.0
# Stand-in for "this user never watched this topic" (in the visible history): a year, larger
# than any real gap, so that the quantile normaliser puts it at the top of the range.
NEVER_WATCHED_S = 365 * DAY_S
# Previous impressions of a video are counted over this window (the request carries them).
IMPRESSION_WINDOW_S = 7 * DAY_S


@dataclasses.dataclass
class ExampleConfig:
    """How examples are cut from the log.

    Args:
      history_length: watches kept in the history (most recent first), the paper's 50.
      search_history_length: search tokens kept (most recent first).
      max_examples_per_user: cap on training labels per user (sampled uniformly, seeded);
        None keeps all.
      split: "user_last" holds out each user's latest watches (`num_test` test targets, the
        `num_validation` before them for validation: the MovieLens protocol). "time" cuts the
        log at one moment (the `holdout_fraction` quantile of watch times): each user's first
        watch after it is the test target, their last watch before it the validation target,
        and nothing after the cut trains either stage, so the ranker's held-out impressions
        are unseen by candidate generation too.
      num_test: with "user_last", each user's latest watches held out as test targets.
      num_validation: with "user_last", the watches before those, held out for validation.
      holdout_fraction: with "time", the share of watches after the cut.
      ties: which watches a label's history holds. "exclude": only those strictly before its
        time (nothing at the same second). "file_order": every watch before it in the user's
        order by time, ties kept in file order (the MovieLens benchmark's protocol, where many
        ratings share a second). Searches and impressions are always strictly before.
      train_context: what a training label's history holds. "rollback" (the paper's choice,
        Figure 5b): only what the user did before the label. "surrounding" (Figure 5a, the
        classic held-out-random-watch setup): the user's whole training period, before and after
        the label, the label itself left out, most recent first; searches up to the period's
        end too; watch ages then count from the label's time in either direction. Held-out
        examples are requests and always see the past only.
      held_out_example_age: "zero" (held-out examples are requests made now, as at serving) or
        "true" (window end - their time, floored at 0). On MovieLens' validation target "zero"
        scored higher (HR@10 0.208 against 0.186, two seeds each).
      seed: for the per-user cap.
    """

    history_length: int = 50
    search_history_length: int = 50
    max_examples_per_user: int | None = 100
    split: str = "user_last"
    num_test: int = 1
    num_validation: int = 1
    holdout_fraction: float = 0.1
    ties: str = "exclude"
    train_context: str = "rollback"
    held_out_example_age: str = "zero"
    seed: int = 0

    def __post_init__(self):
        if self.split not in ("user_last", "time"):
            raise ValueError(f"ExampleConfig.split must be 'user_last' or 'time', got {self.split!r}")
        if self.held_out_example_age not in ("zero", "true"):
            raise ValueError(f"ExampleConfig.held_out_example_age must be 'zero' or 'true', got "
                             f"{self.held_out_example_age!r}")
        if self.train_context not in ("rollback", "surrounding"):
            raise ValueError(f"ExampleConfig.train_context must be 'rollback' or 'surrounding', got "
                             f"{self.train_context!r}")
        if self.ties not in ("exclude", "file_order"):
            raise ValueError(f"ExampleConfig.ties must be 'exclude' or 'file_order', got {self.ties!r}")


class _EventIndex:
    """Events of one table sorted by (group, time, file order), for questions about the past.

    `before(groups, times)` gives, for each query, the sorted position just after the group's
    last event strictly before the query time; `start(groups)` the group's first position.
    """

    def __init__(self, groups: np.ndarray, times: np.ndarray):
        groups = np.asarray(groups, np.int64)
        times = np.asarray(times, np.int64)
        self.order = np.lexsort((np.arange(len(times)), times, groups))
        self.groups = groups[self.order]
        self.times = times[self.order]
        self._t0 = int(times.min()) if len(times) else 0
        self._span = (int(times.max()) - self._t0 + 2) if len(times) else 2
        self._keys = self._key(self.groups, self.times)

    def _key(self, groups: np.ndarray, times: np.ndarray) -> np.ndarray:
        # One int64 key orders (group, time) pairs; times are clipped into the indexed span so
        # that a query far in the past or future still lands in its own group.
        clipped = np.clip(np.asarray(times, np.int64) - self._t0, -1, self._span - 1) + 1
        return np.asarray(groups, np.int64) * (self._span + 1) + clipped

    def before(self, groups: np.ndarray, times: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._keys, self._key(groups, times), side="left")

    def start(self, groups: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._keys, np.asarray(groups, np.int64) * (self._span + 1), side="left")

    def last_n(self, groups: np.ndarray, times: np.ndarray, n: int, end: np.ndarray | None = None) -> np.ndarray:
        """Sorted positions of each query's last n events before its time (or before the sorted
        position `end`), most recent first; -1 pads."""
        end = self.before(groups, times) if end is None else np.asarray(end)
        start = self.start(groups)
        positions = end[:, None] - 1 - np.arange(n)[None, :]
        return np.where(positions >= start[:, None], positions, -1)


def _take(values: np.ndarray, positions: np.ndarray, pad) -> np.ndarray:
    out = values[np.maximum(positions, 0)]
    return np.where(positions >= 0, out, pad)


class ExampleBuilder:
    """Builds retrieval and ranking examples from one validated event log.

    Args:
      log: the event log.
      config: the `ExampleConfig`.
    """

    def __init__(self, log: EventLog, config: ExampleConfig | None = None):
        self.log = log
        self.config = config or ExampleConfig()
        self.user_codes = pd.Index(log.users["user_id"])
        self.video_codes = pd.Index(log.videos["video_id"])
        self.video_ids = log.videos["video_id"].to_numpy(dtype=object)
        self.video_topic = pd.factorize(log.videos["topic"])[0]

        watches = log.watches
        self.watch_user = self.user_codes.get_indexer(watches["user_id"])
        self.watch_video = self.video_codes.get_indexer(watches["video_id"])
        self.watch_time = watches["time"].to_numpy(np.int64)
        self.watches = _EventIndex(self.watch_user, self.watch_time)
        self._split: np.ndarray | None = None

        impressions = log.impressions
        self.impression_user = self.user_codes.get_indexer(impressions["user_id"])
        self.impression_video = self.video_codes.get_indexer(impressions["video_id"])
        self.impression_time = impressions["time"].to_numpy(np.int64)
        self.impressions = _EventIndex(self.impression_user, self.impression_time)

        searches = log.searches
        token_lists = searches["query"].str.split()
        counts = token_lists.str.len().fillna(0).to_numpy(np.int64)
        self.tokens = np.array([t for ts in token_lists for t in ts], dtype=object)
        token_user = np.repeat(self.user_codes.get_indexer(searches["user_id"]), counts)
        token_time = np.repeat(searches["time"].to_numpy(np.int64), counts)
        self.searches = _EventIndex(token_user, token_time)

    # ---- splits -------------------------------------------------------------------------
    def cutoff_time(self) -> int | None:
        """With the "time" split, the moment that separates training from held-out events."""
        if self.config.split != "time" or len(self.watch_time) == 0:
            return None
        return int(np.quantile(self.watch_time, 1.0 - self.config.holdout_fraction))

    def watch_split(self) -> np.ndarray:
        """'train', 'validation', 'test' or 'unused' for each watch row (see `ExampleConfig.split`).

        Watches are ordered by time within a user, ties keeping file order.
        """
        if self._split is not None:
            return self._split
        users = self.watches.groups
        position = np.arange(len(users))
        if self.config.split == "user_last":
            # Position within the user's sorted watches, counted from the last one.
            rank_from_end = np.searchsorted(users, users, side="right") - 1 - position
            c = self.config
            split_sorted = np.where(rank_from_end < c.num_test, "test",
                                    np.where(rank_from_end < c.num_test + c.num_validation, "validation", "train"))
        else:
            after = self.watches.times >= self.cutoff_time()
            # Group by (user, before/after the cut): first and last position of each run.
            run = users * 2 + after
            first = np.searchsorted(run, run, side="left") == position
            last = np.searchsorted(run, run, side="right") - 1 == position
            split_sorted = np.where(after, np.where(first, "test", "unused"),
                                    np.where(last, "validation", "train"))
        split = np.empty(len(split_sorted), dtype=object)
        split[self.watches.order] = split_sorted
        self._split = split
        return split

    def _cap(self, rows: np.ndarray) -> np.ndarray:
        cap = self.config.max_examples_per_user
        if cap is None or len(rows) == 0:
            return rows
        rng = np.random.default_rng(self.config.seed)
        # A random key per row, then the cap smallest keys per user: uniform sampling per user.
        key = rng.random(len(rows))
        users = self.watch_user[rows]
        order = np.lexsort((key, users))
        ranked_users = users[order]
        first = np.searchsorted(ranked_users, ranked_users, side="left")
        keep = order[(np.arange(len(order)) - first) < cap]
        return np.sort(rows[keep])

    # ---- features -----------------------------------------------------------------------
    def user_features(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """The users table's columns for these users; extra columns (e.g. occupation) as strings."""
        table = self.log.users
        features = {"age": table["age"].to_numpy(np.float32)[users]}
        for column in table.columns:
            if column != "age":
                features[column] = table[column].astype(str).to_numpy(dtype=object)[users]
        return features

    def context(self, users: np.ndarray, times: np.ndarray, watch_end: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
        """What a request at (user, time) knows: demographics and histories strictly before time
        (the watch history before sorted position `watch_end` instead, when given)."""
        L, S = self.config.history_length, self.config.search_history_length
        watch_pos = self.watches.last_n(users, times, L, end=watch_end)
        sorted_video = self.watch_video[self.watches.order]
        history_index = _take(sorted_video, watch_pos, -1)
        history_time = _take(self.watches.times, watch_pos, 0)
        token_pos = self.searches.last_n(users, times, S)
        features = self.user_features(users)
        features["watch_history"] = _take(self.video_ids, history_index, "").astype(object)
        features["watch_ages_s"] = np.where(
            watch_pos >= 0, (np.asarray(times)[:, None] - history_time).astype(np.float32), 0.0
        ).astype(np.float32)
        sorted_tokens = self.tokens[self.searches.order] if len(self.tokens) else np.array([""], object)
        features["search_tokens"] = _take(sorted_tokens, token_pos, "").astype(object)
        # Kept for ranking features below; not a model input.
        features["_history_index"] = history_index
        return features

    def requests(self, users: np.ndarray, times: np.ndarray, impression_length: int = 100) -> dict[str, np.ndarray]:
        """Serving requests as of (user, time): what `TwoStageRecommender` takes, raw.

        Carries the watch history with each watch's age, the search tokens, the last
        `impression_length` impressions with their ages, demographics and the request time.
        """
        users, times = np.asarray(users), np.asarray(times, np.int64)
        context = self.context(users, times)
        shown = self.impressions.last_n(users, times, impression_length)
        sorted_video = self.impression_video[self.impressions.order]
        request = {name: values for name, values in context.items() if name not in ("user_id", "_history_index")}
        request["impression_history"] = _take(self.video_ids, _take(sorted_video, shown, -1), "").astype(object)
        request["impression_ages_s"] = np.where(
            shown >= 0, times[:, None] - _take(self.impressions.times, shown, 0), 0.0).astype(np.float32)
        request["request_time"] = times.astype(np.float64)
        return request

    def retrieval_examples(self, split: str = "train", window_end: int | None = None) -> dict[str, np.ndarray]:
        """One example per watch of `split`: context before the watch -> the watched video.

        Training examples carry example age = window end - watch time (paper 3.3); held-out ones
        0, as at serving (or their true age: `ExampleConfig.held_out_example_age`).
        """
        splits = self.watch_split()
        rows = np.flatnonzero(splits == split)
        if split == "train":
            rows = self._cap(rows)
        users, times = self.watch_user[rows], self.watch_time[rows]
        if split == "train" and self.config.train_context == "surrounding":
            features = self._surrounding_context(rows)
        else:
            features = self.context(users, times, self._label_positions(rows))
        features.pop("_history_index")
        # Example age is measured from the training window's end. Held-out examples stand for
        # requests: by default made "now", age 0, as at serving (paper 3.3); or, with
        # held_out_example_age="true", at their own time (a leave-last-out target inside the
        # window then gets the age it had), which can only differ from 0 for the "user_last" split.
        end = self.train_window_end() if window_end is None else window_end
        features["example_age_s"] = np.maximum(end - times, 0).astype(np.float32)
        if split != "train" and self.config.held_out_example_age == "zero":
            features["example_age_s"] = np.zeros(len(rows), np.float32)
        features["video_id"] = self.video_ids[self.watch_video[rows]]
        features["time"] = times.astype(np.float64)
        return features

    def _surrounding_context(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """`context` for training labels whose history is the user's whole training period, the
        label left out (`ExampleConfig.train_context="surrounding"`). Nothing held out (validation
        or test watches, or anything after them) enters it."""
        users, times = self.watch_user[rows], self.watch_time[rows]
        # Each user's training period ends after their last training watch (sorted positions).
        is_train = self.watch_split()[self.watches.order] == "train"
        train_end = np.zeros(len(self.user_codes), np.int64)
        np.maximum.at(train_end, self.watches.groups[is_train], np.flatnonzero(is_train) + 1)
        # ...and at the time of their first held-out watch, for searches (never past the data).
        first_held_out = np.full(len(self.user_codes), np.iinfo(np.int64).max // 4, np.int64)
        np.minimum.at(first_held_out, self.watches.groups[~is_train], self.watches.times[~is_train])
        features = self.context(users, np.minimum(first_held_out[users], self.watch_time.max() + 1))
        L = self.config.history_length
        positions = self.watches.last_n(users, times, L + 1, end=train_end[users])
        positions = np.where(positions == self._sorted_positions(rows)[:, None], -1, positions)
        # Close the gap the label leaves (a stable sort keeps most-recent-first order), keep L.
        positions = np.take_along_axis(positions, np.argsort(positions < 0, axis=1, kind="stable"), axis=1)[:, :L]
        history_index = _take(self.watch_video[self.watches.order], positions, -1)
        features["watch_history"] = _take(self.video_ids, history_index, "").astype(object)
        features["watch_ages_s"] = np.where(
            positions >= 0, np.abs(times[:, None] - _take(self.watches.times, positions, 0)), 0.0).astype(np.float32)
        features["_history_index"] = history_index
        return features

    def _label_positions(self, rows: np.ndarray) -> np.ndarray | None:
        """With ties in file order, each label's own sorted position bounds its history."""
        if self.config.ties != "file_order":
            return None
        return self._sorted_positions(rows)

    def _sorted_positions(self, rows: np.ndarray) -> np.ndarray:
        """Where these watch rows sit in the (user, time)-sorted watch index."""
        position = np.empty(len(self.watches.order), np.int64)
        position[self.watches.order] = np.arange(len(self.watches.order))
        return position[rows]

    def watched(self, split: str) -> np.ndarray:
        """Every video each held-out example's user watched before it (the whole history, not
        the last `history_length`), padded with "": what evaluation excludes from the ranking."""
        rows = np.flatnonzero(self.watch_split() == split)
        users, times = self.watch_user[rows], self.watch_time[rows]
        end = self._label_positions(rows)
        if end is None:
            end = self.watches.before(users, times)
        longest = int((end - self.watches.start(users)).max()) if len(rows) else 0
        positions = self.watches.last_n(users, times, max(longest, 1), end=end)
        return _take(self.video_ids, _take(self.watch_video[self.watches.order], positions, -1), "").astype(object)

    def train_window_end(self) -> int:
        """The end of the training window (the cut, or the last training watch): example ages
        are measured from it."""
        cutoff = self.cutoff_time()
        if cutoff is not None:
            return cutoff
        train = self.watch_split() == "train"
        return int(self.watch_time[train].max()) if train.any() else 0

    def ranking_examples(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One example per impression (all, or the given rows of the impressions table).

        Features use only the past: the watch history before the impression; time since the
        user last watched the impressed video's topic, within that history; impressions of the
        same video to the same user in the preceding `IMPRESSION_WINDOW_S`; video age.
        """
        impressions = self.log.impressions
        if rows is None:
            rows = np.arange(len(impressions))
        users = self.user_codes.get_indexer(impressions["user_id"])
        videos = self.video_codes.get_indexer(impressions["video_id"])
        times = impressions["time"].to_numpy(np.int64)

        features = self.context(users[rows], times[rows])
        history_index = features.pop("_history_index")
        video = videos[rows]
        same_topic = (history_index >= 0) & (
            self.video_topic[np.maximum(history_index, 0)] == self.video_topic[video][:, None]
        )
        ages = np.where(same_topic, features["watch_ages_s"], np.inf).min(axis=1)
        features["time_since_topic_watch_s"] = np.where(np.isfinite(ages), ages, NEVER_WATCHED_S).astype(
            np.float32
        )

        # Impressions of the same video to the same user in the window before t.
        pairs = users.astype(np.int64) * len(self.video_codes) + videos
        pair_codes, pair_index = np.unique(pairs, return_inverse=True)
        shown = _EventIndex(pair_index, times)
        q_pair, q_time = pair_index[rows], times[rows]
        count = shown.before(q_pair, q_time) - shown.before(q_pair, q_time - int(IMPRESSION_WINDOW_S))
        features["previous_impressions"] = count.astype(np.float32)

        upload = self.log.videos["upload_time"].to_numpy(np.int64)[video]
        features["video_age_s"] = np.maximum(times[rows] - upload, 0).astype(np.float32)
        features["video_id"] = self.video_ids[video]
        features["video_language"] = self.log.videos["language"].to_numpy(dtype=object)[video]
        features["clicked"] = impressions["clicked"].to_numpy(np.float32)[rows]
        features["watch_time_s"] = impressions["watch_time_s"].to_numpy(np.float32)[rows]
        features["time"] = times[rows].astype(np.float64)
        # A page: the impressions of one user at one request (same user, same second).
        features["page"] = users[rows].astype(np.int64) * (int(times.max(initial=0)) + 1) + times[rows]
        return features

    def impression_split(self, test_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
        """Impression rows before / from a time cut: the ranker is tested on the future.

        The cut is the watches' one with the "time" split, else the `test_fraction` quantile of
        impression times.
        """
        times = self.impression_time
        if len(times) == 0:
            return np.arange(0), np.arange(0)
        cutoff = self.cutoff_time()
        if cutoff is None:
            cutoff = np.quantile(times, 1.0 - test_fraction)
        return np.flatnonzero(times < cutoff), np.flatnonzero(times >= cutoff)
