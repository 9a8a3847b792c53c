"""Tests of the simulator object: it writes exactly the log `generate` always wrote, and its user
model (`respond`, `best_pages`) is the one the log's impressions were drawn from.

The agreement tests compare, on a 1,000-user log, what the log shows (clicks, watch seconds) with
what `respond` expects for the same rows, overall and per decile of the expectation, in units of
the model's own standard error; a perturbed coefficient shows the same statistic failing.
"""

import functools
import itertools
import json
import os

import tfrs_youtube  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything loads Keras)

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data import simulator as simulator_module
from tfrs_youtube.data.event_counts import count_before
from tfrs_youtube.data.simulator import PageResponse, Simulator
from tfrs_youtube.data.synthetic import SyntheticConfig, generate

DIGESTS = os.path.join(os.path.dirname(__file__), "fixtures", "synthetic_digests.json")
OVERALL_BOUND, DECILE_BOUND = 3.0, 3.5  # standard errors; 10 deciles, so a little wider


def digest(log) -> dict:
    return {name: {"shape": list(table.shape), "columns": list(table.columns),
                   "dtypes": [str(d) for d in table.dtypes],
                   "hash": int(pd.util.hash_pandas_object(table, index=True).sum())}
            for name, table in log.tables().items()}


@functools.lru_cache(maxsize=None)
def medium() -> tuple[Simulator, object]:
    simulator = Simulator(SyntheticConfig(num_users=1000, num_videos=1500, seed=0))
    return simulator, simulator.event_log()


@functools.lru_cache(maxsize=None)
def tiny() -> tuple[Simulator, object]:
    simulator = Simulator(SyntheticConfig.tiny(0))
    return simulator, simulator.event_log()


# --- the log is unchanged -------------------------------------------------------------------------


with open(DIGESTS) as f:
    STORED = json.load(f)


@pytest.mark.parametrize("name", sorted(STORED))
def test_reproduces_the_stored_logs_exactly(name):
    config = SyntheticConfig.from_dict(STORED[name]["config"])
    assert digest(generate(config)) == STORED[name]["tables"]


def test_event_log_is_the_same_on_every_call():
    simulator = Simulator(SyntheticConfig.tiny(1))
    first, second = simulator.event_log(), simulator.event_log()
    assert digest(first) == digest(second) == STORED["tiny1"]["tables"]


# --- the API agrees with the log ------------------------------------------------------------------


def log_rows(simulator: Simulator, log) -> dict:
    """The log's impressions with `respond`'s answers for them (shown_before as the writer counted)."""
    imp = log.impressions
    users, videos = simulator.user_index(imp.user_id), simulator.video_index(imp.video_id)
    shown = simulator.log_shown_before(imp)
    response = simulator.respond(users, imp.time.to_numpy(), videos[:, None], shown[:, None])
    p, w = response.click_probability[:, 0], response.watch_time_if_clicked[:, 0]
    w2 = simulator.watch_time_if_clicked(users, videos, moment=2)
    return {"clicked": imp.clicked.to_numpy() == 1, "watch": imp.watch_time_s.to_numpy(),
            "p": p, "w": w, "e": p * w, "var_click": p * (1 - p), "var_watch": p * w2 - (p * w) ** 2,
            "var_if_clicked": w2 - w**2}


def z_scores(observed, expected, variance) -> tuple[float, np.ndarray]:
    """(observed - expected) summed, over the model's standard error: overall and per decile of
    the expectation."""
    edges = np.quantile(expected, np.linspace(0, 1, 11)[1:-1])
    decile = np.searchsorted(edges, expected, side="right")
    residual = observed - expected

    def z(rows):
        return residual[rows].sum() / np.sqrt(variance[rows].sum())

    return z(slice(None)), np.array([z(decile == d) for d in range(10)])


def agreement(simulator: Simulator, log) -> dict[str, tuple[float, np.ndarray]]:
    rows = log_rows(simulator, log)
    clicked = rows["clicked"]
    return {
        "click rate": z_scores(clicked.astype(float), rows["p"], rows["var_click"]),
        "watch time per impression": z_scores(rows["watch"], rows["e"], rows["var_watch"]),
        "watch time of clicked rows": z_scores(rows["watch"][clicked], rows["w"][clicked],
                                               rows["var_if_clicked"][clicked]),
    }


def test_expectations_match_the_log():
    simulator, log = medium()
    rows = log_rows(simulator, log)
    assert len(rows["p"]) > 50_000 and 0.05 < rows["clicked"].mean() < 0.3
    for what, (overall, deciles) in agreement(simulator, log).items():
        assert abs(overall) < OVERALL_BOUND, (what, overall)
        assert np.abs(deciles).max() < DECILE_BOUND, (what, deciles.round(2))


