"""Quantile normalisation of continuous features (paper 4.1).

Neural networks are sensitive to the scale of their inputs; the paper maps each continuous
feature x through its empirical CDF to x̃ in [0, 1], and also feeds x̃² and √x̃ so the network can
form super- and sub-linear functions of the feature easily.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class QuantileNormalization(tf.keras.layers.Layer):
    """Maps a continuous feature through its CDF, emitting [x̃, x̃², √x̃] (or just x̃).

    The CDF is a linear interpolation between quantiles computed in one pass by `adapt`.
    Values outside the seen range clip to 0 or 1. A constant feature (all quantiles equal)
    carries no information and maps to 0 everywhere. NaN or infinite inputs are an error
    (`InvalidArgumentError` naming the layer), never silently a number.

    Args:
      num_quantiles: number of intervals between the stored quantiles.
      powers: emit [x̃, x̃², √x̃] when True (the paper's setting), [x̃] when False.
      quantiles: previously computed quantiles (for `from_config`); else call `adapt`.
    """

    def __init__(self, num_quantiles: int = 100, powers: bool = True, quantiles=None, **kwargs):
        super().__init__(**kwargs)
        self.num_quantiles = int(num_quantiles)
        self.powers = bool(powers)
        initial = np.zeros(self.num_quantiles + 1, np.float32) if quantiles is None else np.asarray(
            quantiles, np.float32
        )
        if initial.shape != (self.num_quantiles + 1,):
            raise ValueError(f"{self.name}: expected {self.num_quantiles + 1} quantiles, got {initial.shape}")
        self.quantiles = self.add_weight(
            name="quantiles",
            shape=(self.num_quantiles + 1,),
            initializer=tf.keras.initializers.Constant(initial),
            trainable=False,
        )
        self._adapted = quantiles is not None

    @property
    def output_width(self) -> int:
        return 3 if self.powers else 1

    def adapt(self, values) -> "QuantileNormalization":
        """Computes the quantiles from an array or a dataset of arrays (NaN is an error)."""
        if isinstance(values, tf.data.Dataset):
            values = np.concatenate([np.reshape(np.asarray(v), -1) for v in values.as_numpy_iterator()])
        values = np.reshape(np.asarray(values, np.float64), -1)
        if values.size == 0:
            raise ValueError(f"{self.name}: cannot adapt on an empty feature")
        if not np.isfinite(values).all():
            raise ValueError(f"{self.name}: cannot adapt on NaN or infinite values")
        self.quantiles.assign(np.quantile(values, np.linspace(0.0, 1.0, self.num_quantiles + 1)).astype(np.float32))
        self._adapted = True
        return self

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, tf.float32)
        x = tf.debugging.assert_all_finite(x, f"{self.name}: input has NaN or infinite values")
        q = self.quantiles
        n = self.num_quantiles
        flat = tf.reshape(x, [-1])
        # Index of the quantile interval holding x; its CDF rises linearly from i/n to (i+1)/n.
        i = tf.clip_by_value(tf.searchsorted(q, flat, side="right") - 1, 0, n - 1)
        lo, hi = tf.gather(q, i), tf.gather(q, i + 1)
        width = hi - lo
        frac = tf.where(width > 0, (flat - lo) / tf.where(width > 0, width, 1.0), tf.zeros_like(flat))
        cdf = (tf.cast(i, tf.float32) + tf.clip_by_value(frac, 0.0, 1.0)) / n
        cdf = tf.where(flat <= q[0], tf.zeros_like(cdf), cdf)
        cdf = tf.where(flat >= q[-1], tf.ones_like(cdf), cdf)
        # A constant feature (no spread) carries nothing: map it to 0.
        cdf = tf.where(q[-1] > q[0], cdf, tf.zeros_like(cdf))
        cdf = tf.reshape(cdf, tf.shape(x))
        if not self.powers:
            return cdf[..., None]
        return tf.stack([cdf, tf.square(cdf), tf.sqrt(cdf)], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_quantiles=self.num_quantiles,
            powers=self.powers,
            quantiles=[float(v) for v in self.quantiles.numpy()],
        )
        return config
