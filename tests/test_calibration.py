"""The watch-time calibration layer (`calibration`): it fixes a known miscalibration without
reordering, round-trips through its config, and refuses non-finite input."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.calibration import WatchTimeCalibration
from tfrs_youtube.evaluation import calibration_deciles, max_calibration_error


def test_calibration_layer_fixes_a_known_miscalibration_without_reordering():
    rng = np.random.default_rng(0)
    log_true = rng.normal(1.0, 1.0, 200_000)
    observed = rng.exponential(np.exp(log_true))  # mean exp(log_true) per impression
    logits = 1.6 * log_true - 0.5  # over-confident and biased
    layer = WatchTimeCalibration(name="calibration")
    np.testing.assert_allclose(layer(tf.constant([-3.0, 0.0, 5.0])).numpy(), [-3.0, 0.0, 5.0], atol=1e-6)
    before = max_calibration_error(calibration_deciles(np.exp(logits), observed))
    layer.fit(logits, observed)
    mapped = layer(tf.constant(logits, tf.float32)).numpy()
    after = max_calibration_error(calibration_deciles(np.exp(mapped), observed))
    assert before > 0.5 and after < 0.05
    order = np.argsort(logits)
    assert (np.diff(mapped[order]) >= -1e-5).all()  # monotone: rankings unchanged
    clone = WatchTimeCalibration.from_config(layer.get_config())
    np.testing.assert_allclose(clone(tf.constant(logits[:100], tf.float32)).numpy(), mapped[:100], rtol=1e-6)
    with pytest.raises(ValueError, match="finite"):
        WatchTimeCalibration().fit(np.array([np.nan] * 30), np.ones(30))
