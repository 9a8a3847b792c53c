"""Serving requests as a TF Serving client sends them: raw strings and numbers, by the contract.

Three ways to get them: from examples (`from_examples`: a held-out example is a request, its ids
decoded back to strings), from an in-memory event log at any (user, time) (`at`: the pipeline's
own context selection, so a request holds exactly what a training example at that moment held),
and as a REST body (`rest_body`: TF Serving's row format, histories without padding).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrs_youtube.data.schema import EventLog
from tfrs_youtube.features.contract import AGED_HISTORIES, STANDARD_USER_FIELDS, RequestContract
from tfrs_youtube.pipeline import selection
from tfrs_youtube.pipeline.example_set import ExampleSet
from tfrs_youtube.served_request import request_signature

# Request inputs holding video ids, search tokens, and numbers (the rest are user fields).
# Read off the served request's signature, so that a client's arrays have the dtypes it takes.
VIDEO_INPUTS = tuple(AGED_HISTORIES.values())
NUMBER_INPUTS = {name: spec.dtype.as_numpy_dtype for name, spec in request_signature(()).items()
                 if spec.dtype != tf.string}


def _strings(vocabulary: list[str], index: np.ndarray) -> np.ndarray:
    """Vocabulary indices -> id strings ("" for 0)."""
    names = np.asarray([""] + list(vocabulary), dtype=object)
    return names[np.asarray(index, np.int64)]


def from_examples(examples: ExampleSet, records: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The serving requests of retrieval test examples or ranking pages (`inputs.arrays`)."""
    video, token = examples.vocabulary("video"), examples.vocabulary("token")
    out = {name: _strings(video, records[name]) for name in VIDEO_INPUTS}
    out["search_tokens"] = _strings(token, records["search_tokens"])
    for name in examples.user_fields:
        out[name] = _strings(examples.vocabulary(name), records[name])
    for name, dtype in NUMBER_INPUTS.items():
        out[name] = np.asarray(records[name], dtype)
    return out


def at(log: EventLog, user_ids, times, contract: RequestContract | None = None,
       user_fields: tuple[str, ...] = STANDARD_USER_FIELDS) -> dict[str, np.ndarray]:
    """The requests of the given users at the given times from an in-memory event log, built
    by the pipeline's own selection (`pipeline.selection.context`): the last watches, search
    tokens and impressions strictly before each time, most recent first, padded with ""."""
    contract = contract or RequestContract()
    user_ids, times = np.asarray(user_ids, dtype=object), np.asarray(times, np.int64)
    videos = pd.Index(log.videos["video_id"])
    tokens_per_search = log.searches["query"].str.split()
    token_values = pd.Index(pd.unique(tokens_per_search.explode().dropna()) if len(log.searches) else [])
    watches = log.watches.groupby("user_id").indices
    searches = log.searches.groupby("user_id").indices
    impressions = log.impressions.groupby("user_id").indices
    users = log.users.set_index("user_id")
    empty = np.zeros(0, np.int64)
    rows = []
    cache: dict[str, selection.UserEvents] = {}
    for user, t in zip(user_ids, times):
        if user not in cache:
            w, s, i = watches.get(user, empty), searches.get(user, empty), impressions.get(user, empty)
            counts = tokens_per_search.iloc[s].str.len().to_numpy(np.int64) if len(s) else empty
            flat = [tok for ts in tokens_per_search.iloc[s] for tok in ts] if len(s) else []
            cache[user] = selection.UserEvents.from_unsorted(
                user, {},
                {"video": videos.get_indexer(log.watches["video_id"].to_numpy()[w]) + 1,
                 "time": log.watches["time"].to_numpy()[w], "seconds": log.watches["watch_time_s"].to_numpy()[w],
                 "seq": w},
                {"token": token_values.get_indexer(flat) + 1, "time": np.repeat(log.searches["time"].to_numpy()[s], counts),
                 "seq": np.repeat(s, counts)},
                {"video": videos.get_indexer(log.impressions["video_id"].to_numpy()[i]) + 1,
                 "time": log.impressions["time"].to_numpy()[i], "clicked": log.impressions["clicked"].to_numpy()[i],
                 "seconds": log.impressions["watch_time_s"].to_numpy()[i], "seq": i})
        rows.append(selection.context(cache[user], np.array([t]), contract, impressions=True))
    merged = {name: np.concatenate([r[name] for r in rows]) for name in rows[0]} if rows else {}
    out = {name: _strings(list(videos), merged[name]) for name in VIDEO_INPUTS}
    out["search_tokens"] = _strings(list(token_values), merged["search_tokens"])
    for name in user_fields:
        out[name] = users.loc[user_ids, name].astype(str).to_numpy(object)
    numbers = {**merged, "age": users.loc[user_ids, "age"].to_numpy(), "request_time": times}
    out.update({name: np.asarray(numbers[name], dtype) for name, dtype in NUMBER_INPUTS.items()})
    return out


def as_tensors(request: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    """Numpy request arrays -> the tensors a signature takes (strings, float32, float64 time)."""
    out = {}
    for name, values in request.items():
        values = np.asarray(values)
        if values.dtype == object or values.dtype.kind in "SU":
            out[name] = tf.constant(values.astype(str) if values.dtype.kind == "U" else values, tf.string)
        else:
            out[name] = tf.constant(values, NUMBER_INPUTS.get(name, np.float32))
    return out


def take(request: dict[str, np.ndarray], rows) -> dict[str, np.ndarray]:
    """Some rows of a batch of requests."""
    return {name: np.asarray(values)[rows] for name, values in request.items()}


def rest_body(requests: dict[str, np.ndarray], rows) -> dict:
    """TF Serving's row format for the given rows of a request batch (histories without padding)."""
    instances = []
    for i in rows:
        instance = {}
        for name, values in requests.items():
            value = values[i]
            if np.ndim(value) == 1:
                keep = requests[AGED_HISTORIES[name]][i] != "" if name in AGED_HISTORIES else value != ""
                instance[name] = [x.item() if hasattr(x, "item") else x for x in value[keep]]
            else:
                instance[name] = value.item() if hasattr(value, "item") else value
        instances.append(instance)
    return {"instances": instances}
