"""The exported two-stage model and its portable twin, in fresh processes: ops, signatures,
agreement, bad requests, REST bodies through the CLI, and exports that never touch each other."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfrs_youtube.export import METADATA_FILE, PORTABLE_SUFFIX, export_two_stage, read_metadata, versions
from tfrs_youtube.reports import held_out_requests
from tfrs_youtube.requests import rest_body, take

K = 10


def _run_fresh(code: str, *args) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def requests_file(tiny_system, tmp_path_factory):
    """Eight test users' requests as of their held-out watch, saved for the fresh processes."""
    request = take(held_out_requests(tiny_system.examples)[0], slice(0, 8))
    request["watch_history"][0] = ""  # a cold user: no history at all
    request["watch_ages_s"][0] = 0.0
    path = tmp_path_factory.mktemp("requests") / "requests.npz"
    np.savez(path, **{k: (v.astype(str) if v.dtype == object else v) for k, v in request.items()})
    return path


OPS_OF = """
    import json, sys
    from tensorflow.core.protobuf import saved_model_pb2

    def ops_of(path):
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString(open(path + "/saved_model.pb", "rb").read())
        ops = set()
        for graph in proto.meta_graphs:
            ops |= {node.op for node in graph.graph_def.node}
            for function in graph.graph_def.library.function:
                ops |= {node.op for node in function.node_def}
        return ops
"""


def test_portable_twin_uses_only_ops_registered_in_plain_tensorflow(exported_models, portable_model, requests_file):
    """Read in a process that never imports ScaNN: every op of the twin's graph (exact search or
    the partitioned index) must be one that stock TensorFlow (hence stock TF Serving) registers,
    and the twin must load and answer."""
    result = _run_fresh(textwrap.dedent(OPS_OF) + textwrap.dedent("""
        import numpy as np
        import tensorflow as tf
        from tensorflow.python.framework import op_def_registry
        assert "scann" not in sys.modules and "tfrs_youtube" not in sys.modules
        portable, scann_variant = sys.argv[1], sys.argv[2]
        ops = ops_of(portable)
        unregistered = sorted(op for op in ops if op_def_registry.get(op) is None)
        model = tf.saved_model.load(portable)
        request = {k: tf.constant(v) for k, v in np.load(sys.argv[3]).items()}
        answer = model.signatures["serving_default"](**request)
        print(json.dumps({"ops": sorted(ops), "unregistered": unregistered, "scann_ops": sorted(
            op for op in ops_of(scann_variant) if "Scann" in op), "signatures": sorted(model.signatures),
            "ids": answer["video_ids"].numpy().astype(str).tolist()}))
    """), portable_model, exported_models["scann"], requests_file)
    assert result["unregistered"] == [] and not any("Scann" in op for op in result["ops"])
    assert {"MatMul", "TopKV2"} <= set(result["ops"])
    # The check can fail: the ScaNN variant's graph does hold ops stock TensorFlow lacks.
    assert "Scann>ScannSearchBatched" in result["scann_ops"]
    assert result["signatures"] == ["rank", "retrieve", "serving_default", "user_embedding"]
    assert all(len(set(row)) == K and "" not in row for row in result["ids"])


AGREEMENT = """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import scann  # registers ScaNN's ops; this package is not imported
    assert "tfrs_youtube" not in sys.modules
    scann_model, portable = tf.saved_model.load(sys.argv[1]), tf.saved_model.load(sys.argv[2])
    request = {k: tf.constant(v) for k, v in np.load(sys.argv[3]).items()}
    out = {}
    for name, model in (("scann", scann_model), ("portable", portable)):
        served = model.signatures["serving_default"](**request)
        user_inputs = model.signatures["retrieve"].structured_input_signature[1]  # the user tower's inputs
        retrieved = model.signatures["retrieve"](**{k: v for k, v in request.items() if k in user_inputs})
        ranked = model.signatures["rank"](**request, candidate_ids=retrieved["video_ids"])
        out[name] = {"served": served["video_ids"].numpy().astype(str).tolist(),
                     "watch": served["expected_watch_time_s"].numpy().tolist(),
                     "retrieved": retrieved["video_ids"].numpy().astype(str).tolist(),
                     "ranked": ranked["video_ids"].numpy().astype(str).tolist(),
                     "ranked_watch": ranked["expected_watch_time_s"].numpy().tolist()}
    print(json.dumps(out))
"""


