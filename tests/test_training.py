"""The one trainer's config: it round-trips through JSON, and one seed decides every draw."""

import dataclasses
import json

import numpy as np
import tensorflow as tf

from tfrs_youtube import presets
from tfrs_youtube.candidate import CandidateConfig, UserTower
from tfrs_youtube.features.embeddings import FeatureEmbeddings
from tfrs_youtube.pipeline import ExampleConfig
from tfrs_youtube.ranking import RankerConfig
from tfrs_youtube.training import TrainConfig


def test_every_preset_and_a_changed_config_round_trip_through_json():
    changed = TrainConfig(examples=ExampleConfig(split="time", extra_user_features=("occupation", "zip")),
                          candidate=CandidateConfig(depth=3, embedding_optimizer="adagrad"),
                          ranker=RankerConfig(hidden_layers="1024-512-256"), seed=7)
    for config in [TrainConfig(), changed, *(make(3) for make in presets.PRESETS.values())]:
        again = TrainConfig.from_json(config.to_json())
        assert again == config
        assert json.loads(again.to_json()) == json.loads(config.to_json())


def test_there_is_one_seed():
    seeds = [f.name for part in (TrainConfig, ExampleConfig, CandidateConfig, RankerConfig)
             for f in dataclasses.fields(part) if "seed" in f.name]
    assert seeds == ["seed"]


def test_the_seed_decides_the_initial_models(tiny_examples):
    """Every initialiser derives from `TrainConfig.seed` (examples record the seed they were
    sampled with, and a config with another seed is refused: `test_pipeline`)."""
    def initial_weights(seed):
        embeddings = FeatureEmbeddings.from_examples(tiny_examples, seed=seed)
        tower = UserTower(embeddings, CandidateConfig(), seed=seed)
        batch = {"watch_history": tf.constant([[1, 2]], tf.int64), "search_tokens": tf.constant([[1]], tf.int64),
                 **{name: tf.constant([1], tf.int64) for name in embeddings.user_fields},
                 "age": tf.constant([30.0]), "example_age_s": tf.constant([0.0])}
        embeddings.adapt_continuous(age=np.arange(10.0), example_age_s=np.arange(10.0))
        return embeddings.video.embedding.embeddings.numpy(), tower(batch).numpy()

    (table_a, user_a), (table_b, user_b), (table_c, user_c) = map(initial_weights, (3, 3, 4))
    np.testing.assert_array_equal(table_a, table_b)
    np.testing.assert_array_equal(user_a, user_b)
    assert not np.array_equal(table_a, table_c) and not np.array_equal(user_a, user_c)
