"""The quantile normaliser's arithmetic and edge cases."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.features.quantile import QuantileNormalization


def test_cdf_by_linear_interpolation_and_clipping():
    layer = QuantileNormalization(num_quantiles=4).adapt(np.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(layer.quantiles.numpy(), [0, 1, 2, 3, 4])
    out = layer(tf.constant([-5.0, 0.0, 0.5, 2.0, 3.5, 9.0])).numpy()
    x = np.array([0.0, 0.0, 0.125, 0.5, 0.875, 1.0])
    np.testing.assert_allclose(out, np.stack([x, x ** 2, np.sqrt(x)], axis=-1), atol=1e-6)


def test_constant_feature_maps_to_zero_and_nan_is_an_error():
    layer = QuantileNormalization(num_quantiles=4).adapt(np.full(10, 7.0))
    np.testing.assert_allclose(layer(tf.constant([1.0, 7.0, 9.0])).numpy(), 0.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        layer(tf.constant([1.0, np.nan]))
    with pytest.raises(ValueError, match="NaN"):
        QuantileNormalization().adapt(np.array([1.0, np.nan]))


def test_config_round_trip_keeps_the_quantiles():
    layer = QuantileNormalization(num_quantiles=8, name="age").adapt(np.random.default_rng(0).exponential(size=500))
    clone = QuantileNormalization.from_config(layer.get_config())
    x = tf.constant([0.1, 0.5, 2.0, 10.0])
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy())
