"""Candidate generation on MovieLens, beside the baselines a user would otherwise pick.

    python benchmarks/movielens_retrieval.py --data DIR --json OUT.json [--seeds 0,1,2] [--ablations]

Protocol (unchanged since the in-memory builder; the examples now come from the Beam pipeline):
per user, watches (ratings) sorted by time, ties in file order; the last is the test target, the
one before it the validation target, every earlier one a training label with the history before
it. All items are ranked, the user's history excluded. Reported: HR@10, NDCG@10, HR@50, HR@100
and training time for tfrs_youtube, the TFRS basic two-tower model and most-popular.

One run moves HR@10 by about 0.015 between seeds: `--seeds` trains tfrs_youtube once per seed on
the same examples and reports the mean (`by_seed` holds each run, `HR@10_seed_standard_error` the
standard error of that mean). `--ablations` adds the variants of the README's table, scored on
the validation target (tuning never looks at the test target).
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
from tfrs_youtube import (  # noqa: E402
    arrays, evaluate_popularity, presets, retrieval_report, temporary_examples, train,
    train_and_evaluate_two_tower, TrainConfig,
)

KS = (10, 50, 100)
REPORTED = ("HR@10", "NDCG@10", "HR@50", "HR@100")


movielens_config = presets.movielens


ABLATIONS = {
    "default": {},
    "depth 0": {"candidate.depth": 0},
    "depth 1": {"candidate.depth": 1},
    "depth 3": {"candidate.depth": 3},
    "depth 4": {"candidate.depth": 4},
    "no log Q correction": {"candidate.log_q_correction": False},
    "256 sampled negatives": {"candidate.num_sampled_negatives": 256},
    "no watch history": {"candidate.use_watches": False},
    "no geography": {"candidate.use_geography": False},
    "no demographics": {"candidate.use_demographics": False},
    "no example age": {"candidate.use_example_age": False},
}


def with_changes(config: TrainConfig, changes: dict) -> TrainConfig:
    config = TrainConfig.from_dict(config.to_dict())
    for path, value in changes.items():
        part, field = path.split(".")
        setattr(getattr(config, part), field, value)
    return config


def pick(metrics: dict) -> dict:
    return {k: round(float(metrics[k]), 4) for k in REPORTED if k in metrics} | (
        {"train_s": round(float(metrics["train_s"]), 1)} if "train_s" in metrics else {})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a MovieLens 100K or 1M directory")
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds (e.g. 0,1,2): train tfrs_youtube once per seed on the same "
                             "examples and report the mean, with the per-seed figures under by_seed")
    parser.add_argument("--ablations", action="store_true", help="also run the ablation variants (validation)")
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)

    config = movielens_config(args.seed)
    examples = temporary_examples(args.data, config, say=None)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    by_seed, train_seconds = {}, []
    for seed in seeds:
        models, info = train(examples, movielens_config(seed), stages=("candidate",), verbose=args.verbose, say=None)
        run = retrieval_report(models.candidate, examples, "test", KS, baselines=False)["tfrs_youtube"]
        run["train_s"] = info["candidate"]["train_s"]
        train_seconds.append(run["train_s"])
        by_seed[seed] = pick(run)
        if len(seeds) > 1:
            print(json.dumps({"seed": seed, **by_seed[seed]}), flush=True)
    # The mean over the seeds (one seed: that run's figures).
    ours = {k: float(np.mean([run[k] for run in by_seed.values()])) for k in (*REPORTED, "train_s")}
    test = arrays(examples, "retrieval", "test", ("video_id", "watched"))
    systems = {
        "tfrs_youtube": pick(ours),
        "tfrs_two_tower": pick(train_and_evaluate_two_tower(examples, seed=args.seed, ks=KS)),
        "most_popular": pick(evaluate_popularity(examples.label_counts()[1:], test["video_id"] - 1,
                                                 [w - 1 for w in test["watched"]], KS)),
    }
    result = {"dataset": examples.name, "users": int(examples.spec["users"]),
              "items": len(examples.vocabulary("video")),
              "protocol": "leave-last-out by time (ties in file order); validation = second to last; "
                          "full-corpus ranking, history excluded",
              "config": config.to_dict(), "systems": systems,
              # Training examples per second over the epochs' wall time (validation included).
              "train_examples_per_s": round(examples.num_records("retrieval", "train") * config.candidate_epochs
                                            / float(np.median(train_seconds))),
              # One test target a user: HR@10 is a proportion over them, with its binomial error.
              "test_users": len(test["video_id"]),
              "HR@10_standard_error": round(float(np.sqrt(ours["HR@10"] * (1 - ours["HR@10"])
                                                          / max(len(test["video_id"]), 1))), 4)}
    if len(seeds) > 1:
        # Seeds share the test users, so this is the spread of training runs, not of the data.
        hr = [run["HR@10"] for run in by_seed.values()]
        result["by_seed"] = {str(seed): run for seed, run in by_seed.items()}
        result["HR@10_seed_standard_error"] = round(float(np.std(hr, ddof=1) / np.sqrt(len(hr))), 4)
    if args.ablations:
        rows = []
        for name, changes in ABLATIONS.items():
            variant = with_changes(config, changes)
            started = time.perf_counter()
            variant_models, variant_info = train(examples, variant, stages=("candidate",), verbose=0, say=None)
            validation = retrieval_report(variant_models.candidate, examples, "validation", KS,
                                          baselines=False)["tfrs_youtube"]
            rows.append({"variant": name, "changes": changes, **pick(validation),
                         "train_s": round(variant_info["candidate"]["train_s"], 1),
                         "total_s": round(time.perf_counter() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
        result["ablations_on_validation"] = rows
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({"dataset": result["dataset"], "systems": systems}, indent=2))
    return result


if __name__ == "__main__":
    main()
