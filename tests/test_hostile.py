"""The defects a hostile probe found (issue 22), one test each: every bad input gets a one-line
error naming the key, file (and line) or input, and every odd but valid one a correct answer.

The kills are in tests/test_faults.py, the property-based fuzzing in tests/test_fuzz.py."""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from conftest import log_folder
from tfrs_youtube.data.schema import SchemaError
from tfrs_youtube.data.tables import read_chunks


# --------------------------------------------------------------------------------------------
# Runs (defect 1, and 7's `.partial` hint)


def _config(**changes):
    from tests.conftest import tiny_config

    config = tiny_config()
    config.candidate_epochs = 1
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.mark.slow
def test_a_partial_folder_without_its_record_never_blocks_training(tiny_examples, tmp_path):
    """`mkdir RUN.partial` is the state a kill right after the folder appeared used to leave:
    without --resume training said "add --resume", with it `No such file ... config.json`."""
    from tfrs_youtube.run_training import train_run
    from tfrs_youtube.runs import load_run

    messages = []
    for resume in (False, True):
        out = tmp_path / f"run-{resume}"
        os.makedirs(f"{out}.partial")
        train_run(_config(), tiny_examples.directory, str(out), stage="candidate", resume=resume, verbose=0,
                  say=messages.append)
        assert os.path.isfile(out / "run.json") and not os.path.exists(f"{out}.partial")
    assert any("nothing to resume" in m for m in messages)
    assert load_run(str(tmp_path / "run-True"), say=messages.append).info["stages"].keys() == {"candidate"}


def test_a_partial_run_is_named_as_such_by_export_and_train(tmp_path):
    from tfrs_youtube.run_training import train_run
    from tfrs_youtube.runs import RunError, load_run

    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / "run.json").write_text("{}")
    with pytest.raises(RunError, match=r"interrupted training run.*train --resume --out .*run` "):
        load_run(str(partial))
    with pytest.raises(RunError, match=r"must not end in \.partial.*--out .*run --resume"):
        train_run(_config(), str(tmp_path), str(partial))


# --------------------------------------------------------------------------------------------
# Data (defects 4, 5, 6, 7)


def _watches_csv(tmp_path, value_of: dict) -> str:
    frame = pd.DataFrame({"user_id": ["u1"] * 4, "video_id": ["v1"] * 4, "time": [1, 2, 3, 4],
                          "watch_time_s": [1.0, 2.0, 3.0, 4.0], "source": ["home"] * 4})
    for (row, column), value in value_of.items():
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
    path = tmp_path / "watches.csv"
    frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("column, value, message", [
    ("watch_time_s", "1e300", r"column 'watch_time_s', line 4: 1e\+300 is out of range"),
    ("time", "9000000000000000000", r"column 'time', line 4: time 9000000000000000000 is beyond the clock's range"),
    ("watch_time_s", "-1", r"column 'watch_time_s', line 4: negative value"),
])
def test_numbers_beyond_what_the_examples_hold_are_refused_by_file_and_line(tmp_path, column, value, message):
    path = _watches_csv(tmp_path, {(2, column): value})
    with pytest.raises(SchemaError, match=r"table 'watches' \(file .*watches\.csv\), " + message):
        list(read_chunks("watches", path))


def test_an_empty_table_file_says_so(tmp_path):
    path = tmp_path / "watches.csv"
    path.write_text("")
    with pytest.raises(SchemaError, match=r"watches\.csv\): the file is empty \(expected at least its header line: "
                                          r"user_id,video_id,time"):
        list(read_chunks("watches", str(path)))
    path.write_bytes(b"user_id,video_id\n\xff\xfe\x00,x\n")
    with pytest.raises(SchemaError, match=r"watches\.csv\): not a text file in UTF-8"):
        list(read_chunks("watches", str(path)))


def test_a_watches_table_with_only_its_header_is_named(tiny_log, tmp_path):
    from tfrs_youtube.pipeline import ExampleConfig, build_examples

    folder = log_folder(tiny_log, tmp_path, lambda tables: tables.update(watches=tables["watches"].iloc[:0]))
    with pytest.raises(SchemaError, match=r"table 'watches' \(file .*watches\.csv\): no rows \(the file holds only "
                                          r"its header\)"):
        build_examples(str(folder), str(tmp_path / "out"), ExampleConfig(), say=None)
    assert not (tmp_path / "out").exists()


def test_a_corrupt_dataset_json_is_named_with_its_line(tiny_log, tmp_path):
    from tfrs_youtube.data.directory import read_dataset

    folder = log_folder(tiny_log, tmp_path)
    (folder / "dataset.json").write_text('{"name": "x",\n  "notes": }\n')
    with pytest.raises(ValueError, match=r"dataset\.json, line 2: not valid JSON"):
        read_dataset(str(folder))
    (folder / "dataset.json").write_bytes(b"\x00\xff\xfe")
    with pytest.raises(ValueError, match=r"dataset\.json: not a text file"):
        read_dataset(str(folder))


# --------------------------------------------------------------------------------------------
# Configs (defects 4, 6)


