"""Candidate generation trained on the real MovieLens 100K files (skipped when they are absent)."""

import pytest

from conftest import MOVIELENS_100K
from tfrs_youtube import presets
from tfrs_youtube.reports import retrieval_report
from tfrs_youtube.system import temporary_examples
from tfrs_youtube.training import train

pytestmark = pytest.mark.skipif(
    not (MOVIELENS_100K / "u.data").exists(),
    reason=f"MovieLens 100K not found at {MOVIELENS_100K} (set TFRS_YOUTUBE_MOVIELENS_100K to its directory)",
)


@pytest.mark.slow
def test_candidate_generator_learns_movielens_100k():
    config = presets.movielens(seed=0)
    config.candidate_epochs = 3
    examples = temporary_examples(str(MOVIELENS_100K), config, say=None)  # the raw GroupLens folder
    assert examples.num_records("retrieval", "train") == 100_000 - 2 * 943
    models, _ = train(examples, config, stages=("candidate",), verbose=0, say=None)
    validation = retrieval_report(models.candidate, examples, "validation", ks=(10, 100))
    ours, popular = validation["tfrs_youtube"], validation["most_popular"]
    # Well above most-popular (about 0.09 / 0.32 on this target) after three epochs.
    assert ours["HR@10"] > popular["HR@10"] + 0.03
    assert ours["HR@100"] > popular["HR@100"] + 0.1