@pytest.mark.parametrize("coefficient,value,what", [
    ("_CLICK_AFFINITY", 4.5, "click rate"),  # 5.0 in the log
    ("_COMPLETION_AFFINITY", 2.7, "watch time of clicked rows"),  # 3.0 in the log
])
def test_agreement_fails_for_a_wrong_formula(monkeypatch, coefficient, value, what):
    simulator, log = medium()
    monkeypatch.setattr(simulator_module, coefficient, value)  # the API now differs from the log
    overall, deciles = agreement(simulator, log)[what]
    assert abs(overall) > OVERALL_BOUND or np.abs(deciles).max() > DECILE_BOUND


@pytest.mark.parametrize("completion_base", [-0.5, -6.0])
def test_watch_time_if_clicked_is_the_mean_of_the_log_writers_draws(monkeypatch, completion_base):
    """The quadrature against 200,000 draws of the writer's own function per (user, video); a
    completion base of -6 makes the 1 s clip bind for short videos, so the clip is tested too."""
    monkeypatch.setattr(simulator_module, "_COMPLETION_BASE", completion_base)
    simulator, _ = tiny()
    order = np.argsort(simulator.duration)
    videos = order[[0, 1, len(order) // 2, -1]]  # the shortest, a median and the longest video
    users = np.array([0, 1, 2, 3])
    expected = simulator.watch_time_if_clicked(users, videos)
    rng = np.random.default_rng(7)
    draws = 200_000
    floored = []
    for user, video, mean in zip(users, videos, expected):
        seconds = simulator._draw_watch_time(rng, np.full(draws, user), np.full(draws, video))
        standard_error = seconds.std() / np.sqrt(draws)
        assert abs(seconds.mean() - mean) < 4 * standard_error + 0.01, (user, video, seconds.mean(), mean)
        floored.append((seconds == 1.0).mean())
    if completion_base == -6.0:
        assert floored[0] > 0.9  # the shortest video: mostly the 1 s floor


# --- respond, ids, shown_before -------------------------------------------------------------------


def test_future_videos_and_empty_slots_give_zero():
    simulator, _ = tiny()
    future = np.flatnonzero(simulator.upload_time > 1000)[:2]
    old = np.flatnonzero(simulator.upload_time == 0)[:2]
    pages = np.array([[future[0], -1, old[0], future[1]], [-1, -1, -1, -1], [old[1], old[0], -1, future[0]]])
    response = simulator.respond([0, 1, 2], [1000, 1000, 10**7], pages)
    assert isinstance(response, PageResponse)
    live = np.array([[0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 1]], bool)
    for values in (response.click_probability, response.watch_time_if_clicked, response.expected_watch_time):
        assert (values[~live] == 0).all() and (values[live] > 0).all()
    np.testing.assert_allclose(response.page_watch_time, response.expected_watch_time.sum(axis=1))
    # A video counts from its upload second on.
    at_upload = simulator.respond([0, 0], simulator.upload_time[future[:1]].repeat(2) + [-1, 0], [[future[0]]] * 2)
    assert at_upload.click_probability[0, 0] == 0 < at_upload.click_probability[1, 0]


def test_repeated_exposure_lowers_clicks_not_watch_time():
    simulator, _ = tiny()
    videos = np.flatnonzero(simulator.upload_time == 0)[:2]
    response = simulator.respond([5, 5], [10**6, 10**6], [videos, videos], shown_before=[[0, 0], [2, 0]])
    assert (response.click_probability > 0).all()
    assert response.click_probability[1, 0] < response.click_probability[0, 0]
    assert response.click_probability[1, 1] == response.click_probability[0, 1]
    assert (response.watch_time_if_clicked[1] == response.watch_time_if_clicked[0]).all()


def test_ids_map_to_indices():
    simulator, log = tiny()
    assert (simulator.user_index(log.users.user_id) == np.arange(len(log.users))).all()
    assert (simulator.video_index(log.videos.video_id) == np.arange(len(log.videos))).all()
    assert simulator.video_index(["v007", "", "nope"]).tolist() == [7, -1, -1]
    assert simulator.user_index(np.array([["u001", "x"]])).tolist() == [[1, -1]]
    with pytest.raises(ValueError):
        simulator.respond([0], [0], [[simulator.num_videos]])


def test_shown_before_and_watched_before_count_strictly_earlier_events():
    simulator, log = tiny()
    imp = log.impressions
    rng = np.random.default_rng(0)
    rows = rng.choice(len(imp), 300, replace=False)
    users = simulator.user_index(imp.user_id.to_numpy()[rows])
    times = imp.time.to_numpy()[rows] + rng.integers(-3 * 86400, 3 * 86400, len(rows))
    logged = simulator.video_index(imp.video_id.to_numpy()[rows])
    pages = np.c_[logged, rng.integers(-1, simulator.num_videos, len(rows))]
    counts = simulator.shown_before(imp, users, times, pages)
    by_pair = imp.groupby(["user_id", "video_id"]).time.apply(np.array).to_dict()
    for i in range(len(rows)):
        for j in range(2):
            pair = (simulator.user_ids[users[i]], simulator.video_ids[pages[i, j]] if pages[i, j] >= 0 else "")
            assert counts[i, j] == (by_pair.get(pair, np.array([])) < times[i]).sum()
    # The log's own rows: as the writer counted them (only same-second ties can differ).
    own = simulator.log_shown_before(imp)
    strict = count_before(simulator.user_index(imp.user_id), simulator.video_index(imp.video_id), imp.time,
                          simulator.user_index(imp.user_id), imp.time, simulator.video_index(imp.video_id))
    tie = imp.duplicated(["user_id", "video_id", "time"], keep=False).to_numpy()
    assert (own[~tie] == strict[~tie]).all() and own.max() >= 2
    # Watched before: the (row, video) pairs of each row's user's earlier watches.
    request_rows, videos = simulator.watched_before(log.watches, users[:50], times[:50])
    got = set(zip(request_rows.tolist(), videos.tolist()))
    watches = log.watches.assign(u=simulator.user_index(log.watches.user_id),
                                 v=simulator.video_index(log.watches.video_id))
    want = {(i, v) for i in range(50) for v in watches.v[(watches.u == users[i]) & (watches.time < times[i])]}
    assert got == want and len(got) > 50


# --- the oracle -----------------------------------------------------------------------------------


def test_best_pages_beat_every_other_page():
    simulator, _ = tiny()
    rng = np.random.default_rng(3)
    n, m, k = 6, 6, 3
    users, times = rng.integers(0, simulator.num_users, n), rng.integers(0, simulator.horizon, n)
    candidates = rng.integers(0, simulator.num_videos, (n, m))
    candidates[0, 5] = -1  # padding
    candidates[1, 4] = candidates[1, 2]  # a repeat counts once
    shown = rng.integers(0, 3, (n, m))
    best = simulator.best_pages(users, times, candidates, k, shown_before=shown)
    assert best.shape == (n, k)
    wide = simulator.best_pages(users, times, candidates, m + 2, shown_before=shown, exclude=([], []))
    assert (wide[:, :k] == best).all() and (wide[:, m:] == -1).all()  # more slots than candidates
    for i in range(n):
        def score(page):
            slots = [int(np.flatnonzero(candidates[i] == v)[0]) for v in page]
            return simulator.respond([users[i]], [times[i]], [list(page)], [shown[i, slots]]).page_watch_time[0]
        chosen = [v for v in best[i] if v >= 0]
        live = {v for v in candidates[i] if v >= 0 and simulator.upload_time[v] <= times[i]}
        assert len(set(chosen)) == len(chosen) == min(k, len(live)) and set(chosen) <= live
        for page in itertools.combinations(sorted(live), min(k, len(live))):
            assert score(page) <= score(chosen) + 1e-9
        values = simulator.respond([users[i]], [times[i]], [chosen],
                                   [[shown[i, np.flatnonzero(candidates[i] == v)[0]] for v in chosen]])
        assert (np.diff(values.expected_watch_time[0]) <= 0).all()  # best first


def test_best_pages_over_the_corpus_with_exclusions():
    simulator, log = medium()
    users = np.arange(0, 1000, 50)
    times = np.full(len(users), simulator.horizon // 2)
    exclude = simulator.watched_before(log.watches, users, times)
    best = simulator.best_pages(users, times, None, 10, exclude=exclude)
    explicit = simulator.best_pages(users, times, np.tile(np.arange(simulator.num_videos), (len(users), 1)), 10,
                                    exclude=exclude)
    assert (best == explicit).all() and (best >= 0).all()
    assert not set(zip(*exclude)) & {(i, v) for i in range(len(users)) for v in best[i]}
    assert (simulator.upload_time[best] <= times[:, None]).all()
    # Every other allowed video is expected to earn no more than the page's last slot.
    expected = simulator.respond(users, times, np.tile(np.arange(simulator.num_videos), (len(users), 1)))
    blocked = np.zeros(expected.expected_watch_time.shape, bool)
    blocked[exclude] = True
    blocked[np.arange(len(users))[:, None], best] = True
    last = simulator.respond(users, times, best).expected_watch_time[:, -1]
    assert (np.where(blocked, 0.0, expected.expected_watch_time).max(axis=1) <= last).all()
