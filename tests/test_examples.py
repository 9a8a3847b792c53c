"""Label and context selection: no example sees its future; held-out watches are each user's latest."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data.examples import IMPRESSION_WINDOW_S, NEVER_WATCHED_S, ExampleBuilder, ExampleConfig


@pytest.fixture(scope="module")
def builder(tiny_log):
    return ExampleBuilder(tiny_log, ExampleConfig(max_examples_per_user=None))


def _watch_times(log):
    return {(u, v): t for u, v, t in zip(log.watches.user_id, log.watches.video_id, log.watches.time)}


def test_histories_only_hold_events_strictly_before_the_label(builder, tiny_log):
    watches = tiny_log.watches
    by_user = {u: g.sort_values("time", kind="stable") for u, g in watches.groupby("user_id")}
    searches = {u: g for u, g in tiny_log.searches.groupby("user_id")}
    examples = builder.retrieval_examples("train")
    rng = np.random.default_rng(0)
    for i in rng.choice(len(examples["user_id"]), 300, replace=False):
        user, t = examples["user_id"][i], int(examples["time"][i])
        past = by_user[user][by_user[user].time < t]
        expected = list(past.video_id[::-1][:50])
        history = [v for v in examples["watch_history"][i] if v]
        # Exactly the last 50 watches before t, most recent first (ties in any order).
        assert sorted(history) == sorted(expected)
        ages = examples["watch_ages_s"][i][: len(history)]
        assert (ages > 0).all(), "a history watch at or after the label time leaked in"
        user_searches = searches.get(user)
        tokens = [tok for tok in examples["search_tokens"][i] if tok]
        if user_searches is not None:
            allowed = set(" ".join(user_searches[user_searches.time < t]["query"]).split())
            assert set(tokens) <= allowed
        else:
            assert tokens == []


def test_time_split_holds_out_each_users_latest_watches(builder, tiny_log):
    split = builder.watch_split()
    frame = tiny_log.watches.assign(split=split, order=np.arange(len(split)))
    for _, group in frame.groupby("user_id"):
        group = group.sort_values(["time", "order"], kind="stable")
        assert list(group.split.iloc[-2:]) == ["validation", "test"]
        assert (group.split.iloc[:-2] == "train").all()
    test = builder.retrieval_examples("test")
    assert len(test["user_id"]) == tiny_log.users.shape[0]
    assert (test["example_age_s"] == 0).all()  # requests made now, as at serving
    true_age = ExampleBuilder(tiny_log, ExampleConfig(held_out_example_age="true")).retrieval_examples("test")
    end = builder.train_window_end()
    np.testing.assert_allclose(true_age["example_age_s"], np.maximum(end - true_age["time"], 0))


def test_cap_limits_examples_per_user_and_is_seeded(tiny_log):
    capped = ExampleBuilder(tiny_log, ExampleConfig(max_examples_per_user=5, seed=3)).retrieval_examples("train")
    counts = pd.Series(capped["user_id"]).value_counts()
    assert counts.max() == 5
    again = ExampleBuilder(tiny_log, ExampleConfig(max_examples_per_user=5, seed=3)).retrieval_examples("train")
    np.testing.assert_array_equal(capped["video_id"], again["video_id"])
    other = ExampleBuilder(tiny_log, ExampleConfig(max_examples_per_user=5, seed=4)).retrieval_examples("train")
    assert not np.array_equal(capped["time"], other["time"])


def test_example_age_is_measured_from_the_training_window_end(builder):
    train = builder.retrieval_examples("train")
    end = builder.train_window_end()
    np.testing.assert_allclose(train["example_age_s"], end - train["time"])
    assert train["example_age_s"].min() >= 0


def test_ranking_features_use_only_the_past(builder, tiny_log):
    impressions = tiny_log.impressions.reset_index(drop=True)
    features = builder.ranking_examples()
    topic = dict(zip(tiny_log.videos.video_id, tiny_log.videos.topic))
    upload = dict(zip(tiny_log.videos.video_id, tiny_log.videos.upload_time))
    rng = np.random.default_rng(1)
    for i in rng.choice(len(impressions), 200, replace=False):
        row = impressions.iloc[i]
        t = row.time
        history = [v for v in features["watch_history"][i] if v]
        ages = features["watch_ages_s"][i][: len(history)]
        same = [a for v, a in zip(history, ages) if topic[v] == topic[row.video_id]]
        assert features["time_since_topic_watch_s"][i] == (min(same) if same else NEVER_WATCHED_S)
        shown = impressions[(impressions.user_id == row.user_id) & (impressions.video_id == row.video_id)]
        expected = ((shown.time < t) & (shown.time >= t - IMPRESSION_WINDOW_S)).sum()
        assert features["previous_impressions"][i] == expected
        assert features["video_age_s"][i] == t - upload[row.video_id]
        assert features["clicked"][i] == row.clicked


def test_requests_carry_the_context_of_a_moment(builder, tiny_log):
    users = np.array([0, 1, 2])
    times = np.array([int(tiny_log.watches.time.max())] * 3)
    request = builder.requests(users, times)
    assert set(request) == {"watch_history", "watch_ages_s", "search_tokens", "impression_history",
                            "impression_ages_s", "country", "language", "gender", "device", "age", "request_time"}
    shown = request["impression_history"] != ""
    assert (request["impression_ages_s"][shown] > 0).all()


def _same_second_log(tiny_log):
    """The tiny log with one user's watches all at one second (as MovieLens often has)."""
    from tfrs_youtube.data.schema import EventLog

    tables = {name: table.copy() for name, table in tiny_log.tables().items()}
    watches = tables["watches"]
    user = watches.user_id.iloc[0]
    watches.loc[watches.user_id == user, "time"] = int(watches.time.max())
    return EventLog(**tables).validate(), user


