"""Settings that were chosen for a data set, on its validation target, as named starting points."""

from __future__ import annotations

from tfrs_youtube.data.examples import ExampleConfig
from tfrs_youtube.training import TrainConfig


def movielens(seed: int = 0) -> TrainConfig:
    """MovieLens (100K or 1M) under the leave-last-out protocol of `benchmarks/movielens_retrieval.py`.

    Per user the last rating is the test target and the one before it the validation target;
    ratings of the same second keep their file order. MovieLens has no searches and a single
    language, so those inputs are off. Chosen on the validation target (two seeds each, HR@10):
    recency decay 0.2 (0.229) over 0.1 (0.217) and 0.05 (0.204); no sampled negatives (no
    different on 1,682 items, and faster); 10 epochs (5: 0.190; 15: no better).
    """
    config = TrainConfig(seed=seed)
    config.examples = ExampleConfig(split="user_last", num_test=1, num_validation=1, ties="file_order",
                                    max_examples_per_user=None, seed=seed)
    config.candidate_epochs = 10
    config.batch_size = 512
    config.candidate.use_searches = False
    config.candidate.recency_decay = 0.2
    config.candidate.num_sampled_negatives = 0
    config.candidate.seed = seed
    config.embeddings.seed = seed
    return config


def synthetic_demo(seed: int = 0) -> TrainConfig:
    """The demo's synthetic log: one cut in time for both stages (see `ExampleConfig.split`)."""
    config = TrainConfig(seed=seed, examples=ExampleConfig(split="time", seed=seed))
    config.candidate.seed = config.ranker.seed = config.embeddings.seed = seed
    return config
