"""The examples' record format: which features each kind and split of example carries, and how
they are written as `tf.train.Example`s and framed as TFRecords.

A retrieval example is one label with its raw context; a ranking example is one page (a user's
impressions at one request) with its raw context and, per impression, the video, the click and
the watch time: the same shape as a serving request with its candidates. Ids are vocabulary
indices (1..V, 0 for padding), histories are most recent first and not padded on disk, times
are integer seconds. `inputs.py` parses the same `FEATURES` back.
"""

from __future__ import annotations

import struct

import numpy as np

INT, FLOAT, BYTES = "int64", "float32", "bytes"

# name -> (dtype, "scalar" | "list"). Which of them a record holds depends on its kind and split
# (`record_features`); the user's categorical fields are added by name (`user_fields`).
FEATURES = {
    "user_id": (BYTES, "scalar"),
    "watch_history": (INT, "list"),
    "watch_ages_s": (FLOAT, "list"),
    "search_tokens": (INT, "list"),
    "impression_history": (INT, "list"),
    "impression_ages_s": (FLOAT, "list"),
    "age": (FLOAT, "scalar"),
    "request_time": (INT, "scalar"),
    "video_id": (INT, "scalar"),  # a retrieval example's label; a page's impressions are a list
    "watched": (INT, "list"),
    "future_videos": (INT, "list"),
    "future_watch_time_s": (FLOAT, "list"),
    "page": (INT, "scalar"),
    "clicked": (INT, "list"),
    "watch_time_s": (FLOAT, "list"),
}
CONTEXT = ("user_id", "watch_history", "watch_ages_s", "search_tokens", "age", "request_time")
IMPRESSION_CONTEXT = ("impression_history", "impression_ages_s")


def record_features(kind: str, split: str, user_fields: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """The features that records of `kind` ("retrieval" or "ranking") and `split` hold."""
    names = list(CONTEXT)
    if kind == "retrieval":
        names.append("video_id")
        if split != "train":
            names.append("watched")
        if split == "test":  # a request, judged against the user's future
            names += [*IMPRESSION_CONTEXT, "future_videos", "future_watch_time_s"]
        features = {name: FEATURES[name] for name in names}
    elif kind == "ranking":
        names += [*IMPRESSION_CONTEXT, "page", "clicked", "watch_time_s"]
        features = {name: FEATURES[name] for name in names}
        features["video_id"] = (INT, "list")
    else:
        raise ValueError(f"unknown kind of example {kind!r}")
    features.update({name: (INT, "scalar") for name in user_fields})
    return features


def _example_class():
    from tensorflow.core.example import example_pb2

    return example_pb2.Example


def encode(examples: dict[str, object], features: dict[str, tuple[str, str]], fields: dict[str, object],
           lengths: dict[str, np.ndarray]) -> list[bytes]:
    """Serialised `tf.train.Example`s, one per row of `examples`.

    `examples` holds [n, length] padded histories (trimmed here to `lengths[name]` entries),
    [n] scalars, or lists of n arrays; `fields` the user's own features, the same in every row.
    """
    example_class = _example_class()
    n = len(examples["request_time"])
    out = []
    # Python lists once per feature: protobuf's `extend` is fastest from lists.
    columns = {}
    for name, values in examples.items():
        if name not in features:
            continue
        if isinstance(values, np.ndarray):
            columns[name] = values.tolist()
        else:
            columns[name] = [np.asarray(v).tolist() for v in values]
    for i in range(n):
        example = example_class()
        feature = example.features.feature
        for name, (dtype, shape) in features.items():
            if name in fields:
                value = [fields[name]]
            elif name in columns:
                value = columns[name][i]
                if name in lengths:
                    value = value[: lengths[name][i]]
                elif shape == "scalar":
                    value = [value]
            else:
                continue
            if dtype == INT:
                feature[name].int64_list.value.extend(value)
            elif dtype == FLOAT:
                feature[name].float_list.value.extend(value)
            else:
                feature[name].bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in value)
        out.append(example.SerializeToString(deterministic=True))  # map keys sorted
    return out


def history_lengths(examples: dict[str, object]) -> dict[str, np.ndarray]:
    """Entries in use of each padded history (ids are never 0 there: 0 is padding)."""
    lengths = {}
    for ids, ages in (("watch_history", "watch_ages_s"), ("search_tokens", None),
                      ("impression_history", "impression_ages_s")):
        if ids in examples:
            lengths[ids] = (np.asarray(examples[ids]) > 0).sum(axis=1)
            if ages:
                lengths[ages] = lengths[ids]
    return lengths


# ---- TFRecord framing (the format's spec: length, masked CRC32C of it, data, masked CRC32C) --

def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord: what `tf.data.TFRecordDataset` reads back (written without TensorFlow)."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))
