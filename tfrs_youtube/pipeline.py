"""tf.data pipelines: feature dicts of numpy arrays -> shuffled, batched datasets.

Examples arrive as dicts of equal-length numpy arrays (from `ExampleBuilder`); the models read
dicts of tensors. Strings stay strings: every lookup happens inside the models, so training and
serving share one preprocessing path.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


# Absolute times stay float64: float32 would round a Unix timestamp to about two minutes.
FLOAT64_FEATURES = ("time", "request_time")


def as_tensors(features: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    """Numpy feature arrays -> tensors of the dtypes the models expect (strings, float32)."""
    out = {}
    for name, values in features.items():
        values = np.asarray(values)
        if values.dtype == object or values.dtype.kind in "SU":
            out[name] = tf.constant(values.astype(str) if values.dtype.kind == "U" else values, tf.string)
        elif name in FLOAT64_FEATURES:
            out[name] = tf.constant(values, tf.float64)
        else:
            out[name] = tf.constant(values.astype(np.float32))
    return out


def to_dataset(features: dict[str, np.ndarray], batch_size: int, shuffle: bool = False,
               seed: int = 0) -> tf.data.Dataset:
    """A batched dataset of feature dicts; shuffled with a fixed seed when asked."""
    lengths = {name: len(v) for name, v in features.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"feature arrays differ in length: {lengths}")
    n = next(iter(lengths.values()), 0)
    if n == 0:
        raise ValueError("no examples: every feature array is empty")
    dataset = tf.data.Dataset.from_tensor_slices(as_tensors(features))
    if shuffle:
        dataset = dataset.shuffle(min(n, 200_000), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
