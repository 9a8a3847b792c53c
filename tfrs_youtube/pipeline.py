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
# Identifiers compared for equality only, kept exact.
INT64_FEATURES = ("page",)


def as_tensors(features: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    """Numpy feature arrays -> tensors of the dtypes the models expect (strings, float32)."""
    out = {}
    for name, values in features.items():
        values = np.asarray(values)
        if values.dtype == object or values.dtype.kind in "SU":
            out[name] = tf.constant(values.astype(str) if values.dtype.kind == "U" else values, tf.string)
        elif name in INT64_FEATURES:
            out[name] = tf.constant(values, tf.int64)
        elif name in FLOAT64_FEATURES:
            out[name] = tf.constant(values, tf.float64)
        else:
            out[name] = tf.constant(values.astype(np.float32))
    return out


def predict(fn, features: dict[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """`fn` (a model or layer) over numpy feature arrays in batches, concatenated as numpy."""
    n = len(next(iter(features.values())))
    out = [fn(as_tensors({k: v[i:i + batch_size] for k, v in features.items()})).numpy()
           for i in range(0, n, batch_size)]
    return np.concatenate(out) if out else np.zeros((0,))


def _num_examples(features: dict[str, np.ndarray]) -> int:
    lengths = {name: len(v) for name, v in features.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"feature arrays differ in length: {lengths}")
    n = next(iter(lengths.values()), 0)
    if n == 0:
        raise ValueError("no examples: every feature array is empty")
    return n


def to_dataset(features: dict[str, np.ndarray], batch_size: int, shuffle: bool = False,
               seed: int = 0) -> tf.data.Dataset:
    """A batched dataset of feature dicts; shuffled with a fixed seed when asked."""
    n = _num_examples(features)
    dataset = tf.data.Dataset.from_tensor_slices(as_tensors(features))
    if shuffle:
        dataset = dataset.shuffle(min(n, 200_000), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def page_batches(pages: np.ndarray, batch_size: int) -> np.ndarray:
    """Row splits of batches of at most `batch_size` rows (or one whole page, if larger) that
    never cut a page, over rows sorted by page."""
    pages = np.asarray(pages)
    starts = np.flatnonzero(np.r_[True, pages[1:] != pages[:-1]])
    ends = np.r_[starts[1:], len(pages)]
    splits, start = [0], 0
    for page_start, page_end in zip(starts, ends):
        if page_end - start > batch_size and page_start > start:
            splits.append(page_start)
            start = page_start
    splits.append(len(pages))
    return np.asarray(splits, np.int64)


def to_page_dataset(features: dict[str, np.ndarray], batch_size: int = 1024) -> tf.data.Dataset:
    """Ranking examples batched so that each page (the `page` feature: one user's impressions at
    one request) lies in a single batch, as the weighted per-user loss metric needs.

    Use it for validation data: `ranker.fit(train, validation_data=to_page_dataset(held_out))`.
    """
    _num_examples(features)
    if "page" not in features:
        raise ValueError("to_page_dataset: the examples have no 'page' feature (ExampleBuilder.ranking_examples "
                         "adds it)")
    order = np.argsort(np.asarray(features["page"]), kind="stable")
    ordered = {name: np.asarray(values)[order] for name, values in features.items()}
    splits = page_batches(ordered["page"], batch_size)
    # One ragged row per batch; slicing a ragged tensor of ragged rank 1 yields dense batches.
    batches = {name: tf.RaggedTensor.from_row_splits(t, splits) for name, t in as_tensors(ordered).items()}
    return tf.data.Dataset.from_tensor_slices(batches).prefetch(tf.data.AUTOTUNE)
