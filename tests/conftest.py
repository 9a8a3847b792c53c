"""Shared fixtures: a tiny synthetic log and one tiny trained system, built once per session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import tfrs_youtube  # noqa: F401  (selects Keras 2 before anything imports Keras)

REPO = Path(__file__).resolve().parents[1]
# The MovieLens-format fixtures are committed as `<file>.fixture` (hand-written, but named so that
# nothing in the repository looks like a GroupLens file) and laid out under their real names in a
# temporary directory when the tests start.
MOVIELENS_FIXTURES = Path(tempfile.mkdtemp(prefix="tfrs-youtube-fixtures-"))
atexit.register(shutil.rmtree, MOVIELENS_FIXTURES, ignore_errors=True)
for _source in (REPO / "tests" / "fixtures").glob("*/*.fixture"):
    (MOVIELENS_FIXTURES / _source.parent.name).mkdir(exist_ok=True)
    shutil.copyfile(_source, MOVIELENS_FIXTURES / _source.parent.name / _source.name[: -len(".fixture")])

MOVIELENS_100K = Path(os.environ.get("TFRS_YOUTUBE_MOVIELENS_100K", REPO.parent / "shared/data/movielens/ml-100k"))


@pytest.fixture(scope="session")
def tiny_log():
    from tfrs_youtube.data.synthetic import SyntheticConfig, generate

    return generate(SyntheticConfig.tiny(seed=0))


@pytest.fixture(scope="session")
def tiny_system(tiny_log):
    from tfrs_youtube.training import TrainConfig, train_two_stage

    config = TrainConfig(candidate_epochs=3, ranker_epochs=4, batch_size=256)
    config.serving.num_candidates = 100
    return train_two_stage(tiny_log, config, verbose=0)


@pytest.fixture(scope="session")
def exported_models(tiny_system, tmp_path_factory):
    """{"scann": version dir, "portable": version dir} of the tiny system's export."""
    from tfrs_youtube.export import export_two_stage

    import numpy as np

    base = tmp_path_factory.mktemp("saved_models")
    builder = tiny_system.builder
    warmup = [builder.requests(np.array([0, 1]), np.array([int(builder.log.watches["time"].max())] * 2))]
    users = builder.requests(np.arange(len(builder.log.users)), np.full(len(builder.log.users),
                                                                         int(builder.log.watches["time"].max())))
    from tfrs_youtube.pipeline import as_tensors

    recommender = tiny_system.recommender
    vectors = recommender.user_embedding(as_tensors(recommender.user_request(users)))["user_embedding"].numpy()
    return export_two_stage(tiny_system.recommender, str(base), "tiny", metadata={"evaluation": tiny_system.report},
                            warmup_requests=warmup, recall_user_vectors=vectors)


@pytest.fixture(scope="session")
def exported_model(exported_models):
    return exported_models["scann"]