def test_scann_and_portable_variants_agree_and_rank_reproduces_the_chain(exported_models, portable_model,
                                                                         requests_file, tiny_system):
    out = _run_fresh(AGREEMENT, exported_models["scann"], portable_model, requests_file)
    history = np.load(requests_file)["watch_history"]
    overlap = [len(set(a) & set(b)) / K for a, b in zip(out["scann"]["served"], out["portable"]["served"])]
    assert np.mean(overlap) >= 0.8, overlap
    for variant in out.values():
        for served, watch, ranked, ranked_watch, seen in zip(variant["served"], variant["watch"], variant["ranked"],
                                                             variant["ranked_watch"], history):
            # `rank` over the retrieved candidates gives the chain's answer: same videos, same order,
            # then the already-watched ones last with expected watch time 0 (and, as "", those
            # uploaded after the request time).
            assert ranked[:K] == served
            assert watch == sorted(watch, reverse=True) and min(watch) > 0
            watched = set(seen) - {""}
            assert not watched & set(served)
            tail = [v for v, w in zip(ranked, ranked_watch) if w == 0]
            assert set(tail) - {""} == watched & set(ranked)
    # The in-memory model gives the exported ScaNN variant's answer.
    import tensorflow as tf

    request = {k: tf.constant(v) for k, v in np.load(requests_file).items()}
    in_memory = tiny_system.recommender.recommend(request)["video_ids"].numpy().astype(str).tolist()
    assert in_memory == out["scann"]["served"]


BAD_REQUESTS = """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import scann
    model = tf.saved_model.load(sys.argv[1])
    serve = model.signatures["serving_default"]
    good = {k: tf.constant(v) for k, v in np.load(sys.argv[2]).items()}
    before = serve(**good)["video_ids"].numpy().astype(str).tolist()
    nan = float("nan")
    cases = {
        "wrong dtype": dict(good, age=tf.constant(["x"] * 8)),
        "wrong rank": dict(good, watch_history=good["watch_history"][:, 0]),
        "wrong rank of a scalar input": dict(good, age=good["watch_ages_s"]),
        "missing input": {k: v for k, v in good.items() if k != "country"},
        "mismatched batch": dict(good, age=good["age"][:3]),
        "NaN age": dict(good, age=tf.constant([nan] * 8, tf.float32)),
        "NaN watch ages": dict(good, watch_ages_s=good["watch_ages_s"] * nan),
        "negative request time": dict(good, request_time=-good["request_time"]),
        "ages not lined up": dict(good, watch_ages_s=good["watch_ages_s"][:, :3]),
        "unknown ids": dict(good, watch_history=tf.fill(tf.shape(good["watch_history"]), "no-such-video"),
                            country=tf.fill([8], "no-such-country"), search_tokens=tf.fill([8, 3], "zzz")),
        "empty histories": dict(good, watch_history=tf.zeros([8, 0], tf.string), watch_ages_s=tf.zeros([8, 0]),
                                search_tokens=tf.zeros([8, 0], tf.string),
                                impression_history=tf.zeros([8, 0], tf.string), impression_ages_s=tf.zeros([8, 0])),
        "empty batch": {k: v[:0] for k, v in good.items()},
    }
    out = {}
    for name, inputs in cases.items():
        try:
            answer = serve(**inputs)
            out[name] = {"ok": answer["video_ids"].numpy().astype(str).tolist(),
                         "watch": answer["expected_watch_time_s"].numpy().tolist()}
        except tf.errors.InvalidArgumentError as err:
            out[name] = {"error": "InvalidArgumentError", "message": err.message}
        except (TypeError, ValueError) as err:
            out[name] = {"error": type(err).__name__, "message": str(err)}
    out["after"] = serve(**good)["video_ids"].numpy().astype(str).tolist()
    out["before"] = before
    print(json.dumps(out))
"""


