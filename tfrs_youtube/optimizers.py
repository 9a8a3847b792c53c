"""Sparse updates for the embedding tables, Adam for the rest of the network.

A training step touches a few hundred rows of a million-row video table (the batch's histories,
positives and sampled negatives), but Keras' Adam decays both moments of every row at every
step, so its step costs as much as the table is large: the paper's corpus would train at a few
hundred examples per second. The remedy is the one TensorFlow's own sparse optimizers take
(`tf.compat.v1.train.LazyAdamOptimizer`'s lineage, TF Addons' `LazyAdam`): update only the rows
that have a gradient, the moments of the others left as they were. For a row that has a gradient
the update is Adam's, so on data where every row shows up often the two agree; rows seen
rarely keep their moments until they come back instead of decaying towards zero.

`model_optimizer` composes it with Adam for the dense layers through TFRS's
`CompositeOptimizer`, so a model is compiled with one optimizer whatever its tables' sizes.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

ShardedVariable = tf.__internal__.distribute.ShardedVariable

EMBEDDING_OPTIMIZERS = ("lazy_adam", "adagrad", "adam")


class LazyAdam(tf.keras.optimizers.legacy.Adam):
    """Adam whose sparse updates touch only the rows in the gradient (moments and weights).

    Dense gradients are updated exactly as Adam's. Duplicate indices are summed before the
    update (the base class' `_resource_apply_sparse_duplicate_indices`).
    """

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        var_device, var_dtype = var.device, var.dtype.base_dtype
        coefficients = (apply_state or {}).get((var_device, var_dtype)) or self._fallback_apply_state(
            var_device, var_dtype)
        beta_1, beta_2 = coefficients["beta_1_t"], coefficients["beta_2_t"]
        m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
        m_rows = beta_1 * tf.gather(m, indices) + coefficients["one_minus_beta_1_t"] * grad
        v_rows = beta_2 * tf.gather(v, indices) + coefficients["one_minus_beta_2_t"] * tf.square(grad)
        # coefficients["lr"] is Adam's bias-corrected step: lr sqrt(1 - beta_2^t) / (1 - beta_1^t).
        step = coefficients["lr"] * m_rows / (tf.sqrt(v_rows) + coefficients["epsilon"])
        return tf.group(
            m.scatter_update(tf.IndexedSlices(m_rows, indices)),
            v.scatter_update(tf.IndexedSlices(v_rows, indices)),
            var.scatter_sub(tf.IndexedSlices(step, indices)),
        )


def embedding_tables(embeddings) -> list[tf.Variable]:
    """The id tables of a `FeatureEmbeddings` (video, token, categorical user fields), each as
    the variables a model trains: a table sharded over parameter servers (a `ShardedVariable`,
    under `tf.distribute.ParameterServerStrategy`) is its shards."""
    layers = [embeddings.video, embeddings.token, *embeddings.categorical.values()]
    tables = []
    for layer in layers:
        table = layer.embedding.embeddings
        tables.extend(table.variables if isinstance(table, ShardedVariable) else [table])
    return tables


def _sparse_optimizer(name: str, learning_rate: float) -> tf.keras.optimizers.legacy.Optimizer:
    if name == "lazy_adam":
        return LazyAdam(learning_rate)
    if name == "adagrad":
        # Adagrad's step shrinks with the accumulated squares; ten times Adam's rate starts it
        # at a comparable size for embeddings.
        return tf.keras.optimizers.legacy.Adagrad(10 * learning_rate)
    if name == "adam":  # dense: every row's moments decay every step (the pre-sparse behaviour)
        return tf.keras.optimizers.legacy.Adam(learning_rate)
    raise ValueError(f"embedding optimizer must be one of {EMBEDDING_OPTIMIZERS}, got {name!r}")


def model_optimizer(model: tf.keras.Model, embeddings, learning_rate: float,
                    embedding_optimizer: str = "lazy_adam") -> tf.keras.optimizers.legacy.Optimizer:
    """One optimizer for `model`: `embedding_optimizer` on the shared id tables it trains, Adam on
    everything else it trains.

    Args:
      model: the model to compile (its `trainable_variables` decide what is trained).
      embeddings: the shared `FeatureEmbeddings` whose tables get sparse updates.
      learning_rate: Adam's learning rate, for both parts.
      embedding_optimizer: "lazy_adam" (row-wise Adam, the default), "adagrad" (sparse by
        construction) or "adam" (dense Adam on the tables too).
    """
    tables = {table.ref() for table in embedding_tables(embeddings)}
    sparse = _sparse_optimizer(embedding_optimizer, learning_rate)
    dense = tf.keras.optimizers.legacy.Adam(learning_rate)
    # The dense part first: the composite's `iterations` is its first optimizer's, and a model
    # may train no table at all (a ranker that reads them frozen).
    return tfrs.experimental.optimizers.CompositeOptimizer([
        (dense, lambda: [v for v in model.trainable_variables if v.ref() not in tables]),
        (sparse, lambda: [v for v in model.trainable_variables if v.ref() in tables]),
    ])
