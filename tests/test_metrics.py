"""The paper's weighted per-user loss as a streaming Keras metric (`metrics`): over page-aligned
batches it equals the numpy metric of `evaluation`, checked by hand."""

import numpy as np
import pytest

from tfrs_youtube.evaluation import weighted_per_user_loss
from tfrs_youtube.metrics import WeightedPerUserLoss


def test_streaming_metric_equals_the_numpy_metric_by_hand():
    # Page 1: clicked a (10 s, score 0.2), b (30 s, 0.9); unclicked c (0.5), d (0.1).
    #   pairs (a,c) wrong, (a,d) right, (b,c) right, (b,d) right -> 10 mispredicted of 2x10 + 2x30.
    # Page 2: clicked e (5 s, 0.3), unclicked f (0.7) -> 5 mispredicted of 5. Total 15 / 85.
    pages = np.array([1, 1, 1, 1, 2, 2])
    clicked = np.array([1, 1, 0, 0, 1, 0], np.float32)
    watch = np.array([10, 30, 0, 0, 5, 0], np.float32)
    scores = np.array([0.2, 0.9, 0.5, 0.1, 0.3, 0.7], np.float32)
    assert weighted_per_user_loss(pages, clicked, watch, scores) == pytest.approx(15 / 85)
    metric = WeightedPerUserLoss()
    for start, stop in [(0, 4), (4, 6)]:  # page-aligned batches
        metric.update_state(pages[start:stop], clicked[start:stop], watch[start:stop], scores[start:stop])
    assert float(metric.result()) == pytest.approx(15 / 85)
    assert np.isnan(float(WeightedPerUserLoss().result()))  # nothing paired yet: not a misleading 0
