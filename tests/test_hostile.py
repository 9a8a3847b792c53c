"""The defects a hostile probe found (issue 22), one test each: every bad input gets a one-line
error naming the key, file (and line) or input, and every odd but valid one a correct answer.

The kills are in tests/test_faults.py, the property-based fuzzing in tests/test_fuzz.py. The
probe's defects in one module are with that module's tests: runs (defect 1, and 7's `.partial`
hint) in tests/test_runs.py, configs (defects 4, 6) in tests/test_config_files.py, REST bodies
(defects 4, 5, 6) in tests/test_rest.py."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest

from conftest import log_folder
from tfrs_youtube.data.schema import SchemaError
from tfrs_youtube.data.tables import read_chunks


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
# Requests (defects 4, 5, 6)


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
