"""The served request: the inputs every signature takes, and the checks it runs on them first.

`request_signature` is the request as TF Serving receives it: raw strings and numbers, batch
dimension first, by `features.contract.RequestContract` (`requests` builds such requests).

Every signature checks its request first and refuses, with an InvalidArgument naming the input,
mismatched batch sizes, histories whose ages do not line up, NaN, infinite or negative numbers and
a `request_time` beyond the log's clock (2^53 s); unknown ids are not errors (they embed to zero,
as out-of-vocabulary ids do in training). The checks are `validate_request`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfrs_youtube.data.schema import MAX_TIME
from tfrs_youtube.features.contract import AGED_HISTORIES


def request_signature(user_fields: tuple[str, ...]) -> dict[str, tf.TensorSpec]:
    """The request: batch dimension first; histories most recent first, padded with "" (their
    ages then ignored), as `features.contract.RequestContract` describes."""
    strings = lambda name, rank=1: tf.TensorSpec([None] * rank, tf.string, name=name)  # noqa: E731
    numbers = lambda name, rank=1, dtype=tf.float32: tf.TensorSpec([None] * rank, dtype, name=name)  # noqa: E731
    return {
        "watch_history": strings("watch_history", 2), "watch_ages_s": numbers("watch_ages_s", 2),
        "search_tokens": strings("search_tokens", 2),
        "impression_history": strings("impression_history", 2), "impression_ages_s": numbers("impression_ages_s", 2),
        **{name: strings(name) for name in user_fields},
        "age": numbers("age"), "request_time": numbers("request_time", dtype=tf.float64),
    }


# Inputs that are numbers: finite, and (ages, times) never negative.
NON_NEGATIVE_INPUTS = ("watch_ages_s", "impression_ages_s", "age", "request_time")


def validate_request(request: dict[str, tf.Tensor], specs: dict[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
    """The request, once every input has its rank, all agree on the batch size and every number
    is sane.

    Failing checks raise InvalidArgumentError naming the input, inside the graph, so TF Serving
    answers them as INVALID_ARGUMENT instead of computing on garbage. (A loaded signature checks
    dtypes and names by itself, but not shapes: a [batch] history would otherwise broadcast.)
    """
    # (Assertion messages name inputs unquoted: TensorFlow would print quotes backslash-escaped.)
    names = sorted(request)
    reference = "country" if "country" in request else names[0]
    # EnsureShape runs in the graph and names the tensor ("Shape of tensor age [2,3] is not
    # compatible with expected shape [?]"); an assert on tf.rank would be constant-folded away,
    # since the placeholders' ranks are known statically.
    request = {name: tf.ensure_shape(request[name], specs[name].shape, name=name) for name in names}
    # Every check is one boolean and a single Assert reports the first that fails, by its message:
    # at batch 1 the executor's per-op overhead, not the arithmetic, is what a check costs, and the
    # checks sit on the critical path (everything waits for them).
    # Every shape in one vector (one ShapeN per dtype, one concat): the ranks are known here, so
    # each input's batch size and every history's shape sit at fixed positions in it.
    groups = {}
    for name in names:
        groups.setdefault(request[name].dtype, []).append(name)
    ordered = [name for group in groups.values() for name in group]
    shapes = tf.concat([shape for group in groups.values()
                        for shape in tf.shape_n([request[name] for name in group])], axis=0)
    position, offset = {}, 0
    for name in ordered:
        position[name] = offset
        offset += request[name].shape.rank
    batch_sizes = tf.gather(shapes, [position[name] for name in names])
    conditions = [tf.equal(batch_sizes, batch_sizes[names.index(reference)])]
    messages = [f"request input {name}: its batch size differs from that of {reference}" for name in names]
    for ages, history in AGED_HISTORIES.items():
        if ages in request:
            dims = lambda name: [position[name] + i for i in range(request[name].shape.rank)]  # noqa: E731
            same = tf.equal(tf.gather(shapes, dims(ages)), tf.gather(shapes, dims(history)))
            conditions.append(tf.reduce_all(same)[None])
            messages.append(f"request input {ages}: must have the shape of {history} (one age per entry)")
    for name in NON_NEGATIVE_INPUTS:
        if name in request:
            x = request[name]
            # NaN fails `x >= 0`; infinity fails `x < inf`.
            conditions.append(tf.reduce_all((x >= 0) & (x < np.inf))[None])
            messages.append(f"request input {name}: NaN, infinite or negative values")
    if "request_time" in request:  # the event log's clock: whole seconds up to 2^53 (data.schema.MAX_TIME)
        conditions.append(tf.reduce_all(request["request_time"] <= float(MAX_TIME))[None])
        messages.append(f"request input request_time: beyond the clock's range (at most 2^53 = {MAX_TIME} s)")
    passed = tf.concat(conditions, axis=0)
    first_failure = tf.argmin(tf.cast(passed, tf.int32))
    check = tf.debugging.Assert(tf.reduce_all(passed), [tf.gather(tf.constant(messages), first_failure)])
    with tf.control_dependencies([check]):
        return {name: tf.identity(x) for name, x in request.items()}
