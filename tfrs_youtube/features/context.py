"""Features derived from a request's raw context, defined once for training and serving.

The ranker scores a candidate video by more than its id (paper 4.1): how long ago the user last
watched a video of its topic and how much of their history is in it, how often it was shown to them lately, how old and how long it is. These are
functions of the request (`features.contract`) and of the video catalog, and the skew between
training and serving that a second implementation invites (another window, another cap on the
impressions counted, another answer for an unknown video) is avoided by having exactly one:
`CandidateFeatures`, which the ranker calls on its training pages and the served graph on its
retrieved candidates. Example age (paper 3.3) is the training window's end minus the example's
time; a request is made now, so at serving it is 0.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfrs_youtube.features.contract import RequestContract
from tfrs_youtube.features.lookup import rows

# The continuous features `CandidateFeatures` derives for each candidate, which the ranker reads
# through quantile normalisers (`video_language`, the other one, is read through its table).
IMPRESSION_CONTINUOUS = ("time_since_topic_watch_s", "topic_watch_share", "previous_impressions", "video_age_s",
                         "video_duration_s")


def example_age(request_time: tf.Tensor, window_end: float) -> tf.Tensor:
    """Seconds from an example's time to the end of the training window, floored at 0 (float32)."""
    return tf.cast(tf.maximum(float(window_end) - tf.cast(request_time, tf.float64), 0.0), tf.float32)


class VideoCatalog(tf.keras.layers.Layer):
    """Per row of the video table (0: an unknown video), what the ranker needs of a video: its
    topic and language (vocabulary indices, 0 unknown), its upload time and its duration.

    Args:
      topic, language, upload_time: arrays of length V + 1, in the video table's index order.
      duration: seconds, length V + 1 (None: 0 for every video, as examples built before the
        catalog held durations have it).
    """

    def __init__(self, topic, language, upload_time, duration=None, **kwargs):
        super().__init__(**kwargs)
        rows = len(topic)
        duration = np.zeros(rows) if duration is None else duration
        if not len(language) == len(upload_time) == len(duration) == rows:
            raise ValueError(f"catalog columns differ in length: {rows}, {len(language)}, {len(upload_time)}, "
                             f"{len(duration)}")

        def table(name, values, dtype):
            return self.add_weight(name=name, shape=(rows,), dtype=dtype, trainable=False,
                                   initializer=tf.keras.initializers.Constant(np.asarray(values)))

        # Variables, not constants: a million-video catalog stays out of the graph definition.
        self.topic = table("topic", np.asarray(topic, np.int64), tf.int64)
        self.language = table("language", np.asarray(language, np.int64), tf.int64)
        self.upload_time = table("upload_time", np.asarray(upload_time, np.float64), tf.float64)
        self.duration = table("duration", np.asarray(duration, np.float32), tf.float32)

    @property
    def num_rows(self) -> int:
        return int(self.topic.shape[0])

    def call(self, index: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"topic": rows(self.topic, index), "language": rows(self.language, index),
                "upload_time": rows(self.upload_time, index), "duration": rows(self.duration, index)}


class CandidateFeatures(tf.keras.layers.Layer):
    """Each candidate's ranking features from a request's raw context (the one definition).

    For a request with watch history (video indices, most recent first) and ages, impression
    history and ages, and request time, and [batch, N] candidate video indices:

    - `time_since_topic_watch_s`: the smallest age of a watch of the candidate's topic in the
      watch history; `contract.never_watched_s` if none (an unknown video's topic matches nothing);
    - `topic_watch_share`: the share of the watch history in the candidate's topic (0 for an empty
      history): the paper's "how many videos has the user watched from this channel?", as a
      share so that it reads the same for a new user and a heavy one;
    - `previous_impressions`: how many entries of the impression history show the candidate with
      an age under `contract.impression_window_s`;
    - `video_age_s`: request time - upload time, floored at 0 (0 for an unknown video);
    - `video_duration_s`: the candidate's length (0 for an unknown video): watch time is a share
      of it, so it is as much a part of expected watch time as the chance of a click;
    - `video_language`: the candidate's language index (0 unknown).

    Padding (index 0) in any history never matches.

    Args:
      catalog: the `VideoCatalog`.
      contract: the `RequestContract` (the window and the never-watched value).
    """

    def __init__(self, catalog: VideoCatalog, contract: RequestContract, **kwargs):
        super().__init__(**kwargs)
        self.catalog = catalog
        self.contract = contract

    def call(self, context: dict[str, tf.Tensor], candidates: tf.Tensor) -> dict[str, tf.Tensor]:
        candidates = tf.cast(candidates, tf.int64)
        facts = self.catalog(candidates)
        history = tf.cast(context["watch_history"], tf.int64)
        history_topic = rows(self.catalog.topic, history)
        same_topic = (tf.equal(facts["topic"][:, :, None], history_topic[:, None, :])
                      & (history_topic > 0)[:, None, :] & (facts["topic"] > 0)[:, :, None])
        ages = tf.where(same_topic, tf.cast(context["watch_ages_s"], tf.float32)[:, None, :], np.inf)
        since_topic = tf.reduce_min(ages, axis=-1)
        since_topic = tf.where(tf.math.is_finite(since_topic), since_topic, self.contract.never_watched_s)
        watched = tf.reduce_sum(tf.cast(history > 0, tf.float32), axis=-1, keepdims=True)
        topic_share = tf.math.divide_no_nan(tf.reduce_sum(tf.cast(same_topic, tf.float32), axis=-1), watched)

        shown = tf.cast(context["impression_history"], tf.int64)
        recent = (tf.cast(context["impression_ages_s"], tf.float32) < self.contract.impression_window_s) & (shown > 0)
        previous = tf.reduce_sum(tf.cast(tf.equal(candidates[:, :, None], shown[:, None, :]) & recent[:, None, :],
                                         tf.float32), axis=-1)

        request_time = tf.cast(context["request_time"], tf.float64)[:, None]
        video_age = tf.where(candidates > 0, tf.maximum(request_time - facts["upload_time"], 0.0), 0.0)
        return {"time_since_topic_watch_s": since_topic, "topic_watch_share": topic_share,
                "previous_impressions": previous,
                "video_age_s": tf.cast(video_age, tf.float32), "video_duration_s": facts["duration"],
                "video_language": facts["language"]}

    def get_config(self):
        return {**super().get_config(), "contract": self.contract.to_dict()}
