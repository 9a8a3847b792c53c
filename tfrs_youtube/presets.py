"""Settings that were chosen for a data set, on its validation target, as named starting points.

Why each value was chosen, with the figures, is in `docs/presets.md`.
"""

from __future__ import annotations

from tfrs_youtube.pipeline.config import ExampleConfig
from tfrs_youtube.training import TrainConfig


def movielens(seed: int = 0) -> TrainConfig:
    """MovieLens (100K or 1M) under the leave-last-out protocol of `benchmarks/movielens_retrieval.py`.

    Per user the last rating is the test target and the one before it the validation target;
    ratings of the same second keep their file order. MovieLens has no searches and a single
    language, so those inputs are off; a stronger recency weighting of the history, no sampled
    negatives and 10 epochs were chosen on the validation target.
    """
    config = TrainConfig(seed=seed)
    config.examples = ExampleConfig(split="user_last", num_test=1, num_validation=1, ties="file_order",
                                    max_examples_per_user=None)
    config.candidate_epochs = 10
    config.batch_size = 512
    config.candidate.use_searches = False
    config.candidate.recency_decay = 0.2
    config.candidate.num_sampled_negatives = 0
    return config


def synthetic_demo(seed: int = 0) -> TrainConfig:
    """The demo's synthetic log: one cut in time for both stages (see `ExampleConfig.split`)."""
    return TrainConfig(seed=seed, examples=ExampleConfig(split="time"))


PRESETS = {"movielens": movielens, "synthetic_demo": synthetic_demo}
