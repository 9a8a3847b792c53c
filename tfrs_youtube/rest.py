"""TF Serving's REST request and response bodies, for a loaded SavedModel signature.

The same JSON a user would POST to `/v1/models/<name>:predict` runs here against the loaded
model: the row format (`{"instances": [{...}, ...]}`) or the columnar one (`{"inputs": {...}}`).
Histories of different lengths are padded with "" (and ages with 0), which the model ignores.
Only the signature's declared inputs are accepted, each converted to the declared dtype, and a
request that cannot be converted is refused with a message naming the input.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf


class RequestError(ValueError):
    """A request body that does not fit the signature; the message names the input."""


def _pad(rows: list, name: str, dtype: tf.DType):
    if not all(isinstance(r, (list, tuple)) for r in rows):
        raise RequestError(f"input {name!r}: expected a list per example")
    width = max((len(r) for r in rows), default=0)
    fill = "" if dtype == tf.string else 0
    return [list(r) + [fill] * (width - len(r)) for r in rows]


def _numbers(name: str, value, dtype: tf.DType) -> np.ndarray:
    """The value as an array of `dtype`; a number too large for it (a 400-digit integer, 1e39 for
    a float32) is refused by name rather than turned into infinity or an overflow."""
    wide = np.asarray(value, dtype=np.float64)  # OverflowError for integers beyond float64
    with np.errstate(over="ignore"):  # an overflow is refused just below, by name
        array = wide.astype(dtype.as_numpy_dtype)
    overflow = np.isfinite(wide) & ~np.isfinite(array)
    if overflow.any():
        raise RequestError(f"input {name!r}: {wide[overflow][0]:g} is out of range for {dtype.name}")
    return array


def _convert(name: str, value, spec: tf.TensorSpec) -> tf.Tensor:
    rank = spec.shape.rank
    if rank == 2 and isinstance(value, list):
        value = _pad(value, name, spec.dtype)
    try:
        if spec.dtype == tf.string:
            array = np.asarray(value, dtype=object)
            if array.size and not all(isinstance(v, str) for v in array.ravel()):
                raise RequestError(f"input {name!r}: expected strings")
            tensor = tf.constant(array.astype(str) if array.size else np.zeros(array.shape, str), tf.string)
        else:
            array = _numbers(name, value, spec.dtype)
            tensor = tf.constant(array, spec.dtype)
    except (TypeError, ValueError, OverflowError) as err:
        if isinstance(err, RequestError):
            raise
        raise RequestError(f"input {name!r}: cannot convert to {spec.dtype.name}: {err}") from err
    if tensor.shape.rank != rank:
        raise RequestError(f"input {name!r}: expected rank {rank} (batch first), got shape {tensor.shape.as_list()}")
    return tensor


def signature_inputs(signature) -> dict[str, tf.TensorSpec]:
    """The named input specs of a loaded concrete function (a SavedModel signature)."""
    return dict(signature.structured_input_signature[1])


def parse_request(body: dict | str, signature) -> tuple[dict[str, tf.Tensor], str]:
    """A REST body -> (named input tensors, "instances" | "inputs")."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as err:
            raise RequestError(f"request is not valid JSON: {err}") from err
    specs = signature_inputs(signature)
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise RequestError('request must be a JSON object with exactly one of "instances" or "inputs"')
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances or not all(isinstance(i, dict) for i in instances):
            raise RequestError('"instances" must be a non-empty list of objects')
        columns = {}
        for name in specs:
            missing = [i for i, inst in enumerate(instances) if name not in inst]
            if missing:
                raise RequestError(f"input {name!r} is missing from instance {missing[0]}")
            columns[name] = [inst[name] for inst in instances]
        extra = sorted({k for inst in instances for k in inst} - set(specs))
        form = "instances"
    else:
        columns = body["inputs"]
        if not isinstance(columns, dict):
            raise RequestError('"inputs" must be an object of named inputs')
        missing = [name for name in specs if name not in columns]
        if missing:
            raise RequestError(f"input {missing[0]!r} is missing (expected {sorted(specs)})")
        extra = sorted(set(columns) - set(specs))
        form = "inputs"
    if extra:
        raise RequestError(f"unknown input {extra[0]!r} (expected {sorted(specs)})")
    tensors = {name: _convert(name, columns[name], spec) for name, spec in specs.items()}
    sizes = {name: int(t.shape[0]) for name, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        raise RequestError(f"inputs disagree on the batch size: {sizes}")
    return tensors, form


_decode = np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b), otypes=[object])


def response_body(outputs: dict[str, tf.Tensor], form: str) -> dict:
    """TF Serving's response: {"predictions": [...]} for rows, {"outputs": {...}} for columns."""
    columns = {}
    for name, tensor in outputs.items():
        value = tensor.numpy()
        # Strings come back as UTF-8 bytes (numpy's astype(str) would decode them as ASCII).
        columns[name] = _decode(value).tolist() if value.dtype == object else value.tolist()
    if form == "inputs":
        return {"outputs": columns}
    batch = len(next(iter(columns.values())))
    return {"predictions": [{name: col[i] for name, col in columns.items()} for i in range(batch)]}


def error_summary(err: Exception) -> str:
    """One line for a model's InvalidArgument: the check that failed and the input it names.

    TensorFlow wraps an in-graph assertion in a multi-line report ("Graph execution error:",
    node names, stack); what a client needs is the assertion's own message.
    """
    text = getattr(err, "message", None) or str(err)
    for marker in ("request input", "Shape of tensor", "expected to be a"):
        for line in text.splitlines():
            if marker in line:
                line = line.strip().replace("\\'", "'")
                if "assertion failed: [" in line:
                    line = line.split("assertion failed: [", 1)[1].split("]", 1)[0]
                return line
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__
