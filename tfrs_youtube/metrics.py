"""The paper's ranking metric as a Keras metric, for `model.fit`'s validation."""

from __future__ import annotations

import tensorflow as tf


class WeightedPerUserLoss(tf.keras.metrics.Metric):
    """The paper's ranking metric, streamed over batches that never split a page.

    Within a page (one user's impressions at one request, the `page` feature), every pair of a
    clicked and an unclicked impression where the unclicked one scores higher counts the clicked
    one's watch time as mispredicted; the result is mispredicted over total paired watch time
    (`evaluation.weighted_per_user_loss` is the same on numpy arrays).
    """

    def __init__(self, name: str = "weighted_per_user_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.mispredicted = self.add_weight(name="mispredicted", initializer="zeros", dtype=tf.float64)
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)

    def update_state(self, pages, clicked, watch_time_s, scores, sample_weight=None):
        pages = tf.reshape(pages, [-1])
        positive = tf.reshape(tf.cast(clicked, tf.float32), [-1]) > 0
        scores = tf.reshape(tf.cast(scores, tf.float32), [-1])
        watch = tf.reshape(tf.cast(watch_time_s, tf.float64), [-1])
        # Pair (i, j): i clicked, j unclicked, same page.
        pair = (pages[:, None] == pages[None, :]) & positive[:, None] & ~positive[None, :]
        wrong = pair & (scores[None, :] > scores[:, None])
        count = lambda mask: tf.reduce_sum(tf.cast(mask, tf.float64), axis=1)  # noqa: E731
        self.mispredicted.assign_add(tf.reduce_sum(watch * count(wrong)))
        self.total.assign_add(tf.reduce_sum(watch * count(pair)))

    def result(self):
        # NaN, not 0, when no page had both a clicked and an unclicked impression.
        return tf.where(self.total > 0, self.mispredicted / tf.maximum(self.total, 1e-12),
                        tf.constant(float("nan"), tf.float64))

    def reset_state(self):
        self.mispredicted.assign(0.0)
        self.total.assign(0.0)
