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

import numpy as np

import tfrs_youtube  # noqa: F401  (first: selects Keras 2)
import tensorflow as tf
from tfrs_youtube.data.examples import ExampleBuilder, ExampleConfig
from tfrs_youtube.data.synthetic import SyntheticConfig, generate
from tfrs_youtube.features.embeddings import FeatureEmbeddings
from tfrs_youtube.pipeline import to_dataset, to_page_dataset
from tfrs_youtube.ranking import Ranker, RankerConfig
from tfrs_youtube.training import ranking_report, split_calibration

SMALL = os.environ.get("TFRS_YOUTUBE_EXAMPLE_SIZE") == "small"

# 1. A simulated event log and its impressions, cut in time.
log = generate(SyntheticConfig.tiny(seed=0) if SMALL else SyntheticConfig(num_users=5000, seed=0))
builder = ExampleBuilder(log, ExampleConfig(split="time", holdout_fraction=0.2))
train_rows, test_rows = builder.impression_split()
# The calibration slice spans as long a period as the test: what exp(logit) must be corrected for
# (videos new to the ranker, stale histories) grows with the time since training.
train_rows, calibration_rows = split_calibration(builder, train_rows, fraction=0.2 / (1 - 0.2))
train, calibration, test = (builder.ranking_examples(rows) for rows in (train_rows, calibration_rows, test_rows))
print(f"{len(train_rows)} training / {len(calibration_rows)} calibration / {len(test_rows)} test impressions, "
      f"{train['clicked'].mean():.1%} clicked")

# 2. Embedding tables and quantiles of the continuous features, from the training impressions.
embeddings = FeatureEmbeddings.from_examples(log, **{name: train[name] for name in (
    "time_since_topic_watch_s", "previous_impressions", "video_age_s")})

# 3. Weighted logistic regression. No candidate generator trained these embeddings, so the
#    ranker learns them too (fine_tune_embeddings).
tf.keras.utils.set_random_seed(0)
config = RankerConfig(hidden_layers=(256, 128), weighted=True, fine_tune_embeddings=True)
ranker = Ranker(config, embeddings)
ranker.set_known_videos(np.unique(np.r_[train["video_id"], train["watch_history"].ravel()]))  # others: unknown
ranker.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
ranker.fit(to_dataset(train, 512, shuffle=True),
           validation_data=to_page_dataset(calibration),  # val_weighted_per_user_loss: the paper's metric
           epochs=1 if SMALL else 3, verbose=2,
           callbacks=[tf.keras.callbacks.EarlyStopping(monitor="val_weighted_per_user_loss", mode="min",
                                                       patience=1, restore_best_weights=True)])
ranker.calibrate(calibration)  # a monotone map of the logit: exp(logit) = observed watch time

# 4. Held-out later impressions.
report = ranking_report(ranker, test, builder.retrieval_examples("train")["video_id"])
print(f"\n{'system':<14}{'AUC':>7}{'weighted per-user loss':>25}")
for name in ("tfrs_youtube", "most_popular", "random"):
    print(f"{name:<14}{report[name]['auc']:>7.3f}{report[name]['weighted_per_user_loss']:>25.3f}")
print(f"\nmean exp(logit) {report['mean_expected_watch_time_s']:.1f} s per impression, "
      f"observed {report['mean_observed_watch_time_s']:.1f} s")
print(f"{'decile':>6}{'predicted s':>13}{'observed s':>12}{'clicks':>8}")
for row in report["calibration"]:
    print(f"{row['decile']:>6}{row['predicted_s']:>13.2f}{row['observed_s']:>12.2f}{row['clicks']:>8}")
