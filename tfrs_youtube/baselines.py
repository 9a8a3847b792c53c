"""The baselines a user would otherwise pick, trained on the same examples.

- `TwoTowerBaseline`: the TFRS basic retrieval tutorial's model: a user-id tower and an item-id
  tower, in-batch softmax without any sampling correction.
- Most popular is `evaluation.evaluate_popularity` (no model to train).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube.evaluation import DEFAULT_KS, evaluate_retrieval


class TwoTowerBaseline(tfrs.Model):
    """User-id embedding against item-id embedding, trained with an uncorrected in-batch softmax.

    Args:
      user_ids: the known users.
      num_items: the corpus size (items are the video table's indices 1..num_items).
      dim: embedding width (the tutorial's 32 or 64).
      seed: initialiser seed.
    """

    def __init__(self, user_ids, num_items: int, dim: int = 64, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        init = tf.keras.initializers.RandomUniform(-0.05, 0.05, seed=seed)
        users = sorted(set(user_ids))
        self.user_model = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=users, mask_token=None),
            tf.keras.layers.Embedding(len(users) + 1, dim, embeddings_initializer=init),
        ])
        self.item_model = tf.keras.layers.Embedding(num_items + 1, dim, embeddings_initializer=init)
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features, training=False):
        return self.task(self.user_model(features["user_id"]), self.item_model(features["video_id"]))


def train_and_evaluate_two_tower(examples, epochs: int = 10, batch_size: int = 256, learning_rate: float = 0.1,
                                 dim: int = 64, seed: int = 0, ks=DEFAULT_KS, verbose: int = 0) -> dict:
    """Fits the tutorial two-tower model on an examples folder's training labels; exact metrics
    on its test targets, each user's history excluded."""
    from tfrs_youtube.inputs import arrays

    tf.keras.utils.set_random_seed(seed)
    train = arrays(examples, "retrieval", "train", ("user_id", "video_id"))
    test = arrays(examples, "retrieval", "test", ("user_id", "video_id", "watched"))
    num_items = len(examples.vocabulary("video"))
    model = TwoTowerBaseline(train["user_id"].astype(str), num_items, dim=dim, seed=seed)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate))
    data = tf.data.Dataset.from_tensor_slices({"user_id": train["user_id"], "video_id": train["video_id"]})
    data = data.shuffle(len(train["user_id"]), seed=seed).batch(batch_size)
    started = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=verbose)
    train_s = time.perf_counter() - started
    users = model.user_model(tf.constant(test["user_id"])).numpy()
    items = model.item_model(tf.range(1, num_items + 1)).numpy()
    metrics = evaluate_retrieval(users, items, test["video_id"] - 1, [w - 1 for w in test["watched"]], ks)
    metrics["train_s"] = train_s
    return metrics
