"""Row look-ups in tables that may be sharded over parameter servers.

Under `tf.distribute.ParameterServerStrategy` every table of a corpus' size (embeddings, the
catalog, label probabilities, alias tables) is a `ShardedVariable`: its rows split over the
servers. `tf.gather` on one first assembles the whole table on the worker, a read that grows
with the corpus on every step; `tf.nn.embedding_lookup` asks each shard for its own rows only.
On an ordinary variable the two are the same gather.
"""

from __future__ import annotations

import tensorflow as tf


def rows(table, index: tf.Tensor) -> tf.Tensor:
    """`table[index]` along the first axis, reading only those rows (see the module docstring)."""
    return tf.nn.embedding_lookup(table, index)
