"""End to end at tiny scale: event log -> both stages -> SavedModel -> answers in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfrs_youtube.export import METADATA_FILE, export_saved_model, versions
from tfrs_youtube.reports import held_out_requests
from tfrs_youtube.requests import as_tensors, rest_body, take

K = 10


def _requests(system, n=8):
    requests, _ = held_out_requests(system.examples)
    return take(requests, slice(0, n))


def _run_fresh(code: str, *args) -> dict:
    """Runs code in a new interpreter that imports only tensorflow and scann (not this package)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


FRESH_SERVE = """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import scann  # registers ScaNN's ops; this package is deliberately not imported
    assert "tfrs_youtube" not in sys.modules
    model = tf.saved_model.load(sys.argv[1])
    request = json.load(open(sys.argv[2]))
    fn = model.signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    inputs = {k: tf.constant(np.array(v), dtype=specs[k].dtype) for k, v in request.items()}
    first, second = fn(**inputs), fn(**inputs)
    same = all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    print(json.dumps({"same": bool(same), "ids": first["video_ids"].numpy().astype(str).tolist(),
                      "watch": first["expected_watch_time_s"].numpy().tolist(),
                      "imported": sorted(m for m in sys.modules if m.startswith("tfrs_youtube"))}))
"""


@pytest.mark.slow
def test_saved_model_serves_valid_sorted_stable_answers_in_a_fresh_process(tiny_system, exported_model, tmp_path):
    request = _requests(tiny_system)
    path = tmp_path / "request.json"
    path.write_text(json.dumps({k: v.tolist() for k, v in request.items()}))
    answer = _run_fresh(FRESH_SERVE, exported_model, str(path))
    assert answer["same"], "the same request gave two different answers"
    assert answer["imported"] == []
    corpus = set(tiny_system.examples.vocabulary("video"))
    ids, watch = np.array(answer["ids"]), np.array(answer["watch"])
    assert ids.shape == (len(request["country"]), K)
    for row, times, history in zip(ids, watch, request["watch_history"]):
        assert len(set(row)) == K, "duplicate videos in one answer"
        assert set(row) <= corpus
        assert not set(row) & set(history), "an already-watched video was recommended"
        assert np.all(np.diff(times) <= 1e-6), "not sorted by expected watch time"
        assert np.all(times > 0)
    # The exported model answers like the in-memory one.
    in_memory = tiny_system.recommender.recommend(as_tensors(request))
    np.testing.assert_array_equal(in_memory["video_ids"].numpy().astype(str), ids)
    np.testing.assert_allclose(in_memory["expected_watch_time_s"].numpy(), watch, rtol=1e-4)


@pytest.mark.slow
def test_recommend_cli_answers_tf_serving_rest_bodies(tiny_system, exported_model, tmp_path):
    request = _requests(tiny_system, n=3)
    body = rest_body(request, np.arange(3))
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(body))
    out = subprocess.run([sys.executable, "-m", "tfrs_youtube", "recommend", "--model",
                          os.path.dirname(exported_model), "--request", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    predictions = json.loads(out.stdout)["predictions"]
    assert len(predictions) == 3 and all(len(p["video_ids"]) == K for p in predictions)
    bad = tmp_path / "bad.json"
    del body["instances"][1]["country"]
    bad.write_text(json.dumps(body))
    out = subprocess.run([sys.executable, "-m", "tfrs_youtube", "recommend", "--model", exported_model,
                          "--request", str(bad)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "country" in json.loads(out.stdout)["error"]


def test_export_writes_a_new_version_and_never_touches_the_old_one(tiny_system, exported_model):
    base, name = os.path.split(os.path.dirname(exported_model))
    first = os.path.join(base, name, "1")
    before = {f: os.path.getmtime(os.path.join(r, f)) for r, _, fs in os.walk(first) for f in fs}
    second = export_saved_model(tiny_system.recommender, base, name, tiny_system.recommender.signatures(),
                                metadata={"n": 2})
    assert os.path.basename(second) == "2" and versions(os.path.join(base, name)) == [1, 2]
    after = {f: os.path.getmtime(os.path.join(r, f)) for r, _, fs in os.walk(first) for f in fs}
    assert before == after
    assert not [d for d in os.listdir(os.path.join(base, name)) if d.startswith(".tmp")]
    assert json.load(open(os.path.join(second, "assets.extra", METADATA_FILE))) == {"n": 2}


@pytest.mark.parametrize("variant", ["scann", "ivf"])
def test_warmup_requests_are_prediction_logs_the_model_answers(variant, exported_model, exported_ivf):
    """The warm-up records are the gRPC PredictRequests TF Serving replays at load: the ScaNN model
    and the portable twin on the partitioned index answer them."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    exported_model, name = (exported_model, "tiny") if variant == "scann" else (exported_ivf["portable"],
                                                                               "tiny_portable")
    path = os.path.join(exported_model, "assets.extra", "tf_serving_warmup_requests")
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    request = log.predict_log.request
    assert request.model_spec.name == name and request.model_spec.signature_name == "serving_default"
    model = tf.saved_model.load(exported_model)
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    outputs = model.signatures["serving_default"](**inputs)
    assert outputs["video_ids"].shape == (1, K)


def test_trained_system_beats_chance_and_popularity(tiny_system):
    report = tiny_system.report
    retrieval = report["retrieval"]
    assert retrieval["tfrs_youtube"]["HR@50"] > 1.5 * retrieval["random"]["HR@50"]
    assert retrieval["tfrs_youtube"]["HR@10"] > retrieval["most_popular"]["HR@10"]
    assert report["ranking"]["tfrs_youtube"]["auc"] > 0.65
    assert report["ranking"]["tfrs_youtube"]["weighted_per_user_loss"] < report["ranking"]["random"][
        "weighted_per_user_loss"]
    served = report["two_stage"]
    assert served["tfrs_youtube"]["HR@10"] > served["most_popular"]["HR@10"]
    assert report["scann"]["recall_at_n"] > 0.9


@pytest.mark.slow
def test_demo_command_runs_to_the_end(tmp_path):
    report = tmp_path / "report.json"
    out = subprocess.run([sys.executable, "-m", "tfrs_youtube", "demo", "--quick", "--datasets-dir",
                          str(tmp_path / "datasets"), "--saved-models-dir", str(tmp_path / "saved_models"),
                          "--json", str(report)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("held-out next watch:") == 3
    assert "demo finished" in out.stdout
    assert (tmp_path / "saved_models" / "demo" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "saved_models" / "demo" / "1" / "assets.extra" / "tf_serving_warmup_requests").exists()
    assert sorted(p.name for p in (tmp_path / "datasets" / "synthetic").iterdir()) == [
        "dataset.json", "impressions.csv", "searches.csv", "users.csv", "videos.csv", "watches.csv"]
    assert (tmp_path / "datasets" / "synthetic_examples" / "spec.json").exists()
    figures = json.loads(report.read_text())
    assert set(figures["retrieval"]) == {"tfrs_youtube", "most_popular", "random"}
