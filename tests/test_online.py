"""The online experiment (`tfrs_youtube.online`, `benchmarks/online.py`): pages scored by the
simulator's truth, oracles that no system beats, and the benchmark end to end at a tiny size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import tfrs_youtube  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything loads Keras)

import numpy as np
import pytest

from tfrs_youtube.data.simulator import Simulator
from tfrs_youtube.data.synthetic import SyntheticConfig
from tfrs_youtube.online import SYSTEMS, Scorer, held_out_moments, score_pages

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world():
    simulator = Simulator(SyntheticConfig.tiny(seed=4))
    log = simulator.event_log()
    cut = int(np.quantile(log.watches["time"], 0.8))
    users, times = held_out_moments(log, cut, 120, seed=0)
    return simulator, log, Scorer(simulator, log, users, times)


def test_requests_fall_after_the_cut_one_per_user(world):
    simulator, log, scorer = world
    cut = int(np.quantile(log.watches["time"], 0.8))
    users, times = held_out_moments(log, cut, 120, seed=0)
    assert len(set(users)) == len(users) == 120
    assert (times > cut).all() and times.max() <= log.watches["time"].max()
    again = held_out_moments(log, cut, 120, seed=0)
    assert (again[0] == users).all() and (again[1] == times).all()
    with pytest.raises(ValueError, match="nothing is held out"):
        held_out_moments(log, int(log.watches["time"].max()) + 10, None, seed=0)


def test_watched_videos_earn_nothing(world):
    simulator, log, scorer = world
    # Each request's page: a video its user watched before the request, and one never watched.
    watched = simulator.watched_before(log.watches, scorer.users, scorer.times)
    rows = np.unique(watched[0])
    first = dict(zip(watched[0][::-1], watched[1][::-1]))  # a watched video per row
    page = np.full((len(scorer.users), 2), -1)
    page[rows, 0] = [first[r] for r in rows]
    never = np.setdiff1d(np.arange(simulator.num_videos), simulator.video_index(log.watches["video_id"]))
    assert len(rows) > 100 and len(never)
    page[:, 1] = never[0]
    response = scorer.respond(page)
    assert (response.expected_watch_time[rows, 0] == 0).all()
    live = simulator.upload_time[never[0]] <= scorer.times
    assert (response.expected_watch_time[live, 1] > 0).all()


def test_oracles_beat_every_page_of_their_candidates(world):
    simulator, log, scorer = world
    rng = np.random.default_rng(0)
    n, m, k = len(scorer.users), 40, 5
    candidates = np.stack([rng.choice(simulator.num_videos, m, replace=False) for _ in range(n)])
    best = scorer.best_of(candidates, k)
    assert np.isin(best[best >= 0], candidates).all()
    value = lambda pages: scorer.respond(pages).expected_watch_time.sum(axis=1)  # noqa: E731
    for _ in range(20):  # random pages of the same candidates never score higher
        other = np.take_along_axis(candidates, rng.permuted(np.tile(np.arange(m), (n, 1)), axis=1)[:, :k], 1)
        assert (value(best) >= value(other) - 1e-9).all()
    corpus_best = scorer.best_of_corpus(k, chunk=32)
    assert (value(corpus_best) >= value(best) - 1e-9).all()
    # The corpus oracle never shows a watched or a future video.
    watched = simulator.watched_before(log.watches, scorer.users, scorer.times)
    shown = set(zip(np.repeat(np.arange(n), k)[corpus_best.ravel() >= 0], corpus_best.ravel()[corpus_best.ravel() >= 0]))
    assert not shown & set(zip(*watched))
    assert (simulator.upload_time[np.maximum(corpus_best, 0)] <= scorer.times[:, None]).all()


def test_scores_pair_each_system_with_retrieval_alone(world):
    simulator, log, scorer = world
    rng = np.random.default_rng(1)
    n, k = len(scorer.users), 4
    pages = {name: rng.integers(-1, simulator.num_videos, (n, k)) for name in SYSTEMS}
    pages["candidate_oracle"] = scorer.best_of(np.concatenate([pages["retrieval_only"], pages["two_stage"]], 1), k)
    report = score_pages(scorer, pages)
    per_page = {name: scorer.respond(page).expected_watch_time.sum(axis=1) for name, page in pages.items()}
    for name in SYSTEMS:
        assert report["systems"][name]["watch_time_s"] == pytest.approx(per_page[name].mean())
        assert report["systems"][name]["watch_time_se"] == pytest.approx(per_page[name].std(ddof=1) / np.sqrt(n))
    diff = per_page["two_stage"] - per_page["retrieval_only"]
    paired = report["paired_vs_retrieval_only"]["two_stage"]
    assert paired["diff_s"] == pytest.approx(diff.mean()) and paired["diff_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(n))
    gap = per_page["candidate_oracle"].mean() - per_page["retrieval_only"].mean()
    assert report["gap_closed"] == pytest.approx(diff.mean() / gap)
    assert "retrieval_only" not in report["paired_vs_retrieval_only"]


@pytest.mark.slow
def test_online_benchmark_runs_end_to_end(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "online.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "online.py"), "--json", str(out), "--users", "300",
         "--videos", "300", "--k", "5", "--requests", "100", "--epochs-scale", "0.25"],
        env=dict(os.environ, TMPDIR=str(scratch), TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True,
        timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert set(result["systems"]) == set(SYSTEMS)
    for name, figures in result["systems"].items():
        assert {"watch_time_s", "watch_time_se", "clicks", "clicks_se"} <= set(figures)
        assert figures["watch_time_s"] >= 0 and figures["watch_time_se"] >= 0
    systems = result["systems"]
    for name in SYSTEMS:  # the corpus oracle is the ceiling of every page; the candidate one of its own
        assert systems["corpus_oracle"]["watch_time_s"] >= systems[name]["watch_time_s"] - 1e-9
    for name in ("two_stage", "retrieval_only"):
        assert systems["candidate_oracle"]["watch_time_s"] >= systems[name]["watch_time_s"] - 1e-9
    assert set(result["paired_vs_retrieval_only"]) == set(SYSTEMS) - {"retrieval_only"}
    assert np.isfinite(result["gap_closed"]) and result["requests"] == 100 and result["k"] == 5
    assert not list(scratch.glob("tfrs-youtube-online-*")), "the export's temporary directory was left behind"
