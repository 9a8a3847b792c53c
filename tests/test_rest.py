"""TF Serving's REST bodies (`rest`) against the tiny system's loaded models: numbers that do not
fit an input and a request time beyond the clock are refused by name, and an answer holds any
UTF-8 id (issue 22's hostile probe, defects 4, 5 and 6). REST bodies through `tfrs-youtube
recommend` are in tests/test_serving.py, and the property-based fuzzing of every signature's body
in tests/test_fuzz.py."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_numbers_too_large_for_the_input_are_refused_by_name(loaded_models, first_request):
    from tfrs_youtube.requests import rest_body
    from tfrs_youtube.rest import RequestError, parse_request

    signature = loaded_models["scann"].signatures["serving_default"]
    body = rest_body(first_request, [0])
    for value, message in [(10**400, r"input 'age': cannot convert to float32"),
                           (1e39, r"input 'age': 1e\+39 is out of range for float32")]:
        body["instances"][0]["age"] = value
        with pytest.raises(RequestError, match=message):
            parse_request(json.dumps(body), signature)


def test_a_request_time_beyond_the_clock_is_refused_by_name(loaded_models, first_request):
    import tensorflow as tf

    from tfrs_youtube.requests import as_tensors
    from tfrs_youtube.rest import error_summary

    request = as_tensors(dict(first_request, request_time=np.array([1e300, 5.0])))
    for variant, model in loaded_models.items():
        for name in ("serving_default", "rank"):
            inputs = dict(request)
            if name == "rank":
                inputs["candidate_ids"] = tf.constant([["v000"], ["v001"]])
            with pytest.raises(tf.errors.InvalidArgumentError) as err:
                model.signatures[name](**inputs)
            assert error_summary(err.value) == ("request input request_time: beyond the clock's range "
                                                "(at most 2^53 = 9007199254740992 s)"), variant


def test_a_rest_answer_holds_any_utf8_id():
    """Found by the fuzzer: `rank` answers the candidate ids it was given, and numpy decoded the
    model's UTF-8 bytes as ASCII (a UnicodeDecodeError for "💥")."""
    import tensorflow as tf

    from tfrs_youtube.rest import response_body

    answer = {"video_ids": tf.constant([["💥", ""]]), "expected_watch_time_s": tf.constant([[0.0, 0.0]])}
    assert response_body(answer, "instances") == {"predictions": [{"video_ids": ["💥", ""],
                                                                   "expected_watch_time_s": [0.0, 0.0]}]}
