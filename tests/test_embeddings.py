"""The feature embeddings (`features.embeddings`): one set of tables, the same variable objects
read by the candidate generator and the ranker; fitting the ranker moves them only when it is
told to fine-tune them. (The ranker's examples and helpers are tests/test_ranking.py's.)"""

import numpy as np
import tensorflow as tf

from test_ranking import _config, _pages, examples  # noqa: F401  (`examples`: the fixture)
from tfrs_youtube.training import build_models, fit_ranker


def test_ranker_and_candidate_generator_read_the_same_variables(examples):
    models = build_models(examples, _config(examples))
    embeddings, candidate, ranker = models.embeddings, models.candidate, models.ranker
    table = embeddings.video.embedding.embeddings
    page = _pages(examples, models=models)
    index = page["video_id"][:, 0]
    ranker(page)
    candidate.user_tower(dict(page, example_age_s=tf.zeros_like(page["age"])))
    # One variable object, reachable from both models: not a copy.
    assert any(v is table for v in candidate.variables) and any(v is table for v in ranker.variables)
    before_vectors, before_scores = candidate.video_vectors(index).numpy(), ranker(page).numpy()
    table.assign(table + tf.random.stateless_normal(table.shape, seed=[1, 2]))  # (vectors are L2-normalised)
    assert not np.allclose(candidate.video_vectors(index).numpy(), before_vectors)
    assert not np.allclose(ranker(page).numpy(), before_scores)

    # Frozen (default): fitting the ranker leaves the candidate generator's vectors alone;
    # fine-tuned: they move, because they are the same variables.
    for fine_tune, moves in ((False, False), (True, True)):
        config = _config(examples, fine_tune_embeddings=fine_tune)
        config.ranker_epochs = 1
        tuned = build_models(examples, config)
        start = tuned.embeddings.video.embedding.embeddings.numpy().copy()
        fit_ranker(tuned, examples, config, verbose=0)
        assert (not np.array_equal(tuned.embeddings.video.embedding.embeddings.numpy(), start)) == moves
