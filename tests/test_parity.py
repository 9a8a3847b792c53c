"""Training/serving parity of the ranking features, on the demo's log.

The training path: the Beam pipeline writes pages, `inputs.dataset` parses them, and the ranker's
`CandidateFeatures` layer derives each impression's features from them. The serving path: a
request built from the raw event log as a TF Serving client would (`requests.at`, by the
contract), with the page's videos as candidates, sent as strings to an exported SavedModel loaded
in a fresh process, which derives the same features in its graph. Over more than 10,000
(user, time, video) triples, including pages whose impression history is full and candidates and
history entries the model does not know, the two must agree exactly.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube import requests as request_tools
from tfrs_youtube.data.synthetic import SyntheticConfig, generate
from tfrs_youtube.features.context import IMPRESSION_CONTINUOUS
from tfrs_youtube.inputs import dataset
from tfrs_youtube.pipeline import build_examples
from tfrs_youtube.ranking import ranking_features
from tfrs_youtube.training import TrainConfig, build_models

# Everything CandidateFeatures derives: the ranker's continuous features and the candidate's language.
FEATURES = IMPRESSION_CONTINUOUS + ("video_language",)
UNKNOWN = "no-such-video"

SERVED = """
    import sys
    import numpy as np
    import tensorflow as tf
    assert "tfrs_youtube" not in sys.modules
    model = tf.saved_model.load(sys.argv[1])
    request = {k: tf.constant(v) for k, v in np.load(sys.argv[2]).items()}
    out = model.candidate_features(request)
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
"""


RAW = ("watch_history", "watch_ages_s", "search_tokens", "impression_history", "impression_ages_s")


@pytest.mark.slow
def test_ranking_features_of_training_equal_the_served_graphs(tmp_path):
    log = generate(SyntheticConfig(seed=0))  # the demo's log: 5,000 users and videos, 374k impressions
    config = TrainConfig()
    config.examples.split = "time"
    examples = build_examples(log, str(tmp_path / "examples"), config.examples, say=None)
    models = build_models(examples, config)
    contract = examples.contract
    names = {"video": np.asarray([""] + examples.vocabulary("video"), dtype=object),
             "token": np.asarray([""] + examples.vocabulary("token"), dtype=object)}

    # The training path over fitted pages until 10,000 impressions, keeping every page whose
    # impression history is full (the contract's 100 entries: where windows and caps matter).
    rng = np.random.default_rng(0)
    parts = []
    for batch in dataset(examples, "ranking", "fit", 256, features=ranking_features(models.embeddings) + ("user_id",)):
        full = (batch["impression_history"].numpy() > 0).sum(axis=1) == contract.impression_history_length
        impressions = sum(int(p["mask"].sum()) for p in parts)
        take = np.flatnonzero(full | (impressions < 10_000))
        batch = {k: tf.gather(v, take) for k, v in batch.items()}
        # Candidates and history entries the model does not know: index 0 here, a string in no
        # vocabulary at serving.
        video, history = batch["video_id"].numpy().copy(), batch["watch_history"].numpy().copy()
        unknown_candidate = rng.random(video.shape) < 0.05
        unknown_history = (rng.random(history.shape) < 0.05) & (history > 0)
        video[unknown_candidate], history[unknown_history] = 0, 0
        derived = models.embeddings.candidate_features(dict(batch, watch_history=tf.constant(history)),
                                                       tf.constant(video))
        part = {"user_id": batch["user_id"].numpy().astype(str), "time": batch["request_time"].numpy(),
                "video": video, "mask": batch["impression_mask"].numpy(), "full": full[take],
                "unknown_candidate": unknown_candidate & batch["impression_mask"].numpy(),
                "unknown_history": unknown_history, **{name: derived[name].numpy() for name in FEATURES}}
        for name in RAW:
            value = batch[name].numpy()
            part["raw_" + name] = names["token" if name == "search_tokens" else "video"][value] if value.dtype == np.int64 \
                else value
        parts.append(part)
        if impressions >= 10_000 and sum(int(p["full"].sum()) for p in parts) >= 200:
            break
    width = max(p["video"].shape[1] for p in parts)

    def joined(name, fill=0):
        return np.concatenate([np.pad(p[name], ((0, 0), (0, width - p[name].shape[1])), constant_values=fill)
                               if p[name].ndim == 2 and name in ("video", "mask", "unknown_candidate") + FEATURES
                               else p[name] for p in parts])

    real, unknown = joined("mask", False), joined("unknown_candidate", False)
    assert real.sum() >= 10_000 and joined("full").sum() >= 200
    assert unknown.sum() > 200 and joined("unknown_history").sum() > 1000

    # The serving path: each page's request rebuilt from the raw log, as a client would.
    request = request_tools.at(log, joined("user_id"), joined("time"), contract)
    for name in RAW:  # what the pipeline wrote is what the contract makes of the log
        np.testing.assert_array_equal(joined("raw_" + name), request[name], err_msg=name)
    request["watch_history"] = np.where(joined("unknown_history"), UNKNOWN, request["watch_history"])
    candidates = names["video"][joined("video")]
    candidates[unknown] = UNKNOWN
    request["candidate_ids"] = candidates

    from tfrs_youtube.export import export_two_stage
    from tfrs_youtube.serving import ServingConfig, TwoStageRecommender

    recommender = TwoStageRecommender(models.candidate, models.ranker, ServingConfig(index="exact"))
    model_dir = export_two_stage(recommender, str(tmp_path / "saved_models"), "parity")["exact"]
    np.savez(tmp_path / "request.npz", **{k: (v.astype(str) if v.dtype == object else v) for k, v in request.items()})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SERVED), model_dir, str(tmp_path / "request.npz"),
                           str(tmp_path / "served.npz")], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    served = np.load(tmp_path / "served.npz")
    for name in FEATURES:
        trained = joined(name)
        mismatched = (trained != served[name]) & real
        assert not mismatched.any(), (name, int(mismatched.sum()), trained[mismatched][:5], served[name][mismatched][:5])
    # Unknown candidates: no topic match, never shown before, age 0, language unknown.
    assert (served["time_since_topic_watch_s"][unknown] == contract.never_watched_s).all()
    assert (served["previous_impressions"][unknown] == 0).all() and (served["video_age_s"][unknown] == 0).all()
    assert (served["video_language"][unknown] == 0).all()
