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


def test_adapt_on_a_dataset_equals_adapt_on_the_array_and_shapes_are_kept():
    values = np.random.default_rng(1).lognormal(size=1000).astype(np.float32)
    from_array = QuantileNormalization(num_quantiles=10).adapt(values)
    from_dataset = QuantileNormalization(num_quantiles=10).adapt(tf.data.Dataset.from_tensor_slices(values).batch(64))
    np.testing.assert_allclose(from_dataset.quantiles.numpy(), from_array.quantiles.numpy())
    out = from_array(tf.constant(values[:12].reshape(3, 4)))
    assert out.shape == (3, 4, 3)
    only_x = QuantileNormalization(num_quantiles=10, powers=False).adapt(values)
    np.testing.assert_allclose(only_x(tf.constant(values[:5])).numpy()[:, 0], out.numpy().reshape(-1, 3)[:5, 0])
    with pytest.raises(ValueError, match="empty"):
        QuantileNormalization().adapt(np.array([]))


def test_heavy_ties_map_inside_the_unit_interval_and_monotone():
    # Most impressions were never shown before (0): the CDF must still be monotone in x.
    values = np.r_[np.zeros(900), np.arange(1, 101)].astype(np.float32)
    layer = QuantileNormalization(num_quantiles=20).adapt(values)
    x = np.linspace(-1, 120, 500).astype(np.float32)
    cdf = layer(tf.constant(x)).numpy()[:, 0]
    assert (np.diff(cdf) >= 0).all() and cdf.min() == 0.0 and cdf.max() == 1.0


def test_serialises_inside_a_saved_model(tmp_path):
    layer = QuantileNormalization(num_quantiles=8, name="age").adapt(np.arange(100.0))
    module = tf.Module()
    module.layer = layer
    module.f = tf.function(lambda x: layer(x), input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    x = tf.constant([-3.0, 10.0, 55.5, 500.0])
    np.testing.assert_allclose(loaded.f(x).numpy(), layer(x).numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        loaded.f(tf.constant([np.nan]))