def test_ties_in_file_order_keep_earlier_rows_of_the_same_second(tiny_log):
    log, user = _same_second_log(tiny_log)
    mine = log.watches[log.watches.user_id == user]
    for ties, expected in (("exclude", []), ("file_order", list(mine.video_id[:-1][::-1]))):
        builder = ExampleBuilder(log, ExampleConfig(ties=ties, max_examples_per_user=None))
        test = builder.retrieval_examples("test")
        row = list(test["user_id"]).index(user)
        assert test["video_id"][row] == mine.video_id.iloc[-1]  # the last in file order is the target
        assert [v for v in test["watch_history"][row] if v] == expected[:50]
        watched = [v for v in builder.watched("test")[row] if v]
        assert watched == expected  # the whole history, for exclusion, not just the last 50


def test_watched_holds_the_whole_history(builder, tiny_log):
    test = builder.retrieval_examples("test")
    watched = builder.watched("test")
    for i in range(0, len(test["user_id"]), 17):
        user, t = test["user_id"][i], test["time"][i]
        mine = tiny_log.watches[(tiny_log.watches.user_id == user) & (tiny_log.watches.time < t)]
        assert sorted(v for v in watched[i] if v) == sorted(mine.video_id)


def test_time_split_cuts_both_stages_at_one_moment(tiny_log):
    builder = ExampleBuilder(tiny_log, ExampleConfig(split="time", holdout_fraction=0.2, max_examples_per_user=None))
    cut = builder.cutoff_time()
    train, validation, test = (builder.retrieval_examples(s) for s in ("train", "validation", "test"))
    assert train["time"].max() < cut <= test["time"].min()
    assert validation["time"].max() < cut
    assert (test["example_age_s"] == 0).all()  # after the window, as at serving
    assert builder.train_window_end() == cut
    # Each user's first watch after the cut is their test target; their last before it validates.
    frame = tiny_log.watches
    for user in test["user_id"][:20]:
        mine = frame[frame.user_id == user].sort_values("time", kind="stable")
        assert test["time"][list(test["user_id"]).index(user)] == mine[mine.time >= cut].time.iloc[0]
    train_rows, test_rows = builder.impression_split()
    times = tiny_log.impressions.time.to_numpy()
    assert times[train_rows].max() < cut <= times[test_rows].min()


@pytest.mark.parametrize("split", ["user_last", "time"])
def test_surrounding_context_holds_the_whole_training_period_but_the_label(tiny_log, split):
    """Figure 5a's examples: the history is every training-period watch of the user, before and
    after the label, most recent first, without the label itself and without anything held out."""
    config = ExampleConfig(split=split, holdout_fraction=0.2, max_examples_per_user=None, train_context="surrounding")
    builder = ExampleBuilder(tiny_log, config)
    examples = builder.retrieval_examples("train")
    rollback = ExampleBuilder(tiny_log, dataclasses.replace(config, train_context="rollback")).retrieval_examples()
    np.testing.assert_array_equal(examples["video_id"], rollback["video_id"])  # same labels, other context
    np.testing.assert_array_equal(examples["example_age_s"], rollback["example_age_s"])
    frame = tiny_log.watches.assign(split=builder.watch_split(), row=np.arange(len(tiny_log.watches)))
    frame = frame.sort_values(["user_id", "time", "row"], kind="stable")
    train_rows = np.flatnonzero(builder.watch_split() == "train")
    held_out_times = frame[frame.split != "train"].groupby("user_id").time.min()
    after_label = 0
    for i in np.random.default_rng(1).choice(len(train_rows), 200, replace=False):
        row = train_rows[i]
        user, t = examples["user_id"][i], examples["time"][i]
        mine = frame[(frame.user_id == user) & (frame.split == "train")]
        expected = list(mine[mine.row != row].video_id[::-1][:50])  # most recent first
        history = [v for v in examples["watch_history"][i] if v]
        assert history == expected
        after_label += int((mine[mine.row != row].time > t).any())
        ages = examples["watch_ages_s"][i][: len(history)]
        assert (ages >= 0).all()
        searches = tiny_log.searches[tiny_log.searches.user_id == user]
        allowed = set(" ".join(searches[searches.time < held_out_times.get(user, np.inf)]["query"]).split())
        assert set(t for t in examples["search_tokens"][i] if t) <= allowed
    assert after_label > 50, "the test should see labels with later watches in their context"
    # Held-out examples are requests: unchanged, the past only.
    for name in ("validation", "test"):
        np.testing.assert_array_equal(builder.retrieval_examples(name)["watch_history"],
                                      ExampleBuilder(tiny_log, dataclasses.replace(config, train_context="rollback"))
                                      .retrieval_examples(name)["watch_history"])
    with pytest.raises(ValueError, match="train_context"):
        ExampleConfig(train_context="random")
