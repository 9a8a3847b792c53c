"""Drawing the simulated log (simulated_log): the video sampler at the heart of the simulator."""

import tfrs_youtube  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything loads Keras)

import numpy as np

from tfrs_youtube.data.simulated_log import _VideoSampler

from test_synthetic import DAY  # noqa: E402


def test_video_sampler_matches_popularity_times_freshness():
    rng = np.random.default_rng(0)
    n = 12
    group = np.repeat([0, 1], n // 2)
    upload = rng.integers(0, 10 * DAY, n)
    upload[[0, n // 2]] = 0
    log_pop = rng.normal(0, 1, n)
    tau, floor = 2 * DAY, 0.1
    sampler = _VideoSampler(group, 2, upload, log_pop, tau, floor)
    t = 6 * DAY
    draws = sampler.sample(np.zeros(200_000, np.int64), np.full(200_000, t), 1 - rng.random((2, 200_000)))
    weight = np.exp(log_pop) * (floor + np.exp(-(t - upload) / tau)) * (upload <= t) * (group == 0)
    expected = weight / weight.sum()
    observed = np.bincount(draws, minlength=n) / len(draws)
    np.testing.assert_allclose(observed, expected, atol=0.005)
    # A group with nothing uploaded yet reports -1 (the caller falls back to a wider group).
    early = sampler.sample(np.array([1]), np.array([-1]), np.ones((2, 1)))
    assert early.tolist() == [-1]
