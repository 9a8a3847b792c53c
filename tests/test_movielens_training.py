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


@pytest.mark.slow
def test_ranker_learns_movielens_100k_watch_times_in_their_own_unit():
    """Films weigh up to 6,000 s against 1 for an unclicked impression: in seconds the logits sit
    where the sigmoid is flat, and the ranker learned nothing (AUC 0.500). In units of the mean
    watch time per click it learns, and exp(logit) is still seconds."""
    from tfrs_youtube.data.movielens import load_movielens
    from tfrs_youtube.reports import ranking_report

    config = presets.movielens(seed=0)
    config.candidate_epochs, config.ranker_epochs = 1, 1
    examples = temporary_examples(load_movielens(str(MOVIELENS_100K), impressions_per_watch=1), config, say=None)
    models, info = train(examples, config, verbose=0, say=None)
    assert info["ranker"]["history"]["auc"][0] > 0.7  # Keras' own AUC, in training
    report = ranking_report(models, examples, config)
    ours, popular = report["tfrs_youtube"], report["most_popular"]
    assert ours["auc"] > 0.75 and ours["auc"] > popular["auc"] + 0.2
    assert ours["weighted_per_user_loss"] < popular["weighted_per_user_loss"] - 0.15
    # exp(logit) in seconds: the mean prediction is the mean observed watch time per impression.
    assert report["mean_expected_watch_time_s"] == pytest.approx(report["mean_observed_watch_time_s"], rel=0.15)