def test_every_bad_request_gets_a_sensible_answer_or_an_error_naming_the_input(exported_models, exported_ivf,
                                                                              requests_file):
    for variant, model in (("scann", exported_models["scann"]), ("portable", exported_models["portable"]),
                           ("ivf", exported_ivf["portable"])):
        out = _run_fresh(BAD_REQUESTS, model, requests_file)
        named = {"wrong rank": "tensor watch_history", "wrong rank of a scalar input": "tensor age",
                 "mismatched batch": "request input age:", "NaN age": "request input age:",
                 "NaN watch ages": "request input watch_ages_s:",
                 "negative request time": "request input request_time:",
                 "ages not lined up": "request input watch_ages_s:"}
        for case, name in named.items():
            assert out[case]["error"] == "InvalidArgumentError", (variant, case, out[case])
            assert name in out[case]["message"], (variant, case, out[case]["message"][:500])
        # Refused by the signature itself before the graph runs (TF Serving does the same,
        # naming the key in its REST error; `tfrs-youtube recommend` names it too, below).
        assert out["wrong dtype"]["error"] == "InvalidArgumentError" and "string" in out["wrong dtype"]["message"]
        assert out["missing input"]["error"] == "TypeError" and "country" in out["missing input"]["message"]
        # Unknown ids are out of vocabulary and empty histories a cold start: real answers.
        for case in ("unknown ids", "empty histories"):
            ids = out[case]["ok"]
            assert len(ids) == 8 and all(len(set(row)) == K and "" not in row for row in ids), case
            assert np.isfinite(out[case]["watch"]).all() and np.min(out[case]["watch"]) > 0, case
        assert out["empty batch"]["ok"] == []
        assert out["after"] == out["before"]  # nothing above disturbed the loaded model


