"""Train the ranker on the synthetic log's impressions with `model.fit`, weighted by watch time.

    python examples/train_ranker.py

One example per impression; clicked impressions are positives weighted by their watch time, so
that exp(logit) estimates an impression's expected watch time (paper section 4.2). Impressions
before a cut in time train (their latest quarter, a period as long as the test's, is held out of
fitting: it picks the epoch and calibrates exp(logit)); impressions after the cut are the test.
Prints AUC, the paper's weighted per-user loss and mean predicted vs observed watch time per
decile of the prediction.

TFRS_YOUTUBE_EXAMPLE_SIZE=small uses a tiny log and one epoch (seconds).
"""

import os
import tempfile

import tfrs_youtube  # noqa: F401  (first: selects Keras 2)
from tfrs_youtube import (
    arrays, build_examples, build_models, ExampleConfig, fit_ranker, generate_event_log, RankerConfig,
    ranking_report, SyntheticConfig, TrainConfig,
)

SMALL = os.environ.get("TFRS_YOUTUBE_EXAMPLE_SIZE") == "small"

# 1. A simulated event log, cut in time: the last 20% of it is the test. The calibration slice
#    (the latest training impressions) spans as long a period as the test: what exp(logit) must
#    be corrected for (videos new to the ranker, stale histories) grows with the time since
#    training. No candidate generator trains the shared embeddings here, so the ranker learns
#    them too (fine_tune_embeddings).
config = TrainConfig(seed=0, examples=ExampleConfig(split="time", holdout_fraction=0.2,
                                                    calibration_fraction=0.2 / (1 - 0.2)),
                     ranker=RankerConfig(hidden_layers=(256, 128), weighted=True, fine_tune_embeddings=True),
                     ranker_epochs=1 if SMALL else 3)
log = generate_event_log(SyntheticConfig.tiny(seed=0) if SMALL else SyntheticConfig(num_users=5000, seed=0))

# 2. The examples (the Beam pipeline): one record per page, one user's impressions at one
#    request, with the user's context as of that request.
with tempfile.TemporaryDirectory() as scratch:
    examples = build_examples(log, os.path.join(scratch, "examples"), config.examples, seed=config.seed, say=None)
    fitted = arrays(examples, "ranking", "fit", ("clicked", "impression_mask"))
    print(f"{examples.num_impressions('fit')} training / {examples.num_impressions('calibration')} calibration / "
          f"{examples.num_impressions('test')} test impressions, "
          f"{fitted['clicked'][fitted['impression_mask']].mean():.1%} clicked")

    # 3. Weighted logistic regression with `model.fit`: validated on the calibration slice with
    #    the paper's metric (val_weighted_per_user_loss), the best epoch kept, then a monotone map
    #    of the logit fitted there so that exp(logit) = observed watch time.
    models = build_models(examples, config)
    fit_ranker(models, examples, config, verbose=2)

    # 4. Held-out later impressions.
    report = ranking_report(models, examples, config)

print(f"\n{'system':<14}{'AUC':>7}{'weighted per-user loss':>25}")
for name in ("tfrs_youtube", "most_popular", "random"):
    print(f"{name:<14}{report[name]['auc']:>7.3f}{report[name]['weighted_per_user_loss']:>25.3f}")
print(f"\nmean exp(logit) {report['mean_expected_watch_time_s']:.1f} s per impression, "
      f"observed {report['mean_observed_watch_time_s']:.1f} s")
print(f"{'decile':>6}{'predicted s':>13}{'observed s':>12}{'clicks':>8}")
for row in report["calibration"]:
    print(f"{row['decile']:>6}{row['predicted_s']:>13.2f}{row['observed_s']:>12.2f}{row['clicks']:>8}")