@pytest.mark.parametrize("text, message", [
    ('{"batch_size": 0}', r"cfg\.json: TrainConfig\.batch_size must be >= 1, got 0"),
    ('{"candidate_epochs": 0}', r"cfg\.json: TrainConfig\.candidate_epochs must be >= 1, got 0"),
    ('{"ranker_epochs": -2}', r"cfg\.json: TrainConfig\.ranker_epochs must be >= 1, got -2"),
    ('{"seed": -3}', r"cfg\.json: TrainConfig\.seed must be in \[0, 2\^31\), got -3"),
    ('{"preset": "movielens", "seed": -3}', r"cfg\.json: TrainConfig\.seed must be in"),
    ('{"seed": 1,\n "batch_size": }', r"cfg\.json, line 2: not valid JSON"),
    (b"\x00\x01\xff\xfe", r"cfg\.json: not a text file \(byte 2 is not UTF-8\)"),
])
def test_bad_configs_are_named_by_file_and_key(tmp_path, text, message):
    from tfrs_youtube.config_files import ConfigError, load_train_config

    path = tmp_path / "cfg.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=message):
        load_train_config(str(path))


# --------------------------------------------------------------------------------------------
# Requests (defects 4, 5, 6)


@pytest.fixture(scope="module")
def loaded_models(exported_models):
    import scann  # noqa: F401  (ScaNN's ops)
    import tensorflow as tf

    return {variant: tf.saved_model.load(path) for variant, path in exported_models.items()}


@pytest.fixture(scope="module")
def first_request(tiny_system):
    from tfrs_youtube.reports import held_out_requests
    from tfrs_youtube.requests import take

    requests, _ = held_out_requests(tiny_system.examples)
    return take(requests, slice(0, 2))


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


def test_no_answer_holds_a_video_uploaded_after_the_request(loaded_models, first_request, tiny_system):
    """request_time 0 is before most uploads: they were served, ranked as brand new."""
    import tensorflow as tf

    from tfrs_youtube.requests import as_tensors

    catalog = tiny_system.examples.statistics["catalog_upload_time"]
    upload = dict(zip(tiny_system.examples.vocabulary("video"), np.asarray(catalog)[1:]))
    assert sum(t > 0 for t in upload.values()) > len(upload) // 2  # most are uploaded after time 0
    everything = np.asarray(sorted(upload), dtype=object)
    for time in (0.0, float(np.median(list(upload.values())))):
        request = as_tensors(dict(first_request, request_time=np.array([time, time])))
        for variant, model in loaded_models.items():
            served = model.signatures["serving_default"](**request)
            ranked = model.signatures["rank"](**request, candidate_ids=tf.constant(np.stack([everything] * 2)))
            for answer in (served, ranked):
                ids = answer["video_ids"].numpy().astype(str)
                late = [v for v in ids.ravel() if v and upload[v] > time]
                assert not late, (variant, time, late[:3])
                blank = ids == ""
                assert (answer["expected_watch_time_s"].numpy()[blank] == 0).all()
                assert (answer["retrieval_scores"].numpy()[blank] == 0).all()
            # `rank` answers every candidate: those from the future come back as "" padding, last.
            ids = ranked["video_ids"].numpy().astype(str)
            assert (ids == "").sum(axis=1).tolist() == [sum(t > time for t in upload.values())] * 2


def test_a_binary_request_file_is_named(tmp_path, capsys, exported_model):
    from tfrs_youtube.cli import main

    path = tmp_path / "request.json"
    path.write_bytes(b"\x00\x01\xff\xfe")
    assert main(["recommend", "--model", exported_model, "--request", str(path)]) == 2
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert error.startswith(f"request file {path}: not a text file (byte 2 is not UTF-8)")


# --------------------------------------------------------------------------------------------
# Reports (defect 7)


def test_evaluate_json_is_strict_json(tmp_path, monkeypatch, capsys):
    """A decile without observed watch time has an infinite ratio: null, not `Infinity`."""
    from tfrs_youtube.commands import evaluate

    report = {"ranking": {"calibration": [{"ratio": math.inf, "observed": 0.0}, {"ratio": np.float32(1.5)}],
                          "nan": np.array([np.nan, 2.0])}}
    monkeypatch.setattr(evaluate, "run_report", lambda args, ks: report)
    out = tmp_path / "report.json"
    assert evaluate.run(argparse.Namespace(run="r", data=None, ks="10", json=str(out))) == 0

    def strict(constant):
        raise ValueError(f"not JSON: {constant}")

    for text in (out.read_text(), capsys.readouterr().out):
        value = json.loads(text, parse_constant=strict)
        assert value["ranking"]["calibration"][0]["ratio"] is None
        assert value["ranking"]["calibration"][1]["ratio"] == 1.5 and value["ranking"]["nan"] == [None, 2.0]


def test_a_rest_answer_holds_any_utf8_id():
    """Found by the fuzzer: `rank` answers the candidate ids it was given, and numpy decoded the
    model's UTF-8 bytes as ASCII (a UnicodeDecodeError for "💥")."""
    import tensorflow as tf

    from tfrs_youtube.rest import response_body

    answer = {"video_ids": tf.constant([["💥", ""]]), "expected_watch_time_s": tf.constant([[0.0, 0.0]])}
    assert response_body(answer, "instances") == {"predictions": [{"video_ids": ["💥", ""],
                                                                   "expected_watch_time_s": [0.0, 0.0]}]}
