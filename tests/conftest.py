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


def tiny_config():
    """The tiny system's config: a few epochs, a short candidate list."""
    from tfrs_youtube.training import TrainConfig

    config = TrainConfig(candidate_epochs=3, ranker_epochs=4, batch_size=256)
    config.serving.num_candidates = 100
    return config


@pytest.fixture(scope="session")
def tiny_examples(tiny_log, tmp_path_factory):
    """The tiny log's examples (the pipeline, in this process), built once."""
    from tfrs_youtube.pipeline import build_examples

    config = tiny_config()
    return build_examples(tiny_log, str(tmp_path_factory.mktemp("examples") / "tiny"), config.examples,
                          seed=config.seed, say=None)


@pytest.fixture(scope="session")
def tiny_system(tiny_examples):
    from tfrs_youtube.system import train_two_stage

    return train_two_stage(None, tiny_config(), verbose=0, examples=tiny_examples)


@pytest.fixture(scope="session")
def exported_models(tiny_system, tmp_path_factory):
    """{"scann": version dir, "portable": version dir} of the tiny system's export."""
    from tfrs_youtube.export import export_with_warmup

    base = tmp_path_factory.mktemp("saved_models")
    return export_with_warmup(tiny_system.recommender, tiny_system.examples, str(base), "tiny",
                              metadata={"evaluation": tiny_system.report})


@pytest.fixture(scope="session")
def exported_ivf(tiny_system, tmp_path_factory):
    """The same export with the portable twin on the partitioned index (the tiny corpus is below
    the size where it is chosen by default)."""
    import dataclasses

    from tfrs_youtube.export import export_with_warmup
    from tfrs_youtube.serving import TwoStageRecommender

    config = dataclasses.replace(tiny_system.config.serving, portable_index="ivf")
    recommender = TwoStageRecommender(tiny_system.models.candidate, tiny_system.models.ranker, config)
    base = tmp_path_factory.mktemp("saved_models_ivf")
    return export_with_warmup(recommender, tiny_system.examples, str(base), "tiny")


@pytest.fixture(scope="session", params=["exact", "ivf"])
def portable_model(request, exported_models, exported_ivf):
    """The portable twin's version directory, on exact search and on the partitioned index."""
    return (exported_models if request.param == "exact" else exported_ivf)["portable"]


@pytest.fixture(scope="session")
def exported_model(exported_models):
    return exported_models["scann"]


@pytest.fixture(scope="module")
def loaded_models(exported_models):
    """{"scann": model, "portable": model}: the tiny system's export, loaded in this process."""
    import scann  # noqa: F401  (ScaNN's ops)
    import tensorflow as tf

    return {variant: tf.saved_model.load(path) for variant, path in exported_models.items()}


@pytest.fixture(scope="module")
def first_request(tiny_system):
    """The first two held-out requests of the tiny system's examples."""
    from tfrs_youtube.reports import held_out_requests
    from tfrs_youtube.requests import take

    requests, _ = held_out_requests(tiny_system.examples)
    return take(requests, slice(0, 2))


def log_folder(tiny_log, tmp_path, edit=None) -> Path:
    """The event log written as table files under tmp_path/log, after `edit(tables)` if given
    (tests of bad input damage a copy of the tables, never the shared log)."""
    from tfrs_youtube.data.tables import write_tables

    folder = tmp_path / "log"
    tables = {name: table.copy() for name, table in tiny_log.tables().items()}
    if edit:
        edit(tables)
    write_tables(tables, str(folder))
    return folder