def _cli(model_dir, body, tmp_path, signature="serving_default"):
    path = tmp_path / f"{signature}.json"
    path.write_text(json.dumps(body))
    run = subprocess.run([sys.executable, "-m", "tfrs_youtube", "recommend", "--model", str(model_dir), "--request",
                          str(path), "--signature", signature], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return run.returncode, json.loads(run.stdout.strip().splitlines()[-1])


def test_rest_bodies_through_every_signature_and_errors_that_name_the_input(portable_model, requests_file,
                                                                            tiny_system, tmp_path):
    request = {k: v for k, v in np.load(requests_file, allow_pickle=False).items()}
    body = rest_body({k: (v.astype(object) if v.dtype.kind == "U" else v) for k, v in request.items()},
                     np.arange(2))
    base = os.path.dirname(portable_model)  # the model directory: its latest version is served
    code, served = _cli(base, body, tmp_path)
    assert code == 0 and len(served["predictions"]) == 2
    candidates = served["predictions"][1]["video_ids"][::-1] + ["no-such-video", ""]
    rank_body = {"instances": [dict(body["instances"][1], candidate_ids=candidates)]}
    code, ranked = _cli(base, rank_body, tmp_path, "rank")
    assert code == 0
    ranked = ranked["predictions"][0]
    assert ranked["video_ids"][:K] == served["predictions"][1]["video_ids"]  # re-ranked into the served order
    # An id outside the catalog has nothing to be scored by: last with the padding, expected 0 s.
    assert ranked["video_ids"][-2:] == ["no-such-video", ""] and ranked["expected_watch_time_s"][-2:] == [0.0, 0.0]
    # user_embedding (like retrieve) takes the user tower's inputs only; an input it does not take
    # is refused by name, as TF Serving refuses it.
    user_inputs = {k: [inst[k] for inst in body["instances"]] for k in tiny_system.recommender.user_signature}
    code, columns = _cli(base, {"inputs": user_inputs}, tmp_path, "user_embedding")
    assert code == 0 and np.asarray(columns["outputs"]["user_embedding"]).shape == (2, 64)
    code, answer = _cli(base, {"inputs": dict(user_inputs, request_time=[1.0, 2.0])}, tmp_path, "retrieve")
    assert code == 2 and "unknown input 'request_time'" in answer["error"]

    bad = json.loads(json.dumps(body))
    bad["instances"][0]["age"] = "old"
    code, answer = _cli(base, bad, tmp_path)
    assert code == 2 and "'age'" in answer["error"]
    bad = json.loads(json.dumps(body))
    bad["instances"][1]["watch_ages_s"] = bad["instances"][1]["watch_ages_s"][:-1]
    code, answer = _cli(base, bad, tmp_path)
    assert code == 2 and "watch_ages_s" in answer["error"] and "\n" not in answer["error"]
    code, answer = _cli(base, body, tmp_path, "nope")
    assert code == 2 and "unknown signature 'nope'" in answer["error"]


def _tree_digest(path):
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            digest.update(name.encode())
            digest.update(open(os.path.join(root, name), "rb").read())
    return digest.hexdigest()


def test_export_writes_both_variants_with_metadata_and_never_touches_an_earlier_version(
        tiny_system, exported_models, tmp_path):
    meta = read_metadata(exported_models["scann"])
    assert meta["variant"] == "scann" and meta["corpus_size"] == len(tiny_system.examples.vocabulary("video"))
    assert meta["contract"]["watch_history_length"] == 50 and meta["contract"]["order"] == "most recent first"
    assert meta["index"]["recall_at_100"] >= 0.9 and meta["index"]["num_leaves"] > 1
    assert set(meta["library_versions"]) >= {"tensorflow", "scann", "tensorflow_recommenders"}
    assert read_metadata(exported_models["portable"])["index"] == {"exact": True}  # small corpus: exact

    base = str(tmp_path)
    first = export_two_stage(tiny_system.recommender, base, "m", metadata={"n": 1})
    before = {k: _tree_digest(v) for k, v in first.items()}
    second = export_two_stage(tiny_system.recommender, base, "m", metadata={"n": 2})
    assert [os.path.basename(p) for p in first.values()] == ["1", "1"]
    assert [os.path.basename(p) for p in second.values()] == ["2", "2"]
    assert {k: _tree_digest(v) for k, v in first.items()} == before
    assert versions(os.path.join(base, "m")) == versions(os.path.join(base, "m" + PORTABLE_SUFFIX)) == [1, 2]
    assert json.load(open(os.path.join(second["scann"], "assets.extra", METADATA_FILE)))["n"] == 2
    assert not [d for d in os.listdir(os.path.join(base, "m")) if d.startswith(".tmp")]


def test_the_partitioned_twin_records_its_probes_and_the_recall_they_reach(exported_ivf):
    meta = read_metadata(exported_ivf["portable"])
    index = meta["index"]
    assert meta["variant"] == "portable" and meta["serving"]["index"] == "ivf" and index["ivf"]
    assert 1 < index["partitions"] and 1 <= index["probes"] <= index["partitions"]
    assert "user vectors" in index["probes_chosen_by"] and index["held_out_queries"] > 0
    # Chosen for 95% of the exact top 100 on half the test users; measured on all of them.
    assert 0.9 <= index["recall_at_100"] <= 1 and 0.8 <= index["recall_at_100_held_out"] <= 1


def test_without_a_ranker_the_recommender_is_retrieval_only(tiny_system, requests_file, tmp_path):
    """`ranker=None`: the candidate generator alone, retrieving as the two-stage model does, with
    `serving_default` the `retrieve` function (the fresh-process export test is in
    tests/test_cli_commands.py)."""
    import dataclasses

    import tensorflow as tf

    from tfrs_youtube.serving import TwoStageRecommender

    config = dataclasses.replace(tiny_system.config.serving, index="exact")
    alone = TwoStageRecommender(tiny_system.candidate_generator, None, config)
    both = TwoStageRecommender(tiny_system.candidate_generator, tiny_system.models.ranker, config)
    assert alone.retrieval_only and not both.retrieval_only
    assert alone.embeddings is both.embeddings
    signatures = alone.signatures()
    assert sorted(signatures) == ["retrieve", "serving_default", "user_embedding"]
    assert signatures["serving_default"] is signatures["retrieve"]
    assert not hasattr(alone, "rank") and not hasattr(alone, "recommend")
    assert alone.serving_signature == alone.user_signature

    request = {k: tf.constant(v) for k, v in np.load(requests_file).items()}
    user_request = alone.user_request(request)
    for name in ("video_ids", "retrieval_scores"):
        np.testing.assert_array_equal(alone.retrieve(user_request)[name], both.retrieve(user_request)[name])
    twin = alone.portable()
    assert twin.retrieval_only and twin.config.index == "exact" and sorted(twin.signatures()) == sorted(signatures)

    # A warm-up record TF Serving could not replay on serving_default is refused before writing.
    with pytest.raises(ValueError, match="serving_default takes"):
        export_two_stage(alone, str(tmp_path), "alone", warmup_requests=[{k: v.numpy() for k, v in request.items()}])
    assert not os.listdir(tmp_path)
