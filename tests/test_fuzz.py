"""Property-based fuzzing (hypothesis) of what a user hands the system: REST request bodies for
every signature of both exported models, and the event log's table files.

Properties: a request gets a valid ranked list (known ids or "" padding, finite non-negative
numbers, best first, never a video uploaded after its request time, the same answer twice) or an
error naming an input, never a crash; a table file is read or refused with a `SchemaError` naming
the table, the file and, for a bad cell, its column and line. The profile is derandomized (a fixed
seed, no example database), so CI runs the same examples every time, in seconds.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

CI = settings(derandomize=True, database=None, deadline=None, max_examples=25, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def served(exported_models, tiny_system):
    """The loaded models, a valid request instance and each video's upload time."""
    import scann  # noqa: F401
    import tensorflow as tf

    from tfrs_youtube.reports import held_out_requests
    from tfrs_youtube.requests import rest_body, take

    requests, _ = held_out_requests(tiny_system.examples)
    instance = rest_body(take(requests, slice(0, 1)), [0])["instances"][0]
    videos = tiny_system.examples.vocabulary("video")
    upload = dict(zip(videos, np.asarray(tiny_system.examples.statistics["catalog_upload_time"])[1:]))
    models = {variant: tf.saved_model.load(path) for variant, path in exported_models.items()}
    return models, instance, upload


IDS = st.sampled_from(["v000", "v001", "v010", "v123", "v299", "", "nope", "v\x00", "💥", "v000 "])
NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                   st.integers(10**300, 10**400), st.floats(0, 2e6))
ODD = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.just([]), st.just({}), st.just([[1], ["a"]]))


def _value(name: str):
    """A strategy for one input: mostly well-typed, sometimes anything."""
    if name in ("watch_history", "impression_history", "search_tokens", "candidate_ids"):
        good = st.lists(IDS, max_size=6)
    elif name.endswith("_ages_s"):
        good = st.lists(st.one_of(st.floats(0, 1e7), NUMBER), max_size=6)
    elif name in ("age", "request_time"):
        good = st.one_of(st.floats(0, 2e6), NUMBER, st.integers(0, 2**53 + 5))
    else:  # user fields
        good = st.one_of(st.sampled_from(["US", "en", "f", "mobile", ""]), st.text(max_size=4))
    return st.one_of(good, good, good, good, good, good, ODD, NUMBER)


@st.composite
def bodies(draw, names: list[str], instance: dict):
    rows = []
    for _ in range(draw(st.integers(1, 2))):
        row = {name: instance.get(name, ["v000", "v001"]) for name in names}
        for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
            row[name] = draw(_value(name))
        if draw(st.integers(0, 19)) == 0:
            row.pop(draw(st.sampled_from(names)))
        if draw(st.integers(0, 19)) == 0:
            row["extra"] = 1
        rows.append(row)
    if draw(st.booleans()):
        return {"instances": rows}
    return {"inputs": {name: [row.get(name) for row in rows] for name in rows[0]}}


def _check_answer(signature: str, body: dict, answer: dict, upload: dict, request_times) -> None:
    out = {name: tensor.numpy() for name, tensor in answer.items()}
    for name, value in out.items():
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), (name, value)
    if "video_ids" not in out:
        return
    ids = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(out["video_ids"])
    assert all(v == "" or v in upload or signature == "rank" for v in ids.ravel())
    if "expected_watch_time_s" in out:
        times = out["expected_watch_time_s"]
        assert (times >= 0).all() and (np.diff(times, axis=1) <= 1e-6 * np.maximum(times[:, :-1], 1)).all()
        for row, time in zip(ids, request_times):
            late = [v for v in row if v in upload and upload[v] > time]
            assert not late, (time, late)


def _fuzz_signature(served, variant: str, signature: str, data) -> None:
    import tensorflow as tf

    from tfrs_youtube.rest import RequestError, error_summary, parse_request, response_body, signature_inputs

    models, instance, upload = served
    function = models[variant].signatures[signature]
    names = sorted(signature_inputs(function))
    body = data.draw(bodies(names, instance))
    text = json.dumps(body)  # NaN and Infinity as JSON's extensions, which TF Serving also reads
    try:
        inputs, form = parse_request(text, function)
    except RequestError as err:
        message = str(err)
        assert "\n" not in message and ("input" in message or "request" in message), message
        event("refused by the REST layer")
        return
    try:
        first = function(**inputs)
    except tf.errors.InvalidArgumentError as err:
        summary = error_summary(err)
        assert "\n" not in summary and any(name in summary for name in names), summary
        event("refused by the model")
        return
    again = function(**inputs)
    for name in first:
        np.testing.assert_array_equal(first[name].numpy(), again[name].numpy())
    times = inputs["request_time"].numpy() if "request_time" in inputs else [math.inf] * len(next(iter(
        inputs.values())))
    _check_answer(signature, body, first, upload, times)
    json.dumps(response_body(first, form), allow_nan=False)  # the REST answer: strict JSON
    event("answered")


@pytest.mark.parametrize("variant", ["scann", "portable"])
@pytest.mark.parametrize("signature", ["serving_default", "rank", "retrieve", "user_embedding"])
@settings(CI, max_examples=40)
@given(data=st.data())
def test_every_signature_answers_a_valid_list_or_names_the_input(served, variant, signature, data):
    _fuzz_signature(served, variant, signature, data)


# --------------------------------------------------------------------------------------------
# The event log's tables

BAD_CELLS = st.one_of(st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e300", "-5", "abc", "9000000000000000000",
                                       "1.5", "2", "0", "  ", "\"\"", "home", "u000", "1e38", "3.5e38"]),
                      st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=5))


@CI
@given(table=st.sampled_from(["users", "videos", "watches", "searches", "impressions"]), data=st.data())
def test_a_damaged_table_file_is_read_or_refused_by_file_and_line(tiny_log, tmp_path_factory, table, data):
    from tfrs_youtube.data.schema import SchemaError
    from tfrs_youtube.data.tables import read_chunks

    frame = tiny_log.tables()[table].head(6).astype(object).reset_index(drop=True)
    for _ in range(data.draw(st.integers(1, 3))):
        row = data.draw(st.integers(0, len(frame) - 1))
        column = data.draw(st.sampled_from(list(frame.columns)))
        frame.loc[row, column] = data.draw(BAD_CELLS)
    if data.draw(st.integers(0, 9)) == 0:
        frame = frame.drop(columns=[data.draw(st.sampled_from(list(frame.columns)))])
    path = tmp_path_factory.mktemp("fuzz") / f"{table}.csv"
    frame.to_csv(path, index=False)
    try:
        chunks = [chunk for _, chunk in read_chunks(table, str(path))]
    except SchemaError as err:
        message = str(err)
        assert err.table == table and str(path) in message and "\n" not in message, message
        if err.row is not None:
            assert f"line {err.row + 2}" in message
        event("refused")
        return
    event("read")
    read = pd.concat(chunks)
    assert len(read) == len(frame)
    for column in read.select_dtypes("number"):
        assert np.isfinite(read[column].to_numpy(np.float64)).all()
