"""Watch-time calibration of the ranker's logit: exp(logit) should be the expected watch time.

The weighted logistic loss makes exp(logit) an estimate of expected watch time only where the
network is right. On impressions it has not seen, its most extreme scores are also its most
over-confident ones, so a monotone map fitted on held-out impressions (the latest training
impressions, kept out of fitting) brings exp(logit) back to observed watch time, decile by
decile, without changing any ranking.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

MIN_END_SLOPE = 0.05
# A segment's level is known to a relative standard error of about sqrt((1 + cv^2) / clicks),
# cv ~ 1.3 the spread of watch times: 1,000 clicks per segment keep it near 5%. (Knots with a
# few dozen clicks were off by half on fresh data.)
CLICKS_PER_KNOT = 1000


def _pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `values` in weighted least squares."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, w in zip(values, weights):
        blocks.append([float(v), float(w), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, w2, c2), (m1, w1, c1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([np.full(c, m) for m, _, c in blocks])


class WatchTimeCalibration(tf.keras.layers.Layer):
    """A monotone piecewise-linear map of the ranker's logit, fitted so that exp(logit) matches
    the observed watch time per impression on held-out data.

    The weighted logistic loss makes exp(logit) an estimate of expected watch time only where
    the network is right; on impressions it has not seen, its most extreme scores are also its
    most over-confident ones (the lowest decile of predictions is watched several times longer
    than predicted). Fitted on a calibration slice the network did not train on (the latest
    training impressions), this map corrects that without changing any ranking: it is
    increasing, so AUC and the weighted per-user loss stay the same. Identity until fitted.

    Args:
      num_knots: at most this many knots, the boundaries of bins of equal click counts of the
        calibration slice's logits; fewer when the slice has fewer than `CLICKS_PER_KNOT` clicks
        per bin.
      knots / values: previously fitted knots (for `from_config`).
    """

    def __init__(self, num_knots: int = 20, knots=None, values=None, **kwargs):
        super().__init__(**kwargs)
        self.num_knots = int(num_knots)
        identity = np.linspace(-1.0, 1.0, self.num_knots, dtype=np.float32)
        self.knots = self.add_weight(name="knots", shape=(self.num_knots,), trainable=False,
                                     initializer=tf.keras.initializers.Constant(
                                         identity if knots is None else np.asarray(knots, np.float32)))
        self.values = self.add_weight(name="values", shape=(self.num_knots,), trainable=False,
                                      initializer=tf.keras.initializers.Constant(
                                          identity if values is None else np.asarray(values, np.float32)))

    def fit(self, logits: np.ndarray, observed_s: np.ndarray, iterations: int = 50) -> "WatchTimeCalibration":
        """Fits the map on raw logits and each impression's watch time (0 when not clicked).

        Knots sit at the boundaries of bins of equal click counts (the lowest and highest logit
        included); the values at the knots maximise the Poisson likelihood of the watch times
        under exp(map(logit)). Every impression counts, through the two knots around it, so the
        map is calibrated on each knot's neighbourhood (the fitted sums of exp(map) and of watch
        time agree there) and the lowest scores, where clicks are rare, are fitted from the whole
        first segment rather than extrapolated from one bin's mean.
        """
        logits = np.asarray(logits, np.float64)
        observed_s = np.asarray(observed_s, np.float64)
        if logits.shape != observed_s.shape or logits.size < self.num_knots:
            raise ValueError(f"{self.name}: need at least {self.num_knots} calibration impressions with matching "
                             f"logits and watch times, got {logits.shape} and {observed_s.shape}")
        if not (np.isfinite(logits).all() and np.isfinite(observed_s).all()) or observed_s.sum() <= 0:
            raise ValueError(f"{self.name}: calibration data must be finite with some watch time")
        order = np.argsort(logits, kind="stable")
        # As many segments as the clicks support (CLICKS_PER_KNOT each), between 1 and num_knots - 1.
        segments = int(np.clip((observed_s > 0).sum() // CLICKS_PER_KNOT, 1, self.num_knots - 1))
        bins = self._bins(order, observed_s[order] > 0, segments)
        knots = np.array([logits[bins[0][0]]] + [logits[b[-1]] for b in bins])
        knots = np.maximum.accumulate(knots) + np.arange(len(knots)) * 1e-4  # strictly increasing
        values = self._poisson_values(logits, observed_s, knots, iterations)
        values = _pool_adjacent_violators(values, np.ones_like(values))
        values = values + np.arange(len(values)) * 1e-4  # strictly increasing: no new ties
        if len(knots) < self.num_knots:
            # The layer has num_knots slots: add points on the fitted segments (the same map).
            extra = np.linspace(knots[0], knots[-1], self.num_knots - len(knots) + 2)[1:-1]
            extra = extra + (extra - knots[0]) * 1e-6  # never exactly on a fitted knot
            values = np.interp(np.sort(np.r_[knots, extra]), knots, values)
            knots = np.sort(np.r_[knots, extra])
        self.knots.assign(knots.astype(np.float32))
        self.values.assign(values.astype(np.float32))
        return self

    @staticmethod
    def _poisson_values(z: np.ndarray, t: np.ndarray, knots: np.ndarray, iterations: int) -> np.ndarray:
        """Values at the knots maximising sum(t * f(z) - exp(f(z))), f the linear interpolation
        (Newton's method; a tiny ridge towards the overall mean keeps empty segments finite)."""
        k = len(knots)
        left = np.clip(np.searchsorted(knots, z, side="right") - 1, 0, k - 2)
        share = np.clip((z - knots[left]) / (knots[left + 1] - knots[left]), 0.0, 1.0)  # weight of the right knot
        rows = [(left, 1.0 - share), (left + 1, share)]
        prior = np.log(t.mean())
        ridge = 1e-6 * len(z) * t.mean()
        values = np.full(k, prior)
        for _ in range(iterations):
            f = values[left] * (1.0 - share) + values[left + 1] * share
            rate = np.exp(f)
            gradient = sum(np.bincount(i, w * (t - rate), minlength=k) for i, w in rows) - ridge * (values - prior)
            hessian = np.diag(np.full(k, ridge))
            for i, wi in rows:
                for j, wj in rows:
                    np.add.at(hessian, (i, j), wi * wj * rate)
            step = np.linalg.solve(hessian, gradient)
            values = values + np.clip(step, -2.0, 2.0)
            if np.abs(step).max() < 1e-7:
                break
        return values

    def _bins(self, order: np.ndarray, clicked: np.ndarray, num_bins: int) -> list[np.ndarray]:
        """Bins of the sorted impressions holding equal numbers of clicks (not of impressions):
        how precisely a segment of the map is known grows with its clicks, not its impressions.
        """
        clicks = np.cumsum(clicked)
        targets = clicks[-1] * np.arange(1, num_bins) / num_bins
        cuts = np.searchsorted(clicks, targets, side="left") + 1
        # Strictly increasing cuts, so that every bin holds at least one impression.
        step = np.arange(num_bins - 1)
        cuts = np.minimum(np.maximum.accumulate(cuts - step) + step, len(order) - num_bins + 1 + step)
        return np.split(order, cuts)

    def call(self, z: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(z)
        z = tf.reshape(z, [-1])
        k, v = self.knots, self.values
        n = self.num_knots
        i = tf.clip_by_value(tf.searchsorted(k, z, side="right") - 1, 0, n - 2)
        lo, hi = tf.gather(k, i), tf.gather(k, i + 1)
        frac = tf.clip_by_value((z - lo) / tf.maximum(hi - lo, 1e-12), 0.0, 1.0)
        inside = tf.gather(v, i) + frac * (tf.gather(v, i + 1) - tf.gather(v, i))
        # Beyond the end knots the map continues the end segments' slopes (kept positive, so the
        # map stays strictly increasing): the network's most extreme scores are its most
        # over-confident, and a slope-1 continuation would keep exactly that over-confidence.
        low = tf.maximum((v[1] - v[0]) / tf.maximum(k[1] - k[0], 1e-12), MIN_END_SLOPE)
        high = tf.maximum((v[-1] - v[-2]) / tf.maximum(k[-1] - k[-2], 1e-12), MIN_END_SLOPE)
        mapped = tf.where(z < k[0], v[0] + low * (z - k[0]), tf.where(z > k[-1], v[-1] + high * (z - k[-1]), inside))
        return tf.reshape(mapped, shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_knots=self.num_knots, knots=self.knots.numpy().tolist(), values=self.values.numpy().tolist())
        return config
