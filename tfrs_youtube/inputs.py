"""tf.data over an examples folder: shards interleaved, shuffled, batched, parsed, prefetched.

Memory stays bounded by the buffers whatever the size of the examples: records stream from the
shards, a shuffle buffer mixes them (each shard is sorted by user, so the buffer is what breaks
a user's run of examples), and batches are parsed together (`tf.io.parse_example` on a batch of
serialised records). Histories come out padded to the contract's lengths with 0 (an index that
embeds to zero); a ranking batch is a batch of pages, its impressions padded to the longest page
with `impression_mask` telling which are real.

`arrays` reads a (small) split back as numpy, for evaluation and for looking at examples.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfrs_youtube.features.context import example_age
from tfrs_youtube.pipeline.example_set import ExampleSet, ExamplesError

# Impression lists of a page: padded to the longest page of the batch.
PAGE_LISTS = ("video_id", "clicked", "watch_time_s")
# Lists kept ragged (their lengths vary without bound: evaluation reads them).
RAGGED = ("watched", "future_videos", "future_watch_time_s")
SHUFFLE_BUFFER = 100_000


def history_lengths(examples: ExampleSet) -> dict[str, int]:
    contract = examples.contract
    return {"watch_history": contract.watch_history_length, "watch_ages_s": contract.watch_history_length,
            "search_tokens": contract.search_history_length,
            "impression_history": contract.impression_history_length,
            "impression_ages_s": contract.impression_history_length}


def _feature_spec(features: dict[str, tuple[str, str]]) -> dict:
    dtypes = {"int64": tf.int64, "float32": tf.float32, "bytes": tf.string}
    return {name: (tf.io.FixedLenFeature([], dtypes[dtype]) if shape == "scalar"
                   else tf.io.RaggedFeature(dtypes[dtype], row_splits_dtype=tf.int64))
            for name, (dtype, shape) in features.items()}


def parser(examples: ExampleSet, kind: str, split: str, features: tuple[str, ...] | None = None):
    """A function from a batch of serialised records to the models' feature dict."""
    available = examples.features(kind, split)
    names = (tuple(available) + (("impression_mask",) if kind == "ranking" else ())) if features is None else tuple(
        features)
    unknown = [n for n in names if n not in available and n not in ("example_age_s", "impression_mask")]
    if unknown:
        raise ExamplesError(f"{kind}/{split} examples have no feature {unknown[0]!r} (they have {sorted(available)})")
    spec = _feature_spec({n: available[n] for n in names if n in available}
                         | ({"request_time": available["request_time"]} if "example_age_s" in names else {})
                         | ({"video_id": available["video_id"]} if "impression_mask" in names else {}))
    lengths = history_lengths(examples)
    config = examples.config
    # Example age: from the window's end for training examples; held-out ones are requests made
    # now (age 0) unless asked for their true age.
    true_age = kind == "retrieval" and (split == "train" or config.held_out_example_age == "true")
    window_end = examples.window_end

    def parse(serialised: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(serialised, spec)
        out = {}
        for name, value in parsed.items():
            if isinstance(value, tf.RaggedTensor):
                if name in lengths:
                    value = value.to_tensor(default_value=0, shape=[None, lengths[name]])
                elif kind == "ranking" and name in PAGE_LISTS:
                    value = value.to_tensor(default_value=0)
                elif name not in RAGGED:
                    value = value.to_tensor(default_value=0)
            out[name] = value
        if "clicked" in out:
            out["clicked"] = tf.cast(out["clicked"], tf.float32)
        if "impression_mask" in names:
            out["impression_mask"] = tf.sequence_mask(parsed["video_id"].row_lengths(),
                                                      tf.shape(out["video_id"])[1])
        if "example_age_s" in names:
            age = example_age(parsed["request_time"], window_end)
            out["example_age_s"] = age if true_age else tf.zeros_like(age)
        return {name: out[name] for name in names}

    return parse


def dataset(examples: ExampleSet, kind: str, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
            features: tuple[str, ...] | None = None, repeat: bool = False, shuffle_buffer: int = SHUFFLE_BUFFER,
            files: list[str] | None = None, worker: tuple[tf.Tensor, int] | None = None) -> tf.data.Dataset:
    """Batches of one kind and split of `examples` as feature dicts (see the module docstring).

    Args:
      kind, split: "retrieval" (train, validation, test) or "ranking" (fit, calibration, test).
      batch_size: examples per batch (pages, for ranking).
      shuffle: shuffle the shards' order and the records (seeded; a new order every epoch).
      features: the features to parse (default: every feature of the records), and
        "example_age_s" (derived from the request time) or "impression_mask" (ranking).
      repeat: repeat forever (for `steps_per_epoch`, or each worker's own stream).
      files: read these shards instead of all of the split's (e.g. one worker's share).
      worker: (index, number of workers): this worker reads every number-th record of the
        stream that all workers order alike, so that together they read each record once per
        pass (the index may be a tensor known only where the input runs).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    shards = {os.path.join(examples.directory, s["file"]): s["records"] for s in examples.shards(kind, split)}
    files = list(files if files is not None else shards)
    if not files:
        raise ExamplesError(f"{examples.directory} has no {kind}/{split} examples")
    data = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        data = data.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        data = data.repeat()
    data = data.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20),
                           cycle_length=min(len(files), 8), block_length=16, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True)
    if worker is not None:
        index, num_workers = worker
        data = data.shard(num_workers, tf.cast(index, tf.int64))
    if shuffle:
        data = data.shuffle(min(shuffle_buffer, max(examples.num_records(kind, split), 1)), seed=seed,
                            reshuffle_each_iteration=True)
    data = data.batch(batch_size)
    if not repeat:
        # Keras then knows an epoch's steps and never runs a step past the end: such a step
        # fails on the empty iterator, but the optimizer's updates that do not wait for the data
        # (the step counter, Adam's decay of every moment) would already have run.
        records = sum(shards.get(f, 0) for f in files)
        data = data.apply(tf.data.experimental.assert_cardinality(-(-records // batch_size)))
    data = data.map(parser(examples, kind, split, features), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return data.prefetch(tf.data.AUTOTUNE)


def arrays(examples: ExampleSet, kind: str, split: str, features: tuple[str, ...] | None = None,
           batch_size: int = 4096) -> dict[str, np.ndarray]:
    """A whole split as numpy arrays, in file order (ragged lists as object arrays of arrays)."""
    if examples.num_records(kind, split) == 0:
        names = features or tuple(examples.features(kind, split))
        return {name: np.zeros(0) for name in names}
    parts: dict[str, list] = {}
    with examples.reading():
        batches = list(dataset(examples, kind, split, batch_size, features=features))
    for batch in batches:
        for name, value in batch.items():
            if isinstance(value, tf.RaggedTensor):
                parts.setdefault(name, []).extend(np.asarray(row) for row in value.numpy())
            else:
                parts.setdefault(name, []).append(value.numpy())
    out = {}
    for name, values in parts.items():
        if values and isinstance(values[0], np.ndarray) and name in RAGGED:
            array = np.empty(len(values), dtype=object)
            array[:] = values
            out[name] = array
        elif name in PAGE_LISTS + ("impression_mask",) and kind == "ranking":
            width = max(v.shape[1] for v in values)
            out[name] = np.concatenate([np.pad(v, ((0, 0), (0, width - v.shape[1]))) for v in values])
        else:
            out[name] = np.concatenate(values)
    return out
