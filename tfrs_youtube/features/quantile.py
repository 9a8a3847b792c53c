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
        n = self.num_quantiles
        initial = np.zeros(n + 1, np.float32) if quantiles is None else np.asarray(quantiles, np.float32)
        if initial.shape != (n + 1,):
            raise ValueError(f"{self.name}: expected {n + 1} quantiles, got {initial.shape}")

        def weight(name, shape):
            return self.add_weight(name=name, shape=shape, initializer="zeros", trainable=False)

        self.quantiles = weight("quantiles", (n + 1,))
        # Derived from the quantiles (kept in step by `_set_quantiles`) so that `call` is a few
        # gathers: at batch 1 in serving the executor's per-op cost dominates, not arithmetic.
        self._inner_quantiles = weight("inner_quantiles", (n - 1,))
        self._intervals = weight("intervals", (n, 3))  # start, 1 / (n * width) (0 if flat), i / n
        self._bounds = weight("bounds", (3,))  # lowest and highest quantile, CDF at or above the top
        self._set_quantiles(initial)
        self._adapted = quantiles is not None

    def _set_quantiles(self, q: np.ndarray) -> None:
        q = np.asarray(q, np.float64)
        n = self.num_quantiles
        width = np.diff(q)
        scale = np.divide(1.0, n * width, out=np.zeros(n), where=width > 0)
        self.quantiles.assign(q.astype(np.float32))
        self._inner_quantiles.assign(q[1:-1].astype(np.float32))
        self._intervals.assign(np.stack([q[:-1], scale, np.arange(n) / n], axis=1).astype(np.float32))
        # A constant feature (no spread) carries nothing: it maps to 0 everywhere.
        self._bounds.assign(np.array([q[0], q[-1], 1.0 if q[-1] > q[0] else 0.0], np.float32))

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
        self._set_quantiles(np.quantile(values, np.linspace(0.0, 1.0, self.num_quantiles + 1)).astype(np.float32))
        self._adapted = True
        return self

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, tf.float32)
        x = tf.debugging.assert_all_finite(x, f"{self.name}: input has NaN or infinite values")
        flat = x if x.shape.rank == 1 else tf.reshape(x, [-1])
        # Index i of the quantile interval [q_i, q_i+1] holding x (0 below, n-1 above); its CDF
        # rises linearly from i/n to (i+1)/n. Ties: the last interval starting at x.
        i = tf.searchsorted(self._inner_quantiles, flat, side="right")
        start, scale, offset = tf.unstack(tf.gather(self._intervals, i), axis=-1)
        cdf = offset + tf.minimum(tf.maximum((flat - start) * scale, 0.0), 1.0 / self.num_quantiles)
        lowest, highest, top = tf.unstack(self._bounds)
        cdf = tf.where(flat <= lowest, 0.0, cdf)
        cdf = tf.where(flat >= highest, top, cdf)
        if x.shape.rank != 1:
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
