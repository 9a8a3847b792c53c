"""The paper's Table 1 on the synthetic log: ranking loss by hidden layers, weighting and powers.

    python benchmarks/ranking_table1.py --json OUT.json [--users 10000] [--holdout 0.2] [--epochs 4]
        [--presets none,1024-512-256]

Protocol: the synthetic log (`SyntheticConfig`, `--users` users) cut in time as the demo does
(`ExampleConfig(split="time")`): impressions before the cut train the ranker, those after it
are held out. The latest training impressions, over as long a period as the held-out one (a
share holdout / (1 - holdout) of them: 25% for the default 20% held out), are the calibration
slice: they pick the epoch (lowest weighted per-user loss, at most `--epochs`) and fit the
watch-time calibration; no figure below looks at the held-out impressions before they are scored.
The slice is as long as the held-out period because the calibration has to correct what a period
of that length does to the ranker: how many of the videos shown are new to it (a fifth of the
impressions over 10% of the training period, two fifths over the held-out period), how stale
its users' histories are. Fitted on a slice half as long, the map met a different mix from the
one it is judged on, and the lowest deciles were off by a third.

Every row trains a ranker from fresh shared embeddings that it fine-tunes (the paper's ranker
learns its embeddings; here no candidate generator is trained first), with the same seed:
every hidden-layer preset of Table 1 with the weighted loss, then the deepest preset without
x̃² and √x̃ ("no_powers") and with clicked and unclicked impressions weighted equally
("unweighted"). Reported per row: weighted per-user loss and AUC on the held-out impressions;
`calibration` holds mean predicted (exp(logit)) and observed watch time per decile of the
prediction for the deepest weighted ranker, with each decile's share of impressions whose video
the ranker does not know (`unknown_share`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tfrs_youtube  # noqa: E402,F401  (Keras 2 first)
import tensorflow as tf  # noqa: E402
from tfrs_youtube.data.examples import ExampleBuilder, ExampleConfig  # noqa: E402
from tfrs_youtube.data.synthetic import SyntheticConfig, generate  # noqa: E402
from tfrs_youtube.evaluation import (auc, calibration_deciles, max_calibration_error,  # noqa: E402
                                     weighted_per_user_loss)
from tfrs_youtube.features.embeddings import EmbeddingConfig, FeatureEmbeddings  # noqa: E402
from tfrs_youtube.pipeline import predict  # noqa: E402
from tfrs_youtube.ranking import HIDDEN_LAYER_PRESETS, Ranker, RankerConfig  # noqa: E402
from tfrs_youtube.training import split_calibration, train_ranker  # noqa: E402

DEEPEST = "1024-512-256"
CONTINUOUS = ("time_since_topic_watch_s", "previous_impressions", "video_age_s")


def variants(presets: list[str]) -> list[tuple[str, str]]:
    rows = [(name, "weighted") for name in presets]
    if DEEPEST in presets:
        rows += [(DEEPEST, "no_powers"), (DEEPEST, "unweighted")]
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--users", type=int, default=10_000, help="synthetic users (default 10000)")
    parser.add_argument("--epochs", type=int, default=4, help="at most this many epochs per ranker")
    parser.add_argument("--presets", default=",".join(HIDDEN_LAYER_PRESETS),
                        help="comma-separated hidden-layer presets (default: all of Table 1)")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="share of the log after the time cut, held out (default 0.2)")
    parser.add_argument("--calibration-fraction", type=float,
                        help="share of the training impressions (the latest) in the calibration slice "
                             "(default: holdout / (1 - holdout), a period as long as the held-out one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, help="Keras verbosity (2: one line per epoch)")
    args = parser.parse_args(argv)
    presets = args.presets.split(",")
    unknown = [p for p in presets if p not in HIDDEN_LAYER_PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; known: {', '.join(HIDDEN_LAYER_PRESETS)}")

    log = generate(SyntheticConfig(num_users=args.users, seed=args.seed))
    builder = ExampleBuilder(log, ExampleConfig(split="time", holdout_fraction=args.holdout, seed=args.seed))
    train_rows, test_rows = builder.impression_split()
    calibration_fraction = args.calibration_fraction
    if calibration_fraction is None:
        calibration_fraction = args.holdout / (1.0 - args.holdout)
    train_rows, calibration_rows = split_calibration(builder, train_rows, calibration_fraction)
    train, calibration, test = (builder.ranking_examples(r) for r in (train_rows, calibration_rows, test_rows))
    observed = np.where(test["clicked"] > 0, test["watch_time_s"], 0.0)
    print(f"{len(train_rows)} training / {len(calibration_rows)} calibration / {len(test_rows)} held-out impressions",
          flush=True)

    rows, calibration_table = [], None
    for preset, variant in variants(presets):
        tf.keras.utils.set_random_seed(args.seed)
        embeddings = FeatureEmbeddings.from_examples(
            log, EmbeddingConfig(seed=args.seed), **{name: train[name] for name in CONTINUOUS})
        config = RankerConfig(hidden_layers=preset, weighted=variant != "unweighted",
                              feature_powers=variant != "no_powers", fine_tune_embeddings=True, seed=args.seed,
                              calibration_fraction=calibration_fraction)
        ranker = Ranker(config, embeddings)
        started = time.perf_counter()
        history = train_ranker(ranker, train, calibration, args.epochs, seed=args.seed, verbose=args.verbose)
        logits = predict(ranker, test)
        row = {"hidden_layers": preset, "variant": variant,
               "weighted_per_user_loss": weighted_per_user_loss(test["page"], test["clicked"], test["watch_time_s"],
                                                                logits),
               "auc": auc(test["clicked"], logits), "epochs": len(history.history["loss"]),
               "train_s": round(time.perf_counter() - started, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if preset == DEEPEST and variant == "weighted" or (calibration_table is None and preset == presets[-1]):
            index = ranker.embeddings.video.indices(tf.constant(np.asarray(test["video_id"]).astype(str))).numpy()
            unknown = ranker.known_videos.numpy()[index] == 0
            calibration_table = calibration_deciles(np.exp(logits), observed, unknown=unknown)
            calibration_model = f"{preset} {variant}"

    result = {"rows": rows, "calibration": calibration_table, "calibration_model": calibration_model,
              "max_calibration_error": max_calibration_error(calibration_table),
              "config": {"users": args.users, "epochs": args.epochs, "seed": args.seed, "holdout": args.holdout,
                         "calibration_fraction": calibration_fraction,
                         "impressions": {"train": len(train_rows), "calibration": len(calibration_rows),
                                         "held_out": len(test_rows)}}}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({"calibration": calibration_table, "max_calibration_error": result["max_calibration_error"]}))
    return result


if __name__ == "__main__":
    main()
